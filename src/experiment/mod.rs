//! Experiments: a config file becomes a plan of runs, each run is trained and written to the
//! run store, and the store is what every table and plot is built from.

pub mod config;
pub mod plan;
pub mod store;

use std::path::PathBuf;

use candle_core::Device;
use serde_json::json;

pub use config::{ConfigError, Experiment, ExperimentConfig};
pub use plan::{plan, RunSpec};
pub use store::{RunStore, StoredRun};

use crate::metrics::AccuracyMatrix;
use crate::streams::TaskStream;
use crate::train::{self, Method, Observer, RunRecord, RunStatus};

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

/// The `metrics.json` of a run: identity, status, every metric (null where undefined or
/// diverged) and throughput.
pub fn run_metrics_json(id: &str, spec: &RunSpec, record: &RunRecord) -> serde_json::Value {
    let (train_seconds, samples_per_s) = throughput(record);
    let m = matrix_of(record).map(|m| m.summary());
    let (status, diverged_task, diverged_step) = match &record.status {
        RunStatus::Completed => ("completed", None, None),
        RunStatus::Diverged { task, step, .. } => ("diverged", Some(*task), Some(*step)),
    };
    json!({
        "run_id": id,
        "stream": spec.stream_name,
        "method": spec.method.name,
        "seed": spec.seed,
        "status": status,
        "diverged_task": diverged_task,
        "diverged_step": diverged_step,
        "acc": m.map(|m| m.acc),
        "bwt": m.and_then(|m| m.bwt),
        "fwt": m.and_then(|m| m.fwt),
        "fwt_init": m.and_then(|m| m.fwt_init),
        "forgetting": m.and_then(|m| m.forgetting),
        "max_forgetting": m.and_then(|m| m.max_forgetting),
        "drop_since_learned": m.and_then(|m| m.drop_since_learned),
        "learning_accuracy": m.map(|m| m.learning_accuracy),
        "avg_incremental_accuracy": m.map(|m| m.avg_incremental_accuracy),
        "fwt_baseline": "random-init",
        "train_seconds": train_seconds,
        "samples_per_s": samples_per_s,
        "parameters": record.parameters,
    })
}

/// Options of [`execute`].
pub struct ExecuteOptions {
    /// Output directory (the run store's root).
    pub out: PathBuf,
    /// Replaces the config's seeds.
    pub seeds: Option<Vec<u64>>,
    /// Where tensors live.
    pub device: Device,
}

/// What [`execute`] did.
#[derive(Debug, Default)]
pub struct ExecuteReport {
    /// Runs trained and stored now.
    pub trained: Vec<String>,
    /// Runs already complete in the store, skipped.
    pub skipped: Vec<String>,
    /// Runs that diverged (stored, with their status).
    pub diverged: Vec<String>,
    /// Runs that failed with an error (not stored): id and message.
    pub failed: Vec<(String, String)>,
}

/// Runs every planned run that is not yet complete in the store, one after another.
/// `observer` builds a progress observer per run (its index, the run count and spec).
pub fn execute(
    exp: &Experiment,
    opts: &ExecuteOptions,
    observer: &dyn Fn(usize, usize, &RunSpec) -> Box<dyn Observer>,
) -> Result<ExecuteReport, store::StoreError> {
    let store = RunStore::new(&opts.out);
    let runs = plan(exp, opts.seeds.as_deref());
    let mut report = ExecuteReport::default();
    for (i, spec) in runs.iter().enumerate() {
        let id = spec.id();
        if store.is_complete(&id) {
            tracing::info!(run = %id, "already complete, skipped");
            report.skipped.push(id);
            continue;
        }
        let method = exp
            .methods
            .iter()
            .find(|m| m.name == spec.method.name)
            .expect("planned from the methods");
        match run_one(
            exp,
            spec,
            method,
            opts,
            observer(i, runs.len(), spec).as_ref(),
        ) {
            Ok(record) => {
                if matches!(record.status, RunStatus::Diverged { .. }) {
                    report.diverged.push(id.clone());
                }
                store.write(spec, &record)?;
                report.trained.push(id);
            }
            Err(e) => {
                tracing::error!(run = %id, error = %e, "run failed");
                report.failed.push((id, e.to_string()));
            }
        }
    }
    Ok(report)
}

fn run_one(
    exp: &Experiment,
    spec: &RunSpec,
    method: &Method,
    opts: &ExecuteOptions,
    observer: &dyn Observer,
) -> anyhow::Result<RunRecord> {
    let stream = TaskStream::build(&exp.stream, spec.seed)?;
    let record = train::train_sequence(
        &stream,
        &spec.model,
        method,
        &exp.training,
        spec.seed,
        &opts.device,
        observer,
    )?;
    Ok(record)
}
