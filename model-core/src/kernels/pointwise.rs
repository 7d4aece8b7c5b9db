//! The pointwise (1x1) linear layer of an NCHW map, `y[n] = W^T x[n] + b`, with its
//! bias folded into the matrix product forward and a backward pass that writes each
//! gradient once, on the CPU backends built on Flex.
//!
//! Written with tensor operations (`convnext::norm::pointwise_composed`) the layer is a
//! batched product with the weight broadcast over the batch, plus a bias add. Burn's
//! autodiff then differentiates the broadcast product generically: it forms the weight
//! gradient of every sample, `[batch, out, in]`, copies transposed operands into fresh
//! buffers, and sums the per-sample gradients over the batch, and the bias gradient is
//! one more reduction. In a `perf` profile of the default job's training step those
//! copies, zeroed buffers and reductions came to about a tenth of the step
//! (BENCHMARKS.md). Here:
//!
//! - forward, each sample's output starts as its bias and the product accumulates onto
//!   it (one pass);
//! - backward, `dx[n] = W dy[n]` per sample, and `dW = sum_n x[n] dy[n]^T` accumulates
//!   sample after sample into one `[in, out]` buffer per thread, read through strides,
//!   so nothing is transposed or copied; `db` is the sum of `dy` over samples and
//!   positions.
//!
//! The weight is Burn `Linear`'s `[in, out]`; maps are `[batch, channels, positions]`.

/// Sizes of a pointwise layer applied to a `[batch, inputs, positions]` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointwiseShape {
    pub batch: usize,
    pub inputs: usize,
    pub outputs: usize,
    pub positions: usize,
}

/// One row-major product `dst (m x n) (+)= lhs (m x k) * rhs (k x n)`, each operand
/// given by its row and column strides in elements.
struct Operand<'a> {
    data: &'a [f32],
    row: isize,
    col: isize,
}

fn product(
    [m, n, k]: [usize; 3],
    dst: &mut [f32],
    dst_row: isize,
    lhs: Operand<'_>,
    rhs: Operand<'_>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    // The extents each operand's strides reach, checked before handing raw pointers
    // to gemm (all strides here are non-negative).
    let reach = |rows: usize, cols: usize, row: isize, col: isize| {
        (rows.saturating_sub(1)) * row as usize + (cols.saturating_sub(1)) * col as usize + 1
    };
    assert!(dst.len() >= reach(m, n, dst_row, 1), "output too small");
    if k > 0 {
        assert!(
            lhs.data.len() >= reach(m, k, lhs.row, lhs.col),
            "lhs too small"
        );
        assert!(
            rhs.data.len() >= reach(k, n, rhs.row, rhs.col),
            "rhs too small"
        );
    }
    // SAFETY: every element the strides address lies inside its slice (checked above);
    // `dst` is borrowed mutably, so it does not alias the two inputs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_row,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col,
            lhs.row,
            rhs.data.as_ptr(),
            rhs.col,
            rhs.row,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Runs `task(sample, out_slab, parallelism)` for every sample: the samples in
/// parallel when there are at least as many as threads, otherwise one after the other,
/// each product spread over the threads.
fn per_sample(
    out: &mut [f32],
    slab: usize,
    task: impl Fn(usize, &mut [f32], gemm::Parallelism) + Sync + Send,
) {
    use rayon::prelude::*;
    let batch = out.len() / slab.max(1);
    if batch >= rayon::current_num_threads() {
        out.par_chunks_mut(slab.max(1))
            .enumerate()
            .for_each(|(n, o)| task(n, o, gemm::Parallelism::None));
    } else {
        for (n, o) in out.chunks_mut(slab.max(1)).enumerate() {
            task(n, o, gemm::Parallelism::Rayon(0));
        }
    }
}

/// `W^T x[n] + b` for every sample: `x` `[batch, inputs, positions]`, `weight`
/// `[inputs, outputs]`, `bias` `[outputs]`; returns `[batch, outputs, positions]`.
pub fn pointwise_forward(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    shape: PointwiseShape,
) -> Vec<f32> {
    let PointwiseShape {
        batch,
        inputs,
        outputs,
        positions,
    } = shape;
    assert_eq!(x.len(), batch * inputs * positions, "input size");
    assert_eq!(weight.len(), inputs * outputs, "weight size");
    assert_eq!(bias.len(), outputs, "bias size");
    // Each output row starts as its bias (written once, not zeroed first); the
    // product accumulates onto it.
    let mut y: Vec<f32> = Vec::with_capacity(batch * outputs * positions);
    for _ in 0..batch {
        for &b in bias {
            y.extend(std::iter::repeat_n(b, positions));
        }
    }
    let slab_in = inputs * positions;
    // Output rows `first..` of sample `n`, as many as `dst` holds.
    let rows_of_sample = |n: usize, first: usize, dst: &mut [f32], parallelism| {
        product(
            [dst.len() / positions.max(1), positions, inputs],
            dst,
            positions as isize,
            // W^T from row `first`: element (o, i) is weight[i * outputs + first + o].
            Operand {
                data: &weight[first..],
                row: 1,
                col: outputs as isize,
            },
            Operand {
                data: &x[n * slab_in..(n + 1) * slab_in],
                row: positions as isize,
                col: 1,
            },
            true,
            parallelism,
        );
    };
    let threads = rayon::current_num_threads();
    if batch >= threads || positions == 0 || outputs == 0 {
        per_sample(&mut y, outputs * positions, |n, y, parallelism| {
            rows_of_sample(n, 0, y, parallelism)
        });
    } else {
        // Fewer samples than threads: each sample's output rows are cut into even
        // blocks, one single-threaded product per block, the blocks side by side
        // (their rows of `y` are contiguous). At batch 1 this measured faster than
        // gemm spreading each product over the threads itself (BENCHMARKS.md).
        use rayon::prelude::*;
        let blocks = threads.div_ceil(batch);
        let rows = outputs.div_ceil(blocks);
        // Listed first: rayon would run the blocks of one sample on one thread.
        let jobs: Vec<(usize, usize, &mut [f32])> = y
            .chunks_mut(outputs * positions)
            .enumerate()
            .flat_map(|(n, sample)| {
                sample
                    .chunks_mut(rows * positions)
                    .enumerate()
                    .map(move |(b, dst)| (n, b * rows, dst))
            })
            .collect();
        jobs.into_par_iter()
            .for_each(|(n, first, dst)| rows_of_sample(n, first, dst, gemm::Parallelism::None));
    }
    y
}

/// The gradients of [`pointwise_forward`] from the output gradient `dy`
/// (`[batch, outputs, positions]`): `(dx, dweight, dbias)`, `dx` only when asked for.
pub fn pointwise_backward(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    shape: PointwiseShape,
    want_dx: bool,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let PointwiseShape {
        batch,
        inputs,
        outputs,
        positions,
    } = shape;
    let slab_in = inputs * positions;
    let slab_out = outputs * positions;
    assert_eq!(x.len(), batch * slab_in, "input size");
    assert_eq!(weight.len(), inputs * outputs, "weight size");
    assert_eq!(dy.len(), batch * slab_out, "output-gradient size");

    let dx = want_dx.then(|| {
        let mut dx = vec![0.0f32; batch * slab_in];
        per_sample(&mut dx, slab_in, |n, dx, parallelism| {
            product(
                [inputs, positions, outputs],
                dx,
                positions as isize,
                Operand {
                    data: weight,
                    row: outputs as isize,
                    col: 1,
                },
                Operand {
                    data: &dy[n * slab_out..(n + 1) * slab_out],
                    row: positions as isize,
                    col: 1,
                },
                false,
                parallelism,
            );
        });
        dx
    });

    // dW and db: the batch split into one run of samples per thread, each summing into
    // its own buffers, then the partial sums added.
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    let runs = threads.clamp(1, batch.max(1));
    let per_run = batch.div_ceil(runs).max(1);
    // With fewer samples than threads, each product is spread over the threads instead.
    let parallelism = if batch >= threads {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    };
    let partial: Vec<(Vec<f32>, Vec<f32>)> = (0..batch.div_ceil(per_run))
        .into_par_iter()
        .map(|r| {
            let mut dw = vec![0.0f32; inputs * outputs];
            let mut db = vec![0.0f32; outputs];
            for n in r * per_run..((r + 1) * per_run).min(batch) {
                let dy_n = &dy[n * slab_out..(n + 1) * slab_out];
                product(
                    [inputs, outputs, positions],
                    &mut dw,
                    outputs as isize,
                    Operand {
                        data: &x[n * slab_in..(n + 1) * slab_in],
                        row: positions as isize,
                        col: 1,
                    },
                    // dy[n]^T: element (p, o) is dy_n[o * positions + p].
                    Operand {
                        data: dy_n,
                        row: 1,
                        col: positions as isize,
                    },
                    true,
                    parallelism,
                );
                for (b, row) in db.iter_mut().zip(dy_n.chunks_exact(positions.max(1))) {
                    *b += row.iter().sum::<f32>();
                }
            }
            (dw, db)
        })
        .collect();
    let mut dw = vec![0.0f32; inputs * outputs];
    let mut db = vec![0.0f32; outputs];
    for (w, b) in partial {
        dw.iter_mut().zip(w).for_each(|(s, v)| *s += v);
        db.iter_mut().zip(b).for_each(|(s, v)| *s += v);
    }
    (dx, dw, db)
}

pub(crate) use flex::{try_fast, try_fast_with};

mod flex {
    use super::{pointwise_backward, pointwise_forward, PointwiseShape};
    use crate::kernels::flex_types::{flex_tensor, same, Ad, AdTensor};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::NodeId;
    use burn::backend::Flex;
    use burn::nn::Linear;
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Tensor, TensorPrimitive};
    use burn_flex::FlexTensor;
    use std::any::TypeId;

    /// `linear` at every position of `[batch, in, positions]` (see the module
    /// documentation); `None` where the backend is not Flex or `Autodiff<Flex>`, the
    /// map is not f32, or the layer has no bias.
    pub(crate) fn try_fast<B: Backend>(
        linear: &Linear<B>,
        x: Tensor<B, 3>,
    ) -> Option<Tensor<B, 3>> {
        try_fast_with(linear.weight.val(), linear.bias.as_ref()?.val(), x)
    }

    /// [`try_fast`] with the weight (`[in, out]`) and bias given as tensors.
    pub(crate) fn try_fast_with<B: Backend>(
        weight: Tensor<B, 2>,
        bias: Tensor<B, 1>,
        x: Tensor<B, 3>,
    ) -> Option<Tensor<B, 3>> {
        let id = TypeId::of::<B>();
        if (id != TypeId::of::<Flex>() && id != TypeId::of::<Ad>()) || x.dtype() != DType::F32 {
            return None;
        }
        let [batch, inputs, positions] = x.dims();
        let [weight_in, outputs] = weight.dims();
        if weight_in != inputs || bias.dims()[0] != outputs {
            return None;
        }
        let shape = PointwiseShape {
            batch,
            inputs,
            outputs,
            positions,
        };
        let bias = bias.into_primitive().tensor();
        let weight = weight.into_primitive().tensor();
        let x = x.into_primitive().tensor();
        let out: B::FloatTensorPrimitive = if id == TypeId::of::<Flex>() {
            same(forward_flex(&same(x)?, &same(weight)?, &same(bias)?, shape))?
        } else {
            same(forward_autodiff(
                same(x)?,
                same(weight)?,
                same(bias)?,
                shape,
            ))?
        };
        Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    fn forward_flex(
        x: &FlexTensor,
        weight: &FlexTensor,
        bias: &FlexTensor,
        shape: PointwiseShape,
    ) -> FlexTensor {
        let (x, weight, bias) = (
            x.to_contiguous(),
            weight.to_contiguous(),
            bias.to_contiguous(),
        );
        let y = pointwise_forward(
            x.storage::<f32>(),
            weight.storage::<f32>(),
            bias.storage::<f32>(),
            shape,
        );
        flex_tensor(y, vec![shape.batch, shape.outputs, shape.positions])
    }

    #[derive(Debug)]
    struct PointwiseBackward;

    impl Backward<Flex, 3> for PointwiseBackward {
        /// Input and weight as the checkpointer holds them, and the sizes.
        type State = (NodeId, NodeId, PointwiseShape);

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let [node_x, node_weight, node_bias] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            let (x_state, weight_state, shape) = ops.state;
            let x = checkpointer.retrieve_node_output::<FlexTensor>(x_state);
            let weight = checkpointer.retrieve_node_output::<FlexTensor>(weight_state);
            let (x, weight, dy) = (
                x.to_contiguous(),
                weight.to_contiguous(),
                grad.to_contiguous(),
            );
            let (dx, dweight, dbias) = pointwise_backward(
                x.storage::<f32>(),
                weight.storage::<f32>(),
                dy.storage::<f32>(),
                shape,
                node_x.is_some(),
            );
            if let (Some(node), Some(dx)) = (node_x, dx) {
                let dims = vec![shape.batch, shape.inputs, shape.positions];
                grads.register::<Flex>(node.id, flex_tensor(dx, dims));
            }
            if let Some(node) = node_weight {
                grads.register::<Flex>(
                    node.id,
                    flex_tensor(dweight, vec![shape.inputs, shape.outputs]),
                );
            }
            if let Some(node) = node_bias {
                grads.register::<Flex>(node.id, flex_tensor(dbias, vec![shape.outputs]));
            }
        }
    }

    fn forward_autodiff(
        x: AdTensor,
        weight: AdTensor,
        bias: AdTensor,
        shape: PointwiseShape,
    ) -> AdTensor {
        match PointwiseBackward
            .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone(), bias.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                let y = forward_flex(&x.primitive, &weight.primitive, &bias.primitive, shape);
                prep.finish((x_state, weight_state, shape), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward_flex(
                &x.primitive,
                &weight.primitive,
                &bias.primitive,
                shape,
            )),
        }
    }
}
