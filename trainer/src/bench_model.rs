//! `trainer bench`: throughput of the network itself (inference, or a whole training
//! step with `--train`) on random inputs, and the process's peak memory.

use crate::device::{self, BackendTask, Chosen, DeviceChoice};
use anyhow::Result;
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, ElementConversion, Int, Tensor};
use model_core::heads::HeadConfig;
use model_core::loss::masked_cross_entropy;
use model_core::model::GarmentModelConfig;
use model_core::taxonomy::Taxonomy;
use serde::Serialize;
use std::time::{Duration, Instant};

/// What `trainer bench --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub backbone: String,
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
}

/// Settings of one measurement.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub backbone: String,
    pub image_size: u32,
    pub batch_size: usize,
    pub train: bool,
    pub head_dim: usize,
    /// Iterations run before timing (kernel compilation, autotuning, allocation).
    pub warmup: usize,
    /// Time at least this long, and at least `min_iterations`.
    pub min_time: Duration,
    pub min_iterations: usize,
}

struct BenchTask<'a> {
    config: &'a BenchConfig,
}

impl BackendTask for BenchTask<'_> {
    type Output = Result<(f64, usize, usize)>;
    fn run<B: AutodiffBackend>(self, device: B::Device, _chosen: &Chosen) -> Self::Output {
        let cfg = self.config;
        let backbone = crate::default_job::backbone_by_name(&cfg.backbone)?;
        let taxonomy = Taxonomy::meesho();
        let category = taxonomy.category("Men Tshirts")?;
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
        let (mut iterations, mut timed) = (0usize, Duration::ZERO);
        if cfg.train {
            let mut optim = AdamWConfig::new().init::<B, _>();
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
            for i in 0.. {
                let started = Instant::now();
                let out = model.forward(x.clone());
                let mut loss = Tensor::<B, 1>::zeros([1], &device);
                for (logits, t) in out.logits.into_iter().zip(&targets) {
                    loss = loss + masked_cross_entropy(logits, t.clone(), mask.clone());
                }
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(1e-4, model, grads);
                // Reading a parameter back waits for the step to finish on the device.
                let _: f32 = model.heads[0]
                    .classifier
                    .out
                    .bias
                    .as_ref()
                    .map(|b| b.val().sum().into_scalar().elem())
                    .unwrap_or(0.0);
                if i >= cfg.warmup {
                    timed += started.elapsed();
                    iterations += 1;
                    if timed >= cfg.min_time && iterations >= cfg.min_iterations {
                        break;
                    }
                }
            }
        } else {
            let model = model.valid();
            let x = x.inner();
            for i in 0.. {
                let started = Instant::now();
                let out = model.forward(x.clone());
                for l in out.logits {
                    let _ = l.into_data();
                }
                if i >= cfg.warmup {
                    timed += started.elapsed();
                    iterations += 1;
                    if timed >= cfg.min_time && iterations >= cfg.min_iterations {
                        break;
                    }
                }
            }
        }
        let img_per_s = (iterations * cfg.batch_size) as f64 / timed.as_secs_f64().max(1e-9);
        Ok((img_per_s, iterations, parameters))
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
    let (img_per_s, iterations, parameters) = device::run_on(&chosen, BenchTask { config })?;
    let result = BenchResult {
        backbone: config.backbone.clone(),
        image_size: config.image_size,
        batch_size: config.batch_size,
        device: chosen.kind().to_string(),
        mode: if config.train { "train" } else { "inference" }.to_string(),
        img_per_s,
        peak_rss_bytes: peak_rss_bytes(),
        iterations,
        parameters,
    };
    if json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "{} {} px, batch {}, {} on {}: {:.2} img/s over {} iterations; peak memory {:.0} MiB; {} parameters",
            result.backbone,
            result.image_size,
            result.batch_size,
            result.mode,
            chosen,
            result.img_per_s,
            result.iterations,
            result.peak_rss_bytes as f64 / (1024.0 * 1024.0),
            result.parameters
        );
    }
    Ok(result)
}
