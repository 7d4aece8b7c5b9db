//! Grouped "same" convolutions (stride 1, padding k/2, odd square kernel, with a bias):
//! ConvNeXt's 7x7 depthwise convolution and the heads' grouped 3x3 spatial-attention
//! convolutions, with a faster backward pass on the CPU training backend,
//! `Autodiff<Flex>`.
//!
//! Burn's autodiff differentiates a grouped convolution with two generic helpers: the
//! input gradient as a transposed convolution, which Flex runs one (image, group) pair
//! at a time on one thread with a scatter, and the weight gradient as one full
//! convolution per group, each followed by a copy of the whole weight gradient. For a
//! depthwise layer that is C convolutions and C copies. The input gradient alone was
//! 13 % of a training step in a profile (BENCHMARKS.md).
//!
//! For stride 1 and padding k/2 both gradients have simpler forms:
//! - input gradient: a grouped convolution of the output gradient with every filter
//!   turned by 180 degrees and its input and output channels exchanged within the
//!   group, which Flex runs on its multi-threaded forward paths (depthwise layers use
//!   [`super::depthwise`] instead);
//! - weight gradient: for each filter, the correlation of the input planes with the
//!   output-gradient plane over the k x k offsets, summed over the batch: one dot
//!   product per offset here (see [`grouped_conv_weight_grad`]), parallel over output
//!   channels, or, for groups of 8 inputs or more, one matrix product per group over
//!   its unfolded inputs; the bias gradient falls out of the same loop.
//!
//! [`grouped_conv_same`] takes this path when the backend is `Autodiff<Flex>` (a
//! run-time type check, so the model stays generic over `B: Backend`) and the layer
//! has such a shape. For depthwise layers the forward convolution and the input
//! gradient are [`super::depthwise`]'s kernel, on `Flex` (inference) as well; grouped
//! layers with at least 8 channels per group (the heads' at their reference width) are
//! [`super::grouped`]'s, forward and input gradient, and the others keep Flex's own
//! convolution.
//!
//! The GPU backends (CubeCL: CUDA, wgpu) have the same problem in a worse form: their
//! grouped weight gradient launches one convolution, one slice and one slice-assign per
//! group, so a depthwise layer of 512 channels is over 1,500 kernel launches, and a
//! ConvNeXt-Base training step at 384 px took about 6 s on an H200 (BENCHMARKS.md).
//! [`gpu::use_for`] (the trainer calls it for each GPU backend it trains on) gives
//! `Autodiff<I>` a backward pass made of three convolutions that these backends run as
//! single grouped kernels:
//! - the input gradient as above;
//! - the weight gradient as one grouped convolution in which the output gradient is
//!   the filter: image i of its input holds, for every group g and image n, channel
//!   `g * in_per_group + i` of image n, so one output channel sums over the batch;
//! - the bias gradient as a sum.
//!
//! Every other backend and shape goes through `Conv2d::forward`.

use burn::nn::conv::Conv2d;
use burn::tensor::{backend::Backend, Tensor};

/// `conv.forward(x)`, with the fast backward pass on `Autodiff<Flex>` for grouped
/// "same" convolutions (see the module documentation).
pub fn grouped_conv_same<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "flex-kernels")]
    if let Some(out) = flex::try_fast(conv, x.clone()) {
        return out;
    }
    #[cfg(feature = "autodiff-kernels")]
    if let Some(fast) = gpu::registered::<B>() {
        if let Some(out) = fast(conv, x.clone()) {
            return out;
        }
    }
    conv.forward(x)
}

/// The sizes of the call if the layer is one the fast paths handle: odd square kernel,
/// stride 1, no dilation, padding k/2 on every side, a bias, f32.
#[cfg(feature = "autodiff-kernels")]
fn fits<B: Backend>(conv: &Conv2d<B>, x: &Tensor<B, 4>) -> Option<GroupedConvShape> {
    use burn::nn::PaddingConfig2d;
    use burn::tensor::DType;
    let [channels_out, in_per_group, kh, kw] = conv.weight.dims();
    let [batch, channels_in, height, width] = x.dims();
    let pad = kh / 2;
    let padding_ok = matches!(
        conv.padding,
        PaddingConfig2d::Explicit(a, b, c, d) if [a, b, c, d] == [pad; 4]
    );
    let ok = conv.groups > 0
        && in_per_group * conv.groups == channels_in
        && channels_out % conv.groups == 0
        && kh == kw
        && kh % 2 == 1
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && padding_ok
        && conv.bias.is_some()
        && x.dtype() == DType::F32;
    ok.then_some(GroupedConvShape {
        batch,
        channels_in,
        channels_out,
        groups: conv.groups,
        height,
        width,
        kernel: kh,
    })
}

/// Stride 1, padding k/2, the layer's groups.
#[cfg(feature = "autodiff-kernels")]
fn same_options(shape: &GroupedConvShape) -> burn::tensor::ops::ConvOptions<2> {
    let pad = shape.kernel / 2;
    burn::tensor::ops::ConvOptions::new([1, 1], [pad, pad], [1, 1], shape.groups)
}

/// The input gradient on any backend: the output gradient convolved with every filter
/// turned by 180 degrees, its input and output channels exchanged within the group.
#[cfg(feature = "autodiff-kernels")]
fn input_grad<I: Backend>(
    grad: I::FloatTensorPrimitive,
    weight: I::FloatTensorPrimitive,
    shape: GroupedConvShape,
) -> I::FloatTensorPrimitive {
    I::conv2d(
        grad,
        turned_filters::<I>(weight, shape),
        None,
        same_options(&shape),
    )
}

/// The filters of [`input_grad`]'s convolution: filter (o, i) of group g becomes filter
/// (i, o) of the same group, turned by 180 degrees, `[channels_in, out/g, k, k]`.
#[cfg(feature = "autodiff-kernels")]
fn turned_filters<I: Backend>(
    weight: I::FloatTensorPrimitive,
    shape: GroupedConvShape,
) -> I::FloatTensorPrimitive {
    use burn::tensor::Shape;
    // [groups, out/g, in/g, k, k] -> [groups, in/g, out/g, k, k] -> [channels_in, out/g,
    // k, k].
    let (in_g, out_g) = (
        shape.channels_in / shape.groups,
        shape.channels_out / shape.groups,
    );
    let k = shape.kernel;
    let exchanged = if in_g == 1 && out_g == 1 {
        weight
    } else {
        let w = I::float_reshape(weight, Shape::new([shape.groups, out_g, in_g, k, k]));
        let w = I::float_swap_dims(w, 1, 2);
        I::float_reshape(w, Shape::new([shape.channels_in, out_g, k, k]))
    };
    I::float_flip(exchanged, &[2, 3])
}

/// A tensor of `Autodiff<I>` as its autodiff node plus the inner backend's tensor.
#[cfg(feature = "autodiff-kernels")]
type AutodiffPrimitive<I> =
    <burn::backend::Autodiff<I> as burn::tensor::backend::BackendTypes>::FloatTensorPrimitive;

/// The forward convolution `conv(x, weight, bias, shape)`, recorded for autodiff with
/// `step` as its backward pass (Flex's and the GPU backends' paths differ in the
/// backward step, and in the forward convolution for depthwise layers): the input and
/// weight are kept for the backward pass together with the sizes.
#[cfg(feature = "autodiff-kernels")]
fn recorded_conv<I: Backend, S>(
    step: S,
    conv: fn(
        I::FloatTensorPrimitive,
        I::FloatTensorPrimitive,
        I::FloatTensorPrimitive,
        GroupedConvShape,
    ) -> I::FloatTensorPrimitive,
    x: AutodiffPrimitive<I>,
    weight: AutodiffPrimitive<I>,
    bias: AutodiffPrimitive<I>,
    shape: GroupedConvShape,
) -> AutodiffPrimitive<I>
where
    S: burn::backend::autodiff::ops::Backward<
        I,
        3,
        State = (
            burn::backend::autodiff::NodeId,
            burn::backend::autodiff::NodeId,
            GroupedConvShape,
        ),
    >,
{
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::ops::OpsKind;
    match step
        .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone(), bias.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let weight_state = prep.checkpoint(&weight);
            let out = conv(x.primitive, weight.primitive, bias.primitive, shape);
            prep.finish((x_state, weight_state, shape), out)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(conv(x.primitive, weight.primitive, bias.primitive, shape))
        }
    }
}

/// The backend's own convolution with stride 1, padding k/2 and the layer's groups.
#[cfg(feature = "autodiff-kernels")]
fn stock_conv<I: Backend>(
    x: I::FloatTensorPrimitive,
    weight: I::FloatTensorPrimitive,
    bias: I::FloatTensorPrimitive,
    shape: GroupedConvShape,
) -> I::FloatTensorPrimitive {
    I::conv2d(x, weight, Some(bias), same_options(&shape))
}

/// Sizes of a grouped convolution with stride 1 and padding `kernel / 2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupedConvShape {
    pub batch: usize,
    pub channels_in: usize,
    pub channels_out: usize,
    pub groups: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
}

/// The weight and bias gradients of a grouped convolution with stride 1 and padding
/// `kernel / 2`, from plain row-major buffers: `x` is `[batch, channels_in, height,
/// width]`, `grad` is `[batch, channels_out, height, width]`; the result is
/// (`[channels_out, channels_in / groups, kernel, kernel]`, `[channels_out]`).
///
/// Free of any backend, so it is tested against a sum written out term by term and
/// against Burn's stock gradients.
pub fn grouped_conv_weight_grad(
    x: &[f32],
    grad: &[f32],
    shape: GroupedConvShape,
) -> (Vec<f32>, Vec<f32>) {
    let GroupedConvShape {
        batch,
        channels_in,
        channels_out,
        groups,
        height,
        width,
        kernel,
    } = shape;
    let plane = height * width;
    assert_eq!(x.len(), batch * channels_in * plane, "input size");
    assert_eq!(
        grad.len(),
        batch * channels_out * plane,
        "output-gradient size"
    );
    assert!(kernel % 2 == 1, "odd kernel");
    assert!(
        groups > 0 && channels_in % groups == 0 && channels_out % groups == 0,
        "groups must divide both channel counts"
    );
    let (in_per_group, out_per_group) = (channels_in / groups, channels_out / groups);
    #[cfg(feature = "flex-kernels")]
    if in_per_group >= PRODUCT_INPUTS_PER_GROUP {
        return weight_grad_by_products(x, grad, shape);
    }
    let filter = in_per_group * kernel * kernel;
    let mut weight_grad = vec![0.0f32; channels_out * filter];
    let mut bias_grad = vec![0.0f32; channels_out];

    // Per filter and offset (ky, kx), the weight gradient is one dot product over the
    // whole plane: the output gradient laid out with the input's padded row stride
    // (zeros in the extra columns) against the zero-bordered input plane shifted by
    // (ky, kx). The zero columns cancel the terms that would wrap into the next row,
    // so each offset is a single long, vectorisable sum instead of a short loop per
    // output position.
    let one_filter = |o: usize, w_out: &mut [f32], b_out: &mut f32| {
        let pad = kernel / 2;
        let padded_w = width + 2 * pad;
        let span = height * padded_w;
        // The last offset (2 pad, 2 pad) reads 2 pad elements past the bordered plane.
        let mut padded = vec![0.0f32; (height + 2 * pad) * padded_w + 2 * pad];
        let mut g_wide = vec![0.0f32; span];
        let first_in = (o / out_per_group) * in_per_group;
        let mut bias = 0.0f32;
        for n in 0..batch {
            let g_start = (n * channels_out + o) * plane;
            let g_plane = &grad[g_start..g_start + plane];
            bias += g_plane.iter().sum::<f32>();
            for y in 0..height {
                g_wide[y * padded_w..y * padded_w + width]
                    .copy_from_slice(&g_plane[y * width..(y + 1) * width]);
            }
            for i in 0..in_per_group {
                let x_start = (n * channels_in + first_in + i) * plane;
                let x_plane = &x[x_start..x_start + plane];
                for y in 0..height {
                    let row = (y + pad) * padded_w + pad;
                    padded[row..row + width].copy_from_slice(&x_plane[y * width..(y + 1) * width]);
                }
                let w_i = &mut w_out[i * kernel * kernel..(i + 1) * kernel * kernel];
                add_taps(&g_wide, &padded, padded_w, kernel, w_i);
            }
        }
        *b_out = bias;
    };

    #[cfg(feature = "flex-kernels")]
    {
        use rayon::prelude::*;
        weight_grad
            .par_chunks_mut(filter)
            .zip(bias_grad.par_iter_mut())
            .enumerate()
            .for_each(|(o, (w_out, b_out))| one_filter(o, w_out, b_out));
    }
    #[cfg(not(feature = "flex-kernels"))]
    for (o, (w_out, b_out)) in weight_grad
        .chunks_mut(filter)
        .zip(bias_grad.iter_mut())
        .enumerate()
    {
        one_filter(o, w_out, b_out);
    }
    (weight_grad, bias_grad)
}

/// Groups with at least this many inputs take [`weight_grad_by_products`]. The heads'
/// 3x3 convolutions (16 inputs a group, 7 x 7 planes at 224 px) are what it is for;
/// the bound itself was chosen, not measured.
#[cfg(feature = "flex-kernels")]
const PRODUCT_INPUTS_PER_GROUP: usize = 8;

/// [`grouped_conv_weight_grad`] as one matrix product per group: the group's output
/// gradients `[outputs, batch * plane]` times its inputs unfolded into one row per
/// (input, ky, kx), `[inputs * kernel^2, batch * plane]`, transposed. The per-offset
/// dot products of the other path suit long planes; on the heads' small planes each of
/// them is a few dozen products with a horizontal sum at the end, and a group's
/// filters share every unfolded row here.
#[cfg(feature = "flex-kernels")]
fn weight_grad_by_products(
    x: &[f32],
    grad: &[f32],
    shape: GroupedConvShape,
) -> (Vec<f32>, Vec<f32>) {
    use super::pointwise::{product, Operand};
    use rayon::prelude::*;
    let GroupedConvShape {
        batch,
        channels_in,
        channels_out,
        groups,
        height,
        width,
        kernel,
    } = shape;
    let plane = height * width;
    let (in_per_group, out_per_group) = (channels_in / groups, channels_out / groups);
    let taps = kernel * kernel;
    let filter = in_per_group * taps;
    let columns = batch * plane;
    let pad = kernel / 2;
    let mut weight_grad = vec![0.0f32; channels_out * filter];
    let mut bias_grad = vec![0.0f32; channels_out];
    weight_grad
        .par_chunks_mut(out_per_group * filter)
        .zip(bias_grad.par_chunks_mut(out_per_group))
        .enumerate()
        .for_each(|(group, (w_out, b_out))| {
            // Row (i, ky, kx), column (n, y, x): input i of the group at (y + ky - pad,
            // x + kx - pad), zero outside the plane.
            let mut unfolded = vec![0.0f32; filter * columns];
            for i in 0..in_per_group {
                for n in 0..batch {
                    let start = (n * channels_in + group * in_per_group + i) * plane;
                    let x_plane = &x[start..start + plane];
                    for ky in 0..kernel {
                        for kx in 0..kernel {
                            let row = (i * taps + ky * kernel + kx) * columns + n * plane;
                            let dst = &mut unfolded[row..row + plane];
                            for y in 0..height {
                                let Some(iy) = (y + ky).checked_sub(pad).filter(|&v| v < height)
                                else {
                                    continue;
                                };
                                // Output columns whose input column x + kx - pad exists.
                                let lo = pad.saturating_sub(kx);
                                let hi = (width + pad).saturating_sub(kx).min(width);
                                if lo < hi {
                                    let src = iy * width + lo + kx - pad;
                                    dst[y * width + lo..y * width + hi]
                                        .copy_from_slice(&x_plane[src..src + hi - lo]);
                                }
                            }
                        }
                    }
                }
            }
            // The group's output gradients, one row per output over (n, y, x).
            let mut g_rows = vec![0.0f32; out_per_group * columns];
            for (o, (row, b)) in g_rows.chunks_exact_mut(columns).zip(b_out).enumerate() {
                for n in 0..batch {
                    let start = (n * channels_out + group * out_per_group + o) * plane;
                    row[n * plane..(n + 1) * plane].copy_from_slice(&grad[start..start + plane]);
                }
                *b = row.iter().sum();
            }
            product(
                [out_per_group, filter, columns],
                w_out,
                filter as isize,
                Operand {
                    data: &g_rows,
                    row: columns as isize,
                    col: 1,
                },
                Operand {
                    data: &unfolded,
                    row: 1,
                    col: columns as isize,
                },
                false,
                gemm::Parallelism::None,
            );
        });
    (weight_grad, bias_grad)
}

widest_simd! {
    /// Adds to `w[ky * kernel + kx]`, for every tap, the dot product of `g` with
    /// `padded` shifted by `(ky, kx)` at row stride `padded_w`.
    fn add_taps(g: &[f32], padded: &[f32], padded_w: usize, kernel: usize, w: &mut [f32]) =
        add_taps_body;
}

/// The usual kernel sizes get a copy with the row of taps unrolled; others take one
/// dot product per tap.
#[inline(always)]
fn add_taps_body(g: &[f32], padded: &[f32], padded_w: usize, kernel: usize, w: &mut [f32]) {
    match kernel {
        3 => tap_rows::<3>(g, padded, padded_w, w),
        5 => tap_rows::<5>(g, padded, padded_w, w),
        7 => tap_rows::<7>(g, padded, padded_w, w),
        _ => {
            let span = g.len();
            for ky in 0..kernel {
                for kx in 0..kernel {
                    let shift = ky * padded_w + kx;
                    w[ky * kernel + kx] += dot(g, &padded[shift..shift + span]);
                }
            }
        }
    }
}

/// One pass over `g` per row of taps: each block of eight gradient values is loaded
/// once and multiplied with the K shifted input blocks, into K sets of eight lanes.
/// Every tap sums its lanes and tail exactly as [`dot`] would, so the result does not
/// depend on which path ran.
#[inline(always)]
fn tap_rows<const K: usize>(g: &[f32], padded: &[f32], padded_w: usize, w: &mut [f32]) {
    let span = g.len();
    let full = span - span % 8;
    assert!(w.len() == K * K && padded.len() >= (K - 1) * (padded_w + 1) + span);
    for ky in 0..K {
        let row = &padded[ky * padded_w..ky * padded_w + span + K - 1];
        let mut lanes = [[0.0f32; 8]; K];
        for j in (0..full).step_by(8) {
            let gj: &[f32; 8] = g[j..j + 8].try_into().unwrap();
            for (kx, acc) in lanes.iter_mut().enumerate() {
                let xj: &[f32; 8] = row[j + kx..j + kx + 8].try_into().unwrap();
                for l in 0..8 {
                    acc[l] += gj[l] * xj[l];
                }
            }
        }
        for (kx, acc) in lanes.iter().enumerate() {
            let tail: f32 = g[full..]
                .iter()
                .zip(&row[full + kx..span + kx])
                .map(|(p, q)| p * q)
                .sum();
            w[ky * K + kx] += acc.iter().sum::<f32>() + tail;
        }
    }
}

/// Dot product with eight independent partial sums, so the compiler can keep them in
/// vector registers (a single running sum must be added in order).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut lanes = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(p, q)| p * q)
        .sum();
    for (p, q) in a_chunks.zip(b_chunks) {
        for l in 0..8 {
            lanes[l] += p[l] * q[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(feature = "flex-kernels")]
mod flex {
    use super::{
        fits, grouped_conv_weight_grad, input_grad, recorded_conv, stock_conv, turned_filters,
        GroupedConvShape,
    };
    use crate::kernels::depthwise::{depthwise_same, DepthwiseShape};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops};
    use burn::backend::autodiff::NodeId;
    use burn::backend::Flex;
    use burn::nn::conv::Conv2d;
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorData, TensorPrimitive};
    use burn_flex::FlexTensor;
    use std::any::TypeId;

    use crate::kernels::flex_types::{same, Ad, AdTensor};
    use crate::kernels::grouped;

    pub(super) fn try_fast<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Option<Tensor<B, 4>> {
        if TypeId::of::<B>() == TypeId::of::<Flex>() {
            // Inference: only the depthwise and grouped forward passes differ from the
            // stock path.
            let shape = fits(conv, &x).filter(|s| is_depthwise(s) || grouped::takes(s))?;
            let x: FlexTensor = same(x.into_primitive().tensor())?;
            let weight: FlexTensor = same(conv.weight.val().into_primitive().tensor())?;
            let bias: FlexTensor = same(conv.bias.as_ref()?.val().into_primitive().tensor())?;
            let out: B::FloatTensorPrimitive = same(forward_flex(x, weight, bias, shape))?;
            return Some(Tensor::from_primitive(TensorPrimitive::Float(out)));
        }
        if TypeId::of::<B>() != TypeId::of::<Ad>() {
            return None;
        }
        let shape = fits(conv, &x)?;
        let x: AdTensor = same(x.into_primitive().tensor())?;
        let weight: AdTensor = same(conv.weight.val().into_primitive().tensor())?;
        let bias: AdTensor = same(conv.bias.as_ref()?.val().into_primitive().tensor())?;
        let out = forward(x, weight, bias, shape);
        let out: B::FloatTensorPrimitive = same(out)?;
        Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    #[derive(Debug)]
    struct GroupedConvBackward;

    impl Backward<Flex, 3> for GroupedConvBackward {
        /// Input and weight as the checkpointer holds them, and the sizes of the call.
        type State = (NodeId, NodeId, GroupedConvShape);

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

            if node_weight.is_some() || node_bias.is_some() {
                let x = x.to_contiguous();
                let g = grad.to_contiguous();
                let (dw, db) =
                    grouped_conv_weight_grad(x.storage::<f32>(), g.storage::<f32>(), shape);
                if let Some(node) = node_weight {
                    let dims = [
                        shape.channels_out,
                        shape.channels_in / shape.groups,
                        shape.kernel,
                        shape.kernel,
                    ];
                    let data = TensorData::new(dw, dims);
                    grads.register::<Flex>(node.id, FlexTensor::from_data(data));
                }
                if let Some(node) = node_bias {
                    let data = TensorData::new(db, [shape.channels_out]);
                    grads.register::<Flex>(node.id, FlexTensor::from_data(data));
                }
            }
            if let Some(node) = node_x {
                let dx = if is_depthwise(&shape) {
                    depthwise(grad, weight, None, true, shape)
                } else {
                    grouped_input_grad(grad, weight, shape)
                };
                grads.register::<Flex>(node.id, dx);
            }
        }
    }

    fn forward(x: AdTensor, weight: AdTensor, bias: AdTensor, shape: GroupedConvShape) -> AdTensor {
        recorded_conv::<Flex, _>(GroupedConvBackward, forward_flex, x, weight, bias, shape)
    }

    /// [`input_grad`] on Flex: its convolution (the output gradient with the turned
    /// filters, `channels_in` outputs) by the grouped kernel where that takes it.
    fn grouped_input_grad(
        grad: FlexTensor,
        weight: FlexTensor,
        shape: GroupedConvShape,
    ) -> FlexTensor {
        let back = GroupedConvShape {
            channels_in: shape.channels_out,
            channels_out: shape.channels_in,
            ..shape
        };
        if !grouped::takes(&back) {
            return input_grad::<Flex>(grad, weight, shape);
        }
        let turned = turned_filters::<Flex>(weight, shape).to_contiguous();
        let grad = grad.to_contiguous();
        let zeros = vec![0.0f32; back.channels_out];
        let dx =
            grouped::grouped_same(grad.storage::<f32>(), turned.storage::<f32>(), &zeros, back);
        let dims = [shape.batch, shape.channels_in, shape.height, shape.width];
        FlexTensor::from_data(TensorData::new(dx, dims))
    }

    /// One filter per channel, each reading its own channel.
    fn is_depthwise(shape: &GroupedConvShape) -> bool {
        shape.groups == shape.channels_in && shape.groups == shape.channels_out
    }

    /// The forward convolution: the depthwise kernel for depthwise layers, Flex's own
    /// convolution for the others.
    fn forward_flex(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        shape: GroupedConvShape,
    ) -> FlexTensor {
        if is_depthwise(&shape) {
            depthwise(x, weight, Some(bias), false, shape)
        } else if grouped::takes(&shape) {
            let (x, weight, bias) = (
                x.to_contiguous(),
                weight.to_contiguous(),
                bias.to_contiguous(),
            );
            let out = grouped::grouped_same(
                x.storage::<f32>(),
                weight.storage::<f32>(),
                bias.storage::<f32>(),
                shape,
            );
            let dims = [shape.batch, shape.channels_out, shape.height, shape.width];
            FlexTensor::from_data(TensorData::new(out, dims))
        } else {
            stock_conv::<Flex>(x, weight, bias, shape)
        }
    }

    /// [`depthwise_same`] on Flex tensors (`turned`: the filters turned by 180
    /// degrees, which gives the input gradient from the output gradient).
    fn depthwise(
        x: FlexTensor,
        weight: FlexTensor,
        bias: Option<FlexTensor>,
        turned: bool,
        shape: GroupedConvShape,
    ) -> FlexTensor {
        let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
        let bias = bias.map(|b| b.to_contiguous());
        let dw_shape = DepthwiseShape {
            batch: shape.batch,
            channels: shape.channels_in,
            height: shape.height,
            width: shape.width,
            kernel: shape.kernel,
        };
        let out = depthwise_same(
            x.storage::<f32>(),
            weight.storage::<f32>(),
            bias.as_ref().map(|b| b.storage::<f32>()),
            turned,
            dw_shape,
        );
        let dims = [shape.batch, shape.channels_in, shape.height, shape.width];
        FlexTensor::from_data(TensorData::new(out, dims))
    }
}

/// The backward pass of [`grouped_conv_same`] for `Autodiff<I>` over any backend `I`,
/// written with the backend's own convolutions (see the module documentation). Meant
/// for the GPU backends, whose stock grouped weight gradient runs group by group; the
/// trainer turns it on per backend with [`gpu::use_for`].
#[cfg(feature = "autodiff-kernels")]
pub mod gpu {
    use super::{fits, input_grad, recorded_conv, stock_conv, GroupedConvShape};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops};
    use burn::backend::autodiff::NodeId;
    use burn::backend::Autodiff;
    use burn::nn::conv::Conv2d;
    use burn::tensor::backend::Backend;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::{Shape, Tensor, TensorPrimitive};
    use std::any::{Any, TypeId};
    use std::sync::Mutex;

    /// The fast path for one backend `B`, or `None` when the layer does not fit it.
    pub(super) type Fast<B> = fn(&Conv2d<B>, Tensor<B, 4>) -> Option<Tensor<B, 4>>;

    /// The backends [`use_for`] was called for, each with its `Fast<Autodiff<I>>`.
    static REGISTERED: Mutex<Vec<(TypeId, Box<dyn Any + Send + Sync>)>> = Mutex::new(Vec::new());

    /// From now on, [`super::grouped_conv_same`] on `Autodiff<I>` uses this module's
    /// backward pass. Calling it again for the same `I` changes nothing.
    pub fn use_for<I: Backend>() {
        let id = TypeId::of::<Autodiff<I>>();
        let fast: Fast<Autodiff<I>> = grouped_conv_same::<I>;
        let mut table = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
        if !table.iter().any(|(t, _)| *t == id) {
            table.push((id, Box::new(fast)));
        }
    }

    /// The fast path registered for `B`, if any.
    pub(super) fn registered<B: Backend>() -> Option<Fast<B>> {
        let table = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
        table
            .iter()
            .find(|(t, _)| *t == TypeId::of::<B>())
            .and_then(|(_, f)| f.downcast_ref::<Fast<B>>().copied())
    }

    /// `conv.forward(x)` on `Autodiff<I>` with this module's backward pass, or `None`
    /// when the layer is not a grouped "same" convolution with a bias. Public so the
    /// tests can run it on any backend, registered or not.
    pub fn grouped_conv_same<I: Backend>(
        conv: &Conv2d<Autodiff<I>>,
        x: Tensor<Autodiff<I>, 4>,
    ) -> Option<Tensor<Autodiff<I>, 4>> {
        let shape = fits(conv, &x)?;
        let bias = conv.bias.as_ref()?.val().into_primitive().tensor();
        let weight = conv.weight.val().into_primitive().tensor();
        let x = x.into_primitive().tensor();
        let out =
            recorded_conv::<I, _>(GroupedConvBackward, stock_conv::<I>, x, weight, bias, shape);
        Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    /// The weight gradient `[channels_out, in/g, k, k]` as one grouped convolution:
    /// the input regrouped to `[in/g, groups * batch, h, w]` (channel `g * batch + n`
    /// of image i is channel `g * in/g + i` of image n), the output gradient as the
    /// filters `[channels_out, batch, h, w]`, padding k/2, so output `[i, o, ky, kx]`
    /// is the sum over the batch and the plane of input times output gradient at offset
    /// (ky, kx).
    pub(super) fn weight_grad<I: Backend>(
        x: I::FloatTensorPrimitive,
        grad: I::FloatTensorPrimitive,
        shape: GroupedConvShape,
    ) -> I::FloatTensorPrimitive {
        let GroupedConvShape {
            batch,
            channels_in,
            groups,
            height,
            width,
            kernel,
            ..
        } = shape;
        let in_g = channels_in / groups;
        let x = I::float_reshape(x, Shape::new([batch, groups, in_g, height, width]));
        let x = I::float_permute(x, &[2, 1, 0, 3, 4]);
        let x = I::float_reshape(x, Shape::new([in_g, groups * batch, height, width]));
        let filters = I::float_swap_dims(grad, 0, 1);
        let pad = kernel / 2;
        let options = ConvOptions::new([1, 1], [pad, pad], [1, 1], groups);
        let per_image = I::conv2d(x, filters, None, options);
        I::float_swap_dims(per_image, 0, 1)
    }

    /// The bias gradient: the output gradient summed over batch and plane.
    fn bias_grad<I: Backend>(
        grad: I::FloatTensorPrimitive,
        shape: GroupedConvShape,
    ) -> I::FloatTensorPrimitive {
        let c = shape.channels_out;
        let per_channel = I::float_sum_dim(grad, 0);
        let per_channel =
            I::float_reshape(per_channel, Shape::new([c, shape.height * shape.width]));
        I::float_reshape(I::float_sum_dim(per_channel, 1), Shape::new([c]))
    }

    #[derive(Debug)]
    struct GroupedConvBackward;

    impl<I: Backend> Backward<I, 3> for GroupedConvBackward {
        /// Input and weight as the checkpointer holds them, and the sizes of the call.
        type State = (NodeId, NodeId, GroupedConvShape);

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let [node_x, node_weight, node_bias] = ops.parents;
            let grad = grads.consume::<I>(&ops.node);
            let (x_state, weight_state, shape) = ops.state;
            let x = checkpointer.retrieve_node_output::<I::FloatTensorPrimitive>(x_state);
            let weight = checkpointer.retrieve_node_output::<I::FloatTensorPrimitive>(weight_state);
            if let Some(node) = node_bias {
                grads.register::<I>(node.id, bias_grad::<I>(grad.clone(), shape));
            }
            if let Some(node) = node_weight {
                grads.register::<I>(node.id, weight_grad::<I>(x, grad.clone(), shape));
            }
            if let Some(node) = node_x {
                grads.register::<I>(node.id, input_grad::<I>(grad, weight, shape));
            }
        }
    }
}
