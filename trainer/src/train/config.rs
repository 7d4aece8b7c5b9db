//! A training run's settings and the layout of its directory.

use crate::augment::AugmentConfig;
use crate::train::plateau::PlateauConfig;
use model_core::convnext::ConvNextConfig;
use model_core::export::slug;
use model_core::heads::HeadConfig;
use model_core::loss::MmdConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything that decides what a run computes; saved as `RUN/run.json` so evaluation,
/// prediction, export and `--resume` rebuild exactly the same thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The data set directory (Meesho layout).
    pub data: PathBuf,
    /// Preset name of the backbone (or `hf` when it came from `--pretrained`).
    pub backbone_name: String,
    pub backbone: ConvNextConfig,
    /// The Hub checkpoint the backbone started from, if any.
    pub pretrained: Option<PathBuf>,
    pub head: HeadConfig,
    /// Side of the square network input, in pixels.
    pub image_size: u32,
    pub batch_size: usize,
    /// Epochs of the shared stage, one backbone over every category's rows before the
    /// per-category phases (runs saved before this option: none).
    #[serde(default)]
    pub shared_epochs: usize,
    /// Minutes the whole process should take (`train::budget`): the shared stage then
    /// runs as many of its `shared_epochs` as fit, decided after its first epoch.
    /// `None` (and runs saved before this option) runs them all.
    #[serde(default)]
    pub time_budget_min: Option<f64>,
    pub phase1_epochs: usize,
    pub phase2_epochs: usize,
    pub phase2_rounds: usize,
    /// Which rows phase one trains on (runs saved before this option: the reference's).
    #[serde(default)]
    pub phase1_rows: Phase1Rows,
    /// Initial learning rate of every phase (the peak, under the cosine schedule).
    pub lr: f64,
    /// How the rate moves within a stage (runs saved before this option: plateau).
    #[serde(default)]
    pub lr_schedule: crate::train::schedule::LrSchedule,
    pub weight_decay: f64,
    /// Gradients are clipped to this global L2 norm.
    pub grad_clip: f64,
    /// Weight of the MMD term in phase one (0 turns it off).
    pub mmd_weight: f64,
    /// Logit adjustment of the training loss: each head's cross-entropy is taken on
    /// `logits + tau * ln(prior)`, the priors being the class shares of the category's
    /// training rows. 0 (runs saved before this option) is the plain loss.
    #[serde(default)]
    pub logit_adjust: f64,
    /// Decay of the running average of the weights that validation, the kept best
    /// weights and each stage's hand-over use (`train::ema`); 0 (runs saved before
    /// this option) trains and keeps the raw weights.
    #[serde(default)]
    pub ema_decay: f64,
    /// How many parts a training batch is cut into, run side by side
    /// (`train::parts`); `None` (and runs saved before this option) chooses from the
    /// device: one per CPU thread with at least four rows each, 1 on a GPU.
    #[serde(default)]
    pub batch_parts: Option<usize>,
    pub mmd: MmdConfig,
    pub plateau: PlateauConfig,
    pub augment: AugmentConfig,
    /// Categories trained, in order.
    pub categories: Vec<String>,
    pub seed: u64,
    /// Share of each category's rows held out for validation.
    pub val_fraction: f64,
}

/// The rows phase one trains the whole network on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Phase1Rows {
    /// Only rows with every attribute labelled (the reference design).
    #[default]
    Full,
    /// Every row with at least one label, each head's loss on its own labelled rows:
    /// for sparsely labelled categories (sarees) and small data sets, where the fully
    /// labelled rows are a small share.
    Labelled,
}

/// Paths inside a run directory.
#[derive(Debug, Clone)]
pub struct RunPaths {
    pub root: PathBuf,
}

impl RunPaths {
    pub fn new(root: impl AsRef<Path>) -> Self {
        Self {
            root: root.as_ref().to_path_buf(),
        }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("run.json")
    }
    /// The taxonomy the run's models were built from (the data set's own).
    pub fn taxonomy(&self) -> PathBuf {
        self.root.join("taxonomy.json")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("train_log.jsonl")
    }
    pub fn curves(&self) -> PathBuf {
        self.root.join("curves.png")
    }
    pub fn data_report(&self) -> PathBuf {
        self.root.join("data_report.csv")
    }
    pub fn category_dir(&self, category: &str) -> PathBuf {
        self.root.join(slug(category))
    }
    /// The best weights so far: what evaluation, prediction and export use.
    pub fn best(&self, category: &str) -> PathBuf {
        self.category_dir(category).join("best.safetensors")
    }
    /// The network's shape (a `GarmentModelConfig`).
    pub fn model_config(&self, category: &str) -> PathBuf {
        self.category_dir(category).join("model.json")
    }
    /// Weights after the last finished epoch, with parameter ids (for `--resume`).
    pub fn last(&self, category: &str) -> PathBuf {
        self.category_dir(category).join("last.mpk")
    }
    pub fn optimizer(&self, category: &str) -> PathBuf {
        self.category_dir(category).join("optimizer.mpk")
    }
    /// The running average of the weights after the last finished epoch (`--ema-decay`).
    pub fn ema(&self, category: &str) -> PathBuf {
        self.category_dir(category).join("ema.mpk")
    }
    pub fn state(&self, category: &str) -> PathBuf {
        self.category_dir(category).join("state.json")
    }
}
