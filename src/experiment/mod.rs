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
pub use store::{
    check_configurations, classify_output, ConfigurationConflict, OutputFolder, RunStore,
    StoreError, StoredRun,
};
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
    /// Runs another writer was training, left to it.
    pub busy: Vec<String>,
    /// Runs that diverged (stored, with their status).
    pub diverged: Vec<String>,
    /// Runs that failed with an error (not stored).
    pub failed: Vec<FailedRun>,
}

/// A run that failed with an error (nothing of it is stored).
#[derive(Debug, Clone)]
pub struct FailedRun {
    /// The run id.
    pub id: String,
    /// What went wrong.
    pub error: String,
}

/// Builds a progress observer per run: (position in the plan, plan size, run).
pub type ObserverFactory<'a> = dyn Fn(usize, usize, &PlannedRun) -> Box<dyn Observer> + Sync + 'a;

/// What stops [`execute`] as a whole (a failing run only fails itself).
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// A run could not be written to the store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A job's thread pool could not be built.
    #[error("building a pool of {threads} threads: {source}")]
    Pool {
        threads: usize,
        #[source]
        source: rayon::ThreadPoolBuildError,
    },
}

/// Trains every run of `runs` that is not yet complete in the store, `opts.jobs` at a time (each
/// job on a rayon pool of `opts.threads` threads, built once), and stores each as soon as it
/// ends. A run that fails with an error is reported and the others go on; a store write failure
/// or a pool that cannot be built stops everything.
pub fn execute(
    runs: &[PlannedRun],
    opts: &ExecuteOptions,
    observer: &ObserverFactory,
) -> Result<ExecuteReport, ExecuteError> {
    let store = RunStore::new(&opts.out);
    let mut report = ExecuteReport::default();
    let mut pending = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let id = run.id();
        if store.is_complete(&id) {
            tracing::info!(run = %id, "already complete, skipped");
            report.skipped.push(id);
        } else {
            pending.push((i, run));
        }
    }
    let jobs = Jobs {
        total: runs.len(),
        pending,
        next: AtomicUsize::new(0),
        store,
        opts,
        observer,
        report: Mutex::new(report),
        error: Mutex::new(None),
    };
    if opts.jobs <= 1 {
        jobs.work();
    } else {
        std::thread::scope(|s| {
            for _ in 0..opts.jobs.min(jobs.pending.len().max(1)) {
                s.spawn(|| jobs.work());
            }
        });
    }
    if let Some(e) = jobs.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(jobs.report.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// The runs left to train, shared by the jobs of [`execute`]: each job takes the next one.
struct Jobs<'a> {
    /// Runs in the plan (for progress).
    total: usize,
    /// (position in the plan, run) of every run to train.
    pending: Vec<(usize, &'a PlannedRun)>,
    next: AtomicUsize,
    store: RunStore,
    opts: &'a ExecuteOptions,
    observer: &'a ObserverFactory<'a>,
    report: Mutex<ExecuteReport>,
    /// The first error that stops everything.
    error: Mutex<Option<ExecuteError>>,
}

impl Jobs<'_> {
    /// One job: builds its pool, then trains and stores runs until none is left or another
    /// job failed to store.
    fn work(&self) {
        let threads = self.opts.threads;
        let pool = match thread_pool(threads) {
            Ok(pool) => pool,
            Err(source) => return self.stop(ExecuteError::Pool { threads, source }),
        };
        while !self.stopped() {
            let k = self.next.fetch_add(1, Ordering::SeqCst);
            let Some(&(i, run)) = self.pending.get(k) else {
                return;
            };
            if let Err(e) = self.train_and_store(&pool, i, run) {
                return self.stop(e.into());
            }
        }
    }

    /// Claims one run, trains it on `pool`, stores it, and reports what happened. A run that
    /// another writer holds, or finished meanwhile, is left alone.
    fn train_and_store(
        &self,
        pool: &rayon::ThreadPool,
        i: usize,
        run: &PlannedRun,
    ) -> Result<(), StoreError> {
        let id = run.id();
        let Some(claim) = self.store.claim(&id)? else {
            tracing::info!(run = %id, "another writer is training it; left to that writer");
            self.report().busy.push(id);
            return Ok(());
        };
        if self.store.is_complete(&id) {
            tracing::info!(run = %id, "completed by another writer meanwhile, skipped");
            self.report().skipped.push(id);
            return Ok(());
        }
        let obs = (self.observer)(i, self.total, run);
        let result = {
            let _span = tracing::info_span!("run", run = %id).entered();
            run_on(pool, || run_one(run, &self.opts.device, obs.as_ref()))
        };
        obs.run_finished();
        match result {
            Ok(record) => {
                self.store.write_claimed(&claim, &run.spec, &record)?;
                tracing::info!(run = %id, "stored");
                let mut report = self.report();
                if matches!(record.status, RunStatus::Diverged { .. }) {
                    report.diverged.push(id.clone());
                }
                report.trained.push(id);
            }
            Err(e) => {
                tracing::error!(run = %id, error = %e, "run failed");
                self.report().failed.push(FailedRun {
                    id,
                    error: e.to_string(),
                });
            }
        }
        Ok(())
    }

    fn report(&self) -> std::sync::MutexGuard<'_, ExecuteReport> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop(&self, e: ExecuteError) {
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    }

    fn stopped(&self) -> bool {
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
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

impl crate::error::InputError for ExecuteError {
    fn is_input_error(&self) -> bool {
        false
    }
}
