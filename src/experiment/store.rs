//! The run store: `<out>/runs/<run-id>/`, written atomically, complete only with its marker.
//!
//! A run's files are written into a temporary directory next to their final place, the marker
//! `complete.json` last, and the directory is then renamed into place. A crash at any point
//! leaves either a complete run or a temporary directory that is ignored and cleaned up later,
//! never a run that looks complete but is not.
//!
//! Several writers may share a store (two terminals, the tasks of a Slurm array): a writer
//! claims a run ([`RunStore::claim`], an advisory lock on `.locks/<id>`) before training
//! it and holds the claim until the run is stored; a run claimed by another writer is left to
//! it. Under its claim a writer removes what dead writers of that run left (`.tmp-<id>-*`, an
//! incomplete `<id>`); a complete run is never deleted or replaced.
//!
//! Reading checks every run ([`RunStore::load`]): its directory name against the id in its
//! marker and the id its config hashes to, its record's shape and values, and its derived files
//! (`accuracy.csv`, `metrics.json`) against its record. A run that fails is skipped with a
//! warning naming the file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::{Experiment, ExperimentConfig};
use super::plan::{PlannedRun, RunSpec};
use super::summary::RunSummary;
use crate::train::{RunRecord, RunStatus};

/// A writer's exclusive claim on one run of a store (see [`RunStore::claim`]).
#[derive(Debug)]
pub struct RunClaim {
    id: String,
    _file: fs::File,
}

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
    /// Another writer holds the run's claim.
    #[error("{}: another writer is writing this run", path.display())]
    Busy { path: PathBuf },
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

/// Runs of two different configurations under one method name on one stream: pooled, they
/// would make a table silently wrong, so neither `run` nor `report` accepts it.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}: method `{method}` on stream `{stream}` has runs of two different configurations \
     (`{first}` and `{second}` differ in {keys}); their results cannot be pooled: use another \
     --out, or another method name",
    root.display()
)]
pub struct ConfigurationConflict {
    /// The store (or the first of the merged stores).
    pub root: PathBuf,
    /// The method name.
    pub method: String,
    /// The stream name.
    pub stream: String,
    /// A run of the first configuration.
    pub first: String,
    /// A run of the second.
    pub second: String,
    /// Where the configurations differ.
    pub keys: String,
}

/// Fails when two of `runs` (id and spec) share a method and stream but not their
/// configuration ([`RunSpec::configuration`]).
pub fn check_configurations<'a>(
    root: &Path,
    runs: impl IntoIterator<Item = (&'a str, &'a RunSpec)>,
) -> Result<(), Box<ConfigurationConflict>> {
    let mut first_of: std::collections::HashMap<(&str, &str), (&str, serde_json::Value)> =
        std::collections::HashMap::new();
    for (id, spec) in runs {
        let config = spec.configuration();
        let key = (spec.stream_name.as_str(), spec.method.name.as_str());
        match first_of.get(&key) {
            Some((first, first_config)) if *first_config != config => {
                return Err(Box::new(ConfigurationConflict {
                    root: root.to_path_buf(),
                    method: spec.method.name.clone(),
                    stream: spec.stream_name.clone(),
                    first: first.to_string(),
                    second: id.to_string(),
                    keys: super::plan::differing_keys(first_config, &config, 3).join(", "),
                }));
            }
            Some(_) => {}
            None => {
                first_of.insert(key, (id, config));
            }
        }
    }
    Ok(())
}

/// The file beside a run's record that says where it ran ([`crate::platform::Platform`]).
pub const PLATFORM_FILE: &str = "platform.json";

/// The file beside a run's record that holds its wall times and throughput.
pub const TIMING_FILE: &str = "timing.json";

/// `timing.json`: per task, the wall time of the training steps and the throughput. They
/// depend on the machine and its load, so they are kept out of `record.json`, whose bits
/// depend only on the config (on the portable path).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimingFile {
    tasks: Vec<TaskTiming>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskTiming {
    task: usize,
    train_seconds: f64,
    samples_per_s: f64,
}

impl TimingFile {
    fn of(record: &RunRecord) -> TimingFile {
        TimingFile {
            tasks: record
                .tasks
                .iter()
                .map(|t| TaskTiming {
                    task: t.task,
                    train_seconds: t.train_seconds,
                    samples_per_s: t.samples_per_s,
                })
                .collect(),
        }
    }

    /// Puts the timings into the record's task statistics; they must describe the same tasks.
    fn apply(self, record: &mut RunRecord) -> Result<(), String> {
        if self.tasks.len() != record.tasks.len()
            || self
                .tasks
                .iter()
                .zip(&record.tasks)
                .any(|(a, b)| a.task != b.task)
        {
            return Err(format!(
                "times {} tasks, record.json trained {}",
                self.tasks.len(),
                record.tasks.len()
            ));
        }
        for (t, r) in self.tasks.into_iter().zip(&mut record.tasks) {
            r.train_seconds = t.train_seconds;
            r.samples_per_s = t.samples_per_s;
        }
        Ok(())
    }
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
    /// Whether its wall times are known: its `timing.json` was read, or its `record.json` held
    /// them (stores written before `timing.json` existed). Committed runs carry no timing.
    pub timed: bool,
}

impl StoredRun {
    /// Its summary: outcome, metrics and throughput (what `metrics.json` holds).
    pub fn summary(&self) -> RunSummary {
        RunSummary::of(&self.id, &self.spec, &self.record)
    }
}

/// What a folder given as an output holds, as far as clbench can tell (see [`classify_output`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputFolder {
    /// Nothing there yet, an empty folder, or one holding only what clbench makes before any
    /// run or table: `slurm/` (the log folder `clbench slurm` creates), `.locks/`, and the
    /// `shard-<n>/` stores of `clbench slurm --separate-outs`.
    New,
    /// A run store: it holds `experiment.yaml` or `runs/`.
    Store,
    /// The output of `clbench report` without runs of its own (a merged report): it holds
    /// `tables/summary.md` and `tables/summary.tex` and no run store.
    Report,
    /// Something else: a folder clbench did not make. The entries are a few of its names.
    Foreign(Vec<String>),
}

/// What `dir` is, for the commands that write into it: `clbench run` writes only into a new
/// folder or a store, `clbench report` also into a report folder; neither overwrites a folder
/// of somebody else's files (`metrics.csv` and `summary.md` are common names).
pub fn classify_output(dir: &Path) -> std::io::Result<OutputFolder> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OutputFolder::New),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    let before_any_result = |name: &String| {
        let shard = name
            .strip_prefix("shard-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        (shard || name == "slurm" || name == ".locks") && dir.join(name).is_dir()
    };
    if names.iter().all(before_any_result) {
        return Ok(OutputFolder::New);
    }
    if dir.join(EXPERIMENT_FILE).is_file() || dir.join("runs").is_dir() {
        return Ok(OutputFolder::Store);
    }
    let tables = dir.join("tables");
    if tables.join("summary.md").is_file() && tables.join("summary.tex").is_file() {
        return Ok(OutputFolder::Report);
    }
    names.sort();
    names.truncate(5);
    Ok(OutputFolder::Foreign(names))
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

    /// Claims run `id` for this writer: `None` when another writer (another terminal, another
    /// Slurm array task, another job) holds it. The claim is an advisory lock on
    /// `<root>/.locks/<id>`; the operating system releases it when the claim is dropped or the
    /// process ends, however it ends, so a crashed writer never blocks a run.
    pub fn claim(&self, id: &str) -> Result<Option<RunClaim>, StoreError> {
        let locks = self.root.join(".locks");
        fs::create_dir_all(&locks).map_err(io(&locks))?;
        fs::create_dir_all(self.runs_dir()).map_err(io(&self.runs_dir()))?;
        let path = locks.join(id);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(RunClaim {
                id: id.to_string(),
                _file: file,
            })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(StoreError::Io { path, source: e }),
        }
    }

    /// Stores a finished run (completed or diverged), claiming it for the time of the write;
    /// fails if another writer holds the claim.
    pub fn write(&self, spec: &RunSpec, record: &RunRecord) -> Result<PathBuf, StoreError> {
        let id = spec.id();
        let claim = self.claim(&id)?.ok_or_else(|| StoreError::Busy {
            path: self.runs_dir().join(&id),
        })?;
        self.write_claimed(&claim, spec, record)
    }

    /// Stores a finished run whose claim the caller holds (see the module docs for the
    /// protocol). A run already complete is never replaced: the stored one is kept.
    pub fn write_claimed(
        &self,
        claim: &RunClaim,
        spec: &RunSpec,
        record: &RunRecord,
    ) -> Result<PathBuf, StoreError> {
        let id = spec.id();
        assert_eq!(claim.id, id, "the claim is for another run");
        let runs = self.runs_dir();
        let final_dir = runs.join(&id);
        if final_dir.join(COMPLETE_MARKER).is_file() {
            tracing::info!(run = %id, "already complete in the store; the stored run is kept");
            return Ok(final_dir);
        }
        // Leftovers of writers of this run that died mid-write: no live writer has the claim.
        self.remove_leftovers(&id)?;
        let tmp = runs.join(format!(".tmp-{id}-{}", std::process::id()));
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let yaml = serde_yaml::to_string(spec).expect("a run spec always serializes");
        write_atomic(&tmp.join("run.yaml"), yaml.as_bytes())?;
        let json = serde_json::to_vec_pretty(record).expect("a record always serializes");
        write_atomic(&tmp.join("record.json"), &json)?;
        // What depends on the machine goes beside the record, never into it.
        let timing = TimingFile::of(record);
        write_atomic(
            &tmp.join(TIMING_FILE),
            &serde_json::to_vec_pretty(&timing).expect("timing always serializes"),
        )?;
        if let Some(platform) = &record.platform {
            write_atomic(
                &tmp.join(PLATFORM_FILE),
                &serde_json::to_vec_pretty(platform).expect("a platform always serializes"),
            )?;
        }
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
        fs::rename(&tmp, &final_dir).map_err(io(&final_dir))?;
        Ok(final_dir)
    }

    /// Removes what interrupted writers of run `id` left: `.tmp-<id>-<pid>` directories and an
    /// incomplete `<id>` directory. Only called under the run's claim.
    fn remove_leftovers(&self, id: &str) -> Result<(), StoreError> {
        let runs = self.runs_dir();
        let prefix = format!(".tmp-{id}-");
        let entries = fs::read_dir(&runs).map_err(io(&runs))?;
        for entry in entries {
            let path = entry.map_err(io(&runs))?.path();
            let leftover = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix));
            if leftover {
                fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        let incomplete = runs.join(id);
        if incomplete.exists() && !incomplete.join(COMPLETE_MARKER).is_file() {
            fs::remove_dir_all(&incomplete).map_err(io(&incomplete))?;
        }
        Ok(())
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

/// Reads the run in `dir`: `Ok(None)` without a completion marker; an error naming the file
/// when any file is unreadable or disagrees with the others (see [`check_run`]).
fn read_run(dir: &Path) -> Result<Option<StoredRun>, StoreError> {
    if !dir.join(COMPLETE_MARKER).is_file() {
        return Ok(None);
    }
    let read = |name: &str| -> Result<String, StoreError> {
        let p = dir.join(name);
        fs::read_to_string(&p).map_err(io(&p))
    };
    let corrupt = |name: &str, message: String| StoreError::Corrupt {
        path: dir.join(name),
        message,
    };
    let spec: RunSpec =
        serde_yaml::from_str(&read("run.yaml")?).map_err(|e| corrupt("run.yaml", e.to_string()))?;
    let mut record: RunRecord = serde_json::from_str(&read("record.json")?)
        .map_err(|e| corrupt("record.json", e.to_string()))?;
    // Optional files: stores written before they existed lack them.
    let optional = |name: &str| -> Result<Option<String>, StoreError> {
        let p = dir.join(name);
        match fs::read_to_string(&p) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { path: p, source: e }),
        }
    };
    if let Some(text) = optional(PLATFORM_FILE)? {
        record.platform =
            Some(serde_json::from_str(&text).map_err(|e| corrupt(PLATFORM_FILE, e.to_string()))?);
    }
    let timed = match optional(TIMING_FILE)? {
        Some(text) => {
            let timing: TimingFile =
                serde_json::from_str(&text).map_err(|e| corrupt(TIMING_FILE, e.to_string()))?;
            timing
                .apply(&mut record)
                .map_err(|m| corrupt(TIMING_FILE, m))?;
            true
        }
        None => record.tasks.iter().any(|t| t.train_seconds > 0.0),
    };
    let marker: CompleteMarker = serde_json::from_str(&read(COMPLETE_MARKER)?)
        .map_err(|e| corrupt(COMPLETE_MARKER, e.to_string()))?;
    let id = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let run = StoredRun {
        id,
        spec,
        record,
        timed,
    };
    check_run(&run, &marker.run_id).map_err(|(file, message)| corrupt(file, message))?;
    if read("accuracy.csv")? != accuracy_csv(&run.record) {
        return Err(corrupt("accuracy.csv", DISAGREES.into()));
    }
    let written: serde_json::Value = serde_json::from_str(&read("metrics.json")?)
        .map_err(|e| corrupt("metrics.json", e.to_string()))?;
    let summary = serde_json::to_value(run.summary()).expect("a summary always serializes");
    if let Some(key) = disagreeing_key(&written, &summary) {
        return Err(corrupt("metrics.json", format!("`{key}` {DISAGREES}")));
    }
    Ok(Some(run))
}

const DISAGREES: &str = "disagrees with record.json (edited after the run was stored?)";

/// The first key of `expected` that `written` holds with another value (keys that `written`
/// lacks are allowed: stores written by earlier versions have fewer).
fn disagreeing_key(written: &serde_json::Value, expected: &serde_json::Value) -> Option<String> {
    let (Some(written), Some(expected)) = (written.as_object(), expected.as_object()) else {
        return Some("(the whole file)".into());
    };
    expected
        .iter()
        .find(|(k, v)| written.get(*k).is_some_and(|w| w != *v))
        .map(|(k, _)| k.clone())
}

/// Checks that a run read from the store is whole and consistent: its directory name, the id in
/// its marker and the id its spec hashes to agree (a run copied under another name is not
/// counted twice), and its record has the shape its stream and status imply, with accuracies
/// in [0, 1]. `Err((file, message))` names the file at fault.
fn check_run(run: &StoredRun, marker_id: &str) -> Result<(), (&'static str, String)> {
    let spec_id = run.spec.id();
    if marker_id != run.id || spec_id != run.id {
        return Err((
            COMPLETE_MARKER,
            format!(
                "the directory is named `{}` but holds run `{marker_id}` (its config hashes to \
                 `{spec_id}`): a copy or a rename",
                run.id
            ),
        ));
    }
    let r = &run.record;
    let tasks = run.spec.stream.num_tasks();
    let rows = match r.status {
        RunStatus::Completed => tasks + 1,
        // Row 0, then one row per task finished before the one that diverged.
        RunStatus::Diverged { task, .. } if (1..=tasks).contains(&task) => task,
        RunStatus::Diverged { task, .. } => {
            return Err((
                "record.json",
                format!("diverged in task {task} of a {tasks}-task stream"),
            ))
        }
    };
    let bad = |m: String| Err(("record.json", m));
    if r.accuracy.len() != rows || r.loss.len() != rows {
        return bad(format!(
            "{} accuracy rows and {} loss rows, expected {rows} ({tasks} tasks, {})",
            r.accuracy.len(),
            r.loss.len(),
            match r.status {
                RunStatus::Completed => "completed".to_string(),
                RunStatus::Diverged { task, .. } => format!("diverged in task {task}"),
            }
        ));
    }
    if let Some(i) = (0..rows).find(|&i| r.accuracy[i].len() != tasks || r.loss[i].len() != tasks) {
        return bad(format!(
            "row {i} does not hold one value per task ({tasks})"
        ));
    }
    if r.baseline_accuracy.len() != tasks {
        return bad(format!(
            "{} baseline accuracies, expected {tasks}",
            r.baseline_accuracy.len()
        ));
    }
    let accuracies = r.accuracy.iter().flatten().chain(&r.baseline_accuracy);
    if let Some(a) = accuracies.copied().find(|a| !(0.0..=1.0).contains(a)) {
        return bad(format!("accuracy {a} is not a fraction in [0, 1]"));
    }
    if r.tasks.len() > tasks {
        return bad(format!(
            "training statistics of {} tasks in a {tasks}-task stream",
            r.tasks.len()
        ));
    }
    Ok(())
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

impl crate::error::InputError for ConfigurationConflict {
    fn is_input_error(&self) -> bool {
        true
    }
}

impl crate::error::InputError for StoreError {
    fn is_input_error(&self) -> bool {
        false
    }
}
