//! `trainer bench`: throughput of the network itself (inference, or a whole training
//! step with `--train`) on random inputs, and the process's peak memory.

use crate::device::{self, BackendTask, Chosen, DeviceChoice};
use crate::train::parts::{batch_parts, grads_in_parts, logits_in_parts};
use anyhow::Result;
use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, ElementConversion, Int, Tensor};
use model_core::heads::HeadConfig;
use model_core::kernels::adamw::FusedAdamWConfig;
use model_core::loss::masked_cross_entropy;
use model_core::model::GarmentModelConfig;
use model_core::taxonomy::Taxonomy;
use serde::Serialize;
use std::time::{Duration, Instant};

/// What `trainer bench --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub backbone: String,
    /// The category whose heads the network carried.
    pub category: String,
    pub image_size: u32,
    pub batch_size: usize,
    pub device: String,
    /// `inference` or `train`.
    pub mode: String,
    pub img_per_s: f64,
    pub peak_rss_bytes: u64,
    /// Timed iterations (after the warm-up ones).
    pub iterations: usize,
    pub parameters: usize,
    /// Seconds spent in the untimed warm-up iterations: on GPU backends mostly kernel
    /// compilation and autotuning, the start-up cost a short job pays.
    pub warmup_s: f64,
    /// Seconds of the first iteration alone.
    pub first_iteration_s: f64,
    /// Parts each batch was cut into (`--batch-parts`).
    pub batch_parts: usize,
}

/// Settings of one measurement.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub backbone: String,
    pub image_size: u32,
    pub batch_size: usize,
    pub train: bool,
    pub head_dim: usize,
    /// The category whose heads the network carries.
    pub category: String,
    /// Parts a batch is cut into (`train::parts`); `None` chooses as training,
    /// evaluation and prediction do.
    pub batch_parts: Option<usize>,
    /// Iterations run before timing (kernel compilation, autotuning, allocation).
    pub warmup: usize,
    /// Time at least this long, and at least `min_iterations`.
    pub min_time: Duration,
    pub min_iterations: usize,
}

/// What one measurement found.
struct Measured {
    img_per_s: f64,
    iterations: usize,
    parameters: usize,
    warmup_s: f64,
    first_iteration_s: f64,
    batch_parts: usize,
}

/// Times the iterations after the warm-up ones and records how long the warm-up took.
struct Clock<'a> {
    cfg: &'a BenchConfig,
    done: usize,
    timed: Duration,
    iterations: usize,
    warmup_time: Duration,
    first: Duration,
}

impl<'a> Clock<'a> {
    fn new(cfg: &'a BenchConfig) -> Self {
        Clock {
            cfg,
            done: 0,
            timed: Duration::ZERO,
            iterations: 0,
            warmup_time: Duration::ZERO,
            first: Duration::ZERO,
        }
    }

    /// Books one iteration that took `took`; true when enough has been timed.
    fn record(&mut self, took: Duration) -> bool {
        if self.done == 0 {
            self.first = took;
        }
        self.done += 1;
        if self.done <= self.cfg.warmup {
            self.warmup_time += took;
            eprintln!(
                "warm-up iteration {}/{}: {:.2} s",
                self.done,
                self.cfg.warmup,
                took.as_secs_f64()
            );
            return false;
        }
        self.timed += took;
        self.iterations += 1;
        self.timed >= self.cfg.min_time && self.iterations >= self.cfg.min_iterations
    }

    fn finish(self, parameters: usize, parts: usize) -> Measured {
        Measured {
            img_per_s: (self.iterations * self.cfg.batch_size) as f64
                / self.timed.as_secs_f64().max(1e-9),
            iterations: self.iterations,
            parameters,
            warmup_s: self.warmup_time.as_secs_f64(),
            first_iteration_s: self.first.as_secs_f64(),
            batch_parts: parts,
        }
    }
}

struct BenchTask<'a> {
    config: &'a BenchConfig,
}

impl BackendTask for BenchTask<'_> {
    type Output = Result<Measured>;
    fn run<B: AutodiffBackend>(self, device: B::Device, chosen: &Chosen) -> Self::Output {
        let cfg = self.config;
        let parts = batch_parts(cfg.batch_parts, cfg.batch_size, chosen.kind() == "cpu");
        let backbone = crate::default_job::backbone_by_name(&cfg.backbone)?;
        let taxonomy = Taxonomy::meesho();
        let category = taxonomy
            .category(&cfg.category)
            .map_err(|e| anyhow::anyhow!("--category: {e}"))?;
        let model_config = GarmentModelConfig::for_category(
            backbone,
            HeadConfig::new().with_head_dim(cfg.head_dim),
            category,
        );
        let model = model_config.init::<B>(&device);
        let parameters = burn::module::Module::num_params(&model);
        let shape = [
            cfg.batch_size,
            3,
            cfg.image_size as usize,
            cfg.image_size as usize,
        ];
        let x = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let mut clock = Clock::new(cfg);
        if cfg.train {
            // The optimizer training uses (fused on the CPU), with Burn's default settings.
            let mut optim = FusedAdamWConfig::default().init::<B, _>();
            let mut model = model;
            let targets: Vec<Tensor<B, 1, Int>> = category
                .class_counts()
                .iter()
                .map(|&c| {
                    Tensor::random(
                        [cfg.batch_size],
                        Distribution::Uniform(0.0, c as f64),
                        &device,
                    )
                })
                .collect();
            let mask = Tensor::<B, 1>::ones([cfg.batch_size], &device);
            let mut step = 0u64;
            loop {
                let started = Instant::now();
                // As training runs a step: cut into parts, each part's loss its share
                // of the whole batch's.
                let (grads, _) = grads_in_parts(
                    &model,
                    cfg.batch_size,
                    parts,
                    step,
                    &device,
                    |part, range| {
                        let (start, len) = (range.start, range.len());
                        let out = part.forward(x.clone().narrow(0, start, len));
                        let mut loss = Tensor::<B, 1>::zeros([1], &device);
                        for (logits, t) in out.logits.into_iter().zip(&targets) {
                            loss = loss
                                + masked_cross_entropy(
                                    logits,
                                    t.clone().narrow(0, start, len),
                                    mask.clone().narrow(0, start, len),
                                );
                        }
                        Ok(loss.mul_scalar(len as f64 / cfg.batch_size as f64))
                    },
                )?;
                step += 1;
                model = optim.step(1e-4, model, grads);
                // Reading a parameter back waits for the step to finish on the device.
                let _: f32 = model.heads[0]
                    .classifier
                    .out
                    .bias
                    .as_ref()
                    .map(|b| b.val().sum().into_scalar().elem())
                    .unwrap_or(0.0);
                if clock.record(started.elapsed()) {
                    break;
                }
            }
        } else {
            let model = model.valid();
            let x = x.inner();
            loop {
                let started = Instant::now();
                // As evaluation and prediction run a batch.
                for l in logits_in_parts(&model, x.clone(), parts) {
                    let _ = l.into_data();
                }
                if clock.record(started.elapsed()) {
                    break;
                }
            }
        }
        Ok(clock.finish(parameters, parts))
    }
}

/// Peak resident memory of this process (Linux `VmHWM`), in bytes; 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Runs one measurement on the chosen device and prints it.
pub fn bench(config: &BenchConfig, device_choice: DeviceChoice, json: bool) -> Result<BenchResult> {
    let chosen = device::choose(device_choice)?;
    let measured = device::run_on(&chosen, BenchTask { config })?;
    let result = BenchResult {
        backbone: config.backbone.clone(),
        category: config.category.clone(),
        image_size: config.image_size,
        batch_size: config.batch_size,
        device: chosen.kind().to_string(),
        mode: if config.train { "train" } else { "inference" }.to_string(),
        img_per_s: measured.img_per_s,
        peak_rss_bytes: peak_rss_bytes(),
        iterations: measured.iterations,
        parameters: measured.parameters,
        warmup_s: measured.warmup_s,
        first_iteration_s: measured.first_iteration_s,
        batch_parts: measured.batch_parts,
    };
    if json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "{} ({} heads) {} px, batch {}, {} on {}: {:.2} img/s over {} iterations (after {:.1} s of warm-up); peak memory {:.0} MiB; {} parameters",
            result.backbone,
            result.category,
            result.image_size,
            result.batch_size,
            result.mode,
            chosen,
            result.img_per_s,
            result.iterations,
            result.warmup_s,
            result.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            result.parameters
        );
    }
    Ok(result)
}
