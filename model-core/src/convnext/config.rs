//! Backbone hyper-parameters, named as in Hugging Face's `ConvNextConfig` so that a
//! checkpoint's `config.json` maps onto them field by field.

use burn::config::Config;

/// Hyper-parameters of a ConvNeXt backbone.
///
/// Field names follow Hugging Face's `ConvNextConfig`. Two epsilons are kept apart on
/// purpose: Hugging Face uses a fixed 1e-6 for every LayerNorm inside the network
/// (`norm_eps` here) and `layer_norm_eps` (1e-12 in the published checkpoints) only for
/// the LayerNorm applied after global pooling.
#[derive(Config, Debug, PartialEq)]
pub struct ConvNextConfig {
    /// Blocks per stage, e.g. `[3, 3, 27, 3]` for base.
    pub depths: Vec<usize>,
    /// Channels per stage, e.g. `[128, 256, 512, 1024]` for base.
    pub hidden_sizes: Vec<usize>,
    /// Input channels (RGB).
    #[config(default = 3)]
    pub num_channels: usize,
    /// Side of the non-overlapping patches of the stem (its stride).
    #[config(default = 4)]
    pub patch_size: usize,
    /// Side of the depthwise convolution in each block.
    #[config(default = 7)]
    pub kernel_size: usize,
    /// Hidden width of each block's MLP as a multiple of the stage width.
    #[config(default = 4)]
    pub mlp_ratio: usize,
    /// Side (and stride) of the convolution between stages.
    #[config(default = 2)]
    pub downsample_stride: usize,
    /// Initial value of the per-channel layer scale; 0 or less disables layer scale.
    #[config(default = 1e-6)]
    pub layer_scale_init_value: f64,
    /// Stochastic-depth rate of the last block, rising linearly from 0 at the first.
    #[config(default = 0.0)]
    pub drop_path_rate: f64,
    /// Epsilon of the LayerNorms inside the network (stem, downsampling, blocks).
    #[config(default = 1e-6)]
    pub norm_eps: f64,
    /// Epsilon of the LayerNorm after global pooling (Hugging Face's `layer_norm_eps`).
    #[config(default = 1e-12)]
    pub layer_norm_eps: f64,
}

/// A named preset: the published depths and widths of a ConvNeXt size.
pub const PRESETS: [(&str, [usize; 4], [usize; 4]); 9] = [
    ("atto", [2, 2, 6, 2], [40, 80, 160, 320]),
    ("femto", [2, 2, 6, 2], [48, 96, 192, 384]),
    ("pico", [2, 2, 6, 2], [64, 128, 256, 512]),
    ("nano", [2, 2, 8, 2], [80, 160, 320, 640]),
    ("tiny", [3, 3, 9, 3], [96, 192, 384, 768]),
    ("small", [3, 3, 27, 3], [96, 192, 384, 768]),
    ("base", [3, 3, 27, 3], [128, 256, 512, 1024]),
    ("large", [3, 3, 27, 3], [192, 384, 768, 1536]),
    ("xlarge", [3, 3, 27, 3], [256, 512, 1024, 2048]),
];

impl ConvNextConfig {
    /// The preset called `name` (atto, femto, pico, nano, tiny, small, base, large,
    /// xlarge), or `None`.
    pub fn preset(name: &str) -> Option<Self> {
        PRESETS
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, depths, widths)| Self::new(depths.to_vec(), widths.to_vec()))
    }

    pub fn atto() -> Self {
        Self::preset("atto").expect("preset exists")
    }
    pub fn femto() -> Self {
        Self::preset("femto").expect("preset exists")
    }
    pub fn pico() -> Self {
        Self::preset("pico").expect("preset exists")
    }
    pub fn nano() -> Self {
        Self::preset("nano").expect("preset exists")
    }
    pub fn tiny() -> Self {
        Self::preset("tiny").expect("preset exists")
    }
    pub fn small() -> Self {
        Self::preset("small").expect("preset exists")
    }
    pub fn base() -> Self {
        Self::preset("base").expect("preset exists")
    }
    pub fn large() -> Self {
        Self::preset("large").expect("preset exists")
    }
    pub fn xlarge() -> Self {
        Self::preset("xlarge").expect("preset exists")
    }

    /// A toy network for tests: four stages of one block, 8 to 32 channels.
    pub fn test_tiny() -> Self {
        Self::new(vec![1, 1, 1, 1], vec![8, 16, 24, 32])
    }

    /// Channels of the last stage: the width of `forward_features`.
    pub fn out_channels(&self) -> usize {
        self.hidden_sizes.last().copied().unwrap_or(0)
    }

    /// Total down-sampling from input pixels to the last feature map (32 for the
    /// standard four-stage layout).
    pub fn reduction(&self) -> usize {
        self.patch_size
            * self
                .downsample_stride
                .pow(self.hidden_sizes.len().saturating_sub(1) as u32)
    }

    /// Checks the shape of the configuration, naming the field at fault.
    pub fn check(&self) -> Result<(), String> {
        if self.depths.is_empty() {
            return Err("depths is empty".into());
        }
        if self.depths.len() != self.hidden_sizes.len() {
            return Err(format!(
                "depths has {} stages but hidden_sizes has {}",
                self.depths.len(),
                self.hidden_sizes.len()
            ));
        }
        if self.hidden_sizes.contains(&0) || self.patch_size == 0 || self.kernel_size == 0 {
            return Err("hidden_sizes, patch_size and kernel_size must be positive".into());
        }
        if self.kernel_size.is_multiple_of(2) {
            return Err(format!("kernel_size {} must be odd", self.kernel_size));
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return Err(format!(
                "drop_path_rate {} must be in [0, 1)",
                self.drop_path_rate
            ));
        }
        Ok(())
    }

    /// Stochastic-depth rate of every block, stage by stage: linear from 0 to
    /// `drop_path_rate` over all blocks.
    pub fn drop_path_rates(&self) -> Vec<Vec<f64>> {
        let total: usize = self.depths.iter().sum();
        let step = if total > 1 {
            self.drop_path_rate / (total - 1) as f64
        } else {
            0.0
        };
        let mut index = 0;
        self.depths
            .iter()
            .map(|&depth| {
                (0..depth)
                    .map(|_| {
                        let rate = step * index as f64;
                        index += 1;
                        rate
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_published_shapes() {
        let base = ConvNextConfig::base();
        assert_eq!(base.depths, [3, 3, 27, 3]);
        assert_eq!(base.hidden_sizes, [128, 256, 512, 1024]);
        assert_eq!(base.out_channels(), 1024);
        assert_eq!(base.reduction(), 32);
        assert_eq!(ConvNextConfig::atto().hidden_sizes, [40, 80, 160, 320]);
        assert_eq!(ConvNextConfig::nano().depths, [2, 2, 8, 2]);
        assert!(ConvNextConfig::preset("huge").is_none());
        for (name, _, _) in PRESETS {
            ConvNextConfig::preset(name).unwrap().check().unwrap();
        }
    }

    #[test]
    fn drop_path_rises_linearly_to_the_last_block() {
        let cfg = ConvNextConfig::new(vec![1, 2, 1], vec![4, 8, 16]).with_drop_path_rate(0.3);
        let rates = cfg.drop_path_rates();
        let flat: Vec<f64> = rates.iter().flatten().copied().collect();
        assert_eq!(rates.iter().map(Vec::len).collect::<Vec<_>>(), [1, 2, 1]);
        let expected = [0.0, 0.1, 0.2, 0.3];
        for (got, want) in flat.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{flat:?}");
        }
    }

    #[test]
    fn check_names_the_problem() {
        let cfg = ConvNextConfig::new(vec![1, 1], vec![8]);
        assert!(cfg.check().unwrap_err().contains("hidden_sizes"));
        let cfg = ConvNextConfig::test_tiny().with_kernel_size(4);
        assert!(cfg.check().unwrap_err().contains("kernel_size"));
    }
}
