//! LayerNorm over the channel axis of an NCHW feature map as one fused pass forward and
//! one backward, on the CPU backends built on Flex.
//!
//! Written with tensor operations (`convnext::norm::channels_first`), the norm is about
//! ten passes over the map forward (two batched products for the statistics, a
//! subtraction, a square, a root, products to spread the statistics back, the scale
//! and the shift) and more backward, each a full-size buffer, and Flex runs its
//! elementwise operations on one thread. Here each sample's `[channels, positions]`
//! slab is normalised in one task, the samples in parallel, and the backward pass
//! reuses the per-position mean and reciprocal standard deviation saved forward.
//!
//! With `xhat = (x - mean) * rstd` and `g = dy * gamma` at each channel, the gradients
//! are the textbook ones: `dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))`,
//! `dgamma = sum over batch and positions of dy * xhat`, `dbeta = sum of dy`.
//!
//! [`try_fast`] takes this path on `Flex` and `Autodiff<Flex>` for f32 maps; other
//! backends use the tensor-operation version.

/// Sizes of a `[batch, channels, positions]` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelNormShape {
    pub batch: usize,
    pub channels: usize,
    pub positions: usize,
}

/// What the forward pass keeps for the backward one: per sample and position, the
/// channel mean and `1 / sqrt(var + eps)`, each `[batch * positions]`.
#[derive(Debug, Clone)]
pub struct ChannelNormStats {
    pub mean: Vec<f32>,
    pub rstd: Vec<f32>,
}

/// Runs `task` on every `(sample, slab)` of `out` (`slab` elements each), in parallel
/// where the crate may use threads.
fn per_sample<T: Send>(
    out: &mut [f32],
    slab: usize,
    task: impl Fn(usize, &mut [f32]) -> T + Sync + Send,
) -> Vec<T> {
    #[cfg(feature = "flex-kernels")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(slab.max(1))
            .enumerate()
            .map(|(n, o)| task(n, o))
            .collect()
    }
    #[cfg(not(feature = "flex-kernels"))]
    out.chunks_mut(slab.max(1))
        .enumerate()
        .map(|(n, o)| task(n, o))
        .collect()
}

/// The normalised, scaled and shifted map, and the statistics for the backward pass.
/// `x` is `[batch, channels, positions]` row-major; `gamma` and `beta` `[channels]`.
pub fn channel_norm_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    shape: ChannelNormShape,
) -> (Vec<f32>, ChannelNormStats) {
    let ChannelNormShape {
        batch,
        channels,
        positions,
    } = shape;
    let slab = channels * positions;
    assert_eq!(x.len(), batch * slab, "input size");
    assert_eq!(gamma.len(), channels, "scale size");
    assert_eq!(beta.len(), channels, "shift size");
    let mut y = vec![0.0f32; x.len()];
    let stats = per_sample(&mut y, slab, |n, y| {
        let x = &x[n * slab..(n + 1) * slab];
        let mut mean = vec![0.0f32; positions];
        let mut rstd = vec![0.0f32; positions];
        forward_slab(x, gamma, beta, eps, y, &mut mean, &mut rstd);
        (mean, rstd)
    });
    let mut all = ChannelNormStats {
        mean: Vec::with_capacity(batch * positions),
        rstd: Vec::with_capacity(batch * positions),
    };
    for (m, r) in stats {
        all.mean.extend(m);
        all.rstd.extend(r);
    }
    (y, all)
}

/// The gradients `(dx, dgamma, dbeta)` from the output gradient `dy`, with the
/// statistics the forward pass returned.
pub fn channel_norm_backward(
    x: &[f32],
    gamma: &[f32],
    dy: &[f32],
    stats: &ChannelNormStats,
    shape: ChannelNormShape,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let ChannelNormShape {
        batch,
        channels,
        positions,
    } = shape;
    let slab = channels * positions;
    assert_eq!(x.len(), batch * slab, "input size");
    assert_eq!(dy.len(), batch * slab, "output-gradient size");
    assert_eq!(stats.mean.len(), batch * positions, "statistics size");
    let mut dx = vec![0.0f32; x.len()];
    let inv_c = 1.0 / channels as f32;
    let partial = per_sample(&mut dx, slab, |n, dx| {
        let x = &x[n * slab..(n + 1) * slab];
        let dy = &dy[n * slab..(n + 1) * slab];
        let mean = &stats.mean[n * positions..(n + 1) * positions];
        let rstd = &stats.rstd[n * positions..(n + 1) * positions];
        let mut dgamma = vec![0.0f32; channels];
        let mut dbeta = vec![0.0f32; channels];
        // Per position: the sums over channels of g and of g * xhat.
        let mut sum_g = vec![0.0f32; positions];
        let mut sum_gx = vec![0.0f32; positions];
        backward_sums(
            x,
            dy,
            gamma,
            mean,
            rstd,
            &mut dgamma,
            &mut dbeta,
            &mut sum_g,
            &mut sum_gx,
        );
        // Their means over channels.
        sum_g.iter_mut().for_each(|v| *v *= inv_c);
        sum_gx.iter_mut().for_each(|v| *v *= inv_c);
        backward_dx(x, dy, gamma, mean, rstd, &sum_g, &sum_gx, dx);
        (dgamma, dbeta)
    });
    let mut dgamma = vec![0.0f32; channels];
    let mut dbeta = vec![0.0f32; channels];
    for (g, b) in partial {
        dgamma.iter_mut().zip(g).for_each(|(s, v)| *s += v);
        dbeta.iter_mut().zip(b).for_each(|(s, v)| *s += v);
    }
    (dx, dgamma, dbeta)
}

widest_simd! {
    /// One sample's norm: `x` and `y` `[channels, positions]`, `mean` and `rstd`
    /// `[positions]` filled for the backward pass.
    fn forward_slab(
        x: &[f32],
        gamma: &[f32],
        beta: &[f32],
        eps: f32,
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
    ) = forward_slab_loop;
}

#[inline(always)]
fn forward_slab_loop(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let positions = mean.len();
    let inv_c = 1.0 / gamma.len() as f32;
    for row in x.chunks_exact(positions) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m *= inv_c);
    // The variance from the centred values (two passes), as the composed version; the
    // sums are gathered in `rstd` and turned into reciprocal deviations after.
    for row in x.chunks_exact(positions) {
        for ((s, &v), &m) in rstd.iter_mut().zip(row).zip(mean.iter()) {
            let d = v - m;
            *s += d * d;
        }
    }
    rstd.iter_mut()
        .for_each(|s| *s = 1.0 / (*s * inv_c + eps).sqrt());
    for ((out_row, row), (&g, &b)) in y
        .chunks_exact_mut(positions)
        .zip(x.chunks_exact(positions))
        .zip(gamma.iter().zip(beta))
    {
        for (((o, &v), &m), &r) in out_row
            .iter_mut()
            .zip(row)
            .zip(mean.iter())
            .zip(rstd.iter())
        {
            *o = (v - m) * r * g + b;
        }
    }
}

/// Lanes of the per-channel sums in the backward pass: each channel's sums over
/// positions are kept in this many partial sums, so that the loop over positions runs
/// in vectors rather than as one chain of dependent additions.
const LANES: usize = 16;

widest_simd! {
    /// One sample's sums for the backward pass: per channel, `dgamma += sum_p dy * xhat`
    /// and `dbeta += sum_p dy`; per position, `sum_g = sum_c dy * gamma` and
    /// `sum_gx = sum_c dy * gamma * xhat`.
    #[allow(clippy::too_many_arguments)]
    fn backward_sums(
        x: &[f32],
        dy: &[f32],
        gamma: &[f32],
        mean: &[f32],
        rstd: &[f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
        sum_g: &mut [f32],
        sum_gx: &mut [f32],
    ) = backward_sums_loop;
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_sums_loop(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    sum_g: &mut [f32],
    sum_gx: &mut [f32],
) {
    let positions = mean.len();
    let body = positions - positions % LANES;
    for (c, (row, drow)) in x
        .chunks_exact(positions)
        .zip(dy.chunks_exact(positions))
        .enumerate()
    {
        let gc = gamma[c];
        let mut dg = [0.0f32; LANES];
        let mut db = [0.0f32; LANES];
        for (((((xs, ds), ms), rs), gs), gxs) in row[..body]
            .chunks_exact(LANES)
            .zip(drow[..body].chunks_exact(LANES))
            .zip(mean[..body].chunks_exact(LANES))
            .zip(rstd[..body].chunks_exact(LANES))
            .zip(sum_g[..body].chunks_exact_mut(LANES))
            .zip(sum_gx[..body].chunks_exact_mut(LANES))
        {
            for l in 0..LANES {
                let xhat = (xs[l] - ms[l]) * rs[l];
                let d = ds[l];
                dg[l] += d * xhat;
                db[l] += d;
                let g = d * gc;
                gs[l] += g;
                gxs[l] += g * xhat;
            }
        }
        let (mut dg, mut db) = (dg.iter().sum::<f32>(), db.iter().sum::<f32>());
        for p in body..positions {
            let xhat = (row[p] - mean[p]) * rstd[p];
            let d = drow[p];
            dg += d * xhat;
            db += d;
            let g = d * gc;
            sum_g[p] += g;
            sum_gx[p] += g * xhat;
        }
        dgamma[c] = dg;
        dbeta[c] = db;
    }
}

widest_simd! {
    /// One sample's input gradient from the per-position means over channels of g and
    /// of g * xhat (the sums of [`backward_sums`] divided by the channel count).
    #[allow(clippy::too_many_arguments)]
    fn backward_dx(
        x: &[f32],
        dy: &[f32],
        gamma: &[f32],
        mean: &[f32],
        rstd: &[f32],
        mean_g: &[f32],
        mean_gx: &[f32],
        dx: &mut [f32],
    ) = backward_dx_loop;
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_dx_loop(
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    mean_g: &[f32],
    mean_gx: &[f32],
    dx: &mut [f32],
) {
    let positions = mean.len();
    for (((out, row), drow), &gc) in dx
        .chunks_exact_mut(positions)
        .zip(x.chunks_exact(positions))
        .zip(dy.chunks_exact(positions))
        .zip(gamma)
    {
        for p in 0..positions {
            let xhat = (row[p] - mean[p]) * rstd[p];
            out[p] = rstd[p] * (drow[p] * gc - mean_g[p] - xhat * mean_gx[p]);
        }
    }
}

#[cfg(feature = "flex-kernels")]
pub(crate) use flex::try_fast;

#[cfg(feature = "flex-kernels")]
mod flex {
    use super::{channel_norm_backward, channel_norm_forward, ChannelNormShape, ChannelNormStats};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::autodiff::NodeId;
    use burn::backend::Flex;
    use burn::nn::LayerNorm;
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Tensor, TensorPrimitive};
    use burn_flex::FlexTensor;
    use std::any::TypeId;

    use crate::kernels::flex_types::{flex_tensor, same, Ad, AdTensor};

    /// `norm` over the channels of `[batch, channels, positions]` (see the module
    /// documentation); `None` where the backend is not Flex or `Autodiff<Flex>`, the
    /// map is not f32, or the norm has no shift.
    pub(crate) fn try_fast<B: Backend>(
        norm: &LayerNorm<B>,
        eps: f64,
        x: Tensor<B, 3>,
    ) -> Option<Tensor<B, 3>> {
        let id = TypeId::of::<B>();
        if (id != TypeId::of::<Flex>() && id != TypeId::of::<Ad>()) || x.dtype() != DType::F32 {
            return None;
        }
        let [batch, channels, positions] = x.dims();
        let shape = ChannelNormShape {
            batch,
            channels,
            positions,
        };
        let beta = norm.beta.as_ref()?.val().into_primitive().tensor();
        let gamma = norm.gamma.val().into_primitive().tensor();
        let x = x.into_primitive().tensor();
        let out: B::FloatTensorPrimitive = if id == TypeId::of::<Flex>() {
            let (y, _) = forward_flex(&same(x)?, &same(gamma)?, &same(beta)?, eps, shape);
            same(y)?
        } else {
            same(forward_autodiff(
                same(x)?,
                same(gamma)?,
                same(beta)?,
                eps,
                shape,
            ))?
        };
        Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    fn forward_flex(
        x: &FlexTensor,
        gamma: &FlexTensor,
        beta: &FlexTensor,
        eps: f64,
        shape: ChannelNormShape,
    ) -> (FlexTensor, ChannelNormStats) {
        let (x, gamma, beta) = (
            x.to_contiguous(),
            gamma.to_contiguous(),
            beta.to_contiguous(),
        );
        let (y, stats) = channel_norm_forward(
            x.storage::<f32>(),
            gamma.storage::<f32>(),
            beta.storage::<f32>(),
            eps as f32,
            shape,
        );
        let dims = vec![shape.batch, shape.channels, shape.positions];
        (flex_tensor(y, dims), stats)
    }

    #[derive(Debug)]
    struct ChannelNormBackward;

    impl Backward<Flex, 3> for ChannelNormBackward {
        /// Input and scale as the checkpointer holds them, the forward statistics and
        /// the sizes.
        type State = (NodeId, NodeId, ChannelNormStats, ChannelNormShape);

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let [node_x, node_gamma, node_beta] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            let (x_state, gamma_state, stats, shape) = ops.state;
            let x = checkpointer.retrieve_node_output::<FlexTensor>(x_state);
            let gamma = checkpointer.retrieve_node_output::<FlexTensor>(gamma_state);
            let (x, gamma, dy) = (
                x.to_contiguous(),
                gamma.to_contiguous(),
                grad.to_contiguous(),
            );
            let (dx, dgamma, dbeta) = channel_norm_backward(
                x.storage::<f32>(),
                gamma.storage::<f32>(),
                dy.storage::<f32>(),
                &stats,
                shape,
            );
            if let Some(node) = node_x {
                let dims = vec![shape.batch, shape.channels, shape.positions];
                grads.register::<Flex>(node.id, flex_tensor(dx, dims));
            }
            if let Some(node) = node_gamma {
                grads.register::<Flex>(node.id, flex_tensor(dgamma, vec![shape.channels]));
            }
            if let Some(node) = node_beta {
                grads.register::<Flex>(node.id, flex_tensor(dbeta, vec![shape.channels]));
            }
        }
    }

    fn forward_autodiff(
        x: AdTensor,
        gamma: AdTensor,
        beta: AdTensor,
        eps: f64,
        shape: ChannelNormShape,
    ) -> AdTensor {
        match ChannelNormBackward
            .prepare::<NoCheckpointing>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma_state = prep.checkpoint(&gamma);
                let (y, stats) =
                    forward_flex(&x.primitive, &gamma.primitive, &beta.primitive, eps, shape);
                prep.finish((x_state, gamma_state, stats, shape), y)
            }
            OpsKind::UnTracked(prep) => {
                let (y, _) =
                    forward_flex(&x.primitive, &gamma.primitive, &beta.primitive, eps, shape);
                prep.finish(y)
            }
        }
    }
}
