//! The jobs behind the subcommands: train, evaluate, predict and export a run.

use crate::data::Dataset;
use crate::data::{ImageOptions, LoadedData};
use crate::device::{self, BackendTask, Chosen, DeviceChoice};
use crate::fsutil::{read_json, write_atomic, write_json};
use crate::train::config::{RunPaths, TrainConfig};
use crate::train::{self, CategoryData, Context, Example, Outcome};
use anyhow::{bail, Context as _, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use model_core::export::{slug, ExportedCategory, WebManifest, FORMAT, MANIFEST_FILE};
use model_core::metrics::{overall_score, CategoryScore, Score};
use model_core::model::{GarmentModel, GarmentModelConfig};
use model_core::preprocess::PreprocessConfig;
use model_core::store::{write_safetensors, Precision};
use model_core::taxonomy::Taxonomy;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

impl TrainConfig {
    /// How photos become network inputs in this run (also written into web exports).
    pub fn preprocess(&self) -> PreprocessConfig {
        PreprocessConfig::imagenet(self.image_size)
    }

    /// The rows scored at once when this run's images are labelled (validation,
    /// evaluation, a submission: twice the training batch, no gradients to keep), and
    /// the parts each such batch is cut into (`train::parts`).
    pub fn inference_batch(&self, on_cpu: bool) -> (usize, usize) {
        let batch = self.batch_size * 2;
        (
            batch,
            train::parts::batch_parts(self.batch_parts, batch, on_cpu),
        )
    }
}

/// A data set with its images loaded at a run's input size.
pub struct PreparedData {
    pub dataset: Dataset,
    pub loaded: LoadedData,
}

/// Opens the data set and decodes its images once at `size`.
pub fn prepare_data(dir: &Path, size: u32, report: &Path) -> Result<PreparedData> {
    let dataset = Dataset::open(dir)?;
    let mut options = ImageOptions::in_memory(size);
    options.progress = true;
    let loaded = dataset.load_images(&options, report)?;
    Ok(PreparedData { dataset, loaded })
}

impl PreparedData {
    /// Position of category `name` in the data set's taxonomy.
    fn category_index(&self, name: &str) -> Result<usize> {
        self.dataset
            .taxonomy
            .categories
            .iter()
            .position(|c| c.name == name)
            .with_context(|| format!("category {name:?} is not in the data set"))
    }

    /// The training and validation examples and the unlabelled target images of one
    /// category, split as every command of a run splits them.
    pub fn category<'a>(
        &self,
        taxonomy: &'a Taxonomy,
        name: &str,
        seed: u64,
        val_fraction: f64,
    ) -> Result<CategoryData<'a>> {
        let spec = taxonomy.category(name)?;
        let index = self.category_index(name)?;
        // Rows of this category that have an image, with their index in the image store.
        let (images, rows): (Vec<usize>, Vec<crate::data::LabelledRow>) = self
            .loaded
            .train
            .rows
            .iter()
            .enumerate()
            .filter(|(_, &row)| self.dataset.train[row].category == index)
            .map(|(image, &row)| (image, self.dataset.train[row].clone()))
            .unzip();
        let split = crate::split::split_train_val(&rows, val_fraction, seed);
        let pick = |idx: &[usize]| {
            idx.iter()
                .map(|&i| Example {
                    image: images[i],
                    labels: rows[i].labels.clone(),
                })
                .collect::<Vec<_>>()
        };
        let target = self
            .loaded
            .test
            .rows
            .iter()
            .enumerate()
            .filter_map(|(image, &row)| (self.dataset.test[row].category == index).then_some(image))
            .collect();
        Ok(CategoryData {
            spec,
            train: pick(&split.train),
            val: pick(&split.val),
            target,
        })
    }
}

struct TrainTask<'a> {
    ctx: &'a Context<'a>,
    data: &'a CategoryData<'a>,
    index: usize,
}

impl BackendTask for TrainTask<'_> {
    type Output = Result<Outcome>;
    fn run<B: AutodiffBackend>(self, device: B::Device, _chosen: &Chosen) -> Self::Output {
        train::train_category::<B>(self.ctx, self.data, self.index, &device)
    }
}

struct SharedTask<'a> {
    ctx: &'a Context<'a>,
    data: &'a [CategoryData<'a>],
    indices: &'a [usize],
}

impl BackendTask for SharedTask<'_> {
    type Output = Result<train::shared::SharedOutcome>;
    fn run<B: AutodiffBackend>(self, device: B::Device, _chosen: &Chosen) -> Self::Output {
        train::shared::train_shared::<B>(self.ctx, self.data, self.indices, &device)
    }
}

/// `trainer train`: trains every category of `config` (or resumes), then prints the
/// validation table and draws the curves.
pub fn train_run(
    config: TrainConfig,
    out: &Path,
    device_choice: DeviceChoice,
    resume: bool,
    quiet: bool,
) -> Result<Score> {
    let paths = RunPaths::new(out);
    let config = if resume && paths.config().exists() {
        let saved: TrainConfig = read_json(&paths.config())?;
        if saved != config {
            println!(
                "resuming {} with the settings it was started with",
                out.display()
            );
        }
        saved
    } else {
        if paths.config().exists() && !resume {
            bail!(
                "{} already holds a run: pass --resume to continue it, or choose another --out",
                out.display()
            );
        }
        config
    };
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let chosen = device::choose(device_choice)?;
    println!("device: {chosen}");
    let data = prepare_data(&config.data, config.image_size, &paths.data_report())?;
    let taxonomy = data.dataset.taxonomy.clone();
    for name in &config.categories {
        taxonomy
            .category(name)
            .with_context(|| format!("--categories: {name:?}"))?;
    }
    write_json(&paths.config(), &config)?;
    write_atomic(&paths.taxonomy(), taxonomy.to_json().as_bytes())?;

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // A second Ctrl-C while the first is being handled kills at once.
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: stopping after this batch; the last finished epoch is saved (continue with --resume)");
        });
    }
    let pretrained_dir = config.pretrained.clone();
    let load_pretrained = move |model: GarmentModelConfig| -> Result<Vec<u8>> {
        pretrained_backbone(pretrained_dir.as_deref(), model)
    };
    let ctx = Context {
        config: &config,
        paths: &paths,
        train_images: &data.loaded.train.images,
        test_images: &data.loaded.test.images,
        preprocess: config.preprocess(),
        interrupted: &interrupted,
        pretrained: config.pretrained.as_ref().map(|_| &load_pretrained as _),
        device_name: chosen.kind().to_string(),
        batch_parts: crate::train::parts::batch_parts(
            config.batch_parts,
            config.batch_size,
            chosen.kind() == "cpu",
        ),
        resume,
        quiet,
    };
    // Every category's rows, split once; categories without a training row are
    // reported and left out.
    let mut categories = Vec::new();
    for (index, name) in config.categories.iter().enumerate() {
        let category = data.category(&taxonomy, name, config.seed, config.val_fraction)?;
        println!(
            "{name}: {} training rows ({} fully labelled), {} validation rows, {} unlabelled target images",
            category.train.len(),
            category.train.iter().filter(|e| e.labels.iter().all(Option::is_some)).count(),
            category.val.len(),
            category.target.len()
        );
        if category.train.is_empty() {
            println!("{name}: no training rows; skipped");
            continue;
        }
        categories.push((index, category));
    }
    if config.shared_epochs > 0 && !categories.is_empty() {
        let (indices, shared): (Vec<usize>, Vec<CategoryData>) = categories.iter().cloned().unzip();
        let outcome = device::run_on(
            &chosen,
            SharedTask {
                ctx: &ctx,
                data: &shared,
                indices: &indices,
            },
        )?;
        if let train::shared::SharedOutcome::Interrupted = outcome {
            draw_curves(&paths);
            bail!(
                "interrupted; continue with: trainer train --out {} --resume",
                out.display()
            );
        }
    }
    let mut scores = Vec::new();
    for (index, category) in &categories {
        let index = *index;
        match device::run_on(
            &chosen,
            TrainTask {
                ctx: &ctx,
                data: category,
                index,
            },
        )? {
            Outcome::Finished(score) => scores.push(score),
            Outcome::Interrupted => {
                draw_curves(&paths);
                bail!(
                    "interrupted; continue with: trainer train --out {} --resume",
                    out.display()
                );
            }
        }
    }
    draw_curves(&paths);
    let score = overall_score(scores);
    print_table(&score);
    Ok(score)
}

fn draw_curves(paths: &RunPaths) {
    if let Err(e) = crate::curves::draw(&paths.log(), &paths.curves()) {
        eprintln!(
            "warning: could not draw {}: {e:#}",
            paths.curves().display()
        );
    }
}

/// A garment model whose backbone comes from a Hub checkpoint (feature layer and heads
/// freshly initialised), as safetensors bytes that load on any backend.
fn pretrained_backbone(dir: Option<&Path>, model: GarmentModelConfig) -> Result<Vec<u8>> {
    let dir = dir.context("no --pretrained directory")?;
    let checkpoint = model_core::hf::HfCheckpoint::open(dir)?;
    let device = Default::default();
    let garment = model.init::<crate::device::Cpu>(&device);
    let garment = checkpoint.load_backbone(garment)?;
    Ok(write_safetensors(&garment, Precision::F32)?)
}

/// Prints the per-category table of SPEC.md.
pub fn print_table(score: &Score) {
    for category in &score.categories {
        println!("\n{}  (score {:.4})", category.name, category.score);
        println!(
            "  {:<24} {:>8} {:>8} {:>9} {:>8}",
            "attribute", "micro F1", "macro F1", "harmonic", "support"
        );
        for a in &category.attributes {
            println!(
                "  {:<24} {:>8.4} {:>8.4} {:>9.4} {:>8}",
                a.name, a.micro_f1, a.macro_f1, a.harmonic, a.support
            );
        }
    }
    println!(
        "\noverall score {:.4} over {} categories",
        score.score,
        score.categories.len()
    );
}

/// A finished run's settings, taxonomy and trained categories.
pub struct Run {
    pub paths: RunPaths,
    pub config: TrainConfig,
    pub taxonomy: Taxonomy,
}

impl Run {
    pub fn open(dir: &Path) -> Result<Self> {
        let paths = RunPaths::new(dir);
        if !paths.config().exists() {
            bail!("{}: not a training run (no run.json)", dir.display());
        }
        let config: TrainConfig = read_json(&paths.config())?;
        let text = std::fs::read_to_string(paths.taxonomy())
            .with_context(|| format!("{}: cannot read", paths.taxonomy().display()))?;
        let taxonomy = Taxonomy::from_json(&text)
            .with_context(|| format!("{}", paths.taxonomy().display()))?;
        Ok(Self {
            paths,
            config,
            taxonomy,
        })
    }

    /// Categories with trained weights, in run order.
    pub fn trained_categories(&self) -> Vec<String> {
        self.config
            .categories
            .iter()
            .filter(|c| self.paths.best(c).exists())
            .cloned()
            .collect()
    }

    /// The best weights of `category`, on backend `B`.
    pub fn load_model<B: burn::tensor::backend::Backend>(
        &self,
        category: &str,
        device: &B::Device,
    ) -> Result<GarmentModel<B>> {
        let config: GarmentModelConfig = read_json(&self.paths.model_config(category))?;
        train::load_weights(config.init::<B>(device), &self.paths.best(category))
    }
}

/// Which labelled rows `trainer evaluate` scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalSplit {
    /// The validation rows held out of train.csv (the split training used).
    Val,
    /// The rows of test_labels.csv, on the test images (the shifted target domain).
    Test,
}

impl PreparedData {
    /// The labelled test rows of category `name` (from `test_labels.csv`), each with
    /// its image's index in the test image store. Rows whose test image was skipped
    /// (and reported) while loading are left out and counted in the second value.
    pub fn test_examples(&self, name: &str) -> Result<(Vec<Example>, usize)> {
        let labels = self.dataset.test_labels.as_ref().with_context(|| {
            format!(
                "{}: no test_labels.csv, so the test rows have no labels to score (use --split val)",
                self.dataset.root.display()
            )
        })?;
        let index = self.category_index(name)?;
        let image_of: std::collections::HashMap<u64, usize> = self
            .loaded
            .test
            .rows
            .iter()
            .enumerate()
            .map(|(image, &row)| (self.dataset.test[row].id, image))
            .collect();
        let mut missing = 0;
        let mut examples = Vec::new();
        for row in labels.iter().filter(|r| r.category == index) {
            match image_of.get(&row.id) {
                Some(&image) => examples.push(Example {
                    image,
                    labels: row.labels.clone(),
                }),
                None => missing += 1,
            }
        }
        Ok((examples, missing))
    }
}

struct EvaluateTask<'a> {
    run: &'a Run,
    data: &'a PreparedData,
    split: EvalSplit,
}

impl BackendTask for EvaluateTask<'_> {
    type Output = Result<Score>;
    fn run<B: AutodiffBackend>(self, device: B::Device, chosen: &Chosen) -> Self::Output {
        let cfg = &self.run.config;
        let batch = cfg.inference_batch(chosen.kind() == "cpu");
        let mut categories: Vec<CategoryScore> = Vec::new();
        for name in self.run.trained_categories() {
            let data = self
                .data
                .category(&self.run.taxonomy, &name, cfg.seed, cfg.val_fraction)?;
            let (rows, store) = match self.split {
                EvalSplit::Val => (data.val, &self.data.loaded.train.images),
                EvalSplit::Test => {
                    let (rows, missing) = self.data.test_examples(&name)?;
                    if missing > 0 {
                        eprintln!("{name}: {missing} labelled test row(s) have no usable image (see the data report); not scored");
                    }
                    (rows, &self.data.loaded.test.images)
                }
            };
            if rows.is_empty() {
                let split = match self.split {
                    EvalSplit::Val => "validation rows (--split val)",
                    EvalSplit::Test => "labelled test rows (--split test)",
                };
                bail!("{name}: no row to score among the {split}");
            }
            let model = self.run.load_model::<B>(&name, &device)?.valid();
            let images: Vec<usize> = rows.iter().map(|e| e.image).collect();
            let predicted =
                train::predict_classes(&model, store, &images, &cfg.preprocess(), batch, &device)?;
            let scores = data
                .spec
                .attributes
                .iter()
                .enumerate()
                .map(|(a, attribute)| {
                    let truth: Vec<Option<usize>> = rows.iter().map(|e| e.labels[a]).collect();
                    let pred: Vec<usize> = predicted.iter().map(|p| p[a]).collect();
                    model_core::metrics::attribute_score(&attribute.name, &truth, &pred)
                })
                .collect::<Result<Vec<_>, _>>()?;
            categories.push(model_core::metrics::category_score(&name, scores));
        }
        Ok(overall_score(categories))
    }
}

/// `trainer evaluate`: the score of every trained category on the validation rows or
/// on the labelled test rows, printed as a table or as JSON.
pub fn evaluate(
    run_dir: &Path,
    data: Option<&Path>,
    split: EvalSplit,
    json: bool,
    device_choice: DeviceChoice,
) -> Result<Score> {
    let score = score_run(run_dir, data, split, device_choice)?;
    if json {
        println!("{}", serde_json::to_string(&score)?);
    } else {
        print_table(&score);
    }
    Ok(score)
}

/// The score of every trained category of a run on `split` of its data set (or of
/// `data`), without printing it.
pub fn score_run(
    run_dir: &Path,
    data: Option<&Path>,
    split: EvalSplit,
    device_choice: DeviceChoice,
) -> Result<Score> {
    let run = Run::open(run_dir)?;
    if run.trained_categories().is_empty() {
        bail!("{}: no trained category yet", run_dir.display());
    }
    let dir = data
        .map(Path::to_path_buf)
        .unwrap_or_else(|| run.config.data.clone());
    let report = std::env::temp_dir().join(format!(
        "trainer-evaluate-report-{}.csv",
        std::process::id()
    ));
    let prepared = prepare_data(&dir, run.config.image_size, &report)?;
    let chosen = device::choose(device_choice)?;
    let score = device::run_on(
        &chosen,
        EvaluateTask {
            run: &run,
            data: &prepared,
            split,
        },
    )?;
    Ok(score)
}

/// `trainer export-web`: the manifest and one weight file per trained category.
pub fn export_web(run_dir: &Path, out: &Path, precision: Precision) -> Result<WebManifest> {
    let run = Run::open(run_dir)?;
    let names = run.trained_categories();
    if names.is_empty() {
        bail!("{}: no trained category to export", run_dir.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let device = Default::default();
    let mut categories = Vec::new();
    for name in names {
        let model = run.load_model::<crate::device::Cpu>(&name, &device)?;
        let config: GarmentModelConfig = read_json(&run.paths.model_config(&name))?;
        let bytes = write_safetensors(&model, precision)?;
        let file = format!("{}.safetensors", slug(&name));
        write_atomic(&out.join(&file), &bytes)?;
        let spec = run.taxonomy.category(&name)?;
        categories.push(ExportedCategory {
            name: name.clone(),
            attributes: spec.attributes.clone(),
            model: config,
            file,
            bytes: bytes.len() as u64,
        });
    }
    let manifest = WebManifest {
        format: FORMAT.to_string(),
        precision,
        preprocess: run.config.preprocess(),
        categories,
    };
    write_atomic(&out.join(MANIFEST_FILE), manifest.to_json().as_bytes())?;
    Ok(manifest)
}

/// The default data and run folders of the embedded job.
pub fn default_paths() -> (PathBuf, PathBuf) {
    (
        PathBuf::from("work/default-data"),
        PathBuf::from("work/default-run"),
    )
}
