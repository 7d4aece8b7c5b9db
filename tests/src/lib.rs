//! Helpers for the end-to-end tests that run the real binaries.
//!
//! Cargo builds a package's binaries for its own integration tests only (and sets
//! `CARGO_BIN_EXE_<name>` there), so a test in this crate cannot ask for the `trainer`
//! binary directly. [`trainer_bin`] runs `cargo build -p trainer --bin trainer` once per
//! test process (a no-op when it is up to date; the same profile and target folder as
//! the running test) and returns the path of the built binary. This is what `escargot`
//! does, without the dependency.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The target profile folder the running test binary lives in (`target/debug`, ...).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/<test binary>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary under target/<profile>/deps")
        .to_path_buf()
}

/// Path of a freshly built `trainer` binary.
pub fn trainer_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let profile_dir = profile_dir();
        let target_dir = profile_dir.parent().expect("target folder").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "trainer", "--bin", "trainer"])
            .env("CARGO_TARGET_DIR", &target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("run cargo build for the trainer binary");
        assert!(status.success(), "building the trainer binary failed");
        let bin = profile_dir.join(format!("trainer{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

/// A fresh folder under the system temp folder, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!("tests-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp folder");
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `trainer ARGS` and returns its output.
pub fn trainer(args: &[&str]) -> Output {
    Command::new(trainer_bin())
        .args(args)
        .output()
        .expect("run trainer")
}

/// Runs `trainer ARGS`, failing the test with its output if it fails.
pub fn trainer_ok(args: &[&str]) -> Output {
    let out = trainer(args);
    assert!(
        out.status.success(),
        "trainer {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// stdout parsed as one JSON document.
pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The keys of a JSON object, sorted (serde_json's `Value` keeps them sorted).
pub fn keys(value: &serde_json::Value) -> Vec<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

/// A path as `&str`, for command lines.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

// ---------------------------------------------------------------------------------
// Synthetic photos and small exported models for the web page's test, made from
// model-core alone (no data, no downloads).

use anyhow::{Context, Result};
use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use model_core::convnext::ConvNextConfig;
use model_core::export::{slug, ExportedCategory, WebManifest, FORMAT, MANIFEST_FILE};
use model_core::heads::HeadConfig;
use model_core::model::GarmentModelConfig;
use model_core::predict::{decode, AttributePrediction};
use model_core::preprocess::PreprocessConfig;
use model_core::store::{write_safetensors, Precision};
use model_core::taxonomy::Taxonomy;
use serde::{Deserialize, Serialize};

/// The CPU backend used for reference predictions.
pub type Cpu = NdArray<f32>;

/// How a test export is shaped.
#[derive(Debug, Clone)]
pub struct ExportSpec {
    /// Meesho category names.
    pub categories: Vec<String>,
    pub backbone: ConvNextConfig,
    pub head_dim: usize,
    /// Side of the model input in pixels.
    pub size: u32,
    pub precision: Precision,
    pub seed: u64,
}

impl ExportSpec {
    /// A toy export that a browser tags in milliseconds: the `test_tiny` backbone,
    /// width-32 heads, 64-pixel input.
    pub fn tiny(categories: &[&str]) -> Self {
        Self {
            categories: categories.iter().map(|c| c.to_string()).collect(),
            backbone: ConvNextConfig::test_tiny(),
            head_dim: 32,
            size: 64,
            precision: Precision::F32,
            seed: 7,
        }
    }
}

/// Writes `manifest.json` and one `<slug>.safetensors` per category into `out`, with
/// freshly initialised (seeded) weights, the way `trainer export-web` lays them out.
pub fn write_export(spec: &ExportSpec, out: &Path) -> Result<WebManifest> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let taxonomy = Taxonomy::meesho();
    let device = Default::default();
    let mut categories = Vec::new();
    for (i, name) in spec.categories.iter().enumerate() {
        let category = taxonomy.category(name)?;
        let config = GarmentModelConfig::for_category(
            spec.backbone.clone(),
            HeadConfig::new()
                .with_head_dim(spec.head_dim)
                .with_spatial_groups(spec.head_dim.min(32)),
            category,
        );
        Cpu::seed(&device, spec.seed + i as u64);
        let model = config.init::<Cpu>(&device);
        let bytes = write_safetensors(&model, spec.precision)?;
        let file = format!("{}.safetensors", slug(name));
        let path = out.join(&file);
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        categories.push(ExportedCategory {
            name: category.name.clone(),
            attributes: category.attributes.clone(),
            model: config,
            file,
            bytes: bytes.len() as u64,
        });
    }
    let manifest = WebManifest {
        format: FORMAT.to_string(),
        precision: spec.precision,
        preprocess: PreprocessConfig::imagenet(spec.size),
        categories,
    };
    let path = out.join(MANIFEST_FILE);
    std::fs::write(&path, manifest.to_json())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(manifest)
}

/// `trainer predict --json`'s output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictOutput {
    pub predictions: Vec<Prediction>,
}

/// One photo's predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub image: String,
    pub category: String,
    pub attributes: Vec<AttributePrediction>,
}

/// A loaded category of an export, on the CPU.
pub struct NativeTagger {
    category: model_core::taxonomy::CategorySpec,
    preprocess: PreprocessConfig,
    model: model_core::model::GarmentModel<Cpu>,
}

impl NativeTagger {
    /// Loads `category` from the export directory `dir`, as the page does.
    pub fn load(dir: &Path, category: &str) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let manifest = WebManifest::from_json(&text)?;
        let exported = manifest.category(category)?;
        let weights_path = dir.join(&exported.file);
        let weights = std::fs::read(&weights_path)
            .with_context(|| format!("reading {}", weights_path.display()))?;
        let model = exported.load::<Cpu>(weights, &Default::default())?;
        Ok(Self {
            category: manifest.taxonomy()?.category(category)?.clone(),
            preprocess: manifest.preprocess.clone(),
            model,
        })
    }

    /// The whole pipeline for one encoded photo: decode, resize, normalise, network,
    /// labels.
    pub fn predict(&self, image: &str, bytes: &[u8]) -> Result<Prediction> {
        let chw = self.preprocess.preprocess_bytes(bytes)?;
        let size = self.preprocess.size as usize;
        let pixels =
            burn::tensor::Tensor::<Cpu, 1>::from_floats(chw.as_slice(), &Default::default())
                .reshape([1, 3, size, size]);
        let output = self.model.forward(pixels);
        let rows = output
            .logits
            .into_iter()
            .map(|l| l.into_data().convert::<f32>().into_vec::<f32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?;
        Ok(Prediction {
            image: image.to_string(),
            category: self.category.name.clone(),
            attributes: decode(&self.category, &rows),
        })
    }
}

/// A synthetic product photo as PNG bytes: a plain background with a T-shirt-like
/// shape in a colour that depends on `seed`, and a printed stripe. Not square, so the
/// page's crop is exercised.
pub fn synthetic_photo(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let colour = [
        (40 + seed * 67 % 200) as u8,
        (30 + seed * 113 % 200) as u8,
        (60 + seed * 29 % 180) as u8,
    ];
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let body = (0.3..0.7).contains(&fx) && (0.25..0.95).contains(&fy);
        let sleeves = (0.15..0.85).contains(&fx) && (0.25..0.45).contains(&fy);
        let stripe = (0.55..0.62).contains(&fy);
        if (body && stripe) || ((body || sleeves) && (x + y) % 9 == 0) {
            image::Rgb([250, 250, 250])
        } else if body || sleeves {
            image::Rgb(colour)
        } else {
            image::Rgb([236, 234, 230])
        }
    });
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("encoding a PNG in memory cannot fail");
    png
}
