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
//! - forward with the GELU that follows the expanding layer of a ConvNeXt block
//!   ([`pointwise_gelu_forward`]), the product is written without the bias, then
//!   the bias and GELU are applied to each block of it on the thread that made it
//!   (while training also keeping GELU's slopes, which the backward step multiplies
//!   into the output gradient first);
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
pub(crate) struct Operand<'a> {
    pub data: &'a [f32],
    pub row: isize,
    pub col: isize,
}

pub(crate) fn product(
    dims: [usize; 3],
    dst: &mut [f32],
    dst_row: isize,
    lhs: Operand<'_>,
    rhs: Operand<'_>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: `dst` is one exclusive borrow of `dst.len()` elements.
    unsafe {
        product_at(
            dims,
            dst.as_mut_ptr(),
            dst.len(),
            dst_row,
            lhs,
            rhs,
            accumulate,
            parallelism,
        )
    }
}

/// [`product`] into `dst_len` elements from `dst`, which other threads may be writing
/// elsewhere at the same time (other blocks of one output).
///
/// # Safety
/// `dst..dst + dst_len` must be valid for writes, must not overlap `lhs` or `rhs`, and
/// the elements this product addresses (`m` rows of `n` at stride `dst_row`) must not
/// be read or written by anyone else while it runs.
#[allow(clippy::too_many_arguments)]
unsafe fn product_at(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    dst_len: usize,
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
    assert!(dst_len >= reach(m, n, dst_row, 1), "output too small");
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
    // SAFETY: every element the strides address lies inside its slice (checked above),
    // and the caller vouches for `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
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

/// An output buffer's start, handed to the threads that write its blocks.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: only used for writes to disjoint elements, by jobs that end before the
// buffer is used again (see `pointwise_forward`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The element `offset` places on (a method, so closures capture the whole
    /// wrapper rather than its raw pointer field).
    ///
    /// # Safety
    /// `offset` must lie inside the buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
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

/// A pointwise layer's weight as a strided view: the element of input `i` and output
/// `o` is `data[i * along_in + o * along_out]`. Burn `Linear`'s `[in, out]` is
/// `along_in = outputs, along_out = 1`; a patch convolution's `[out, in]` weight seen
/// transposed is `along_in = 1, along_out = inputs`, read where it lies, not copied.
#[derive(Debug, Clone, Copy)]
pub struct WeightView<'a> {
    pub data: &'a [f32],
    pub along_in: usize,
    pub along_out: usize,
}

impl<'a> WeightView<'a> {
    /// `W^T` (`[out, in]`) from output row `first` on, as a product operand.
    fn transposed_from(self, first: usize) -> Operand<'a> {
        Operand {
            data: &self.data[(first * self.along_out).min(self.data.len())..],
            row: self.along_out as isize,
            col: self.along_in as isize,
        }
    }

    /// `W` (`[in, out]`) as a product operand.
    fn plain(self) -> Operand<'a> {
        Operand {
            data: self.data,
            row: self.along_in as isize,
            col: self.along_out as isize,
        }
    }
}

/// `weight` copied output-major: `[out, in]`, the element of output `o` and input `i`
/// at `o * inputs + i`, in tiles of 32 x 32 so that both sides of the copy stay in
/// cache, spread over the threads.
pub fn out_major_copy(weight: WeightView<'_>, inputs: usize, outputs: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; inputs * outputs];
    out_major_copy_into(weight, inputs, outputs, &mut out);
    out
}

/// [`out_major_copy`] into `out` (`inputs * outputs` values), which it overwrites.
pub fn out_major_copy_into(weight: WeightView<'_>, inputs: usize, outputs: usize, out: &mut [f32]) {
    use rayon::prelude::*;
    const TILE: usize = 32;
    assert_eq!(out.len(), inputs * outputs, "output-major copy size");
    if out.is_empty() {
        return;
    }
    out.par_chunks_mut(TILE * inputs)
        .enumerate()
        .for_each(|(block, rows)| {
            let first = block * TILE;
            let count = rows.len() / inputs;
            for start in (0..inputs).step_by(TILE) {
                let end = (start + TILE).min(inputs);
                for o in 0..count {
                    let column = (first + o) * weight.along_out;
                    for (i, value) in rows[o * inputs + start..o * inputs + end]
                        .iter_mut()
                        .enumerate()
                    {
                        *value = weight.data[(start + i) * weight.along_in + column];
                    }
                }
            }
        });
}

/// What a pointwise layer's forward pass makes of the product `W^T x[n]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// `W^T x[n] + b`, the layer itself.
    Bias,
    /// `gelu(W^T x[n] + b)`: the layer and the activation after it.
    Gelu,
    /// `gelu(W^T x[n] + b)` and GELU's slope at `W^T x[n] + b`, for training: the
    /// backward pass scales the output gradient by the slopes.
    GeluWithSlope,
}

/// `W^T x[n] + b` for every sample: `x` `[batch, inputs, positions]`, `weight`
/// `[inputs, outputs]` seen through a [`WeightView`] (the product checks that every
/// element the view addresses lies inside its data), `bias` `[outputs]`; returns
/// `[batch, outputs, positions]`.
pub fn pointwise_forward(
    x: &[f32],
    weight: WeightView<'_>,
    bias: &[f32],
    shape: PointwiseShape,
) -> Vec<f32> {
    pointwise_forward_then(x, weight, bias, shape, Epilogue::Bias).0
}

/// `gelu(W^T x[n] + b)` for every sample, as [`pointwise_forward`] and GELU after it
/// would give (to GELU's rounding), in one pass over the output instead of three.
///
/// Apart, the bias is written over the whole output before the product reads it back
/// and adds to it, and GELU then reads and writes the whole output once more, by
/// which time a large layer's output has left the caches. Here each block's product
/// is written once, and the bias and GELU are applied to that block on the same
/// thread straight after, while it is still largely in that core's cache: 1.01-1.23x
/// on ConvNeXt's expanding layers at batch 1, most where the product is cheapest
/// (`cargo run --release -p trainer --example pointwise_gelu`, BENCHMARKS.md).
pub fn pointwise_gelu_forward(
    x: &[f32],
    weight: WeightView<'_>,
    bias: &[f32],
    shape: PointwiseShape,
) -> Vec<f32> {
    pointwise_forward_then(x, weight, bias, shape, Epilogue::Gelu).0
}

/// [`pointwise_forward`] or [`pointwise_gelu_forward`], as `epilogue` says, or the
/// latter with GELU's slope at every element (`Epilogue::GeluWithSlope`, for
/// training): the outputs and the slopes (`[batch, outputs, positions]`, empty unless
/// asked for).
pub fn pointwise_forward_then(
    x: &[f32],
    weight: WeightView<'_>,
    bias: &[f32],
    shape: PointwiseShape,
    epilogue: Epilogue,
) -> (Vec<f32>, Vec<f32>) {
    let PointwiseShape {
        batch,
        inputs,
        outputs,
        positions,
    } = shape;
    assert_eq!(x.len(), batch * inputs * positions, "input size");
    assert_eq!(bias.len(), outputs, "bias size");
    let slab_in = inputs * positions;
    let slab_out = outputs * positions;
    let total = batch * slab_out;
    // The jobs, each a block of one sample's output (rows `row..row + rows`, columns
    // `col..col + cols`), which together cover the output once.
    let threads = rayon::current_num_threads();
    let jobs: Vec<OutBlock> = if total == 0 {
        Vec::new()
    } else if batch >= threads {
        // At least as many samples as threads: one whole sample per job.
        (0..batch)
            .map(|n| OutBlock::new(n, (0, outputs), (0, positions)))
            .collect()
    } else if positions > outputs {
        // Fewer samples than threads, and more positions than output rows (the early,
        // wide stages): each sample's positions cut into even blocks of columns. Each
        // product then packs only its own columns of the (large) input and all of the
        // (small) weight; cutting the rows instead would have every block pack the
        // whole input.
        let cols = positions.div_ceil(threads.div_ceil(batch));
        (0..batch)
            .flat_map(|n| {
                (0..positions)
                    .step_by(cols)
                    .map(move |c| OutBlock::new(n, (0, outputs), (c, cols.min(positions - c))))
            })
            .collect()
    } else {
        // Fewer samples than threads: each sample's output rows cut into even blocks.
        // At batch 1 this measured faster than gemm spreading each product over the
        // threads itself (BENCHMARKS.md). Listed here, not nested in rayon, which
        // would run the blocks of one sample on one thread.
        let rows = outputs.div_ceil(threads.div_ceil(batch));
        (0..batch)
            .flat_map(|n| {
                (0..outputs)
                    .step_by(rows)
                    .map(move |r| OutBlock::new(n, (r, rows.min(outputs - r)), (0, positions)))
            })
            .collect()
    };
    // Left unwritten here. With the bias alone, each job first writes its block's bias
    // (on its own thread, where it is about to be read), then the product accumulates
    // onto it. With GELU, the product writes the block without reading it, and the
    // bias and GELU follow, row by row.
    let mut y: Vec<f32> = Vec::with_capacity(total);
    let out = SharedOut(y.as_mut_ptr());
    let with_slope = epilogue == Epilogue::GeluWithSlope;
    let mut slope: Vec<f32> = Vec::with_capacity(if with_slope { total } else { 0 });
    let slope_out = SharedOut(slope.as_mut_ptr());
    let accumulate = epilogue == Epilogue::Bias;
    let run = |job: &OutBlock| {
        let start = job.sample * slab_out + job.row * positions + job.col;
        let rows = job.row..job.row + job.rows;
        // SAFETY: `y` has room for `total` values and outlives the jobs; the jobs'
        // blocks are disjoint, so no two threads write one element; every element of a
        // block is written (its bias) before a product that accumulates reads it, a
        // product that does not accumulate only writes (gemm writes zeros when there
        // are no inputs), and `y` does not overlap `x` or the weight. The same holds
        // for the slopes, which have the outputs' layout and are written here only.
        unsafe {
            if accumulate {
                for (o, &b) in bias[rows.clone()].iter().enumerate() {
                    let row = out
                        .at(start + o * positions)
                        .cast::<std::mem::MaybeUninit<f32>>();
                    std::slice::from_raw_parts_mut(row, job.cols)
                        .fill(std::mem::MaybeUninit::new(b));
                }
            }
            product_at(
                [job.rows, job.cols, inputs],
                out.at(start),
                total - start,
                positions as isize,
                weight.transposed_from(job.row),
                Operand {
                    // (A layer with no inputs has an empty map and nothing to read.)
                    data: x
                        .get(job.sample * slab_in + job.col..(job.sample + 1) * slab_in)
                        .unwrap_or(&[]),
                    row: positions as isize,
                    col: 1,
                },
                accumulate,
                gemm::Parallelism::None,
            );
            // With the bias alone there is nothing more to do: it went in first.
            let shifts = if accumulate { &[][..] } else { &bias[rows] };
            for (o, &b) in shifts.iter().enumerate() {
                let at = start + o * positions;
                let row = std::slice::from_raw_parts_mut(out.at(at), job.cols);
                if epilogue == Epilogue::GeluWithSlope {
                    // The block's slopes, laid out as its outputs (`slope` has room for
                    // `total` values), zeroed before they are seen as floats.
                    let slopes = slope_out.at(at);
                    std::ptr::write_bytes(slopes, 0, job.cols);
                    let slopes = std::slice::from_raw_parts_mut(slopes, job.cols);
                    super::gelu::gelu_shifted_slope_in_place(row, slopes, b);
                } else {
                    super::gelu::gelu_shifted_in_place(row, b);
                }
            }
        }
    };
    {
        use rayon::prelude::*;
        jobs.par_iter().for_each(run);
    }
    // SAFETY: the blocks cover all `total` elements, each written above (and each
    // slope, when asked for).
    unsafe {
        y.set_len(total);
        if with_slope {
            slope.set_len(total);
        }
    }
    (y, slope)
}

/// Sizes of a ConvNeXt block's MLP (expanding pointwise layer, GELU, contracting
/// pointwise layer) applied to a `[batch, channels, positions]` map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlpShape {
    pub batch: usize,
    pub channels: usize,
    pub hidden: usize,
    pub positions: usize,
}

/// `W2^T gelu(W1^T x[n] + b1) + b2` for every sample, at inference: the block's MLP in
/// tiles of `tile` positions, so the `[hidden, positions]` map between its two layers
/// is never made whole. Each tile's hidden values go into a buffer the thread keeps
/// (`hidden * tile` values, sized to stay in its core's cache), GELU is applied there,
/// and the second product reads them back from the cache and accumulates onto the
/// output tile's bias. Apart, the two layers write the whole hidden map (four times
/// the block's input) to memory and read it back; at 512 px that map is 32 MiB per
/// block of the first stage, handed out and faulted in page by page on every call.
///
/// `w1` is `[channels, hidden]` and `w2` `[hidden, channels]` seen through
/// [`WeightView`]s; returns `[batch, channels, positions]`.
#[allow(clippy::too_many_arguments)]
pub fn pointwise_mlp_forward(
    x: &[f32],
    w1: WeightView<'_>,
    b1: &[f32],
    w2: WeightView<'_>,
    b2: &[f32],
    shape: MlpShape,
    tile: usize,
) -> Vec<f32> {
    let MlpShape {
        batch,
        channels,
        hidden,
        positions,
    } = shape;
    assert_eq!(x.len(), batch * channels * positions, "input size");
    assert_eq!(b1.len(), hidden, "expanding bias size");
    assert_eq!(b2.len(), channels, "contracting bias size");
    let tile = tile.max(1);
    let slab = channels * positions;
    let total = batch * slab;
    // Jobs are runs of one sample's positions: a whole sample each when there are at
    // least as many samples as threads, else each sample's positions cut evenly.
    let threads = rayon::current_num_threads();
    let cols = if batch >= threads {
        positions
    } else {
        positions.div_ceil(threads.div_ceil(batch))
    }
    .max(1);
    let jobs: Vec<(usize, usize, usize)> = (0..batch)
        .flat_map(|n| {
            (0..positions)
                .step_by(cols)
                .map(move |c| (n, c, cols.min(positions - c)))
        })
        .collect();
    let mut y: Vec<f32> = Vec::with_capacity(total);
    let out = SharedOut(y.as_mut_ptr());
    let run_in = |buffer: &mut [f32], &(n, first, count): &(usize, usize, usize)| {
        let input = &x[n * slab..(n + 1) * slab];
        for col in (first..first + count).step_by(tile) {
            let width = tile.min(first + count - col);
            let h = &mut buffer[..hidden * width];
            product(
                [hidden, width, channels],
                h,
                width as isize,
                w1.transposed_from(0),
                Operand {
                    data: input.get(col..).unwrap_or(&[]),
                    row: positions as isize,
                    col: 1,
                },
                false,
                gemm::Parallelism::None,
            );
            for (row, &b) in h.chunks_exact_mut(width).zip(b1) {
                super::gelu::gelu_shifted_in_place(row, b);
            }
            let start = n * slab + col;
            // SAFETY: `y` has room for `total` values and outlives the jobs; the jobs'
            // tiles are disjoint, every element of a tile is written (its bias) before
            // the product that accumulates onto it reads it, and `y` overlaps neither
            // the input, the weights nor the hidden buffer.
            unsafe {
                for (o, &b) in b2.iter().enumerate() {
                    let row = out
                        .at(start + o * positions)
                        .cast::<std::mem::MaybeUninit<f32>>();
                    std::slice::from_raw_parts_mut(row, width).fill(std::mem::MaybeUninit::new(b));
                }
                product_at(
                    [channels, width, hidden],
                    out.at(start),
                    total - start,
                    positions as isize,
                    w2.transposed_from(0),
                    Operand {
                        data: h,
                        row: width as isize,
                        col: 1,
                    },
                    true,
                    gemm::Parallelism::None,
                );
            }
        }
    };
    let run = |job: &(usize, usize, usize)| {
        let size = hidden * tile.min(job.2);
        MLP_HIDDEN.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buffer) => {
                if buffer.len() < size {
                    buffer.resize(size, 0.0);
                }
                run_in(&mut buffer, job)
            }
            // A thread already using its buffer (work stolen inside a job) takes a
            // fresh one.
            Err(_) => run_in(&mut vec![0.0; size], job),
        })
    };
    if total > 0 {
        use rayon::prelude::*;
        jobs.par_iter().for_each(run);
    }
    // SAFETY: the jobs' tiles cover all `total` elements, each written above.
    unsafe { y.set_len(total) };
    y
}

thread_local! {
    /// Each thread's buffer for one tile of an MLP's hidden values
    /// ([`pointwise_mlp_forward`]).
    static MLP_HIDDEN: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One block of a pointwise layer's output: sample `sample`, output rows `row..row +
/// rows`, positions `col..col + cols`.
struct OutBlock {
    sample: usize,
    row: usize,
    rows: usize,
    col: usize,
    cols: usize,
}

impl OutBlock {
    fn new(sample: usize, (row, rows): (usize, usize), (col, cols): (usize, usize)) -> Self {
        Self {
            sample,
            row,
            rows,
            col,
            cols,
        }
    }
}

/// The gradients of [`pointwise_forward`] from the output gradient `dy`
/// (`[batch, outputs, positions]`): `(dx, dweight, dbias)`, `dx` only when asked for;
/// the weight gradient is `[inputs, outputs]` whatever the view's strides.
pub fn pointwise_backward(
    x: &[f32],
    weight: WeightView<'_>,
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
    assert_eq!(dy.len(), batch * slab_out, "output-gradient size");

    let dx = want_dx.then(|| {
        let mut dx = vec![0.0f32; batch * slab_in];
        per_sample(&mut dx, slab_in, |n, dx, parallelism| {
            product(
                [inputs, positions, outputs],
                dx,
                positions as isize,
                weight.plain(),
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
            let first = r * per_run;
            for n in first..((r + 1) * per_run).min(batch) {
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
                    // The run's first sample writes `dw` without reading it: fresh
                    // zeroed pages read first are mapped to the kernel's shared zero
                    // page, and the write after it then costs a copy-on-write fault
                    // with a TLB flush on every other core, page by page (seen in
                    // `perf` as a tenth of a training step).
                    n > first,
                    parallelism,
                );
                add_row_sums(&mut db, dy_n);
            }
            (dw, db)
        })
        .collect();
    // Summed into the first run's buffers (adding into fresh zeroed ones would read
    // them first: see the copy-on-write note above).
    let mut partial = partial.into_iter();
    let (mut dw, mut db) = partial
        .next()
        .unwrap_or_else(|| (vec![0.0f32; inputs * outputs], vec![0.0f32; outputs]));
    for (w, b) in partial {
        dw.iter_mut().zip(w).for_each(|(s, v)| *s += v);
        db.iter_mut().zip(b).for_each(|(s, v)| *s += v);
    }
    (dx, dw, db)
}

widest_simd! {
    /// `sums[o] += sum of row o of rows` (`rows` is `sums.len()` rows of equal length),
    /// each row summed in vector lanes rather than one chain of dependent additions.
    fn add_row_sums(sums: &mut [f32], rows: &[f32]) = add_row_sums_loop;
}

#[inline(always)]
fn add_row_sums_loop(sums: &mut [f32], rows: &[f32]) {
    const LANES: usize = 16;
    if sums.is_empty() {
        return;
    }
    let width = rows.len() / sums.len();
    if width == 0 {
        return;
    }
    for (s, row) in sums.iter_mut().zip(rows.chunks_exact(width)) {
        let mut lanes = [0.0f32; LANES];
        let mut blocks = row.chunks_exact(LANES);
        for block in &mut blocks {
            for (l, &v) in lanes.iter_mut().zip(block) {
                *l += v;
            }
        }
        *s += lanes.iter().sum::<f32>() + blocks.remainder().iter().sum::<f32>();
    }
}

pub(crate) use flex::{out_major, try_fast, try_fast_gelu, try_fast_mlp, try_fast_with};

mod flex {
    use super::{
        out_major_copy, out_major_copy_into, pointwise_backward, pointwise_forward_then,
        pointwise_mlp_forward, Epilogue, MlpShape, PointwiseShape, WeightView,
    };
    use crate::kernels::flex_types::{flex_tensor, same, Ad, AdTensor};
    use crate::kernels::gelu::scale_by_slope_in_place;
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

    /// `weight` (`[in, out]`) with its values stored output-major: still `[in, out]` to
    /// every reader (and in a saved record), but lying in memory as `[out, in]`, each
    /// output's weights together, on Flex and `Autodiff<Flex>`; other backends' tensors
    /// are returned as they are.
    ///
    /// The matrix products behind the forward pass read a weight stored so in place.
    /// Stored input-major, gemm repacked the whole weight on every call, which in the
    /// late stages (few positions, large weights) cost as much as the product itself:
    /// 768 inputs to 3072 outputs at 49 positions ran at 110 GFLOP/s on two cores, 245
    /// output-major (`--example pointwise_layouts`, BENCHMARKS.md). Used as a
    /// parameter's initialisation and load mapper, so both a fresh and a loaded
    /// network are stored so; the gradient keeps `[in, out]`.
    pub(crate) fn out_major<B: Backend>(weight: Tensor<B, 2>) -> Tensor<B, 2> {
        fn flex_out_major(weight: Tensor<Flex, 2>) -> Tensor<Flex, 2> {
            let [inputs, _] = weight.dims();
            let strides = weight
                .clone()
                .into_primitive()
                .tensor()
                .layout()
                .strides()
                .to_vec();
            if strides == [1, inputs as isize] {
                return weight;
            }
            let device = weight.device();
            // `into_data` lays the transposed view out contiguously: `[out, in]`.
            Tensor::<Flex, 2>::from_data(weight.transpose().into_data(), &device).transpose()
        }
        let id = TypeId::of::<B>();
        if id == TypeId::of::<Flex>() {
            let weight = same::<_, Tensor<Flex, 2>>(weight).expect("checked Flex");
            same(flex_out_major(weight)).expect("checked Flex")
        } else if id == TypeId::of::<Ad>() {
            let weight = same::<_, Tensor<Ad, 2>>(weight).expect("checked Autodiff<Flex>");
            let require_grad = weight.is_require_grad();
            let stored = Tensor::<Ad, 2>::from_inner(flex_out_major(weight.inner()));
            same(stored.set_require_grad(require_grad)).expect("checked Autodiff<Flex>")
        } else {
            weight
        }
    }

    /// `linear` at every position of `[batch, in, positions]` (see the module
    /// documentation); `None` where the backend is not Flex or `Autodiff<Flex>`, the
    /// map is not f32, or the layer has no bias.
    pub(crate) fn try_fast<B: Backend>(
        linear: &Linear<B>,
        x: Tensor<B, 3>,
    ) -> Option<Tensor<B, 3>> {
        try_fast_with(linear.weight.val(), linear.bias.as_ref()?.val(), x)
    }

    /// `gelu(linear(x))` in one kernel (`pointwise_gelu_forward`; while training,
    /// `Epilogue::GeluWithSlope`, with one backward step for both); `None` where
    /// the backend is not Flex or `Autodiff<Flex>`, the map is not f32, or the layer
    /// has no bias.
    pub(crate) fn try_fast_gelu<B: Backend>(
        linear: &Linear<B>,
        x: Tensor<B, 3>,
    ) -> Option<Tensor<B, 3>> {
        let bias = linear.bias.as_ref()?.val();
        try_fast_then(linear.weight.val(), bias, x, Epilogue::Gelu)
    }

    /// A block's MLP in one tiled kernel ([`pointwise_mlp_forward`]) on Flex, where it
    /// pays: fewer samples than threads with at least as many positions per job as
    /// hidden channels, both weights stored output-major (as the blocks store theirs; a
    /// weight an optimizer step wrote input-major would be repacked on every tile),
    /// both layers with a bias, f32. `None` otherwise, and on every other backend,
    /// `Autodiff<Flex>` included.
    pub(crate) fn try_fast_mlp<B: Backend>(
        expand: &Linear<B>,
        contract: &Linear<B>,
        x: Tensor<B, 3>,
    ) -> Option<Tensor<B, 3>> {
        if TypeId::of::<B>() != TypeId::of::<Flex>() || x.dtype() != DType::F32 {
            return None;
        }
        let [batch, channels, positions] = x.dims();
        let [expand_in, hidden] = expand.weight.dims();
        if expand_in != channels || contract.weight.dims() != [hidden, channels] {
            return None;
        }
        // Only with fewer samples than threads, each sample's positions cut between
        // them: a batch cut into parts of several samples each measured 0.95x tiled
        // (tiny at 224 px, batch 8), and where a job has fewer positions than hidden
        // channels the map stays in the caches anyway and tiles measured level
        // (BENCHMARKS.md).
        let threads = rayon::current_num_threads();
        if batch >= threads || positions / threads.div_ceil(batch) < hidden {
            return None;
        }
        let flex = |t: Tensor<B, 2>| -> Option<FlexTensor> {
            same::<_, FlexTensor>(t.into_primitive().tensor())
        };
        let flex1 = |t: Tensor<B, 1>| -> Option<FlexTensor> {
            same::<_, FlexTensor>(t.into_primitive().tensor())
        };
        let w1 = StridedWeight::of(&flex(expand.weight.val())?, hidden);
        let w2 = StridedWeight::of(&flex(contract.weight.val())?, channels);
        let (v1, v2) = (w1.view(), w2.view());
        if v1.along_in != 1 || v2.along_in != 1 {
            return None;
        }
        let b1 = flex1(expand.bias.as_ref()?.val())?.to_contiguous();
        let b2 = flex1(contract.bias.as_ref()?.val())?.to_contiguous();
        let x = same::<_, FlexTensor>(x.into_primitive().tensor())?.to_contiguous();
        let shape = MlpShape {
            batch,
            channels,
            hidden,
            positions,
        };
        let y = pointwise_mlp_forward(
            x.storage::<f32>(),
            v1,
            b1.storage::<f32>(),
            v2,
            b2.storage::<f32>(),
            shape,
            mlp_tile(hidden),
        );
        let out = flex_tensor(y, vec![batch, channels, positions]);
        Some(Tensor::from_primitive(TensorPrimitive::Float(same(out)?)))
    }

    /// Positions per tile of an MLP with `hidden` channels: about 512 KiB of hidden
    /// values, half a core's L2 cache on the machine measured, within 64..=512
    /// (`--example pointwise_mlp`, BENCHMARKS.md).
    fn mlp_tile(hidden: usize) -> usize {
        ((128 << 10) / hidden.max(1)).clamp(64, 512)
    }

    /// [`try_fast`] with the weight (`[in, out]`) and bias given as tensors.
    pub(crate) fn try_fast_with<B: Backend>(
        weight: Tensor<B, 2>,
        bias: Tensor<B, 1>,
        x: Tensor<B, 3>,
    ) -> Option<Tensor<B, 3>> {
        try_fast_then(weight, bias, x, Epilogue::Bias)
    }

    /// [`try_fast_with`] with the epilogue given ([`Epilogue::Bias`] or
    /// [`Epilogue::Gelu`]; training takes the slopes as well by itself).
    fn try_fast_then<B: Backend>(
        weight: Tensor<B, 2>,
        bias: Tensor<B, 1>,
        x: Tensor<B, 3>,
        epilogue: Epilogue,
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
            same(forward_flex(
                &same(x)?,
                &same(weight)?,
                &same(bias)?,
                shape,
                epilogue,
            ))?
        } else {
            same(forward_autodiff(
                same(x)?,
                same(weight)?,
                same(bias)?,
                shape,
                epilogue,
            ))?
        };
        Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    fn forward_flex(
        x: &FlexTensor,
        weight: &FlexTensor,
        bias: &FlexTensor,
        shape: PointwiseShape,
        epilogue: Epilogue,
    ) -> FlexTensor {
        forward_flex_parts(x, weight, bias, shape, epilogue).0
    }

    /// [`forward_flex`], with the slopes when `epilogue` asks for them.
    fn forward_flex_parts(
        x: &FlexTensor,
        weight: &FlexTensor,
        bias: &FlexTensor,
        shape: PointwiseShape,
        epilogue: Epilogue,
    ) -> (FlexTensor, Option<FlexTensor>) {
        let (x, bias) = (x.to_contiguous(), bias.to_contiguous());
        let weight = StridedWeight::of(weight, shape.outputs);
        // The products read an output-major weight in place and repack any other on
        // every call (see `out_major`): a weight stored input-major (the optimizer's
        // update and the running average write them so) is copied once here instead,
        // for all the samples.
        let run = |view: WeightView<'_>| {
            pointwise_forward_then(
                x.storage::<f32>(),
                view,
                bias.storage::<f32>(),
                shape,
                epilogue,
            )
        };
        let (y, slope) = match weight.view() {
            view if view.along_in == 1 || shape.inputs * shape.outputs == 0 => run(view),
            view => {
                let size = shape.inputs * shape.outputs;
                let copied = |data: &[f32]| -> (Vec<f32>, Vec<f32>) {
                    run(WeightView {
                        data,
                        along_in: 1,
                        along_out: shape.inputs,
                    })
                };
                // Into this thread's buffer, kept from one call to the next: a fresh
                // buffer per call, zeroed and faulted in page by page, made the copy
                // 1.5-1.9x slower (BENCHMARKS.md). A thread already using its buffer
                // (work stolen while a product runs) copies into a new one.
                WEIGHT_COPY.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut buffer) => {
                        if buffer.len() < size {
                            buffer.resize(size, 0.0);
                        }
                        let buffer = &mut buffer[..size];
                        out_major_copy_into(view, shape.inputs, shape.outputs, buffer);
                        copied(buffer)
                    }
                    Err(_) => copied(&out_major_copy(view, shape.inputs, shape.outputs)),
                })
            }
        };
        let dims = vec![shape.batch, shape.outputs, shape.positions];
        let slope = (epilogue == Epilogue::GeluWithSlope).then(|| flex_tensor(slope, dims.clone()));
        (flex_tensor(y, dims), slope)
    }

    thread_local! {
        /// Each thread's output-major copy of the weight its last training forward pass
        /// multiplied by (see `forward_flex_parts`); as large as the largest layer's.
        static WEIGHT_COPY: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// An `[in, out]` weight tensor kept as it lies when it is a strided view with
    /// positive strides (a patch convolution's weight is `[out, in]` seen transposed:
    /// copying it made every forward pass walk the largest weights of the network once
    /// more, on one thread), and made contiguous otherwise.
    struct StridedWeight {
        tensor: FlexTensor,
        offset: usize,
        along: [usize; 2],
    }

    impl StridedWeight {
        fn of(weight: &FlexTensor, outputs: usize) -> Self {
            let layout = weight.layout();
            if let [along_in, along_out] = *layout.strides() {
                if along_in > 0 && along_out > 0 {
                    return Self {
                        tensor: weight.clone(),
                        offset: layout.start_offset(),
                        along: [along_in as usize, along_out as usize],
                    };
                }
            }
            Self {
                tensor: weight.to_contiguous(),
                offset: 0,
                along: [outputs, 1],
            }
        }

        /// The weight made contiguous `[in, out]` (no copy when it already is).
        fn input_major(weight: &FlexTensor, outputs: usize) -> Self {
            Self {
                tensor: weight.to_contiguous(),
                offset: 0,
                along: [outputs, 1],
            }
        }

        fn view(&self) -> WeightView<'_> {
            WeightView {
                data: &self.tensor.storage::<f32>()[self.offset..],
                along_in: self.along[0],
                along_out: self.along[1],
            }
        }
    }

    #[derive(Debug)]
    struct PointwiseBackward;

    /// `t` made contiguous, taken by value: when nothing needs copying, the handle
    /// handed back is then the only one, and its buffer can be written in place.
    fn into_contiguous(t: FlexTensor) -> FlexTensor {
        t.to_contiguous()
    }

    impl Backward<Flex, 3> for PointwiseBackward {
        /// Input and weight as the checkpointer holds them, GELU's slopes when the
        /// layer's forward pass applied GELU too, and the sizes.
        type State = (NodeId, NodeId, Option<FlexTensor>, PointwiseShape);

        fn backward(
            self,
            ops: Ops<Self::State, 3>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let [node_x, node_weight, node_bias] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            let (x_state, weight_state, slope, shape) = ops.state;
            let x = checkpointer.retrieve_node_output::<FlexTensor>(x_state);
            let weight = checkpointer.retrieve_node_output::<FlexTensor>(weight_state);
            let (x, mut dy) = (x.to_contiguous(), into_contiguous(grad));
            if let Some(slope) = slope {
                // Through GELU first: the gradient at its input is the one at its
                // output times the slope, written over the incoming gradient when
                // nothing else holds it (usually so).
                let slope = slope.storage::<f32>();
                match dy.try_storage_mut::<f32>() {
                    Some(values) => scale_by_slope_in_place(slope, values),
                    None => {
                        let mut values = dy.storage::<f32>().to_vec();
                        scale_by_slope_in_place(slope, &mut values);
                        dy = flex_tensor(values, vec![shape.batch, shape.outputs, shape.positions]);
                    }
                }
            }
            // Always input-major here, whatever way the parameter lies (output-major
            // when fresh or loaded, input-major after an optimizer step): gemm's
            // rounding follows the operands' layout, and a run resumed from a
            // checkpoint must retrace the uninterrupted run bit for bit. A copy only
            // where the weight lies otherwise (a patch layer's; a block's on its first
            // step).
            let weight = StridedWeight::input_major(&weight, shape.outputs);
            let (dx, dweight, dbias) = pointwise_backward(
                x.storage::<f32>(),
                weight.view(),
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

    /// The layer on `Autodiff<Flex>`, with GELU after it when `epilogue` says so (the
    /// slopes then kept for the backward step, not the layer's output).
    fn forward_autodiff(
        x: AdTensor,
        weight: AdTensor,
        bias: AdTensor,
        shape: PointwiseShape,
        epilogue: Epilogue,
    ) -> AdTensor {
        match PointwiseBackward
            .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone(), bias.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                let tracked = match epilogue {
                    Epilogue::Bias => Epilogue::Bias,
                    Epilogue::Gelu | Epilogue::GeluWithSlope => Epilogue::GeluWithSlope,
                };
                let (y, slope) = forward_flex_parts(
                    &x.primitive,
                    &weight.primitive,
                    &bias.primitive,
                    shape,
                    tracked,
                );
                prep.finish((x_state, weight_state, slope, shape), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward_flex(
                &x.primitive,
                &weight.primitive,
                &bias.primitive,
                shape,
                epilogue,
            )),
        }
    }
}
