//! Command-line interface: one subcommand per job.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "trainer",
    version,
    about = "Garment-attribute tagger: train, evaluate, predict, export"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => {
            println!("The embedded default job (synthetic data, training, export) is still to come; see README.md.");
            Ok(())
        }
        Some(Command::ClassifyHf {
            hf_dir,
            images,
            top_k,
            json,
        }) => crate::classify_hf::run(&hf_dir, &images, top_k, json),
    }
}
