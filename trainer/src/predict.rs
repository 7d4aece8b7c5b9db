//! `trainer predict`: label photos with a trained run.

use crate::device::{self, BackendTask, Chosen, DeviceChoice};
use crate::run::Run;
use crate::train::parts::{batch_parts, logits_in_parts};
use anyhow::{Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use model_core::model::GarmentModel;
use model_core::predict::{decode, AttributePrediction};
use model_core::preprocess::PreprocessConfig;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Photos run through the network together.
const BATCH: usize = 8;

/// One photo's labels (`--json` prints a list of these under `predictions`).
#[derive(Debug, Serialize)]
pub struct ImagePrediction {
    pub image: String,
    pub category: String,
    pub attributes: Vec<AttributePrediction>,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    predictions: &'a [ImagePrediction],
}

/// Every head's logits for `inputs` (CHW images at the model's size), one row per head
/// per image: `out[image][head] = logits`; each batch cut into `parts` parts run side
/// by side.
pub fn logits_rows<B: Backend>(
    model: &GarmentModel<B>,
    inputs: &[Vec<f32>],
    pre: &PreprocessConfig,
    parts: usize,
    device: &B::Device,
) -> Result<Vec<Vec<Vec<f32>>>> {
    let size = pre.size as usize;
    let mut out = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(BATCH) {
        let n = chunk.len();
        let x =
            Tensor::<B, 4>::from_data(TensorData::new(chunk.concat(), [n, 3, size, size]), device);
        let heads: Vec<Vec<f32>> = logits_in_parts(model, x, parts)
            .into_iter()
            .map(|l| {
                l.into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))
            })
            .collect::<Result<_>>()?;
        for i in 0..n {
            out.push(
                heads
                    .iter()
                    .map(|h| {
                        let classes = h.len() / n;
                        h[i * classes..(i + 1) * classes].to_vec()
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

struct PredictTask<'a> {
    run: &'a Run,
    category: &'a str,
    inputs: &'a [Vec<f32>],
}

impl BackendTask for PredictTask<'_> {
    type Output = Result<Vec<Vec<Vec<f32>>>>;
    fn run<B: AutodiffBackend>(self, device: B::Device, chosen: &Chosen) -> Self::Output {
        let model = self.run.load_model::<B>(self.category, &device)?.valid();
        let cfg = &self.run.config;
        let parts = batch_parts(cfg.batch_parts, BATCH, chosen.kind() == "cpu");
        logits_rows(&model, self.inputs, &cfg.preprocess(), parts, &device)
    }
}

/// Labels `images` as `category` and prints them (JSON with `json`).
pub fn predict_images(
    run_dir: &Path,
    category: &str,
    images: &[PathBuf],
    json: bool,
    device_choice: DeviceChoice,
) -> Result<Vec<ImagePrediction>> {
    let run = Run::open(run_dir)?;
    let spec = run.taxonomy.category(category)?;
    if !run.paths.best(category).exists() {
        anyhow::bail!(
            "{}: category {category:?} has not been trained",
            run_dir.display()
        );
    }
    let pre = run.config.preprocess();
    let inputs = images
        .iter()
        .map(|path| {
            let bytes =
                std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
            pre.preprocess_bytes(&bytes)
                .with_context(|| format!("{}: cannot use this image", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let chosen = device::choose(device_choice)?;
    let rows = device::run_on(
        &chosen,
        PredictTask {
            run: &run,
            category,
            inputs: &inputs,
        },
    )?;
    let predictions: Vec<ImagePrediction> = images
        .iter()
        .zip(&rows)
        .map(|(path, logits)| ImagePrediction {
            image: path.display().to_string(),
            category: category.to_string(),
            attributes: decode(spec, logits),
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string(&Report {
                predictions: &predictions
            })?
        );
    } else {
        for p in &predictions {
            println!("{} ({})", p.image, p.category);
            for a in &p.attributes {
                println!("  {:<24} {:<24} {:>6.2}%", a.name, a.label, a.prob * 100.0);
            }
        }
    }
    Ok(predictions)
}

struct SubmissionTask<'a> {
    run: &'a Run,
    data: &'a crate::run::PreparedData,
}

impl BackendTask for SubmissionTask<'_> {
    type Output = Result<std::collections::HashMap<u64, Vec<usize>>>;
    fn run<B: AutodiffBackend>(self, device: B::Device, chosen: &Chosen) -> Self::Output {
        let dataset = &self.data.dataset;
        let cfg = &self.run.config;
        let batch = cfg.inference_batch(chosen.kind() == "cpu");
        let test = &self.data.loaded.test;
        let mut predictions = std::collections::HashMap::new();
        for name in self.run.trained_categories() {
            let Some(index) = dataset
                .taxonomy
                .categories
                .iter()
                .position(|c| c.name == name)
            else {
                continue;
            };
            let images: Vec<usize> = (0..test.rows.len())
                .filter(|&k| dataset.test[test.rows[k]].category == index)
                .collect();
            if images.is_empty() {
                continue;
            }
            let model = self.run.load_model::<B>(&name, &device)?.valid();
            let classes = crate::train::predict_classes(
                &model,
                &test.images,
                &images,
                &cfg.preprocess(),
                batch,
                &device,
            )?;
            for (k, classes) in images.into_iter().zip(classes) {
                predictions.insert(dataset.test[test.rows[k]].id, classes);
            }
        }
        Ok(predictions)
    }
}

/// Writes a submission for every row of the data set's `test.csv`. Rows whose image
/// cannot be read, or whose category was not trained, get the most frequent training
/// class of each attribute, with a warning.
pub fn predict_submission(
    run_dir: &Path,
    data: &Path,
    out: &Path,
    device_choice: DeviceChoice,
) -> Result<()> {
    let run = Run::open(run_dir)?;
    let report = out.with_extension("skipped.csv");
    let prepared = crate::run::prepare_data(data, run.config.image_size, &report)?;
    if prepared.dataset.taxonomy != run.taxonomy {
        anyhow::bail!(
            "{}: its categories, attributes or classes differ from those {} was trained on",
            data.display(),
            run_dir.display()
        );
    }
    let chosen = device::choose(device_choice)?;
    let predictions = device::run_on(
        &chosen,
        SubmissionTask {
            run: &run,
            data: &prepared,
        },
    )?;
    let priors = crate::submission::ClassPriors::from_rows(
        &prepared.dataset.taxonomy,
        &prepared.dataset.train,
    );
    let summary = crate::submission::write_submission(
        out,
        &prepared.dataset.taxonomy,
        &prepared.dataset.test,
        &predictions,
        &priors,
    )?;
    if !summary.fallback_ids.is_empty() {
        eprintln!(
            "warning: {} test rows had no prediction (unreadable image or untrained category) and got the most frequent classes; see {}",
            summary.fallback_ids.len(),
            report.display()
        );
    }
    println!("wrote {} rows to {}", summary.rows, out.display());
    Ok(())
}
