//! `trainer classify-hf` run as a user runs it, on the transformers parity fixture.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model-core/tests/fixtures/convnext-random")
}

fn trainer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("run trainer")
}

fn expected_logits() -> Vec<f64> {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn json_output_has_the_contract_shape_and_transformers_logits() {
    let dir = fixture();
    let image = dir.join("input.png");
    let out = trainer(&[
        "classify-hf",
        dir.to_str().unwrap(),
        image.to_str().unwrap(),
        image.to_str().unwrap(),
        "--top-k",
        "3",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    let root = v.as_object().unwrap();
    assert_eq!(root.keys().collect::<Vec<_>>(), ["results"]);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let want = expected_logits();
    for r in results {
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["image", "logits", "top"]);
        assert_eq!(r["image"], image.to_str().unwrap());
        let logits: Vec<f64> = r["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(logits.len(), want.len());
        for (a, b) in logits.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{logits:?} vs {want:?}");
        }
        let top = r["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // The best class is the arg-max of transformers' logits.
        let best = want
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(top[0]["index"], best);
        assert_eq!(top[0]["label"], "denim jacket");
        let probs: Vec<f64> = top.iter().map(|t| t["prob"].as_f64().unwrap()).collect();
        assert!(probs.windows(2).all(|w| w[0] >= w[1]) && probs[0] < 1.0 && probs[2] > 0.0);
        for t in top {
            let keys: Vec<&String> = t.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["index", "label", "prob"]);
        }
    }
}

#[test]
fn text_output_lists_top_k_labels() {
    let dir = fixture();
    let image = dir.join("input.png");
    let out = trainer(&[
        "classify-hf",
        dir.to_str().unwrap(),
        image.to_str().unwrap(),
        "--top-k",
        "2",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].contains("denim jacket") && lines[1].contains('%'),
        "{text}"
    );
}

fn assert_one_line_error(out: &std::process::Output, needle: &str) {
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line on stderr: {err}"
    );
    assert!(err.contains(needle), "{needle:?} not in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_inputs_exit_non_zero_with_one_clear_line() {
    let dir = fixture();
    let dir_s = dir.to_str().unwrap();
    let image = dir.join("input.png");
    let not_image = dir.join("config.json");
    assert_one_line_error(
        &trainer(&["classify-hf", dir_s, not_image.to_str().unwrap()]),
        "config.json: cannot use this image",
    );
    assert_one_line_error(
        &trainer(&["classify-hf", dir_s, "/no/such/photo.jpg"]),
        "/no/such/photo.jpg",
    );
    assert_one_line_error(
        &trainer(&[
            "classify-hf",
            "/no/such/checkpoint",
            image.to_str().unwrap(),
        ]),
        "/no/such/checkpoint/config.json",
    );
    assert_one_line_error(
        &trainer(&[
            "classify-hf",
            dir_s,
            image.to_str().unwrap(),
            "--top-k",
            "0",
        ]),
        "--top-k",
    );
}
