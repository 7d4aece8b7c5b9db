//! The classifier at the end of an attribute head.

use super::HeadConfig;
use crate::kernels::gelu::gelu;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};

/// One hidden layer: linear, LayerNorm, GELU, dropout.
#[derive(Module, Debug)]
pub struct HiddenLayer<B: Backend> {
    pub linear: Linear<B>,
    pub norm: LayerNorm<B>,
    /// The dropout rate. Its masks come from [`crate::masks::dropout`]; the field stays
    /// Burn's `Dropout` so saved records keep their layout.
    pub dropout: Dropout,
}

/// Global average pool, then hidden layers (`head_dim * classifier_hidden[i]` wide),
/// then a linear layer to the class logits.
#[derive(Module, Debug)]
pub struct ClassifierMlp<B: Backend> {
    pub hidden: Vec<HiddenLayer<B>>,
    pub out: Linear<B>,
}

impl<B: Backend> ClassifierMlp<B> {
    pub fn new(config: &HeadConfig, num_classes: usize, device: &B::Device) -> Self {
        let mut width = config.head_dim;
        let mut hidden = Vec::with_capacity(config.classifier_hidden.len());
        for (&multiple, &dropout) in config
            .classifier_hidden
            .iter()
            .zip(&config.classifier_dropout)
        {
            let next = config.head_dim * multiple;
            hidden.push(HiddenLayer {
                linear: LinearConfig::new(width, next).init(device),
                norm: LayerNormConfig::new(next)
                    .with_epsilon(config.norm_eps)
                    .init(device),
                dropout: DropoutConfig::new(dropout).init(),
            });
            width = next;
        }
        Self {
            hidden,
            out: LinearConfig::new(width, num_classes).init(device),
        }
    }

    /// `[batch, channels, height, width]` -> logits `[batch, num_classes]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = crate::convnext::global_average_pool(x);
        let x = self.hidden.iter().fold(x, |x, layer| {
            crate::masks::dropout(
                gelu(layer.norm.forward(layer.linear.forward(x))),
                layer.dropout.prob,
            )
        });
        self.out.forward(x)
    }
}
