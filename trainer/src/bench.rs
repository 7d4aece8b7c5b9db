//! `trainer bench-data`: throughput of the input pipeline on this machine, stage by
//! stage, in images per second with all worker threads busy:
//!
//! 1. read + decode + resize (the first epoch, once per image);
//! 2. augmentation as in training (probability 0.5) and with every image augmented;
//! 3. normalisation to a CHW float tensor (model-core's `to_chw`);
//! 4. a later epoch from the in-memory cache: fetch, augment (p = 0.5), normalise;
//! 5. with a cache folder: building the disk cache (decode, resize, write), checking it
//!    on a second run (no decoding), and a later epoch read from it.

use crate::augment::AugmentConfig;
use crate::data::images::load_split;
use crate::data::{CacheMode, DataError, Dataset, ImageOptions, TRAIN_IMAGES};
use model_core::preprocess::PreprocessConfig;
use rayon::prelude::*;
use std::fmt;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub size: u32,
    pub limit: usize,
    /// Worker threads; `None` for one per core.
    pub threads: Option<usize>,
    /// Also time the on-disk cache, in a fresh folder under this one.
    pub cache_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub images: usize,
    pub size: u32,
    pub threads: usize,
    /// Side of the first source image (the data set's own size).
    pub source: (u32, u32),
    pub decode_resize: f64,
    pub augment_training: f64,
    pub augment_all: f64,
    pub normalise: f64,
    pub cached_epoch: f64,
    /// Disk cache: (build, check on a later run, epoch read from it), when measured.
    pub disk: Option<(f64, f64, f64)>,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} images, {}x{} source -> {} px, {} threads (images/s):",
            self.images, self.source.0, self.source.1, self.size, self.threads
        )?;
        writeln!(
            f,
            "  read + decode + resize          {:8.1}",
            self.decode_resize
        )?;
        writeln!(
            f,
            "  augment (p = 0.5, as training)  {:8.1}",
            self.augment_training
        )?;
        writeln!(
            f,
            "  augment (every image)           {:8.1}",
            self.augment_all
        )?;
        writeln!(
            f,
            "  normalise to CHW f32            {:8.1}",
            self.normalise
        )?;
        write!(
            f,
            "  later epoch from memory cache   {:8.1}",
            self.cached_epoch
        )?;
        if let Some((build, check, epoch)) = self.disk {
            writeln!(f)?;
            writeln!(f, "  disk cache: build               {build:8.1}")?;
            writeln!(f, "  disk cache: check on a new run  {check:8.1}")?;
            write!(f, "  later epoch from disk cache     {epoch:8.1}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("thread pool: {0}")]
    Pool(String),
    #[error("no usable training image in {0}")]
    NoImages(String),
}

fn rate(n: usize, start: Instant) -> f64 {
    n as f64 / start.elapsed().as_secs_f64().max(1e-9)
}

pub fn bench_pipeline(dir: &Path, cfg: &BenchConfig) -> Result<BenchReport, BenchError> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(t) = cfg.threads {
        builder = builder.num_threads(t);
    }
    let pool = builder
        .build()
        .map_err(|e| BenchError::Pool(e.to_string()))?;
    pool.install(|| run(dir, cfg, pool.current_num_threads()))
}

fn run(dir: &Path, cfg: &BenchConfig, threads: usize) -> Result<BenchReport, BenchError> {
    let dataset = Dataset::open(dir)?;
    let ids: Vec<u64> = dataset.train.iter().take(cfg.limit).map(|r| r.id).collect();
    let images_dir = dir.join(TRAIN_IMAGES);
    let source = ids
        .first()
        .and_then(|id| {
            image::image_dimensions(images_dir.join(crate::data::image_file_name(*id))).ok()
        })
        .unwrap_or((0, 0));

    let start = Instant::now();
    let (loaded, _) = load_split(
        "train",
        &images_dir,
        &ids,
        &ImageOptions::in_memory(cfg.size),
    )?;
    let decode_resize = rate(ids.len(), start);
    let images = (0..loaded.images.len())
        .map(|i| loaded.images.get(i))
        .collect::<Result<Vec<_>, _>>()?;
    if images.is_empty() {
        return Err(BenchError::NoImages(dir.display().to_string()));
    }
    let n = images.len();

    let training = AugmentConfig::default();
    let always = AugmentConfig {
        probability: 1.0,
        ..AugmentConfig::default()
    };
    let start = Instant::now();
    let sink: usize = images
        .par_iter()
        .enumerate()
        .map(|(i, img)| training.apply(img, 0, 1, i as u64).len())
        .sum();
    let augment_training = rate(n, start);
    let start = Instant::now();
    let sink2: usize = images
        .par_iter()
        .enumerate()
        .map(|(i, img)| always.apply(img, 0, 1, i as u64).len())
        .sum();
    let augment_all = rate(n, start);

    let pre = PreprocessConfig::imagenet(cfg.size);
    let start = Instant::now();
    let sink3: usize = images.par_iter().map(|img| pre.to_chw(img).len()).sum();
    let normalise = rate(n, start);

    let start = Instant::now();
    let sink4: usize = (0..n)
        .into_par_iter()
        .map(|i| -> Result<usize, DataError> {
            let img = loaded.images.get(i)?;
            Ok(pre.to_chw(&training.apply(&img, 0, 2, i as u64)).len())
        })
        .sum::<Result<usize, DataError>>()?;
    let cached_epoch = rate(n, start);
    // Keep the work from being optimised away.
    std::hint::black_box((sink, sink2, sink3, sink4));

    let disk = match &cfg.cache_dir {
        None => None,
        Some(root) => {
            let folder = root.join(format!("bench-{}", std::process::id()));
            let opts = ImageOptions {
                size: cfg.size,
                cache: CacheMode::Disk(folder.clone()),
                progress: false,
            };
            let start = Instant::now();
            load_split("train", &images_dir, &ids, &opts)?;
            let build = rate(ids.len(), start);
            let start = Instant::now();
            let (on_disk, _) = load_split("train", &images_dir, &ids, &opts)?;
            let check = rate(ids.len(), start);
            let start = Instant::now();
            let sink5: usize = (0..on_disk.images.len())
                .into_par_iter()
                .map(|i| -> Result<usize, DataError> {
                    let img = on_disk.images.get(i)?;
                    Ok(pre.to_chw(&training.apply(&img, 0, 3, i as u64)).len())
                })
                .sum::<Result<usize, DataError>>()?;
            let epoch = rate(on_disk.images.len(), start);
            std::hint::black_box(sink5);
            let _ = std::fs::remove_dir_all(&folder);
            Some((build, check, epoch))
        }
    };

    Ok(BenchReport {
        images: n,
        size: cfg.size,
        threads,
        source,
        decode_resize,
        augment_training,
        augment_all,
        normalise,
        cached_epoch,
        disk,
    })
}
