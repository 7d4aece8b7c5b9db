//! LayerNorm over the channel axis of an NCHW feature map, and pointwise (1x1) linear
//! layers applied to NCHW maps, both without moving the channels last.
//!
//! ConvNeXt normalises and mixes channels at every pixel. Written channels-last, each
//! block permutes its map to `[batch, height, width, channels]` and back, and on CPU
//! backends those permuted views make every following op walk strided memory or copy.
//! Here the statistics are reduced over axis 1 and the linear layers are batched
//! matrix products `weight^T [out, in] x map [in, height * width]`: the same arithmetic
//! with every tensor kept contiguous in NCHW.

use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{backend::Backend, Tensor};

/// Applies `norm` (with epsilon `eps`) over the channels of
/// `[batch, channels, height, width]`. Burn's `LayerNorm` stays the parameter holder
/// so that a checkpoint's `weight`/`bias` load into it with no renaming; its epsilon is
/// private, so the caller passes the same value it was built with.
///
/// The per-position statistics are `[batch, 1, positions]`. Subtracting or dividing
/// them directly would broadcast over the middle (channel) axis, a pattern Flex has no
/// fast path for: it walks such operands element by element with computed strides,
/// forward and backward (the top item of a `perf` profile of a training step of the
/// default job's network; BENCHMARKS.md).
/// Instead, the channel mean is a batched product with a `[1, channels]` row of
/// `1 / channels`, and a statistic is spread back over the channels by a product with a
/// `[channels, 1]` column of ones, so every element-wise op sees two contiguous
/// operands of the same shape.
///
/// On Flex and `Autodiff<Flex>` the whole norm is one fused kernel instead
/// (`kernels::layer_norm`); [`channels_first_composed`] is the version every other
/// backend runs.
pub fn channels_first<B: Backend>(norm: &LayerNorm<B>, eps: f64, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex-kernels")]
    {
        let [batch, channels, height, width] = x.dims();
        let flat = x.clone().reshape([batch, channels, height * width]);
        if let Some(out) = crate::kernels::layer_norm::try_fast(norm, eps, flat) {
            return out.reshape([batch, channels, height, width]);
        }
    }
    channels_first_composed(norm, eps, x)
}

/// [`channels_first`] written with tensor operations, for every backend.
pub fn channels_first_composed<B: Backend>(
    norm: &LayerNorm<B>,
    eps: f64,
    x: Tensor<B, 4>,
) -> Tensor<B, 4> {
    let [batch, channels, height, width] = x.dims();
    let device = x.device();
    let x = x.reshape([batch, channels, height * width]);
    let average = Tensor::<B, 3>::full([1, 1, channels], 1.0 / channels as f64, &device);
    let spread = Tensor::<B, 3>::ones([1, channels, 1], &device);
    let mean = average.clone().matmul(x.clone());
    let centered = x - spread.clone().matmul(mean);
    let var = average.matmul(centered.clone().square());
    let inv_std = var.add_scalar(eps).sqrt().recip();
    let normalised = centered * spread.matmul(inv_std);
    let scaled = normalised * per_sample(norm.gamma.val(), batch);
    let out = match &norm.beta {
        Some(beta) => scaled + per_sample(beta.val(), batch),
        None => scaled,
    };
    out.reshape([batch, channels, height, width])
}

/// A per-channel vector `[channels]` as `[batch, channels, 1]`, stored (not a
/// broadcast view), to scale or shift `[batch, channels, positions]`. Flex has a fast
/// path for an operand that is constant along the trailing axes and contiguous along
/// the leading ones, and a much slower strided path for a `[1, channels, 1]` operand
/// broadcast over the batch; the copy costs a few values per sample. (Measured as part
/// of the NCHW change in BENCHMARKS.md, not on its own.)
pub fn per_sample<B: Backend>(values: Tensor<B, 1>, batch: usize) -> Tensor<B, 3> {
    let channels = values.dims()[0];
    values.reshape([1, channels, 1]).repeat_dim(0, batch)
}

/// `linear` applied at every position of `[batch, in, positions]`, giving
/// `[batch, out, positions]` (a 1x1 convolution whose weights are stored as Burn's
/// `Linear`, `[in, out]`).
///
/// On Flex and `Autodiff<Flex>` this is one fused kernel (`kernels::pointwise`);
/// [`pointwise_composed`] is the version every other backend runs.
pub fn pointwise<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    #[cfg(feature = "flex-kernels")]
    if let Some(out) = crate::kernels::pointwise::try_fast(linear, x.clone()) {
        return out;
    }
    pointwise_composed(linear, x)
}

/// `gelu(pointwise(linear, x))`: on Flex and `Autodiff<Flex>` one kernel that applies
/// the bias and GELU to each block of the product as it is made
/// (`kernels::pointwise::pointwise_gelu_forward`; while training it keeps GELU's
/// slopes, and one backward step goes through both); the two layers apart on every
/// other backend.
pub fn pointwise_gelu<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    #[cfg(feature = "flex-kernels")]
    if let Some(out) = crate::kernels::pointwise::try_fast_gelu(linear, x.clone()) {
        return out;
    }
    crate::kernels::gelu::gelu(pointwise(linear, x))
}

/// A ConvNeXt block's MLP, `pointwise(contract, gelu(pointwise(expand, x)))`. At
/// inference on Flex with fewer samples than threads, where each thread's share of a
/// sample's positions is at least the hidden layer's width (the early stages), one
/// kernel runs it in tiles of positions without making the hidden map whole
/// (`kernels::pointwise::pointwise_mlp_forward`); otherwise the two layers as
/// [`pointwise_gelu`] and [`pointwise`] run them.
pub fn pointwise_mlp<B: Backend>(
    expand: &Linear<B>,
    contract: &Linear<B>,
    x: Tensor<B, 3>,
) -> Tensor<B, 3> {
    #[cfg(feature = "flex-kernels")]
    if let Some(out) = crate::kernels::pointwise::try_fast_mlp(expand, contract, x.clone()) {
        return out;
    }
    pointwise(contract, pointwise_gelu(expand, x))
}

/// A pointwise layer (`Linear`, `[in, out]`) whose weight, on the CPU backends, is
/// stored output-major in memory, as the pointwise kernel reads it fastest
/// (`kernels::pointwise::out_major`); its values, its shape and its saved record are
/// those of `linear`, and every other backend keeps it as it is.
pub fn pointwise_layer<B: Backend>(linear: Linear<B>) -> Linear<B> {
    #[cfg(feature = "flex-kernels")]
    {
        let mut linear = linear;
        linear.weight = linear
            .weight
            .init_mapper(crate::kernels::pointwise::out_major)
            .load_mapper(crate::kernels::pointwise::out_major);
        linear
    }
    #[cfg(not(feature = "flex-kernels"))]
    linear
}

/// [`pointwise`] written with tensor operations, for every backend.
pub fn pointwise_composed<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let weight = linear.weight.val();
    let batch = x.dims()[0];
    let y = weight.transpose().unsqueeze::<3>().matmul(x);
    match &linear.bias {
        Some(bias) => y + per_sample(bias.val(), batch),
        None => y,
    }
}

/// A convolution whose kernel equals its stride (no padding, dilation or groups): the
/// ConvNeXt stem's `4 x 4 / 4` patchify and the `2 x 2 / 2` downsampling layers.
///
/// Its windows do not overlap, so it is a rearrangement followed by a pointwise layer:
/// each `k x k` patch of every input channel becomes one column of
/// `[batch, channels * k * k, patches]` (a reshape and a permute), and a matrix product
/// with the weight seen as `[out, channels * k * k]` gives the output.
///
/// - On Flex and `Autodiff<Flex>` the product is the pointwise
///   kernel. Burn's convolution gradient on Flex walks these small kernels with a
///   strided iterator (about a tenth of the default job's training step in `perf`,
///   BENCHMARKS.md); here the rearrangement is one copy each way
///   (`kernels::patches`), and the backward pass is the pointwise kernel's plus the
///   inverse copy.
/// - On a backend named with [`patch_conv_as_matmul_on`] (the trainer names its GPU
///   backends) it is [`patch_conv_composed`], a batched matrix product. Burn's CUDA
///   backend runs these layers as direct convolutions, and their gradients as direct
///   and transposed convolutions with few threads: 7-29 ms each at 384 px, batch 16
///   (`ncu`, BENCHMARKS.md "CUDA").
/// - Everywhere else, and for any other convolution, this is `conv.forward(x)`.
pub fn patch_conv<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex-kernels")]
    if let Some(out) = patch_conv_pointwise(conv, x.clone()) {
        return out;
    }
    if runs_patch_conv_as_matmul::<B>() {
        if let Some(out) = patch_conv_composed(conv, x.clone()) {
            return out;
        }
    }
    conv.forward(x)
}

/// The backends [`patch_conv`] runs as a matrix product on any device.
static MATMUL_BACKENDS: std::sync::Mutex<Vec<std::any::TypeId>> = std::sync::Mutex::new(Vec::new());

/// From now on, [`patch_conv`] on backend `B` is [`patch_conv_composed`]. Calling it
/// again for the same `B` changes nothing.
pub fn patch_conv_as_matmul_on<B: Backend>() {
    let id = std::any::TypeId::of::<B>();
    let mut table = MATMUL_BACKENDS.lock().unwrap_or_else(|e| e.into_inner());
    if !table.contains(&id) {
        table.push(id);
    }
}

fn runs_patch_conv_as_matmul<B: Backend>() -> bool {
    let table = MATMUL_BACKENDS.lock().unwrap_or_else(|e| e.into_inner());
    table.contains(&std::any::TypeId::of::<B>())
}

/// The `[rows, cols]` of the patch grid when `conv` applied to `x` is a patch
/// convolution [`patch_conv`] can rearrange (kernel equal to stride, no padding,
/// dilation or groups, sides multiples of the kernel, f32); `None` otherwise.
fn patch_grid<B: Backend>(conv: &Conv2d<B>, x: &Tensor<B, 4>) -> Option<[usize; 2]> {
    let [kh, kw] = conv.kernel_size;
    let [_, channels, height, width] = x.dims();
    let weight_in = conv.weight.dims()[1];
    let plain = x.dtype() == burn::tensor::DType::F32
        && conv.stride == conv.kernel_size
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && weight_in == channels
        && matches!(
            conv.padding,
            burn::nn::PaddingConfig2d::Valid | burn::nn::PaddingConfig2d::Explicit(0, 0, 0, 0)
        )
        && height % kh == 0
        && width % kw == 0;
    plain.then_some([height / kh, width / kw])
}

/// The non-overlapping `kh x kw` patches of `x` as the columns of
/// `[batch, channels * kh * kw, rows * cols]`, each column in the order of a weight's
/// `[out, channels, kh, kw]`.
fn patch_columns<B: Backend>(x: Tensor<B, 4>, [kh, kw]: [usize; 2]) -> Tensor<B, 3> {
    let [batch, channels, height, width] = x.dims();
    if [kh, kw] == [1, 1] {
        return x.reshape([batch, channels, height * width]);
    }
    let (rows, cols) = (height / kh, width / kw);
    // [n, c, rows, kh, cols, kw] -> [n, c, kh, kw, rows, cols]
    x.reshape([batch, channels, rows, kh, cols, kw])
        .permute([0, 1, 3, 5, 2, 4])
        .reshape([batch, channels * kh * kw, rows * cols])
}

/// [`patch_conv`] as a rearrangement and a batched matrix product written with tensor
/// operations, for any backend; `None` where the layer is not a patch convolution.
pub fn patch_conv_composed<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Option<Tensor<B, 4>> {
    let [rows, cols] = patch_grid(conv, &x)?;
    let batch = x.dims()[0];
    let [out, ..] = conv.weight.dims();
    let patches = patch_columns(x, conv.kernel_size);
    let entries = patches.dims()[1];
    let weight = conv.weight.val().reshape([1, out, entries]);
    let y = weight.matmul(patches);
    let y = match &conv.bias {
        Some(bias) => y + per_sample(bias.val(), batch),
        None => y,
    };
    Some(y.reshape([batch, out, rows, cols]))
}

/// [`patch_conv`] as a rearrangement and the pointwise kernel; `None` where that does
/// not apply (another backend, not a patch convolution, no bias).
#[cfg(feature = "flex-kernels")]
fn patch_conv_pointwise<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Option<Tensor<B, 4>> {
    if !crate::kernels::flex_types::is_flex::<B>() {
        return None;
    }
    let [rows, cols] = patch_grid(conv, &x)?;
    let batch = x.dims()[0];
    let [out, ..] = conv.weight.dims();
    // Real patches through the rearrangement kernel; a 1x1 layer's is a reshape.
    let patches = match conv.kernel_size {
        [1, 1] => None,
        k => crate::kernels::patches::try_fast(x.clone(), k),
    }
    .unwrap_or_else(|| patch_columns(x, conv.kernel_size));
    let entries = patches.dims()[1];
    let weight = conv.weight.val().reshape([out, entries]).transpose();
    let bias = conv.bias.as_ref()?.val();
    let y = crate::kernels::pointwise::try_fast_with(weight, bias, patches)?;
    Some(y.reshape([batch, out, rows, cols]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::module::Param;
    use burn::nn::LayerNormConfig;
    use burn::tensor::Distribution;
    use burn_flex::Flex;

    type B = Autodiff<Flex>;

    fn max_diff(a: Tensor<Flex, 1>, b: Tensor<Flex, 1>) -> f32 {
        a.sub(b).abs().max().into_scalar()
    }

    fn flat<const D: usize>(t: Tensor<Flex, D>) -> Tensor<Flex, 1> {
        let n = t.shape().num_elements();
        t.reshape([n])
    }

    /// Burn's own LayerNorm applied channels-last is the reference: values and the
    /// gradients of input, scale and shift must agree, on shapes with odd sizes, one
    /// channel, and a single position.
    fn matches_burn_layer_norm(
        ours_of: impl Fn(&burn::nn::LayerNorm<B>, f64, Tensor<B, 4>) -> Tensor<B, 4>,
    ) {
        let device = Default::default();
        let eps = 1e-6;
        for [n, c, h, w] in [[2, 5, 3, 7], [1, 24, 16, 16], [3, 1, 2, 2], [4, 7, 1, 1]] {
            let mut norm = LayerNormConfig::new(c).with_epsilon(eps).init::<B>(&device);
            norm.gamma =
                Param::from_tensor(Tensor::random([c], Distribution::Normal(1.0, 0.5), &device));
            norm.beta = Some(Param::from_tensor(Tensor::random(
                [c],
                Distribution::Normal(0.0, 0.5),
                &device,
            )));
            let x = Tensor::<B, 4>::random([n, c, h, w], Distribution::Normal(0.3, 2.0), &device)
                .require_grad();
            let weights = Tensor::<B, 4>::random([n, c, h, w], Distribution::Default, &device);

            let ours = ours_of(&norm, eps, x.clone());
            let stock = norm
                .forward(x.clone().permute([0, 2, 3, 1]))
                .permute([0, 3, 1, 2]);
            let forward = max_diff(flat(ours.clone().inner()), flat(stock.clone().inner()));
            assert!(
                forward < 1e-4,
                "{n}x{c}x{h}x{w}: outputs differ by {forward}"
            );

            let ours_grads = (ours * weights.clone()).sum().backward();
            let stock_grads = (stock * weights).sum().backward();
            let gamma = norm.gamma.val();
            let beta = norm.beta.as_ref().unwrap().val();
            let pairs = [
                (
                    "input",
                    flat(x.grad(&ours_grads).unwrap()),
                    flat(x.grad(&stock_grads).unwrap()),
                ),
                (
                    "scale",
                    gamma.grad(&ours_grads).unwrap(),
                    gamma.grad(&stock_grads).unwrap(),
                ),
                (
                    "shift",
                    beta.grad(&ours_grads).unwrap(),
                    beta.grad(&stock_grads).unwrap(),
                ),
            ];
            for (name, a, b) in pairs {
                let scale = b.clone().abs().max().into_scalar().max(1.0);
                let diff = max_diff(a, b);
                assert!(
                    diff < 1e-4 * scale,
                    "{n}x{c}x{h}x{w}: {name} gradients differ by {diff} (scale {scale})"
                );
            }
        }
    }

    /// On `Autodiff<Flex>` this is the fused kernel (`kernels::layer_norm`).
    #[test]
    fn channels_first_matches_burn_layer_norm_forward_and_backward() {
        matches_burn_layer_norm(channels_first);
    }

    /// The tensor-operation version the other backends run.
    #[test]
    fn composed_channels_first_matches_burn_layer_norm_forward_and_backward() {
        matches_burn_layer_norm(channels_first_composed);
    }
}
