//! One prediction head per attribute: attention over the shared feature map, then an
//! MLP classifier.

pub mod attention;
pub mod classifier;
pub mod stacked;

use attention::{ChannelAttention, SpatialAttention};
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use classifier::ClassifierMlp;

/// How the spatial attention's output gates the features.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum SpatialGate {
    /// One map for all channels: the second convolution's output is averaged over
    /// channels, passed through a sigmoid, and multiplies every channel. The map shown
    /// to users is exactly the one applied.
    Shared,
    /// One map per channel (sigmoid of the second convolution, element-wise); the map
    /// shown to users is its mean over channels.
    PerChannel,
}

/// Hyper-parameters of an attribute head. Defaults follow the reference design
/// (SPEC.md): width 512, grouped 3x3 spatial attention, 512 -> 128 -> 512 channel
/// attention, and a 512 -> 1024 -> 512 -> classes classifier.
#[derive(Config, Debug, PartialEq)]
pub struct HeadConfig {
    /// Channels of the shared feature map that every head reads (the feature layer's
    /// output width).
    #[config(default = 512)]
    pub head_dim: usize,
    /// Groups of both 3x3 spatial-attention convolutions; must divide `head_dim`.
    #[config(default = 32)]
    pub spatial_groups: usize,
    /// Side of the spatial-attention convolutions.
    #[config(default = 3)]
    pub spatial_kernel: usize,
    #[config(default = "SpatialGate::Shared")]
    pub spatial_gate: SpatialGate,
    /// The channel attention's bottleneck is `head_dim / channel_reduction` wide.
    #[config(default = 4)]
    pub channel_reduction: usize,
    /// Widths of the classifier's hidden layers, as multiples of `head_dim`
    /// (`[2, 1]`: 512 -> 1024 -> 512 at the reference width).
    #[config(default = "vec![2, 1]")]
    pub classifier_hidden: Vec<usize>,
    /// Dropout after each hidden layer of the classifier, first to last.
    #[config(default = "vec![0.2, 0.1]")]
    pub classifier_dropout: Vec<f64>,
    /// Epsilon of the classifier's LayerNorms.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
}

impl HeadConfig {
    /// Checks the configuration, naming the field at fault.
    pub fn check(&self) -> Result<(), String> {
        if self.head_dim == 0
            || self.spatial_groups == 0
            || !self.head_dim.is_multiple_of(self.spatial_groups)
        {
            return Err(format!(
                "head_dim {} must be a positive multiple of spatial_groups {}",
                self.head_dim, self.spatial_groups
            ));
        }
        if self.channel_reduction == 0 || self.head_dim / self.channel_reduction == 0 {
            return Err(format!(
                "channel_reduction {} leaves no bottleneck at head_dim {}",
                self.channel_reduction, self.head_dim
            ));
        }
        if self.spatial_kernel.is_multiple_of(2) {
            return Err(format!(
                "spatial_kernel {} must be odd",
                self.spatial_kernel
            ));
        }
        if self.classifier_dropout.len() != self.classifier_hidden.len() {
            return Err(format!(
                "classifier_dropout has {} entries but classifier_hidden has {}",
                self.classifier_dropout.len(),
                self.classifier_hidden.len()
            ));
        }
        Ok(())
    }

    /// Builds one head for an attribute with `num_classes` classes.
    pub fn init<B: Backend>(&self, num_classes: usize, device: &B::Device) -> AttributeHead<B> {
        AttributeHead {
            spatial: SpatialAttention::new(self, device),
            channel: ChannelAttention::new(self, device),
            classifier: ClassifierMlp::new(self, num_classes, device),
        }
    }
}

/// What one head computes for a batch.
#[derive(Debug, Clone)]
pub struct HeadOutput<B: Backend> {
    /// `[batch, num_classes]`, before softmax.
    pub logits: Tensor<B, 2>,
    /// Spatial attention in (0, 1), `[batch, height, width]` at the feature map's
    /// resolution (input / 32).
    pub attention: Tensor<B, 3>,
}

/// One attribute's head.
///
/// Reading of the reference design (which does not say how the two attention maps are
/// combined): the spatial gate is applied first, then the channel gate is computed from
/// the spatially gated features and applied to them; the classifier pools the result.
/// This is the sequential order of CBAM-style attention with the two steps swapped so
/// that the channel weights see where the head is looking.
#[derive(Module, Debug)]
pub struct AttributeHead<B: Backend> {
    pub spatial: SpatialAttention<B>,
    pub channel: ChannelAttention<B>,
    pub classifier: ClassifierMlp<B>,
}

impl<B: Backend> AttributeHead<B> {
    /// `features: [batch, head_dim, height, width]` -> logits and attention map.
    pub fn forward(&self, features: Tensor<B, 4>) -> HeadOutput<B> {
        let (gated, attention) = self.spatial.forward(features);
        let gated = self.channel.forward(gated);
        HeadOutput {
            logits: self.classifier.forward(gated),
            attention,
        }
    }
}
