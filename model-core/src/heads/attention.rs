//! The two attention steps of an attribute head.

use super::{HeadConfig, SpatialGate};
use crate::kernels::conv::grouped_conv_same;
use crate::kernels::gate::gate_positions;
use crate::kernels::gelu::gelu;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{activation, backend::Backend, Tensor};

/// Where to look: two grouped 3x3 convolutions with a GELU between them, turned into
/// a gate in (0, 1) by a sigmoid (see [`SpatialGate`] for its two shapes).
#[derive(Module, Debug)]
pub struct SpatialAttention<B: Backend> {
    pub conv1: Conv2d<B>,
    pub conv2: Conv2d<B>,
    pub per_channel: bool,
}

impl<B: Backend> SpatialAttention<B> {
    pub fn new(config: &HeadConfig, device: &B::Device) -> Self {
        let d = config.head_dim;
        let k = config.spatial_kernel;
        let conv = || {
            Conv2dConfig::new([d, d], [k, k])
                .with_groups(config.spatial_groups)
                .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
                .init(device)
        };
        Self {
            conv1: conv(),
            conv2: conv(),
            per_channel: config.spatial_gate == SpatialGate::PerChannel,
        }
    }

    /// `[batch, channels, height, width]` -> (gated features of the same shape,
    /// attention map `[batch, height, width]`).
    pub fn forward(&self, x: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 3>) {
        let hidden = gelu(grouped_conv_same(&self.conv1, x.clone()));
        let scores = grouped_conv_same(&self.conv2, hidden);
        if self.per_channel {
            let gate = activation::sigmoid(scores);
            let map = gate.clone().mean_dim(1).squeeze_dim::<3>(1);
            (x * gate, map)
        } else {
            let [batch, channels, height, width] = x.dims();
            let gate = activation::sigmoid(scores.mean_dim(1));
            let map = gate.clone().squeeze_dim::<3>(1);
            // Fused on the CPU backends (`kernels::gate`).
            let gated = gate_positions(
                x.reshape([batch, channels, height * width]),
                gate.reshape([batch, height * width]),
            );
            (gated.reshape([batch, channels, height, width]), map)
        }
    }
}

/// Which channels matter: global average pool, a bottleneck MLP with GELU, and a
/// sigmoid weight per channel (squeeze-and-excitation).
#[derive(Module, Debug)]
pub struct ChannelAttention<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl<B: Backend> ChannelAttention<B> {
    pub fn new(config: &HeadConfig, device: &B::Device) -> Self {
        let d = config.head_dim;
        let bottleneck = d / config.channel_reduction;
        Self {
            fc1: LinearConfig::new(d, bottleneck).init(device),
            fc2: LinearConfig::new(bottleneck, d).init(device),
        }
    }

    /// `[batch, channels, height, width]` -> same shape, each channel scaled by its weight.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let pooled = crate::convnext::global_average_pool(x.clone());
        let weights = activation::sigmoid(self.fc2.forward(gelu(self.fc1.forward(pooled))));
        x * weights.unsqueeze_dims::<4>(&[2, 3])
    }
}
