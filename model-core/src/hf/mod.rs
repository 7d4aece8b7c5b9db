//! Loading Hugging Face ConvNeXt checkpoints (`config.json` plus `model.safetensors` or
//! `pytorch_model.bin`, as published on the Hub) into the backbone, or into an
//! ImageNet classifier.
//!
//! Loading is strict: every parameter of the module must come from the checkpoint with
//! the right shape, and every checkpoint tensor must land somewhere (except those
//! listed as unused on purpose in [`weights`]). Anything else is an [`HfError`] that
//! names the keys at fault in the checkpoint's own spelling.

pub mod weights;

use crate::convnext::{ConvNextClassifier, ConvNextConfig};
use crate::model::GarmentModel;
use crate::preprocess::{PreprocessConfig, DEFAULT_CROP_PCT, IMAGENET_MEAN, IMAGENET_STD};
use crate::store::{apply_strict, LoadMismatch};
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn_store::{ModuleSnapshot, ModuleStore, PytorchStore, SafetensorsStore, TensorSnapshot};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use weights::Rule;

/// The weight files looked for in a checkpoint directory, in order of preference.
pub const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// A checkpoint that cannot be loaded, naming the file and keys at fault.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{path}: cannot read")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid ConvNeXt config.json: {message}")]
    Config { path: PathBuf, message: String },
    #[error(
        "{path}: model_type is {model_type:?}, not a ConvNeXt checkpoint (expected \"convnext\")"
    )]
    NotConvNext { path: PathBuf, model_type: String },
    #[error("{path}: {what} is not supported")]
    Unsupported { path: PathBuf, what: String },
    #[error("{dir}: no weights found (looked for {})", WEIGHT_FILES.join(" and "))]
    NoWeights { dir: PathBuf },
    #[error("{path}: cannot read the weights: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("{path} does not fit the network described by config.json: {mismatch}")]
    Mismatch {
        path: PathBuf,
        mismatch: LoadMismatch,
    },
}

fn default_num_channels() -> usize {
    3
}
fn default_patch_size() -> usize {
    4
}
fn default_hidden_sizes() -> Vec<usize> {
    vec![96, 192, 384, 768]
}
fn default_depths() -> Vec<usize> {
    vec![3, 3, 9, 3]
}
fn default_hidden_act() -> String {
    "gelu".into()
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_layer_scale() -> f64 {
    1e-6
}
fn default_image_size() -> u32 {
    224
}

/// The fields of a Hub `config.json` that describe a ConvNeXt, with the defaults of
/// Hugging Face's `ConvNextConfig` for the ones a file leaves out.
#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default = "default_num_channels")]
    pub num_channels: usize,
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    #[serde(default = "default_hidden_sizes")]
    pub hidden_sizes: Vec<usize>,
    #[serde(default = "default_depths")]
    pub depths: Vec<usize>,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_layer_scale")]
    pub layer_scale_init_value: f64,
    #[serde(default)]
    pub drop_path_rate: f64,
    #[serde(default = "default_image_size")]
    pub image_size: u32,
    /// Class index (as a string key, as JSON has it) -> label.
    #[serde(default)]
    pub id2label: BTreeMap<String, String>,
}

/// The parts of a Hub `preprocessor_config.json` that change how a photo is prepared.
#[derive(Debug, Clone, Default, Deserialize)]
struct HfPreprocessor {
    #[serde(default)]
    size: Option<serde_json::Value>,
    #[serde(default)]
    crop_pct: Option<f32>,
    #[serde(default)]
    image_mean: Option<[f32; 3]>,
    #[serde(default)]
    image_std: Option<[f32; 3]>,
}

/// An opened checkpoint directory: its configuration and its tensors (read lazily).
pub struct HfCheckpoint {
    pub dir: PathBuf,
    pub config: HfConfig,
    /// The weight file in use.
    pub weights_path: PathBuf,
    preprocessor: Option<HfPreprocessor>,
    tensors: BTreeMap<String, TensorSnapshot>,
}

impl std::fmt::Debug for HfCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfCheckpoint")
            .field("dir", &self.dir)
            .field("weights_path", &self.weights_path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl HfCheckpoint {
    /// Reads `config.json` (and `preprocessor_config.json` when present) and indexes the
    /// weights of a checkpoint directory. Tensor data is read when loaded.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, HfError> {
        let dir = dir.as_ref().to_path_buf();
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|source| HfError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: HfConfig = serde_json::from_str(&text).map_err(|e| HfError::Config {
            path: config_path.clone(),
            message: e.to_string(),
        })?;
        match config.model_type.as_deref() {
            Some("convnext") => {}
            other => {
                return Err(HfError::NotConvNext {
                    path: config_path,
                    model_type: other.unwrap_or("(none)").to_string(),
                })
            }
        }
        if config.hidden_act != "gelu" {
            return Err(HfError::Unsupported {
                path: config_path,
                what: format!("hidden_act {:?} (only \"gelu\")", config.hidden_act),
            });
        }
        let backbone = backbone_config(&config);
        backbone.check().map_err(|message| HfError::Config {
            path: config_path.clone(),
            message,
        })?;

        let preprocessor_path = dir.join("preprocessor_config.json");
        let preprocessor = match std::fs::read_to_string(&preprocessor_path) {
            Ok(text) => Some(serde_json::from_str(&text).map_err(|e| HfError::Config {
                path: preprocessor_path.clone(),
                message: e.to_string(),
            })?),
            Err(_) => None,
        };

        let weights_path = WEIGHT_FILES
            .iter()
            .map(|name| dir.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| HfError::NoWeights { dir: dir.clone() })?;
        let tensors = read_tensors(&weights_path)?;
        Ok(Self {
            dir,
            config,
            weights_path,
            preprocessor,
            tensors,
        })
    }

    /// The backbone this checkpoint describes.
    pub fn backbone_config(&self) -> ConvNextConfig {
        backbone_config(&self.config)
    }

    /// Class names in index order (`LABEL_i` where `id2label` has no entry).
    pub fn labels(&self) -> Vec<String> {
        let count = self.num_labels();
        (0..count)
            .map(|i| {
                self.config
                    .id2label
                    .get(&i.to_string())
                    .cloned()
                    .unwrap_or_else(|| format!("LABEL_{i}"))
            })
            .collect()
    }

    /// Output classes of the checkpoint's classifier (0 for a bare backbone).
    pub fn num_labels(&self) -> usize {
        self.tensors
            .get("classifier.bias")
            .map(|t| t.shape.iter().product())
            .unwrap_or(0)
    }

    /// How the checkpoint's own processor prepares a photo: the input size
    /// (`size.shortest_edge`, else `image_size`), crop fraction and normalisation.
    pub fn preprocess_config(&self) -> PreprocessConfig {
        let pre = self.preprocessor.clone().unwrap_or_default();
        let size = pre
            .size
            .as_ref()
            .and_then(|s| match s {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::Object(map) => map
                    .get("shortest_edge")
                    .or_else(|| map.get("height"))
                    .and_then(|v| v.as_u64()),
                _ => None,
            })
            .map(|s| s as u32)
            .unwrap_or(self.config.image_size);
        PreprocessConfig {
            size,
            crop_pct: pre.crop_pct.unwrap_or(DEFAULT_CROP_PCT),
            mean: pre.image_mean.unwrap_or(IMAGENET_MEAN),
            std: pre.image_std.unwrap_or(IMAGENET_STD),
        }
    }

    /// Builds `ConvNextForImageClassification`'s network and loads every tensor into it.
    pub fn load_classifier<B: Backend>(
        &self,
        device: &B::Device,
    ) -> Result<ConvNextClassifier<B>, HfError> {
        let labels = self.num_labels();
        if labels == 0 {
            return Err(HfError::Mismatch {
                path: self.weights_path.clone(),
                mismatch: LoadMismatch {
                    missing: vec!["classifier.weight".into(), "classifier.bias".into()],
                    ..Default::default()
                },
            });
        }
        let model = self.backbone_config().init_classifier(labels, device);
        self.load_into(model, weights::CLASSIFIER_RULES, "convnext.", &[])
    }

    /// Loads the checkpoint's backbone into a garment model (whose feature layer and
    /// heads keep their weights). The checkpoint's pooled LayerNorm and ImageNet
    /// classifier, if any, are not used.
    pub fn load_backbone<B: Backend>(
        &self,
        model: GarmentModel<B>,
    ) -> Result<GarmentModel<B>, HfError> {
        // Only the backbone is compared against the checkpoint; the rest of the model
        // is kept aside and put back.
        let GarmentModel {
            backbone,
            feature,
            heads,
        } = model;
        let backbone = self.load_into(backbone, &[], "", weights::UNUSED_BY_GARMENT_MODEL)?;
        Ok(GarmentModel {
            backbone,
            feature,
            heads,
        })
    }

    /// Renames the checkpoint's tensors with `rules` and loads them into `module`,
    /// strictly (see [`crate::store::apply_strict`]).
    fn load_into<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
        &self,
        module: M,
        rules: &[Rule],
        backbone_prefix: &str,
        unused_on_purpose: &[&str],
    ) -> Result<M, HfError> {
        let tensors = self
            .tensors
            .iter()
            .filter(|(key, _)| !unused_on_purpose.iter().any(|p| key.starts_with(p)))
            .map(|(key, snapshot)| {
                (
                    weights::to_module(key, rules, backbone_prefix),
                    snapshot.clone(),
                )
            })
            .collect();
        let name = |path: &str| weights::to_checkpoint(path, rules, backbone_prefix);
        apply_strict(module, tensors, true, name).map_err(|mismatch| {
            if mismatch.unreadable.is_empty() {
                HfError::Mismatch {
                    path: self.weights_path.clone(),
                    mismatch,
                }
            } else {
                HfError::Weights {
                    path: self.weights_path.clone(),
                    message: mismatch.to_string(),
                }
            }
        })
    }
}

fn backbone_config(config: &HfConfig) -> ConvNextConfig {
    ConvNextConfig::new(config.depths.clone(), config.hidden_sizes.clone())
        .with_num_channels(config.num_channels)
        .with_patch_size(config.patch_size)
        .with_layer_scale_init_value(config.layer_scale_init_value)
        .with_drop_path_rate(config.drop_path_rate)
        .with_layer_norm_eps(config.layer_norm_eps)
}

/// Indexes the tensors of a `.safetensors` or PyTorch `.bin` file by key.
fn read_tensors(path: &Path) -> Result<BTreeMap<String, TensorSnapshot>, HfError> {
    let bad = |message: String| HfError::Weights {
        path: path.to_path_buf(),
        message,
    };
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    let tensors = if is_safetensors {
        let mut store = SafetensorsStore::from_file(path);
        store
            .get_all_snapshots()
            .map_err(|e| bad(e.to_string()))?
            .clone()
    } else {
        let mut store = PytorchStore::from_file(path);
        store
            .get_all_snapshots()
            .map_err(|e| bad(e.to_string()))?
            .clone()
    };
    if tensors.is_empty() {
        return Err(bad("the file holds no tensors".into()));
    }
    Ok(tensors)
}
