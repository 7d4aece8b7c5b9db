//! A checkpoint that does not fit gives an error naming the file and the keys at
//! fault, never a panic.

mod common;

use common::*;
use model_core::hf::{HfCheckpoint, HfError};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

type B = burn::backend::Flex;

/// Copies the fixture's config files into `dir`.
fn copy_configs(dir: &Path) {
    for name in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(fixture_dir().join(name), dir.join(name)).unwrap();
    }
}

/// Rewrites the fixture's safetensors into `dir`, letting `edit` drop or add tensors.
fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<u8>)>)) {
    let bytes = std::fs::read(fixture_dir().join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, (view.shape().to_vec(), view.data().to_vec())))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, (shape, data))| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

fn load_error(dir: &Path) -> HfError {
    match HfCheckpoint::open(dir) {
        Err(e) => e,
        Ok(checkpoint) => checkpoint
            .load_classifier::<B>(&Default::default())
            .expect_err("this checkpoint must not load"),
    }
}

#[test]
fn missing_key_is_named() {
    let dir = scratch_dir("missing-key");
    copy_configs(&dir);
    let key = "convnext.encoder.stages.2.layers.1.layer_scale_parameter";
    rewrite_weights(&dir, |t| {
        assert!(t.remove(key).is_some());
    });
    let err = load_error(&dir);
    let msg = err.to_string();
    assert!(
        matches!(&err, HfError::Mismatch { mismatch, .. } if mismatch.missing == [key.to_string()]),
        "{msg}"
    );
    assert!(
        msg.contains(key) && msg.contains("model.safetensors"),
        "{msg}"
    );
}

#[test]
fn missing_layer_norm_is_named_in_pytorch_spelling() {
    let dir = scratch_dir("missing-norm");
    copy_configs(&dir);
    let key = "convnext.encoder.stages.1.downsampling_layer.0.weight";
    rewrite_weights(&dir, |t| {
        assert!(t.remove(key).is_some());
    });
    let msg = load_error(&dir).to_string();
    assert!(msg.contains(key), "{msg}");
}

#[test]
fn unexpected_key_is_named() {
    let dir = scratch_dir("unexpected-key");
    copy_configs(&dir);
    rewrite_weights(&dir, |t| {
        t.insert(
            "convnext.encoder.stages.9.extra.weight".into(),
            (vec![2], vec![0; 8]),
        );
    });
    let err = load_error(&dir);
    assert!(
        matches!(&err, HfError::Mismatch { mismatch, .. }
            if mismatch.unexpected == ["convnext.encoder.stages.9.extra.weight".to_string()]
                && mismatch.missing.is_empty()),
        "{err}"
    );
}

#[test]
fn config_widths_that_disagree_with_the_tensors() {
    let dir = scratch_dir("wrong-widths");
    copy_configs(&dir);
    std::fs::copy(
        fixture_dir().join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["hidden_sizes"] = serde_json::json!([8, 16, 24, 40]);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let err = load_error(&dir);
    let msg = err.to_string();
    let HfError::Mismatch { mismatch, .. } = &err else {
        panic!("expected a shape mismatch, got {msg}");
    };
    let (key, want, got) = mismatch
        .misshaped
        .iter()
        .find(|(k, _, _)| k == "convnext.encoder.stages.3.downsampling_layer.1.weight")
        .unwrap_or_else(|| panic!("{msg}"));
    assert_eq!(
        (want.as_slice(), got.as_slice()),
        (&[40, 24, 2, 2][..], &[32, 24, 2, 2][..]),
        "{key}"
    );
    assert!(msg.contains("mis-shaped"), "{msg}");
}

#[test]
fn truncated_safetensors() {
    let dir = scratch_dir("truncated");
    copy_configs(&dir);
    let bytes = std::fs::read(fixture_dir().join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(&dir);
    assert!(matches!(err, HfError::Weights { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn truncated_pytorch_bin() {
    let dir = scratch_dir("truncated-bin");
    copy_configs(&dir);
    let bytes = std::fs::read(fixture_dir().join("pytorch_model.bin")).unwrap();
    std::fs::write(dir.join("pytorch_model.bin"), &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(&dir);
    assert!(matches!(err, HfError::Weights { .. }), "{err}");
    assert!(err.to_string().contains("pytorch_model.bin"), "{err}");
}

#[test]
fn a_checkpoint_of_another_architecture() {
    // Its config says what it is.
    let dir = scratch_dir("bert");
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "bert", "hidden_size": 32}"#,
    )
    .unwrap();
    std::fs::write(dir.join("model.safetensors"), b"").unwrap();
    let err = load_error(&dir);
    assert!(
        matches!(&err, HfError::NotConvNext { model_type, .. } if model_type == "bert"),
        "{err}"
    );
    assert!(err.to_string().contains("config.json"), "{err}");

    // Its config claims ConvNeXt, but the tensors are another network's.
    let dir = scratch_dir("bert-tensors");
    copy_configs(&dir);
    rewrite_weights(&dir, |t| {
        t.clear();
        t.insert(
            "bert.embeddings.word_embeddings.weight".into(),
            (vec![4, 2], vec![0; 32]),
        );
        t.insert("classifier.bias".into(), (vec![7], vec![0; 28]));
    });
    let err = load_error(&dir);
    let HfError::Mismatch { mismatch, .. } = &err else {
        panic!("expected a key mismatch, got {err}");
    };
    let (missing, unexpected) = (&mismatch.missing, &mismatch.unexpected);
    assert!(
        missing.contains(&"convnext.embeddings.patch_embeddings.weight".to_string()),
        "{err}"
    );
    assert_eq!(
        unexpected,
        &["bert.embeddings.word_embeddings.weight".to_string()]
    );
    assert!(
        err.to_string().contains("and "),
        "long lists are summarised: {err}"
    );
}

#[test]
fn directory_without_weights_or_config() {
    let dir = scratch_dir("no-weights");
    copy_configs(&dir);
    assert!(matches!(load_error(&dir), HfError::NoWeights { .. }));
    let empty = scratch_dir("empty");
    let err = load_error(&empty);
    assert!(
        matches!(err, HfError::Io { .. }) && err.to_string().contains("config.json"),
        "{err}"
    );
    std::fs::write(empty.join("config.json"), "{ not json").unwrap();
    assert!(matches!(load_error(&empty), HfError::Config { .. }));
}
