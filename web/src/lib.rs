//! The web page: tags a garment photo in the visitor's browser with a model exported by
//! `trainer export-web`, on the GPU through WebGPU or on the CPU, and never sends the
//! photo anywhere.
//!
//! Two WebAssembly programs, both built by trunk from `static/index.html`:
//! - `app` (the page): category and backend controls, drop zone, file picker and paste,
//!   the results with confidence bars and an attention heat map, the CSV download.
//! - `worker` (a dedicated web worker, so the page stays responsive while the network
//!   runs): reads the manifest, downloads the weights with progress into Cache Storage,
//!   picks the backend, runs the network.
//!
//! They talk through the serde messages of [`protocol`]. The platform-independent parts
//! ([`engine`], [`order`], [`protocol`], [`submission`]) build natively too and are tested there on
//! the Flex backend, which the page's CPU fallback runs; [`browser`] exists only on
//! wasm32.

pub mod engine;
pub mod order;
pub mod protocol;
pub mod submission;

#[cfg(target_arch = "wasm32")]
pub mod browser;

use model_core::export::ExportError;
use model_core::preprocess::PreprocessError;

/// Largest photo file the page accepts, in bytes; bigger files are refused before they
/// are read (model-core separately refuses images over its pixel limit).
pub const MAX_FILE_BYTES: f64 = 50.0 * 1024.0 * 1024.0;

/// Why the page or the worker could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Image(#[from] PreprocessError),
    #[error("{0}")]
    NoWebGpu(String),
    #[error("{0}")]
    Browser(String),
}

#[cfg(target_arch = "wasm32")]
impl From<wasm_bindgen::JsValue> for WebError {
    fn from(value: wasm_bindgen::JsValue) -> Self {
        WebError::Browser(browser::describe_js(&value))
    }
}
