//! GELU (the exact, erf-based form ConvNeXt uses) as one fused pass, forward and
//! backward, on the CPU backends built on Flex.
//!
//! Burn composes GELU from elementwise tensor operations (a scale, erf, an add and two
//! products), and its autodiff records each of them: five passes over the tensor
//! forward and more backward, each with its own buffer, all on one thread, with a
//! scalar `erff` per element. In a profile of the default job's training step the erf
//! alone was 6 % of the time (BENCHMARKS.md). Here the forward value and the gradient
//! are each one pass, split over threads. While training, the forward pass also
//! computes each element's slope (it shares erf's exponential) and the graph keeps the
//! slopes instead of the input, so the backward pass is a product per element.
//!
//! erf comes from the rational approximation of Abramowitz and Stegun (formula
//! 7.1.26), whose absolute error is below 1.5e-7 over the whole real line in exact
//! arithmetic; evaluated in f32 it stays within 5e-7 (`tests/kernels.rs`), a few
//! units in the last place of the activations a network produces.
//!
//! The exponentials inside erf and the normal density are [`exp_neg`], written in
//! plain arithmetic (no call into libm) so that the loops vectorise; on x86-64 CPUs
//! with AVX2 and FMA, or AVX-512F, the loops run in a copy compiled for those
//! instructions, chosen at run time. With libm's scalar `expf` the GELU passes were
//! the second-largest item of the default job's training step (BENCHMARKS.md). In
//! those copies each step of the polynomials is one fused multiply-add ([`Fused`]):
//! Rust never fuses `a * b + c` by itself, and the separate products and sums made
//! the forward loop about 1.4x slower (BENCHMARKS.md). The baseline copy keeps them
//! separate ([`Split`]), since without the instruction a fused multiply-add is a
//! library call per element.
//!
//! [`gelu`] takes this path on `Flex` (inference) and `Autodiff<Flex>` (training), for
//! f32 tensors; every other backend uses Burn's `activation::gelu`.

use burn::tensor::{activation, backend::Backend, Tensor};

/// GELU, fused on Flex and `Autodiff<Flex>` (see the module documentation).
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    // Checked first so that `x` is handed over, not cloned: a map held only here is
    // then computed in its own buffer.
    #[cfg(feature = "flex-kernels")]
    if flex::handles(&x) {
        return flex::try_fast(x).expect("flex::handles checked the backend and dtype");
    }
    activation::gelu(x)
}

/// How the polynomials below take `a * b + c`: as one fused multiply-add ([`Fused`])
/// or as a product and a sum ([`Split`]).
pub trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// `a * b + c` rounded once, for loops compiled where the CPU has FMA.
pub struct Fused;

/// `a * b + c` as two operations, each rounded, for loops compiled for any CPU.
pub struct Split;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl MulAdd for Split {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// e^x for x <= 0 (inputs below -87 give about 1e-38 instead of a smaller number or
/// zero), within about 2 units in the last place: x = n ln 2 + r with |r| <= ln 2 / 2,
/// e^r from a degree-7 Taylor-like polynomial (the Cephes `expf` coefficients), and
/// 2^n put straight into the exponent bits. Plain arithmetic, so loops over it
/// vectorise. [`exp_neg_with`] with separate products and sums.
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    exp_neg_with::<Split>(x)
}

/// [`exp_neg`] with its multiply-adds taken as `M` says.
#[inline(always)]
pub fn exp_neg_with<M: MulAdd>(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n * LN2_HI is exact for the n that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const C: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        5.000_000_1e-1,
    ];
    let x = x.max(-87.0).min(0.0);
    let shifted = M::mul_add(x, LOG2_E, ROUND);
    let n = shifted - ROUND;
    let r = M::mul_add(-n, LN2_LO, M::mul_add(-n, LN2_HI, x));
    let mut p = C[0];
    for c in &C[1..] {
        p = M::mul_add(p, r, *c);
    }
    let e = M::mul_add(p * r, r, r) + 1.0;
    // `shifted`'s low mantissa bits hold n itself (its bits are those of ROUND plus n),
    // so 2^n is built with integer operations only; a float-to-integer `as` would
    // saturate element by element and keep the loop from vectorising.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    e * scale
}

/// erf(x) to within 5e-7 in f32 (Abramowitz and Stegun 7.1.26).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    erf_with::<Split>(x)
}

/// [`erf`] with its multiply-adds taken as `M` says.
#[inline(always)]
pub fn erf_with<M: MulAdd>(x: f32) -> f32 {
    erf_and_gauss::<M>(x).0
}

/// erf(x) and the e^(-x^2) inside it, which is also the normal density's exponential
/// at x sqrt 2: GELU's value and slope then share one exponential.
#[inline(always)]
fn erf_and_gauss<M: MulAdd>(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / M::mul_add(P, a, 1.0);
    let mut poly = A[4];
    for c in A[..4].iter().rev() {
        poly = M::mul_add(poly, t, *c);
    }
    let poly = poly * t;
    let gauss = exp_neg_with::<M>(-a * a);
    let y = M::mul_add(-poly, gauss, 1.0);
    (y.copysign(x), gauss)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi), the standard normal density at 0.
const NORMAL_PEAK: f32 = 0.398_942_3;

/// x Phi(x), Phi the standard normal distribution function.
#[inline(always)]
pub fn gelu_value(x: f32) -> f32 {
    gelu_value_with::<Split>(x)
}

/// [`gelu_value`] with its multiply-adds taken as `M` says.
#[inline(always)]
pub fn gelu_value_with<M: MulAdd>(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_with::<M>(x * FRAC_1_SQRT_2))
}

/// x Phi(x) and its derivative Phi(x) + x phi(x), from one erf and one exponential;
/// the value is bit for bit [`gelu_value_with`]'s for the same `M`.
#[inline(always)]
pub fn gelu_value_and_slope<M: MulAdd>(x: f32) -> (f32, f32) {
    let (erf, gauss) = erf_and_gauss::<M>(x * FRAC_1_SQRT_2);
    let value = 0.5 * x * (1.0 + erf);
    let cdf = 0.5 * (1.0 + erf);
    (value, cdf + x * NORMAL_PEAK * gauss)
}

/// The element loops, written once and compiled three times on x86-64 (the baseline
/// instruction set, AVX2 with FMA, AVX-512F; `widest_simd!`). Training computes the
/// slope with the value, while erf is at hand, and keeps it for the backward pass in
/// place of the input, so the backward pass is one product per element.
#[inline(always)]
fn forward_loop<M: MulAdd>(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = gelu_value_with::<M>(v);
    }
}

#[inline(always)]
fn forward_slope_loop<M: MulAdd>(x: &[f32], out: &mut [f32], slope: &mut [f32]) {
    for ((o, s), &v) in out.iter_mut().zip(slope.iter_mut()).zip(x) {
        (*o, *s) = gelu_value_and_slope::<M>(v);
    }
}

/// The forward loops again, writing over their input: a map that nothing else holds
/// needs no new buffer (no allocation, no zeroing, one stream fewer).
#[inline(always)]
fn forward_loop_in_place<M: MulAdd>(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = gelu_value_with::<M>(*v);
    }
}

#[inline(always)]
fn forward_slope_loop_in_place<M: MulAdd>(x: &mut [f32], slope: &mut [f32]) {
    for (v, s) in x.iter_mut().zip(slope.iter_mut()) {
        (*v, *s) = gelu_value_and_slope::<M>(*v);
    }
}

/// GELU of each value shifted by `shift`, written over it: a pointwise layer's bias
/// and activation applied together to a row of its product (`kernels::pointwise`).
#[inline(always)]
fn shifted_loop_in_place<M: MulAdd>(x: &mut [f32], shift: f32) {
    for v in x.iter_mut() {
        *v = gelu_value_with::<M>(*v + shift);
    }
}

#[inline(always)]
fn shifted_slope_loop_in_place<M: MulAdd>(x: &mut [f32], slope: &mut [f32], shift: f32) {
    for (v, s) in x.iter_mut().zip(slope.iter_mut()) {
        (*v, *s) = gelu_value_and_slope::<M>(*v + shift);
    }
}

widest_simd! {
    /// `x[i] = gelu(x[i] + shift)`, on the calling thread.
    pub fn gelu_shifted_in_place(x: &mut [f32], shift: f32) =
        shifted_loop_in_place::<Fused>, baseline shifted_loop_in_place::<Split>;
}
widest_simd! {
    /// `x[i] = gelu(x[i] + shift)` and `slope[i] = gelu'(x[i] + shift)`, on the calling
    /// thread.
    pub fn gelu_shifted_slope_in_place(x: &mut [f32], slope: &mut [f32], shift: f32) =
        shifted_slope_loop_in_place::<Fused>, baseline shifted_slope_loop_in_place::<Split>;
}
widest_simd! {
    fn forward_chunk(x: &[f32], out: &mut [f32]) =
        forward_loop::<Fused>, baseline forward_loop::<Split>;
}
widest_simd! {
    fn forward_slope_chunk(x: &[f32], out: &mut [f32], slope: &mut [f32]) =
        forward_slope_loop::<Fused>, baseline forward_slope_loop::<Split>;
}
widest_simd! {
    fn forward_chunk_in_place(x: &mut [f32]) =
        forward_loop_in_place::<Fused>, baseline forward_loop_in_place::<Split>;
}
widest_simd! {
    fn forward_slope_chunk_in_place(x: &mut [f32], slope: &mut [f32]) =
        forward_slope_loop_in_place::<Fused>, baseline forward_slope_loop_in_place::<Split>;
}

/// Elements per parallel task: large enough to amortise the scheduling.
#[cfg(feature = "flex-kernels")]
const CHUNK: usize = 16 * 1024;

/// `task(dst chunk, src chunk)` over matching chunks of two equally long slices, in
/// parallel with the Flex kernels.
fn in_chunks(dst: &mut [f32], src: &[f32], task: impl Fn(&mut [f32], &[f32]) + Sync + Send) {
    assert_eq!(dst.len(), src.len());
    #[cfg(feature = "flex-kernels")]
    {
        use rayon::prelude::*;
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(d, s)| task(d, s));
    }
    #[cfg(not(feature = "flex-kernels"))]
    task(dst, src);
}

/// `out[i] = gelu(x[i])`, in parallel chunks.
pub fn gelu_forward_slice(x: &[f32], out: &mut [f32]) {
    in_chunks(out, x, |o, i| forward_chunk(i, o));
}

/// `x[i] = gelu(x[i])`, in parallel chunks.
pub fn gelu_forward_in_place(x: &mut [f32]) {
    #[cfg(feature = "flex-kernels")]
    {
        use rayon::prelude::*;
        x.par_chunks_mut(CHUNK).for_each(forward_chunk_in_place);
    }
    #[cfg(not(feature = "flex-kernels"))]
    forward_chunk_in_place(x);
}

/// `x[i] = gelu(x[i])` and `slope[i] = gelu'(x[i])` (at the input), in parallel chunks.
pub fn gelu_forward_slope_in_place(x: &mut [f32], slope: &mut [f32]) {
    assert_eq!(x.len(), slope.len());
    #[cfg(feature = "flex-kernels")]
    {
        use rayon::prelude::*;
        x.par_chunks_mut(CHUNK)
            .zip(slope.par_chunks_mut(CHUNK))
            .for_each(|(v, s)| forward_slope_chunk_in_place(v, s));
    }
    #[cfg(not(feature = "flex-kernels"))]
    forward_slope_chunk_in_place(x, slope);
}

/// `out[i] = gelu(x[i])` and `slope[i] = gelu'(x[i])`, in parallel chunks.
pub fn gelu_forward_slope_slice(x: &[f32], out: &mut [f32], slope: &mut [f32]) {
    assert_eq!(x.len(), out.len());
    assert_eq!(x.len(), slope.len());
    #[cfg(feature = "flex-kernels")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(CHUNK)
            .zip(slope.par_chunks_mut(CHUNK))
            .zip(x.par_chunks(CHUNK))
            .for_each(|((o, s), v)| forward_slope_chunk(v, o, s));
    }
    #[cfg(not(feature = "flex-kernels"))]
    forward_slope_chunk(x, out, slope);
}

/// `grad[i] *= slope[i]`, in parallel chunks: GELU's backward pass from the slopes its
/// forward pass kept.
pub fn scale_by_slope_in_place(slope: &[f32], grad: &mut [f32]) {
    in_chunks(grad, slope, |g, s| {
        g.iter_mut().zip(s).for_each(|(g, s)| *g *= s);
    });
}

#[cfg(feature = "flex-kernels")]
mod flex {
    use super::{
        gelu_forward_in_place, gelu_forward_slice, gelu_forward_slope_in_place,
        gelu_forward_slope_slice, scale_by_slope_in_place,
    };
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::Flex;
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
    use burn_flex::FlexTensor;
    use std::any::TypeId;

    use crate::kernels::flex_types::{same, Ad, AdTensor};

    /// `x` as a contiguous tensor covering its whole buffer. `to_contiguous` hands back
    /// a second handle when nothing needs copying; taking `x` by value drops the first
    /// before the caller asks `try_storage_mut` whether the buffer is its alone.
    fn into_contiguous(x: FlexTensor) -> FlexTensor {
        x.to_contiguous()
    }

    /// GELU of a Flex tensor (shape `dims`) as a contiguous Flex tensor: computed in the
    /// input's own buffer when nothing else holds it (in inference the pointwise
    /// layer's output is used once), into a new one otherwise.
    fn forward_flex(x: FlexTensor, dims: &[usize]) -> FlexTensor {
        let mut x = into_contiguous(x);
        if let Some(values) = x.try_storage_mut::<f32>() {
            gelu_forward_in_place(values);
            return x;
        }
        let input = x.storage::<f32>();
        let mut out = vec![0.0f32; input.len()];
        gelu_forward_slice(input, &mut out);
        FlexTensor::from_data(TensorData::new(out, dims.to_vec()))
    }

    /// GELU and its slope at every element, as two contiguous Flex tensors; the values
    /// in the input's own buffer when nothing else holds it (the pointwise layer's
    /// output, while training, since the slopes replace the input in the graph).
    fn forward_with_slope(x: FlexTensor, dims: &[usize]) -> (FlexTensor, FlexTensor) {
        let mut x = into_contiguous(x);
        let len = x.storage::<f32>().len();
        let mut slope = vec![0.0f32; len];
        let out = match x.try_storage_mut::<f32>() {
            Some(values) => {
                gelu_forward_slope_in_place(values, &mut slope);
                x
            }
            None => {
                let mut out = vec![0.0f32; len];
                gelu_forward_slope_slice(x.storage::<f32>(), &mut out, &mut slope);
                FlexTensor::from_data(TensorData::new(out, dims.to_vec()))
            }
        };
        (
            out,
            FlexTensor::from_data(TensorData::new(slope, dims.to_vec())),
        )
    }

    /// Whether [`try_fast`] takes `x` (an f32 tensor on Flex or `Autodiff<Flex>`).
    pub(super) fn handles<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
        let id = TypeId::of::<B>();
        x.dtype() == DType::F32 && (id == TypeId::of::<Flex>() || id == TypeId::of::<Ad>())
    }

    pub(super) fn try_fast<B: Backend, const D: usize>(x: Tensor<B, D>) -> Option<Tensor<B, D>> {
        if !handles(&x) {
            return None;
        }
        let dims = x.dims().to_vec();
        let id = TypeId::of::<B>();
        if id == TypeId::of::<Flex>() {
            let t: FlexTensor = same(x.into_primitive().tensor())?;
            let out: B::FloatTensorPrimitive = same(forward_flex(t, &dims))?;
            return Some(Tensor::from_primitive(TensorPrimitive::Float(out)));
        }
        if id == TypeId::of::<Ad>() {
            let t: AdTensor = same(x.into_primitive().tensor())?;
            let out: B::FloatTensorPrimitive = same(forward_autodiff(t, dims))?;
            return Some(Tensor::from_primitive(TensorPrimitive::Float(out)));
        }
        None
    }

    #[derive(Debug)]
    struct GeluBackward;

    impl Backward<Flex, 1> for GeluBackward {
        /// GELU's slope at every input element (contiguous) and the input's shape.
        type State = (FlexTensor, Vec<usize>);

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let [node_x] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            let (slope, dims) = ops.state;
            if let Some(node) = node_x {
                // The incoming gradient is usually held by nothing else: scale it in place.
                let mut g = into_contiguous(grad);
                let dx = match g.try_storage_mut::<f32>() {
                    Some(values) => {
                        scale_by_slope_in_place(slope.storage::<f32>(), values);
                        g
                    }
                    None => {
                        let mut out = g.storage::<f32>().to_vec();
                        scale_by_slope_in_place(slope.storage::<f32>(), &mut out);
                        FlexTensor::from_data(TensorData::new(out, dims))
                    }
                };
                grads.register::<Flex>(node.id, dx);
            }
        }
    }

    fn forward_autodiff(x: AdTensor, dims: Vec<usize>) -> AdTensor {
        match GeluBackward
            .prepare::<NoCheckpointing>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, slope) = forward_with_slope(x.primitive, &dims);
                prep.finish((slope, dims), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward_flex(x.primitive, &dims)),
        }
    }
}
