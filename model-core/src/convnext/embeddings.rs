//! The stem: non-overlapping patches embedded by a strided convolution, then normalised.

use super::{
    config::ConvNextConfig,
    norm::{channels_first, patch_conv},
};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::{backend::Backend, Tensor};

/// Patch embedding: a `patch_size x patch_size` convolution with the same stride, then a
/// channel LayerNorm. Field names follow the Hugging Face checkpoint
/// (`embeddings.patch_embeddings`, `embeddings.layernorm`).
#[derive(Module, Debug)]
pub struct Embeddings<B: Backend> {
    pub patch_embeddings: Conv2d<B>,
    pub layernorm: LayerNorm<B>,
    /// Epsilon of `layernorm`.
    pub eps: f64,
}

impl<B: Backend> Embeddings<B> {
    pub fn new(config: &ConvNextConfig, device: &B::Device) -> Self {
        let p = config.patch_size;
        Self {
            patch_embeddings: Conv2dConfig::new(
                [config.num_channels, config.hidden_sizes[0]],
                [p, p],
            )
            .with_stride([p, p])
            .init(device),
            layernorm: LayerNormConfig::new(config.hidden_sizes[0])
                .with_epsilon(config.norm_eps)
                .init(device),
            eps: config.norm_eps,
        }
    }

    /// `[batch, 3, height, width]` -> `[batch, hidden_sizes[0], height / p, width / p]`.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 4> {
        channels_first(
            &self.layernorm,
            self.eps,
            patch_conv(&self.patch_embeddings, pixels),
        )
    }
}
