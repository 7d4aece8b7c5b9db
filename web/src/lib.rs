//! The web page's WebAssembly side. For now it exposes what model-core already offers
//! the page (the built-in taxonomy, image preprocessing, a forward pass on the CPU
//! backend), so that the shared code is compiled for `wasm32-unknown-unknown` from the
//! start; the page itself arrives with the web-demo work.

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use model_core::convnext::ConvNextConfig;
use model_core::heads::HeadConfig;
use model_core::model::GarmentModelConfig;
use model_core::preprocess::PreprocessConfig;
use model_core::taxonomy::Taxonomy;
use wasm_bindgen::prelude::*;

/// The built-in taxonomy as JSON (categories, attributes, classes).
#[wasm_bindgen]
pub fn taxonomy_json() -> String {
    Taxonomy::meesho().to_json()
}

/// Decodes and normalises a photo for a model of input side `size`; returns CHW floats.
#[wasm_bindgen]
pub fn preprocess(bytes: &[u8], size: u32) -> Result<Vec<f32>, JsError> {
    PreprocessConfig::imagenet(size)
        .preprocess_bytes(bytes)
        .map_err(|e| JsError::new(&e.to_string()))
}

/// Runs a freshly initialised toy model for `category` on a random input and returns the
/// number of heads: a smoke test that the network runs in the browser.
#[wasm_bindgen]
pub fn smoke_heads(category: &str) -> Result<usize, JsError> {
    let taxonomy = Taxonomy::meesho();
    let spec = taxonomy
        .category(category)
        .map_err(|e| JsError::new(&e.to_string()))?;
    let device = Default::default();
    let model = GarmentModelConfig::for_category(
        ConvNextConfig::test_tiny(),
        HeadConfig::new().with_head_dim(32),
        spec,
    )
    .init::<NdArray<f32>>(&device);
    let pixels = Tensor::random([1, 3, 32, 32], Distribution::Default, &device);
    Ok(model.forward(pixels).logits.len())
}
