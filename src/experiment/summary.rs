//! One summary per run: identity, outcome, every metric and throughput. It is written as the
//! run's `metrics.json` (without the throughput, which depends on the machine) and is what the report's metrics frame is built from, so a run's status
//! and metrics are derived from its record in exactly one place.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::plan::RunSpec;
use crate::metrics::{AccuracyMatrix, METRIC_NAMES};
use crate::train::{RunRecord, RunStatus};

/// How a run ended, as a word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every task was trained and evaluated.
    Completed,
    /// The loss became NaN or infinite.
    Diverged,
}

impl Outcome {
    /// `completed` or `diverged`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Diverged => "diverged",
        }
    }
}

/// The summary of one run (its `metrics.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run id.
    pub run_id: String,
    /// The stream's name.
    pub stream: String,
    /// The method's name.
    pub method: String,
    /// The seed.
    pub seed: u64,
    /// Completed or diverged.
    pub status: Outcome,
    /// 1-based task in which a diverged run's loss stopped being finite.
    pub diverged_task: Option<usize>,
    /// 1-based step within that task.
    pub diverged_step: Option<usize>,
    /// What FWT is measured against (`random-init`: an independently initialized model).
    pub fwt_baseline: String,
    /// Total wall time of the training steps, seconds. Machine-dependent, so not written to
    /// `metrics.json` (it comes from the run's `timing.json`).
    #[serde(skip_serializing, default)]
    pub train_seconds: f64,
    /// Training examples per second over the whole run (kept out of `metrics.json` likewise).
    #[serde(skip_serializing, default)]
    pub samples_per_s: f64,
    /// Trainable parameters of the model.
    pub parameters: usize,
    /// Every metric of [`METRIC_NAMES`], `None` where undefined or when the run diverged.
    #[serde(flatten)]
    pub metrics: BTreeMap<String, Option<f64>>,
}

impl RunSummary {
    /// The summary of run `id` with this spec and record.
    pub fn of(id: &str, spec: &RunSpec, record: &RunRecord) -> RunSummary {
        let (train_seconds, samples_per_s) = throughput(record);
        let (status, diverged_task, diverged_step) = match &record.status {
            RunStatus::Completed => (Outcome::Completed, None, None),
            RunStatus::Diverged { task, step, .. } => (Outcome::Diverged, Some(*task), Some(*step)),
        };
        let values = matrix_of(record).map(|m| m.summary().named());
        let metrics = METRIC_NAMES
            .iter()
            .enumerate()
            .map(|(k, name)| (name.to_string(), values.and_then(|v| v[k].1)))
            .collect();
        RunSummary {
            run_id: id.to_string(),
            stream: spec.stream_name.clone(),
            method: spec.method.name.clone(),
            seed: spec.seed,
            status,
            diverged_task,
            diverged_step,
            fwt_baseline: "random-init".into(),
            train_seconds,
            samples_per_s,
            parameters: record.parameters,
            metrics,
        }
    }

    /// The value of metric `name` (`None` where undefined, diverged or unknown).
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied().flatten()
    }
}

/// The accuracy matrix of a completed run (`None` for a diverged one).
pub fn matrix_of(record: &RunRecord) -> Option<AccuracyMatrix> {
    match record.status {
        RunStatus::Completed => AccuracyMatrix::new(
            record.accuracy.clone(),
            Some(record.baseline_accuracy.clone()),
        )
        .ok(),
        RunStatus::Diverged { .. } => None,
    }
}

/// Total training seconds and overall samples per second of a run.
pub fn throughput(record: &RunRecord) -> (f64, f64) {
    let seconds: f64 = record.tasks.iter().map(|t| t.train_seconds).sum();
    let samples: usize = record.tasks.iter().map(|t| t.samples).sum();
    (
        seconds,
        if seconds > 0.0 {
            samples as f64 / seconds
        } else {
            0.0
        },
    )
}
