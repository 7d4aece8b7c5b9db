//! The imported network computes what transformers computes, on the committed fixture
//! made by scripts/make_hf_fixture.py (random small ConvNeXt with every parameter
//! perturbed, so a skipped or mis-mapped parameter moves the logits by > 0.05).

mod common;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use common::*;
use model_core::hf::HfCheckpoint;

type B = Flex;

/// transformers' logits and pooled features, matched within this absolute tolerance.
const TOLERANCE: f32 = 1e-4;

fn fixture_input(checkpoint: &HfCheckpoint) -> Tensor<B, 4> {
    let pre = checkpoint.preprocess_config();
    assert_eq!(pre.size, 384, "the fixture's processor works at 384 px");
    let bytes = std::fs::read(fixture_dir().join("input.png")).unwrap();
    let chw = pre.preprocess_bytes(&bytes).unwrap();
    let size = pre.size as usize;
    Tensor::from_data(
        TensorData::new(chw, [1, 3, size, size]),
        &Default::default(),
    )
}

#[test]
fn preprocessing_matches_the_hub_processor() {
    let checkpoint = HfCheckpoint::open(fixture_dir()).unwrap();
    let expected = expected();
    let pixels = fixture_input(&checkpoint);
    let values: Vec<f32> = pixels.into_data().to_vec().unwrap();
    let first = floats(&expected["pixel_values_first"]);
    assert!(max_abs_diff(&values[..first.len()], &first) < 1e-5);
    let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
    let want = expected["pixel_values_mean"].as_f64().unwrap();
    assert!((mean - want).abs() < 1e-5, "mean {mean} vs {want}");
}

fn check_parity(checkpoint: &HfCheckpoint) {
    let expected = expected();
    let device = Default::default();
    let model = checkpoint.load_classifier::<B>(&device).unwrap();
    let pixels = fixture_input(checkpoint);

    let features = model.convnext.forward_features(pixels.clone());
    let shape: Vec<usize> = expected["features_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(features.dims().to_vec(), shape);
    let features: Vec<f32> = features.into_data().to_vec().unwrap();
    let first = floats(&expected["features_first"]);
    let diff = max_abs_diff(&features[..first.len()], &first);
    assert!(diff < TOLERANCE, "last-stage features differ by {diff}");
    let mean = features.iter().map(|&v| v as f64).sum::<f64>() / features.len() as f64;
    assert!((mean - expected["features_mean"].as_f64().unwrap()).abs() < TOLERANCE as f64);

    let pooled: Vec<f32> = model
        .forward_pooled(pixels.clone())
        .into_data()
        .to_vec()
        .unwrap();
    let diff = max_abs_diff(&pooled, &floats(&expected["pooled"]));
    assert!(diff < TOLERANCE, "pooled features differ by {diff}");

    let logits: Vec<f32> = model.forward(pixels).into_data().to_vec().unwrap();
    let want = floats(&expected["logits"]);
    let diff = max_abs_diff(&logits, &want);
    println!("logits {logits:?}\ntransformers {want:?}\nmax abs diff {diff:e}");
    assert!(diff < TOLERANCE, "logits differ by {diff}");
}

#[test]
fn safetensors_checkpoint_matches_transformers() {
    let checkpoint = HfCheckpoint::open(fixture_dir()).unwrap();
    assert!(checkpoint.weights_path.ends_with("model.safetensors"));
    check_parity(&checkpoint);
}

#[test]
fn pytorch_bin_checkpoint_matches_transformers() {
    // The same weights, saved by torch.save, in a directory without the safetensors file.
    let dir = scratch_dir("bin-only");
    for name in [
        "config.json",
        "preprocessor_config.json",
        "pytorch_model.bin",
    ] {
        std::fs::copy(fixture_dir().join(name), dir.join(name)).unwrap();
    }
    let checkpoint = HfCheckpoint::open(&dir).unwrap();
    assert!(checkpoint.weights_path.ends_with("pytorch_model.bin"));
    check_parity(&checkpoint);
}

#[test]
fn labels_and_sizes_come_from_the_checkpoint() {
    let checkpoint = HfCheckpoint::open(fixture_dir()).unwrap();
    let labels = checkpoint.labels();
    assert_eq!(labels.len(), 7);
    assert_eq!(labels[0], "tabby cat");
    assert_eq!(labels[6], "rain poncho");
    let cfg = checkpoint.backbone_config();
    assert_eq!(cfg.hidden_sizes, [8, 16, 24, 32]);
    assert_eq!(cfg.depths, [1, 1, 2, 1]);
    let expected = expected();
    // Our classifier holds exactly the parameters transformers' does.
    let model = checkpoint
        .load_classifier::<B>(&Default::default())
        .unwrap();
    use burn::module::Module;
    assert_eq!(
        model.num_params() as u64,
        expected["param_count"].as_u64().unwrap()
    );
}

#[test]
fn backbone_loads_into_a_garment_model() {
    use burn::module::Module;
    use model_core::heads::HeadConfig;
    use model_core::model::GarmentModelConfig;
    let checkpoint = HfCheckpoint::open(fixture_dir()).unwrap();
    let device = Default::default();
    let config = GarmentModelConfig::new(
        checkpoint.backbone_config(),
        HeadConfig::new().with_head_dim(64),
        vec![3, 2],
    );
    let model = checkpoint.load_backbone(config.init::<B>(&device)).unwrap();
    let reference = checkpoint.load_classifier::<B>(&device).unwrap();
    let pixels = fixture_input(&checkpoint);
    let ours: Vec<f32> = model
        .backbone
        .forward_features(pixels.clone())
        .into_data()
        .to_vec()
        .unwrap();
    let theirs: Vec<f32> = reference
        .convnext
        .forward_features(pixels)
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(ours, theirs);
    assert!(model.num_params() > reference.convnext.num_params());
}
