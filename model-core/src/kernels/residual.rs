//! The end of a ConvNeXt block, `x + branch * scale[c] * factor[n]`, as one pass
//! forward and one backward on the CPU backends built on Flex.
//!
//! `scale` is the block's layer scale (one value per channel) and `factor` the
//! stochastic-depth factor of each sample (0 or `1 / keep` while training with a
//! drop-path rate, absent otherwise). Composed from tensor operations this is a
//! product with a per-channel operand, maybe a product with a per-sample one, and a sum,
//! each a pass over the map with its own buffer; backward, Burn's autodiff adds the
//! scale's gradient as a full-size product followed by a reduction over the batch and
//! positions, which Flex walks with its generic strided iterator (in `perf`, Flex's
//! binary operations went from 8.1 % to 6.6 % of an atto training step at 224 px with
//! this kernel, which took 1.8 %: BENCHMARKS.md). Here:
//! - forward: one pass, written over `x` when nothing else holds it (at inference the
//!   block input is used once more, here);
//! - backward: `x`'s gradient is the incoming one as it is; the branch's
//!   (`grad * factor[n] * scale[c]`) and the scale's (`sum over n, p of
//!   grad * factor[n] * branch`) come from one pass over rows of positions, parallel
//!   over the rows, the per-row sums added up in a fixed order so that a run repeats
//!   bit for bit.
//!
//! The products are taken in the composed order, `(branch * scale) * factor` forward
//! and `(grad * factor) * scale` backward, so the values and the branch's gradient are
//! those of the composed version to the bit; the scale's gradient is summed in another
//! order (within 1e-4 of the largest value in `tests/kernels.rs`).
//!
//! [`scaled_residual`] takes this path on `Flex` and `Autodiff<Flex>` for f32 maps;
//! every other backend runs [`scaled_residual_composed`].

use burn::tensor::{backend::Backend, Tensor};

/// `x + branch * scale[c] * factor[n]` over `[batch, channels, positions]` (see the
/// module documentation); `scale` is `[channels]`, `factor` `[batch]` and holds no
/// gradient.
pub fn scaled_residual<B: Backend>(
    x: Tensor<B, 3>,
    branch: Tensor<B, 3>,
    scale: Tensor<B, 1>,
    factor: Option<Tensor<B, 1>>,
) -> Tensor<B, 3> {
    #[cfg(feature = "flex-kernels")]
    if flex::handles(&x, &branch, &scale, factor.as_ref()) {
        return flex::fused(x, branch, scale, factor).expect("flex::handles checked the types");
    }
    scaled_residual_composed(x, branch, scale, factor)
}

/// [`scaled_residual`] written with tensor operations, for every backend.
pub fn scaled_residual_composed<B: Backend>(
    x: Tensor<B, 3>,
    branch: Tensor<B, 3>,
    scale: Tensor<B, 1>,
    factor: Option<Tensor<B, 1>>,
) -> Tensor<B, 3> {
    let batch = branch.dims()[0];
    let scaled = branch * crate::convnext::norm::per_sample(scale, batch);
    let scaled = match factor {
        Some(f) => scaled * f.reshape([batch, 1, 1]),
        None => scaled,
    };
    x + scaled
}

/// Rows of positions per parallel task: about 16 Ki values a task.
#[cfg(feature = "flex-kernels")]
fn rows_per_task(positions: usize) -> usize {
    (16 * 1024 / positions.max(1)).max(1)
}

/// `out[r] (+)= branch[r] * scale[c] * factor[n]` for every row `r = (n, c)` of
/// `positions` values: written over `out` when it already holds `x`
/// (`x = None`), from `x` otherwise.
#[cfg(feature = "flex-kernels")]
pub fn forward_rows(
    out: &mut [f32],
    x: Option<&[f32]>,
    branch: &[f32],
    scale: &[f32],
    factor: Option<&[f32]>,
    positions: usize,
) {
    let channels = scale.len();
    if out.is_empty() || positions == 0 {
        return;
    }
    use rayon::prelude::*;
    let rows = rows_per_task(positions);
    let task = |chunk: usize, out: &mut [f32]| {
        for (k, out_row) in out.chunks_exact_mut(positions).enumerate() {
            let row = chunk * rows + k;
            let (n, c) = (row / channels, row % channels);
            let start = row * positions;
            let b_row = &branch[start..start + positions];
            let s = scale[c];
            let x_row = x.map(|x| &x[start..start + positions]);
            match (x_row, factor) {
                (Some(x_row), Some(f)) => {
                    let f = f[n];
                    for ((o, &x), &b) in out_row.iter_mut().zip(x_row).zip(b_row) {
                        *o = x + b * s * f;
                    }
                }
                (Some(x_row), None) => {
                    for ((o, &x), &b) in out_row.iter_mut().zip(x_row).zip(b_row) {
                        *o = x + b * s;
                    }
                }
                (None, Some(f)) => {
                    let f = f[n];
                    for (o, &b) in out_row.iter_mut().zip(b_row) {
                        *o += b * s * f;
                    }
                }
                (None, None) => {
                    for (o, &b) in out_row.iter_mut().zip(b_row) {
                        *o += b * s;
                    }
                }
            }
        }
    };
    out.par_chunks_mut(rows * positions)
        .enumerate()
        .for_each(|(chunk, out)| task(chunk, out));
}

/// The backward pass for the branch and the scale: `dbranch[r] = grad[r] * factor[n] *
/// scale[c]` (when asked for) and `dscale[c] = sum over n and positions of grad *
/// factor[n] * branch`, for rows `r = (n, c)` of `positions` values.
#[cfg(feature = "flex-kernels")]
pub fn backward_rows(
    grad: &[f32],
    branch: &[f32],
    scale: &[f32],
    factor: Option<&[f32]>,
    positions: usize,
    want_branch: bool,
) -> (Option<Vec<f32>>, Vec<f32>) {
    let channels = scale.len();
    if grad.is_empty() || positions == 0 {
        return (want_branch.then(|| grad.to_vec()), vec![0.0; channels]);
    }
    use rayon::prelude::*;
    let total_rows = grad.len() / positions;
    let rows = rows_per_task(positions);
    let mut dbranch = want_branch.then(|| vec![0.0f32; grad.len()]);
    // One sum per row first, `sum over positions of grad * factor[n] * branch`.
    let mut row_sums = vec![0.0f32; total_rows];
    let task = |chunk: usize, sums: &mut [f32], db: Option<&mut [f32]>| {
        let mut db = db.map(|d| d.chunks_exact_mut(positions));
        for (k, sum) in sums.iter_mut().enumerate() {
            let row = chunk * rows + k;
            let (n, c) = (row / channels, row % channels);
            let start = row * positions;
            let g_row = &grad[start..start + positions];
            let b_row = &branch[start..start + positions];
            let f = factor.map_or(1.0, |f| f[n]);
            let s = scale[c];
            let mut acc = 0.0f32;
            match db.as_mut().and_then(|rows| rows.next()) {
                Some(d_row) => {
                    for ((d, &g), &b) in d_row.iter_mut().zip(g_row).zip(b_row) {
                        let gf = g * f;
                        *d = gf * s;
                        acc += gf * b;
                    }
                }
                None => {
                    for (&g, &b) in g_row.iter().zip(b_row) {
                        acc += g * f * b;
                    }
                }
            }
            *sum = acc;
        }
    };
    match dbranch.as_mut() {
        Some(db) => row_sums
            .par_chunks_mut(rows)
            .zip(db.par_chunks_mut(rows * positions))
            .enumerate()
            .for_each(|(chunk, (sums, d))| task(chunk, sums, Some(d))),
        None => row_sums
            .par_chunks_mut(rows)
            .enumerate()
            .for_each(|(chunk, sums)| task(chunk, sums, None)),
    }
    let mut dscale = vec![0.0f32; channels];
    for sample in row_sums.chunks_exact(channels) {
        for (d, &s) in dscale.iter_mut().zip(sample) {
            *d += s;
        }
    }
    (dbranch, dscale)
}

#[cfg(feature = "flex-kernels")]
mod flex {
    use super::{backward_rows, forward_rows};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::Flex;
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Tensor, TensorPrimitive};
    use burn_flex::FlexTensor;
    use std::any::TypeId;

    use crate::kernels::flex_types::{flex_tensor, same, Ad, AdTensor};

    /// Whether [`fused`] takes these operands: f32 on Flex or `Autodiff<Flex>`, with
    /// matching sizes.
    pub(super) fn handles<B: Backend>(
        x: &Tensor<B, 3>,
        branch: &Tensor<B, 3>,
        scale: &Tensor<B, 1>,
        factor: Option<&Tensor<B, 1>>,
    ) -> bool {
        let id = TypeId::of::<B>();
        let [batch, channels, _] = x.dims();
        (id == TypeId::of::<Flex>() || id == TypeId::of::<Ad>())
            && x.dtype() == DType::F32
            && branch.dtype() == DType::F32
            && scale.dtype() == DType::F32
            && x.dims() == branch.dims()
            && scale.dims() == [channels]
            && factor.is_none_or(|f| f.dtype() == DType::F32 && f.dims() == [batch])
    }

    /// The contiguous f32 values of a small Flex tensor.
    fn values(t: &FlexTensor) -> Vec<f32> {
        t.to_contiguous().storage::<f32>().to_vec()
    }

    /// `x` made contiguous over its whole buffer. Taking `x` by value drops the handle
    /// `to_contiguous` hands back a second copy of, so that `try_storage_mut` can find
    /// the buffer unshared.
    fn into_contiguous(x: FlexTensor) -> FlexTensor {
        x.to_contiguous()
    }

    /// The fused forward pass on Flex tensors: over `x`'s own buffer when nothing else
    /// holds it, into a new one otherwise.
    fn forward(
        x: FlexTensor,
        branch: &FlexTensor,
        scale: &[f32],
        factor: Option<&[f32]>,
        dims: [usize; 3],
    ) -> FlexTensor {
        let branch = branch.to_contiguous();
        let branch = branch.storage::<f32>();
        let positions = dims[2];
        let mut x = into_contiguous(x);
        if let Some(out) = x.try_storage_mut::<f32>() {
            forward_rows(out, None, branch, scale, factor, positions);
            return x;
        }
        let mut out = vec![0.0f32; branch.len()];
        forward_rows(
            &mut out,
            Some(x.storage::<f32>()),
            branch,
            scale,
            factor,
            positions,
        );
        flex_tensor(out, dims.to_vec())
    }

    pub(super) fn fused<B: Backend>(
        x: Tensor<B, 3>,
        branch: Tensor<B, 3>,
        scale: Tensor<B, 1>,
        factor: Option<Tensor<B, 1>>,
    ) -> Option<Tensor<B, 3>> {
        let dims = x.dims();
        let id = TypeId::of::<B>();
        let x = x.into_primitive().tensor();
        let branch = branch.into_primitive().tensor();
        let scale = scale.into_primitive().tensor();
        let factor = factor.map(|f| f.into_primitive().tensor());
        let out: B::FloatTensorPrimitive = if id == TypeId::of::<Flex>() {
            let factor: Option<FlexTensor> = match factor {
                Some(f) => Some(same(f)?),
                None => None,
            };
            let factor = factor.as_ref().map(values);
            let scale = values(&same(scale)?);
            same(forward(
                same(x)?,
                &same(branch)?,
                &scale,
                factor.as_deref(),
                dims,
            ))?
        } else {
            let factor: Option<AdTensor> = match factor {
                Some(f) => Some(same(f)?),
                None => None,
            };
            same(forward_autodiff(
                same(x)?,
                same(branch)?,
                same(scale)?,
                factor.map(|f| values(&f.primitive)),
                dims,
            ))?
        };
        Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    #[derive(Debug)]
    struct ScaledResidualBackward;

    /// The branch, the scale's and factors' values, and the map's sizes.
    type State = (FlexTensor, Vec<f32>, Option<Vec<f32>>, [usize; 3]);

    impl Backward<Flex, 3> for ScaledResidualBackward {
        type State = State;

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let [node_x, node_branch, node_scale] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
            let (branch, scale, factor, dims) = ops.state;
            if node_branch.is_some() || node_scale.is_some() {
                let branch = branch.to_contiguous();
                let (dbranch, dscale) = backward_rows(
                    grad.storage::<f32>(),
                    branch.storage::<f32>(),
                    &scale,
                    factor.as_deref(),
                    dims[2],
                    node_branch.is_some(),
                );
                if let (Some(node), Some(db)) = (node_branch, dbranch) {
                    grads.register::<Flex>(node.id, flex_tensor(db, dims.to_vec()));
                }
                if let Some(node) = node_scale {
                    grads.register::<Flex>(node.id, flex_tensor(dscale, vec![dims[1]]));
                }
            }
            if let Some(node) = node_x {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }

    fn forward_autodiff(
        x: AdTensor,
        branch: AdTensor,
        scale: AdTensor,
        factor: Option<Vec<f32>>,
        dims: [usize; 3],
    ) -> AdTensor {
        let scale_values = values(&scale.primitive);
        match ScaledResidualBackward
            .prepare::<NoCheckpointing>([x.node.clone(), branch.node.clone(), scale.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = forward(
                    x.primitive,
                    &branch.primitive,
                    &scale_values,
                    factor.as_deref(),
                    dims,
                );
                prep.finish((branch.primitive, scale_values, factor, dims), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(
                x.primitive,
                &branch.primitive,
                &scale_values,
                factor.as_deref(),
                dims,
            )),
        }
    }
}
