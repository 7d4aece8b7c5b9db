//! The forward pass of a grouped "same" convolution (stride 1, padding k/2) whose
//! groups have several output channels each, on plain buffers: the attribute heads'
//! 3x3 spatial-attention layers (512 channels in 32 groups) on the CPU backends.
//!
//! Flex's stock convolution ran these one group at a time as an unfolded matrix
//! product: at batch 1 on a 7 x 7 map each group's product is 16 x 144 by 144 x 49,
//! too small for the product's packing to pay, and the ten such layers of five heads
//! were 15 % of a ConvNeXt-atto inference in a `perf` profile (BENCHMARKS.md). Here
//! one task per (image, group) borders the group's input planes once, and every output
//! position accumulates the group's output channels as one 16-lane vector: each input
//! value under the filter is multiplied into 16 filter weights at a time, read from a
//! copy of the weights laid out `[group, lane block, input, tap, lane]`. The vector
//! dimension is the output channels, not the positions, so small maps lose nothing to
//! their ragged rows; groups of fewer than [`MIN_OUTPUTS_PER_GROUP`] outputs keep the
//! stock path, since they would leave more than half of the lanes idle (a bound chosen,
//! not measured: only 16 outputs per group were timed).

use super::conv::GroupedConvShape;

/// Output channels computed together: one AVX-512 vector, two AVX2 ones.
const LANES: usize = 16;

/// Groups with fewer output channels than this keep Flex's convolution.
pub const MIN_OUTPUTS_PER_GROUP: usize = 8;

/// Whether [`grouped_same`] takes a layer of this shape: more than one group (a
/// depthwise layer has its own kernel, a dense one Flex's product), each with at least
/// [`MIN_OUTPUTS_PER_GROUP`] outputs.
pub fn takes(shape: &GroupedConvShape) -> bool {
    shape.groups > 1
        && shape.channels_in % shape.groups == 0
        && shape.channels_out % shape.groups == 0
        && shape.channels_out / shape.groups >= MIN_OUTPUTS_PER_GROUP
        && shape.kernel % 2 == 1
}

/// The convolution of `x` (`[batch, channels_in, height, width]`) with `weight`
/// (`[channels_out, channels_in / groups, kernel, kernel]`) plus `bias`
/// (`[channels_out]`), stride 1, zero padding `kernel / 2`: `[batch, channels_out,
/// height, width]`.
pub fn grouped_same(x: &[f32], weight: &[f32], bias: &[f32], shape: GroupedConvShape) -> Vec<f32> {
    let GroupedConvShape {
        batch,
        channels_in,
        channels_out,
        groups,
        height,
        width,
        kernel,
    } = shape;
    assert!(takes(&shape), "grouped_same: unsupported shape {shape:?}");
    let (ins, outs) = (channels_in / groups, channels_out / groups);
    let taps = kernel * kernel;
    let plane = height * width;
    assert_eq!(x.len(), batch * channels_in * plane, "input size");
    assert_eq!(weight.len(), channels_out * ins * taps, "weight size");
    assert_eq!(bias.len(), channels_out, "bias size");
    let blocks = outs.div_ceil(LANES);

    // [group][block][input][tap][lane], zero past the group's last output.
    let block_len = ins * taps * LANES;
    let mut packed = vec![0.0f32; groups * blocks * block_len];
    for o in 0..channels_out {
        let (g, within) = (o / outs, o % outs);
        let (b, lane) = (within / LANES, within % LANES);
        let dst = &mut packed[(g * blocks + b) * block_len..][..block_len];
        let src = &weight[o * ins * taps..(o + 1) * ins * taps];
        for (k, &w) in src.iter().enumerate() {
            dst[k * LANES + lane] = w;
        }
    }

    let mut out = vec![0.0f32; batch * channels_out * plane];
    if plane == 0 {
        return out;
    }
    let pad = kernel / 2;
    let row = width + 2 * pad;
    let bordered_plane = (height + 2 * pad) * row;
    let geometry = Geometry {
        ins,
        height,
        width,
        kernel,
        row,
        bordered_plane,
    };
    let task = |(index, slab): (usize, &mut [f32])| {
        let (n, g) = (index / groups, index % groups);
        // The group's input planes with a zero border of `pad` on every side.
        let mut bordered = vec![0.0f32; ins * bordered_plane];
        for i in 0..ins {
            let src = &x[((n * channels_in) + g * ins + i) * plane..][..plane];
            let dst = &mut bordered[i * bordered_plane..][..bordered_plane];
            for y in 0..height {
                let start = (y + pad) * row + pad;
                dst[start..start + width].copy_from_slice(&src[y * width..(y + 1) * width]);
            }
        }
        let mut tile = vec![[0.0f32; LANES]; plane];
        for b in 0..blocks {
            let first = b * LANES;
            let lanes = LANES.min(outs - first);
            let mut start = [0.0f32; LANES];
            start[..lanes].copy_from_slice(&bias[g * outs + first..][..lanes]);
            let weights = &packed[(g * blocks + b) * block_len..][..block_len];
            block_conv(&bordered, weights, start, geometry, &mut tile);
            // Lane `l` of position `p` is output channel `first + l` of the group.
            for (l, channel) in slab[first * plane..(first + lanes) * plane]
                .chunks_exact_mut(plane)
                .enumerate()
            {
                for (value, acc) in channel.iter_mut().zip(&tile) {
                    *value = acc[l];
                }
            }
        }
    };
    use rayon::prelude::*;
    out.par_chunks_mut(outs * plane).enumerate().for_each(task);
    out
}

/// The sizes [`block_conv`] walks.
#[derive(Clone, Copy)]
struct Geometry {
    ins: usize,
    height: usize,
    width: usize,
    kernel: usize,
    /// Row stride of the bordered planes.
    row: usize,
    bordered_plane: usize,
}

widest_simd! {
    fn block_conv(
        bordered: &[f32],
        weights: &[f32],
        start: [f32; LANES],
        geometry: Geometry,
        tile: &mut [[f32; LANES]],
    ) = block_conv_body;
}

/// One block of 16 output channels at every position: `tile[p]` starts as the biases
/// and gains, for each input and tap, the input value times the tap's 16 weights.
#[inline(always)]
fn block_conv_body(
    bordered: &[f32],
    weights: &[f32],
    start: [f32; LANES],
    geometry: Geometry,
    tile: &mut [[f32; LANES]],
) {
    let Geometry {
        ins,
        height,
        width,
        kernel,
        row,
        bordered_plane,
    } = geometry;
    let taps = kernel * kernel;
    for y in 0..height {
        for x in 0..width {
            let mut acc = start;
            for i in 0..ins {
                let plane = &bordered[i * bordered_plane..][..bordered_plane];
                let filters = &weights[i * taps * LANES..][..taps * LANES];
                for ky in 0..kernel {
                    let line = &plane[(y + ky) * row + x..][..kernel];
                    let line_filters = &filters[ky * kernel * LANES..][..kernel * LANES];
                    for (&v, w) in line.iter().zip(line_filters.chunks_exact(LANES)) {
                        for (a, &w) in acc.iter_mut().zip(w) {
                            *a += v * w;
                        }
                    }
                }
            }
            tile[y * width + x] = acc;
        }
    }
}
