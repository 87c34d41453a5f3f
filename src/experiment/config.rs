//! The experiment config file: raw YAML (`ExperimentConfig`) checked into a validated
//! [`Experiment`] that names everything a run needs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::models::{ModelConfig, MODEL_KEYS};
use crate::optim::{OptimizerConfig, OptimizerSettings};
use crate::streams::{StreamFile, StreamSpec};
use crate::train::{BackwardPath, Budget, Method, TrainSettings};

/// What can be wrong with an experiment config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read or is not valid YAML for a config.
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A key has a value that cannot be used.
    #[error("{}: key `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// The stream file it names is invalid.
    #[error(transparent)]
    Stream(#[from] crate::streams::StreamError),
}

/// A method entry: a name and its optimizer (± GRAPES).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// Display name, unique within the experiment (e.g. `sgd+grapes`).
    pub name: String,
    /// The optimizer, with `grapes: off|propagating|local`.
    pub optimizer: OptimizerConfig,
}

/// Training settings as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Epochs per task (exclusive with `iterations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Optimizer steps per task (exclusive with `epochs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
    /// Evaluation batch size (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_batch_size: Option<usize>,
    /// Evaluate every seen task every N steps (default: only after each task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<usize>,
    /// Fresh optimizer state at the start of every task (default false).
    #[serde(default)]
    pub reset_optimizer: bool,
    /// `auto` (default: explicit for MLPs), `autograd` or `explicit`.
    #[serde(default)]
    pub backward: BackwardPath,
}

/// An experiment config file, exactly as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Name of the experiment (default: the file stem); results go to `results/<name>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The task stream: a path to a stream file (relative to the current directory or to this
    /// config's directory), or a bare name from `tasks/`.
    pub stream: String,
    /// The model.
    pub model: ModelConfig,
    /// The methods to compare.
    pub methods: Vec<MethodConfig>,
    /// Training settings.
    pub training: TrainingConfig,
    /// Seeds; each drives initialization, data order and the stream.
    pub seeds: Vec<u64>,
}

/// The keys of each config block (for "did you mean" hints).
const CONFIG_KEYS: &[&str] = &[
    "name",
    "description",
    "stream",
    "model",
    "methods",
    "training",
    "seeds",
    "batch_size",
    "epochs",
    "iterations",
    "eval_batch_size",
    "eval_every",
    "reset_optimizer",
    "backward",
    "optimizer",
    "lr",
    "momentum",
    "nesterov",
    "dampening",
    "weight_decay",
    "betas",
    "eps",
    "alpha",
    "grapes",
];

/// A validated experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// Its name.
    pub name: String,
    /// The config file.
    pub path: PathBuf,
    /// The config as written.
    pub config: ExperimentConfig,
    /// The stream file, loaded and validated.
    pub stream: StreamFile,
    /// Validated methods.
    pub methods: Vec<Method>,
    /// Validated training settings.
    pub training: TrainSettings,
}

impl Experiment {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Experiment, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: format!("cannot read the file: {e}"),
        })?;
        let mut keys = CONFIG_KEYS.to_vec();
        keys.extend_from_slice(MODEL_KEYS);
        let config: ExperimentConfig =
            serde_yaml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: crate::yaml::describe_error(&e, &keys),
            })?;
        Self::from_config(config, path)
    }

    /// Validates a parsed config; `path` locates relative stream paths and names errors.
    pub fn from_config(config: ExperimentConfig, path: &Path) -> Result<Experiment, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let name = config.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "experiment".into())
        });
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(invalid(
                "name",
                format!("`{name}` cannot be used as a directory name"),
            ));
        }
        let stream_path = resolve_stream(&config.stream, path).map_err(|tried| {
            invalid(
                "stream",
                format!(
                    "stream file `{}` not found (tried {})",
                    config.stream, tried
                ),
            )
        })?;
        let stream = StreamSpec::load(&stream_path)?;
        config
            .model
            .validate()
            .map_err(|(k, m)| invalid(&format!("model.{k}"), m))?;
        if config.methods.is_empty() {
            return Err(invalid("methods", "expected at least one method".into()));
        }
        let mut methods: Vec<Method> = Vec::new();
        for (i, m) in config.methods.iter().enumerate() {
            if m.name.trim().is_empty() || m.name.contains(['/', '\\']) {
                return Err(invalid(
                    &format!("methods[{i}].name"),
                    format!("`{}` is not a usable method name", m.name),
                ));
            }
            if methods.iter().any(|x| x.name == m.name) {
                return Err(invalid(
                    &format!("methods[{i}].name"),
                    format!("method `{}` is defined twice", m.name),
                ));
            }
            let settings: OptimizerSettings = m
                .optimizer
                .check()
                .map_err(|(k, msg)| invalid(&format!("methods[{i}].optimizer.{k}"), msg))?;
            methods.push(Method {
                name: m.name.clone(),
                optimizer: settings,
                grapes: m.optimizer.grapes,
            });
        }
        let t = &config.training;
        if t.batch_size == 0 {
            return Err(invalid(
                "training.batch_size",
                "expected at least 1, got 0".into(),
            ));
        }
        let budget = match (t.epochs, t.iterations) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "training",
                    "give either `epochs` or `iterations`, not both".into(),
                ))
            }
            (None, None) => {
                return Err(invalid(
                    "training",
                    "give `epochs: N` or `iterations: N` per task".into(),
                ))
            }
            (Some(0), _) => {
                return Err(invalid(
                    "training.epochs",
                    "expected at least 1, got 0".into(),
                ))
            }
            (_, Some(0)) => {
                return Err(invalid(
                    "training.iterations",
                    "expected at least 1, got 0".into(),
                ))
            }
            (Some(e), None) => Budget::Epochs(e),
            (None, Some(n)) => Budget::Iterations(n),
        };
        if t.eval_batch_size == Some(0) {
            return Err(invalid(
                "training.eval_batch_size",
                "expected at least 1, got 0".into(),
            ));
        }
        if t.eval_every == Some(0) {
            return Err(invalid(
                "training.eval_every",
                "expected at least 1, got 0".into(),
            ));
        }
        if t.backward == BackwardPath::Explicit
            && config.model.kind != crate::models::ModelKind::Mlp
        {
            return Err(invalid(
                "training.backward",
                "the explicit backward only supports `kind: mlp`".into(),
            ));
        }
        if config.seeds.is_empty() {
            return Err(invalid("seeds", "expected at least one seed".into()));
        }
        if let Some(d) = duplicate(&config.seeds) {
            return Err(invalid("seeds", format!("seed {d} is listed twice")));
        }
        let training = TrainSettings {
            batch_size: t.batch_size,
            budget,
            eval_batch_size: t.eval_batch_size.unwrap_or(1000),
            eval_every: t.eval_every,
            reset_optimizer: t.reset_optimizer,
            backward: t.backward,
        };
        Ok(Experiment {
            name,
            path: path.to_path_buf(),
            config,
            stream,
            methods,
            training,
        })
    }
}

fn duplicate(seeds: &[u64]) -> Option<u64> {
    seeds
        .iter()
        .enumerate()
        .find(|(i, s)| seeds[..*i].contains(s))
        .map(|(_, s)| *s)
}

/// Finds a stream file: as given (relative to the current directory), relative to the config's
/// directory, or, for a bare name, `tasks/<name>.yaml`. `Err` lists what was tried.
fn resolve_stream(stream: &str, config_path: &Path) -> Result<PathBuf, String> {
    let given = PathBuf::from(stream);
    let mut candidates = vec![given.clone()];
    if let Some(dir) = config_path.parent() {
        candidates.push(dir.join(&given));
    }
    if !stream.contains('/') && !stream.ends_with(".yaml") && !stream.ends_with(".yml") {
        candidates.push(PathBuf::from("tasks").join(format!("{stream}.yaml")));
        if let Some(dir) = config_path.parent() {
            candidates.push(dir.join("..").join("tasks").join(format!("{stream}.yaml")));
        }
    }
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .ok_or_else(|| {
            candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
}
