//! A map gated position by position, `x[n, c, p] * gate[n, p]`, as one pass forward
//! and one backward on the CPU backends built on Flex: an attribute head's spatial
//! attention with one map for all channels (`SpatialGate::Shared`).
//!
//! Composed, the gate `[batch, 1, positions]` is broadcast over the channel axis, a
//! middle axis, which Flex's fast broadcast paths do not take: the product and both of
//! its gradients walk its generic strided iterator one element at a time (with heads of
//! width 512, Flex's binary operations went from 6.6 % to 4.2 % of an atto training
//! step at 224 px in `perf` with this kernel, which took 0.1 %: BENCHMARKS.md).
//! Here each `(n, c)` row of positions is multiplied by the sample's gate row; backward,
//! `x`'s gradient is `grad * gate` row by row, and the gate's is the sum over channels
//! of `grad * x`, added channel after channel in a fixed order (so a run repeats bit
//! for bit), parallel over samples and blocks of positions.
//!
//! The values and `x`'s gradient are the composed version's to the bit; the gate's
//! gradient is summed in another order (`tests/kernels.rs`).
//!
//! [`gate_positions`] takes this path on `Flex` and `Autodiff<Flex>` for f32 maps;
//! every other backend runs [`gate_positions_composed`].

use burn::tensor::{backend::Backend, Tensor};

/// `x[n, c, p] * gate[n, p]`, `x` `[batch, channels, positions]` and `gate`
/// `[batch, positions]` (see the module documentation).
pub fn gate_positions<B: Backend>(x: Tensor<B, 3>, gate: Tensor<B, 2>) -> Tensor<B, 3> {
    #[cfg(feature = "flex-kernels")]
    if flex::handles(&x, &gate) {
        return flex::fused(x, gate).expect("flex::handles checked the types");
    }
    gate_positions_composed(x, gate)
}

/// [`gate_positions`] written with tensor operations, for every backend.
pub fn gate_positions_composed<B: Backend>(x: Tensor<B, 3>, gate: Tensor<B, 2>) -> Tensor<B, 3> {
    x * gate.unsqueeze_dim::<3>(1)
}

/// Positions per parallel task of the backward pass's gate gradient.
#[cfg(feature = "flex-kernels")]
const POSITIONS_PER_TASK: usize = 256;

/// `out[n, c, p] = x[n, c, p] * gate[n, p]` for `gate` `[batch, positions]`: from `x`,
/// or over `out` when it already holds `x` (`x = None`). Parallel over samples.
#[cfg(feature = "flex-kernels")]
pub fn forward_rows(out: &mut [f32], x: Option<&[f32]>, gate: &[f32], positions: usize) {
    use rayon::prelude::*;
    if out.is_empty() || positions == 0 {
        return;
    }
    let per_sample = out.len() / (gate.len() / positions);
    out.par_chunks_mut(per_sample)
        .enumerate()
        .for_each(|(n, out)| {
            let g = &gate[n * positions..(n + 1) * positions];
            let x = x.map(|x| &x[n * per_sample..(n + 1) * per_sample]);
            for (c, o_row) in out.chunks_exact_mut(positions).enumerate() {
                match x {
                    Some(x) => {
                        let x_row = &x[c * positions..(c + 1) * positions];
                        for ((o, &v), &s) in o_row.iter_mut().zip(x_row).zip(g) {
                            *o = v * s;
                        }
                    }
                    None => {
                        for (o, &s) in o_row.iter_mut().zip(g) {
                            *o *= s;
                        }
                    }
                }
            }
        });
}

/// The gate's gradient, `dgate[n, p] = sum over c of grad[n, c, p] * x[n, c, p]`, the
/// channels added in order; parallel over samples and blocks of positions.
#[cfg(feature = "flex-kernels")]
pub fn gate_grad(grad: &[f32], x: &[f32], batch: usize, positions: usize) -> Vec<f32> {
    use rayon::prelude::*;
    let mut dgate = vec![0.0f32; batch * positions];
    if positions == 0 || batch == 0 {
        return dgate;
    }
    let channels = grad.len() / (batch * positions);
    dgate
        .par_chunks_mut(positions)
        .enumerate()
        .flat_map(|(n, sample)| {
            sample
                .par_chunks_mut(POSITIONS_PER_TASK)
                .enumerate()
                .map(move |(block, out)| (n, block, out))
        })
        .for_each(|(n, block, out)| {
            let start = block * POSITIONS_PER_TASK;
            for c in 0..channels {
                let row = (n * channels + c) * positions + start;
                let (g, v) = (&grad[row..row + out.len()], &x[row..row + out.len()]);
                for ((o, &g), &v) in out.iter_mut().zip(g).zip(v) {
                    *o += g * v;
                }
            }
        });
    dgate
}

#[cfg(feature = "flex-kernels")]
mod flex {
    use super::{forward_rows, gate_grad};
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

    /// Whether [`fused`] takes these operands: f32 on Flex or `Autodiff<Flex>`, the
    /// gate `[batch, positions]` of `x`'s `[batch, channels, positions]`.
    pub(super) fn handles<B: Backend>(x: &Tensor<B, 3>, gate: &Tensor<B, 2>) -> bool {
        let id = TypeId::of::<B>();
        let [batch, _, positions] = x.dims();
        (id == TypeId::of::<Flex>() || id == TypeId::of::<Ad>())
            && x.dtype() == DType::F32
            && gate.dtype() == DType::F32
            && gate.dims() == [batch, positions]
    }

    /// `x` made contiguous over its whole buffer; taking it by value drops the handle
    /// `to_contiguous` returns a second copy of, so `try_storage_mut` can find the
    /// buffer unshared.
    fn into_contiguous(x: FlexTensor) -> FlexTensor {
        x.to_contiguous()
    }

    /// The product on Flex tensors: over `x`'s buffer when nothing else holds it.
    fn forward(x: FlexTensor, gate: &FlexTensor, dims: [usize; 3]) -> FlexTensor {
        let gate = gate.to_contiguous();
        let gate = gate.storage::<f32>();
        let mut x = into_contiguous(x);
        if let Some(values) = x.try_storage_mut::<f32>() {
            forward_rows(values, None, gate, dims[2]);
            return x;
        }
        let mut out = vec![0.0f32; dims.iter().product()];
        forward_rows(&mut out, Some(x.storage::<f32>()), gate, dims[2]);
        flex_tensor(out, dims.to_vec())
    }

    pub(super) fn fused<B: Backend>(x: Tensor<B, 3>, gate: Tensor<B, 2>) -> Option<Tensor<B, 3>> {
        let dims = x.dims();
        let x = x.into_primitive().tensor();
        let gate = gate.into_primitive().tensor();
        let out: B::FloatTensorPrimitive = if TypeId::of::<B>() == TypeId::of::<Flex>() {
            same(forward(same(x)?, &same(gate)?, dims))?
        } else {
            same(forward_autodiff(same(x)?, same(gate)?, dims))?
        };
        Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    #[derive(Debug)]
    struct GateBackward;

    impl Backward<Flex, 2> for GateBackward {
        /// `x`, the gate, and the map's sizes.
        type State = (FlexTensor, FlexTensor, [usize; 3]);

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let [node_x, node_gate] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
            let (x, gate, dims) = ops.state;
            let [batch, _, positions] = dims;
            if let Some(node) = node_gate {
                let x = x.to_contiguous();
                let dgate = gate_grad(grad.storage::<f32>(), x.storage::<f32>(), batch, positions);
                grads.register::<Flex>(node.id, flex_tensor(dgate, vec![batch, positions]));
            }
            if let Some(node) = node_x {
                // The same product as forward, on the incoming gradient.
                grads.register::<Flex>(node.id, forward(grad, &gate, dims));
            }
        }
    }

    fn forward_autodiff(x: AdTensor, gate: AdTensor, dims: [usize; 3]) -> AdTensor {
        match GateBackward
            .prepare::<NoCheckpointing>([x.node.clone(), gate.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                // Kept for the gate's gradient; the product then goes to a new buffer.
                let kept_x = x.primitive.clone();
                let out = forward(x.primitive, &gate.primitive, dims);
                prep.finish((kept_x, gate.primitive, dims), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive, &gate.primitive, dims)),
        }
    }
}
