//! Command-line interface: one subcommand per job.

use crate::device::DeviceChoice;
use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use model_core::store::Precision;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "trainer",
    version,
    about = "Garment-attribute tagger: train, evaluate, predict, export",
    long_about = "Garment-attribute tagger: train, evaluate, predict, export.\n\n\
        With no subcommand, runs the embedded default job: makes a synthetic data set in \
        work/default-data, trains a small model on the best device found, prints the \
        evaluation table and exports the models to static/models for the web page."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PrecisionArg {
    F16,
    F32,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F16 => Precision::F16,
            PrecisionArg::F32 => Precision::F32,
        }
    }
}

/// `trainer train` options. Unset options take the reference design's values when
/// `--pretrained` is given, and small from-scratch values otherwise.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Data set directory in the Meesho layout.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run directory: checkpoints, logs, curves and the trained models.
    #[arg(long)]
    pub out: PathBuf,
    /// Backbone preset: atto, femto, pico, nano, tiny, small, base, large, xlarge, or
    /// default-small (the default job's: depths 1,1,2,1, widths 24..192)
    /// [default: base with --pretrained (taken from the checkpoint), atto without].
    #[arg(long)]
    pub backbone: Option<String>,
    /// Hugging Face ConvNeXt checkpoint directory to start the backbone from.
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    /// Network input side in pixels [default: 512 with --pretrained, 128 without].
    #[arg(long)]
    pub image_size: Option<u32>,
    /// Images per step [default: 4 with --pretrained, 32 without].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Epochs of the shared stage before the per-category phases: one backbone trained
    /// on every category's rows at once (each category with its own heads), from which
    /// each category's phase one starts [default: 0, none].
    #[arg(long)]
    pub shared_epochs: Option<usize>,
    /// Aim to finish within MINUTES of the start, whatever the machine: after the
    /// shared stage's first epoch its measured time decides how many of
    /// --shared-epochs fit before the phases (which keep their epochs); the choice is
    /// kept for --resume [default: no limit].
    #[arg(long, value_name = "MINUTES")]
    pub time_budget: Option<f64>,
    /// Epochs of phase one (whole network; rows: see --phase1-rows) [default: 10].
    #[arg(long)]
    pub phase1_epochs: Option<usize>,
    /// Epochs of each phase-two round (heads only, every labelled row) [default: 3].
    #[arg(long)]
    pub phase2_epochs: Option<usize>,
    /// Rounds of phase two [default: 1].
    #[arg(long)]
    pub phase2_rounds: Option<usize>,
    /// Rows of phase one: full (every attribute labelled, the reference) or labelled
    /// (any label; each head learns from its own labelled rows) [default: full].
    #[arg(long, value_enum)]
    pub phase1_rows: Option<crate::train::config::Phase1Rows>,
    /// Initial learning rate of AdamW [default: 1e-4 with --pretrained, 2e-3 without].
    #[arg(long)]
    pub lr: Option<f64>,
    /// How the rate moves within each stage: plateau (halved when the validation
    /// score stalls, the reference), cosine (5% warm-up, then a cosine decay to 1%
    /// of --lr by the stage's last step) or anneal (plateau, then over the stage's
    /// last fifth of steps a straight-line decay to 1%) [default: plateau].
    #[arg(long, value_enum)]
    pub lr_schedule: Option<crate::train::schedule::LrSchedule>,
    /// Training-image augmentation: standard (flip, zoom-in crop, small rotation,
    /// brightness, contrast), photo (standard plus zoom-out, light fall-off and blur,
    /// for photos taken less carefully than the training ones) or none.
    #[arg(long, value_enum, default_value_t = crate::augment::AugmentPreset::Standard)]
    pub augment: crate::augment::AugmentPreset,
    /// Weight of the MMD domain-adaptation term in phase one [default: 0.1].
    #[arg(long)]
    pub mmd_weight: Option<f64>,
    /// Logit adjustment TAU: train each head on logits + TAU x ln(class share in the
    /// training rows), so rare classes are not crowded out of the predictions (the
    /// score's macro F1 counts every class alike); predictions use the plain logits.
    /// 0 is the plain cross-entropy [default: 0].
    #[arg(long)]
    pub logit_adjust: Option<f64>,
    /// Keep a running average of the weights, each step moving it 1 - DECAY of the
    /// way to the trained ones (after a short warm-up); validation, the kept best
    /// weights and each stage's hand-over then use the average. 0 keeps the raw
    /// weights [default: 0].
    #[arg(long)]
    pub ema_decay: Option<f64>,
    /// Cut each training batch into N parts that run forward and backward side by
    /// side, their gradients summed (the same gradient up to rounding; dropout masks
    /// follow each row's place in the batch). On the CPU this keeps every core busy
    /// through the step's serial stretches [default: one part per CPU thread with at
    /// least 4 rows each; 1 on a GPU].
    #[arg(long)]
    pub batch_parts: Option<usize>,
    /// Width of the feature layer and attribute heads [default: 512 with --pretrained, 64 without].
    #[arg(long)]
    pub head_dim: Option<usize>,
    /// AdamW's decoupled weight decay [default: 0.05].
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Stochastic depth: the chance of skipping the backbone's last block in a training
    /// step, rising linearly from 0 at the first block [default: 0.1 with --pretrained,
    /// 0.05 for default-small, 0 for the other from-scratch presets].
    #[arg(long)]
    pub drop_path: Option<f64>,
    /// Dropout after the heads' first hidden layer; the second layer gets half of it
    /// (the reference's 0.2 and 0.1) [default: 0.2].
    #[arg(long)]
    pub head_dropout: Option<f64>,
    /// Where to train: auto tries CUDA, then a hardware wgpu adapter, then the CPU.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Comma-separated categories to train [default: all in the data set].
    #[arg(long)]
    pub categories: Option<String>,
    /// Seed of everything random (split, order, augmentation, initialisation).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Continue the run in --out from its last finished epoch.
    #[arg(long)]
    pub resume: bool,
    /// No progress bars (one line per epoch still).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a synthetic garment data set in the Meesho layout.
    Synth(crate::data_cli::SynthArgs),
    /// Read a data set, decode every image once and report skipped rows.
    CheckData(crate::data_cli::CheckDataArgs),
    /// Measure the input pipeline's throughput (decode, resize, augment).
    BenchData(crate::data_cli::BenchDataArgs),
    /// Train one model per category in two phases (see --help for the defaults).
    Train(Box<TrainArgs>),
    /// Validation scores of a run: micro and macro F1 and their harmonic mean per
    /// attribute, category and overall scores.
    Evaluate {
        #[arg(long)]
        run: PathBuf,
        /// Data set directory [default: the one the run was trained on].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Print {"score","categories":[{"name","score","attributes":[...]}]}.
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
        /// Rows to score: val (the run's held-out training rows) or test (the rows of
        /// the data set's test_labels.csv, on the test images; `trainer synth` writes
        /// one, the Meesho files have none).
        #[arg(long, value_enum, default_value_t = crate::run::EvalSplit::Val)]
        split: crate::run::EvalSplit,
    },
    /// Label photos (`--category NAME IMAGE...`) or write a submission for a data set's
    /// test.csv (`--data DIR --out submission.csv`).
    Predict {
        #[arg(long)]
        run: PathBuf,
        /// Category of the photos given as arguments.
        #[arg(long)]
        category: Option<String>,
        /// Photos to label (with --category).
        images: Vec<PathBuf>,
        /// Data set whose test.csv is predicted (with --out).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Submission file to write (with --data).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print {"predictions":[{"image","category","attributes":[...]}]}.
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// Export a run's models for the web page: manifest.json plus one weight file per
    /// category.
    ExportWeb {
        #[arg(long)]
        run: PathBuf,
        #[arg(long, default_value = "static/models")]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = PrecisionArg::F16)]
        precision: PrecisionArg,
    },
    /// Throughput of the network (inference, or training steps with --train) and peak
    /// memory, on random inputs.
    Bench {
        #[arg(long, default_value = "base")]
        backbone: String,
        #[arg(long, default_value_t = 224)]
        image_size: u32,
        #[arg(long, default_value_t = 1)]
        batch_size: usize,
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
        /// Time whole training steps (forward, backward, AdamW) instead of inference.
        #[arg(long)]
        train: bool,
        /// Width of the attribute heads.
        #[arg(long, default_value_t = 512)]
        head_dim: usize,
        /// The category whose attribute heads the network carries (a step's cost
        /// grows with their number: 5 for Men Tshirts, 10 for Sarees).
        #[arg(long, default_value = "Men Tshirts")]
        category: String,
        /// Cut each batch into N parts run side by side, as `train --batch-parts`
        /// does for training steps and evaluation and prediction do for inference
        /// [default: as they choose: one per CPU thread with at least 4 rows each, 1
        /// on a GPU].
        #[arg(long)]
        batch_parts: Option<usize>,
        /// Seconds to time, at least.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Untimed iterations first (GPU backends compile and autotune their kernels
        /// during these; each one's time is printed to stderr).
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long)]
        json: bool,
    },
    /// Classify photos with a Hugging Face ConvNeXt image classifier (a checkpoint
    /// directory with config.json and model.safetensors or pytorch_model.bin), to check
    /// imported weights on real photos.
    ClassifyHf {
        /// The checkpoint directory, e.g. a download of facebook/convnext-base-384-22k-1k.
        hf_dir: PathBuf,
        /// Photos to classify (JPEG, PNG or WebP).
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// How many of the most probable classes to show per photo.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Print {"results":[{"image","logits","top":[{"index","label","prob"}]}]}.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => crate::default_job::run(),
        Some(Command::Synth(args)) => args.run(),
        Some(Command::CheckData(args)) => args.run(),
        Some(Command::BenchData(args)) => args.run(),
        Some(Command::Train(args)) => {
            let (config, device, resume, quiet, out) = crate::default_job::train_config(*args)?;
            crate::run::train_run(config, &out, device, resume, quiet).map(|_| ())
        }
        Some(Command::Evaluate {
            run,
            data,
            json,
            device,
            split,
        }) => crate::run::evaluate(&run, data.as_deref(), split, json, device).map(|_| ()),
        Some(Command::Predict {
            run,
            category,
            images,
            data,
            out,
            json,
            device,
        }) => match (category, data, out) {
            (Some(category), None, None) => {
                if images.is_empty() {
                    bail!("--category needs at least one IMAGE");
                }
                crate::predict::predict_images(&run, &category, &images, json, device).map(|_| ())
            }
            (None, Some(data), Some(out)) => {
                if !images.is_empty() {
                    bail!("images are not taken with --data; use --category NAME IMAGE...");
                }
                crate::predict::predict_submission(&run, &data, &out, device)
            }
            _ => bail!("use either --category NAME IMAGE... or --data DIR --out submission.csv"),
        },
        Some(Command::ExportWeb {
            run,
            out,
            precision,
        }) => {
            let manifest = crate::run::export_web(&run, &out, precision.into())?;
            let total: u64 = manifest.categories.iter().map(|c| c.bytes).sum();
            println!(
                "exported {} categories ({:.1} MiB of weights) to {}",
                manifest.categories.len(),
                total as f64 / (1024.0 * 1024.0),
                out.display()
            );
            Ok(())
        }
        Some(Command::Bench {
            backbone,
            image_size,
            batch_size,
            device,
            train,
            head_dim,
            category,
            batch_parts,
            seconds,
            warmup,
            json,
        }) => {
            if batch_parts == Some(0) {
                bail!("--batch-parts must be at least 1");
            }
            let config = crate::bench_model::BenchConfig {
                backbone,
                image_size,
                batch_size,
                train,
                head_dim,
                category,
                batch_parts,
                warmup,
                min_time: std::time::Duration::from_secs_f64(seconds.max(0.0)),
                min_iterations: 3,
            };
            crate::bench_model::bench(&config, device, json).map(|_| ())
        }
        Some(Command::ClassifyHf {
            hf_dir,
            images,
            top_k,
            json,
        }) => crate::classify_hf::run(&hf_dir, &images, top_k, json),
    }
}
