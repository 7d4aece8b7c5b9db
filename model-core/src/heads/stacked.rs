//! Every head of a category at once.
//!
//! A category's heads all read the same feature map and differ only in their weights
//! and class counts, but run one after another each head is about twenty small
//! operations, and on the small feature maps of a from-scratch network (2 x 2 at 64 px)
//! those operations cost far more than their arithmetic: a head added about 6 ms to a
//! 32-image training step on the CPU, so ten heads took more time than the backbone
//! (BENCHMARKS.md). Here each kind of weight is stacked over the heads, one tensor per
//! kind, and every step runs once for all heads:
//! - the first spatial convolution is one grouped convolution whose groups each make
//!   the outputs of every head for that group (channels ordered group, head, channel);
//! - the second is one grouped convolution with a group per (group, head) pair;
//! - with one map per head, pooling the gated features is one batched product of the
//!   maps with the feature planes;
//! - pooling the channel-gated features equals pooling and then scaling, since the
//!   channel weights do not vary over the plane;
//! - channel attention and the classifier are batched matrix products over the heads,
//!   each bias a row of the weight against a column of ones, the classifier's last
//!   layer padded with zero columns to the widest head; the LayerNorms' scales and
//!   shifts are one row over all heads.
//!
//! The shapes are chosen for Flex's fast element-wise paths (same-shaped operands, or
//! one row shared by all): a `[heads, 1, width]` operand broadcast over the batch is
//! walked element by element there, which cost most of the first version's gain.
//!
//! The weights stay the modules' own (records, exports and the checkpoint layout do not
//! change): they are stacked in the forward pass, so gradients reach every head's
//! parameters through the stacking. [`AttributeHead::forward`] stays the definition;
//! the tests hold this path to it, values and gradients.

use super::{AttributeHead, HeadOutput};
use crate::kernels::conv::grouped_conv_same;
use crate::kernels::gelu::gelu;
use burn::module::{Module, Param, ParamId};
use burn::nn::conv::Conv2d;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::{activation, backend::Backend, Tensor};

/// Heads of at most this many parameters each run stacked ([`worth_stacking`]).
/// Stacking copies every head's weights once per forward pass. That pays where the
/// heads' many small operations cost more than their arithmetic, and not where the
/// weights are large: on the 2-core CPU of BENCHMARKS.md, heads of width 64 (about
/// 22,000 parameters each) made a 32-image training step 12-34 % faster stacked, while
/// heads of width 512 (about 1.3 million each) made inference about 10 % slower.
pub const STACK_MAX_PARAMS: usize = 262_144;

/// Whether `heads` should run stacked: on the CPU backend (Flex), where the gain was
/// measured, when they can and each is small enough ([`STACK_MAX_PARAMS`]). On wgpu
/// (lavapipe) the stacked heads' probabilities came 1.2e-3 from the CPU's, past the
/// 1e-3 the device test holds them to, and that was not examined yet: GPU backends
/// keep running one head after another.
pub fn worth_stacking<B: Backend>(heads: &[AttributeHead<B>]) -> bool {
    on_cpu::<B>() && stackable(heads) && heads[0].num_params() <= STACK_MAX_PARAMS
}

#[cfg(feature = "flex-kernels")]
fn on_cpu<B: Backend>() -> bool {
    crate::kernels::flex_types::is_flex::<B>()
}

#[cfg(not(feature = "flex-kernels"))]
fn on_cpu<B: Backend>() -> bool {
    false
}

/// Whether `heads` can run stacked: more than one, all of the same shapes except the
/// number of classes, with every bias present, and both spatial convolutions square
/// (as many channels out as in) and grouped alike, as `HeadConfig` makes them.
pub fn stackable<B: Backend>(heads: &[AttributeHead<B>]) -> bool {
    let Some(first) = heads.first() else {
        return false;
    };
    let [out, per_group_in, _, _] = first.spatial.conv1.weight.dims();
    let square = first.spatial.conv1.groups == first.spatial.conv2.groups
        && out == per_group_in * first.spatial.conv1.groups
        && first.spatial.conv1.weight.shape() == first.spatial.conv2.weight.shape();
    if !square {
        return false;
    }
    let conv_like = |a: &Conv2d<B>, b: &Conv2d<B>| {
        a.weight.shape() == b.weight.shape()
            && a.groups == b.groups
            && a.padding == b.padding
            && a.stride == b.stride
            && a.dilation == b.dilation
            && a.bias.is_some()
            && b.bias.is_some()
    };
    let linear_like = |a: &Linear<B>, b: &Linear<B>| {
        a.weight.shape() == b.weight.shape() && a.bias.is_some() && b.bias.is_some()
    };
    let norm_like = |a: &LayerNorm<B>, b: &LayerNorm<B>| {
        a.gamma.shape() == b.gamma.shape() && a.beta.is_some() && b.beta.is_some()
    };
    let out_like = |a: &Linear<B>, b: &Linear<B>| {
        a.weight.dims()[0] == b.weight.dims()[0] && a.bias.is_some() && b.bias.is_some()
    };
    heads.len() > 1
        && heads.iter().all(|h| {
            conv_like(&h.spatial.conv1, &first.spatial.conv1)
                && conv_like(&h.spatial.conv2, &first.spatial.conv2)
                && h.spatial.per_channel == first.spatial.per_channel
                && linear_like(&h.channel.fc1, &first.channel.fc1)
                && linear_like(&h.channel.fc2, &first.channel.fc2)
                && h.classifier.hidden.len() == first.classifier.hidden.len()
                && h.classifier
                    .hidden
                    .iter()
                    .zip(&first.classifier.hidden)
                    .all(|(a, b)| {
                        linear_like(&a.linear, &b.linear)
                            && norm_like(&a.norm, &b.norm)
                            && a.dropout.prob == b.dropout.prob
                    })
                && out_like(&h.classifier.out, &first.classifier.out)
        })
}

/// Every head's output for `features: [batch, head_dim, height, width]`, in head
/// order: the same values as running [`AttributeHead::forward`] on each (to rounding),
/// in a few operations whatever the number of heads.
///
/// # Panics
/// If the heads are not [`stackable`]. The heads' LayerNorms must share their epsilon,
/// as heads built from one `HeadConfig` do.
pub fn forward_stacked<B: Backend>(
    heads: &[AttributeHead<B>],
    features: Tensor<B, 4>,
) -> Vec<HeadOutput<B>> {
    assert!(stackable(heads), "the heads cannot run stacked");
    let n = heads.len();
    let [batch, channels, height, width] = features.dims();
    let first = &heads[0];
    let groups = first.spatial.conv1.groups;
    let per_group = channels / groups;

    // Spatial attention, first convolution: one group makes every head's outputs for
    // that group, so its filters are ordered (group, head, channel in the group).
    let conv1 = stacked_conv(
        heads.iter().map(|h| &h.spatial.conv1).collect(),
        groups,
        groups,
    );
    let hidden = gelu(grouped_conv_same(&conv1, features.clone()));
    // Second convolution: one group per (group, head) pair, the same ordering.
    let conv2 = stacked_conv(
        heads.iter().map(|h| &h.spatial.conv2).collect(),
        groups,
        groups * n,
    );
    let scores =
        grouped_conv_same(&conv2, hidden).reshape([batch, groups, n, per_group, height, width]);
    // [batch, heads, channels]: each head's gated features, pooled over the plane;
    // and each head's attention map [batch, heads, height, width].
    let plane = height * width;
    let (pooled, map) = if first.spatial.per_channel {
        let gate = activation::sigmoid(scores)
            .swap_dims(1, 2)
            .reshape([batch, n, channels, height, width]);
        let map = gate.clone().mean_dim(2).reshape([batch, n, height, width]);
        // Repeated rather than broadcast: Flex multiplies same-shaped tensors in place.
        let pooled = (gate * features.unsqueeze_dim::<5>(1).repeat_dim(1, n))
            .reshape([batch, n, channels, plane])
            .mean_dim(3)
            .reshape([batch, n, channels]);
        (pooled, map)
    } else {
        let map =
            activation::sigmoid(scores.mean_dim(3).mean_dim(1)).reshape([batch, n, height, width]);
        // One map per head: pooling the gated features is a product with the map.
        let pooled = map
            .clone()
            .reshape([batch, n, plane])
            .matmul(features.reshape([batch, channels, plane]).swap_dims(1, 2))
            .div_scalar(plane as f64);
        (pooled, map)
    };

    // From here on the heads lead: [heads, batch, width] for batched products.
    let pooled = contiguous(pooled.swap_dims(0, 1));
    let weights = activation::sigmoid(stacked_linear(
        heads.iter().map(|h| &h.channel.fc2).collect(),
        gelu(stacked_linear(
            heads.iter().map(|h| &h.channel.fc1).collect(),
            pooled.clone(),
            None,
        )),
        None,
    ));
    let mut x = weights * pooled;
    for (i, layer) in first.classifier.hidden.iter().enumerate() {
        let linear = stacked_linear(
            heads
                .iter()
                .map(|h| &h.classifier.hidden[i].linear)
                .collect(),
            x,
            None,
        );
        let norms: Vec<&LayerNorm<B>> =
            heads.iter().map(|h| &h.classifier.hidden[i].norm).collect();
        // [batch, heads * width]: each head's scale and shift become one shared row,
        // and the dropout masks' first axis is the batch's (`masks::keep_mask`).
        let normed = stacked_norm(&norms, linear);
        let width = normed.dims()[1] / n;
        x = crate::masks::dropout(gelu(normed), layer.dropout.prob)
            .reshape([batch, n, width])
            .swap_dims(0, 1);
    }
    let classes: Vec<usize> = heads
        .iter()
        .map(|h| h.classifier.out.weight.dims()[1])
        .collect();
    let widest = classes.iter().copied().max().unwrap_or(0);
    let logits = stacked_linear(
        heads.iter().map(|h| &h.classifier.out).collect(),
        x,
        Some(widest),
    );

    classes
        .iter()
        .enumerate()
        .map(|(h, &c)| HeadOutput {
            logits: logits
                .clone()
                .narrow(0, h, 1)
                .reshape([batch, widest])
                .narrow(1, 0, c),
            attention: map.clone().narrow(1, h, 1).reshape([batch, height, width]),
        })
        .collect()
}

/// The convolutions `convs` (each `[channels, channels / groups, k, k]`, `groups`
/// groups) as one layer of `new_groups` groups whose filters are ordered (group, head,
/// filter of the group).
fn stacked_conv<B: Backend>(convs: Vec<&Conv2d<B>>, groups: usize, new_groups: usize) -> Conv2d<B> {
    let n = convs.len();
    let [out, per_group_in, kh, kw] = convs[0].weight.dims();
    let per_group_out = out / groups;
    let weight = Tensor::stack::<5>(convs.iter().map(|c| c.weight.val()).collect(), 0)
        .reshape([n, groups, per_group_out * per_group_in * kh * kw])
        .swap_dims(0, 1)
        .reshape([n * out, per_group_in, kh, kw]);
    let bias = Tensor::stack::<2>(
        convs
            .iter()
            .map(|c| c.bias.as_ref().expect("stackable checked the bias").val())
            .collect(),
        0,
    )
    .reshape([n, groups, per_group_out])
    .swap_dims(0, 1)
    .reshape([n * out]);
    Conv2d {
        weight: Param::initialized(ParamId::new(), weight),
        bias: Some(Param::initialized(ParamId::new(), bias)),
        stride: convs[0].stride,
        kernel_size: [kh, kw],
        dilation: convs[0].dilation,
        groups: new_groups,
        padding: convs[0].padding.clone(),
    }
}

/// `x` laid out row-major (Flex's fast element-wise paths need it).
fn contiguous<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let dims = x.dims();
    x.reshape([dims.iter().product::<usize>()]).reshape(dims)
}

/// One linear layer per head: `x: [heads, batch, in]` -> `[heads, batch, out]`, or
/// `[heads, batch, pad_to]` with each layer's missing outputs zero. The bias rides in
/// the product as one more input row against a column of ones: a bias of shape
/// `[heads, 1, out]` added to the product would be a broadcast Flex walks element by
/// element.
fn stacked_linear<B: Backend>(
    layers: Vec<&Linear<B>>,
    x: Tensor<B, 3>,
    pad_to: Option<usize>,
) -> Tensor<B, 3> {
    let [n, batch, inputs] = x.dims();
    let width = pad_to.unwrap_or_else(|| layers[0].weight.dims()[1]);
    // Each head's weight rows then its bias row, all heads in one copy.
    let rows: Vec<Tensor<B, 2>> = layers
        .iter()
        .flat_map(|l| {
            let bias = l.bias.as_ref().expect("stackable checked the bias").val();
            [l.weight.val(), bias.unsqueeze_dim::<2>(0)]
        })
        .map(|t| {
            let [rows, cols] = t.dims();
            if cols < width {
                Tensor::cat(
                    vec![t.clone(), Tensor::zeros([rows, width - cols], &t.device())],
                    1,
                )
            } else {
                t
            }
        })
        .collect();
    let weights = Tensor::cat(rows, 0).reshape([n, inputs + 1, width]);
    let ones = Tensor::ones([n, batch, 1], &x.device());
    Tensor::cat(vec![x, ones], 2).matmul(weights)
}

/// Each head's LayerNorm over the last axis of `x: [heads, batch, width]`: normalised
/// once with the first norm's epsilon and no scale, then each head's scale and shift
/// as one row over `[batch, heads * width]`, the shape returned.
fn stacked_norm<B: Backend>(norms: &[&LayerNorm<B>], x: Tensor<B, 3>) -> Tensor<B, 2> {
    let [n, batch, width] = x.dims();
    let mut plain = norms[0].clone();
    plain.gamma = Param::initialized(ParamId::new(), Tensor::ones([width], &x.device()));
    plain.beta = None;
    let row = |t: Vec<Tensor<B, 1>>| Tensor::cat(t, 0).unsqueeze_dim::<2>(0);
    let gamma = row(norms.iter().map(|l| l.gamma.val()).collect());
    let beta = row(norms
        .iter()
        .map(|l| l.beta.as_ref().expect("stackable checked the shift").val())
        .collect());
    plain.forward(x).swap_dims(0, 1).reshape([batch, n * width]) * gamma + beta
}
