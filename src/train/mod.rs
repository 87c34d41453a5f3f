//! Sequential training: learn the tasks of a stream one after another and evaluate every task
//! after each, producing the `(T+1) × T` accuracy matrix.

pub mod eval;

use std::borrow::Cow;
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::engine::{engine_for, Engine, Part};
use crate::models::loss::Targets;
use crate::models::{ModelSpec, Network};
use crate::optim::grapes::{FactorStats, FactorStatsAccumulator};
use crate::optim::{GrapesMode, Optimizer, OptimizerSettings};
use crate::rng::SeedRng;
use crate::strategy::{Context, StepData, Strategy, StrategySettings};
use crate::streams::{BatchOrder, Example, MixedBatch, MixedOrder, TaskStream};

pub use crate::engine::BackwardPath;
pub use eval::{evaluate, Evaluation};

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
    /// Mean training loss over the task's steps; `None` when no step finished (a run that
    /// diverged at its first step).
    pub mean_train_loss: Option<f64>,
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
    /// Mean test cross-entropy, same layout. NaN where the model's outputs are not finite (an
    /// initialization or a task that blew the weights up); JSON stores it as `null`.
    #[serde(deserialize_with = "nan_from_null")]
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

/// Reads a matrix whose non-finite values JSON wrote as `null` back, as NaN.
fn nan_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Vec<f64>>, D::Error> {
    let rows: Vec<Vec<Option<f64>>> = Deserialize::deserialize(d)?;
    Ok(rows
        .into_iter()
        .map(|row| row.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
        .collect())
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
///
/// CPU work runs on the current rayon pool: a job installs the run on its own pool
/// ([`crate::engine::kernels::run_on`]); called from outside any pool, rayon's global pool is used.
pub fn train_sequence(
    stream: &TaskStream,
    model: &ModelSpec,
    method: &Method,
    settings: &TrainSettings,
    seed: u64,
    device: &Device,
    observer: &dyn Observer,
) -> candle_core::Result<RunRecord> {
    let mut run = Trainer::start(stream, model, method, settings, seed, device, observer)?;
    for t in 0..stream.len() {
        let _span = tracing::info_span!("task", task = t + 1).entered();
        let stage = run.stage(t);
        if let Some(divergence) = run.train_task(t, &stage)? {
            return Ok(run.diverged(divergence));
        }
        run.evaluate_after(t, &stage)?;
    }
    Ok(run.record)
}

/// Where a task's batches come from.
enum Order {
    /// The task's own examples.
    Task(BatchOrder),
    /// The union of several tasks' examples (joint training).
    Mixed(MixedOrder),
}

impl Order {
    /// The batch order of task `t` drawing from `sources` (the task alone, or several).
    fn new(
        stage: &TaskStream,
        t: usize,
        sources: std::ops::Range<usize>,
        settings: &TrainSettings,
        seed: u64,
    ) -> Order {
        let drop_last = matches!(settings.budget, Budget::Iterations(_));
        if sources == (t..t + 1) {
            Order::Task(BatchOrder::new(
                seed,
                t,
                &stage.tasks[t].train,
                settings.batch_size,
                drop_last,
            ))
        } else {
            Order::Mixed(MixedOrder::new(
                stage,
                seed,
                sources,
                settings.batch_size,
                drop_last,
            ))
        }
    }

    fn batches_per_epoch(&self) -> usize {
        match self {
            Order::Task(o) => o.batches_per_epoch(),
            Order::Mixed(o) => o.batches_per_epoch(),
        }
    }

    /// Fills `examples` and `data` with the next batch of task `t`'s training.
    fn next_batch(
        &mut self,
        stage: &TaskStream,
        t: usize,
        examples: &mut Vec<Example>,
        data: &mut MixedBatch,
    ) {
        examples.clear();
        match self {
            Order::Task(o) => {
                let indices = o.next_batch();
                examples.extend(indices.iter().map(|&i| (t, i)));
                data.fill_task(stage, t, indices);
            }
            Order::Mixed(o) => {
                examples.extend_from_slice(o.next_batch());
                data.fill(stage, examples);
            }
        }
    }
}

/// The step at which a run diverged and its loss there.
#[derive(Debug, Clone, Copy)]
struct Divergence {
    task: usize,
    step: usize,
    loss: f32,
}

/// What one task's training loop measured.
#[derive(Default)]
struct TaskProgress {
    seconds: f64,
    samples: usize,
    loss_sum: f64,
    steps: usize,
    factors: FactorStatsAccumulator,
}

/// One run in progress: the model, its engine, optimizer and strategy, and the record so far.
struct Trainer<'a> {
    stream: &'a TaskStream,
    method: &'a Method,
    settings: &'a TrainSettings,
    seed: u64,
    device: &'a Device,
    observer: &'a dyn Observer,
    /// The network evaluations read (its `Var`s get the engine's parameters before each).
    net: Network,
    /// Owns the parameters while tasks train.
    engine: Box<dyn Engine>,
    optimizer: Box<dyn Optimizer + Send>,
    strategy: Box<dyn Strategy>,
    /// The current batch, grouped by head, and its examples as (task, index).
    data: MixedBatch,
    examples: Vec<Example>,
    record: RunRecord,
}

impl<'a> Trainer<'a> {
    /// Builds the model and an independently initialized baseline, evaluates both on every
    /// task (row 0 and the FWT baseline), and sets up the engine, optimizer and strategy.
    fn start(
        stream: &'a TaskStream,
        model: &ModelSpec,
        method: &'a Method,
        settings: &'a TrainSettings,
        seed: u64,
        device: &'a Device,
        observer: &'a dyn Observer,
    ) -> candle_core::Result<Trainer<'a>> {
        let init = |label: &str| {
            Network::new(
                model,
                &stream.outputs,
                &mut SeedRng::derive(seed, label, 0),
                device,
            )
        };
        let net = init("init")?;
        let baseline_net = init("baseline-init")?;
        let all_tasks: Vec<usize> = (0..stream.len()).collect();
        // Before any training, every task is scored in the output space it will be learned in.
        let untrained = stream.at_stage(0);
        let eval_batch = settings.eval_batch_size;
        let baseline = evaluate(&baseline_net, &untrained, &all_tasks, eval_batch, device)?;
        let initial = evaluate(&net, &untrained, &all_tasks, eval_batch, device)?;
        let record = RunRecord {
            status: RunStatus::Completed,
            accuracy: vec![initial.accuracy],
            loss: vec![initial.loss],
            baseline_accuracy: baseline.accuracy,
            tasks: Vec::new(),
            curves: Vec::new(),
            parameters: net.num_parameters(),
        };
        Ok(Trainer {
            stream,
            method,
            settings,
            seed,
            device,
            observer,
            engine: engine_for(&net, settings.backward, device)?,
            optimizer: method.optimizer.build(),
            strategy: method.strategy.build(settings.batch_size),
            net,
            data: MixedBatch::default(),
            examples: Vec::new(),
            record,
        })
    }

    /// The stream as seen while task `t` trains and when the model is evaluated after it: with
    /// class-incremental `seen-so-far`, the softmax spans the classes of the tasks met so far
    /// (including every task a strategy trains on at once).
    fn stage(&self, t: usize) -> Cow<'a, TaskStream> {
        let stream: &'a TaskStream = self.stream;
        let sources = self.strategy.training_tasks(t, stream.len());
        stream.at_stage(t.max(sources.end - 1))
    }

    /// Trains task `t` (0-based) for its budget on `stage` and records its training
    /// statistics; returns where the loss stopped being finite, if it did.
    fn train_task(
        &mut self,
        t: usize,
        stage: &TaskStream,
    ) -> candle_core::Result<Option<Divergence>> {
        if self.settings.reset_optimizer && t > 0 {
            self.optimizer.reset();
        }
        let sources = self.strategy.training_tasks(t, stage.len());
        let mut order = Order::new(stage, t, sources, self.settings, self.seed);
        let steps = match self.settings.budget {
            Budget::Epochs(e) => e * order.batches_per_epoch(),
            Budget::Iterations(n) => n,
        };
        let (grapes, seed) = (self.method.grapes, self.seed);
        self.strategy
            .before_task(&mut context(stage, &mut self.engine, grapes, seed), t)?;
        self.observer.task_started(t, steps);
        let mut progress = TaskProgress::default();
        let mut divergence = None;
        for step in 1..=steps {
            let started = Instant::now();
            order.next_batch(stage, t, &mut self.examples, &mut self.data);
            let loss = self.step(stage, t, &mut progress.factors)?;
            progress.seconds += started.elapsed().as_secs_f64();
            progress.samples += self.data.len();
            if !loss.is_finite() {
                divergence = Some(Divergence {
                    task: t,
                    step,
                    loss,
                });
                break;
            }
            progress.loss_sum += loss as f64;
            progress.steps += 1;
            self.observer.step_done(loss);
            if let Some(every) = self.settings.eval_every {
                if step % every == 0 && step != steps {
                    self.record_curve(stage, t, step)?;
                }
            }
        }
        self.observer.task_finished(t);
        if divergence.is_none() {
            self.strategy
                .after_task(&mut context(stage, &mut self.engine, grapes, seed), t)?;
        }
        self.engine.sync(&self.net)?;
        self.record_task(t, progress);
        Ok(divergence)
    }

    /// One optimizer step on the batch in `self.data`: the data's loss (weighted by the
    /// strategy; its GRAPES factors go to `factors`), the strategy's extra terms and
    /// penalties, the update. Returns the data's mean loss; a non-finite loss updates nothing.
    fn step(
        &mut self,
        stage: &TaskStream,
        t: usize,
        factors: &mut FactorStatsAccumulator,
    ) -> candle_core::Result<f32> {
        let grapes = self.method.grapes;
        self.engine.zero_grad();
        let n = self.data.len() as f32;
        let data_weight = self.strategy.data_weight(t);
        let single = self.data.groups().len() == 1;
        let mut loss = 0.0f32;
        for g in self.data.groups() {
            let share = g.batch.len() as f32 / n;
            let part = Part {
                pixels: &g.batch.pixels,
                targets: Targets::Hard(&g.batch.targets),
                head: g.head,
                range: g.range.clone(),
                weight: data_weight * share,
            };
            let l = self.engine.accumulate(&part, grapes)?;
            loss += if single { l } else { share * l };
        }
        if !loss.is_finite() {
            return Ok(loss);
        }
        if grapes.is_on() {
            factors.add_slices(self.engine.factors());
        }
        let step_data = StepData {
            examples: &self.examples,
            batch: &self.data,
        };
        self.strategy.extend_gradients(
            &mut context(stage, &mut self.engine, grapes, self.seed),
            t,
            &step_data,
        )?;
        let (params, grads, touched) = self.engine.state_mut();
        self.strategy.regularize(params, grads, touched);
        self.engine.apply(self.optimizer.as_mut())?;
        let (params, _, touched) = self.engine.state_mut();
        self.strategy.after_update(params, touched);
        Ok(loss)
    }

    /// Evaluates the tasks seen so far after `step` steps of task `t` (a learning-curve point).
    fn record_curve(
        &mut self,
        stage: &TaskStream,
        t: usize,
        step: usize,
    ) -> candle_core::Result<()> {
        self.engine.sync(&self.net)?;
        let seen: Vec<usize> = (0..=t).collect();
        let e = evaluate(
            &self.net,
            stage,
            &seen,
            self.settings.eval_batch_size,
            self.device,
        )?;
        self.record
            .curves
            .extend(seen.iter().zip(&e.accuracy).map(|(&j, &a)| CurvePoint {
                training_task: t + 1,
                step,
                eval_task: j + 1,
                accuracy: a,
            }));
        Ok(())
    }

    /// Appends task `t`'s training statistics to the record.
    fn record_task(&mut self, t: usize, progress: TaskProgress) {
        let TaskProgress {
            seconds,
            samples,
            loss_sum,
            steps,
            factors,
        } = progress;
        self.record.tasks.push(TaskTraining {
            task: t + 1,
            steps,
            samples,
            train_seconds: seconds,
            samples_per_s: if seconds > 0.0 {
                samples as f64 / seconds
            } else {
                0.0
            },
            mean_train_loss: (steps > 0).then(|| loss_sum / steps as f64),
            grapes_factors: factors
                .averages()
                .into_iter()
                .zip(&self.net.hidden)
                .map(|(stats, l)| LayerFactors {
                    layer: l.name.clone(),
                    stats,
                })
                .collect(),
        });
    }

    /// Evaluates every task after task `t` (row `t + 1` of the matrix) and, with learning
    /// curves, closes task `t`'s curve with the same numbers.
    fn evaluate_after(&mut self, t: usize, stage: &TaskStream) -> candle_core::Result<()> {
        let all_tasks: Vec<usize> = (0..stage.len()).collect();
        let e = evaluate(
            &self.net,
            stage,
            &all_tasks,
            self.settings.eval_batch_size,
            self.device,
        )?;
        tracing::debug!(task = t + 1, accuracy = ?e.accuracy, "evaluated");
        if self.settings.eval_every.is_some() {
            let steps = self.record.tasks.last().map_or(0, |task| task.steps);
            self.record.curves.extend((0..=t).map(|j| CurvePoint {
                training_task: t + 1,
                step: steps,
                eval_task: j + 1,
                accuracy: e.accuracy[j],
            }));
        }
        self.record.accuracy.push(e.accuracy);
        self.record.loss.push(e.loss);
        Ok(())
    }

    /// The record of a run that diverged.
    fn diverged(mut self, d: Divergence) -> RunRecord {
        tracing::warn!(task = d.task + 1, step = d.step, loss = %d.loss, "loss is not finite: the run diverged");
        self.record.status = RunStatus::Diverged {
            task: d.task + 1,
            step: d.step,
            loss: d.loss.to_string(),
        };
        self.record
    }
}

/// What a strategy reaches during a run.
fn context<'b>(
    stage: &'b TaskStream,
    engine: &'b mut Box<dyn Engine>,
    grapes: GrapesMode,
    seed: u64,
) -> Context<'b> {
    Context {
        stream: stage,
        engine: engine.as_mut(),
        grapes,
        seed,
    }
}
