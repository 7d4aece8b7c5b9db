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
//! over a buffer that stays in the L1 cache.
//!
//! ConvNeXt's 7x7 filters on x86-64 CPUs with AVX-512F, or AVX2 and FMA, take a
//! register-blocked path instead ([`simd7`]): each output vector stays in a register
//! for all 49 taps (one fused multiply-add per tap, the input read straight from the
//! bordered plane), and four output rows are computed together so that every input
//! vector loaded serves each of the four rows it reaches. The tap-by-tap passes
//! above load and store their accumulator once per tap; on ConvNeXt's plane sizes,
//! on two cores, they ran 7x7 filters at 17-60 GFLOP/s, the blocked path at 33-116,
//! 1.8-3.2x (`--example depthwise_planes`, BENCHMARKS.md). WebAssembly with SIMD128
//! (the page's CPU fallback) takes the same loop on planes up to 32 wide, with a
//! product and a sum per tap (SIMD128 has no fused multiply-add), giving the same
//! values as its tap-by-tap passes.

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
    depthwise_same_on(x, weight, bias, turned, shape, Path::Fastest)
}

/// Which plane loop [`depthwise_same_on`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The blocked 7x7 path where this CPU has one, else the tap-by-tap passes.
    Fastest,
    /// The tap-by-tap passes, always (for timing the two against each other:
    /// `cargo run --release -p trainer --example depthwise_planes`).
    ByTaps,
}

/// [`depthwise_same`] on the plane loop `path` names.
pub fn depthwise_same_on(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    turned: bool,
    shape: DepthwiseShape,
    path: Path,
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
            if path == Path::ByTaps
                || !simd7::plane_conv(x_plane, &filter, b, &mut scratch, shape, out_plane)
            {
                plane_conv_by_taps(x_plane, &filter, b, &mut scratch, shape, out_plane);
            }
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
        // One vector of slack more on both: the blocked 7x7 path reads and writes
        // whole vectors, up to one vector past a row's last column (`simd7`).
        Self {
            bordered: vec![0.0; (shape.height + 2 * pad) * row + 2 * pad + simd7::SLACK],
            wide: vec![0.0; shape.height * row + simd7::SLACK],
        }
    }
}

widest_simd! {
    fn plane_conv_by_taps(
        x: &[f32],
        filter: &[f32],
        bias: f32,
        scratch: &mut Scratch,
        shape: DepthwiseShape,
        out: &mut [f32],
    ) = plane_conv_body;
}

/// Copies plane `x` into the interior of `bordered` (row stride `width + 2 pad`), whose
/// border stays zero from the allocation.
#[inline(always)]
fn border_plane(x: &[f32], bordered: &mut [f32], shape: DepthwiseShape) {
    let pad = shape.kernel / 2;
    let row = shape.width + 2 * pad;
    for y in 0..shape.height {
        let start = (y + pad) * row + pad;
        bordered[start..start + shape.width]
            .copy_from_slice(&x[y * shape.width..(y + 1) * shape.width]);
    }
}

/// Copies the output's columns out of `wide` (row stride `width + 2 pad`) into `out`.
#[inline(always)]
fn unwiden_plane(wide: &[f32], out: &mut [f32], shape: DepthwiseShape) {
    let row = shape.width + 2 * (shape.kernel / 2);
    for y in 0..shape.height {
        out[y * shape.width..(y + 1) * shape.width]
            .copy_from_slice(&wide[y * row..y * row + shape.width]);
    }
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
    border_plane(x, bordered, shape);
    let wide = &mut wide[..span];
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
    unwiden_plane(wide, out, shape);
}

/// The 7x7 planes, register-blocked (see the module documentation), compiled for
/// AVX-512F and for AVX2 with FMA.
///
/// Both work on the bordered plane and the wide output of [`Scratch`], whose rows are
/// `row = width + 6` apart: output `(y, x)` is `wide[y * row + x]`, the sum over taps
/// `(ky, kx)` of `filter[ky * 7 + kx] * bordered[(y + ky) * row + x + kx]`, a formula
/// that holds for every index of `wide`, whichever row or column it falls in. So an
/// output vector may start anywhere and reach past its row's last column (into the
/// border columns or the next row's first ones): what it writes there is either
/// dropped or the very value that row's own vectors write, summed in the same order.
/// Each output takes its 49 taps row by row (`ky`), column by column (`kx`) within a
/// row, in one fused multiply-add each (in WebAssembly, a product and a sum),
/// whatever block computed it.
mod simd7 {
    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    ))]
    use super::{border_plane, unwiden_plane};
    use super::{DepthwiseShape, Scratch};

    /// Elements of slack `Scratch` keeps past each buffer: one vector of the widest
    /// kind (16 lanes).
    pub(super) const SLACK: usize = 16;

    /// The plane on this CPU's blocked path; `false` (nothing written) when the
    /// filters are not 7x7, or the CPU has neither AVX-512F nor AVX2 with FMA (in
    /// WebAssembly: the module lacks SIMD128 or the plane is wider than 32).
    pub(super) fn plane_conv(
        x: &[f32],
        filter: &[f32],
        bias: f32,
        scratch: &mut Scratch,
        shape: DepthwiseShape,
        out: &mut [f32],
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if shape.kernel == 7 {
            if crate::kernels::has_avx512() {
                // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked above).
                unsafe { avx512::plane(x, filter, bias, scratch, shape, out) };
                return true;
            }
            if crate::kernels::has_avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                unsafe { avx2::plane(x, filter, bias, scratch, shape, out) };
                return true;
            }
        }
        // WebAssembly built with SIMD128 (the page's CPU fallback), on planes up to 32
        // wide: with four lanes a vector, the blocked loop measured 1.15-1.86x the
        // tap-by-tap one on ConvNeXt's 28, 14 and 7 wide planes but 0.94-1.04x on its
        // 56 wide ones (Node 20, BENCHMARKS.md).
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        if shape.kernel == 7 && shape.width <= 32 {
            // SAFETY: the module was compiled with SIMD128, so every engine that runs
            // it has those instructions.
            unsafe { simd128::plane(x, filter, bias, scratch, shape, out) };
            return true;
        }
        let _ = (x, filter, bias, scratch, shape, out);
        false
    }

    /// SIMD128's vector operations under the names the blocked kernels use. It has no
    /// fused multiply-add: a product and a sum, each rounded, as the tap-by-tap loop
    /// compiled for WebAssembly computes them.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    mod wasm_ops {
        pub(super) use std::arch::wasm32::v128;
        use std::arch::wasm32::{f32x4_add, f32x4_mul, f32x4_splat, v128_load, v128_store};

        #[inline(always)]
        pub(super) unsafe fn splat(x: f32) -> v128 {
            f32x4_splat(x)
        }

        /// # Safety
        /// Four values from `p` on are readable (any alignment).
        #[inline(always)]
        pub(super) unsafe fn load(p: *const f32) -> v128 {
            unsafe { v128_load(p.cast()) }
        }

        /// # Safety
        /// Four values from `p` on are writable (any alignment).
        #[inline(always)]
        pub(super) unsafe fn store(p: *mut f32, v: v128) {
            unsafe { v128_store(p.cast(), v) }
        }

        #[inline(always)]
        pub(super) unsafe fn mul_add(a: v128, b: v128, c: v128) -> v128 {
            f32x4_add(f32x4_mul(a, b), c)
        }
    }

    /// One copy of the blocked kernels for one vector type: `$lanes` f32 lanes in
    /// `$v`, with its broadcast, unaligned load and store and (fused) multiply-add, all
    /// found in the module `$ops`.
    #[cfg(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    ))]
    macro_rules! blocked_kernels {
        ($module:ident, $features:literal, $($ops:ident)::+, $v:ty, $lanes:literal,
         $splat:ident, $load:ident, $store:ident, $fma:ident) => {
            pub(super) mod $module {
                use super::{border_plane, unwiden_plane, DepthwiseShape, Scratch};
                use $($ops)::+::*;

                const LANES: usize = $lanes;
                /// Output rows computed together, and vectors per row.
                const ROWS: usize = 4;
                const COLS: usize = 2;

                /// `R` output rows of `C` vectors each, the first at `wide[at]`.
                ///
                /// # Safety
                /// The CPU has `$features`; `at + (R - 1 + 6) * row + C * LANES + 6`
                /// is within `bordered` and `at + (R - 1) * row + C * LANES` within
                /// `wide`.
                #[inline(always)]
                unsafe fn rows_block<const R: usize, const C: usize>(
                    bordered: *const f32,
                    filter: &[f32; 49],
                    bias: f32,
                    row: usize,
                    at: usize,
                    wide: *mut f32,
                ) {
                    unsafe {
                        let mut acc = [[$splat(bias); C]; R];
                        // Input row `r` of the block feeds output row `j` through
                        // the filter's row `r - j`.
                        for r in 0..R + 6 {
                            let line = bordered.add(at + r * row);
                            for kx in 0..7 {
                                for c in 0..C {
                                    let v = $load(line.add(c * LANES + kx));
                                    for (j, acc) in acc.iter_mut().enumerate() {
                                        if r >= j && r - j < 7 {
                                            let w = $splat(filter[(r - j) * 7 + kx]);
                                            acc[c] = $fma(w, v, acc[c]);
                                        }
                                    }
                                }
                            }
                        }
                        for (j, acc) in acc.iter().enumerate() {
                            for (c, &a) in acc.iter().enumerate() {
                                $store(wide.add(at + j * row + c * LANES), a);
                            }
                        }
                    }
                }

                /// One 7x7 plane: bordered, computed into `scratch.wide` block by
                /// block, copied out.
                ///
                /// # Safety
                /// The CPU has `$features`; `scratch` was made for `shape`, whose
                /// kernel is 7.
                #[target_feature(enable = $features)]
                pub(in super::super) unsafe fn plane(
                    x: &[f32],
                    filter: &[f32],
                    bias: f32,
                    scratch: &mut Scratch,
                    shape: DepthwiseShape,
                    out: &mut [f32],
                ) {
                    let DepthwiseShape { height, width, .. } = shape;
                    let row = width + 6;
                    let filter: &[f32; 49] = filter.try_into().expect("a 7x7 filter");
                    border_plane(x, &mut scratch.bordered, shape);
                    // Every block below reads at most a vector (plus the 6 columns of
                    // the filter's reach) past the last bordered row it touches and
                    // writes at most a vector past the last output row's start.
                    assert!(
                        scratch.bordered.len() >= (height + 6) * row + LANES + 6
                            && scratch.wide.len() >= height * row + LANES,
                        "scratch too small for the blocked 7x7 path"
                    );
                    let bordered = scratch.bordered.as_ptr();
                    let wide = scratch.wide.as_mut_ptr();
                    // SAFETY (all blocks): within the buffers by the check above; the
                    // bounds each block's safety note states follow from it.
                    unsafe {
                        if width >= LANES / 2 {
                            // Rows of whole vectors, four rows at a time.
                            let vectors = width.div_ceil(LANES);
                            let mut y = 0;
                            while y + ROWS <= height {
                                let mut c = 0;
                                while c + COLS <= vectors {
                                    rows_block::<ROWS, COLS>(
                                        bordered,
                                        filter,
                                        bias,
                                        row,
                                        y * row + c * LANES,
                                        wide,
                                    );
                                    c += COLS;
                                }
                                while c < vectors {
                                    rows_block::<ROWS, 1>(
                                        bordered,
                                        filter,
                                        bias,
                                        row,
                                        y * row + c * LANES,
                                        wide,
                                    );
                                    c += 1;
                                }
                                y += ROWS;
                            }
                            for y in y..height {
                                for c in 0..vectors {
                                    rows_block::<1, 1>(
                                        bordered,
                                        filter,
                                        bias,
                                        row,
                                        y * row + c * LANES,
                                        wide,
                                    );
                                }
                            }
                        } else {
                            // Narrow planes: the wide output as one run of vectors
                            // (a block of one "row" whose vectors run on across
                            // rows, which the formula above allows).
                            let vectors = (height * row).div_ceil(LANES);
                            let mut v = 0;
                            while v + 4 <= vectors {
                                rows_block::<1, 4>(bordered, filter, bias, row, v * LANES, wide);
                                v += 4;
                            }
                            for v in v..vectors {
                                rows_block::<1, 1>(bordered, filter, bias, row, v * LANES, wide);
                            }
                        }
                    }
                    unwiden_plane(&scratch.wide, out, shape);
                }
            }
        };
    }

    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    blocked_kernels!(
        simd128,
        "simd128",
        super::wasm_ops,
        v128,
        4,
        splat,
        load,
        store,
        mul_add
    );
    #[cfg(target_arch = "x86_64")]
    blocked_kernels!(
        avx512,
        "avx512f,avx2,fma",
        std::arch::x86_64,
        __m512,
        16,
        _mm512_set1_ps,
        _mm512_loadu_ps,
        _mm512_storeu_ps,
        _mm512_fmadd_ps
    );
    #[cfg(target_arch = "x86_64")]
    blocked_kernels!(
        avx2,
        "avx2,fma",
        std::arch::x86_64,
        __m256,
        8,
        _mm256_set1_ps,
        _mm256_loadu_ps,
        _mm256_storeu_ps,
        _mm256_fmadd_ps
    );

    /// Each compiled copy against the tap-by-tap passes, on planes that take every
    /// branch: whole and partial vectors, blocks of four rows and leftover rows, the
    /// narrow-plane path, planes of one row or one column.
    #[cfg(all(test, target_arch = "x86_64"))]
    mod tests {
        use super::super::{plane_conv_body, DepthwiseShape, Scratch};

        type Plane = unsafe fn(&[f32], &[f32], f32, &mut Scratch, DepthwiseShape, &mut [f32]);

        fn check(name: &str, plane: Plane) {
            for (height, width) in [
                (1, 1),
                (7, 7),
                (5, 3),
                (3, 9),
                (9, 8),
                (11, 16),
                (6, 17),
                (13, 24),
                (4, 40),
                (1, 56),
                (24, 1),
            ] {
                let shape = DepthwiseShape {
                    batch: 1,
                    channels: 1,
                    height,
                    width,
                    kernel: 7,
                };
                let x: Vec<f32> = (0..height * width)
                    .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.13)
                    .collect();
                let filter: Vec<f32> = (0..49)
                    .map(|t| ((t * 11 % 17) as f32 - 8.0) * 0.07)
                    .collect();
                let mut expected = vec![0.0; x.len()];
                plane_conv_body(
                    &x,
                    &filter,
                    0.3,
                    &mut Scratch::new(shape),
                    shape,
                    &mut expected,
                );
                let mut ours = vec![f32::NAN; x.len()];
                // SAFETY: the caller checked the CPU's features.
                unsafe { plane(&x, &filter, 0.3, &mut Scratch::new(shape), shape, &mut ours) };
                for (i, (a, b)) in ours.iter().zip(&expected).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                        "{name} {height}x{width}: element {i} is {a}, the taps give {b}"
                    );
                }
            }
        }

        #[test]
        fn blocked_copies_match_the_tap_by_tap_passes() {
            if crate::kernels::has_avx512() {
                check("avx512", super::avx512::plane);
            }
            if crate::kernels::has_avx2_fma() {
                check("avx2", super::avx2::plane);
            }
        }
    }
}
