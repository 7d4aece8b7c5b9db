//! A stage: an optional down-sampling transition, then a run of blocks at one width.

use super::{block::Block, config::ConvNextConfig, downsample::Downsample};
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

/// One stage. The first stage has no down-sampling (the stem already reduced the
/// resolution); every later one starts by halving it and widening the channels.
#[derive(Module, Debug)]
pub struct Stage<B: Backend> {
    pub downsampling_layer: Option<Downsample<B>>,
    pub layers: Vec<Block<B>>,
}

impl<B: Backend> Stage<B> {
    /// Stage `index` of the network described by `config`.
    pub fn new(
        config: &ConvNextConfig,
        index: usize,
        drop_paths: &[f64],
        device: &B::Device,
    ) -> Self {
        let out = config.hidden_sizes[index];
        let downsampling_layer = (index > 0).then(|| {
            Downsample::new(
                config.hidden_sizes[index - 1],
                out,
                config.downsample_stride,
                config.norm_eps,
                device,
            )
        });
        let layers = drop_paths
            .iter()
            .map(|&rate| Block::new(config, out, rate, device))
            .collect();
        Self {
            downsampling_layer,
            layers,
        }
    }

    /// `[batch, in, height, width]` -> `[batch, out, height / s, width / s]`
    /// (`s` = 1 for the first stage, `downsample_stride` after).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = match &self.downsampling_layer {
            Some(down) => down.forward(x),
            None => x,
        };
        self.layers.iter().fold(x, |x, block| block.forward(x))
    }
}
