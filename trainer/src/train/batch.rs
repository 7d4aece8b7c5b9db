//! Turning cached images into network inputs.

use crate::augment::AugmentConfig;
use crate::data::images::ImageStore;
use anyhow::Result;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use model_core::preprocess::PreprocessConfig;
use rayon::prelude::*;
use std::borrow::Cow;

/// Augmentation of one epoch: settings, run seed and epoch number (so every image's
/// draw is reproducible, and anew each epoch).
#[derive(Debug, Clone, Copy)]
pub struct EpochAugment<'a> {
    pub config: &'a AugmentConfig,
    pub seed: u64,
    pub epoch: u64,
}

/// `[n, 3, size, size]` normalised pixels of images `indices` of `store` (already
/// resized to the input size when cached), augmented when `augment` is given.
/// Images are prepared in parallel.
pub fn pixels<B: Backend>(
    store: &ImageStore,
    indices: &[usize],
    augment: Option<EpochAugment<'_>>,
    pre: &PreprocessConfig,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let size = pre.size as usize;
    let planes: Vec<Vec<f32>> = indices
        .par_iter()
        .map(|&k| -> Result<Vec<f32>> {
            let image = store.get(k)?;
            let image = match augment {
                Some(a) => a.config.apply(&image, a.seed, a.epoch, k as u64),
                None => Cow::Borrowed(&image),
            };
            let image = if image.width() == pre.size && image.height() == pre.size {
                image
            } else {
                Cow::Owned(pre.resize(&image))
            };
            Ok(pre.to_chw(&image))
        })
        .collect::<Result<_>>()?;
    let data = TensorData::new(planes.concat(), [indices.len(), 3, size, size]);
    Ok(Tensor::from_data(data, device))
}
