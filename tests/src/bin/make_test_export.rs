//! Stands in for `trainer export-web` and `trainer predict` until the trainer has them:
//! writes a small export (freshly initialised models) and predicts with it natively.
//!
//! ```text
//! make_test_export export-web --out DIR [--precision f16|f32] [--size PX]
//!                  [--backbone test_tiny|atto|...|base] [--head-dim N] [--seed N]
//!                  [--category NAME]...
//! make_test_export predict --export DIR --category NAME IMAGE... --json
//! make_test_export bench --export DIR --category NAME IMAGE [--repeat N]
//! ```
//! `predict --json` prints what `trainer predict --json` prints:
//! `{"predictions":[{"image":P,"category":C,"attributes":[{"name","label","prob","probs"}]}]}`.

use anyhow::{bail, Context, Result};
use model_core::convnext::ConvNextConfig;
use model_core::store::Precision;
use std::path::PathBuf;
use std::time::Instant;
use tests::{write_export, ExportSpec, NativeTagger, PredictOutput};

const DEFAULT_CATEGORIES: [&str; 2] = ["Men Tshirts", "Sarees"];

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        bail!(
            "usage: make_test_export export-web|predict|bench ... (see the source's doc comment)"
        );
    }
    let command = args.remove(0);
    let mut flags = Flags::parse(args)?;
    match command.as_str() {
        "export-web" => {
            let out = PathBuf::from(flags.value("--out")?.context("--out DIR is required")?);
            let categories = flags.values("--category");
            let names: Vec<&str> = if categories.is_empty() {
                DEFAULT_CATEGORIES.to_vec()
            } else {
                categories.iter().map(String::as_str).collect()
            };
            let mut spec = ExportSpec::tiny(&names);
            if let Some(p) = flags.value("--precision")? {
                spec.precision = match p.as_str() {
                    "f16" => Precision::F16,
                    "f32" => Precision::F32,
                    other => bail!("--precision {other:?}: use f16 or f32"),
                };
            }
            if let Some(size) = flags.value("--size")? {
                spec.size = size.parse().context("--size")?;
            }
            if let Some(name) = flags.value("--backbone")? {
                spec.backbone = match name.as_str() {
                    "test_tiny" => ConvNextConfig::test_tiny(),
                    preset => ConvNextConfig::preset(preset)
                        .with_context(|| format!("--backbone {preset:?} is not a preset"))?,
                };
            }
            if let Some(dim) = flags.value("--head-dim")? {
                spec.head_dim = dim.parse().context("--head-dim")?;
            }
            if let Some(seed) = flags.value("--seed")? {
                spec.seed = seed.parse().context("--seed")?;
            }
            flags.finish()?;
            let manifest = write_export(&spec, &out)?;
            for c in &manifest.categories {
                eprintln!(
                    "{}: {} ({} bytes)",
                    c.name,
                    out.join(&c.file).display(),
                    c.bytes
                );
            }
        }
        "predict" => {
            let dir = PathBuf::from(
                flags
                    .value("--export")?
                    .context("--export DIR is required")?,
            );
            let category = flags
                .value("--category")?
                .context("--category is required")?;
            let json = flags.switch("--json");
            let images = flags.rest()?;
            let tagger = NativeTagger::load(&dir, &category)?;
            let mut predictions = Vec::new();
            for image in images {
                let bytes = std::fs::read(&image).with_context(|| format!("reading {image}"))?;
                predictions.push(
                    tagger
                        .predict(&image, &bytes)
                        .with_context(|| image.clone())?,
                );
            }
            if json {
                println!("{}", serde_json::to_string(&PredictOutput { predictions })?);
            } else {
                for p in predictions {
                    let labels: Vec<String> = p
                        .attributes
                        .iter()
                        .map(|a| format!("{}={}", a.name, a.label))
                        .collect();
                    println!("{}\t{}\t{}", p.image, p.category, labels.join(" "));
                }
            }
        }
        "bench" => {
            let dir = PathBuf::from(
                flags
                    .value("--export")?
                    .context("--export DIR is required")?,
            );
            let category = flags
                .value("--category")?
                .context("--category is required")?;
            let repeat: usize = flags
                .value("--repeat")?
                .map(|r| r.parse())
                .transpose()
                .context("--repeat")?
                .unwrap_or(20);
            let images = flags.rest()?;
            let image = images.first().context("an image to time")?;
            let bytes = std::fs::read(image).with_context(|| format!("reading {image}"))?;
            let tagger = NativeTagger::load(&dir, &category)?;
            tagger.predict(image, &bytes)?; // warm-up
            let mut times = Vec::with_capacity(repeat);
            for _ in 0..repeat {
                let start = Instant::now();
                tagger.predict(image, &bytes)?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            let mean = times.iter().sum::<f64>() / times.len() as f64;
            println!(
                "{}",
                serde_json::json!({"category": category, "repeat": repeat,
                    "median_ms": median, "mean_ms": mean, "backend": "ndarray (native, CPU)"})
            );
        }
        other => bail!("unknown command {other:?}: use export-web, predict or bench"),
    }
    Ok(())
}

/// Minimal flag parsing: `--name value`, `--switch`, and the remaining positionals.
struct Flags {
    args: Vec<String>,
}

impl Flags {
    fn parse(args: Vec<String>) -> Result<Self> {
        Ok(Self { args })
    }

    fn value(&mut self, name: &str) -> Result<Option<String>> {
        let Some(i) = self.args.iter().position(|a| a == name) else {
            return Ok(None);
        };
        if i + 1 >= self.args.len() {
            bail!("{name} needs a value");
        }
        let value = self.args.remove(i + 1);
        self.args.remove(i);
        Ok(Some(value))
    }

    fn values(&mut self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Some(v)) = self.value(name) {
            out.push(v);
        }
        out
    }

    fn switch(&mut self, name: &str) -> bool {
        let before = self.args.len();
        self.args.retain(|a| a != name);
        self.args.len() != before
    }

    fn rest(self) -> Result<Vec<String>> {
        if let Some(flag) = self.args.iter().find(|a| a.starts_with("--")) {
            bail!("unknown flag {flag}");
        }
        Ok(self.args)
    }

    fn finish(self) -> Result<()> {
        let rest = self.rest()?;
        if !rest.is_empty() {
            bail!("unexpected arguments: {}", rest.join(" "));
        }
        Ok(())
    }
}
