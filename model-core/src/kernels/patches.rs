//! The rearrangement behind the patch convolutions (`convnext::norm::patch_conv`):
//! the non-overlapping `kh x kw` patches of `[batch, channels, height, width]` as the
//! columns of `[batch, channels * kh * kw, rows * cols]`.
//!
//! Written with tensor operations this is a reshape, a six-axis permute and a reshape,
//! and Flex makes the permuted view contiguous one element at a time through its
//! generic strided iterator, forwards and again for the gradient: about 5 % of the
//! default job's training step in `perf` (BENCHMARKS.md). Here both directions are
//! plain loops over image rows, one plane per task. A permutation moves values without
//! arithmetic, so the result equals the composed operations exactly.

/// The shape of one rearrangement: the input's `[batch, channels, height, width]` and
/// the patch `[kh, kw]`; `height` and `width` are multiples of the patch sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchShape {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kh: usize,
    pub kw: usize,
}

impl PatchShape {
    fn plane(&self) -> usize {
        self.height * self.width
    }

    fn check(&self, len: usize) {
        assert!(self.kh > 0 && self.kw > 0, "empty patch");
        assert!(
            self.height % self.kh == 0 && self.width % self.kw == 0,
            "the sides must be multiples of the patch's"
        );
        assert_eq!(
            len,
            self.batch * self.channels * self.plane(),
            "buffer size"
        );
    }
}

/// `x` (`[batch, channels, height, width]`) into `out` laid out as
/// `[batch, channels, kh, kw, rows, cols]`, which is `[batch, channels * kh * kw,
/// rows * cols]` with each column ordered like a convolution weight's `[c, kh, kw]`.
pub fn to_columns(x: &[f32], shape: PatchShape, out: &mut [f32]) {
    shape.check(x.len());
    assert_eq!(out.len(), x.len(), "output size");
    for_each_plane(x, out, shape.plane(), |src, dst| {
        plane_to_columns(src, dst, shape)
    });
}

/// The inverse of [`to_columns`]: `columns` laid out as `[batch, channels, kh, kw,
/// rows, cols]` back into `[batch, channels, height, width]` (the gradient's way).
pub fn from_columns(columns: &[f32], shape: PatchShape, out: &mut [f32]) {
    shape.check(columns.len());
    assert_eq!(out.len(), columns.len(), "output size");
    for_each_plane(columns, out, shape.plane(), |src, dst| {
        plane_from_columns(src, dst, shape)
    });
}

/// Runs `f` on every pair of matching planes, spread over rayon's threads where the
/// kernels are built with it.
fn for_each_plane(
    src: &[f32],
    dst: &mut [f32],
    plane: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    if plane == 0 {
        return;
    }
    #[cfg(feature = "flex-kernels")]
    {
        use rayon::prelude::*;
        dst.par_chunks_mut(plane)
            .zip(src.par_chunks(plane))
            .for_each(|(d, s)| f(s, d));
    }
    #[cfg(not(feature = "flex-kernels"))]
    for (d, s) in dst.chunks_mut(plane).zip(src.chunks(plane)) {
        f(s, d);
    }
}

/// One channel plane: image row `r * kh + ky` supplies row `r` of the `kw` column
/// blocks `(ky, 0..kw)`, every `kw`-th value to each.
fn plane_to_columns(src: &[f32], dst: &mut [f32], shape: PatchShape) {
    let PatchShape { width, kh, kw, .. } = shape;
    let (rows, cols) = (shape.height / kh, width / kw);
    let block = rows * cols;
    for r in 0..rows {
        for ky in 0..kh {
            let line = &src[(r * kh + ky) * width..][..width];
            for kx in 0..kw {
                let start = (ky * kw + kx) * block + r * cols;
                let to = &mut dst[start..start + cols];
                for (c, v) in to.iter_mut().enumerate() {
                    *v = line[c * kw + kx];
                }
            }
        }
    }
}

/// One channel plane of [`from_columns`]: each image row gathered back from its `kw`
/// column blocks.
fn plane_from_columns(src: &[f32], dst: &mut [f32], shape: PatchShape) {
    let PatchShape { width, kh, kw, .. } = shape;
    let (rows, cols) = (shape.height / kh, width / kw);
    let block = rows * cols;
    for r in 0..rows {
        for ky in 0..kh {
            let line = &mut dst[(r * kh + ky) * width..][..width];
            for kx in 0..kw {
                let start = (ky * kw + kx) * block + r * cols;
                let from = &src[start..start + cols];
                for (c, v) in from.iter().enumerate() {
                    line[c * kw + kx] = *v;
                }
            }
        }
    }
}

#[cfg(feature = "flex-kernels")]
pub(crate) use flex::try_fast;

#[cfg(feature = "flex-kernels")]
mod flex {
    use super::{from_columns, to_columns, PatchShape};
    use crate::kernels::flex_types::{flex_tensor, is_flex, same, AdTensor};
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::Flex;
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Tensor, TensorPrimitive};
    use burn_flex::FlexTensor;
    use std::any::TypeId;

    fn forward_flex(x: FlexTensor, shape: PatchShape) -> FlexTensor {
        let x = x.to_contiguous();
        let input = x.storage::<f32>();
        let mut out = vec![0.0f32; input.len()];
        to_columns(input, shape, &mut out);
        let [rows, cols] = [shape.height / shape.kh, shape.width / shape.kw];
        flex_tensor(
            out,
            vec![
                shape.batch,
                shape.channels * shape.kh * shape.kw,
                rows * cols,
            ],
        )
    }

    /// `x` rearranged into patch columns on Flex or `Autodiff<Flex>`; `None` on other
    /// backends and other element types.
    pub(crate) fn try_fast<B: Backend>(
        x: Tensor<B, 4>,
        [kh, kw]: [usize; 2],
    ) -> Option<Tensor<B, 3>> {
        if x.dtype() != DType::F32 || !is_flex::<B>() {
            return None;
        }
        let [batch, channels, height, width] = x.dims();
        let shape = PatchShape {
            batch,
            channels,
            height,
            width,
            kh,
            kw,
        };
        if kh == 0 || kw == 0 || height % kh != 0 || width % kw != 0 {
            return None;
        }
        let out: B::FloatTensorPrimitive = if TypeId::of::<B>() == TypeId::of::<Flex>() {
            same(forward_flex(same(x.into_primitive().tensor())?, shape))?
        } else {
            same(forward_autodiff(same(x.into_primitive().tensor())?, shape))?
        };
        Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    #[derive(Debug)]
    struct ColumnsBackward;

    impl Backward<Flex, 1> for ColumnsBackward {
        type State = PatchShape;

        fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
            let [node_x] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
            if let Some(node) = node_x {
                let shape = ops.state;
                let g = grad.storage::<f32>();
                let mut dx = vec![0.0f32; g.len()];
                from_columns(g, shape, &mut dx);
                let dims = vec![shape.batch, shape.channels, shape.height, shape.width];
                grads.register::<Flex>(node.id, flex_tensor(dx, dims));
            }
        }
    }

    fn forward_autodiff(x: AdTensor, shape: PatchShape) -> AdTensor {
        match ColumnsBackward
            .prepare::<NoCheckpointing>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(shape, forward_flex(x.primitive, shape)),
            OpsKind::UnTracked(prep) => prep.finish(forward_flex(x.primitive, shape)),
        }
    }
}
