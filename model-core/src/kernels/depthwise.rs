//! The depthwise "same" convolution (one k x k filter per channel, stride 1, padding
//! k/2) on plain buffers, for ConvNeXt's 7x7 layers on the CPU backends built on Flex:
//! forward, and, with the filters turned by 180 degrees, the input gradient.
//!
//! Flex's own depthwise path walks each output position's k x k window with a bounds
//! check per tap; in a `perf` profile of the default job's training step it was about
//! a sixth of the time (forward and input gradient together; BENCHMARKS.md). Here each
//! plane is copied once into a zero-bordered buffer, and the output is accumulated
//! with the bordered row stride, so that every tap is one long multiply-add over the
//! whole plane (the extra columns are dropped at the end): k x k vectorisable passes
//! over a buffer that stays in the L1 cache. On x86-64 CPUs with AVX2 and FMA, or
//! AVX-512F, the plane loop runs in a copy compiled for them, chosen at run time.

/// Sizes of a depthwise convolution's `[batch, channels, height, width]` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthwiseShape {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// Side of the (odd, square) filters.
    pub kernel: usize,
}

/// Planes per parallel task: enough work to amortise the task and its two scratch
/// buffers.
const PLANES_PER_TASK: usize = 8;

/// The depthwise convolution of `x` (`[batch, channels, height, width]`) with
/// `weight` (`[channels, 1, kernel, kernel]`) plus `bias` (`[channels]`, if any), same
/// size out. With `turned`, every filter is used turned by 180 degrees: that is the
/// input gradient when `x` is the output gradient.
pub fn depthwise_same(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    turned: bool,
    shape: DepthwiseShape,
) -> Vec<f32> {
    let DepthwiseShape {
        batch,
        channels,
        height,
        width,
        kernel,
    } = shape;
    let plane = height * width;
    let taps = kernel * kernel;
    assert!(kernel % 2 == 1, "odd kernel");
    assert_eq!(x.len(), batch * channels * plane, "input size");
    assert_eq!(weight.len(), channels * taps, "weight size");
    if let Some(b) = bias {
        assert_eq!(b.len(), channels, "bias size");
    }
    let mut out = vec![0.0f32; x.len()];
    if plane == 0 {
        return out;
    }
    let run = |task: usize, out: &mut [f32]| {
        let mut scratch = Scratch::new(shape);
        let mut filter = vec![0.0f32; taps];
        for (i, out_plane) in out.chunks_exact_mut(plane).enumerate() {
            let p = task * PLANES_PER_TASK + i;
            let c = p % channels;
            let w = &weight[c * taps..(c + 1) * taps];
            for (t, f) in filter.iter_mut().enumerate() {
                *f = if turned { w[taps - 1 - t] } else { w[t] };
            }
            let b = bias.map_or(0.0, |b| b[c]);
            let x_plane = &x[p * plane..(p + 1) * plane];
            plane_conv(x_plane, &filter, b, &mut scratch, shape, out_plane);
        }
    };
    use rayon::prelude::*;
    out.par_chunks_mut(plane * PLANES_PER_TASK)
        .enumerate()
        .for_each(|(task, o)| run(task, o));
    out
}

/// A plane with a zero border of k/2 on every side (and k - 1 spare zeros at the end
/// for the last tap's reach), and the output at the bordered row stride.
struct Scratch {
    bordered: Vec<f32>,
    wide: Vec<f32>,
}

impl Scratch {
    fn new(shape: DepthwiseShape) -> Self {
        let pad = shape.kernel / 2;
        let row = shape.width + 2 * pad;
        Self {
            bordered: vec![0.0; (shape.height + 2 * pad) * row + 2 * pad],
            wide: vec![0.0; shape.height * row],
        }
    }
}

widest_simd! {
    fn plane_conv(
        x: &[f32],
        filter: &[f32],
        bias: f32,
        scratch: &mut Scratch,
        shape: DepthwiseShape,
        out: &mut [f32],
    ) = plane_conv_body;
}

/// One plane: border it, then one multiply-add pass per tap at the bordered row stride.
#[inline(always)]
fn plane_conv_body(
    x: &[f32],
    filter: &[f32],
    bias: f32,
    scratch: &mut Scratch,
    shape: DepthwiseShape,
    out: &mut [f32],
) {
    let DepthwiseShape {
        height,
        width,
        kernel,
        ..
    } = shape;
    let pad = kernel / 2;
    let row = width + 2 * pad;
    let span = height * row;
    let Scratch { bordered, wide } = scratch;
    // The border stays zero from the allocation; only the interior is rewritten.
    for y in 0..height {
        let start = (y + pad) * row + pad;
        bordered[start..start + width].copy_from_slice(&x[y * width..(y + 1) * width]);
    }
    wide.fill(bias);
    // Taps more than a plane's extent off centre only ever read the zero border (a 7x7
    // filter on a 2x2 plane has 9 taps that matter).
    let reach = |extent: usize| pad.saturating_sub(extent - 1)..(pad + extent).min(kernel);
    for ky in reach(height) {
        for kx in reach(width) {
            let w = filter[ky * kernel + kx];
            let shift = ky * row + kx;
            let src = &bordered[shift..shift + span];
            for (o, &v) in wide.iter_mut().zip(src) {
                *o += w * v;
            }
        }
    }
    for y in 0..height {
        out[y * width..(y + 1) * width].copy_from_slice(&wide[y * row..y * row + width]);
    }
}
