//! The data subcommands (`synth`, `check-data`, `bench-data`): their arguments and what
//! they run. Kept out of `cli.rs`, which only lists the subcommands.

use crate::bench::{bench_pipeline, BenchConfig};
use crate::data::{CacheMode, Dataset, ImageOptions};
use crate::synth::{generate, SynthConfig};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

/// `trainer synth`: write a synthetic data set in the Meesho layout.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Folder to write train.csv, test.csv, category_attributes.parquet, train_images/,
    /// test_images/ (and test_labels.csv, synth.json) into.
    #[arg(long)]
    pub out: PathBuf,
    /// Training images per category.
    #[arg(long, default_value_t = 300)]
    pub train_per_category: usize,
    /// Test images per category (drawn with the domain shift).
    #[arg(long, default_value_t = 100)]
    pub test_per_category: usize,
    /// Side of the square images in pixels.
    #[arg(long, default_value_t = 128)]
    pub size: u32,
    /// Random seed: the same seed gives the same files.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also save a PNG contact sheet of 30 images (and their labels as .txt) here.
    #[arg(long)]
    pub contact_sheet: Option<PathBuf>,
}

impl SynthArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let cfg = SynthConfig {
            train_per_category: self.train_per_category,
            test_per_category: self.test_per_category,
            size: self.size,
            seed: self.seed,
            progress: true,
            contact_sheet: self.contact_sheet.clone(),
        };
        let summary = generate(&self.out, &cfg)
            .with_context(|| format!("writing a synthetic data set to {}", self.out.display()))?;
        println!(
            "wrote {} train and {} test images ({} px) to {} in {:.1} s ({:.0} images/s)",
            summary.train_rows,
            summary.test_rows,
            self.size,
            self.out.display(),
            summary.seconds,
            summary.images_per_second()
        );
        if let Some(sheet) = &self.contact_sheet {
            println!(
                "contact sheet: {} (labels in {})",
                sheet.display(),
                sheet.with_extension("txt").display()
            );
        }
        Ok(())
    }
}

/// `trainer check-data`: read a data set, decode every image once and write the report.
#[derive(Debug, Args)]
pub struct CheckDataArgs {
    /// The data set folder (Meesho layout).
    #[arg(long)]
    pub data: PathBuf,
    /// Training image size in pixels.
    #[arg(long, default_value_t = 512)]
    pub size: u32,
    /// Keep resized images in this folder (reused by later runs) instead of in memory.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Where to write the list of skipped rows and dropped labels (CSV).
    #[arg(long, default_value = "data_report.csv")]
    pub report: PathBuf,
}

impl CheckDataArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let dataset = Dataset::open(&self.data)
            .with_context(|| format!("reading the data set {}", self.data.display()))?;
        let pairs: usize = dataset
            .taxonomy
            .categories
            .iter()
            .map(|c| c.attributes.len())
            .sum();
        println!(
            "{}: {} train rows, {} test rows, {} categories, {pairs} category-attribute pairs",
            self.data.display(),
            dataset.train.len(),
            dataset.test.len(),
            dataset.taxonomy.categories.len()
        );
        let opts = ImageOptions {
            size: self.size,
            cache: self.cache_dir.map_or(CacheMode::Memory, CacheMode::Disk),
            progress: true,
        };
        dataset.load_images(&opts, &self.report)?;
        Ok(())
    }
}

/// `trainer bench-data`: the input pipeline's throughput (decode + resize, augment,
/// normalise), in images per second.
#[derive(Debug, Args)]
pub struct BenchDataArgs {
    /// The data set folder (Meesho layout); its train images are used.
    #[arg(long)]
    pub data: PathBuf,
    /// Training image size in pixels.
    #[arg(long, default_value_t = 512)]
    pub size: u32,
    /// Use at most this many images.
    #[arg(long, default_value_t = 500)]
    pub limit: usize,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also time the on-disk cache, in a scratch folder made (and removed) under this one.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

impl BenchDataArgs {
    pub fn run(self) -> anyhow::Result<()> {
        let cfg = BenchConfig {
            size: self.size,
            limit: self.limit,
            threads: self.threads,
            cache_dir: self.cache_dir,
        };
        let report = bench_pipeline(&self.data, &cfg)?;
        println!("{report}");
        Ok(())
    }
}
