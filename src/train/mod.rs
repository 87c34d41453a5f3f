//! Sequential training: learn the tasks of a stream one after another and evaluate every task
//! after each, producing the `(T+1) × T` accuracy matrix.

pub mod engine;
pub mod eval;
pub mod step;

use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::models::fused::{on_pool, FusedMlp};
use crate::models::loss::Targets;
use crate::models::{ModelConfig, Network};
use crate::optim::grapes::{FactorStats, FactorStatsAccumulator};
use crate::optim::{GrapesMode, OptimizerSettings};
use crate::rng::SeedRng;
use crate::strategy::{Context, StepData, StrategySettings};
use crate::streams::{BatchOrder, Example, MixedBatch, MixedOrder, TaskStream};
use engine::{Engine, FusedEngine, Part, TensorEngine};

pub use eval::{evaluate, Evaluation};
pub use step::{BackwardPath, StepInput};

/// How long each task is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Budget {
    /// Passes over the task's training set (a final partial batch is kept).
    Epochs(usize),
    /// Optimizer steps of full batches, reshuffling at every pass.
    Iterations(usize),
}

/// Validated training settings shared by every task of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Training per task.
    pub budget: Budget,
    /// Examples per evaluation batch.
    pub eval_batch_size: usize,
    /// Evaluate every seen task every N steps within a task (learning curves).
    pub eval_every: Option<usize>,
    /// Start every task with fresh optimizer state.
    pub reset_optimizer: bool,
    /// Which backward pass computes gradients.
    pub backward: BackwardPath,
}

/// A method: a named optimizer with or without GRAPES, and a continual-learning strategy.
#[derive(Debug, Clone, PartialEq)]
pub struct Method {
    /// Display name, e.g. `sgd+grapes`.
    pub name: String,
    /// The base optimizer.
    pub optimizer: OptimizerSettings,
    /// The GRAPES variant.
    pub grapes: GrapesMode,
    /// What the method does beyond fine-tuning (EWC, replay, …).
    pub strategy: StrategySettings,
}

/// Where a task's batches come from.
enum Order {
    /// The task's own examples.
    Task(BatchOrder),
    /// The union of several tasks' examples (joint training).
    Mixed(MixedOrder),
}

impl Order {
    fn batches_per_epoch(&self) -> usize {
        match self {
            Order::Task(o) => o.batches_per_epoch(),
            Order::Mixed(o) => o.batches_per_epoch(),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RunStatus {
    /// Every task was trained and evaluated.
    Completed,
    /// The loss became NaN or infinite at `step` (1-based, counted within `task`, 1-based).
    Diverged {
        task: usize,
        step: usize,
        loss: String,
    },
}

/// Timing and loss of training one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskTraining {
    /// 1-based task.
    pub task: usize,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Training examples processed.
    pub samples: usize,
    /// Wall time of the training steps (evaluation excluded), seconds.
    pub train_seconds: f64,
    /// Training examples per second.
    pub samples_per_s: f64,
    /// Mean training loss over the task's steps.
    pub mean_train_loss: f64,
    /// GRAPES factor statistics per hidden layer, averaged over the task's steps (empty without
    /// GRAPES).
    pub grapes_factors: Vec<LayerFactors>,
}

/// GRAPES statistics of one hidden layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerFactors {
    /// Layer name.
    pub layer: String,
    /// Averages over the task's steps.
    #[serde(flatten)]
    pub stats: FactorStats,
}

/// One point of a within-task learning curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// 1-based task being trained.
    pub training_task: usize,
    /// Steps taken within that task.
    pub step: usize,
    /// 1-based task evaluated.
    pub eval_task: usize,
    /// Its test accuracy.
    pub accuracy: f64,
}

/// Everything a run records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Completed or diverged.
    pub status: RunStatus,
    /// `accuracy[i][j]`: accuracy on task j+1 after training task i (row 0: initialization).
    /// A diverged run keeps the rows it completed.
    pub accuracy: Vec<Vec<f64>>,
    /// Mean test cross-entropy, same layout.
    pub loss: Vec<Vec<f64>>,
    /// Accuracy of an independently initialized, untrained model on every task.
    pub baseline_accuracy: Vec<f64>,
    /// Training statistics per task.
    pub tasks: Vec<TaskTraining>,
    /// Within-task learning curves (empty unless `eval_every` is set).
    pub curves: Vec<CurvePoint>,
    /// Trainable parameters of the model.
    pub parameters: usize,
}

/// Receives progress while a run trains (progress bars, logs).
pub trait Observer: Sync {
    /// Training task `task` (0-based) starts and will take `steps` steps.
    fn task_started(&self, _task: usize, _steps: usize) {}
    /// One step finished with this loss.
    fn step_done(&self, _loss: f32) {}
    /// The task's training finished.
    fn task_finished(&self, _task: usize) {}
    /// The whole run finished (trained, diverged or failed).
    fn run_finished(&self) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// Trains `method` on every task of `stream` in order, evaluating all tasks at initialization
/// and after each task. Divergence ends the run early with what was recorded so far.
/// With several CPU threads the run executes on rayon's pool ([`on_pool`]).
pub fn train_sequence(
    stream: &TaskStream,
    model: &ModelConfig,
    method: &Method,
    settings: &TrainSettings,
    seed: u64,
    device: &Device,
    observer: &dyn Observer,
) -> candle_core::Result<RunRecord> {
    if device.is_cpu() {
        on_pool(|| train_sequence_here(stream, model, method, settings, seed, device, observer))
    } else {
        train_sequence_here(stream, model, method, settings, seed, device, observer)
    }
}

/// [`train_sequence`] on the calling thread.
fn train_sequence_here(
    stream: &TaskStream,
    model: &ModelConfig,
    method: &Method,
    settings: &TrainSettings,
    seed: u64,
    device: &Device,
    observer: &dyn Observer,
) -> candle_core::Result<RunRecord> {
    let net = Network::new(
        model,
        &stream.outputs,
        &mut SeedRng::derive(seed, "init", 0),
        device,
    )?;
    let baseline_net = Network::new(
        model,
        &stream.outputs,
        &mut SeedRng::derive(seed, "baseline-init", 0),
        device,
    )?;
    let all_tasks: Vec<usize> = (0..stream.len()).collect();
    // Before any training, every task is scored in the output space it will be learned in.
    let untrained = stream.at_stage(0);
    let baseline = evaluate(
        &baseline_net,
        &untrained,
        &all_tasks,
        settings.eval_batch_size,
        device,
    )?;
    let initial = evaluate(
        &net,
        &untrained,
        &all_tasks,
        settings.eval_batch_size,
        device,
    )?;
    let mut record = RunRecord {
        status: RunStatus::Completed,
        accuracy: vec![initial.accuracy],
        loss: vec![initial.loss],
        baseline_accuracy: baseline.accuracy,
        tasks: Vec::new(),
        curves: Vec::new(),
        parameters: net.num_parameters(),
    };
    let mut optimizer = method.optimizer.build();
    // The engine owns the parameters while tasks train; the network's Vars get them back
    // before every evaluation.
    let mut engine: Box<dyn Engine> = if settings.backward.is_fused(&net, device) {
        Box::new(FusedEngine(FusedMlp::from_network(&net)?))
    } else {
        Box::new(TensorEngine::new(
            &net,
            settings.backward.resolve(&net),
            device,
        )?)
    };
    let mut strategy = method.strategy.build(settings.batch_size);
    let mut data = MixedBatch::default();
    let mut examples: Vec<Example> = Vec::new();
    for t in 0..stream.len() {
        let _span = tracing::info_span!("task", task = t + 1).entered();
        if settings.reset_optimizer && t > 0 {
            optimizer.reset();
        }
        let drop_last = matches!(settings.budget, Budget::Iterations(_));
        let sources = strategy.training_tasks(t, stream.len());
        // The stream as seen while these tasks train and when the model is evaluated after
        // them (class-incremental `seen-so-far`: the softmax spans the classes met so far).
        let view = stream.at_stage(t.max(sources.end - 1));
        let stream: &TaskStream = &view;
        macro_rules! ctx {
            () => {
                Context {
                    stream,
                    engine: engine.as_mut(),
                    grapes: method.grapes,
                    seed,
                }
            };
        }
        let mut order = if sources == (t..t + 1) {
            Order::Task(BatchOrder::new(
                seed,
                t,
                &stream.tasks[t].train,
                settings.batch_size,
                drop_last,
            ))
        } else {
            Order::Mixed(MixedOrder::new(
                stream,
                seed,
                sources,
                settings.batch_size,
                drop_last,
            ))
        };
        let steps = match settings.budget {
            Budget::Epochs(e) => e * order.batches_per_epoch(),
            Budget::Iterations(n) => n,
        };
        strategy.before_task(&mut ctx!(), t)?;
        observer.task_started(t, steps);
        let mut stats = FactorStatsAccumulator::default();
        let (mut seconds, mut samples, mut loss_sum) = (0.0f64, 0usize, 0.0f64);
        let mut diverged = None;
        let data_weight = strategy.data_weight(t);
        for step in 1..=steps {
            let started = Instant::now();
            examples.clear();
            match &mut order {
                Order::Task(o) => {
                    let indices = o.next_batch();
                    examples.extend(indices.iter().map(|&i| (t, i)));
                    data.fill_task(stream, t, indices);
                }
                Order::Mixed(o) => {
                    examples.extend_from_slice(o.next_batch());
                    data.fill(stream, &examples);
                }
            }
            engine.zero_grad();
            let n = data.len() as f32;
            let mut loss = 0.0f32;
            for g in data.groups() {
                let share = g.batch.len() as f32 / n;
                let part = Part {
                    pixels: &g.batch.pixels,
                    targets: Targets::Hard(&g.batch.targets),
                    head: g.head,
                    range: g.range.clone(),
                    weight: data_weight * share,
                };
                let l = engine.accumulate(&part, method.grapes)?;
                loss += if data.groups().len() == 1 {
                    l
                } else {
                    share * l
                };
            }
            if loss.is_finite() {
                if method.grapes.is_on() {
                    stats.add_slices(engine.factors());
                }
                let step_data = StepData {
                    examples: &examples,
                    batch: &data,
                };
                strategy.extend_gradients(&mut ctx!(), t, &step_data)?;
                let (params, grads, touched) = engine.state_mut();
                strategy.regularize(params, grads, touched);
                engine.apply(optimizer.as_mut())?;
                let (params, _, touched) = engine.state_mut();
                strategy.after_update(params, touched);
            }
            seconds += started.elapsed().as_secs_f64();
            samples += data.len();
            if !loss.is_finite() {
                diverged = Some((step, loss));
                break;
            }
            loss_sum += loss as f64;
            observer.step_done(loss);
            if let Some(every) = settings.eval_every {
                if step % every == 0 && step != steps {
                    engine.sync(&net)?;
                    let seen: Vec<usize> = (0..=t).collect();
                    let e = evaluate(&net, stream, &seen, settings.eval_batch_size, device)?;
                    record
                        .curves
                        .extend(seen.iter().zip(&e.accuracy).map(|(&j, &a)| CurvePoint {
                            training_task: t + 1,
                            step,
                            eval_task: j + 1,
                            accuracy: a,
                        }));
                }
            }
        }
        observer.task_finished(t);
        if diverged.is_none() {
            strategy.after_task(&mut ctx!(), t)?;
        }
        engine.sync(&net)?;
        let done_steps = diverged.map_or(steps, |(s, _)| s - 1);
        record.tasks.push(TaskTraining {
            task: t + 1,
            steps: done_steps,
            samples,
            train_seconds: seconds,
            samples_per_s: if seconds > 0.0 {
                samples as f64 / seconds
            } else {
                0.0
            },
            mean_train_loss: if done_steps > 0 {
                loss_sum / done_steps as f64
            } else {
                f64::NAN
            },
            grapes_factors: stats
                .averages()
                .into_iter()
                .zip(&net.hidden)
                .map(|(stats, l)| LayerFactors {
                    layer: l.name.clone(),
                    stats,
                })
                .collect(),
        });
        if let Some((step, loss)) = diverged {
            tracing::warn!(task = t + 1, step, %loss, "loss is not finite: the run diverged");
            record.status = RunStatus::Diverged {
                task: t + 1,
                step,
                loss: loss.to_string(),
            };
            return Ok(record);
        }
        let e = evaluate(&net, stream, &all_tasks, settings.eval_batch_size, device)?;
        tracing::debug!(task = t + 1, accuracy = ?e.accuracy, "evaluated");
        if settings.eval_every.is_some() {
            record.curves.extend((0..=t).map(|j| CurvePoint {
                training_task: t + 1,
                step: steps,
                eval_task: j + 1,
                accuracy: e.accuracy[j],
            }));
        }
        record.accuracy.push(e.accuracy);
        record.loss.push(e.loss);
    }
    Ok(record)
}
