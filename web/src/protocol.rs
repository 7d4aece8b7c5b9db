//! Messages between the page and its inference worker.
//!
//! Each message travels as a two-element JavaScript array: the message serialised as
//! JSON, and an optional `Uint8Array` for bulk bytes (a photo to tag, the resized photo
//! for the heat map), which would be wasteful as JSON numbers.

use model_core::predict::AttributePrediction;
use serde::{Deserialize, Serialize};

/// Which backend the visitor asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// WebGPU when the browser offers an adapter, else the CPU.
    #[default]
    Auto,
    /// WebGPU or an error.
    Webgpu,
    /// The CPU (WebAssembly with SIMD), even when WebGPU is available.
    Cpu,
}

impl BackendChoice {
    /// Reads the value of the page's backend control or `?backend=` parameter.
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(Self::Auto),
            "webgpu" | "gpu" => Some(Self::Webgpu),
            "cpu" => Some(Self::Cpu),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Webgpu => "webgpu",
            Self::Cpu => "cpu",
        }
    }
}

/// The backend that actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Webgpu,
    Cpu,
}

/// Where a category's weights came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsSource {
    /// Downloaded now (and stored in Cache Storage for next time).
    Network,
    /// Taken from the browser's Cache Storage: nothing downloaded.
    Cache,
    /// Already in the worker's memory.
    Memory,
}

impl WeightsSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Cache => "cache",
            Self::Memory => "memory",
        }
    }
}

/// Page -> worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToWorker {
    /// Reads the manifest (first time), prepares the backend and loads a category's
    /// weights. `category: None` takes the manifest's first category.
    Load {
        /// Absolute URL of the export directory (ends with `/`): a worker started from
        /// a `blob:` URL cannot resolve relative URLs against the page.
        models_url: String,
        category: Option<String>,
        backend: BackendChoice,
    },
    /// Tags the photo whose bytes travel beside this message.
    Tag { job: u32, name: String },
}

/// Worker -> page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FromWorker {
    /// The worker's WebAssembly is running and listens for messages.
    Started,
    /// The export's categories, in manifest order.
    Manifest {
        categories: Vec<String>,
        input_size: u32,
        precision: String,
    },
    /// Weight download progress in bytes.
    Progress {
        category: String,
        loaded: u64,
        total: u64,
    },
    /// The category's model is loaded and ready.
    Ready {
        category: String,
        attributes: Vec<String>,
        backend: BackendKind,
        /// The WebGPU adapter's description, or `CPU (WebAssembly SIMD)`.
        backend_name: String,
        weights_source: WeightsSource,
        weights_bytes: u64,
        /// Why the backend is not the one asked for, if it is not (e.g. no WebGPU).
        notice: Option<String>,
    },
    /// One photo's result; the resized photo (RGBA) travels beside it.
    Tagged { job: u32, result: TagResult },
    /// A request failed; `job` is set when it was a photo (the worker stays usable).
    Failed { job: Option<u32>, message: String },
    /// The worker hit a bug and must be restarted (sent from the panic hook).
    Crashed { message: String },
}

/// One photo's predictions, shaped like an entry of `trainer predict --json`'s
/// `predictions` list plus what the page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagResult {
    pub image: String,
    pub category: String,
    pub attributes: Vec<AttributePrediction>,
    pub attention: AttentionMaps,
    /// Side of the resized photo the network saw.
    pub view_size: u32,
    /// Time to tag the photo (decode, resize, normalise, network, read back, labels).
    pub millis: f64,
    /// What ran the network: the WebGPU adapter's name, or the CPU's.
    pub backend: String,
    /// The first photo since the model was loaded: on WebGPU its time includes
    /// compiling the GPU kernels.
    pub first_run: bool,
}

/// Spatial attention of every head, row-major `[height, width]` each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionMaps {
    pub height: usize,
    pub width: usize,
    pub maps: Vec<Vec<f32>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() {
        let msg = ToWorker::Load {
            models_url: "http://127.0.0.1/models/".into(),
            category: None,
            backend: BackendChoice::Cpu,
        };
        let json = serde_json::to_string(&msg).unwrap();
        assert!(json.contains(r#""kind":"load""#) && json.contains(r#""backend":"cpu""#));
        assert_eq!(serde_json::from_str::<ToWorker>(&json).unwrap(), msg);
        let back = FromWorker::Failed {
            job: Some(3),
            message: "x".into(),
        };
        let json = serde_json::to_string(&back).unwrap();
        assert_eq!(serde_json::from_str::<FromWorker>(&json).unwrap(), back);
    }

    #[test]
    fn backend_choice_parses_the_control_values() {
        assert_eq!(BackendChoice::parse("CPU"), Some(BackendChoice::Cpu));
        assert_eq!(BackendChoice::parse("webgpu"), Some(BackendChoice::Webgpu));
        assert_eq!(BackendChoice::parse(""), Some(BackendChoice::Auto));
        assert_eq!(BackendChoice::parse("tpu"), None);
        for c in [
            BackendChoice::Auto,
            BackendChoice::Webgpu,
            BackendChoice::Cpu,
        ] {
            assert_eq!(BackendChoice::parse(c.as_str()), Some(c));
        }
    }
}
