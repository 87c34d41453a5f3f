//! The experiment config file: raw YAML (`ExperimentConfig`) checked into a validated
//! [`Experiment`] that names everything a run needs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::models::{ModelConfig, MODEL_KEYS};
use crate::optim::{OptimizerConfig, OptimizerSettings};
use crate::strategy::{StrategyConfig, StrategySettings};
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
    /// The continual-learning strategy (default: `finetune`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategyConfig>,
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

/// An experiment config file, exactly as written (after `extends` is merged).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// A base config (path relative to this file) whose keys this file overrides; maps merge
    /// key by key, everything else is replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Settings to sweep: dotted key paths (`training.batch_size`, `methods.*.optimizer.lr`,
    /// `methods.0.optimizer.momentum`) mapped to lists of values; every combination of the
    /// cartesian product is a variant of the experiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<serde_yaml::Mapping>,
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

/// One combination of sweep values (the whole experiment when nothing is swept), validated.
#[derive(Debug, Clone)]
pub struct Variant {
    /// `key=value,...` naming the combination (`None` without a sweep).
    pub tag: Option<String>,
    /// The config with the combination applied.
    pub config: ExperimentConfig,
    /// The stream file, loaded and validated.
    pub stream: StreamFile,
    /// Validated methods (names without the tag).
    pub methods: Vec<Method>,
    /// Validated training settings.
    pub training: TrainSettings,
}

/// A validated experiment.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// Its name.
    pub name: String,
    /// The config file.
    pub path: PathBuf,
    /// The merged config before sweep values are applied.
    pub config: ExperimentConfig,
    /// Every sweep combination (one variant without a sweep).
    pub variants: Vec<Variant>,
}

/// Keys that cannot be swept.
const UNSWEEPABLE: &[&str] = &["name", "extends", "sweep", "seeds", "description"];

impl Experiment {
    /// Reads a config file, merges its `extends` chain, expands its sweep and validates every
    /// combination.
    pub fn load(path: &Path) -> Result<Experiment, ConfigError> {
        let mut chain = Vec::new();
        let merged = load_chain(path, &mut chain)?;
        let mut keys = CONFIG_KEYS.to_vec();
        keys.extend_from_slice(MODEL_KEYS);
        keys.extend_from_slice(crate::strategy::STRATEGY_KEYS);
        let parse = |value: serde_yaml::Value| -> Result<ExperimentConfig, ConfigError> {
            if chain.len() == 1 && !has_key(&value, "sweep") {
                // Straight from the text: serde reports line and column.
                serde_yaml::from_str(&chain[0].1).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: crate::yaml::describe_error(&e, &keys),
                })
            } else {
                serde_yaml::from_value(value).map_err(|e| locate_error(&e, &chain, &keys))
            }
        };
        let mut config = parse(merged.clone())?;
        let sweep = config.sweep.take().unwrap_or_default();
        config.extends = None;
        let mut axes: Vec<(String, Vec<serde_yaml::Value>)> = Vec::new();
        for (k, v) in &sweep {
            let key = k
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: "sweep".into(),
                    message: format!(
                        "sweep keys are dotted paths such as `training.batch_size`, found {k:?}"
                    ),
                })?;
            let invalid = |message: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                key: format!("sweep.{key}"),
                message,
            };
            if UNSWEEPABLE.contains(&key.split('.').next().unwrap_or("")) {
                return Err(invalid(
                    "cannot be swept (list several seeds in `seeds` instead)".into(),
                ));
            }
            let values = match v {
                serde_yaml::Value::Sequence(values) if !values.is_empty() => values.clone(),
                _ => return Err(invalid("expected a non-empty list of values".into())),
            };
            axes.push((key, values));
        }
        let name = config.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "experiment".into())
        });
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "name".into(),
                message: format!("`{name}` cannot be used as a directory name"),
            });
        }
        let mut base = merged;
        if let serde_yaml::Value::Mapping(m) = &mut base {
            m.remove("sweep");
            m.remove("extends");
        }
        let dirs: Vec<PathBuf> = chain
            .iter()
            .filter_map(|(p, _)| p.parent().map(Path::to_path_buf))
            .collect();
        let mut variants = Vec::new();
        for combo in cartesian(&axes) {
            let mut value = base.clone();
            for (key, v) in &combo {
                set_path(&mut value, key, v.clone()).map_err(|message| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: format!("sweep.{key}"),
                    message,
                })?;
            }
            let cfg = if combo.is_empty() {
                config.clone()
            } else {
                serde_yaml::from_value(value).map_err(|e| locate_error(&e, &chain, &keys))?
            };
            let tag = (!combo.is_empty()).then(|| tag_of(&combo));
            variants.push(Variant::validate(cfg, tag, path, &dirs)?);
        }
        Ok(Experiment {
            name,
            path: path.to_path_buf(),
            config,
            variants,
        })
    }

    /// Validates a parsed config without `extends` or `sweep`; `path` locates relative stream
    /// paths and names errors.
    pub fn from_config(config: ExperimentConfig, path: &Path) -> Result<Experiment, ConfigError> {
        let name = config.name.clone().unwrap_or_else(|| "experiment".into());
        let dirs: Vec<PathBuf> = path.parent().map(Path::to_path_buf).into_iter().collect();
        let variant = Variant::validate(config.clone(), None, path, &dirs)?;
        Ok(Experiment {
            name,
            path: path.to_path_buf(),
            config,
            variants: vec![variant],
        })
    }

    /// Number of runs for `seeds` (the config's when `None`).
    pub fn num_runs(&self, seeds: Option<&[u64]>) -> usize {
        self.variants
            .iter()
            .map(|v| v.methods.len() * seeds.map_or(v.config.seeds.len(), <[u64]>::len))
            .sum()
    }
}

impl Variant {
    fn validate(
        config: ExperimentConfig,
        tag: Option<String>,
        path: &Path,
        dirs: &[PathBuf],
    ) -> Result<Variant, ConfigError> {
        let context = tag
            .as_ref()
            .map(|t| format!(" (sweep combination {t})"))
            .unwrap_or_default();
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message: format!("{message}{context}"),
        };
        let stream_path = resolve_stream(&config.stream, dirs).map_err(|tried| {
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
            if m.name.trim().is_empty() || m.name.contains(['/', '\\', '[', ']']) {
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
            let strategy = match &m.strategy {
                Some(s) => s
                    .check()
                    .map_err(|(k, msg)| invalid(&format!("methods[{i}].strategy.{k}"), msg))?,
                None => StrategySettings::default(),
            };
            methods.push(Method {
                name: m.name.clone(),
                optimizer: settings,
                grapes: m.optimizer.grapes,
                strategy,
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
        Ok(Variant {
            tag,
            config,
            stream,
            methods,
            training,
        })
    }

    /// The display name of a method in this variant: `name` or `name[tag]`.
    pub fn method_name(&self, method: &str) -> String {
        match &self.tag {
            Some(t) => format!("{method}[{t}]"),
            None => method.to_string(),
        }
    }
}

fn has_key(value: &serde_yaml::Value, key: &str) -> bool {
    matches!(value, serde_yaml::Value::Mapping(m) if m.contains_key(key))
}

/// Reads `path` and, recursively, the files it `extends`; returns the merged value. `chain`
/// receives every file with its text, the requested file first.
fn load_chain(
    path: &Path,
    chain: &mut Vec<(PathBuf, String)>,
) -> Result<serde_yaml::Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: format!("cannot read the file: {e}"),
    })?;
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if chain
        .iter()
        .any(|(p, _)| p.canonicalize().unwrap_or_else(|_| p.clone()) == canonical)
    {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "extends".into(),
            message: "the `extends` chain comes back to this file".into(),
        });
    }
    let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if !matches!(value, serde_yaml::Value::Mapping(_)) {
        return Err(ConfigError::Parse {
            path: path.to_path_buf(),
            message: "expected a mapping of keys at the top level".into(),
        });
    }
    chain.push((path.to_path_buf(), text));
    let base = match value.get("extends") {
        None => return Ok(value),
        Some(serde_yaml::Value::String(b)) => path.parent().unwrap_or(Path::new(".")).join(b),
        Some(other) => {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "extends".into(),
                message: format!("expected a file name, found {other:?}"),
            })
        }
    };
    if !base.is_file() {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            key: "extends".into(),
            message: format!("base config {} not found", base.display()),
        });
    }
    let mut merged = load_chain(&base, chain)?;
    merge(&mut merged, value);
    if let serde_yaml::Value::Mapping(m) = &mut merged {
        m.remove("extends");
    }
    Ok(merged)
}

/// Overrides `base` with `over`: mappings merge key by key, anything else is replaced.
fn merge(base: &mut serde_yaml::Value, over: serde_yaml::Value) {
    match (base, over) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Sets a dotted path (`a.b.0.c`, `*` for every list element) in a YAML value; missing map keys
/// are created, list indices must exist.
fn set_path(
    value: &mut serde_yaml::Value,
    path: &str,
    new: serde_yaml::Value,
) -> Result<(), String> {
    fn go(
        v: &mut serde_yaml::Value,
        parts: &[&str],
        new: &serde_yaml::Value,
        path: &str,
    ) -> Result<(), String> {
        let Some((head, rest)) = parts.split_first() else {
            *v = new.clone();
            return Ok(());
        };
        match v {
            serde_yaml::Value::Sequence(items) => {
                if *head == "*" {
                    for item in items.iter_mut() {
                        go(item, rest, new, path)?;
                    }
                    Ok(())
                } else {
                    let i: usize = head
                        .parse()
                        .map_err(|_| format!("`{head}` in `{path}` is not a list index or `*`"))?;
                    let len = items.len();
                    let item = items.get_mut(i).ok_or_else(|| {
                        format!("index {i} in `{path}` is past the end of a list of {len}")
                    })?;
                    go(item, rest, new, path)
                }
            }
            serde_yaml::Value::Mapping(m) => {
                let key = serde_yaml::Value::String(head.to_string());
                if !m.contains_key(&key) {
                    m.insert(key.clone(), serde_yaml::Value::Mapping(Default::default()));
                    if rest.is_empty() {
                        m.insert(key.clone(), new.clone());
                        return Ok(());
                    }
                }
                go(m.get_mut(&key).expect("inserted"), rest, new, path)
            }
            _ => Err(format!(
                "`{path}` goes through `{head}`, which is not a mapping or list"
            )),
        }
    }
    let parts: Vec<&str> = path.split('.').collect();
    go(value, &parts, &new, path)
}

/// Every combination of the sweep axes, in order (the last axis varies fastest).
fn cartesian(axes: &[(String, Vec<serde_yaml::Value>)]) -> Vec<Vec<(String, serde_yaml::Value)>> {
    let mut combos: Vec<Vec<(String, serde_yaml::Value)>> = vec![Vec::new()];
    for (key, values) in axes {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((key.clone(), v.clone()));
                    c
                })
            })
            .collect();
    }
    combos
}

/// `lr=0.01,batch_size=32`: the last path segment names each value (the whole path when two
/// axes share a last segment).
fn tag_of(combo: &[(String, serde_yaml::Value)]) -> String {
    let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    combo
        .iter()
        .map(|(k, v)| {
            let short = last(k);
            let name = if combo.iter().filter(|(o, _)| last(o) == short).count() > 1 {
                k.clone()
            } else {
                short
            };
            let value = serde_json::to_string(v)
                .unwrap_or_default()
                .trim_matches('"')
                .to_string();
            format!("{name}={value}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Turns a deserialization error of a merged value into one that names the file, line and
/// column where the offending key is written, with a "did you mean" hint.
fn locate_error(
    err: &serde_yaml::Error,
    chain: &[(PathBuf, String)],
    keys: &[&str],
) -> ConfigError {
    let message = crate::yaml::describe_error(err, keys);
    let field = message
        .split("unknown field `")
        .nth(1)
        .and_then(|r| r.split('`').next())
        .map(str::to_string);
    if let Some(field) = field {
        for (path, text) in chain {
            for (n, line) in text.lines().enumerate() {
                let trimmed = line.trim_start().trim_start_matches("- ");
                let col = line.len() - trimmed.len() + 1;
                if trimmed.starts_with(&format!("{field}:"))
                    || trimmed.starts_with(&format!("\"{field}\":"))
                {
                    return ConfigError::Parse {
                        path: path.clone(),
                        message: format!("line {} column {col}: {message}", n + 1),
                    };
                }
                if let Some(pos) = line.find(&format!("{field}:")) {
                    let before = line[..pos].trim_end();
                    if before.ends_with('{') || before.ends_with(',') {
                        return ConfigError::Parse {
                            path: path.clone(),
                            message: format!("line {} column {}: {message}", n + 1, pos + 1),
                        };
                    }
                }
            }
        }
    }
    ConfigError::Parse {
        path: chain[0].0.clone(),
        message,
    }
}

fn duplicate(seeds: &[u64]) -> Option<u64> {
    seeds
        .iter()
        .enumerate()
        .find(|(i, s)| seeds[..*i].contains(s))
        .map(|(_, s)| *s)
}

/// Finds a stream file: as given (relative to the current directory), relative to the
/// directories of the config files, or, for a bare name, `tasks/<name>.yaml`. `Err` lists what
/// was tried.
fn resolve_stream(stream: &str, dirs: &[PathBuf]) -> Result<PathBuf, String> {
    let given = PathBuf::from(stream);
    let mut candidates = vec![given.clone()];
    candidates.extend(dirs.iter().map(|d| d.join(&given)));
    if !stream.contains('/') && !stream.ends_with(".yaml") && !stream.ends_with(".yml") {
        candidates.push(PathBuf::from("tasks").join(format!("{stream}.yaml")));
        candidates.extend(
            dirs.iter()
                .map(|d| d.join("..").join("tasks").join(format!("{stream}.yaml"))),
        );
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
