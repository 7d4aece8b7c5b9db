//! The ConvNeXt block: depthwise convolution, LayerNorm, an inverted-bottleneck MLP,
//! layer scale, and a residual connection with stochastic depth.

use super::config::ConvNextConfig;
use super::norm::{channels_first, pointwise_layer, pointwise_mlp};
use crate::kernels::residual::scaled_residual;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{backend::Backend, Tensor};

/// One block. Field names follow the Hugging Face checkpoint
/// (`dwconv`, `layernorm`, `pwconv1`, `pwconv2`, `layer_scale_parameter`).
///
/// Everything runs on NCHW maps: the LayerNorm reduces over the channel axis and the
/// two pointwise convolutions, stored as linear layers like the checkpoint's, are
/// batched matrix products (see [`super::norm`]).
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub dwconv: Conv2d<B>,
    pub layernorm: LayerNorm<B>,
    pub pwconv1: Linear<B>,
    pub pwconv2: Linear<B>,
    /// Per-channel scale of the residual branch, `[channels]`; absent when the
    /// configuration disables layer scale.
    pub layer_scale_parameter: Option<Param<Tensor<B, 1>>>,
    /// Probability of skipping the residual branch for a sample while training.
    pub drop_path: f64,
    /// Epsilon of `layernorm`.
    pub eps: f64,
}

impl<B: Backend> Block<B> {
    pub fn new(
        config: &ConvNextConfig,
        channels: usize,
        drop_path: f64,
        device: &B::Device,
    ) -> Self {
        let k = config.kernel_size;
        let hidden = config.mlp_ratio * channels;
        let layer_scale_parameter = (config.layer_scale_init_value > 0.0).then(|| {
            Param::from_tensor(Tensor::full(
                [channels],
                config.layer_scale_init_value,
                device,
            ))
        });
        Self {
            dwconv: Conv2dConfig::new([channels, channels], [k, k])
                .with_groups(channels)
                .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
                .init(device),
            layernorm: LayerNormConfig::new(channels)
                .with_epsilon(config.norm_eps)
                .init(device),
            pwconv1: pointwise_layer(LinearConfig::new(channels, hidden).init(device)),
            pwconv2: pointwise_layer(LinearConfig::new(hidden, channels).init(device)),
            layer_scale_parameter,
            drop_path,
            eps: config.norm_eps,
        }
    }

    /// `[batch, channels, height, width]` -> same shape.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [batch, channels, height, width] = x.dims();
        let branch = crate::kernels::conv::grouped_conv_same(&self.dwconv, x.clone());
        let branch = channels_first(&self.layernorm, self.eps, branch).reshape([
            batch,
            channels,
            height * width,
        ]);
        let branch = pointwise_mlp(&self.pwconv1, &self.pwconv2, branch);
        let Some(scale) = &self.layer_scale_parameter else {
            let branch = branch.reshape([batch, channels, height, width]);
            return x + drop_path(branch, self.drop_path);
        };
        // Layer scale, stochastic depth and the residual sum in one step (fused on the
        // CPU backends, `kernels::residual`).
        let factor = drop_path_factor::<B>(batch, self.drop_path, &x.device());
        let x = x.reshape([batch, channels, height * width]);
        scaled_residual(x, branch, scale.val(), factor).reshape([batch, channels, height, width])
    }
}

/// Stochastic depth's factor for each of `batch` samples while training (autodiff
/// backend): 0 with probability `rate`, `1 / (1 - rate)` otherwise; `None` when nothing
/// is dropped. The same masks as [`drop_path`] draws for a batch of that size.
pub fn drop_path_factor<B: Backend>(
    batch: usize,
    rate: f64,
    device: &B::Device,
) -> Option<Tensor<B, 1>> {
    if rate <= 0.0 || !B::ad_enabled(device) {
        return None;
    }
    let keep = 1.0 - rate;
    Some(crate::masks::keep_mask::<B, 1>([batch], keep, device).div_scalar(keep))
}

/// Stochastic depth: while training (autodiff backend), zeroes the whole residual
/// branch of each sample with probability `rate` and rescales the survivors by
/// `1 / (1 - rate)` so the expected output is unchanged. The identity at inference.
pub fn drop_path<B: Backend>(branch: Tensor<B, 4>, rate: f64) -> Tensor<B, 4> {
    let device = branch.device();
    if rate <= 0.0 || !B::ad_enabled(&device) {
        return branch;
    }
    let keep = 1.0 - rate;
    let batch = branch.dims()[0];
    let mask = crate::masks::keep_mask::<B, 4>([batch, 1, 1, 1], keep, &device);
    branch * mask.div_scalar(keep)
}
