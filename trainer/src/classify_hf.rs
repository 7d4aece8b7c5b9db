//! `trainer classify-hf`: classify photos with a Hub ConvNeXt image classifier, so a
//! user can check that imported weights behave on a real photo.

use anyhow::{Context, Result};
use burn::tensor::{activation, Tensor, TensorData};
use model_core::hf::HfCheckpoint;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The CPU backend used for this command.
type Cpu = burn::backend::Flex;

/// Images run through the network together.
const BATCH: usize = 8;

/// One class among the best `k`.
#[derive(Debug, Serialize)]
pub struct TopClass {
    pub index: usize,
    pub label: String,
    pub prob: f32,
}

/// The result for one photo (`--json` prints a list of these under `results`).
#[derive(Debug, Serialize)]
pub struct ImageResult {
    pub image: String,
    pub logits: Vec<f32>,
    pub top: Vec<TopClass>,
}

#[derive(Debug, Serialize)]
struct Report {
    results: Vec<ImageResult>,
}

/// Loads the checkpoint in `hf_dir`, classifies every image, and prints the top `top_k`
/// classes of each (as JSON with `json`).
pub fn run(hf_dir: &Path, images: &[PathBuf], top_k: usize, json: bool) -> Result<()> {
    anyhow::ensure!(top_k > 0, "--top-k must be at least 1");
    let checkpoint = HfCheckpoint::open(hf_dir)?;
    let device = Default::default();
    let model = checkpoint.load_classifier::<Cpu>(&device)?;
    let labels = checkpoint.labels();
    let pre = checkpoint.preprocess_config();
    let size = pre.size as usize;

    // Read and prepare every photo first, so a bad file stops the run before any work.
    let mut inputs = Vec::with_capacity(images.len());
    for path in images {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let chw = pre
            .preprocess_bytes(&bytes)
            .with_context(|| format!("{}: cannot use this image", path.display()))?;
        inputs.push(chw);
    }

    let mut results = Vec::with_capacity(images.len());
    for (paths, chunk) in images.chunks(BATCH).zip(inputs.chunks(BATCH)) {
        let batch = chunk.len();
        let data: Vec<f32> = chunk.concat();
        let pixels =
            Tensor::<Cpu, 4>::from_data(TensorData::new(data, [batch, 3, size, size]), &device);
        let logits = model.forward(pixels);
        let probs: Vec<f32> = activation::softmax(logits.clone(), 1)
            .into_data()
            .to_vec()?;
        let logits: Vec<f32> = logits.into_data().to_vec()?;
        let classes = labels.len();
        for (i, path) in paths.iter().enumerate() {
            let row = &probs[i * classes..(i + 1) * classes];
            results.push(ImageResult {
                image: path.display().to_string(),
                logits: logits[i * classes..(i + 1) * classes].to_vec(),
                top: top_classes(row, &labels, top_k),
            });
        }
    }

    if json {
        println!("{}", serde_json::to_string(&Report { results })?);
    } else {
        for result in &results {
            println!("{}", result.image);
            for class in &result.top {
                println!(
                    "  {:>6.2}%  {} (#{})",
                    class.prob * 100.0,
                    class.label,
                    class.index
                );
            }
        }
    }
    Ok(())
}

/// The `k` most probable classes, best first (ties keep index order).
pub fn top_classes(probs: &[f32], labels: &[String], k: usize) -> Vec<TopClass> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|index| TopClass {
            index,
            label: labels[index].clone(),
            prob: probs[index],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_classes_are_sorted_and_cut() {
        let labels: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let top = top_classes(&[0.1, 0.4, 0.1, 0.4], &labels, 3);
        let got: Vec<(usize, &str)> = top.iter().map(|t| (t.index, t.label.as_str())).collect();
        assert_eq!(got, [(1, "b"), (3, "d"), (0, "a")]);
        assert_eq!(top_classes(&[0.5, 0.5], &labels[..2], 10).len(), 2);
    }
}
