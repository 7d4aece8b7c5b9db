//! The random keep-masks of dropout and stochastic depth.
//!
//! By default a mask comes from the backend's random generator, like Burn's own
//! `Dropout`. A trainer that cuts a batch into parts and runs them side by side on
//! several threads cannot use that: the parts would take turns at one shared generator
//! in whatever order the threads happen to run, and a seeded run would no longer repeat.
//! Inside [`with_row_masks`] each mask value is instead a hash of the step's seed, the
//! mask's place in the forward pass and the row's position in the whole batch, so a row
//! gets the same mask whichever part it is in and on whichever thread that part runs.

use burn::tensor::{backend::Backend, Distribution, Tensor, TensorData};
use std::cell::Cell;

/// Where the masks of the forward pass running on this thread come from.
#[derive(Debug, Clone, Copy)]
struct RowMasks {
    seed: u64,
    /// The position in the whole batch of this part's first row.
    first_row: u64,
    /// Masks drawn so far in this forward pass: the next mask's number.
    drawn: u64,
}

thread_local! {
    static ROW_MASKS: Cell<Option<RowMasks>> = const { Cell::new(None) };
}

/// Puts the previous source back when `with_row_masks` ends, also when it unwinds.
struct Restore(Option<RowMasks>);

impl Drop for Restore {
    fn drop(&mut self) {
        ROW_MASKS.with(|cell| cell.set(self.0));
    }
}

/// Runs `f` (one forward pass over rows `first_row..` of a batch) with every mask drawn
/// from `seed` and each row's position in the batch. Nests: an inner call has its own
/// masks and the outer one continues where it was afterwards.
pub fn with_row_masks<R>(seed: u64, first_row: usize, f: impl FnOnce() -> R) -> R {
    let previous = ROW_MASKS.with(|cell| {
        cell.replace(Some(RowMasks {
            seed,
            first_row: first_row as u64,
            drawn: 0,
        }))
    });
    let _restore = Restore(previous);
    f()
}

/// SplitMix64's finaliser: a well-mixed 64-bit value from any input.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The uniform value in `[0, 1)` of element `element` of row `row` of mask `mask`.
fn uniform(seed: u64, mask: u64, row: u64, element: u64) -> f64 {
    let h = mix(seed ^ mix(mask ^ mix(row ^ mix(element))));
    // The top 53 bits as a fraction.
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A mask of `shape` (its first axis the batch) holding 1 with probability `keep` and 0
/// otherwise.
pub fn keep_mask<B: Backend, const D: usize>(
    shape: [usize; D],
    keep: f64,
    device: &B::Device,
) -> Tensor<B, D> {
    let source = ROW_MASKS.with(|cell| {
        let source = cell.get();
        if let Some(mut s) = source {
            s.drawn += 1;
            cell.set(Some(s));
        }
        source
    });
    let Some(source) = source else {
        return Tensor::random(shape, Distribution::Bernoulli(keep), device);
    };
    let rows = shape[0];
    let per_row: usize = shape[1..].iter().product();
    let mut values = Vec::with_capacity(rows * per_row);
    for r in 0..rows as u64 {
        let row = source.first_row + r;
        for e in 0..per_row as u64 {
            let u = uniform(source.seed, source.drawn, row, e);
            values.push(if u < keep { 1.0f32 } else { 0.0 });
        }
    }
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Dropout while training (on an autodiff backend): zeroes each element with
/// probability `prob` and scales the rest by `1 / (1 - prob)`. The identity at
/// inference. Same rule as Burn's `Dropout`, with masks from [`keep_mask`].
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, prob: f64) -> Tensor<B, D> {
    if prob <= 0.0 || !B::ad_enabled(&x.device()) {
        return x;
    }
    let keep = 1.0 - prob;
    let mask = keep_mask::<B, D>(x.dims(), keep, &x.device());
    x * mask.div_scalar(keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = burn::backend::Autodiff<burn_flex::Flex>;

    fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    #[test]
    fn a_row_gets_the_same_mask_in_any_part() {
        let device = Default::default();
        let whole = with_row_masks(7, 0, || {
            let first = values(keep_mask::<B, 2>([6, 40], 0.5, &device));
            let second = values(keep_mask::<B, 2>([6, 40], 0.5, &device));
            (first, second)
        });
        // The same batch as rows 0..2 and 2..6, each with its own count of masks drawn.
        let head = with_row_masks(7, 0, || {
            let _ = keep_mask::<B, 2>([2, 40], 0.5, &device);
            values(keep_mask::<B, 2>([2, 40], 0.5, &device))
        });
        let tail = with_row_masks(7, 2, || {
            (
                values(keep_mask::<B, 2>([4, 40], 0.5, &device)),
                values(keep_mask::<B, 2>([4, 40], 0.5, &device)),
            )
        });
        assert_eq!(whole.0[80..], tail.0[..]);
        assert_eq!(whole.1[..80], head[..]);
        assert_eq!(whole.1[80..], tail.1[..]);
        // Successive masks, rows and seeds differ.
        assert_ne!(whole.0, whole.1);
        assert_ne!(whole.0[..40], whole.0[40..80]);
        let other = with_row_masks(8, 0, || values(keep_mask::<B, 2>([6, 40], 0.5, &device)));
        assert_ne!(whole.0, other);
    }

    #[test]
    fn the_share_kept_follows_the_probability_and_nesting_restores_the_outer_masks() {
        let device = Default::default();
        for keep in [0.1, 0.5, 0.9] {
            let mask = with_row_masks(3, 0, || {
                values(keep_mask::<B, 2>([100, 100], keep, &device))
            });
            assert!(mask.iter().all(|&v| v == 0.0 || v == 1.0));
            let share = mask.iter().sum::<f32>() as f64 / mask.len() as f64;
            assert!((share - keep).abs() < 0.02, "keep {keep}: share {share}");
        }
        let plain = with_row_masks(5, 0, || {
            let a = values(keep_mask::<B, 2>([3, 10], 0.5, &device));
            let b = values(keep_mask::<B, 2>([3, 10], 0.5, &device));
            (a, b)
        });
        let nested = with_row_masks(5, 0, || {
            let a = values(keep_mask::<B, 2>([3, 10], 0.5, &device));
            let inner = with_row_masks(99, 0, || values(keep_mask::<B, 2>([3, 10], 0.5, &device)));
            let b = values(keep_mask::<B, 2>([3, 10], 0.5, &device));
            assert_ne!(inner, a);
            (a, b)
        });
        assert_eq!(plain, nested);
    }

    #[test]
    fn dropout_scales_survivors_and_is_the_identity_without_autodiff() {
        let device = Default::default();
        let x = Tensor::<B, 2>::ones([8, 50], &device);
        let out = with_row_masks(1, 0, || values(dropout(x.clone(), 0.25)));
        assert!(out
            .iter()
            .all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        assert!(out.contains(&0.0));
        let inner = Tensor::<burn_flex::Flex, 2>::ones([8, 50], &device);
        let same: Vec<f32> = dropout(inner, 0.25).into_data().to_vec().unwrap();
        assert!(same.iter().all(|&v| v == 1.0));
    }
}
