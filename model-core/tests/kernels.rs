//! The kernels in `model_core::kernels` against the stock Burn operations they replace,
//! on random inputs with odd sizes: values and every gradient.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::tensor::{Distribution, Tensor};
use model_core::kernels::conv::{grouped_conv_same, grouped_conv_weight_grad, GroupedConvShape};

type B = Autodiff<Flex>;

/// A "same" convolution with `groups` groups; a depthwise one when `groups` equals
/// both channel counts.
fn same_layer(channels_in: usize, channels_out: usize, groups: usize, kernel: usize) -> Conv2d<B> {
    let device = Default::default();
    let pad = kernel / 2;
    let mut conv = Conv2dConfig::new([channels_in, channels_out], [kernel, kernel])
        .with_groups(groups)
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init::<B>(&device);
    // A bias far from zero, so a wrong bias gradient or a dropped bias shows.
    conv.bias = Some(Param::from_tensor(Tensor::random(
        [channels_out],
        Distribution::Normal(0.5, 1.0),
        &device,
    )));
    conv
}

fn max_diff<const D: usize>(a: Tensor<Flex, D>, b: Tensor<Flex, D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

/// Tolerance relative to the largest reference value (at least 1): the two paths sum
/// the same products in different orders.
const TOLERANCE: f32 = 1e-4;

fn assert_close<const D: usize>(
    case: &str,
    what: &str,
    ours: Tensor<Flex, D>,
    stock: Tensor<Flex, D>,
) {
    let scale = stock.clone().abs().max().into_scalar().max(1.0);
    let diff = max_diff(ours, stock);
    assert!(
        diff < TOLERANCE * scale,
        "{case}: {what} differ by {diff} (scale {scale})"
    );
}

/// Depthwise layers (ConvNeXt's 7x7), grouped layers (the heads' 3x3), a dense one,
/// on odd sizes, single positions and a 1x1 kernel: `ours` against `Conv2d::forward`,
/// outputs and the gradients of input, weight and bias.
fn matches_stock_conv2d(ours_of: impl Fn(&Conv2d<B>, Tensor<B, 4>) -> Tensor<B, 4>) {
    let device = Default::default();
    // [batch, channels in, channels out, groups, height, width], kernel
    for ([n, c, co, groups, h, w], k) in [
        ([2, 5, 5, 5, 7, 9], 7),
        ([1, 24, 24, 24, 16, 16], 7),
        ([3, 3, 3, 3, 4, 13], 3),
        ([2, 4, 4, 4, 1, 1], 7),
        // 7x7 planes wider than two 16-lane vectors (the blocked path's pairs of
        // vectors and a single one), and one narrower than half a vector.
        ([1, 3, 3, 3, 9, 40], 7),
        ([2, 3, 3, 3, 6, 7], 7),
        ([1, 6, 6, 6, 2, 3], 5),
        ([4, 2, 2, 2, 11, 5], 1),
        ([2, 64, 64, 32, 2, 2], 3),
        ([3, 6, 9, 3, 5, 7], 3),
        ([2, 4, 6, 1, 3, 5], 3),
        // Groups of 8 or more outputs (the heads' shape, 16 per group, and 20 per group:
        // one full block of 16 lanes and one of 4), which Flex's inference path runs
        // with the grouped kernel.
        ([2, 64, 64, 4, 7, 7], 3),
        ([1, 40, 40, 2, 5, 3], 3),
        ([3, 24, 48, 3, 1, 2], 5),
        ([1, 16, 8, 2, 4, 6], 1),
    ] {
        let conv = same_layer(c, co, groups, k);
        let x = Tensor::<B, 4>::random([n, c, h, w], Distribution::Normal(0.2, 1.5), &device)
            .require_grad();
        let upstream = Tensor::<B, 4>::random([n, co, h, w], Distribution::Default, &device);

        let ours = ours_of(&conv, x.clone());
        let stock = conv.forward(x.clone());
        let case = format!("{n}x{c}->{co}/{groups}x{h}x{w} k{k}");
        assert_close(
            &case,
            "outputs",
            ours.clone().inner(),
            stock.clone().inner(),
        );

        // The inference backend: Flex's path (the depthwise kernel for depthwise
        // layers) against the stock convolution.
        let plain = conv.valid();
        assert_close(
            &case,
            "Flex outputs",
            grouped_conv_same(&plain, x.clone().inner()),
            plain.forward(x.clone().inner()),
        );

        let ours_grads = (ours * upstream.clone()).sum().backward();
        let stock_grads = (stock * upstream).sum().backward();
        let weight = conv.weight.val();
        let bias = conv.bias.as_ref().unwrap().val();
        assert_close(
            &case,
            "input gradients",
            x.grad(&ours_grads).unwrap(),
            x.grad(&stock_grads).unwrap(),
        );
        assert_close(
            &case,
            "weight gradients",
            weight.grad(&ours_grads).unwrap(),
            weight.grad(&stock_grads).unwrap(),
        );
        assert_close(
            &case,
            "bias gradients",
            bias.grad(&ours_grads).unwrap(),
            bias.grad(&stock_grads).unwrap(),
        );
    }
}

/// The CPU path (`Autodiff<Flex>` is what `grouped_conv_same` specialises).
#[test]
fn grouped_same_conv_matches_stock_conv2d_forward_and_backward() {
    matches_stock_conv2d(grouped_conv_same);
}

/// The GPU backends' path, written with the backend's own convolutions, run here on
/// Flex's: the same cases, the same tolerance.
#[test]
fn gpu_path_matches_stock_conv2d_forward_and_backward() {
    matches_stock_conv2d(|conv, x| {
        model_core::kernels::conv::gpu::grouped_conv_same::<Flex>(conv, x)
            .expect("every case is a grouped same convolution with a bias")
    });
}

/// Layers the fast path does not cover (stride 2, padding other than k/2) give the
/// stock result through `grouped_conv_same`.
#[test]
fn other_layers_fall_back_to_the_stock_convolution() {
    let device = Default::default();
    let strided = Conv2dConfig::new([4, 4], [3, 3])
        .with_groups(4)
        .with_stride([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init::<B>(&device);
    let unpadded = Conv2dConfig::new([4, 4], [3, 3]).init::<B>(&device);
    for conv in [strided, unpadded] {
        let x = Tensor::<B, 4>::random([2, 4, 6, 6], Distribution::Default, &device);
        let diff = max_diff(
            grouped_conv_same(&conv, x.clone()).inner(),
            conv.forward(x).inner(),
        );
        assert_eq!(diff, 0.0);
    }
}

/// The backend-free weight gradient against a sum written out term by term, on both of
/// its paths: per-offset dot products (few inputs per group) and one matrix product per
/// group (8 or more inputs per group).
#[test]
fn weight_gradient_matches_the_definition() {
    for (n, ci, co, groups, h, w, k) in [
        (2, 4, 6, 2, 5, 4, 3),
        (3, 16, 24, 2, 5, 7, 3),
        (2, 8, 8, 1, 6, 3, 5),
    ] {
        let shape = GroupedConvShape {
            batch: n,
            channels_in: ci,
            channels_out: co,
            groups,
            height: h,
            width: w,
            kernel: k,
        };
        let (in_g, out_g) = (ci / groups, co / groups);
        let x: Vec<f32> = (0..n * ci * h * w)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let g: Vec<f32> = (0..n * co * h * w)
            .map(|i| ((i * 53 % 7) as f32 - 3.0) / 2.0)
            .collect();
        let (dw, db) = grouped_conv_weight_grad(&x, &g, shape);
        let pad = (k / 2) as isize;
        for o in 0..co {
            let mut bias = 0.0;
            for b in 0..n {
                for y in 0..h {
                    for xo in 0..w {
                        bias += g[((b * co + o) * h + y) * w + xo];
                    }
                }
            }
            assert!((db[o] - bias).abs() < 1e-4, "{shape:?}: bias {o}");
            for i in 0..in_g {
                let ch = (o / out_g) * in_g + i;
                for ky in 0..k {
                    for kx in 0..k {
                        let mut sum = 0.0;
                        for b in 0..n {
                            for y in 0..h {
                                for xo in 0..w {
                                    let iy = y as isize + ky as isize - pad;
                                    let ix = xo as isize + kx as isize - pad;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let input =
                                        x[((b * ci + ch) * h + iy as usize) * w + ix as usize];
                                    sum += input * g[((b * co + o) * h + y) * w + xo];
                                }
                            }
                        }
                        let got = dw[((o * in_g + i) * k + ky) * k + kx];
                        assert!(
                            (got - sum).abs() < 1e-4,
                            "{shape:?}: weight {o},{i},{ky},{kx}: {got} vs {sum}"
                        );
                    }
                }
            }
        }
    }
}

/// The fused GELU against Burn's composed one: values and gradients on `Autodiff<Flex>`
/// (training) and values on `Flex` (inference), over odd sizes and the whole range
/// where GELU bends (and well into both tails).
#[test]
fn fused_gelu_matches_stock_gelu_values_and_gradients() {
    use burn::tensor::activation;
    use model_core::kernels::gelu::gelu;
    let device = Default::default();
    for (shape, spread) in [
        ([3, 5, 7, 9], 3.0f32),
        ([1, 1, 1, 1], 1.0),
        ([2, 96, 16, 16], 8.0),
    ] {
        let case = format!("{shape:?} spread {spread}");
        let x = Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, spread as f64), &device);
        // A random upstream gradient, so every element's slope is checked.
        let weights = Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        // `Sole` hands GELU a map nothing else holds (as a pointwise layer's output
        // is), which it overwrites with its values.
        #[derive(Clone, Copy, Debug)]
        enum Run {
            Stock,
            Shared,
            Sole,
        }
        let run = |how: Run| {
            let xa = Tensor::<B, 4>::from_inner(x.clone()).require_grad();
            let y = match how {
                Run::Stock => activation::gelu(xa.clone()),
                Run::Shared => gelu(xa.clone()),
                Run::Sole => gelu(xa.clone() * 1.0),
            };
            let loss = (y.clone() * Tensor::from_inner(weights.clone())).sum();
            let grads = loss.backward();
            (y.inner(), xa.grad(&grads).expect("x has a gradient"))
        };
        let (y_stock, dx_stock) = run(Run::Stock);
        for how in [Run::Shared, Run::Sole] {
            let (y_ours, dx_ours) = run(how);
            let (value_diff, grad_diff) = (
                max_diff(y_ours, y_stock.clone()),
                max_diff(dx_ours, dx_stock.clone()),
            );
            // Absolute: erf's approximation is within 1.5e-7, and f32 rounding of values
            // up to 8 * spread adds a few ulps.
            assert!(
                value_diff < 2e-6 * spread,
                "{case} {how:?}: values differ by {value_diff}"
            );
            assert!(
                grad_diff < 2e-6 * spread,
                "{case} {how:?}: gradients differ by {grad_diff}"
            );
        }
        // Inference backend: the same values, whether the input is shared (a new
        // buffer) or held by nothing else (computed in its own buffer).
        let before = x.to_data();
        let stock = activation::gelu(x.clone());
        let plain = max_diff(gelu(x.clone()), stock.clone());
        assert!(
            plain < 2e-6 * spread,
            "{case}: Flex values differ by {plain}"
        );
        let sole = max_diff(gelu(x.clone() * 1.0), stock);
        assert!(
            sole < 2e-6 * spread,
            "{case}: Flex values in place differ by {sole}"
        );
        assert_eq!(x.to_data(), before, "{case}: a shared input was written");
    }
}

#[test]
fn erf_matches_reference_values() {
    use model_core::kernels::gelu::{erf, erf_with, Fused};
    // erf at a few points, to ten places (tables of the error function).
    for (x, want) in [
        (0.0f32, 0.0f64),
        (0.1, 0.1124629160),
        (0.5, 0.5204998778),
        (1.0, 0.8427007929),
        (1.5, 0.9661051465),
        (2.0, 0.9953222650),
        (3.0, 0.9999779095),
        (-0.5, -0.5204998778),
        (-2.0, -0.9953222650),
    ] {
        // The baseline form and the fused multiply-add form the wide loops run.
        for (form, got) in [("split", erf(x)), ("fused", erf_with::<Fused>(x))] {
            let got = got as f64;
            // 1.5e-7 for the formula in exact arithmetic, plus a few f32 rounding steps.
            assert!(
                (got - want).abs() < 5e-7,
                "{form} erf({x}) = {got}, want {want}"
            );
        }
    }
}

/// The polynomial exponential inside the fused GELU against the standard library's,
/// relative error, over the whole range it is used on (x <= 0) in small steps.
#[test]
fn polynomial_exp_matches_std_exp() {
    use model_core::kernels::gelu::{exp_neg, exp_neg_with, Fused};
    // The baseline form and the fused multiply-add form the wide loops run.
    for (form, exp) in [
        ("split", exp_neg as fn(f32) -> f32),
        ("fused", exp_neg_with::<Fused>),
    ] {
        let mut worst = 0.0f64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        // A few units in the last place of an f32 (2^-23 is 1.2e-7).
        assert!(worst < 4e-7, "{form}: largest relative error {worst}");
        assert_eq!(exp(0.0), 1.0, "{form}");
        // Far below the range: tiny, never negative or NaN.
        let tail = exp(-1e4);
        assert!((0.0..1e-37).contains(&tail), "{form}: {tail}");
    }
}

/// The fused pointwise layer against the same layer written with tensor operations:
/// outputs and the gradients of input, weight and bias on `Autodiff<Flex>`, and outputs
/// on `Flex`; the same for the layer followed by GELU (`pointwise_gelu`, one kernel)
/// against Burn's GELU of the composed layer. Batches below and above the thread count
/// take the two parallel layouts; the sizes are odd, and one case has a single position
/// and a single input channel.
#[test]
fn fused_pointwise_matches_composed_values_and_gradients() {
    use burn::nn::Linear;
    use model_core::convnext::norm::{
        pointwise, pointwise_composed, pointwise_gelu, pointwise_layer,
    };
    let device = Default::default();
    // [batch, inputs, outputs, positions]
    for [n, ci, co, p] in [
        // More positions than output rows: one sample's 13 or 37 positions cut into
        // blocks of columns (7 + 6 and 19 + 18 with two threads).
        [1, 5, 7, 13],
        [1, 9, 6, 37],
        // One sample, its 41 output rows cut into blocks (21 + 20 rows with two
        // threads, 11 + 11 + 11 + 8 with four).
        [1, 24, 41, 30],
        [2, 24, 96, 49],
        // More than one 32 x 32 tile of the output-major copy each way.
        [2, 40, 35, 9],
        [9, 3, 11, 17],
        [33, 1, 4, 1],
    ] {
        let case = format!("batch {n}, {ci} -> {co}, {p} positions");
        let layer: Linear<B> = random_linear(ci, co);
        let x = Tensor::<Flex, 3>::random([n, ci, p], Distribution::Normal(0.0, 1.0), &device);
        let upstream =
            Tensor::<Flex, 3>::random([n, co, p], Distribution::Normal(0.0, 1.0), &device);
        // `with_gelu`: the layer followed by GELU (`pointwise_gelu` when fused, Burn's
        // GELU of the composed layer otherwise).
        let run = |fused: bool, out_major: bool, with_gelu: bool| {
            let layer = if out_major {
                // Stored `[out, in]` in memory, as the network's blocks store theirs.
                pointwise_layer(layer.clone())
            } else {
                layer.clone()
            };
            let xa = Tensor::<B, 3>::from_inner(x.clone()).require_grad();
            let y = match (fused, with_gelu) {
                (true, false) => pointwise(&layer, xa.clone()),
                (false, false) => pointwise_composed(&layer, xa.clone()),
                (true, true) => pointwise_gelu(&layer, xa.clone()),
                (false, true) => {
                    burn::tensor::activation::gelu(pointwise_composed(&layer, xa.clone()))
                }
            };
            let grads = (y.clone() * Tensor::from_inner(upstream.clone()))
                .sum()
                .backward();
            (
                y.inner(),
                xa.grad(&grads).expect("x has a gradient"),
                layer.weight.grad(&grads).expect("weight has a gradient"),
                layer
                    .bias
                    .as_ref()
                    .and_then(|b| b.grad(&grads))
                    .expect("bias has a gradient"),
            )
        };
        let (y_ref, dx_ref, dw_ref, db_ref) = run(false, false, false);
        let (gelu_ref, gelu_dx_ref, gelu_dw_ref, gelu_db_ref) = run(false, false, true);
        for out_major in [false, true] {
            let case = format!("{case}, weight stored output-major: {out_major}");
            let (y, dx, dw, db) = run(true, out_major, false);
            assert_close(&case, "outputs", y, y_ref.clone());
            assert_close(&case, "input gradients", dx, dx_ref.clone());
            assert_close(&case, "weight gradients", dw, dw_ref.clone());
            assert_close(&case, "bias gradients", db, db_ref.clone());
            // The layer and GELU as one kernel with one backward step.
            let (y, dx, dw, db) = run(true, out_major, true);
            assert_close(&case, "outputs with GELU", y, gelu_ref.clone());
            assert_close(&case, "input gradients with GELU", dx, gelu_dx_ref.clone());
            assert_close(&case, "weight gradients with GELU", dw, gelu_dw_ref.clone());
            assert_close(&case, "bias gradients with GELU", db, gelu_db_ref.clone());
            // The inference backend takes the fused path too.
            let plain_layer: Linear<Flex> = if out_major {
                pointwise_layer(layer.valid())
            } else {
                layer.valid()
            };
            assert_close(
                &case,
                "Flex outputs",
                pointwise(&plain_layer, x.clone()),
                y_ref.clone(),
            );
            assert_close(
                &case,
                "Flex outputs with GELU",
                pointwise_gelu(&plain_layer, x.clone()),
                gelu_ref.clone(),
            );
        }
    }
}

/// A random `Linear` (weight and a bias far from zero). Its parameters are set
/// explicitly: a lazily initialised parameter would draw new values in each clone.
fn random_linear<Bk: burn::tensor::backend::Backend>(
    inputs: usize,
    outputs: usize,
) -> burn::nn::Linear<Bk> {
    let device = Default::default();
    let mut layer: burn::nn::Linear<Bk> =
        burn::nn::LinearConfig::new(inputs, outputs).init(&device);
    layer.weight = Param::from_tensor(Tensor::random(
        [inputs, outputs],
        Distribution::Normal(0.0, 1.0),
        &device,
    ));
    layer.bias = Some(Param::from_tensor(Tensor::random(
        [outputs],
        Distribution::Normal(0.5, 1.0),
        &device,
    )));
    layer
}

/// `pointwise_mlp_forward` (a block's MLP in tiles of positions) against the two layers
/// composed from stock Burn operations with Burn's GELU between them, on odd sizes and
/// tile widths from one position to more than the map holds (a last tile shorter than
/// the others, runs of one sample's positions cut between threads).
#[test]
fn tiled_mlp_matches_composed_layers() {
    use model_core::convnext::norm::{pointwise_composed, pointwise_layer};
    use model_core::kernels::pointwise::{pointwise_mlp_forward, MlpShape, WeightView};
    let device = Default::default();
    // [batch, channels, hidden, positions]
    for [n, c, h, p] in [[1, 3, 7, 41], [2, 5, 20, 70], [3, 16, 9, 33], [1, 1, 1, 1]] {
        let (expand, contract) = (random_linear::<Flex>(c, h), random_linear::<Flex>(h, c));
        let x = Tensor::<Flex, 3>::random([n, c, p], Distribution::Normal(0.0, 1.0), &device);
        let reference = pointwise_composed(
            &contract,
            burn::tensor::activation::gelu(pointwise_composed(&expand, x.clone())),
        );
        // The kernel reads the weights output-major, as the blocks store theirs.
        let (expand, contract) = (pointwise_layer(expand), pointwise_layer(contract));
        let data = |t: Tensor<Flex, 2>| t.transpose().into_data().to_vec::<f32>().unwrap();
        let bias = |l: &burn::nn::Linear<Flex>| {
            l.bias
                .as_ref()
                .unwrap()
                .val()
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        };
        let (w1, w2) = (data(expand.weight.val()), data(contract.weight.val()));
        let (b1, b2) = (bias(&expand), bias(&contract));
        let xs = x.into_data().to_vec::<f32>().unwrap();
        let shape = MlpShape {
            batch: n,
            channels: c,
            hidden: h,
            positions: p,
        };
        for tile in [1, 4, 16, 64, 1000] {
            let y = pointwise_mlp_forward(
                &xs,
                WeightView {
                    data: &w1,
                    along_in: 1,
                    along_out: c,
                },
                &b1,
                WeightView {
                    data: &w2,
                    along_in: 1,
                    along_out: h,
                },
                &b2,
                shape,
                tile,
            );
            let y =
                Tensor::<Flex, 3>::from_data(burn::tensor::TensorData::new(y, [n, c, p]), &device);
            let case = format!("batch {n}, {c} -> {h} -> {c}, {p} positions, tile {tile}");
            assert_close(&case, "outputs", y, reference.clone());
        }
    }
}

/// `pointwise_mlp` at inference on Flex, where it takes the tiled kernel (one sample
/// on more than one thread, more positions per thread than hidden channels, more than
/// one tile per thread) and where it does not (several samples, few positions),
/// against the composed layers; and on `Autodiff<Flex>`, which keeps the two layers
/// apart, values and gradients.
#[test]
fn block_mlp_matches_composed_layers_on_both_backends() {
    use model_core::convnext::norm::{pointwise_composed, pointwise_layer, pointwise_mlp};
    let device = Default::default();
    // [batch, channels, hidden, positions]
    for [n, c, h, p] in [
        [1, 3, 7, 1100],
        [1, 6, 300, 901],
        [3, 5, 20, 70],
        [1, 24, 96, 49],
    ] {
        let case = format!("batch {n}, {c} -> {h} -> {c}, {p} positions");
        let (expand, contract) = (random_linear::<Flex>(c, h), random_linear::<Flex>(h, c));
        let x = Tensor::<Flex, 3>::random([n, c, p], Distribution::Normal(0.0, 1.0), &device);
        let composed = |x: Tensor<Flex, 3>| {
            pointwise_composed(
                &contract,
                burn::tensor::activation::gelu(pointwise_composed(&expand, x)),
            )
        };
        let reference = composed(x.clone());
        let (stored1, stored2) = (
            pointwise_layer(expand.clone()),
            pointwise_layer(contract.clone()),
        );
        assert_close(
            &case,
            "Flex outputs",
            pointwise_mlp(&stored1, &stored2, x.clone()),
            reference.clone(),
        );
        // Weights left input-major (as an optimizer step writes them) take the layers
        // apart, with the same values.
        assert_close(
            &case,
            "Flex outputs, input-major weights",
            pointwise_mlp(&expand, &contract, x.clone()),
            reference.clone(),
        );
        let to_ad = |l: &burn::nn::Linear<Flex>| -> burn::nn::Linear<B> {
            let mut ad: burn::nn::Linear<B> =
                burn::nn::LinearConfig::new(l.weight.dims()[0], l.weight.dims()[1]).init(&device);
            ad.weight = Param::from_tensor(Tensor::from_inner(l.weight.val()));
            ad.bias = Some(Param::from_tensor(Tensor::from_inner(
                l.bias.as_ref().unwrap().val(),
            )));
            pointwise_layer(ad)
        };
        let (ad1, ad2) = (to_ad(&expand), to_ad(&contract));
        let xa = Tensor::<B, 3>::from_inner(x.clone()).require_grad();
        let y = pointwise_mlp(&ad1, &ad2, xa.clone());
        let grads = y.clone().sum().backward();
        assert_close(
            &case,
            "Autodiff<Flex> outputs",
            y.inner(),
            reference.clone(),
        );
        let dx = xa.grad(&grads).expect("x has a gradient");
        let xr = Tensor::<B, 3>::from_inner(x).require_grad();
        let (r1, r2) = (to_ad(&expand), to_ad(&contract));
        let yr = pointwise_composed(
            &r2,
            burn::tensor::activation::gelu(pointwise_composed(&r1, xr.clone())),
        );
        let grads_r = yr.sum().backward();
        assert_close(
            &case,
            "Autodiff<Flex> input gradients",
            dx,
            xr.grad(&grads_r).expect("x has a gradient"),
        );
    }
}

#[test]
fn patch_conv_matches_stock_conv_values_and_gradients() {
    use model_core::convnext::norm::{patch_conv, patch_conv_composed};
    let device = Default::default();
    // [batch, channels in, channels out, kernel (= stride), height, width]; the last
    // case's sides are not multiples of the kernel, so it takes the stock path.
    for [n, c, co, k, h, w] in [
        [2, 3, 24, 4, 16, 12],
        [1, 5, 7, 2, 6, 10],
        [3, 24, 48, 2, 8, 8],
        [1, 3, 8, 4, 4, 4],
        [5, 1, 2, 2, 2, 6],
        [2, 6, 5, 1, 3, 7],
        [1, 3, 4, 2, 7, 9],
    ] {
        let case = format!("batch {n}, {c} -> {co}, k{k}, {h}x{w}");
        let mut conv = Conv2dConfig::new([c, co], [k, k])
            .with_stride([k, k])
            .init::<B>(&device);
        // Set explicitly (a lazily initialised parameter draws anew in each clone),
        // with a bias far from zero so a dropped bias shows.
        conv.weight = Param::from_tensor(Tensor::random(
            [co, c, k, k],
            Distribution::Normal(0.0, 1.0),
            &device,
        ));
        conv.bias = Some(Param::from_tensor(Tensor::random(
            [co],
            Distribution::Normal(0.5, 1.0),
            &device,
        )));
        let x = Tensor::<Flex, 4>::random([n, c, h, w], Distribution::Normal(0.2, 1.5), &device);
        let (ho, wo) = (h / k, w / k);
        let upstream = Tensor::<Flex, 4>::random([n, co, ho, wo], Distribution::Default, &device);
        // 0: stock convolution; 1: `patch_conv` (the pointwise kernel here);
        // 2: `patch_conv_composed` (what the GPU backends run), or stock where the
        // layer is not a patch convolution.
        let run = |path: u8| {
            let conv = conv.clone();
            let xa = Tensor::<B, 4>::from_inner(x.clone()).require_grad();
            let y = match path {
                0 => conv.forward(xa.clone()),
                1 => patch_conv(&conv, xa.clone()),
                _ => patch_conv_composed(&conv, xa.clone())
                    .unwrap_or_else(|| conv.forward(xa.clone())),
            };
            let grads = (y.clone() * Tensor::from_inner(upstream.clone()))
                .sum()
                .backward();
            (
                y.inner(),
                xa.grad(&grads).expect("x has a gradient"),
                conv.weight.grad(&grads).expect("weight has a gradient"),
                conv.bias
                    .as_ref()
                    .and_then(|b| b.grad(&grads))
                    .expect("bias has a gradient"),
            )
        };
        let (y_ref, dx_ref, dw_ref, db_ref) = run(0);
        for (path, name) in [(1, "patch_conv"), (2, "patch_conv_composed")] {
            let (y, dx, dw, db) = run(path);
            let case = format!("{case}, {name}");
            assert_close(&case, "outputs", y, y_ref.clone());
            assert_close(&case, "input gradients", dx, dx_ref.clone());
            assert_close(&case, "weight gradients", dw, dw_ref.clone());
            assert_close(&case, "bias gradients", db, db_ref.clone());
        }
        let plain: Conv2d<Flex> = conv.valid();
        assert_close(
            &case,
            "Flex outputs",
            patch_conv(&plain, x.clone()),
            y_ref.clone(),
        );
        if let Some(y) = patch_conv_composed(&plain, x.clone()) {
            assert_close(&case, "Flex composed outputs", y, y_ref);
        } else {
            assert!(
                h % k != 0 || w % k != 0,
                "{case}: composed path refused a patch layer"
            );
        }
    }
}

/// The patch rearrangement's loops against the reshape-permute-reshape they replace
/// (exactly: nothing is computed), and the gradient's copy as its inverse.
#[test]
fn patch_columns_match_the_composed_permute_exactly() {
    use model_core::kernels::patches::{from_columns, to_columns, PatchShape};
    let device = Default::default();
    // [batch, channels, height, width, kh, kw]
    for [n, c, h, w, kh, kw] in [
        [2, 3, 16, 12, 4, 4],
        [1, 5, 6, 10, 2, 2],
        [3, 2, 6, 9, 3, 1],
        [1, 1, 4, 6, 2, 3],
        [2, 4, 1, 1, 1, 1],
    ] {
        let x = Tensor::<Flex, 4>::random([n, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let (rows, cols) = (h / kh, w / kw);
        let composed: Vec<f32> = x
            .clone()
            .reshape([n, c, rows, kh, cols, kw])
            .permute([0, 1, 3, 5, 2, 4])
            .reshape([n * c * h * w])
            .into_data()
            .to_vec()
            .unwrap();
        let input: Vec<f32> = x.into_data().to_vec().unwrap();
        let shape = PatchShape {
            batch: n,
            channels: c,
            height: h,
            width: w,
            kh,
            kw,
        };
        let first_difference = |a: &[f32], b: &[f32]| a.iter().zip(b).position(|(p, q)| p != q);
        let mut columns = vec![f32::NAN; input.len()];
        to_columns(&input, shape, &mut columns);
        assert_eq!(
            first_difference(&columns, &composed),
            None,
            "{shape:?}: columns differ at that index"
        );
        let mut back = vec![f32::NAN; input.len()];
        from_columns(&columns, shape, &mut back);
        assert_eq!(
            first_difference(&back, &input),
            None,
            "{shape:?}: back from the columns, differs at that index"
        );
    }
}

#[test]
fn fused_scaled_residual_matches_composed_values_and_gradients() {
    use model_core::kernels::residual::{scaled_residual, scaled_residual_composed};
    let device = Default::default();
    // [batch, channels, positions]; a factor per sample or none. Rows of 1 and 3
    // positions make many rows per parallel task; 5000 positions give one row a task.
    for ([n, c, p], with_factor) in [
        ([3, 5, 7], true),
        ([3, 5, 7], false),
        ([1, 1, 1], true),
        ([2, 40, 3], false),
        ([9, 7, 1], true),
        ([2, 3, 5000], true),
    ] {
        let case = format!("[{n}, {c}, {p}], factor {with_factor}");
        let normal = |shape: [usize; 3]| {
            Tensor::<Flex, 3>::random(shape, Distribution::Normal(0.0, 1.0), &device)
        };
        let (x, branch, upstream) = (normal([n, c, p]), normal([n, c, p]), normal([n, c, p]));
        let scale = Tensor::<Flex, 1>::random([c], Distribution::Normal(0.5, 1.0), &device);
        // Dropped samples (0) and survivors scaled up, as stochastic depth makes them.
        let factor = with_factor.then(|| {
            let values: Vec<f32> = (0..n).map(|i| [0.0, 1.25, 1.25][i % 3]).collect();
            Tensor::<Flex, 1>::from_floats(values.as_slice(), &device)
        });
        #[derive(Clone, Copy, Debug)]
        enum Run {
            Composed,
            // The block input is held elsewhere too (as the depthwise layer's saved
            // input is while training): the fused step writes a new buffer.
            Shared,
            // Held by nothing else: the fused step writes over it.
            Sole,
        }
        let run = |how: Run| {
            let xa = Tensor::<B, 3>::from_inner(x.clone()).require_grad();
            let ba = Tensor::<B, 3>::from_inner(branch.clone()).require_grad();
            let sa = Tensor::<B, 1>::from_inner(scale.clone()).require_grad();
            let fa = factor.clone().map(Tensor::<B, 1>::from_inner);
            let y = match how {
                Run::Composed => scaled_residual_composed(xa.clone(), ba.clone(), sa.clone(), fa),
                Run::Shared => scaled_residual(xa.clone(), ba.clone(), sa.clone(), fa),
                Run::Sole => scaled_residual(xa.clone() * 1.0, ba.clone(), sa.clone(), fa),
            };
            let grads = (y.clone() * Tensor::from_inner(upstream.clone()))
                .sum()
                .backward();
            (
                y.inner(),
                xa.grad(&grads).expect("x has a gradient"),
                ba.grad(&grads).expect("branch has a gradient"),
                sa.grad(&grads).expect("scale has a gradient"),
            )
        };
        let (y_ref, dx_ref, db_ref, ds_ref) = run(Run::Composed);
        for how in [Run::Shared, Run::Sole] {
            let case = format!("{case}, {how:?}");
            let (y, dx, db, ds) = run(how);
            // Same products in the same order: the same values.
            assert_eq!(y.to_data(), y_ref.to_data(), "{case}: outputs");
            assert_eq!(dx.to_data(), dx_ref.to_data(), "{case}: input gradients");
            assert_eq!(db.to_data(), db_ref.to_data(), "{case}: branch gradients");
            // Summed in another order.
            assert_close(&case, "scale gradients", ds, ds_ref.clone());
        }
        // The inference backend: the same values, and a shared input left as it was.
        let before = x.to_data();
        let plain = scaled_residual(x.clone(), branch.clone(), scale.clone(), factor.clone());
        assert_eq!(plain.to_data(), y_ref.to_data(), "{case}: Flex outputs");
        assert_eq!(x.to_data(), before, "{case}: a shared input was written");
        let sole = scaled_residual(
            x.clone() * 1.0,
            branch.clone(),
            scale.clone(),
            factor.clone(),
        );
        assert_eq!(
            sole.to_data(),
            y_ref.to_data(),
            "{case}: Flex outputs in place"
        );
    }
}

#[test]
fn fused_position_gate_matches_composed_values_and_gradients() {
    use model_core::kernels::gate::{gate_positions, gate_positions_composed};
    let device = Default::default();
    // [batch, channels, positions]: 300 positions make two blocks of the gate
    // gradient's 256; the heads' planes at 224 px have 49.
    for [n, c, p] in [[3, 5, 7], [1, 1, 1], [2, 7, 300], [9, 3, 1], [2, 64, 49]] {
        let case = format!("[{n}, {c}, {p}]");
        let x = Tensor::<Flex, 3>::random([n, c, p], Distribution::Normal(0.0, 1.0), &device);
        let upstream =
            Tensor::<Flex, 3>::random([n, c, p], Distribution::Normal(0.0, 1.0), &device);
        let gate = Tensor::<Flex, 2>::random([n, p], Distribution::Uniform(0.0, 1.0), &device);
        #[derive(Clone, Copy, Debug)]
        enum Run {
            Composed,
            Shared,
            // `x` held by nothing else (the fused step must still keep it for the
            // gate's gradient, not overwrite it).
            Sole,
        }
        let run = |how: Run| {
            let xa = Tensor::<B, 3>::from_inner(x.clone()).require_grad();
            let ga = Tensor::<B, 2>::from_inner(gate.clone()).require_grad();
            let y = match how {
                Run::Composed => gate_positions_composed(xa.clone(), ga.clone()),
                Run::Shared => gate_positions(xa.clone(), ga.clone()),
                Run::Sole => gate_positions(xa.clone() * 1.0, ga.clone()),
            };
            let grads = (y.clone() * Tensor::from_inner(upstream.clone()))
                .sum()
                .backward();
            (
                y.inner(),
                xa.grad(&grads).expect("x has a gradient"),
                ga.grad(&grads).expect("gate has a gradient"),
            )
        };
        let (y_ref, dx_ref, dg_ref) = run(Run::Composed);
        for how in [Run::Shared, Run::Sole] {
            let case = format!("{case}, {how:?}");
            let (y, dx, dg) = run(how);
            assert_eq!(y.to_data(), y_ref.to_data(), "{case}: outputs");
            assert_eq!(dx.to_data(), dx_ref.to_data(), "{case}: input gradients");
            assert_close(&case, "gate gradients", dg, dg_ref.clone());
        }
        let before = x.to_data();
        let plain = gate_positions(x.clone(), gate.clone());
        assert_eq!(plain.to_data(), y_ref.to_data(), "{case}: Flex outputs");
        assert_eq!(x.to_data(), before, "{case}: a shared input was written");
        let sole = gate_positions(x.clone() * 1.0, gate.clone());
        assert_eq!(
            sole.to_data(),
            y_ref.to_data(),
            "{case}: Flex outputs in place"
        );
    }
}

/// Every test above again in a child process for each instruction set narrower than
/// this CPU's widest (`GARMENT_TAGGER_SIMD`), so that one machine checks each compiled
/// copy of the kernels' loops (the library's own tests check that the cap takes effect).
#[test]
fn kernel_tests_pass_at_every_narrower_simd_level() {
    model_core::kernels::rerun_tests_at_narrower_levels(
        &[],
        "kernel_tests_pass_at_every_narrower_simd_level",
    );
}
