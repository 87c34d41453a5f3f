//! The trainer: one run in progress, in named steps — start (models and row 0), train a task
//! (its batch order, then step after step), one step (data loss, strategy terms, update),
//! record the task, evaluate after it.

use std::borrow::Cow;
use std::time::Instant;

use candle_core::Device;

use super::{
    evaluate, Budget, CurvePoint, LayerFactors, Method, Observer, RunRecord, RunStatus,
    TaskTraining, TrainSettings,
};
use crate::engine::{engine_for, kernels, Engine, Objective};
use crate::models::loss::Targets;
use crate::models::{ModelSpec, Network};
use crate::optim::grapes::FactorStatsAccumulator;
use crate::optim::{GrapesMode, Optimizer};
use crate::platform::{KernelPath, Platform};
use crate::rng::SeedRng;
use crate::strategy::{Context, PhaseBudget, StepData, Strategy};
use crate::streams::{BatchOrder, Example, MixedBatch, MixedOrder, TaskStream};

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
pub(super) struct Divergence {
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
pub(super) struct Trainer<'a> {
    stream: &'a TaskStream,
    method: &'a Method,
    settings: &'a TrainSettings,
    seed: u64,
    observer: &'a dyn Observer,
    /// The network (its `Var`s get the engine's parameters after every task; evaluation reads
    /// the engine).
    net: Network,
    /// Owns the parameters while tasks train.
    engine: Box<dyn Engine>,
    optimizer: Box<dyn Optimizer + Send>,
    strategy: Box<dyn Strategy>,
    /// The current batch, grouped by head, and its examples as (task, index).
    data: MixedBatch,
    examples: Vec<Example>,
    pub(super) record: RunRecord,
}

impl<'a> Trainer<'a> {
    /// Builds the model and an independently initialized baseline, evaluates both on every
    /// task (row 0 and the FWT baseline), and sets up the engine, optimizer and strategy.
    pub(super) fn start(
        stream: &'a TaskStream,
        model: &ModelSpec,
        method: &'a Method,
        settings: &'a TrainSettings,
        seed: u64,
        device: &'a Device,
        observer: &'a dyn Observer,
    ) -> candle_core::Result<Trainer<'a>> {
        // The model's input follows the stream's images (padded streams have larger ones).
        let model = model.clone().for_input_side(stream.image_side());
        let init = |label: &str| {
            Network::new(
                &model,
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
        let mut engine = engine_for(&net, settings.backward, device)?;
        let baseline = evaluate(
            engine_for(&baseline_net, settings.backward, device)?.as_mut(),
            &untrained,
            &all_tasks,
            eval_batch,
        )?;
        let initial = evaluate(engine.as_mut(), &untrained, &all_tasks, eval_batch)?;
        let record = RunRecord {
            status: RunStatus::Completed,
            accuracy: vec![initial.accuracy],
            loss: vec![initial.loss],
            baseline_accuracy: baseline.accuracy,
            tasks: Vec::new(),
            curves: Vec::new(),
            parameters: net.num_parameters(),
            platform: Some(Platform {
                plugins: crate::plugin::plugins_of(method),
                ..Platform::current(
                    if settings.backward.is_fused(device) {
                        KernelPath::Portable
                    } else {
                        KernelPath::Candle
                    },
                    &device_name(device),
                    crate::engine::kernels::threads(),
                )
            }),
        };
        Ok(Trainer {
            stream,
            method,
            settings,
            seed,
            observer,
            engine,
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
    pub(super) fn stage(&self, t: usize) -> Cow<'a, TaskStream> {
        let stream: &'a TaskStream = self.stream;
        let sources = self.strategy.training_tasks(t, stream.len());
        stream.at_stage(t.max(sources.end - 1))
    }

    /// Trains task `t` (0-based) on `stage` for the budget the strategy gives its phase
    /// ([`Strategy::phase_budget`](crate::strategy::Strategy::phase_budget)) and records its
    /// training statistics; returns where the loss stopped being finite, if it did.
    pub(super) fn train_task(
        &mut self,
        t: usize,
        stage: &TaskStream,
    ) -> candle_core::Result<Option<Divergence>> {
        if self.settings.reset_optimizer && t > 0 {
            self.optimizer.reset();
        }
        if let Some(decay) = self.settings.lr_decay {
            self.optimizer
                .set_learning_rate(decay.lr(self.method.optimizer.lr(), t));
        }
        let sources = self.strategy.training_tasks(t, stage.len());
        let mut order = Order::new(stage, t, sources, self.settings, self.seed);
        let phase = self.strategy.phase_budget(t, stage.len());
        let trains = phase != PhaseBudget::Skip;
        let steps = match (phase, self.settings.budget) {
            (PhaseBudget::Skip, _) => 0,
            // Epochs are of the phase's data, which holds every task's when the phase trains
            // on all of them.
            (_, Budget::Epochs(e)) => e * order.batches_per_epoch(),
            (PhaseBudget::OneTask, Budget::Iterations(n)) => n,
            (PhaseBudget::AllTasks, Budget::Iterations(n)) => n * stage.len(),
        };
        let (grapes, seed) = (self.method.grapes, self.seed);
        if trains {
            self.strategy
                .before_task(&mut context(stage, &mut self.engine, grapes, seed), t)?;
        }
        self.observer.task_started(t, steps);
        // Training-time dropout, its masks drawn from the run's seed and the task.
        if let Some(p) = self.net.spec.dropout() {
            self.engine.set_dropout(Some(crate::engine::Dropout::new(
                p,
                SeedRng::derive(self.seed, "dropout", t as u64),
            )))?;
        }
        let mut progress = TaskProgress::default();
        let mut divergence = None;
        // On the CPU, the pool's other threads poll for the steps' product shares all task
        // long instead of sleeping between products (scheduling only; see the function). A
        // GPU computes the products itself: there they would only spin.
        let on_cpu = self.net.params.first().is_none_or(|p| p.device().is_cpu());
        kernels::with_threads_polling_if(on_cpu, || -> candle_core::Result<()> {
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
            Ok(())
        })?;
        self.observer.task_finished(t);
        // Importance estimates and evaluations see the whole network.
        self.engine.set_dropout(None)?;
        if trains && divergence.is_none() {
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
        let n = self.data.len() as f32;
        let data_weight = self.strategy.data_weight(t);
        let single = self.data.groups().len() == 1;
        if single && self.strategy.leaves_gradients_alone(t) {
            // Nothing between the backward pass and the update but the strategy's pull: the
            // engine may apply the optimizer inside the backward pass (the same bits).
            let g = &self.data.groups()[0];
            let data = Objective {
                targets: Targets::Hard(&g.batch.targets),
                head: g.head,
                range: g.range.clone(),
                weight: data_weight,
            };
            let more = self.strategy.objectives_on(
                &mut context(stage, &mut self.engine, grapes, self.seed),
                t,
                &g.batch.pixels,
                1.0,
            )?;
            let loss = if more.is_empty() {
                drop(more);
                let mut pull = self.strategy.pull();
                self.engine.accumulate_and_apply(
                    &g.batch.pixels,
                    std::slice::from_ref(&data),
                    grapes,
                    self.optimizer.as_mut(),
                    pull.as_mut(),
                )?[0]
            } else {
                // A strategy with objectives on the pixels has no pull
                // (`Strategy::leaves_gradients_alone`).
                let mut objectives = vec![data.clone()];
                objectives.extend(more);
                self.engine.accumulate_and_apply(
                    &g.batch.pixels,
                    &objectives,
                    grapes,
                    self.optimizer.as_mut(),
                    None,
                )?[0]
            };
            if !loss.is_finite() {
                return Ok(loss);
            }
            if grapes.is_on() {
                factors.add_slices(self.engine.factors());
            }
            let (params, _, touched) = self.engine.state_mut();
            self.strategy.after_update(params, touched);
            return Ok(loss);
        }
        self.engine.zero_grad();
        let mut loss = 0.0f32;
        for g in self.data.groups() {
            let share = g.batch.len() as f32 / n;
            let mut objectives = vec![Objective {
                targets: Targets::Hard(&g.batch.targets),
                head: g.head,
                range: g.range.clone(),
                weight: data_weight * share,
            }];
            objectives.extend(self.strategy.objectives_on(
                &mut context(stage, &mut self.engine, grapes, self.seed),
                t,
                &g.batch.pixels,
                share,
            )?);
            let l = self
                .engine
                .accumulate_all(&g.batch.pixels, &objectives, grapes)?[0];
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
        // A penalty goes into the optimizer's own pass where the strategy offers it as a pull.
        match self.strategy.pull() {
            Some(mut pull) => self
                .engine
                .apply_pulled(self.optimizer.as_mut(), Some(&mut pull))?,
            None => {
                let (params, grads, touched) = self.engine.state_mut();
                self.strategy.regularize(params, grads, touched);
                self.engine.apply(self.optimizer.as_mut())?;
            }
        }
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
        let seen: Vec<usize> = (0..=t).collect();
        let e = evaluate(
            self.engine.as_mut(),
            stage,
            &seen,
            self.settings.eval_batch_size,
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
    pub(super) fn evaluate_after(
        &mut self,
        t: usize,
        stage: &TaskStream,
    ) -> candle_core::Result<()> {
        let all_tasks: Vec<usize> = (0..stage.len()).collect();
        let e = evaluate(
            self.engine.as_mut(),
            stage,
            &all_tasks,
            self.settings.eval_batch_size,
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
    pub(super) fn diverged(mut self, d: Divergence) -> RunRecord {
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

/// `cpu`, `cuda:N` or `metal:N`.
fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}
