//! All heads at once (`heads::stacked`) against each head's own forward pass: values,
//! attention maps, and the gradients of the features and of every head parameter.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::{Distribution, Tensor};
use model_core::heads::stacked::{forward_stacked, stackable};
use model_core::heads::{AttributeHead, HeadConfig, HeadOutput, SpatialGate};

type AB = Autodiff<Flex>;

/// Relative to the largest reference value (at least 1): the stacked path sums the same
/// products in other orders, and pools before scaling by the channel weights.
const TOLERANCE: f32 = 1e-4;

fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

fn assert_close(case: &str, what: &str, ours: &[f32], reference: &[f32]) {
    assert_eq!(
        ours.len(),
        reference.len(),
        "{case}: {what}: lengths differ"
    );
    let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = ours
        .iter()
        .zip(reference)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff < TOLERANCE * scale,
        "{case}: {what} differ by {diff} (scale {scale})"
    );
}

/// Heads with every weight random, the LayerNorms' scale and shift included (they
/// start at one and zero, where a mix-up between heads would not show).
fn heads(config: &HeadConfig, classes: &[usize]) -> Vec<AttributeHead<AB>> {
    let device = Default::default();
    classes
        .iter()
        .map(|&c| {
            let mut head = config.init::<AB>(c, &device);
            for layer in &mut head.classifier.hidden {
                let width = layer.norm.gamma.dims()[0];
                layer.norm.gamma = Param::from_tensor(Tensor::random(
                    [width],
                    Distribution::Normal(1.0, 0.5),
                    &device,
                ));
                layer.norm.beta = Some(Param::from_tensor(Tensor::random(
                    [width],
                    Distribution::Normal(0.0, 0.5),
                    &device,
                )));
            }
            head
        })
        .collect()
}

/// Every parameter's gradient, in module order, flattened.
struct Grads<'a> {
    grads: &'a <AB as burn::tensor::backend::AutodiffBackend>::Gradients,
    out: Vec<Vec<f32>>,
}

impl ModuleVisitor<AB> for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let grad = param.val().grad(self.grads).map(values).unwrap_or_default();
        self.out.push(grad);
    }
}

/// A loss that weighs every logit and attention value differently, so any misplaced
/// value or gradient changes it.
fn loss(outputs: &[HeadOutput<AB>], weights: &[(Tensor<AB, 2>, Tensor<AB, 3>)]) -> Tensor<AB, 1> {
    outputs
        .iter()
        .zip(weights)
        .map(|(out, (wl, wa))| {
            (out.logits.clone() * wl.clone()).sum() + (out.attention.clone() * wa.clone()).sum()
        })
        .reduce(|a, b| a + b)
        .unwrap()
}

#[test]
fn stacked_heads_match_each_head_values_and_gradients() {
    let device = Default::default();
    // (gate, head width, groups, kernel, classifier widths, class counts, [batch, h, w])
    let cases = [
        (
            SpatialGate::Shared,
            12,
            4,
            3,
            vec![2, 1],
            vec![4, 2, 7],
            [3, 3, 5],
        ),
        (
            SpatialGate::PerChannel,
            12,
            4,
            3,
            vec![2, 1],
            vec![4, 2, 7],
            [3, 3, 5],
        ),
        (SpatialGate::Shared, 8, 8, 5, vec![1], vec![3, 3], [2, 4, 4]),
        (
            SpatialGate::PerChannel,
            6,
            1,
            3,
            vec![],
            vec![5, 2, 2, 9],
            [1, 1, 1],
        ),
        (
            SpatialGate::Shared,
            16,
            4,
            3,
            vec![2, 1],
            vec![3, 6, 2, 4, 5, 3, 2, 8, 4, 3],
            [4, 2, 2],
        ),
    ];
    for (gate, width, groups, kernel, hidden, classes, [batch, h, w]) in cases {
        let case = format!("{gate:?}, width {width}, {groups} groups, {kernel}x{kernel}, hidden {hidden:?}, classes {classes:?}, {batch}x{h}x{w}");
        let dropout = vec![0.0; hidden.len()];
        let config = HeadConfig::new()
            .with_head_dim(width)
            .with_spatial_groups(groups)
            .with_spatial_kernel(kernel)
            .with_spatial_gate(gate)
            .with_channel_reduction(2)
            .with_classifier_hidden(hidden)
            .with_classifier_dropout(dropout);
        let heads = heads(&config, &classes);
        assert!(stackable(&heads), "{case}: not stackable");
        let features = Tensor::<AB, 4>::random(
            [batch, width, h, w],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let weights: Vec<_> = classes
            .iter()
            .map(|&c| {
                (
                    Tensor::<AB, 2>::random([batch, c], Distribution::Normal(0.0, 1.0), &device),
                    Tensor::<AB, 3>::random([batch, h, w], Distribution::Normal(0.0, 1.0), &device),
                )
            })
            .collect();

        let run = |stacked: bool| {
            let x = features.clone().detach().require_grad();
            let outputs = if stacked {
                forward_stacked(&heads, x.clone())
            } else {
                heads.iter().map(|head| head.forward(x.clone())).collect()
            };
            let shown: Vec<(Vec<f32>, Vec<f32>)> = outputs
                .iter()
                .map(|o| {
                    (
                        values(o.logits.clone().inner()),
                        values(o.attention.clone().inner()),
                    )
                })
                .collect();
            let grads = loss(&outputs, &weights).backward();
            let mut visitor = Grads {
                grads: &grads,
                out: Vec::new(),
            };
            for head in &heads {
                head.visit(&mut visitor);
            }
            (shown, values(x.grad(&grads).unwrap()), visitor.out)
        };
        let (each, each_input, each_params) = run(false);
        let (ours, ours_input, ours_params) = run(true);
        for (i, ((l, a), (rl, ra))) in ours.iter().zip(&each).enumerate() {
            assert_close(&case, &format!("head {i} logits"), l, rl);
            assert_close(&case, &format!("head {i} attention"), a, ra);
        }
        assert_close(&case, "feature gradients", &ours_input, &each_input);
        assert_eq!(ours_params.len(), each_params.len());
        for (i, (g, rg)) in ours_params.iter().zip(&each_params).enumerate() {
            assert!(!rg.is_empty(), "{case}: parameter {i} has no gradient");
            assert_close(&case, &format!("parameter {i}'s gradient"), g, rg);
        }

        // The same on the backend without autodiff (inference).
        let inner: Vec<AttributeHead<Flex>> = heads.iter().map(|h| h.valid()).collect();
        let x = features.clone().inner();
        let stacked = forward_stacked(&inner, x.clone());
        for (i, (head, out)) in inner.iter().zip(stacked).enumerate() {
            let reference = head.forward(x.clone());
            assert_close(
                &case,
                &format!("inference, head {i} logits"),
                &values(out.logits),
                &values(reference.logits),
            );
        }
    }
}

#[test]
fn heads_of_other_shapes_are_not_stacked() {
    let device = Default::default();
    let narrow = HeadConfig::new().with_head_dim(8).with_spatial_groups(4);
    let wide = HeadConfig::new().with_head_dim(16).with_spatial_groups(4);
    let one = vec![narrow.init::<Flex>(3, &device)];
    assert!(
        !stackable(&one),
        "a single head gains nothing from stacking"
    );
    let mixed = vec![
        narrow.init::<Flex>(3, &device),
        wide.init::<Flex>(3, &device),
    ];
    assert!(
        !stackable(&mixed),
        "heads of two widths cannot share a stack"
    );
    let mut unbiased = vec![
        narrow.init::<Flex>(3, &device),
        narrow.init::<Flex>(4, &device),
    ];
    assert!(stackable(&unbiased));
    unbiased[1].channel.fc1.bias = None;
    assert!(
        !stackable(&unbiased),
        "a head without a bias cannot share a stack"
    );
    let mut regrouped = vec![
        narrow.init::<Flex>(3, &device),
        narrow.init::<Flex>(4, &device),
    ];
    for head in &mut regrouped {
        head.spatial.conv2 = burn::nn::conv::Conv2dConfig::new([8, 8], [3, 3])
            .with_groups(2)
            .with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
    }
    assert!(
        !stackable(&regrouped),
        "spatial convolutions grouped differently cannot share a stack"
    );
}
