//! LayerNorm over the channel axis of an NCHW feature map, and pointwise (1x1) linear
//! layers applied to NCHW maps, both without moving the channels last.
//!
//! ConvNeXt normalises and mixes channels at every pixel. Written channels-last, each
//! block permutes its map to `[batch, height, width, channels]` and back, and on CPU
//! backends those permuted views make every following op walk strided memory or copy.
//! Here the statistics are reduced over axis 1 and the linear layers are batched
//! matrix products `weight^T [out, in] x map [in, height * width]`: the same arithmetic
//! with every tensor kept contiguous in NCHW.

use burn::nn::{LayerNorm, Linear};
use burn::tensor::{backend::Backend, Tensor};

/// Applies `norm` (with epsilon `eps`) over the channels of
/// `[batch, channels, height, width]`. Burn's `LayerNorm` stays the parameter holder
/// so that a checkpoint's `weight`/`bias` load into it with no renaming; its epsilon is
/// private, so the caller passes the same value it was built with.
pub fn channels_first<B: Backend>(norm: &LayerNorm<B>, eps: f64, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let mean = x.clone().mean_dim(1);
    let centered = x - mean;
    let var = centered.clone().square().mean_dim(1);
    let normalised = centered / var.add_scalar(eps).sqrt();
    let batch = normalised.dims()[0];
    let scaled = normalised * per_sample(norm.gamma.val(), batch).unsqueeze_dim::<4>(3);
    match &norm.beta {
        Some(beta) => scaled + per_sample(beta.val(), batch).unsqueeze_dim::<4>(3),
        None => scaled,
    }
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
pub fn pointwise<B: Backend>(linear: &Linear<B>, x: Tensor<B, 3>) -> Tensor<B, 3> {
    let weight = linear.weight.val();
    let batch = x.dims()[0];
    let y = weight.transpose().unsqueeze::<3>().matmul(x);
    match &linear.bias {
        Some(bias) => y + per_sample(bias.val(), batch),
        None => y,
    }
}
