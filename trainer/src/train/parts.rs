//! A training step's batch cut into parts that run side by side (`--batch-parts`).
//!
//! On the CPU a training step of a small network spends much of its time in work that
//! runs on one thread while the others wait: Burn's autodiff bookkeeping, allocation,
//! small element-wise operations, the hand-over between parallel loops. Profiled on
//! the default job's step (`perf`, BENCHMARKS.md), the main thread alone held about a
//! quarter of the samples. Cut into one part per thread, each part runs its forward and
//! backward pass on its own thread with its own copy of the module (`fork`: the same
//! parameter values and ids, its own autodiff graph), and those serial stretches overlap.
//!
//! The parts' gradients are summed. Each part's loss is its share of the whole batch's
//! loss (the caller divides by the whole batch's counts), and dropout and stochastic
//! depth draw each row's mask from its position in the whole batch
//! ([`model_core::masks`]), so the sum is the whole batch's gradient up to the order of
//! floating-point additions.

use anyhow::Result;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use model_core::masks::with_row_masks;
use model_core::model::GarmentModel;
use rayon::prelude::*;
use std::ops::Range;

/// The fewest rows a part gets when the count is chosen automatically: below this the
/// parts' own kernels get too small to be worth the split.
pub const MIN_AUTO_ROWS: usize = 4;

/// How many parts a batch of `batch_size` rows is cut into: `requested` when given
/// (at most one per row), else on the CPU one per worker thread with at least
/// [`MIN_AUTO_ROWS`] rows each, and 1 on a GPU, which runs a whole batch at once
/// anyway.
pub fn batch_parts(requested: Option<usize>, batch_size: usize, on_cpu: bool) -> usize {
    match requested {
        Some(n) => n.clamp(1, batch_size.max(1)),
        None if on_cpu => rayon::current_num_threads()
            .min(batch_size / MIN_AUTO_ROWS)
            .max(1),
        None => 1,
    }
}

/// `rows` rows cut into `parts` consecutive ranges whose lengths differ by at most one
/// (fewer ranges when there are fewer rows); no empty range.
pub fn part_ranges(rows: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.clamp(1, rows.max(1));
    let (base, extra) = (rows / parts, rows % parts);
    let mut start = 0;
    (0..parts)
        .map(|p| {
            let len = base + usize::from(p < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

/// The gradients of one training step over a batch of `rows` rows, computed in `parts`
/// parts side by side, and the loss's value. `part_loss(module, rows)` returns the
/// loss of rows `rows` of the batch as their share of the whole batch's loss; it runs
/// with masks drawn from `mask_seed` and the rows' positions. A single part runs on
/// the calling thread on `model` itself.
pub fn grads_in_parts<B, M>(
    model: &M,
    rows: usize,
    parts: usize,
    mask_seed: u64,
    device: &B::Device,
    part_loss: impl Fn(&M, Range<usize>) -> Result<Tensor<B, 1>> + Sync,
) -> Result<(GradientsParams, f64)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Send,
{
    let run = |module: &M, range: Range<usize>| -> Result<(GradientsParams, f64)> {
        with_row_masks(mask_seed, range.start, || {
            let loss = part_loss(module, range)?;
            let value: f64 = loss.clone().into_scalar().elem();
            Ok((GradientsParams::from_grads(loss.backward(), module), value))
        })
    };
    let ranges = part_ranges(rows, parts);
    if ranges.len() == 1 {
        return run(model, 0..rows);
    }
    // A parameter not yet drawn would be drawn anew in every copy.
    draw_initial_values(model);
    let copies: Vec<(M, Range<usize>)> = ranges
        .into_iter()
        .map(|range| (model.clone().fork(device), range))
        .collect();
    // `collect` keeps the parts' order, so the sums below are formed the same way
    // every time.
    let results: Vec<Result<(GradientsParams, f64)>> = copies
        .into_par_iter()
        .map(|(module, range)| run(&module, range))
        .collect();
    let mut sum = GradientsAccumulator::<M>::new();
    let mut loss = 0.0;
    for result in results {
        let (grads, value) = result?;
        sum.accumulate(model, grads);
        loss += value;
    }
    Ok((sum.grads(), loss))
}

/// Every head's logits for the batch `x`, computed in `parts` parts side by side on
/// the inference backend (rows do not meet in the network: its normalisations are per
/// image), each head's rows in the batch's order. Each part runs on a clone of `model`
/// (the same tensors, not copies). A single part runs on the calling thread.
pub fn logits_in_parts<B: Backend>(
    model: &GarmentModel<B>,
    x: Tensor<B, 4>,
    parts: usize,
) -> Vec<Tensor<B, 2>> {
    let rows = x.dims()[0];
    let ranges = part_ranges(rows, parts);
    if ranges.len() == 1 {
        return model.forward(x).logits;
    }
    let inputs: Vec<(GarmentModel<B>, Tensor<B, 4>)> = ranges
        .into_iter()
        .map(|range| (model.clone(), x.clone().narrow(0, range.start, range.len())))
        .collect();
    // `collect` keeps the parts' order.
    let outputs: Vec<Vec<Tensor<B, 2>>> = inputs
        .into_par_iter()
        .map(|(part, x)| part.forward(x).logits)
        .collect();
    let heads = outputs[0].len();
    let mut by_head: Vec<Vec<Tensor<B, 2>>> = (0..heads).map(|_| Vec::new()).collect();
    for part in outputs {
        for (h, logits) in part.into_iter().enumerate() {
            by_head[h].push(logits);
        }
    }
    by_head
        .into_iter()
        .map(|pieces| Tensor::cat(pieces, 0))
        .collect()
}

/// `module` with every parameter's initial values drawn, in the module's order (Burn
/// draws a parameter's values when it is first read, and a clone of a parameter not
/// yet read draws its own).
pub fn initialised<B: Backend, M: Module<B>>(module: M) -> M {
    draw_initial_values(&module);
    module
}

/// Draws, in place, the initial values of every parameter of `module` not yet drawn.
fn draw_initial_values<B: Backend, M: Module<B>>(module: &M) {
    struct Draw;
    impl<B: Backend> ModuleVisitor<B> for Draw {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            param.val();
        }
    }
    module.visit(&mut Draw);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_row_once_in_order() {
        for rows in [1, 2, 5, 31, 32, 33] {
            for parts in 1..=6 {
                let ranges = part_ranges(rows, parts);
                assert_eq!(ranges.len(), parts.min(rows));
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges.last().unwrap().end, rows);
                for pair in ranges.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                }
                let lens: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(*lo >= 1 && hi - lo <= 1, "{rows} rows in {parts}: {lens:?}");
            }
        }
    }

    #[test]
    fn inference_in_parts_gives_the_whole_batch_logits() {
        use burn::tensor::Distribution;
        use model_core::model::GarmentModelConfig;
        type B = crate::device::Cpu;
        let device = Default::default();
        let config = GarmentModelConfig::new(
            crate::default_job::backbone_by_name("default-small").unwrap(),
            model_core::heads::HeadConfig::new().with_head_dim(32),
            vec![3, 5, 2],
        );
        let model = config.init::<B>(&device);
        let x = Tensor::<B, 4>::random([7, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let whole: Vec<Vec<f32>> = model
            .forward(x.clone())
            .logits
            .into_iter()
            .map(|l| l.into_data().to_vec::<f32>().unwrap())
            .collect();
        // 7 rows in 2, 3 and 7 parts (uneven, and one row each).
        for parts in [2, 3, 7] {
            let cut = logits_in_parts(&model, x.clone(), parts);
            assert_eq!(cut.len(), whole.len(), "{parts} parts: heads");
            for (h, (logits, expected)) in cut.into_iter().zip(&whole).enumerate() {
                assert_eq!(logits.dims()[0], 7);
                let got = logits.into_data().to_vec::<f32>().unwrap();
                assert_eq!(got.len(), expected.len());
                for (a, b) in got.iter().zip(expected) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{parts} parts, head {h}: {a} against {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn automatic_parts_follow_the_device_and_the_batch() {
        assert_eq!(batch_parts(None, 32, false), 1);
        assert_eq!(batch_parts(Some(3), 32, false), 3);
        assert_eq!(batch_parts(Some(64), 32, true), 32);
        assert_eq!(batch_parts(Some(0), 32, true), 1);
        let threads = rayon::current_num_threads();
        assert_eq!(batch_parts(None, 1024, true), threads);
        assert_eq!(batch_parts(None, 3, true), 1);
    }
}
