//! The transition between two stages: normalise, then halve the resolution.

use super::norm::{channels_first, patch_conv};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::{backend::Backend, Tensor};

/// Channel LayerNorm followed by a strided `stride x stride` convolution that widens the
/// channels. In Hugging Face checkpoints these are `downsampling_layer.0` and
/// `downsampling_layer.1`; the weight table renames them to `norm` and `conv`.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    pub norm: LayerNorm<B>,
    pub conv: Conv2d<B>,
    /// Epsilon of `norm`.
    pub eps: f64,
}

impl<B: Backend> Downsample<B> {
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        eps: f64,
        device: &B::Device,
    ) -> Self {
        Self {
            norm: LayerNormConfig::new(in_channels)
                .with_epsilon(eps)
                .init(device),
            conv: Conv2dConfig::new([in_channels, out_channels], [stride, stride])
                .with_stride([stride, stride])
                .init(device),
            eps,
        }
    }

    /// `[batch, in, height, width]` -> `[batch, out, height / stride, width / stride]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        patch_conv(&self.conv, channels_first(&self.norm, self.eps, x))
    }
}
