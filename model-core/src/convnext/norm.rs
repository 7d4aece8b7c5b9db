//! LayerNorm over the channel axis of an NCHW feature map.

use burn::nn::LayerNorm;
use burn::tensor::{backend::Backend, Tensor};

/// Applies `norm` over the channels of `[batch, channels, height, width]` by moving the
/// channels last, normalising, and moving them back (what ConvNeXt calls a "channels
/// first" LayerNorm). Keeping Burn's own `LayerNorm` as the parameter holder lets a
/// checkpoint's `weight`/`bias` load into it with no renaming.
pub fn channels_first<B: Backend>(norm: &LayerNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    norm.forward(x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])
}
