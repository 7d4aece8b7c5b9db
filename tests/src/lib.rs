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
// For the web page's end-to-end test.

/// `trainer predict --json`'s output: `{"predictions":[{"image","category","attributes"}]}`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct PredictOutput {
    pub predictions: Vec<Prediction>,
}

/// One photo's labels.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Prediction {
    pub image: String,
    pub category: String,
    pub attributes: Vec<AttributePrediction>,
}

/// One attribute's label, its probability and every class's probability.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct AttributePrediction {
    pub name: String,
    pub label: String,
    pub prob: f32,
    pub probs: std::collections::BTreeMap<String, f32>,
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
