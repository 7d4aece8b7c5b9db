//! The per-category network: a ConvNeXt backbone, a shared feature layer, and one
//! attention head per attribute of the category.

use crate::convnext::{global_average_pool, ConvNext, ConvNextConfig};
use crate::heads::{stacked, AttributeHead, HeadConfig, HeadOutput};
use crate::kernels::gelu::gelu;
use crate::taxonomy::CategorySpec;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{backend::Backend, Tensor};

/// Everything needed to rebuild a category's network (saved beside its weights).
#[derive(Config, Debug, PartialEq)]
pub struct GarmentModelConfig {
    pub backbone: ConvNextConfig,
    pub head: HeadConfig,
    /// Classes of each attribute head, in `attr_1..attr_N` order.
    pub class_counts: Vec<usize>,
    /// Dropout after the feature layer.
    #[config(default = 0.1)]
    pub feature_dropout: f64,
}

impl GarmentModelConfig {
    /// A network for `category` with one head per attribute.
    pub fn for_category(
        backbone: ConvNextConfig,
        head: HeadConfig,
        category: &CategorySpec,
    ) -> Self {
        Self::new(backbone, head, category.class_counts())
    }

    /// Checks the configuration, naming the part at fault.
    pub fn check(&self) -> Result<(), String> {
        self.backbone
            .check()
            .map_err(|e| format!("backbone: {e}"))?;
        self.head.check().map_err(|e| format!("head: {e}"))?;
        if self.class_counts.is_empty() {
            return Err("a model needs at least one attribute head".into());
        }
        if let Some(i) = self.class_counts.iter().position(|&c| c == 0) {
            return Err(format!("attribute {} has no classes", i + 1));
        }
        Ok(())
    }

    /// Builds the network with fresh weights.
    ///
    /// # Panics
    /// If the configuration is inconsistent (see [`GarmentModelConfig::check`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> GarmentModel<B> {
        if let Err(problem) = self.check() {
            panic!("invalid model configuration: {problem}");
        }
        GarmentModel {
            backbone: self.backbone.init(device),
            feature: FeatureLayer {
                conv: Conv2dConfig::new([self.backbone.out_channels(), self.head.head_dim], [1, 1])
                    .init(device),
                dropout: DropoutConfig::new(self.feature_dropout).init(),
            },
            heads: self
                .class_counts
                .iter()
                .map(|&classes| self.head.init(classes, device))
                .collect(),
        }
    }
}

/// A 1x1 convolution from the backbone's width to the heads' width, GELU, dropout.
#[derive(Module, Debug)]
pub struct FeatureLayer<B: Backend> {
    pub conv: Conv2d<B>,
    /// The dropout rate. Its masks come from [`crate::masks::dropout`]; the field stays
    /// Burn's `Dropout` so saved records keep their layout.
    pub dropout: Dropout,
}

impl<B: Backend> FeatureLayer<B> {
    /// `[batch, backbone_channels, h, w]` -> `[batch, head_dim, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        // A 1x1 convolution with stride 1: `patch_conv` runs it as the pointwise kernel.
        crate::masks::dropout(
            gelu(crate::convnext::norm::patch_conv(&self.conv, x)),
            self.dropout.prob,
        )
    }
}

/// The network of one category.
#[derive(Module, Debug)]
pub struct GarmentModel<B: Backend> {
    pub backbone: ConvNext<B>,
    pub feature: FeatureLayer<B>,
    pub heads: Vec<AttributeHead<B>>,
}

/// What the network computes for a batch.
#[derive(Debug, Clone)]
pub struct GarmentOutput<B: Backend> {
    /// One `[batch, classes_i]` tensor per attribute, in attribute order.
    pub logits: Vec<Tensor<B, 2>>,
    /// One `[batch, h, w]` spatial-attention map per attribute (input / 32).
    pub attention: Vec<Tensor<B, 3>>,
    /// The shared feature map, globally pooled: `[batch, head_dim]`. This is what the
    /// domain-adaptation (MMD) term compares between labelled and unlabelled images.
    pub pooled: Tensor<B, 2>,
}

impl<B: Backend> GarmentModel<B> {
    /// The shared feature map every head reads:
    /// `[batch, 3, height, width]` -> `[batch, head_dim, height / 32, width / 32]`.
    pub fn forward_shared(&self, pixels: Tensor<B, 4>) -> Tensor<B, 4> {
        self.feature.forward(self.backbone.forward_features(pixels))
    }

    /// Runs every head on a shared feature map from [`Self::forward_shared`]: all at
    /// once ([`crate::heads::stacked`]) when they are small and of one shape, as heads
    /// built from one `HeadConfig` are, else one after another.
    pub fn forward_heads(&self, features: Tensor<B, 4>) -> GarmentOutput<B> {
        let pooled = global_average_pool(features.clone());
        let outputs = if stacked::worth_stacking(&self.heads) {
            stacked::forward_stacked(&self.heads, features)
        } else {
            self.heads
                .iter()
                .map(|head| head.forward(features.clone()))
                .collect()
        };
        let (logits, attention) = outputs
            .into_iter()
            .map(|HeadOutput { logits, attention }| (logits, attention))
            .unzip();
        GarmentOutput {
            logits,
            attention,
            pooled,
        }
    }

    /// `[batch, 3, height, width]` -> logits and attention of every head, and the
    /// pooled shared features.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> GarmentOutput<B> {
        self.forward_heads(self.forward_shared(pixels))
    }
}
