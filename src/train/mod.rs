//! Sequential training: learn the tasks of a stream one after another and evaluate every task
//! after each, producing the `(T+1) × T` accuracy matrix.

pub mod eval;
mod trainer;

use crate::platform::Platform;
use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::models::ModelSpec;
use crate::optim::grapes::FactorStats;
use crate::optim::{GrapesMode, OptimizerSettings};
use crate::strategy::StrategySettings;
use crate::streams::TaskStream;
use trainer::Trainer;

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
    /// The learning rate of each task, decayed from the optimizer's (`None`: constant).
    pub lr_decay: Option<LrDecay>,
    /// Which backward pass computes gradients.
    pub backward: BackwardPath,
}

/// A per-task learning-rate decay, Stable SGD's schedule (Mirzadeh et al. 2020,
/// `stable_sgd/main.py`): task `t` (counted from 1, as there) trains with
/// `lr_t = max(lr · γ^t, floor)`, so the first task already has `lr · γ`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrDecay {
    /// The factor γ per task, in (0, 1].
    pub gamma: f64,
    /// The smallest learning rate (≥ 0).
    pub floor: f64,
}

impl LrDecay {
    /// The learning rate of the 0-based task `task` when the optimizer's is `lr`.
    pub fn lr(&self, lr: f64, task: usize) -> f64 {
        // libm's pow: the same value on every platform.
        (lr * libm::pow(self.gamma, (task + 1) as f64)).max(self.floor)
    }
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
    /// Wall time of the training steps (evaluation excluded), seconds. Machine-dependent: the
    /// run store keeps it in `timing.json`, not in `record.json` (read from either).
    #[serde(skip_serializing, default)]
    pub train_seconds: f64,
    /// Training examples per second (stored like `train_seconds`).
    #[serde(skip_serializing, default)]
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
    /// Where the run ran; the run store keeps it in `platform.json` (`None` for runs stored
    /// before it was recorded).
    #[serde(skip)]
    pub platform: Option<Platform>,
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
