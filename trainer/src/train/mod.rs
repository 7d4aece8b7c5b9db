//! Two-phase training of one model per category (SPEC.md "Training, per category").
//!
//! Phase one trains the whole network on the rows whose every attribute is labelled
//! (or, with [`Phase1Rows::Labelled`], on every row with a label, each head's
//! cross-entropy masked to its labelled rows), with cross-entropy summed over heads
//! plus `mmd_weight` x MMD between the pooled features of the labelled batch and of
//! unlabelled test images.
//!
//! Phase two fine-tunes the heads with the backbone and feature layer frozen, each head
//! on every row labelled for its attribute. The reference trains one head at a time;
//! here all heads train in the same pass, each with its own masked loss. Heads share no
//! parameter and the shared features are computed without gradients, so each head's
//! updates are those it would get on its own, for one backbone pass per batch instead
//! of one per attribute. The best weights of each head are kept separately, on that
//! attribute's validation score.
//!
//! With `--ema-decay F`, what every stage validates, keeps and hands on is a running
//! average of the weights ([`ema`]) rather than the weights the optimizer steps.
//!
//! With `--shared-epochs N`, a shared stage ([`shared`]) comes first: one backbone
//! trained on the rows of every category at once, each category with its own heads;
//! each category's phase one then starts from that backbone and its own heads.

pub mod batch;
pub mod budget;
pub mod config;
pub mod ema;
pub mod parts;
pub mod plateau;
pub mod schedule;
pub mod shared;

use crate::data::images::ImageStore;
use crate::fsutil::{read, read_json, write_atomic, write_json};
use crate::rng::{derive_seed, Rng};
use crate::train::parts::grads_in_parts;
use anyhow::{bail, Context as _, Result};
use batch::{pixel_data, pixels, prefetched, EpochAugment};
use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use config::{Phase1Rows, RunPaths, TrainConfig};
use ema::Ema;
use indicatif::{ProgressBar, ProgressStyle};
use model_core::convnext::global_average_pool;
use model_core::kernels::adamw::FusedAdamWConfig;
use model_core::loss::{mmd, MaskedTargets};
use model_core::metrics::{category_score, AttributeScore, AttributeTally, CategoryScore};
use model_core::model::{GarmentModel, GarmentModelConfig};
use model_core::preprocess::PreprocessConfig;
use model_core::store::{load_safetensors, write_safetensors, Precision};
use model_core::taxonomy::CategorySpec;
use plateau::Plateau;
use schedule::{anneal_factor, cosine_factor, LrSchedule};
use serde::{Deserialize, Serialize};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// One labelled example: its image's index in the train image store and its labels.
#[derive(Debug, Clone)]
pub struct Example {
    pub image: usize,
    pub labels: Vec<Option<usize>>,
}

/// What one category trains and validates on.
#[derive(Debug, Clone)]
pub struct CategoryData<'a> {
    pub spec: &'a CategorySpec,
    pub train: Vec<Example>,
    pub val: Vec<Example>,
    /// Indices of this category's unlabelled target images in the test image store.
    pub target: Vec<usize>,
}

/// What the loop needs besides the data.
pub struct Context<'a> {
    pub config: &'a TrainConfig,
    pub paths: &'a RunPaths,
    pub train_images: &'a ImageStore,
    pub test_images: &'a ImageStore,
    pub preprocess: PreprocessConfig,
    /// Set by Ctrl-C: stop at the next batch boundary.
    pub interrupted: &'a AtomicBool,
    /// Where the backbone starts when no checkpoint is resumed.
    pub pretrained: Option<&'a (dyn Fn(GarmentModelConfig) -> Result<Vec<u8>> + Sync)>,
    pub device_name: String,
    /// How many parts each training batch is cut into ([`parts::batch_parts`]).
    pub batch_parts: usize,
    pub resume: bool,
    pub quiet: bool,
}

/// A stage of training: phase one, or round `r` (from 1) of phase two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    PhaseOne,
    PhaseTwo(usize),
}

impl Stage {
    fn label(self) -> String {
        match self {
            Stage::PhaseOne => "phase1".into(),
            Stage::PhaseTwo(r) => format!("phase2-round{r}"),
        }
    }
    fn id(self) -> u64 {
        match self {
            Stage::PhaseOne => 0,
            Stage::PhaseTwo(r) => r as u64,
        }
    }
}

/// Progress of one category, saved after every epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryState {
    /// Index into the run's list of stages.
    pub stage: usize,
    /// Epochs finished in that stage.
    pub epochs_done: usize,
    pub plateau: Plateau,
    /// Phase one: the best validation score of the whole model.
    pub best_score: Option<f64>,
    /// Phase two: the best validation score of each head.
    pub head_best: Vec<Option<f64>>,
    /// Validation score of the kept (best) weights.
    pub final_score: Option<CategoryScore>,
    pub finished: bool,
    /// Updates of the running average of the weights in this stage (`--ema-decay`).
    #[serde(default)]
    pub ema_steps: u64,
}

/// One line of `train_log.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub category: String,
    pub stage: String,
    pub epoch: usize,
    pub loss: f64,
    pub val_score: f64,
    pub lr: f64,
    pub img_per_s: f64,
    pub seconds: f64,
    pub device: String,
    pub attributes: Vec<AttributeScore>,
}

/// How a category's training ended.
pub enum Outcome {
    Finished(CategoryScore),
    Interrupted,
}

fn stages(config: &TrainConfig) -> Vec<(Stage, usize)> {
    let mut out = Vec::new();
    if config.phase1_epochs > 0 {
        out.push((Stage::PhaseOne, config.phase1_epochs));
    }
    if config.phase2_epochs > 0 {
        for r in 1..=config.phase2_rounds {
            out.push((Stage::PhaseTwo(r), config.phase2_epochs));
        }
    }
    out
}

fn optimizer_config(config: &TrainConfig) -> FusedAdamWConfig {
    FusedAdamWConfig::default()
        .with_weight_decay(config.weight_decay as f32)
        .with_clip_norm(Some(config.grad_clip as f32))
}

/// The rows a stage trains on: phase one on the fully labelled rows (or, with
/// [`Phase1Rows::Labelled`], on every row with a label), phase two on every row with a
/// label (each head learns from the rows labelled for it).
fn stage_rows(train: &[Example], stage: Stage, phase1: Phase1Rows) -> Vec<&Example> {
    let full = stage == Stage::PhaseOne && phase1 == Phase1Rows::Full;
    train
        .iter()
        .filter(|e| {
            if full {
                e.labels.iter().all(Option::is_some)
            } else {
                e.labels.iter().any(Option::is_some)
            }
        })
        .collect()
}

/// Trains (or resumes) one category's model and returns its validation score.
pub fn train_category<B: AutodiffBackend>(
    ctx: &Context<'_>,
    data: &CategoryData<'_>,
    category_index: usize,
    device: &B::Device,
) -> Result<Outcome> {
    let cfg = ctx.config;
    let name = &data.spec.name;
    let paths = ctx.paths;
    let model_config =
        GarmentModelConfig::for_category(cfg.backbone.clone(), cfg.head.clone(), data.spec);
    let stages = stages(cfg);
    let mut optim = optimizer_config(cfg).init::<B, GarmentModel<B>>();

    let state_path = paths.state(name);
    let (mut model, mut best, mut state) = if ctx.resume && state_path.exists() {
        let state: CategoryState = read_json(&state_path)?;
        let saved: GarmentModelConfig = read_json(&paths.model_config(name))?;
        if saved != model_config {
            bail!(
                "{}: the saved network differs from this run's settings; resume with the same options or start a new run",
                paths.model_config(name).display()
            );
        }
        if state.finished {
            let score = state
                .final_score
                .clone()
                .context("finished state without a score")?;
            println!(
                "{name}: already trained (validation score {:.4}), skipping",
                score.score
            );
            return Ok(Outcome::Finished(score));
        }
        let model = load_checkpoint(model_config.init::<B>(device), &paths.last(name), device)?;
        let best = load_weights(model_config.init::<B>(device), &paths.best(name))?;
        if state.epochs_done > 0 {
            optim = load_optimizer(optim, &paths.optimizer(name), device)?;
        }
        println!(
            "{name}: resuming at {} epoch {}",
            stages
                .get(state.stage)
                .map(|s| s.0.label())
                .unwrap_or_else(|| "the end".into()),
            state.epochs_done + 1
        );
        (model, best, state)
    } else {
        B::seed(
            device,
            derive_seed(cfg.seed, &[category_index as u64, 0xC0FFEE]),
        );
        let mut model = model_config.init::<B>(device);
        if cfg.shared_epochs > 0 {
            // The shared stage ran first and wrote where this category starts.
            let start = shared::SharedPaths::new(paths).start(name);
            model = load_weights(model, &start)?;
        } else if let Some(load) = ctx.pretrained {
            let bytes = load(model_config.clone())?;
            model = load_safetensors(model, bytes).context("loading the pretrained backbone")?;
        }
        std::fs::create_dir_all(paths.category_dir(name))?;
        write_json(&paths.model_config(name), &model_config)?;
        let state = CategoryState {
            stage: 0,
            epochs_done: 0,
            plateau: Plateau::new(cfg.lr, cfg.plateau),
            best_score: None,
            head_best: vec![None; data.spec.attributes.len()],
            final_score: None,
            finished: false,
            ema_steps: 0,
        };
        save_weights(&model, &paths.best(name))?;
        (model.clone(), model, state)
    };
    // The running average of the weights, when asked for; a stage in progress resumes
    // it from its file, a fresh stage restarts it below.
    let mut ema = if cfg.ema_decay > 0.0 {
        let mut average = model.valid();
        if state.epochs_done > 0 {
            average = load_checkpoint(average, &paths.ema(name), device)?;
        }
        Some(Ema::new(average, cfg.ema_decay, state.ema_steps))
    } else {
        None
    };

    let attributes = data.spec.attributes.len();
    while state.stage < stages.len() {
        let (stage, epochs) = stages[state.stage];
        if state.epochs_done == 0 {
            // A fresh stage starts from the best weights so far, with a fresh optimizer
            // and learning rate.
            model = best.clone();
            optim = optimizer_config(cfg).init::<B, GarmentModel<B>>();
            state.plateau = Plateau::new(cfg.lr, cfg.plateau);
            if let Some(ema) = &mut ema {
                *ema = Ema::new(model.valid(), cfg.ema_decay, 0);
            }
        }
        let rows = stage_rows(&data.train, stage, cfg.phase1_rows);
        if rows.is_empty() {
            println!(
                "{name}: {}: no training row has the labels this stage needs; skipped",
                stage.label()
            );
            state.stage += 1;
            state.epochs_done = 0;
            continue;
        }
        while state.epochs_done < epochs {
            let epoch = state.epochs_done;
            let epoch_seed =
                derive_seed(cfg.seed, &[category_index as u64, stage.id(), epoch as u64]);
            B::seed(device, epoch_seed);
            let started = Instant::now();
            let (trained, loss) = match run_epoch(
                ctx,
                data,
                &rows,
                stage,
                (epoch, epochs),
                epoch_seed,
                model,
                &mut optim,
                ema.as_mut(),
                &state.plateau,
                device,
            )? {
                Some(result) => result,
                None => return Ok(Outcome::Interrupted),
            };
            model = trained;
            let seconds = started.elapsed().as_secs_f64();
            // The weights validated and kept: the running average when there is one.
            let kept = match &ema {
                Some(ema) => ema.apply_to(model.clone()),
                None => model.clone(),
            };
            let scores = validate(ctx, data, &kept.valid(), device)?;
            let score = category_score(name, scores.clone());
            match stage {
                Stage::PhaseOne => {
                    if state.best_score.is_none_or(|b| score.score > b) {
                        state.best_score = Some(score.score);
                        best = kept;
                    }
                }
                Stage::PhaseTwo(_) => {
                    let mut heads = best.heads.clone();
                    for (i, s) in scores.iter().enumerate().take(attributes) {
                        if s.support > 0 && state.head_best[i].is_none_or(|b| s.harmonic > b) {
                            state.head_best[i] = Some(s.harmonic);
                            heads[i] = kept.heads[i].clone();
                        }
                    }
                    best = GarmentModel { heads, ..best };
                }
            }
            let batches = rows.len().div_ceil(cfg.batch_size);
            let lr = step_lr(
                cfg.lr_schedule,
                state.plateau.lr,
                (epoch + 1) * batches - 1,
                epochs * batches,
            );
            // Under the cosine schedule the plateau rule only keeps the best score; its
            // cuts would fight the decay. Under the annealing one it still cuts while the
            // rate is held.
            if cfg.lr_schedule != LrSchedule::Cosine {
                state.plateau.step(score.score);
            }
            state.epochs_done += 1;
            // Checkpoint: weights, optimizer and state, each written atomically, the
            // state last so that it never points at files not yet written.
            save_checkpoint(&model, &paths.last(name))?;
            save_weights(&best, &paths.best(name))?;
            save_optimizer(&optim, &paths.optimizer(name))?;
            if let Some(ema) = &ema {
                save_checkpoint(&ema.model, &paths.ema(name))?;
                state.ema_steps = ema.steps;
            }
            write_json(&state_path, &state)?;
            let images = rows.len() as f64;
            let log = EpochLog {
                category: name.clone(),
                stage: stage.label(),
                epoch: epoch + 1,
                loss,
                val_score: score.score,
                lr,
                img_per_s: images / seconds.max(1e-9),
                seconds,
                device: ctx.device_name.clone(),
                attributes: scores,
            };
            append_log(paths, &log)?;
            println!(
                "{name} {} epoch {}/{epochs}: loss {:.4}, validation score {:.4}, lr {:.2e}, {:.1} img/s",
                stage.label(),
                epoch + 1,
                loss,
                score.score,
                lr,
                log.img_per_s
            );
        }
        state.stage += 1;
        state.epochs_done = 0;
        write_json(&state_path, &state)?;
    }
    let final_scores = validate(ctx, data, &best.valid(), device)?;
    let final_score = category_score(name, final_scores);
    state.final_score = Some(final_score.clone());
    state.finished = true;
    write_json(&state_path, &state)?;
    Ok(Outcome::Finished(final_score))
}

/// The weights after an epoch, in Burn's own record format: unlike the safetensors
/// files it keeps each parameter's id, which the optimizer's saved state is keyed by,
/// so a resumed run continues with the same AdamW moments.
fn save_checkpoint<B: Backend, M: Module<B>>(model: &M, path: &std::path::Path) -> Result<()> {
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = Recorder::<B>::record(&recorder, model.clone().into_record(), ())
        .context("serialising the model")?;
    write_atomic(path, &bytes)
}

fn load_checkpoint<B: Backend, M: Module<B>>(
    model: M,
    path: &std::path::Path,
    device: &B::Device,
) -> Result<M> {
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let record = Recorder::<B>::load(&recorder, read(path)?, device)
        .with_context(|| format!("{}: not a checkpoint of this network", path.display()))?;
    Ok(model.load_record(record))
}

/// The optimizer's state (AdamW's moments, keyed by parameter id), written atomically.
fn save_optimizer<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
    optim: &O,
    path: &std::path::Path,
) -> Result<()> {
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let bytes = Recorder::<B>::record(&recorder, optim.to_record(), ())
        .context("serialising the optimizer")?;
    write_atomic(path, &bytes)
}

fn load_optimizer<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(
    optim: O,
    path: &std::path::Path,
    device: &B::Device,
) -> Result<O> {
    let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
    let record = Recorder::<B>::load(&recorder, read(path)?, device)
        .with_context(|| format!("{}: not an optimizer checkpoint", path.display()))?;
    Ok(optim.load_record(record))
}

fn save_weights<B: Backend>(model: &GarmentModel<B>, path: &std::path::Path) -> Result<()> {
    let bytes = write_safetensors(model, Precision::F32)?;
    write_atomic(path, &bytes)
}

/// Loads weights written by this trainer into `model`, naming the file on failure.
pub fn load_weights<B: Backend>(
    model: GarmentModel<B>,
    path: &std::path::Path,
) -> Result<GarmentModel<B>> {
    let bytes = read(path)?;
    load_safetensors(model, bytes)
        .with_context(|| format!("{}: wrong weights file", path.display()))
}

fn append_log(paths: &RunPaths, log: &EpochLog) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.log())
        .with_context(|| format!("{}: cannot open", paths.log().display()))?;
    writeln!(file, "{}", serde_json::to_string(log)?)?;
    Ok(())
}

/// One pass over `rows`; `None` when interrupted.
#[allow(clippy::too_many_arguments)]
fn run_epoch<B: AutodiffBackend, O: Optimizer<GarmentModel<B>, B>>(
    ctx: &Context<'_>,
    data: &CategoryData<'_>,
    rows: &[&Example],
    stage: Stage,
    (epoch, epochs): (usize, usize),
    epoch_seed: u64,
    model: GarmentModel<B>,
    optim: &mut O,
    mut ema: Option<&mut Ema<GarmentModel<B::InnerBackend>>>,
    plateau: &Plateau,
    device: &B::Device,
) -> Result<Option<(GarmentModel<B>, f64)>> {
    let cfg = ctx.config;
    let mut order: Vec<usize> = (0..rows.len()).collect();
    let mut rng = Rng::new(epoch_seed);
    rng.shuffle(&mut order);
    let mut target = data.target.clone();
    rng.shuffle(&mut target);
    let use_mmd = stage == Stage::PhaseOne && cfg.mmd_weight > 0.0 && !target.is_empty();
    let offsets = offset_rows::<B>(
        logit_offsets(data.spec, &data.train, cfg.logit_adjust),
        device,
    );
    let augment = EpochAugment {
        config: &cfg.augment,
        seed: cfg.seed,
        epoch: epoch_seed,
    };
    let batches = order.len().div_ceil(cfg.batch_size);
    let bar = progress_bar(
        ctx,
        batches as u64,
        &format!("{} {}", data.spec.name, stage.label()),
    );
    let started = Instant::now();
    let mut loss_sum = 0.0;
    // Phase two computes the shared features without gradients, on a frozen copy.
    let frozen = matches!(stage, Stage::PhaseTwo(_)).then(|| model.valid());
    // Positions in `rows` of the examples of batch `b`.
    let chunk_of =
        |b: usize| &order[b * cfg.batch_size..((b + 1) * cfg.batch_size).min(order.len())];
    // The next batches' pixels are made on a helper thread while this one trains.
    let prepare = |b: usize| -> Result<(TensorData, Option<TensorData>)> {
        let chunk = chunk_of(b);
        let images: Vec<usize> = chunk.iter().map(|&i| rows[i].image).collect();
        let src = pixel_data(ctx.train_images, &images, Some(augment), &ctx.preprocess)?;
        let tgt = if use_mmd {
            // Walk through the shuffled target images in step with the rows.
            let first = b * cfg.batch_size;
            let picked: Vec<usize> = (0..chunk.len())
                .map(|i| target[(first + i) % target.len()])
                .collect();
            Some(pixel_data(ctx.test_images, &picked, None, &ctx.preprocess)?)
        } else {
            None
        };
        Ok((src, tgt))
    };
    let mut interrupted = false;
    // The model moves through the optimizer each step; the slot holds it in between.
    let mut slot = Some(model);
    prefetched(batches, 2, prepare, |b, (src, tgt)| {
        if ctx.interrupted.load(Ordering::SeqCst) {
            interrupted = true;
            return Ok(false);
        }
        let examples: Vec<&Example> = chunk_of(b).iter().map(|&i| rows[i]).collect();
        let n = examples.len();
        let model = slot
            .take()
            .expect("the model is back in its slot after every step");
        let src = Tensor::<B, 4>::from_data(src, device);
        let tgt = tgt.map(|tgt| Tensor::<B, 4>::from_data(tgt, device));
        // MMD compares the whole batch's features with the target batch's: such a
        // step is not cut into parts.
        let parts = if tgt.is_some() { 1 } else { ctx.batch_parts };
        let part_loss = |part: &GarmentModel<B>, range: Range<usize>| -> Result<Tensor<B, 1>> {
            let len = range.len();
            let src = src.clone().narrow(0, range.start, len);
            match stage {
                Stage::PhaseOne => {
                    let (features, target_features) = match &tgt {
                        Some(tgt) => {
                            let both = part.forward_shared(Tensor::cat(vec![src, tgt.clone()], 0));
                            let m = both.dims()[0];
                            (
                                both.clone().narrow(0, 0, len),
                                Some(both.narrow(0, len, m - len)),
                            )
                        }
                        None => (part.forward_shared(src), None),
                    };
                    let out = part.forward_heads(features);
                    let mut loss =
                        heads_loss(&out.logits, &examples, range, offsets.as_deref(), device)?;
                    if let Some(target_features) = target_features {
                        let d = mmd(out.pooled, global_average_pool(target_features), &cfg.mmd);
                        loss = loss + d.mul_scalar(cfg.mmd_weight);
                    }
                    Ok(loss)
                }
                Stage::PhaseTwo(_) => {
                    let frozen = frozen.as_ref().expect("phase two has a frozen copy");
                    let shared = Tensor::<B, 4>::from_inner(frozen.forward_shared(src.inner()));
                    let out = part.forward_heads(shared);
                    heads_loss(&out.logits, &examples, range, offsets.as_deref(), device)
                }
            }
        };
        let mask_seed = derive_seed(epoch_seed, &[b as u64]);
        let (grads, value) = grads_in_parts(&model, n, parts, mask_seed, device, part_loss)?;
        if !value.is_finite() {
            bail!(
                "{}: the loss became {value} at batch {}; try a lower --lr",
                data.spec.name,
                b + 1
            );
        }
        loss_sum += value;
        let lr = step_lr(
            cfg.lr_schedule,
            plateau.lr,
            epoch * batches + b,
            epochs * batches,
        );
        let model = optim.step(lr, model, grads);
        if let Some(ema) = ema.as_deref_mut() {
            ema.update(&model);
        }
        slot = Some(model);
        let done = (b * cfg.batch_size + n) as f64;
        bar.set_message(format!(
            "loss {:.4}  {:.1} img/s",
            loss_sum / (b + 1) as f64,
            done / started.elapsed().as_secs_f64().max(1e-9)
        ));
        bar.inc(1);
        Ok(true)
    })?;
    if interrupted {
        bar.abandon_with_message("interrupted");
        return Ok(None);
    }
    let model = slot.expect("the model is back in its slot after every step");
    bar.finish_and_clear();
    Ok(Some((model, loss_sum / batches.max(1) as f64)))
}

/// The rate of step `step` of a stage of `total` steps: the plateau rule's rate as it
/// is, or that rate shaped by the warm-up and cosine or by the final decay.
fn step_lr(schedule: LrSchedule, rate: f64, step: usize, total: usize) -> f64 {
    match schedule {
        LrSchedule::Plateau => rate,
        LrSchedule::Cosine => rate * cosine_factor(step, total),
        LrSchedule::Anneal => rate * anneal_factor(step, total),
    }
}

/// Sum over heads of the cross-entropy on the rows labelled for each head, each head's
/// logits shifted by its `[1, classes]` row of `offsets` (see [`logit_offsets`]) when
/// given. `logits` are those of rows `rows` of the batch `examples`; each head's term
/// is their share of the whole batch's mean (their sum over the whole batch's labelled
/// count), so the parts of a batch add up to the whole batch's loss.
fn heads_loss<B: Backend>(
    logits: &[Tensor<B, 2>],
    examples: &[&Example],
    rows: Range<usize>,
    offsets: Option<&[Tensor<B, 2>]>,
    device: &B::Device,
) -> Result<Tensor<B, 1>> {
    let mut total = Tensor::<B, 1>::zeros([1], device);
    let mut labelled = false;
    for (a, logits) in logits.iter().enumerate() {
        let labels: Vec<Option<usize>> =
            examples[rows.clone()].iter().map(|e| e.labels[a]).collect();
        let here = labels.iter().filter(|l| l.is_some()).count();
        if here == 0 {
            continue;
        }
        let in_batch = examples.iter().filter(|e| e.labels[a].is_some()).count();
        let classes = logits.dims()[1];
        let targets = MaskedTargets::from_labels(&labels, classes, device)?;
        let logits = match offsets {
            Some(offsets) => logits.clone() + offsets[a].clone(),
            None => logits.clone(),
        };
        let term = targets.cross_entropy(logits);
        total = total
            + if here == in_batch {
                term
            } else {
                term.mul_scalar(here as f64 / in_batch as f64)
            };
        labelled = true;
    }
    if !labelled {
        // A part of a batch can hold no label at all: its loss is 0, but it still
        // needs a graph back to the network for the backward pass.
        if let Some(first) = logits.first() {
            total = total + first.clone().sum().mul_scalar(0.0);
        }
    }
    Ok(total)
}

/// [`logit_offsets`] as one `[1, classes]` tensor per attribute on `device`, made once
/// per epoch rather than at every step.
fn offset_rows<B: Backend>(
    offsets: Option<Vec<Vec<f32>>>,
    device: &B::Device,
) -> Option<Vec<Tensor<B, 2>>> {
    offsets.map(|rows| {
        rows.iter()
            .map(|row| Tensor::<B, 1>::from_floats(row.as_slice(), device).unsqueeze::<2>())
            .collect()
    })
}

/// Per attribute, `tau * ln(share)` of each class among `rows`' labels of it: the
/// logit-adjusted loss (`--logit-adjust`) trains on `logits + offsets`, so the plain
/// logits learn the evidence beyond how common a class is (Menon et al., 2021,
/// "Long-tail learning via logit adjustment"). Counts start at one, so a class absent
/// from the rows gets a finite offset. `None` when `tau` is 0.
pub fn logit_offsets(spec: &CategorySpec, rows: &[Example], tau: f64) -> Option<Vec<Vec<f32>>> {
    if tau == 0.0 {
        return None;
    }
    let offsets = spec
        .class_counts()
        .iter()
        .enumerate()
        .map(|(a, &classes)| {
            let mut counts = vec![1.0f64; classes];
            for row in rows {
                if let Some(c) = row.labels[a] {
                    counts[c] += 1.0;
                }
            }
            let total: f64 = counts.iter().sum();
            counts
                .iter()
                .map(|n| (tau * (n / total).ln()) as f32)
                .collect()
        })
        .collect();
    Some(offsets)
}

fn progress_bar(ctx: &Context<'_>, len: u64, prefix: &str) -> ProgressBar {
    if ctx.quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.to_string());
    bar
}

/// Logits of every attribute for `images` of `store`, one vector per attribute holding
/// each image's class values in turn, in chunks of `batch`, each cut into `parts` parts
/// run side by side ([`parts::logits_in_parts`]); with `mirror`, of the images flipped
/// left to right.
pub fn predict_logits<B: Backend>(
    model: &GarmentModel<B>,
    store: &ImageStore,
    images: &[usize],
    pre: &PreprocessConfig,
    (batch, parts): (usize, usize),
    mirror: bool,
    device: &B::Device,
) -> Result<Vec<Vec<f32>>> {
    let mut out = vec![Vec::new(); model.heads.len()];
    for chunk in images.chunks(batch.max(1)) {
        let mut x = pixels::<B>(store, chunk, None, pre, device)?;
        if mirror {
            x = x.flip([3]);
        }
        let logits = parts::logits_in_parts(model, x, parts);
        for (all, l) in out.iter_mut().zip(logits) {
            let values: Vec<f32> = l
                .into_data()
                .convert::<f32>()
                .to_vec()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            all.extend(values);
        }
    }
    Ok(out)
}

/// Predicted class of every attribute for `images` (see [`predict_logits`]): the
/// largest logit, the first of equal ones.
pub fn predict_classes<B: Backend>(
    model: &GarmentModel<B>,
    store: &ImageStore,
    images: &[usize],
    pre: &PreprocessConfig,
    batch: (usize, usize),
    device: &B::Device,
) -> Result<Vec<Vec<usize>>> {
    let logits = predict_logits(model, store, images, pre, batch, false, device)?;
    let per_head: Vec<Vec<usize>> = logits
        .iter()
        .map(|values| {
            let classes = values.len() / images.len().max(1);
            values
                .chunks(classes.max(1))
                .map(model_core::predict::argmax)
                .collect()
        })
        .collect();
    Ok((0..images.len())
        .map(|row| per_head.iter().map(|h| h[row]).collect())
        .collect())
}

/// Per-attribute validation scores of `model` on the category's validation rows.
fn validate<B: Backend>(
    ctx: &Context<'_>,
    data: &CategoryData<'_>,
    model: &GarmentModel<B>,
    device: &B::Device,
) -> Result<Vec<AttributeScore>> {
    let images: Vec<usize> = data.val.iter().map(|e| e.image).collect();
    let predicted = predict_classes(
        model,
        ctx.train_images,
        &images,
        &ctx.preprocess,
        // As `trainer evaluate` scores the run.
        ctx.config.inference_batch(ctx.device_name == "cpu"),
        device,
    )?;
    let mut tallies: Vec<AttributeTally> = data
        .spec
        .attributes
        .iter()
        .map(|a| AttributeTally::with_classes(a.classes.len()))
        .collect();
    for (example, predicted) in data.val.iter().zip(&predicted) {
        for (a, tally) in tallies.iter_mut().enumerate() {
            tally.add(example.labels[a], predicted[a]);
        }
    }
    Ok(tallies
        .iter()
        .zip(&data.spec.attributes)
        .map(|(t, a)| t.score(&a.name))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::ElementConversion;

    fn example(image: usize, labels: &[Option<usize>]) -> Example {
        Example {
            image,
            labels: labels.to_vec(),
        }
    }

    #[test]
    fn each_stage_trains_on_the_rows_it_should() {
        let train = vec![
            example(0, &[Some(1), Some(0)]),
            example(1, &[None, Some(2)]),
            example(2, &[None, None]),
            example(3, &[Some(0), None]),
        ];
        let images = |rows: Vec<&Example>| rows.iter().map(|e| e.image).collect::<Vec<_>>();
        assert_eq!(
            images(stage_rows(&train, Stage::PhaseOne, Phase1Rows::Full)),
            [0]
        );
        assert_eq!(
            images(stage_rows(&train, Stage::PhaseOne, Phase1Rows::Labelled)),
            [0, 1, 3]
        );
        for phase1 in [Phase1Rows::Full, Phase1Rows::Labelled] {
            assert_eq!(
                images(stage_rows(&train, Stage::PhaseTwo(1), phase1)),
                [0, 1, 3]
            );
        }
    }

    #[test]
    fn logit_offsets_are_tau_times_log_smoothed_class_shares() {
        use model_core::taxonomy::AttributeSpec;
        let attribute = |name: &str, classes: usize| AttributeSpec {
            name: name.into(),
            classes: (0..classes).map(|c| format!("c{c}")).collect(),
        };
        let spec = CategorySpec {
            name: "Test".into(),
            attributes: vec![attribute("a", 3), attribute("b", 2)],
        };
        let rows = vec![
            example(0, &[Some(0), None]),
            example(1, &[Some(0), Some(1)]),
            example(2, &[Some(1), None]),
            example(3, &[None, None]),
        ];
        assert!(logit_offsets(&spec, &rows, 0.0).is_none());
        let offsets = logit_offsets(&spec, &rows, 0.5).expect("tau > 0");
        assert_eq!(offsets.len(), 2, "one row of offsets per attribute");
        // Counts from one: a -> 3, 2, 1 of 6; b -> 1, 2 of 3 (unlabelled rows skipped).
        let want = [
            vec![3.0 / 6.0, 2.0 / 6.0, 1.0 / 6.0],
            vec![1.0 / 3.0, 2.0 / 3.0],
        ];
        for (got, want) in offsets.iter().zip(want) {
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert!((g - (0.5 * f64::ln(w)) as f32).abs() < 1e-6, "{got:?}");
            }
        }
    }

    #[test]
    fn heads_loss_takes_the_cross_entropy_of_the_shifted_logits() {
        type B = crate::device::Cpu;
        let device = Default::default();
        // One head of three classes, all logits 0; the second row is unlabelled.
        let logits = vec![Tensor::<B, 2>::zeros([2, 3], &device)];
        let (first, second) = (example(0, &[Some(0)]), example(1, &[None]));
        let rows = [&first, &second];
        let loss = |offsets: Option<&[Tensor<B, 2>]>| -> f32 {
            heads_loss(&logits, &rows, 0..2, offsets, &device)
                .unwrap()
                .into_scalar()
                .elem()
        };
        // Plain: a uniform softmax, -ln(1/3). Shifted by ln(0.5, 0.25, 0.25): the
        // softmax is those shares, so class 0 costs -ln(0.5).
        assert!((loss(None) - 3f32.ln()).abs() < 1e-5, "{}", loss(None));
        let shift = offset_rows::<B>(
            Some(vec![vec![0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()]]),
            &device,
        )
        .expect("offsets given");
        let shifted = loss(Some(&shift));
        assert!((shifted - 2f32.ln()).abs() < 1e-5, "{shifted}");
    }

    /// Every float parameter's values, in the module's order.
    pub(super) fn parameter_values<B: Backend, M: burn::module::Module<B>>(module: &M) -> Vec<f32> {
        struct Collect(Vec<f32>);
        impl<B: Backend> burn::module::ModuleVisitor<B> for Collect {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
                self.0
                    .extend(param.val().into_data().to_vec::<f32>().unwrap());
            }
        }
        let mut collect = Collect(Vec::new());
        module.visit(&mut collect);
        collect.0
    }

    #[test]
    fn a_batch_cut_into_parts_gives_the_whole_batch_gradient() {
        use burn::optim::SgdConfig;
        use burn::tensor::Distribution;
        type AB = burn::backend::Autodiff<crate::device::Cpu>;
        let device = Default::default();
        // Stochastic depth and both dropouts on, so the masks matter.
        let backbone = crate::default_job::backbone_by_name("default-small")
            .unwrap()
            .with_drop_path_rate(0.5);
        let config = GarmentModelConfig::new(
            backbone,
            model_core::heads::HeadConfig::new().with_head_dim(32),
            vec![3, 4],
        )
        .with_feature_dropout(0.3);
        let model = config.init::<AB>(&device);
        let x = Tensor::<AB, 4>::random([7, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        // Unlabelled rows here and there: the parts hold different counts of each.
        let labels: [[Option<usize>; 2]; 7] = [
            [Some(0), Some(3)],
            [None, Some(1)],
            [Some(2), None],
            [Some(1), Some(0)],
            [None, None],
            [Some(0), Some(2)],
            [Some(2), None],
        ];
        let examples: Vec<Example> = labels
            .iter()
            .enumerate()
            .map(|(i, l)| example(i, l))
            .collect();
        let rows: Vec<&Example> = examples.iter().collect();
        let step = |parts: usize| {
            let (grads, loss) = grads_in_parts(&model, 7, parts, 11, &device, |part, range| {
                let out = part.forward(x.clone().narrow(0, range.start, range.len()));
                heads_loss(&out.logits, &rows, range, None, &device)
            })
            .unwrap();
            let mut sgd = SgdConfig::new().init::<AB, GarmentModel<AB>>();
            (parameter_values(&sgd.step(1.0, model.clone(), grads)), loss)
        };
        // Cut first, while the parameters' initial values are not yet drawn: the
        // parts' copies must not each draw their own.
        let first = step(3);
        let (whole, whole_loss) = step(1);
        assert!(whole_loss > 0.0);
        assert_ne!(whole, parameter_values(&model), "the step changed nothing");
        for (parts, (cut, loss)) in [(3, first.clone()), (2, step(2)), (7, step(7))] {
            assert!(
                (loss - whole_loss).abs() < 1e-5 * whole_loss,
                "{parts} parts: loss {loss} against {whole_loss}"
            );
            let worst = whole
                .iter()
                .zip(&cut)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst < 1e-5,
                "{parts} parts: weights after the step differ by {worst}"
            );
        }
        // The same parts again: the same result to the bit.
        assert_eq!(step(3).0, first.0);
    }

    #[test]
    fn runs_saved_before_phase1_rows_read_as_the_reference() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "trainer",
            "train",
            "--data",
            "d",
            "--out",
            "o",
            "--phase1-rows",
            "labelled",
        ])
        .unwrap();
        let Some(crate::cli::Command::Train(args)) = cli.command else {
            panic!("parsed as another command");
        };
        let (config, ..) = crate::default_job::train_config(*args).unwrap();
        assert_eq!(config.phase1_rows, Phase1Rows::Labelled);
        let mut json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["phase1_rows"], "labelled");
        json.as_object_mut().unwrap().remove("phase1_rows");
        json.as_object_mut().unwrap().remove("logit_adjust");
        json.as_object_mut().unwrap().remove("ema_decay");
        json.as_object_mut().unwrap().remove("batch_parts");
        json.as_object_mut().unwrap().remove("time_budget_min");
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.batch_parts, None, "parts chosen from the device");
        assert_eq!(old.time_budget_min, None, "no budget: every shared epoch");
        assert_eq!(old.phase1_rows, Phase1Rows::Full);
        assert_eq!(old.logit_adjust, 0.0);
        assert_eq!(
            old.ema_decay, 0.0,
            "runs saved before the average train without it"
        );
    }
}
