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
    Ok(Tensor::from_data(
        pixel_data(store, indices, augment, pre)?,
        device,
    ))
}

/// What [`pixels`] puts on the device, prepared on the CPU: this part can run on
/// another thread while the device works on the previous batch.
pub fn pixel_data(
    store: &ImageStore,
    indices: &[usize],
    augment: Option<EpochAugment<'_>>,
    pre: &PreprocessConfig,
) -> Result<TensorData> {
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
    Ok(TensorData::new(
        planes.concat(),
        [indices.len(), 3, size, size],
    ))
}

/// Runs `prepare` for batches `0..count` on a helper thread, at most `ahead` batches
/// ahead of `consume`, which gets them in order. `consume` returning `Ok(false)` stops
/// early; the helper then stops at its next batch. The first error of either side is
/// returned.
pub fn prefetched<T: Send>(
    count: usize,
    ahead: usize,
    prepare: impl Fn(usize) -> Result<T> + Sync,
    mut consume: impl FnMut(usize, T) -> Result<bool>,
) -> Result<()> {
    std::thread::scope(|scope| {
        let (send, receive) = std::sync::mpsc::sync_channel::<Result<T>>(ahead.max(1));
        let prepare = &prepare;
        scope.spawn(move || {
            for b in 0..count {
                let item = prepare(b);
                let failed = item.is_err();
                // The receiver is gone once the consumer stopped: nothing left to do.
                if send.send(item).is_err() || failed {
                    break;
                }
            }
        });
        for b in 0..count {
            let item = receive
                .recv()
                .map_err(|_| anyhow::anyhow!("the batch preparation thread stopped"))??;
            if !consume(b, item)? {
                break;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn batches_arrive_in_order_and_all_of_them() {
        let mut seen = Vec::new();
        prefetched(
            20,
            2,
            |b| Ok(b * 10),
            |b, item| {
                seen.push((b, item));
                Ok(true)
            },
        )
        .unwrap();
        assert_eq!(seen, (0..20).map(|b| (b, b * 10)).collect::<Vec<_>>());
    }

    #[test]
    fn stopping_early_stops_the_helper_and_errors_come_through() {
        let made = AtomicUsize::new(0);
        prefetched(
            1000,
            2,
            |b| {
                made.fetch_add(1, Ordering::SeqCst);
                Ok(b)
            },
            |b, _| Ok(b < 3),
        )
        .unwrap();
        // Four consumed, at most `ahead` + 1 more made before the helper noticed.
        assert!(
            made.load(Ordering::SeqCst) <= 4 + 3,
            "{}",
            made.load(Ordering::SeqCst)
        );

        let err = prefetched(
            10,
            2,
            |b| {
                if b == 5 {
                    bail!("image 5 is broken")
                } else {
                    Ok(b)
                }
            },
            |_, _| Ok(true),
        )
        .unwrap_err();
        assert!(err.to_string().contains("image 5 is broken"), "{err}");

        let err = prefetched(10, 2, Ok, |b, _| {
            if b == 2 {
                bail!("step failed")
            } else {
                Ok(true)
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("step failed"), "{err}");
    }
}
