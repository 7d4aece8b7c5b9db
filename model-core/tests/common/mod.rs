//! Helpers shared by model-core's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The transformers parity fixture (see tests/fixtures/convnext-random/README.md).
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/convnext-random")
}

pub fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json"))
        .expect("fixture expected.json");
    serde_json::from_str(&text).expect("expected.json is JSON")
}

pub fn floats(value: &serde_json::Value) -> Vec<f32> {
    value
        .as_array()
        .expect("an array of numbers")
        .iter()
        .map(|v| v.as_f64().expect("a number") as f32)
        .collect()
}

/// A fresh, empty directory under the system temp dir, unique to this test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("model-core-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
