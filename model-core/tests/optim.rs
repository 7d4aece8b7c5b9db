//! The fused AdamW of `model_core::kernels::adamw` against Burn's `AdamW` with
//! gradient-norm clipping, on the CPU training backend: parameters and moments after
//! several steps, clipping on and off, tensors above and below the length that is
//! split across threads, and a parameter that something else still holds.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use model_core::kernels::adamw::{adamw_step, clip_scale, FusedAdamWConfig, StepScalars};

type AD = Autodiff<Flex>;

/// Two layers, one of 200 x 120 weights (more than one thread's share of a step) and
/// one of 7 x 3.
#[derive(Module, Debug)]
struct Net<B: Backend> {
    wide: Linear<B>,
    narrow: Linear<B>,
}

impl<B: Backend> Net<B> {
    fn new(device: &B::Device) -> Self {
        Self {
            wide: LinearConfig::new(200, 120).init(device),
            narrow: LinearConfig::new(7, 3).init(device),
        }
    }
}

/// Every parameter's values, flattened, in the module's order.
struct Values(Vec<Vec<f32>>);
impl<B: Backend> ModuleVisitor<B> for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().into_data().to_vec().unwrap());
    }
}

fn values<M: Module<AD>>(m: &M) -> Vec<Vec<f32>> {
    let mut v = Values(Vec::new());
    m.visit(&mut v);
    v.0
}

/// A loss whose gradient is large when `scale` is (so that clipping at norm 1 acts).
fn grads(net: &Net<AD>, step: usize, scale: f32) -> GradientsParams {
    let device = Default::default();
    AD::seed(&device, 1000 + step as u64);
    let a = Tensor::<AD, 2>::random([5, 200], Distribution::Normal(0.0, 1.0), &device);
    let b = Tensor::<AD, 2>::random([5, 7], Distribution::Normal(0.0, 1.0), &device);
    let loss = net.wide.forward(a).powi_scalar(2).sum().mul_scalar(scale)
        + net.narrow.forward(b).sum().mul_scalar(scale);
    GradientsParams::from_grads(loss.backward(), net)
}

/// Largest difference between two parameter lists, relative to the larger of 1 and the
/// reference's largest value.
fn max_relative(ours: &[Vec<f32>], stock: &[Vec<f32>]) -> f32 {
    assert_eq!(ours.len(), stock.len());
    let mut worst = 0.0f32;
    for (o, s) in ours.iter().zip(stock) {
        assert_eq!(o.len(), s.len());
        let scale = s.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (p, q) in o.iter().zip(s) {
            worst = worst.max((p - q).abs() / scale);
        }
    }
    worst
}

#[test]
fn fused_adamw_matches_burns_adamw_with_clipping() {
    let device = Default::default();
    for (case, clip, grad_scale, weight_decay) in [
        ("clipping on, large gradients", Some(1.0), 50.0, 0.05),
        ("clipping on, small gradients", Some(1.0), 1e-3, 0.05),
        ("no clipping, no decay", None, 2.0, 0.0),
    ] {
        let config = FusedAdamWConfig::default()
            .with_weight_decay(weight_decay)
            .with_clip_norm(clip);
        AD::seed(&device, 7);
        let start = Net::<AD>::new(&device);
        // Read once before cloning, so that every clone holds the same drawn values.
        let held = values(&start);
        let mut ours = start.clone();
        let mut stock = start.clone();
        let mut fused_optim = config.init::<AD, Net<AD>>();
        let mut stock_optim = config.stock().init::<AD, Net<AD>>();
        // `start` keeps the first weights alive, so the first step cannot update them
        // in place (it must copy) and must leave them as they were.
        for step in 0..6 {
            let lr = if step < 3 { 1e-2 } else { 3e-3 };
            let g = grads(&ours, step, grad_scale);
            ours = fused_optim.step(lr, ours, g);
            let g = grads(&stock, step, grad_scale);
            stock = stock_optim.step(lr, stock, g);
            let diff = max_relative(&values(&ours), &values(&stock));
            assert!(
                diff < 1e-5,
                "{case}: step {step}: parameters differ by {diff}"
            );
        }
        assert_eq!(
            values(&start),
            held,
            "{case}: a held parameter was written to"
        );
        let moved = max_relative(&values(&ours), &held);
        assert!(moved > 1e-3, "{case}: the steps moved nothing ({moved})");

        // The saved states are interchangeable: the fused optimizer continues from
        // Burn's saved record as Burn's own would.
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = Recorder::<AD>::record(&recorder, stock_optim.to_record(), ()).unwrap();
        let record = Recorder::<AD>::load(&recorder, bytes, &device)
            .expect("Burn's AdamW record reads as the fused optimizer's");
        let mut from_stock = config.init::<AD, Net<AD>>().load_record(record);
        let g = grads(&stock, 6, grad_scale);
        let a = from_stock.step(1e-3, stock.clone(), g);
        let g = grads(&stock, 6, grad_scale);
        let b = stock_optim.step(1e-3, stock.clone(), g);
        let diff = max_relative(&values(&a), &values(&b));
        assert!(
            diff < 1e-5,
            "{case}: resumed from Burn's record, differ by {diff}"
        );
    }
}

#[test]
fn the_generic_path_is_burns_on_the_backend_without_autodiff() {
    // The inference backend is not the one the fused pass is for in training, but the
    // optimizer must work on every backend: here through Burn's own operations.
    use burn::backend::NdArray;
    type N = Autodiff<NdArray>;
    let device = Default::default();
    let config = FusedAdamWConfig::default().with_clip_norm(Some(1.0));
    let flat = |m: &Net<N>| {
        let mut v = Values(Vec::new());
        m.valid().visit(&mut v);
        v.0
    };
    // Burn draws a parameter's first values when it is first read: read them before
    // the clones, or each clone draws its own.
    let start = Net::<N>::new(&device);
    let _ = flat(&start);
    let mut ours = config.init::<N, Net<N>>();
    let mut stock = config.stock().init::<N, Net<N>>();
    let step = |net: &Net<N>| {
        let a = Tensor::<N, 2>::ones([2, 200], &device);
        let b = Tensor::<N, 2>::ones([2, 7], &device);
        let loss = net.wide.forward(a).sum().mul_scalar(10.0) + net.narrow.forward(b).sum();
        GradientsParams::from_grads(loss.backward(), net)
    };
    let x = ours.step(1e-2, start.clone(), step(&start));
    let y = stock.step(1e-2, start.clone(), step(&start));
    let (x, y) = (flat(&x), flat(&y));
    let diff = x
        .iter()
        .flatten()
        .zip(y.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-6, "NdArray: differs from Burn's AdamW by {diff}");
}

#[test]
fn one_step_on_buffers_matches_the_written_formula() {
    let config = FusedAdamWConfig::default().with_weight_decay(0.1);
    let grad = [3.0f32, -4.0];
    let scale = clip_scale(&grad, 1.0);
    assert!((scale - 0.2).abs() < 1e-6, "norm 5 clipped to 1: {scale}");
    let s = StepScalars::new(&config, 0.5, 1, scale);
    let mut p = [1.0f32, -2.0];
    let mut m1 = [0.0f32; 2];
    let mut m2 = [0.0f32; 2];
    adamw_step(&mut p, &grad, &mut m1, &mut m2, s);
    for i in 0..2 {
        let g = grad[i] as f64 * 0.2;
        let a = 0.1 * g;
        let v = 0.001 * g * g;
        let delta = (a / 0.1) / ((v / 0.001).sqrt() + 1e-5);
        let want = [1.0, -2.0][i] * (1.0 - 0.5 * 0.1) - 0.5 * delta;
        // (1 - 0.999 in f32 is 1.3e-5 away from 0.001.)
        assert!(
            (m1[i] as f64 - a).abs() < 1e-6 * a.abs(),
            "first moment {i}"
        );
        assert!((m2[i] as f64 - v).abs() < 1e-4 * v, "second moment {i}");
        assert!(
            (p[i] as f64 - want).abs() < 1e-5,
            "parameter {i}: {} vs {want}",
            p[i]
        );
    }
}

/// The tests above again with each instruction set narrower than this CPU's widest
/// (`GARMENT_TAGGER_SIMD`): the fused step has a copy of its loop for each.
#[test]
fn optimizer_tests_pass_at_every_narrower_simd_level() {
    model_core::kernels::rerun_tests_at_narrower_levels(
        &[],
        "optimizer_tests_pass_at_every_narrower_simd_level",
    );
}
