//! Shapes, gradients and size of the per-category network.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use burn::tensor::{Distribution, Tensor};
use model_core::convnext::{block::drop_path, ConvNextConfig};
use model_core::heads::{HeadConfig, SpatialGate};
use model_core::loss::MaskedTargets;
use model_core::model::GarmentModelConfig;
use model_core::taxonomy::Taxonomy;

type B = Flex;
type AB = Autodiff<B>;

fn tiny_model_config(class_counts: Vec<usize>) -> GarmentModelConfig {
    GarmentModelConfig::new(
        ConvNextConfig::test_tiny().with_drop_path_rate(0.1),
        HeadConfig::new().with_head_dim(64),
        class_counts,
    )
}

#[test]
fn backbone_reduces_by_32() {
    let device = Default::default();
    let backbone = ConvNextConfig::test_tiny().init::<B>(&device);
    let x = Tensor::<B, 4>::random([2, 3, 64, 96], Distribution::Normal(0.0, 1.0), &device);
    assert_eq!(backbone.forward_features(x).dims(), [2, 32, 2, 3]);
    let atto = ConvNextConfig::atto().init::<B>(&device);
    let x = Tensor::<B, 4>::random([1, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    assert_eq!(atto.forward_features(x).dims(), [1, 320, 2, 2]);
}

#[test]
fn category_model_outputs_one_head_per_attribute() {
    let device = Default::default();
    let taxonomy = Taxonomy::meesho();
    let sarees = taxonomy.category("Sarees").unwrap();
    let config = GarmentModelConfig::for_category(
        ConvNextConfig::test_tiny(),
        HeadConfig::new().with_head_dim(64),
        sarees,
    );
    let model = config.init::<B>(&device);
    let x = Tensor::<B, 4>::random([3, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let out = model.forward(x);
    assert_eq!(out.logits.len(), 10);
    for (logits, attribute) in out.logits.iter().zip(&sarees.attributes) {
        assert_eq!(logits.dims(), [3, attribute.classes.len()]);
    }
    assert_eq!(out.pooled.dims(), [3, 64]);
    for map in &out.attention {
        assert_eq!(map.dims(), [3, 2, 2]);
        let values: Vec<f32> = map.clone().into_data().to_vec().unwrap();
        assert!(
            values.iter().all(|&v| v > 0.0 && v < 1.0),
            "attention is a sigmoid gate"
        );
    }
}

#[test]
fn per_channel_gate_also_gives_a_map() {
    let device = Default::default();
    let config = GarmentModelConfig::new(
        ConvNextConfig::test_tiny(),
        HeadConfig::new()
            .with_head_dim(32)
            .with_spatial_gate(SpatialGate::PerChannel),
        vec![2],
    );
    let out = config.init::<B>(&device).forward(Tensor::random(
        [1, 3, 32, 32],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    assert_eq!(out.attention[0].dims(), [1, 1, 1]);
}

#[test]
fn one_backward_pass_reaches_backbone_and_every_head() {
    let device = Default::default();
    let model = tiny_model_config(vec![4, 2, 3]).init::<AB>(&device);
    let x = Tensor::<AB, 4>::random([4, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let out = model.forward(x);
    let labels: [&[Option<usize>]; 3] = [
        &[Some(0), Some(3), None, Some(1)],
        &[Some(1), None, None, Some(0)],
        &[Some(2), Some(2), Some(0), None],
    ];
    let mut loss = Tensor::<AB, 1>::zeros([1], &device);
    for (logits, labels) in out.logits.into_iter().zip(labels) {
        let classes = logits.dims()[1];
        let targets = MaskedTargets::from_labels(labels, classes, &device).unwrap();
        loss = loss + targets.cross_entropy(logits);
    }
    let loss_value: f32 = loss.clone().into_scalar();
    assert!(loss_value.is_finite() && loss_value > 0.0);
    let grads = loss.backward();
    let norm = |t: Tensor<B, 4>| -> f32 { t.abs().sum().into_scalar() };
    let stem = model
        .backbone
        .embeddings
        .patch_embeddings
        .weight
        .grad(&grads)
        .expect("stem gradient");
    assert!(norm(stem) > 0.0);
    for (i, head) in model.heads.iter().enumerate() {
        let g = head
            .spatial
            .conv1
            .weight
            .grad(&grads)
            .unwrap_or_else(|| panic!("head {i} spatial gradient"));
        assert!(norm(g) > 0.0, "head {i}");
        let out = head
            .classifier
            .out
            .weight
            .grad(&grads)
            .expect("classifier gradient");
        assert!(out.abs().sum().into_scalar() > 0.0);
    }
}

#[test]
fn drop_path_only_while_training() {
    let device = Default::default();
    let x = Tensor::<B, 4>::ones([64, 2, 2, 2], &device);
    // Inference backend: identity.
    let same: Vec<f32> = drop_path(x.clone(), 0.5).into_data().to_vec().unwrap();
    assert!(same.iter().all(|&v| v == 1.0));
    // Training backend: each sample is dropped (0) or kept and rescaled (2).
    let xa = Tensor::<AB, 4>::ones([64, 2, 2, 2], &device);
    let out: Vec<f32> = drop_path(xa, 0.5).into_data().to_vec().unwrap();
    let dropped = out
        .chunks(8)
        .filter(|s| s.iter().all(|&v| v == 0.0))
        .count();
    let kept = out
        .chunks(8)
        .filter(|s| s.iter().all(|&v| (v - 2.0).abs() < 1e-6))
        .count();
    assert_eq!(
        dropped + kept,
        64,
        "whole samples are dropped, not single values"
    );
    assert!(
        dropped > 10 && kept > 10,
        "dropped {dropped} of 64 at rate 0.5"
    );
}

#[test]
fn inference_copy_is_deterministic() {
    // Dropout and drop path are off on the inner backend: two passes agree.
    let device = Default::default();
    let model = tiny_model_config(vec![3]).init::<AB>(&device).valid();
    let x = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let a: Vec<f32> = model.forward(x.clone()).logits[0]
        .clone()
        .into_data()
        .to_vec()
        .unwrap();
    let b: Vec<f32> = model.forward(x).logits[0]
        .clone()
        .into_data()
        .to_vec()
        .unwrap();
    assert_eq!(a, b);
}

/// The reference design (SPEC.md) reports 95,658,253 parameters for Men Tshirts: a
/// ConvNeXt-Base backbone, the 1024 -> 512 feature layer and 5 heads of width 512.
///
/// Ours, counted here: 94,762,765. Where the 895,488 (0.94 %) go:
/// - backbone 87,564,416: transformers' `ConvNextModel` for base has 87,566,464
///   (fixture's expected.json); the 2,048 difference is its pooled LayerNorm, which a
///   garment model does not use (its heads pool their own features);
/// - feature layer 524,800 (1x1 conv 1024 -> 512 with bias);
/// - heads 6,673,549: per head 148,480 spatial (two 3x3 convs, groups 32, 512 -> 512),
///   131,712 channel (512 -> 128 -> 512), 1,053,184 classifier trunk
///   (512 -> 1024 -> 512 with two LayerNorms), plus 513 x classes outputs (13 classes).
///
/// The reference does not publish its head code; the difference is 0.2 % of its
/// backbone-plus-heads and about 13 % of its head parameters, consistent with, for
/// example, a wider spatial-attention layer or a norm on the feature layer there.
#[test]
fn men_tshirts_base_model_size() {
    let device = Default::default();
    let taxonomy = Taxonomy::meesho();
    let config = GarmentModelConfig::for_category(
        ConvNextConfig::base(),
        HeadConfig::new(),
        taxonomy.category("Men Tshirts").unwrap(),
    );
    let model = config.init::<B>(&device);
    let backbone = model.backbone.num_params();
    let feature = model.feature.num_params();
    let heads: usize = model.heads.iter().map(|h| h.num_params()).sum();
    let total = model.num_params();
    println!("backbone {backbone}, feature layer {feature}, heads {heads}, total {total} (reference 95,658,253)");
    assert_eq!(backbone, 87_566_464 - 2_048);
    assert_eq!(feature, 1024 * 512 + 512);
    assert_eq!(heads, 5 * (148_480 + 131_712 + 1_053_184) + 513 * 13);
    assert_eq!(total, 94_762_765);
    let reference = 95_658_253f64;
    assert!(
        (total as f64 - reference).abs() / reference < 0.01,
        "within 1% of the reference"
    );
}

#[test]
fn exported_weights_load_back_in_f32_and_f16() {
    use model_core::store::{load_safetensors, write_safetensors, LoadError, Precision};
    let device = Default::default();
    let config = tiny_model_config(vec![3, 2]);
    let model = config.init::<B>(&device);
    let x = Tensor::<B, 4>::random([1, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let want: Vec<f32> = model.forward(x.clone()).logits[0]
        .clone()
        .into_data()
        .to_vec()
        .unwrap();
    for (precision, tolerance) in [(Precision::F32, 0.0), (Precision::F16, 5e-2)] {
        let bytes = write_safetensors(&model, precision).unwrap();
        let values = model.num_params() * precision.bytes_per_value();
        assert!(
            bytes.len() >= values && bytes.len() < values + 64 * 1024,
            "{precision:?}"
        );
        let loaded = load_safetensors(config.init::<B>(&device), bytes).unwrap();
        let got: Vec<f32> = loaded.forward(x.clone()).logits[0]
            .clone()
            .into_data()
            .to_vec()
            .unwrap();
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(diff <= tolerance, "{precision:?}: {diff}");
    }
    // Weights of another shape, and bytes that are no safetensors file, are errors.
    let other = tiny_model_config(vec![4, 2]).init::<B>(&device);
    let bytes = write_safetensors(&other, Precision::F32).unwrap();
    let err = load_safetensors(config.init::<B>(&device), bytes).unwrap_err();
    assert!(
        matches!(&err, LoadError::Mismatch(m) if m.misshaped.len() == 2),
        "{err}"
    );
    assert!(err.to_string().contains("heads.0.classifier.out"), "{err}");
    let err = load_safetensors(config.init::<B>(&device), b"garbage".to_vec()).unwrap_err();
    assert!(matches!(err, LoadError::File(_)), "{err}");
}

/// The strides of a Flex weight as it lies in memory.
fn strides(weight: Tensor<B, 2>) -> Vec<isize> {
    weight.into_primitive().tensor().layout().strides().to_vec()
}

#[test]
fn pointwise_weights_lie_output_major_on_the_cpu_and_are_saved_input_major() {
    use burn::backend::NdArray;
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    let device = Default::default();
    let config = ConvNextConfig::test_tiny();
    let backbone = config.init::<B>(&device);
    let block = &backbone.encoder.stages[0].layers[0];
    let weight = block.pwconv1.weight.val();
    let [inputs, outputs] = weight.dims();
    assert!(outputs > inputs, "pwconv1 widens: {inputs} -> {outputs}");
    // Stored `[out, in]`: one step along the inputs is one element.
    assert_eq!(
        strides(weight.clone()),
        vec![1, inputs as isize],
        "fresh pwconv1"
    );
    let [hidden, _] = block.pwconv2.weight.dims();
    assert_eq!(
        strides(block.pwconv2.weight.val()),
        vec![1, hidden as isize],
        "fresh pwconv2"
    );

    // Saved and loaded: the same values, stored output-major again on Flex, and read
    // by a backend without the kernels (NdArray) as the same `[in, out]` matrix.
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let bytes =
        Recorder::<B>::record(&recorder, backbone.clone().into_record(), ()).expect("record");
    let loaded = config
        .init::<B>(&device)
        .load_record(Recorder::<B>::load(&recorder, bytes.clone(), &device).expect("load"));
    let reloaded = loaded.encoder.stages[0].layers[0].pwconv1.weight.val();
    assert_eq!(
        strides(reloaded.clone()),
        vec![1, inputs as isize],
        "loaded pwconv1"
    );
    assert_eq!(
        reloaded.into_data(),
        weight.clone().into_data(),
        "loaded values"
    );
    let cpu = Default::default();
    let other = config
        .init::<NdArray>(&cpu)
        .load_record(Recorder::<NdArray>::load(&recorder, bytes, &cpu).expect("load on NdArray"));
    let on_ndarray = other.encoder.stages[0].layers[0].pwconv1.weight.val();
    assert_eq!(on_ndarray.dims(), [inputs, outputs]);
    assert_eq!(
        on_ndarray.into_data().to_vec::<f32>().unwrap(),
        weight.into_data().to_vec::<f32>().unwrap(),
        "NdArray reads the record as the same matrix"
    );

    // Training: the weight stays a parameter that receives a gradient.
    let trained = config.init::<AB>(&device);
    let block = &trained.encoder.stages[0].layers[0];
    assert_eq!(
        strides(block.pwconv1.weight.val().inner()),
        vec![1, inputs as isize],
        "fresh pwconv1 under autodiff"
    );
    let x = Tensor::<AB, 4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let grads = trained.forward_features(x).sum().backward();
    let grad = block
        .pwconv1
        .weight
        .grad(&grads)
        .expect("pwconv1 has a gradient");
    assert_eq!(grad.dims(), [inputs, outputs]);
}
