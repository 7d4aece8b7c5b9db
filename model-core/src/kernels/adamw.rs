//! AdamW with per-tensor gradient-norm clipping as one pass over each parameter, on the
//! CPU backend (Flex); Burn's own `AdamW` and `GradientClipping` on every other backend.
//!
//! Burn's `OptimizerAdaptor` steps one parameter tensor at a time, on the thread that
//! called `Optimizer::step`, while the worker threads wait. Its clipping by norm takes
//! five tensor operations per parameter and AdamW another fifteen or so (the two moment
//! updates, their bias corrections, the square root, the division, the decay and the
//! step), each a pass over the tensor into a fresh buffer. For the default job's network
//! (about a hundred tensors, most of them a few hundred values long) those two thousand
//! small operations were a tenth of a training step in a `perf` profile, all of it on one
//! core (BENCHMARKS.md). Here a parameter costs one pass for its gradient's norm and one
//! for everything else, in place in the moment buffers and, when nothing else holds it,
//! in the parameter's own buffer.
//!
//! The arithmetic is Burn's, operation for operation and in the same order, in f32:
//! `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`, then
//! `p = p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`, the gradient
//! first scaled by `min(1, max_norm / (|g| + f32::MIN_POSITIVE))`. Only the norm's sum of
//! squares is accumulated differently (in f64, in chunks), so the two agree to rounding
//! (`tests/optim.rs`). The state is Burn's `AdamWState`, so optimizer checkpoints
//! written with Burn's AdamW load here and the other way round. AMSGrad and cautious
//! weight decay are not offered.

use burn::grad_clipping::GradientClipping;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::LearningRate;
use burn::optim::{AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

/// The settings of [`FusedAdamW`]; the defaults are Burn's `AdamWConfig`'s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FusedAdamWConfig {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
    /// Each parameter's gradient is scaled down to this L2 norm when longer (Burn's
    /// `GradientClipping::Norm`); `None`: no clipping.
    pub clip_norm: Option<f32>,
}

impl Default for FusedAdamWConfig {
    fn default() -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-5,
            weight_decay: 1e-4,
            clip_norm: None,
        }
    }
}

impl FusedAdamWConfig {
    pub fn with_weight_decay(self, weight_decay: f32) -> Self {
        Self {
            weight_decay,
            ..self
        }
    }

    pub fn with_clip_norm(self, clip_norm: Option<f32>) -> Self {
        Self { clip_norm, ..self }
    }

    /// Burn's configuration of the same optimizer (the path on other backends, and the
    /// reference the tests compare with).
    pub fn stock(&self) -> AdamWConfig {
        AdamWConfig::new()
            .with_beta_1(self.beta_1)
            .with_beta_2(self.beta_2)
            .with_epsilon(self.epsilon)
            .with_weight_decay(self.weight_decay)
            .with_grad_clipping(
                self.clip_norm
                    .map(burn::grad_clipping::GradientClippingConfig::Norm),
            )
    }

    pub fn build(&self) -> FusedAdamW {
        FusedAdamW {
            config: *self,
            stock: self.stock().build(),
        }
    }

    /// The optimizer for module `M`. The clipping happens inside [`FusedAdamW`]'s step,
    /// so the adaptor is given none of its own.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
    ) -> OptimizerAdaptor<FusedAdamW, M, B> {
        OptimizerAdaptor::from(self.build())
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct FusedAdamW {
    config: FusedAdamWConfig,
    /// Burn's AdamW with the same settings, for the backends without the fused pass.
    stock: AdamW,
}

/// The numbers one step of one tensor needs besides the buffers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepScalars {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    /// `1 - b1^t` and `1 - b2^t` for this step's `t` (1 on the first step).
    pub correction_1: f32,
    pub correction_2: f32,
    /// `1 - lr * weight_decay`.
    pub keep: f32,
    pub lr: f32,
    /// What the gradient is multiplied by first (the clipping).
    pub grad_scale: f32,
}

impl StepScalars {
    /// The scalars of step `time` (counted from 1) at rate `lr`, the gradient scaled by
    /// `grad_scale`, as Burn's AdamW computes them.
    pub fn new(config: &FusedAdamWConfig, lr: LearningRate, time: usize, grad_scale: f32) -> Self {
        let t = time as i32;
        Self {
            beta_1: config.beta_1,
            beta_2: config.beta_2,
            epsilon: config.epsilon,
            correction_1: 1.0 - config.beta_1.powi(t),
            correction_2: 1.0 - config.beta_2.powi(t),
            keep: (1.0 - lr * config.weight_decay as f64) as f32,
            lr: lr as f32,
            grad_scale,
        }
    }
}

/// What Burn's clipping by norm multiplies a gradient by: 1 when its L2 norm is at most
/// `max_norm`, `max_norm / norm` (nearly) when longer.
pub fn clip_scale(grad: &[f32], max_norm: f32) -> f32 {
    let norm = sum_of_squares(grad).sqrt() as f32;
    (max_norm / (norm + f32::MIN_POSITIVE)).min(1.0)
}

/// Values per parallel task, and the length below which a tensor is done on one thread.
#[cfg(feature = "flex-kernels")]
const CHUNK: usize = 16 * 1024;

fn sum_of_squares(values: &[f32]) -> f64 {
    let chunk = |c: &[f32]| -> f64 {
        // Eight f32 lanes, summed into f64 at the end of each run of 256.
        c.chunks(256)
            .map(|run| {
                let mut lanes = [0.0f32; 8];
                let mut exact = run.chunks_exact(8);
                for block in &mut exact {
                    for (l, &v) in lanes.iter_mut().zip(block) {
                        *l += v * v;
                    }
                }
                let tail: f32 = exact.remainder().iter().map(|v| v * v).sum();
                lanes.iter().map(|&l| l as f64).sum::<f64>() + tail as f64
            })
            .sum()
    };
    #[cfg(feature = "flex-kernels")]
    if values.len() > CHUNK {
        use rayon::prelude::*;
        return values.par_chunks(CHUNK).map(chunk).sum();
    }
    chunk(values)
}

/// One AdamW step over matching buffers: the moments `m1`, `m2` and the parameter
/// `param` are updated in place from `grad`.
pub fn adamw_step(param: &mut [f32], grad: &[f32], m1: &mut [f32], m2: &mut [f32], s: StepScalars) {
    let n = param.len();
    assert!(
        grad.len() == n && m1.len() == n && m2.len() == n,
        "AdamW buffers of different lengths"
    );
    #[cfg(feature = "flex-kernels")]
    if n > CHUNK {
        use rayon::prelude::*;
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m1.par_chunks_mut(CHUNK))
            .zip(m2.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), a), v)| step_chunk(p, g, a, v, s));
        return;
    }
    step_chunk(param, grad, m1, m2, s)
}

widest_simd! {
    fn step_chunk(p: &mut [f32], g: &[f32], m1: &mut [f32], m2: &mut [f32], s: StepScalars) =
        step_loop;
}

#[inline(always)]
fn step_loop(p: &mut [f32], g: &[f32], m1: &mut [f32], m2: &mut [f32], s: StepScalars) {
    let f1 = 1.0 - s.beta_1;
    let f2 = 1.0 - s.beta_2;
    for (((p, &g), a), v) in p.iter_mut().zip(g).zip(m1.iter_mut()).zip(m2.iter_mut()) {
        let g = g * s.grad_scale;
        *a = *a * s.beta_1 + g * f1;
        *v = *v * s.beta_2 + (g * g) * f2;
        let delta = (*a / s.correction_1) / ((*v / s.correction_2).sqrt() + s.epsilon);
        *p = *p * s.keep - delta * s.lr;
    }
}

impl<B: Backend> SimpleOptimizer<B> for FusedAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        #[cfg(feature = "flex-kernels")]
        if flex::handles(&tensor, &grad, state.as_ref()) {
            return flex::step(&self.config, lr, tensor, grad, state);
        }
        let grad = match self.config.clip_norm {
            Some(max) => GradientClipping::Norm(max).clip_gradient(grad),
            None => grad,
        };
        self.stock.step(lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}

/// A fresh state's moments (zeros), for the first step of a tensor shaped like `like`.
// Used by the Flex step only.
#[cfg_attr(not(feature = "flex-kernels"), allow(dead_code))]
fn first_state<B: Backend, const D: usize>(like: &Tensor<B, D>) -> AdaptiveMomentumState<B, D> {
    AdaptiveMomentumState::new(0, like.zeros_like(), like.zeros_like())
}

#[cfg(feature = "flex-kernels")]
mod flex {
    use super::{adamw_step, clip_scale, first_state, FusedAdamWConfig, StepScalars};
    use crate::kernels::flex_types::same;
    use burn::backend::Flex;
    use burn::optim::LearningRate;
    use burn::optim::{AdamWState, AdaptiveMomentumState};
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Tensor, TensorPrimitive};
    use burn_flex::FlexTensor;
    use std::any::TypeId;

    /// Whether the fused pass takes this step: f32 tensors on Flex, a state without
    /// AMSGrad's extra moment.
    pub(super) fn handles<B: Backend, const D: usize>(
        tensor: &Tensor<B, D>,
        grad: &Tensor<B, D>,
        state: Option<&AdamWState<B, D>>,
    ) -> bool {
        TypeId::of::<B>() == TypeId::of::<Flex>()
            && tensor.dtype() == DType::F32
            && grad.dtype() == DType::F32
            && state.is_none_or(|s| {
                s.momentum.max_moment_2.is_none()
                    && s.momentum.moment_1.dtype() == DType::F32
                    && s.momentum.moment_2.dtype() == DType::F32
            })
    }

    fn into_flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> FlexTensor {
        let t: FlexTensor = same(t.into_primitive().tensor()).expect("handles checked Flex");
        // Taking `t` by value drops the caller's handle, so a buffer only the caller held
        // reads as unique below.
        t.to_contiguous()
    }

    fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
        let t: B::FloatTensorPrimitive = same(t).expect("handles checked Flex");
        Tensor::from_primitive(TensorPrimitive::Float(t))
    }

    pub(super) fn step<B: Backend, const D: usize>(
        config: &FusedAdamWConfig,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<AdamWState<B, D>>,
    ) -> (Tensor<B, D>, Option<AdamWState<B, D>>) {
        let momentum = match state {
            Some(s) => s.momentum,
            None => first_state(&tensor),
        };
        let time = momentum.time + 1;
        let grad = into_flex(grad);
        let g = grad.storage::<f32>();
        let scale = config.clip_norm.map_or(1.0, |max| clip_scale(g, max));
        let scalars = StepScalars::new(config, lr, time, scale);
        // `storage_mut` copies a buffer that something else still holds (the model a
        // caller keeps besides the one it steps, a record being saved).
        let mut p = into_flex(tensor);
        let mut m1 = into_flex(momentum.moment_1);
        let mut m2 = into_flex(momentum.moment_2);
        adamw_step(
            p.storage_mut::<f32>(),
            g,
            m1.storage_mut::<f32>(),
            m2.storage_mut::<f32>(),
            scalars,
        );
        let momentum = AdaptiveMomentumState::new(time, from_flex(m1), from_flex(m2));
        (from_flex(p), Some(AdamWState::new(momentum)))
    }
}
