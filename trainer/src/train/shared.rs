//! The shared stage (`--shared-epochs`): before any category trains on its own, one
//! backbone learns from the rows of every category at once.
//!
//! Each category keeps its own feature layer and heads; a batch holds the rows of one
//! category, and the batches of all categories are shuffled together, so every step
//! moves the shared backbone and the heads of that batch's category. Colour, pattern
//! and print type are drawn the same way on a saree as on a kurti, so the backbone sees
//! five times the images it would see in one category's phase one, for the same work
//! per image. When the stage ends, each category's model (the shared backbone plus its
//! own feature layer and heads) is written to `RUN/shared/SLUG.safetensors`, and the
//! per-category phases start from it instead of from random weights.
//!
//! The stage is cross-entropy only (no MMD term), on the rows phase one would use.
//! It keeps the weights of its last epoch (with `--ema-decay`, their running average
//! then): the per-category phase one that follows keeps its own best.

use super::config::RunPaths;
use super::ema::{blend, Ema};
use super::plateau::Plateau;
use super::{
    append_log, heads_loss, load_checkpoint, load_optimizer, logit_offsets, offset_rows,
    optimizer_config, progress_bar, save_checkpoint, save_optimizer, stage_rows, step_lr, validate,
    CategoryData, Context, EpochLog, Example, Stage,
};
use crate::fsutil::{read_json, write_atomic, write_json};
use crate::rng::{derive_seed, Rng};
use crate::train::batch::{pixel_data, prefetched, EpochAugment};
use crate::train::parts::grads_in_parts;
use anyhow::{bail, Context as _, Result};
use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use model_core::convnext::ConvNext;
use model_core::export::slug;
use model_core::heads::AttributeHead;
use model_core::metrics::category_score;
use model_core::model::{FeatureLayer, GarmentModel, GarmentModelConfig};
use model_core::store::{load_safetensors, write_safetensors, Precision};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// One category's own part of the shared network.
#[derive(Module, Debug)]
pub struct CategoryTail<B: Backend> {
    pub feature: FeatureLayer<B>,
    pub heads: Vec<AttributeHead<B>>,
}

/// The network of the shared stage: one backbone, one tail per category (in the order
/// of the categories given to [`train_shared`]).
#[derive(Module, Debug)]
pub struct SharedModel<B: Backend> {
    pub backbone: ConvNext<B>,
    pub tails: Vec<CategoryTail<B>>,
}

impl<B: Backend> SharedModel<B> {
    /// Category `c`'s whole model (the backbone's tensors are shared, not copied).
    fn category(&self, c: usize) -> GarmentModel<B> {
        let tail = self.tails[c].clone();
        GarmentModel {
            backbone: self.backbone.clone(),
            feature: tail.feature,
            heads: tail.heads,
        }
    }

    /// Puts category `c`'s trained model back: its backbone becomes the shared one.
    fn put(&mut self, c: usize, model: GarmentModel<B>) {
        self.backbone = model.backbone;
        self.tails[c] = CategoryTail {
            feature: model.feature,
            heads: model.heads,
        };
    }
}

/// Progress of the shared stage, saved after every epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedState {
    /// The categories of the shared network, in order.
    pub categories: Vec<String>,
    pub epochs_done: usize,
    pub plateau: Plateau,
    /// Every category's starting weights are written.
    pub finished: bool,
    /// Updates of the running average of the weights so far (`--ema-decay`).
    #[serde(default)]
    pub ema_steps: u64,
    /// The epochs the stage runs, when `--time-budget` chose them after the first
    /// (`train::budget`); `None` before that, and without a budget: `--shared-epochs`.
    #[serde(default)]
    pub planned_epochs: Option<usize>,
}

/// Where the shared stage keeps its files.
pub struct SharedPaths {
    dir: PathBuf,
}

impl SharedPaths {
    pub fn new(paths: &RunPaths) -> Self {
        Self {
            dir: paths.root.join("shared"),
        }
    }
    fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    fn last(&self) -> PathBuf {
        self.dir.join("last.mpk")
    }
    fn optimizer(&self) -> PathBuf {
        self.dir.join("optimizer.mpk")
    }
    fn ema(&self) -> PathBuf {
        self.dir.join("ema.mpk")
    }
    /// The weights category `name` starts its own phases from.
    pub fn start(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.safetensors", slug(name)))
    }
}

/// How the shared stage ended.
pub enum SharedOutcome {
    Finished,
    Interrupted,
}

/// Trains (or resumes, or skips when already done) the shared stage over `data`, whose
/// categories have at least one training row. `indices` are the categories' positions
/// in the run's list (they seed each category's initial weights as
/// [`super::train_category`] would).
pub fn train_shared<B: AutodiffBackend>(
    ctx: &Context<'_>,
    data: &[CategoryData<'_>],
    indices: &[usize],
    device: &B::Device,
) -> Result<SharedOutcome> {
    let cfg = ctx.config;
    let mut epochs = cfg.shared_epochs;
    let paths = SharedPaths::new(ctx.paths);
    let names: Vec<String> = data.iter().map(|d| d.spec.name.clone()).collect();
    let configs: Vec<GarmentModelConfig> = data
        .iter()
        .map(|d| GarmentModelConfig::for_category(cfg.backbone.clone(), cfg.head.clone(), d.spec))
        .collect();
    let mut optim = optimizer_config(cfg).init::<B, GarmentModel<B>>();

    // A fresh network: each category's part initialised as its own run would be, the
    // backbone taken from the first category (or from --pretrained).
    let fresh = || -> Result<SharedModel<B>> {
        let mut backbone = None;
        let mut tails = Vec::new();
        for (config, &index) in configs.iter().zip(indices) {
            B::seed(device, derive_seed(cfg.seed, &[index as u64, 0xC0FFEE]));
            // Burn draws a parameter's initial values when it is first read, so read
            // them all now, while the seed is this category's.
            let mut model = super::parts::initialised(config.init::<B>(device));
            if backbone.is_none() {
                if let Some(load) = ctx.pretrained {
                    let bytes = load(config.clone())?;
                    model = load_safetensors(model, bytes)
                        .context("loading the pretrained backbone")?;
                }
            }
            let GarmentModel {
                backbone: b,
                feature,
                heads,
            } = model;
            backbone.get_or_insert(b);
            tails.push(CategoryTail { feature, heads });
        }
        Ok(SharedModel {
            backbone: backbone.context("the shared stage needs at least one category")?,
            tails,
        })
    };

    let (mut model, mut state) = if ctx.resume && paths.state().exists() {
        let state: SharedState = read_json(&paths.state())?;
        if state.categories != names {
            bail!(
                "{}: the shared stage was started with the categories {:?}; resume with the same ones or start a new run",
                paths.state().display(),
                state.categories
            );
        }
        if state.finished && names.iter().all(|n| paths.start(n).exists()) {
            println!("shared stage: already trained, skipping");
            return Ok(SharedOutcome::Finished);
        }
        let mut model = fresh()?;
        if state.epochs_done > 0 {
            model = load_checkpoint(model, &paths.last(), device)?;
            optim = load_optimizer(optim, &paths.optimizer(), device)?;
            println!("shared stage: resuming at epoch {}", state.epochs_done + 1);
        }
        (model, state)
    } else {
        std::fs::create_dir_all(&paths.dir)
            .with_context(|| format!("{}: cannot create", paths.dir.display()))?;
        let state = SharedState {
            categories: names.clone(),
            epochs_done: 0,
            plateau: Plateau::new(cfg.lr, cfg.plateau),
            finished: false,
            ema_steps: 0,
            planned_epochs: None,
        };
        (fresh()?, state)
    };
    // The running average starts at the weights the stage starts from (or, resumed,
    // where the last finished epoch left it).
    let mut ema = if cfg.ema_decay > 0.0 {
        let mut average = model.valid();
        if state.epochs_done > 0 {
            average = load_checkpoint(average, &paths.ema(), device)?;
        }
        Some(Ema::new(average, cfg.ema_decay, state.ema_steps))
    } else {
        None
    };

    let rows: Vec<Vec<&Example>> = data
        .iter()
        .map(|d| stage_rows(&d.train, Stage::PhaseOne, cfg.phase1_rows))
        .collect();
    if rows.iter().all(Vec::is_empty) && state.epochs_done < epochs {
        // Each category then starts from its own fresh weights, as without the stage.
        println!("shared stage: no training row has the labels phase one needs; skipped");
        state.epochs_done = epochs;
    }
    // A plan found in the state was made by an earlier process, whose clock this one
    // cannot see: it is kept as it is. Otherwise the budget plans after every epoch.
    let replan = state.planned_epochs.is_none();
    if let Some(planned) = state.planned_epochs {
        epochs = planned;
    }
    // Wall time of the epochs this process ran (training, validation, checkpoints).
    let mut timed = (0usize, 0.0f64);
    while state.epochs_done < epochs {
        let epoch = state.epochs_done;
        let epoch_seed = derive_seed(cfg.seed, &[0x5A4ED, epoch as u64]);
        B::seed(device, epoch_seed);
        let started = Instant::now();
        let Some((trained, losses)) = run_shared_epoch(
            ctx,
            data,
            &rows,
            (epoch, epochs),
            epoch_seed,
            model,
            &mut optim,
            ema.as_mut(),
            &state.plateau,
            device,
        )?
        else {
            return Ok(SharedOutcome::Interrupted);
        };
        model = trained;
        let seconds = started.elapsed().as_secs_f64();
        let images: usize = rows.iter().map(Vec::len).sum();
        // What is validated and handed on: the average when there is one.
        let kept = match &ema {
            Some(ema) => ema.model.clone(),
            None => model.valid(),
        };
        let mut scores = Vec::new();
        for (c, d) in data.iter().enumerate() {
            let attributes = validate(ctx, d, &kept.category(c), device)?;
            scores.push(category_score(&d.spec.name, attributes));
        }
        let mean = scores.iter().map(|s| s.score).sum::<f64>() / scores.len() as f64;
        let batches: usize = rows.iter().map(|r| r.len().div_ceil(cfg.batch_size)).sum();
        let lr = step_lr(
            cfg.lr_schedule,
            state.plateau.lr,
            (epoch + 1) * batches - 1,
            epochs * batches,
        );
        if cfg.lr_schedule != super::schedule::LrSchedule::Cosine {
            state.plateau.step(mean);
        }
        state.epochs_done += 1;
        // Weights, optimizer, then the state that points at them; each atomically.
        save_checkpoint(&model, &paths.last())?;
        save_optimizer(&optim, &paths.optimizer())?;
        if let Some(ema) = &ema {
            save_checkpoint(&ema.model, &paths.ema())?;
            state.ema_steps = ema.steps;
        }
        timed = (timed.0 + 1, timed.1 + started.elapsed().as_secs_f64());
        if let (Some(minutes), true) = (cfg.time_budget_min, replan) {
            let mean = timed.1 / timed.0 as f64;
            let planned = plan_epochs(cfg, minutes, state.epochs_done, mean, epochs);
            state.planned_epochs = Some(planned);
            epochs = planned;
        }
        write_json(&paths.state(), &state)?;
        for (score, &loss) in scores.iter().zip(&losses) {
            append_log(
                ctx.paths,
                &EpochLog {
                    category: score.name.clone(),
                    stage: "shared".into(),
                    epoch: epoch + 1,
                    loss,
                    val_score: score.score,
                    lr,
                    img_per_s: images as f64 / seconds.max(1e-9),
                    seconds,
                    device: ctx.device_name.clone(),
                    attributes: score.attributes.clone(),
                },
            )?;
        }
        let each: Vec<String> = scores
            .iter()
            .map(|s| format!("{} {:.4}", s.name, s.score))
            .collect();
        let loss = losses.iter().sum::<f64>() / losses.len() as f64;
        println!(
            "shared epoch {}/{epochs}: loss {loss:.4}, validation score {mean:.4} ({}), lr {lr:.2e}, {:.1} img/s",
            epoch + 1,
            each.join(", "),
            images as f64 / seconds.max(1e-9)
        );
    }
    let kept = match &ema {
        Some(ema) => ema.model.clone(),
        None => model.valid(),
    };
    for (c, name) in names.iter().enumerate() {
        let bytes = write_safetensors(&kept.category(c), Precision::F32)?;
        write_atomic(&paths.start(name), &bytes)?;
    }
    state.finished = true;
    write_json(&paths.state(), &state)?;
    Ok(SharedOutcome::Finished)
}

/// The shared epochs in all that fit `minutes` from the process's start, at most
/// `--shared-epochs`, `done` having run at `epoch_s` seconds of wall time each on
/// average; says what it chose after the first epoch and whenever the plan (`before`)
/// changes.
fn plan_epochs(
    cfg: &super::config::TrainConfig,
    minutes: f64,
    done: usize,
    epoch_s: f64,
    before: usize,
) -> usize {
    use super::budget::{phase_work, process_clock, shared_epochs_within};
    let elapsed = process_clock().elapsed().as_secs_f64();
    let phases = phase_work(cfg);
    let most = cfg.shared_epochs;
    let planned = shared_epochs_within(minutes * 60.0, elapsed, (done, epoch_s), most, phases);
    if done == 1 || planned != before {
        println!(
            "shared stage: {planned} of {} epochs fit the {minutes}-minute budget ({epoch_s:.1} s per epoch, {elapsed:.0} s gone, the phases about {:.0} s)",
            most,
            phases * epoch_s
        );
    }
    planned
}

/// One pass over every category's rows, their batches interleaved; `None` when
/// interrupted. Returns the model and each category's mean loss per batch.
#[allow(clippy::too_many_arguments)]
fn run_shared_epoch<B: AutodiffBackend, O: Optimizer<GarmentModel<B>, B>>(
    ctx: &Context<'_>,
    data: &[CategoryData<'_>],
    rows: &[Vec<&Example>],
    (epoch, epochs): (usize, usize),
    epoch_seed: u64,
    model: SharedModel<B>,
    optim: &mut O,
    mut ema: Option<&mut Ema<SharedModel<B::InnerBackend>>>,
    plateau: &Plateau,
    device: &B::Device,
) -> Result<Option<(SharedModel<B>, Vec<f64>)>> {
    let cfg = ctx.config;
    let mut rng = Rng::new(epoch_seed);
    // (category, positions in its rows) of every batch, categories interleaved.
    let mut batches: Vec<(usize, Vec<usize>)> = Vec::new();
    for (c, r) in rows.iter().enumerate() {
        let mut order: Vec<usize> = (0..r.len()).collect();
        rng.shuffle(&mut order);
        batches.extend(order.chunks(cfg.batch_size).map(|b| (c, b.to_vec())));
    }
    rng.shuffle(&mut batches);
    let augment = EpochAugment {
        config: &cfg.augment,
        seed: cfg.seed,
        epoch: epoch_seed,
    };
    let count = batches.len();
    let offsets: Vec<Option<Vec<Tensor<B, 2>>>> = data
        .iter()
        .map(|d| offset_rows::<B>(logit_offsets(d.spec, &d.train, cfg.logit_adjust), device))
        .collect();
    let bar = progress_bar(ctx, count as u64, "shared");
    let started = Instant::now();
    let mut loss_sum = 0.0;
    // Per category: summed loss and batches.
    let mut per_category = vec![(0.0, 0usize); rows.len()];
    let mut done = 0usize;
    let prepare = |b: usize| {
        let (c, positions) = &batches[b];
        let images: Vec<usize> = positions.iter().map(|&i| rows[*c][i].image).collect();
        pixel_data(ctx.train_images, &images, Some(augment), &ctx.preprocess)
    };
    let mut interrupted = false;
    // Per category: the share of its tail's average still to move towards its weights
    // (`average_step`); 1 when up to date.
    let mut owed = vec![1.0f64; rows.len()];
    let mut slot = Some(model);
    prefetched(count, 2, prepare, |b, pixels| {
        if ctx.interrupted.load(Ordering::SeqCst) {
            interrupted = true;
            return Ok(false);
        }
        let (c, positions) = &batches[b];
        let examples: Vec<&Example> = positions.iter().map(|&i| rows[*c][i]).collect();
        let mut shared = slot.take().expect("the model is back after every step");
        let model = shared.category(*c);
        let pixels = Tensor::<B, 4>::from_data(pixels, device);
        let (grads, value) = grads_in_parts(
            &model,
            examples.len(),
            ctx.batch_parts,
            derive_seed(epoch_seed, &[b as u64]),
            device,
            |part, range| {
                let len = range.len();
                let out = part.forward(pixels.clone().narrow(0, range.start, len));
                heads_loss(
                    &out.logits,
                    &examples,
                    range,
                    offsets[*c].as_deref(),
                    device,
                )
            },
        )?;
        if !value.is_finite() {
            bail!(
                "shared stage: the loss became {value} at batch {} ({}); try a lower --lr",
                b + 1,
                data[*c].spec.name
            );
        }
        loss_sum += value;
        per_category[*c].0 += value;
        per_category[*c].1 += 1;
        let lr = step_lr(
            cfg.lr_schedule,
            plateau.lr,
            epoch * count + b,
            epochs * count,
        );
        if let Some(ema) = ema.as_deref_mut() {
            catch_up(ema, &mut owed, *c, &shared.tails[*c]);
        }
        shared.put(*c, optim.step(lr, model, grads));
        if let Some(ema) = ema.as_deref_mut() {
            average_step(ema, &mut owed, &shared, *c);
        }
        slot = Some(shared);
        done += examples.len();
        bar.set_message(format!(
            "loss {:.4}  {:.1} img/s",
            loss_sum / (b + 1) as f64,
            done as f64 / started.elapsed().as_secs_f64().max(1e-9)
        ));
        bar.inc(1);
        Ok(true)
    })?;
    if interrupted {
        bar.abandon_with_message("interrupted");
        return Ok(None);
    }
    bar.finish_and_clear();
    let model = slot.expect("the model is back after every step");
    if let Some(ema) = ema.as_deref_mut() {
        for (c, tail) in model.tails.iter().enumerate() {
            catch_up(ema, &mut owed, c, tail);
        }
    }
    let losses = per_category
        .iter()
        .map(|&(sum, n)| sum / n.max(1) as f64)
        .collect();
    Ok(Some((model, losses)))
}

/// The running average's update after an optimizer step on category `c`.
///
/// A step changes the backbone and `c`'s tail only; every other tail keeps its weights.
/// Averaging towards an unchanged value at steps with keeps k1, k2, ... is one move of
/// `1 - k1 * k2 * ...` of the way, so the other tails only record what they are owed
/// (`owed`, the product of the keeps they missed), and [`catch_up`] makes the move when
/// their category trains next or the epoch ends: the average of updating every tail at
/// every step, to rounding, without touching every head of every category each step.
fn average_step<B: AutodiffBackend>(
    ema: &mut Ema<SharedModel<B::InnerBackend>>,
    owed: &mut [f64],
    shared: &SharedModel<B>,
    c: usize,
) {
    let keep = ema.keep();
    ema.model.backbone = blend(ema.model.backbone.clone(), &shared.backbone, 1.0 - keep);
    ema.model.tails[c] = blend(ema.model.tails[c].clone(), &shared.tails[c], 1.0 - keep);
    for (d, owed) in owed.iter_mut().enumerate() {
        if d != c {
            *owed *= keep;
        }
    }
    ema.steps += 1;
}

/// Brings category `c`'s averaged tail up to date with `tail`, the weights it has kept
/// since it last trained (see [`average_step`]).
fn catch_up<B: AutodiffBackend>(
    ema: &mut Ema<SharedModel<B::InnerBackend>>,
    owed: &mut [f64],
    c: usize,
    tail: &CategoryTail<B>,
) {
    if owed[c] < 1.0 {
        ema.model.tails[c] = blend(ema.model.tails[c].clone(), tail, 1.0 - owed[c]);
        owed[c] = 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parameter_values;
    use super::*;
    use burn::module::{ModuleMapper, Param};
    use burn::tensor::Distribution;
    use model_core::convnext::ConvNextConfig;
    use model_core::heads::HeadConfig;
    use model_core::model::GarmentModelConfig;

    type AB = burn::backend::Autodiff<crate::device::Cpu>;

    /// Every parameter replaced by a fresh random value, as an optimizer step would.
    struct Jolt;
    impl<B: Backend> ModuleMapper<B> for Jolt {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, value, mapper) = param.consume();
            let fresh = Tensor::random(
                value.dims(),
                Distribution::Normal(0.0, 1.0),
                &value.device(),
            )
            .set_require_grad(value.is_require_grad());
            Param::from_mapped_value(id, fresh, mapper)
        }
    }

    #[test]
    fn owed_updates_give_the_average_of_updating_every_tail_every_step() {
        let device = Default::default();
        let config = |classes: Vec<usize>| {
            GarmentModelConfig::new(
                ConvNextConfig::test_tiny(),
                HeadConfig::new().with_head_dim(8).with_spatial_groups(4),
                classes,
            )
        };
        let tails_of = |model: GarmentModel<AB>| CategoryTail {
            feature: model.feature,
            heads: model.heads,
        };
        let first = config(vec![3, 2]).init::<AB>(&device);
        let backbone = first.backbone.clone();
        let mut shared = SharedModel {
            backbone,
            tails: vec![
                tails_of(first),
                tails_of(config(vec![4]).init::<AB>(&device)),
                tails_of(config(vec![2, 2, 5]).init::<AB>(&device)),
            ],
        };
        let mut every = Ema::new(shared.valid(), 0.9, 0);
        let mut owing = Ema::new(shared.valid(), 0.9, 0);
        let mut owed = vec![1.0; 3];
        // Categories in an uneven order, one skipped for several steps, as batches come.
        for &c in &[0, 0, 2, 1, 0, 0, 0, 2, 2, 1, 0, 2] {
            catch_up(&mut owing, &mut owed, c, &shared.tails[c]);
            shared.backbone = shared.backbone.clone().map(&mut Jolt);
            shared.tails[c] = shared.tails[c].clone().map(&mut Jolt);
            every.update(&shared);
            average_step(&mut owing, &mut owed, &shared, c);
        }
        for c in 0..3 {
            catch_up(&mut owing, &mut owed, c, &shared.tails[c]);
        }
        assert_eq!(owing.steps, every.steps);
        let (a, b) = (
            parameter_values(&owing.model),
            parameter_values(&every.model),
        );
        assert_eq!(a.len(), b.len());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "the averages differ by up to {worst}");
        // And the averages did move: not equal to the last weights or the start.
        let last = parameter_values(&shared.valid());
        let gap = a
            .iter()
            .zip(&last)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(gap > 1e-2, "the average sits on the last weights");
    }
}
