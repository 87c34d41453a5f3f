//! Experiments: a config file becomes a plan of runs, each run is trained and written to the
//! run store, and the store is what every table and plot is built from.

pub mod config;
pub mod plan;
pub mod store;
pub mod summary;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use candle_core::Device;

pub use config::{
    ConfigError, Experiment, ExperimentConfig, MethodConfig, TrainingConfig, Variant,
};
pub use plan::{plan, shard, PlannedRun, RunSpec};
pub use store::{RunStore, StoreError, StoredRun};
pub use summary::{matrix_of, throughput, Outcome, RunSummary};

use crate::engine::kernels::{run_on, thread_pool};
use crate::streams::TaskStream;
use crate::train::{self, Observer, RunRecord, RunStatus};

/// Options of [`execute`].
pub struct ExecuteOptions {
    /// Output directory (the run store's root).
    pub out: PathBuf,
    /// Where tensors live.
    pub device: Device,
    /// Runs trained at the same time, each on a thread of its own.
    pub jobs: usize,
    /// CPU threads of each run (the size of each job's rayon pool).
    pub threads: usize,
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

/// Trains every run of `runs` that is not yet complete in the store, `opts.jobs` at a time (each
/// job on a rayon pool of `opts.threads` threads, built once), and stores each as soon as it
/// ends. A run that fails with an error is reported and the others go on; a store write failure
/// or a pool that cannot be built stops everything.
pub fn execute(
    runs: &[PlannedRun],
    opts: &ExecuteOptions,
    observer: &ObserverFactory,
) -> Result<ExecuteReport, StoreError> {
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
    let store_error: Mutex<Option<StoreError>> = Mutex::new(None);
    let worker = || {
        let pool = match thread_pool(opts.threads) {
            Ok(pool) => pool,
            Err(e) => {
                *store_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(StoreError::Io {
                    path: opts.out.clone(),
                    source: std::io::Error::other(format!("building a thread pool: {e}")),
                });
                return;
            }
        };
        loop {
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
                run_on(&pool, || run_one(run, &opts.device, obs.as_ref()))
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

/// Builds the run's stream and trains it.
fn run_one(
    run: &PlannedRun,
    device: &Device,
    observer: &dyn Observer,
) -> anyhow::Result<RunRecord> {
    let stream = TaskStream::build(&run.stream, run.spec.seed)?;
    let record = train::train_sequence(
        &stream,
        &run.model,
        &run.method,
        &run.training,
        run.spec.seed,
        device,
        observer,
    )?;
    Ok(record)
}
