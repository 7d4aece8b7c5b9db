//! A running average of the weights (`--ema-decay`).
//!
//! After every optimizer step each averaged parameter moves a small part of the way
//! towards the trained one: `avg += (1 - keep) * (param - avg)`. Validation, the kept
//! best weights and what a stage hands on all use the average, while the optimizer
//! keeps stepping the raw weights. At a constant learning rate the raw weights jitter
//! around the path the loss falls along; their average sits nearer its middle, which
//! gives much of what annealing the rate would without slowing the learning itself.
//!
//! `keep` starts low and rises to the decay as updates accumulate
//! (`min(decay, (1 + t) / (10 + t))` after `t` updates), so the average does not hold
//! on to the random start for the first thousand steps. The update is written as a
//! difference so that a parameter that does not move (a frozen backbone in phase two)
//! stays bit-for-bit what it was.

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

/// The averaged copy of a module, on the backend without autodiff.
#[derive(Debug, Clone)]
pub struct Ema<M> {
    pub model: M,
    /// Updates since the average was (re)started: it sets the warm-up of `keep`.
    pub steps: u64,
    decay: f64,
}

impl<M> Ema<M> {
    /// An average that starts at `model`, `steps` updates in (0 for a fresh one, the
    /// saved count on resume).
    pub fn new(model: M, decay: f64, steps: u64) -> Self {
        Self {
            model,
            steps,
            decay,
        }
    }

    /// The share of the old average kept by the next update.
    pub fn keep(&self) -> f64 {
        let t = self.steps as f64;
        self.decay.min((1.0 + t) / (10.0 + t))
    }

    /// Moves the average towards `trained`, the module after an optimizer step.
    pub fn update<AB, AM>(&mut self, trained: &AM)
    where
        AB: AutodiffBackend,
        AM: AutodiffModule<AB, InnerModule = M>,
        M: Module<AB::InnerBackend>,
    {
        self.model = blend(self.model.clone(), trained, 1.0 - self.keep());
        self.steps += 1;
    }

    /// `trained` with the averaged weights in place of its own. (Burn's
    /// `AutodiffModule::from_inner` would lose which parameters are trained: a
    /// parameter rebuilt on the backend without autodiff reads as frozen.)
    pub fn apply_to<AB, AM>(&self, trained: AM) -> AM
    where
        AB: AutodiffBackend,
        AM: AutodiffModule<AB, InnerModule = M>,
        M: Module<AB::InnerBackend>,
    {
        let mut collect = CollectInner {
            tensors: Vec::new(),
        };
        self.model.visit(&mut collect);
        let mut replace = Replace::<AB> {
            values: collect.tensors.into_iter(),
        };
        let out = trained.map(&mut replace);
        assert!(
            replace.values.next().is_none(),
            "the averaged module has more parameters than the trained one"
        );
        out
    }
}

/// `average` moved `step` (0 to 1) of the way towards `trained`, parameter by
/// parameter: `avg + step * (param - avg)`.
///
/// # Panics
/// If the two modules' parameters differ in number or size.
pub fn blend<AB, AM>(average: AM::InnerModule, trained: &AM, step: f64) -> AM::InnerModule
where
    AB: AutodiffBackend,
    AM: AutodiffModule<AB>,
{
    let mut collect = Collect::<AB> {
        tensors: Vec::new(),
    };
    trained.visit(&mut collect);
    let mut blend = Blend::<AB::InnerBackend> {
        trained: collect.tensors.into_iter(),
        step,
    };
    let moved = average.map(&mut blend);
    assert!(
        blend.trained.next().is_none(),
        "the averaged module has fewer parameters than the trained one"
    );
    moved
}

/// Every float parameter of a module, flattened, in the module's own order.
struct Collect<AB: AutodiffBackend> {
    tensors: Vec<Tensor<AB::InnerBackend, 1>>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for Collect<AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let tensor = param.val().inner();
        let n = tensor.shape().num_elements();
        self.tensors.push(tensor.reshape([n]));
    }
}

/// The same on a module without autodiff.
struct CollectInner<B: Backend> {
    tensors: Vec<Tensor<B, 1>>,
}

impl<B: Backend> ModuleVisitor<B> for CollectInner<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        let n = tensor.shape().num_elements();
        self.tensors.push(tensor.reshape([n]));
    }
}

/// The next collected (flattened) tensor, shaped `dims`; panics with `missing` when
/// there is none, and when its size is not that of `dims`.
fn next_shaped<B: Backend, const D: usize>(
    collected: &mut std::vec::IntoIter<Tensor<B, 1>>,
    dims: [usize; D],
    missing: &str,
) -> Tensor<B, D> {
    let flat = collected.next().expect(missing);
    assert_eq!(
        flat.dims()[0],
        dims.iter().product::<usize>(),
        "the averaged and trained modules differ in shape"
    );
    flat.reshape(dims)
}

/// Puts the next collected tensor in each parameter's place, keeping the parameter's
/// id and whether it is trained.
struct Replace<AB: AutodiffBackend> {
    values: std::vec::IntoIter<Tensor<AB::InnerBackend, 1>>,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Replace<AB> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let (id, old, mapper) = param.consume();
        let value = next_shaped(
            &mut self.values,
            old.dims(),
            "the averaged module has fewer parameters than the trained one",
        );
        let tensor = Tensor::from_inner(value).set_require_grad(old.is_require_grad());
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Moves each parameter `step` of the way towards the next collected tensor.
struct Blend<B: Backend> {
    trained: std::vec::IntoIter<Tensor<B, 1>>,
    step: f64,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, avg, mapper) = param.consume();
        let trained = next_shaped(
            &mut self.trained,
            avg.dims(),
            "the averaged module has more parameters than the trained one",
        );
        let moved = avg.clone() + (trained - avg).mul_scalar(self.step);
        Param::from_mapped_value(id, moved, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::TensorData;

    type AB = burn::backend::Autodiff<crate::device::Cpu>;

    fn weights<B: Backend>(linear: &Linear<B>) -> Vec<f32> {
        linear.weight.val().into_data().to_vec().unwrap()
    }

    fn set_weights<B: Backend>(linear: Linear<B>, values: &[f32]) -> Linear<B> {
        let device = linear.weight.val().device();
        let shape = linear.weight.val().dims();
        let tensor = Tensor::<B, 2>::from_data(TensorData::new(values.to_vec(), shape), &device)
            .set_require_grad(linear.weight.val().is_require_grad());
        Linear {
            weight: Param::initialized(linear.weight.id, tensor),
            ..linear
        }
    }

    #[test]
    fn keep_warms_up_to_the_decay() {
        let device = Default::default();
        let linear = LinearConfig::new(2, 2).init::<AB>(&device);
        let mut ema = Ema::new(linear.valid(), 0.99, 0);
        assert!((ema.keep() - 0.1).abs() < 1e-12, "(1 + 0) / (10 + 0)");
        ema.steps = 10;
        assert!((ema.keep() - 11.0 / 20.0).abs() < 1e-12);
        ema.steps = 100_000;
        assert_eq!(ema.keep(), 0.99, "capped at the decay");
    }

    #[test]
    fn update_moves_each_weight_towards_the_trained_one() {
        let device = Default::default();
        let start = set_weights(
            LinearConfig::new(2, 2).init::<AB>(&device),
            &[1.0, 2.0, 3.0, 4.0],
        );
        let mut ema = Ema::new(start.valid(), 0.9, 1000);
        let trained = set_weights(start.clone(), &[3.0, 2.0, -1.0, 4.5]);
        let bias_before: Vec<f32> = ema
            .model
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .to_vec()
            .unwrap();
        ema.update(&trained);
        // keep = 0.9: avg + 0.1 * (trained - avg).
        let want = [1.2f32, 2.0, 2.6, 4.05];
        for (got, want) in weights(&ema.model).iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{:?}", weights(&ema.model));
        }
        assert_eq!(ema.steps, 1001);
        assert_eq!(
            weights(&trained),
            [3.0, 2.0, -1.0, 4.5],
            "the trained weights are left as they were"
        );
        // The bias did not move in training, so its average stays exactly as it was.
        let bias_after: Vec<f32> = ema
            .model
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(bias_before, bias_after);
        // Parameter ids are kept, so the average can stand in for the trained model.
        assert_eq!(ema.model.weight.id, start.weight.id);
    }

    #[test]
    fn the_average_applied_to_a_trained_module_stays_trainable() {
        let device = Default::default();
        let trained = set_weights(
            LinearConfig::new(2, 2).init::<AB>(&device),
            &[1.0, 2.0, 3.0, 4.0],
        );
        let mut ema = Ema::new(trained.valid(), 0.5, 1000);
        ema.update(&set_weights(trained.clone(), &[3.0, 4.0, 5.0, 6.0]));
        let applied = ema.apply_to(trained.clone());
        assert_eq!(weights(&applied), [2.0, 3.0, 4.0, 5.0]);
        assert_eq!(applied.weight.id, trained.weight.id);
        assert!(applied.weight.val().is_require_grad());
        // Gradients reach it: a step of plain gradient descent moves it.
        let x = Tensor::<AB, 2>::ones([1, 2], &device);
        let grads = applied.forward(x).sum().backward();
        assert!(applied.weight.grad(&grads).is_some(), "no gradient");
    }

    #[test]
    #[should_panic(expected = "differ in shape")]
    fn a_module_of_another_shape_is_refused() {
        let device = Default::default();
        let mut ema = Ema::new(LinearConfig::new(2, 3).init::<AB>(&device).valid(), 0.9, 0);
        ema.update(&LinearConfig::new(4, 2).init::<AB>(&device));
    }
}
