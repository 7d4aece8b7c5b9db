//! The ConvNeXt backbone (Liu et al., "A ConvNet for the 2020s"), built bottom-up:
//! stem, down-sampling, block, stage, network.

pub mod block;
pub mod config;
pub mod downsample;
pub mod embeddings;
pub mod norm;
pub mod stage;

pub use config::ConvNextConfig;

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};
use embeddings::Embeddings;
use stage::Stage;

/// The stages of the network (Hugging Face's `encoder`).
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub stages: Vec<Stage<B>>,
}

/// The ConvNeXt feature extractor: stem and stages, no pooling.
#[derive(Module, Debug)]
pub struct ConvNext<B: Backend> {
    pub embeddings: Embeddings<B>,
    pub encoder: Encoder<B>,
}

impl ConvNextConfig {
    /// Builds the backbone with fresh weights.
    ///
    /// # Panics
    /// If the configuration is inconsistent (see [`ConvNextConfig::check`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ConvNext<B> {
        if let Err(problem) = self.check() {
            panic!("invalid ConvNeXt configuration: {problem}");
        }
        let rates = self.drop_path_rates();
        let stages = rates
            .iter()
            .enumerate()
            .map(|(i, stage_rates)| Stage::new(self, i, stage_rates, device))
            .collect();
        ConvNext {
            embeddings: Embeddings::new(self, device),
            encoder: Encoder { stages },
        }
    }

    /// Builds the backbone with a pooled LayerNorm and a linear classifier on top, the
    /// layout of Hugging Face's `ConvNextForImageClassification`.
    pub fn init_classifier<B: Backend>(
        &self,
        num_labels: usize,
        device: &B::Device,
    ) -> ConvNextClassifier<B> {
        let width = self.out_channels();
        ConvNextClassifier {
            convnext: self.init(device),
            layernorm: LayerNormConfig::new(width)
                .with_epsilon(self.layer_norm_eps)
                .init(device),
            classifier: LinearConfig::new(width, num_labels).init(device),
        }
    }
}

impl<B: Backend> ConvNext<B> {
    /// `[batch, 3, height, width]` -> `[batch, out_channels, height / 32, width / 32]`
    /// (for the standard stem and four stages).
    pub fn forward_features(&self, pixels: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.embeddings.forward(pixels);
        self.encoder
            .stages
            .iter()
            .fold(x, |x, stage| stage.forward(x))
    }
}

/// An image classifier: backbone, global average pool, LayerNorm, linear layer.
#[derive(Module, Debug)]
pub struct ConvNextClassifier<B: Backend> {
    pub convnext: ConvNext<B>,
    /// LayerNorm after pooling (Hugging Face's `convnext.layernorm`).
    pub layernorm: LayerNorm<B>,
    pub classifier: Linear<B>,
}

impl<B: Backend> ConvNextClassifier<B> {
    /// `[batch, 3, height, width]` -> pooled, normalised features `[batch, out_channels]`.
    pub fn forward_pooled(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        let features = self.convnext.forward_features(pixels);
        self.layernorm.forward(global_average_pool(features))
    }

    /// `[batch, 3, height, width]` -> logits `[batch, num_labels]`.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 2> {
        self.classifier.forward(self.forward_pooled(pixels))
    }
}

/// Mean over the spatial axes: `[batch, channels, height, width]` -> `[batch, channels]`.
pub fn global_average_pool<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [batch, channels, _, _] = x.dims();
    x.mean_dim(3).mean_dim(2).reshape([batch, channels])
}
