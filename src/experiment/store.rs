//! The run store: `<out>/runs/<run-id>/`, written atomically, complete only with its marker.
//!
//! A run's files are written into a temporary directory next to their final place, the marker
//! `complete.json` last, and the directory is then renamed into place. A crash at any point
//! leaves either a complete run or a temporary directory that is ignored and cleaned up later,
//! never a run that looks complete but is not.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{Experiment, ExperimentConfig};
use super::plan::{PlannedRun, RunSpec};
use super::summary::RunSummary;
use crate::train::RunRecord;

/// The marker that makes a run complete.
pub const COMPLETE_MARKER: &str = "complete.json";

/// The file where `clbench run` records the experiment that wrote a store.
pub const EXPERIMENT_FILE: &str = "experiment.yaml";

/// What a store records about the experiment that wrote it (`experiment.yaml`): the config as
/// it was resolved (its `extends` chain merged), not the file as written, so that reading it
/// back never depends on other files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentRecord {
    /// The experiment's name.
    pub name: String,
    /// The config file it was loaded from, as given.
    pub source: String,
    /// Method names as the results name them (`name[sweep tag]`), in plan order; the first is
    /// the default baseline of the significance markers.
    pub methods: Vec<String>,
    /// The resolved config (`extends` merged; the sweep, if any, as written).
    pub config: ExperimentConfig,
}

impl ExperimentRecord {
    /// The record of `exp` and its plan.
    pub fn of(exp: &Experiment, runs: &[PlannedRun]) -> ExperimentRecord {
        let mut methods: Vec<String> = Vec::new();
        for r in runs {
            if !methods.contains(&r.method.name) {
                methods.push(r.method.name.clone());
            }
        }
        ExperimentRecord {
            name: exp.name.clone(),
            source: exp.path.display().to_string(),
            methods,
            config: ExperimentConfig {
                sweep: exp.sweep.clone(),
                ..exp.config.clone()
            },
        }
    }
}

/// Errors of the run store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stored file cannot be parsed.
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, synced, then
/// renamed over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))
}

/// What the completion marker holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteMarker {
    /// The run id.
    pub run_id: String,
    /// clbench version that wrote the run.
    pub clbench_version: String,
}

/// A run read back from the store.
#[derive(Debug, Clone)]
pub struct StoredRun {
    /// Its id (directory name).
    pub id: String,
    /// Its resolved config.
    pub spec: RunSpec,
    /// What it recorded.
    pub record: RunRecord,
}

impl StoredRun {
    /// Its summary: outcome, metrics and throughput (what `metrics.json` holds).
    pub fn summary(&self) -> RunSummary {
        RunSummary::of(&self.id, &self.spec, &self.record)
    }
}

/// A directory of runs.
#[derive(Debug, Clone)]
pub struct RunStore {
    root: PathBuf,
}

impl RunStore {
    /// The store under `root` (the experiment's output directory); nothing is created yet.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The output directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/runs`.
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Records the experiment that writes this store (atomically; the previous record of a
    /// resumed or extended experiment is replaced).
    pub fn write_experiment(&self, record: &ExperimentRecord) -> Result<(), StoreError> {
        let yaml = serde_yaml::to_string(record).expect("an experiment record always serializes");
        let text = format!(
            "# Written by `clbench run {}`: the experiment as resolved ({} methods in plan order).\n{yaml}",
            record.source,
            record.methods.len()
        );
        write_atomic(&self.root.join(EXPERIMENT_FILE), text.as_bytes())
    }

    /// The experiment recorded by [`Self::write_experiment`]; `None` when there is none or it
    /// cannot be read. A store written before records existed holds a copy of the config file
    /// instead: its methods are read from it when it parses on its own.
    pub fn experiment(&self) -> Option<ExperimentRecord> {
        let text = fs::read_to_string(self.root.join(EXPERIMENT_FILE)).ok()?;
        if let Ok(record) = serde_yaml::from_str::<ExperimentRecord>(&text) {
            return Some(record);
        }
        let config: ExperimentConfig = serde_yaml::from_str(&text).ok()?;
        Some(ExperimentRecord {
            name: config.name.clone().unwrap_or_default(),
            source: String::new(),
            methods: config.methods.iter().map(|m| m.name.clone()).collect(),
            config,
        })
    }

    /// Whether run `id` is complete.
    pub fn is_complete(&self, id: &str) -> bool {
        self.runs_dir().join(id).join(COMPLETE_MARKER).is_file()
    }

    /// Stores a finished run (completed or diverged).
    pub fn write(&self, spec: &RunSpec, record: &RunRecord) -> Result<PathBuf, StoreError> {
        let id = spec.id();
        let runs = self.runs_dir();
        fs::create_dir_all(&runs).map_err(io(&runs))?;
        let final_dir = runs.join(&id);
        let tmp = runs.join(format!(".tmp-{id}-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let yaml = serde_yaml::to_string(spec).expect("a run spec always serializes");
        write_atomic(&tmp.join("run.yaml"), yaml.as_bytes())?;
        let json = serde_json::to_vec_pretty(record).expect("a record always serializes");
        write_atomic(&tmp.join("record.json"), &json)?;
        write_atomic(&tmp.join("accuracy.csv"), accuracy_csv(record).as_bytes())?;
        let summary = RunSummary::of(&id, spec, record);
        write_atomic(
            &tmp.join("metrics.json"),
            &serde_json::to_vec_pretty(&summary).expect("a summary always serializes"),
        )?;
        if !record.curves.is_empty() {
            let mut csv = String::from("training_task,step,eval_task,accuracy\n");
            for c in &record.curves {
                csv.push_str(&format!(
                    "{},{},{},{}\n",
                    c.training_task, c.step, c.eval_task, c.accuracy
                ));
            }
            write_atomic(&tmp.join("curves.csv"), csv.as_bytes())?;
        }
        let marker = CompleteMarker {
            run_id: id.clone(),
            clbench_version: env!("CARGO_PKG_VERSION").into(),
        };
        write_atomic(
            &tmp.join(COMPLETE_MARKER),
            &serde_json::to_vec_pretty(&marker).expect("json"),
        )?;
        if final_dir.exists() {
            // An incomplete leftover of an interrupted run (complete runs are never rewritten).
            fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
        }
        fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        Ok(final_dir)
    }

    /// Reads every complete run, sorted by id. Incomplete or unreadable runs are skipped with a
    /// warning (returned as the second element).
    pub fn load(&self) -> Result<(Vec<StoredRun>, Vec<String>), StoreError> {
        let runs = self.runs_dir();
        let mut out = Vec::new();
        let mut warnings = Vec::new();
        let entries = match fs::read_dir(&runs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((out, warnings)),
            Err(e) => {
                return Err(StoreError::Io {
                    path: runs,
                    source: e,
                })
            }
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_dir()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        dirs.sort();
        for dir in dirs {
            match read_run(&dir) {
                Ok(Some(run)) => out.push(run),
                Ok(None) => warnings.push(format!(
                    "{}: incomplete run (no {COMPLETE_MARKER}), skipped",
                    dir.display()
                )),
                Err(e) => warnings.push(format!("{e}; run skipped")),
            }
        }
        Ok((out, warnings))
    }
}

fn read_run(dir: &Path) -> Result<Option<StoredRun>, StoreError> {
    if !dir.join(COMPLETE_MARKER).is_file() {
        return Ok(None);
    }
    let read = |name: &str| -> Result<String, StoreError> {
        let p = dir.join(name);
        fs::read_to_string(&p).map_err(io(&p))
    };
    let spec: RunSpec =
        serde_yaml::from_str(&read("run.yaml")?).map_err(|e| StoreError::Corrupt {
            path: dir.join("run.yaml"),
            message: e.to_string(),
        })?;
    let record: RunRecord =
        serde_json::from_str(&read("record.json")?).map_err(|e| StoreError::Corrupt {
            path: dir.join("record.json"),
            message: e.to_string(),
        })?;
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Some(StoredRun { id, spec, record }))
}

/// The long accuracy table of a run: `after_task,eval_task,accuracy,loss`.
pub fn accuracy_csv(record: &RunRecord) -> String {
    let mut csv = String::from("after_task,eval_task,accuracy,loss\n");
    for (i, (acc, loss)) in record.accuracy.iter().zip(&record.loss).enumerate() {
        for (j, (a, l)) in acc.iter().zip(loss).enumerate() {
            csv.push_str(&format!("{i},{},{a},{l}\n", j + 1));
        }
    }
    csv
}
