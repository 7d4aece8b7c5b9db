//! Training losses, written with tensor operations only so that they run (and
//! differentiate) on any Burn backend:
//! - [`masked_cross_entropy`]: cross-entropy of one attribute head that skips rows whose
//!   label is missing;
//! - [`mmd`]: maximum mean discrepancy between two feature batches, the domain-adaptation
//!   term of phase one.

use burn::tensor::{activation::log_softmax, backend::Backend, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Labels that cannot become loss targets, naming the row at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LossError {
    #[error("row {row}: label {label} is out of range for {num_classes} classes")]
    LabelOutOfRange {
        row: usize,
        label: usize,
        num_classes: usize,
    },
}

/// The targets of one attribute head for one batch, in the form
/// [`masked_cross_entropy`] takes.
#[derive(Debug, Clone)]
pub struct MaskedTargets<B: Backend> {
    /// `[batch]` class indices; 0 on unlabelled rows, where it is never read.
    pub targets: Tensor<B, 1, Int>,
    /// `[batch]` 1.0 where the row is labelled, 0.0 where its label is missing.
    pub mask: Tensor<B, 1>,
}

impl<B: Backend> MaskedTargets<B> {
    /// Builds the targets and mask of a batch from its labels (`None` = missing),
    /// checking every label against the head's `num_classes`.
    pub fn from_labels(
        labels: &[Option<usize>],
        num_classes: usize,
        device: &B::Device,
    ) -> Result<Self, LossError> {
        let mut targets = Vec::with_capacity(labels.len());
        let mut mask = Vec::with_capacity(labels.len());
        for (row, label) in labels.iter().enumerate() {
            match *label {
                Some(label) if label >= num_classes => {
                    return Err(LossError::LabelOutOfRange {
                        row,
                        label,
                        num_classes,
                    });
                }
                Some(label) => {
                    targets.push(label as i64);
                    mask.push(1.0f32);
                }
                // Any valid index works: the mask zeroes this row's term, but the gather
                // still reads it, so it must not be out of range.
                None => {
                    targets.push(0);
                    mask.push(0.0);
                }
            }
        }
        let batch = labels.len();
        Ok(Self {
            targets: Tensor::from_data(TensorData::new(targets, [batch]), device),
            mask: Tensor::from_data(TensorData::new(mask, [batch]), device),
        })
    }

    /// The masked cross-entropy of `logits` (`[batch, classes]`) against these targets.
    pub fn cross_entropy(&self, logits: Tensor<B, 2>) -> Tensor<B, 1> {
        masked_cross_entropy(logits, self.targets.clone(), self.mask.clone())
    }
}

/// Mean cross-entropy over the labelled rows of one attribute head.
///
/// - `logits`: `[batch, classes]`, raw scores (no softmax applied);
/// - `targets`: `[batch]` class indices, each in `0..classes` even on unlabelled rows;
/// - `mask`: `[batch]`, 1.0 for a labelled row and 0.0 for a row whose label is missing.
///
/// Returns `[1]`: the sum of `-log softmax(logits)[target]` over labelled rows divided by
/// their number, and exactly 0 when no row is labelled. Unlabelled rows contribute
/// neither to the value nor to the gradient.
pub fn masked_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    mask: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let [batch, _] = logits.dims();
    // Burn's log_softmax subtracts the (detached) row maximum before exponentiating, so
    // large logits do not overflow.
    let log_probs = log_softmax(logits, 1);
    let picked: Tensor<B, 1> = log_probs
        .gather(1, targets.unsqueeze_dim(1))
        .reshape([batch]);
    let labelled = mask.clone().sum();
    // Dividing by at least 1 turns the all-unlabelled case into 0 / 1 = 0 rather than
    // 0 / 0 = NaN; with at least one labelled row the count is already >= 1.
    (picked * mask).sum().neg() / labelled.clamp_min(1.0)
}

/// Bandwidth multipliers of the MMD kernel: powers of two around the data's own scale.
///
/// A single Gaussian only compares the two batches at one length scale; summing kernels
/// from a quarter to four times the typical squared distance keeps the term informative
/// both while the domains are far apart and once they are close (the multi-kernel MMD of
/// domain-adaptation networks).
pub const DEFAULT_BANDWIDTH_MULTIPLIERS: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];

/// Lower bound of the base bandwidth: keeps the kernel finite when every feature vector
/// in both batches is the same (the mean squared distance is then 0).
pub const DEFAULT_MIN_BANDWIDTH: f64 = 1e-6;

/// How [`mmd`] chooses its Gaussian kernels.
///
/// The base bandwidth is the mean squared distance between distinct rows of the joint
/// batch `[x; y]`, computed on detached values; kernel `k` is
/// `exp(-|a - b|^2 / (base * bandwidth_multipliers[k]))` and the kernels are summed.
/// Tying the bandwidth to the data makes the term independent of the feature scale, which
/// drifts while the backbone trains; detaching it stops the optimiser from lowering the
/// loss by merely stretching or shrinking all features instead of aligning the domains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MmdConfig {
    /// Multiples of the base bandwidth, one Gaussian kernel each.
    pub bandwidth_multipliers: Vec<f64>,
    /// Floor of the base bandwidth (see [`DEFAULT_MIN_BANDWIDTH`]).
    pub min_bandwidth: f64,
}

impl Default for MmdConfig {
    fn default() -> Self {
        Self {
            bandwidth_multipliers: DEFAULT_BANDWIDTH_MULTIPLIERS.to_vec(),
            min_bandwidth: DEFAULT_MIN_BANDWIDTH,
        }
    }
}

/// Squared maximum mean discrepancy between two feature batches, with the kernels of
/// `config`.
///
/// - `x`: `[n, d]`, e.g. pooled features of the labelled batch;
/// - `y`: `[m, d]`, e.g. pooled features of unlabelled target-domain images.
///
/// Returns `[1]`: the biased estimate `mean(Kxx) + mean(Kyy) - 2 mean(Kxy)`. The biased
/// form (diagonal terms included) is never negative, since it is the squared distance of
/// the two mean embeddings, which makes it a well-behaved penalty at small batch sizes;
/// the unbiased form can dip below zero and be rewarded for it.
///
/// # Panics
/// If either batch is empty, the feature widths differ, or `config` has no multiplier.
pub fn mmd<B: Backend>(x: Tensor<B, 2>, y: Tensor<B, 2>, config: &MmdConfig) -> Tensor<B, 1> {
    let [n, d] = x.dims();
    let [m, d_y] = y.dims();
    assert!(
        n > 0 && m > 0,
        "mmd needs two non-empty batches, got {n} and {m} rows"
    );
    assert_eq!(d, d_y, "mmd needs batches of the same feature width");
    assert!(
        !config.bandwidth_multipliers.is_empty(),
        "mmd needs at least one bandwidth multiplier"
    );
    let device = x.device();
    let joint = Tensor::cat(vec![x, y], 0);
    let total = n + m;

    let distances = pairwise_squared_distances(joint);
    // The diagonal is zero, so the sum over all entries is the sum over distinct pairs.
    let base = distances
        .clone()
        .detach()
        .sum()
        .div_scalar((total * total - total) as f64)
        .clamp_min(config.min_bandwidth)
        .reshape([1, 1]);

    let mut kernel = distances.zeros_like();
    for &multiplier in &config.bandwidth_multipliers {
        let bandwidth = base.clone().mul_scalar(multiplier);
        kernel = kernel + (distances.clone().neg() / bandwidth).exp();
    }

    // With w = [1/n, ..., 1/n, -1/m, ..., -1/m], w^T K w expands to
    // mean(Kxx) + mean(Kyy) - 2 mean(Kxy): one product instead of three block slices.
    let mut weights = vec![1.0 / n as f32; n];
    weights.extend(std::iter::repeat_n(-1.0 / m as f32, m));
    let weights: Tensor<B, 2> = Tensor::from_data(TensorData::new(weights, [total, 1]), &device);
    weights
        .clone()
        .transpose()
        .matmul(kernel.matmul(weights))
        .reshape([1])
}

/// `[rows, rows]` squared Euclidean distances between the rows of `z` (`[rows, d]`).
///
/// Uses `|a|^2 + |b|^2 - 2 a.b`, one matrix product instead of a `[rows, rows, d]`
/// difference tensor; rounding can make that slightly negative, so it is clamped at 0.
fn pairwise_squared_distances<B: Backend>(z: Tensor<B, 2>) -> Tensor<B, 2> {
    let norms = z.clone().powi_scalar(2).sum_dim(1);
    let dots = z.clone().matmul(z.transpose());
    (norms.clone() + norms.transpose() - dots.mul_scalar(2.0)).clamp_min(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};

    type B = Flex;
    type AD = Autodiff<Flex>;

    fn scalar<Bk: Backend>(t: Tensor<Bk, 1>) -> f32 {
        t.into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 data")[0]
    }

    fn matrix<Bk: Backend>(values: &[f32], rows: usize, cols: usize) -> Tensor<Bk, 2> {
        Tensor::from_data(
            TensorData::new(values.to_vec(), [rows, cols]),
            &Default::default(),
        )
    }

    #[test]
    fn masked_cross_entropy_matches_hand_computation() {
        let device = Default::default();
        // Row 0: logits [0, ln 3] -> softmax [1/4, 3/4]; target 1 -> -ln(3/4).
        // Row 1: unlabelled, ignored.
        // Row 2: logits [ln 2, 0] -> softmax [2/3, 1/3]; target 1 -> -ln(1/3) = ln 3.
        // Mean over the two labelled rows: (ln(4/3) + ln 3) / 2 = ln 4 / 2 = ln 2.
        let ln2 = std::f32::consts::LN_2;
        let ln3 = 3.0f32.ln();
        let logits = matrix::<B>(&[0.0, ln3, 5.0, -5.0, ln2, 0.0], 3, 2);
        let targets = MaskedTargets::<B>::from_labels(&[Some(1), None, Some(1)], 2, &device)
            .expect("labels in range");
        let loss = scalar(targets.cross_entropy(logits));
        assert!((loss - ln2).abs() < 1e-6, "loss {loss}, expected ln 2");
    }

    #[test]
    fn masked_cross_entropy_is_stable_for_large_logits() {
        let device = Default::default();
        // softmax of [1000, 0] is [1, e^-1000]; target 0 costs ~0, a naive exp overflows.
        let logits = matrix::<B>(&[1000.0, 0.0], 1, 2);
        let targets =
            MaskedTargets::<B>::from_labels(&[Some(0)], 2, &device).expect("labels in range");
        let loss = scalar(targets.cross_entropy(logits));
        assert!(loss.is_finite() && loss.abs() < 1e-6, "loss {loss}");
    }

    #[test]
    fn masked_rows_do_not_change_the_loss() {
        let device = Default::default();
        let labels = [Some(2), None, Some(0)];
        let targets = MaskedTargets::<B>::from_labels(&labels, 3, &device).expect("in range");
        let a = matrix::<B>(&[0.1, 0.2, 0.3, 1.0, 2.0, 3.0, -1.0, 0.5, 0.0], 3, 3);
        let b = matrix::<B>(&[0.1, 0.2, 0.3, 9.0, -7.0, 0.0, -1.0, 0.5, 0.0], 3, 3);
        let (la, lb) = (
            scalar(targets.cross_entropy(a)),
            scalar(targets.cross_entropy(b)),
        );
        assert!(la > 0.0);
        assert_eq!(la, lb);
    }

    #[test]
    fn no_labelled_row_gives_exactly_zero() {
        let device = Default::default();
        let targets = MaskedTargets::<B>::from_labels(&[None, None], 4, &device).expect("ok");
        let logits = matrix::<B>(&[1.0, 2.0, 3.0, 4.0, -4.0, 3.0, 2.0, 1.0], 2, 4);
        let loss = scalar(targets.cross_entropy(logits));
        assert_eq!(loss, 0.0);
    }

    #[test]
    fn out_of_range_label_names_the_row() {
        let device = Default::default();
        let err = MaskedTargets::<B>::from_labels(&[Some(0), None, Some(3)], 3, &device)
            .expect_err("label 3 of 3 classes");
        assert_eq!(
            err,
            LossError::LabelOutOfRange {
                row: 2,
                label: 3,
                num_classes: 3
            }
        );
    }

    #[test]
    fn gradients_reach_labelled_rows_only() {
        let device = Default::default();
        let logits = matrix::<AD>(&[0.5, -0.5, 1.0, 1.0, 2.0, 0.0], 3, 2).require_grad();
        let targets =
            MaskedTargets::<AD>::from_labels(&[Some(0), None, Some(1)], 2, &device).expect("ok");
        let grads = targets.cross_entropy(logits.clone()).backward();
        let grad = logits
            .grad(&grads)
            .expect("logits require grad")
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 data");
        let row_norm = |r: usize| grad[2 * r].abs() + grad[2 * r + 1].abs();
        assert!(
            row_norm(0) > 1e-3,
            "labelled row 0 got no gradient: {grad:?}"
        );
        assert_eq!(row_norm(1), 0.0, "masked row 1 got a gradient: {grad:?}");
        assert!(
            row_norm(2) > 1e-3,
            "labelled row 2 got no gradient: {grad:?}"
        );
        // d/dz of -log softmax(z)[t] is softmax(z) - onehot(t), divided by 2 labelled rows;
        // row 0: softmax([0.5, -0.5])[0] = 1 / (1 + e^-1).
        let p0 = 1.0 / (1.0 + (-1.0f32).exp());
        assert!((grad[0] - (p0 - 1.0) / 2.0).abs() < 1e-6, "{grad:?}");
    }

    /// A deterministic `[rows, cols]` batch with spread-out values, shifted by `shift`.
    fn features(rows: usize, cols: usize, shift: f32) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| ((i * 37 % 11) as f32 / 11.0 - 0.5) + shift)
            .collect()
    }

    #[test]
    fn mmd_of_identical_batches_is_zero() {
        let config = MmdConfig::default();
        let x = features(6, 4, 0.0);
        let value = scalar(mmd(matrix::<B>(&x, 6, 4), matrix::<B>(&x, 6, 4), &config));
        assert!(value.abs() < 1e-6, "mmd {value}");

        // All rows equal: the bandwidth floor keeps it finite.
        let same = vec![0.3f32; 8];
        let value = scalar(mmd(
            matrix::<B>(&same, 2, 4),
            matrix::<B>(&same, 2, 4),
            &config,
        ));
        assert!(value.is_finite() && value.abs() < 1e-6, "mmd {value}");
    }

    #[test]
    fn mmd_grows_with_the_shift() {
        let config = MmdConfig::default();
        let x = matrix::<B>(&features(6, 4, 0.0), 6, 4);
        let slight = scalar(mmd(
            x.clone(),
            matrix::<B>(&features(5, 4, 0.1), 5, 4),
            &config,
        ));
        let large = scalar(mmd(x, matrix::<B>(&features(5, 4, 2.0), 5, 4), &config));
        assert!(slight > 0.0, "slight shift: {slight}");
        assert!(
            large > slight,
            "large shift {large} <= slight shift {slight}"
        );
    }

    #[test]
    fn mmd_is_differentiable() {
        let x = matrix::<AD>(&features(4, 3, 0.0), 4, 3).require_grad();
        let y = matrix::<AD>(&features(3, 3, 0.5), 3, 3).require_grad();
        let grads = mmd(x.clone(), y.clone(), &MmdConfig::default()).backward();
        for (name, tensor) in [("x", x), ("y", y)] {
            let grad = tensor
                .grad(&grads)
                .expect("inputs require grad")
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32 data");
            assert!(grad.iter().all(|g| g.is_finite()), "{name}: {grad:?}");
            assert!(grad.iter().any(|g| g.abs() > 1e-6), "{name}: {grad:?}");
        }
    }
}
