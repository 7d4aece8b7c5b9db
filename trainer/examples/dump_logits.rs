//! Writes a finished run's logits on its training, validation and labelled test rows,
//! with the labels and each class's log share among the training rows, one JSON object
//! per category, split and attribute per line: the raw material for studying decision
//! rules offline (`scripts/decision_rules.py`). With `--mirror`, the logits of the
//! images flipped left to right.
//!
//! ```text
//! cargo run --release -p trainer --example dump_logits -- RUN OUT.jsonl [--mirror]
//! ```

use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;
use trainer::device::Cpu;
use trainer::run::{prepare_data, Run};
use trainer::train::{logit_offsets, predict_logits};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let run_dir = PathBuf::from(args.next().context("usage: dump_logits RUN OUT.jsonl")?);
    let out = PathBuf::from(args.next().context("usage: dump_logits RUN OUT.jsonl")?);
    let mirror = match args.next().as_deref() {
        None => false,
        Some("--mirror") => true,
        Some(other) => anyhow::bail!("unknown option {other:?} (only --mirror)"),
    };
    let run = Run::open(&run_dir)?;
    let cfg = &run.config;
    let report = std::env::temp_dir().join("dump-logits-report.csv");
    let data = prepare_data(&cfg.data, cfg.image_size, &report)?;
    let device = Default::default();
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
    for name in run.trained_categories() {
        let category = data.category(&run.taxonomy, &name, cfg.seed, cfg.val_fraction)?;
        let model = run.load_model::<Cpu>(&name, &device)?;
        let priors = logit_offsets(category.spec, &category.train, 1.0).context("priors")?;
        let (test, _) = data.test_examples(&name)?;
        let splits = [
            ("train", &category.train, &data.loaded.train.images),
            ("val", &category.val, &data.loaded.train.images),
            ("test", &test, &data.loaded.test.images),
        ];
        for (split, rows, store) in splits {
            let images: Vec<usize> = rows.iter().map(|e| e.image).collect();
            let logits = predict_logits(
                &model,
                store,
                &images,
                &cfg.preprocess(),
                cfg.inference_batch(true),
                mirror,
                &device,
            )?;
            for (a, attribute) in category.spec.attributes.iter().enumerate() {
                let labels: Vec<Option<usize>> = rows.iter().map(|e| e.labels[a]).collect();
                let line = serde_json::json!({
                    "category": name,
                    "split": split,
                    "attribute": attribute.name,
                    "classes": attribute.classes.len(),
                    "log_prior": priors[a],
                    "labels": labels,
                    "logits": logits[a],
                });
                writeln!(file, "{line}")?;
            }
            eprintln!("{name} {split}: {} rows", rows.len());
        }
    }
    Ok(())
}
