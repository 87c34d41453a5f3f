//! Experiments: a config file becomes a plan of runs, each run is trained and written to the
//! run store, and the store is what every table and plot is built from.

pub mod config;
pub mod plan;
pub mod store;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use candle_core::Device;
use serde_json::json;

pub use config::{ConfigError, Experiment, ExperimentConfig, Variant};
pub use plan::{plan, shard, PlannedRun, RunSpec};
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
    let mut out = json!({
        "run_id": id,
        "stream": spec.stream_name,
        "method": spec.method.name,
        "seed": spec.seed,
        "status": status,
        "diverged_task": diverged_task,
        "diverged_step": diverged_step,
        "fwt_baseline": "random-init",
        "train_seconds": train_seconds,
        "samples_per_s": samples_per_s,
        "parameters": record.parameters,
    });
    for (k, name) in crate::metrics::METRIC_NAMES.iter().enumerate() {
        out[*name] = json!(m.and_then(|m| m.named()[k].1));
    }
    out
}

/// Options of [`execute`].
pub struct ExecuteOptions {
    /// Output directory (the run store's root).
    pub out: PathBuf,
    /// Where tensors live.
    pub device: Device,
    /// Runs trained at the same time (threads).
    pub jobs: usize,
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

/// Builds a progress observer per run: (position in the plan, plan size, run).
pub type ObserverFactory<'a> = dyn Fn(usize, usize, &PlannedRun) -> Box<dyn Observer> + Sync + 'a;

/// Trains every run of `runs` that is not yet complete in the store, `opts.jobs` at a time, and
/// stores each as soon as it ends. A run that fails with an error is reported and the others go
/// on; a store write failure stops everything.
pub fn execute(
    exp: &Experiment,
    runs: &[PlannedRun],
    opts: &ExecuteOptions,
    observer: &ObserverFactory,
) -> Result<ExecuteReport, store::StoreError> {
    let store = RunStore::new(&opts.out);
    let report = Mutex::new(ExecuteReport::default());
    let pending: Vec<(usize, &PlannedRun)> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            let id = r.id();
            let done = store.is_complete(&id);
            if done {
                tracing::info!(run = %id, "already complete, skipped");
                report
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .skipped
                    .push(id);
            }
            !done
        })
        .collect();
    let next = AtomicUsize::new(0);
    let store_error: Mutex<Option<store::StoreError>> = Mutex::new(None);
    let worker = || loop {
        if store_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return;
        }
        let k = next.fetch_add(1, Ordering::SeqCst);
        let Some(&(i, run)) = pending.get(k) else {
            return;
        };
        let id = run.id();
        let obs = observer(i, runs.len(), run);
        let result = {
            let _span = tracing::info_span!("run", run = %id).entered();
            run_one(exp, run, opts, obs.as_ref())
        };
        obs.run_finished();
        let mut rep = report.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(record) => {
                if let Err(e) = store.write(&run.spec, &record) {
                    *store_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    return;
                }
                if matches!(record.status, RunStatus::Diverged { .. }) {
                    rep.diverged.push(id.clone());
                }
                tracing::info!(run = %id, "stored");
                rep.trained.push(id);
            }
            Err(e) => {
                tracing::error!(run = %id, error = %e, "run failed");
                rep.failed.push((id, e.to_string()));
            }
        }
    };
    if opts.jobs <= 1 {
        worker();
    } else {
        std::thread::scope(|s| {
            for _ in 0..opts.jobs.min(pending.len().max(1)) {
                s.spawn(worker);
            }
        });
    }
    if let Some(e) = store_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(report.into_inner().unwrap_or_else(|p| p.into_inner()))
}

fn run_one(
    exp: &Experiment,
    run: &PlannedRun,
    opts: &ExecuteOptions,
    observer: &dyn Observer,
) -> anyhow::Result<RunRecord> {
    let variant = &exp.variants[run.variant];
    let stream = TaskStream::build(&variant.stream, run.spec.seed)?;
    let mut method: Method = variant.methods[run.method].clone();
    method.name = run.spec.method.name.clone();
    let record = train::train_sequence(
        &stream,
        &run.spec.model,
        &method,
        &variant.training,
        run.spec.seed,
        &opts.device,
        observer,
    )?;
    Ok(record)
}
