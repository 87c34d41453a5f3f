//! The experiment config file: raw YAML (`ExperimentConfig`) checked into a validated
//! [`Experiment`] that names everything a run needs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::BackwardPath;
use crate::models::{ModelConfig, ModelKind, ModelSpec, MODEL_KEYS};
use crate::optim::OptimizerConfig;
use crate::strategy::{StrategyConfig, StrategySettings};
use crate::streams::{StreamFile, StreamSpec};
use crate::train::{Budget, LrDecay, Method, TrainSettings};
use crate::validate::{at_least_one, count, fraction, non_negative, Checked, KeyError};

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

impl ConfigError {
    /// A [`KeyError`] of the config at `path`, `context` appended to its message (e.g. which
    /// sweep combination).
    pub fn at(path: &Path, err: KeyError, context: &str) -> ConfigError {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            key: err.key,
            message: format!("{}{context}", err.message),
        }
    }
}

/// A method entry: a name and its optimizer (± GRAPES).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// Display name, unique within the experiment (e.g. `sgd+grapes`).
    pub name: String,
    /// The optimizer, with `grapes: off|propagating|local` (a built-in one, or a plugin's:
    /// [`OptimizerConfig::from_block`]).
    #[serde(
        deserialize_with = "optimizer_block",
        serialize_with = "write_optimizer_block"
    )]
    pub optimizer: OptimizerConfig,
    /// The continual-learning strategy (default: `finetune`; a plugin's:
    /// [`StrategyConfig::from_block`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strategy_block",
        serialize_with = "write_strategy_block"
    )]
    pub strategy: Option<StrategyConfig>,
}

fn optimizer_block<'de, D: serde::Deserializer<'de>>(d: D) -> Result<OptimizerConfig, D::Error> {
    OptimizerConfig::from_block(serde_yaml::Value::deserialize(d)?)
        .map_err(serde::de::Error::custom)
}

fn write_optimizer_block<S: serde::Serializer>(
    o: &OptimizerConfig,
    s: S,
) -> Result<S::Ok, S::Error> {
    o.to_block().serialize(s)
}

fn strategy_block<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<StrategyConfig>, D::Error> {
    match Option::<serde_yaml::Value>::deserialize(d)? {
        None => Ok(None),
        Some(v) => StrategyConfig::from_block(v)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

fn write_strategy_block<S: serde::Serializer>(
    st: &Option<StrategyConfig>,
    s: S,
) -> Result<S::Ok, S::Error> {
    st.as_ref().map(StrategyConfig::to_block).serialize(s)
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
    /// Optimizer state at the start of every task: `never` reset (default; also written
    /// `false`) or fresh at every task (`per-task`; also written `true`). Stored as a boolean,
    /// as before the named values existed, so that runs keep their ids.
    #[serde(default, deserialize_with = "reset_optimizer")]
    pub reset_optimizer: bool,
    /// A per-task learning-rate decay `{gamma, floor}`: task t = 1, 2, … trains with
    /// `max(lr · gamma^t, floor)` (Stable SGD's schedule). Default: none, the optimizer's `lr`
    /// for every task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_decay: Option<LrDecayConfig>,
    /// `auto` (default: the fused CPU step of the MLP or CNN; off the CPU the explicit backward
    /// for MLPs, autograd for CNNs), `fused`, `explicit` (MLPs) or `autograd`.
    #[serde(default)]
    pub backward: BackwardPath,
}

/// `training.lr_decay` as written.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrDecayConfig {
    /// The factor γ per task, in (0, 1].
    pub gamma: f64,
    /// The smallest learning rate (≥ 0, default 0).
    #[serde(default)]
    pub floor: f64,
}

/// `training.reset_optimizer`: `per-task` or `never`, or a boolean.
fn reset_optimizer<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    use crate::yaml::BoolOrName;
    match BoolOrName::deserialize(d)? {
        BoolOrName::Bool(b) => Ok(b),
        BoolOrName::Name(n) => match n.as_str() {
            "per-task" => Ok(true),
            "never" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "unknown value `{other}` for `reset_optimizer`: expected `per-task` or `never`"
            ))),
        },
    }
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
    "lr_decay",
    "gamma",
    "floor",
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
    "initial_accumulator",
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
    /// The validated model.
    pub model: ModelSpec,
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
    /// The merged config before sweep values are applied (without `extends` and `sweep`).
    pub config: ExperimentConfig,
    /// The sweep as written, if any.
    pub sweep: Option<serde_yaml::Mapping>,
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
                serde_yaml::from_str(&chain[0].1).map_err(|e| {
                    match locate_error(&e, &chain, &keys) {
                        // An unknown key found in the text: its own line.
                        located @ ConfigError::Parse { .. } if is_located(&located) => located,
                        _ => ConfigError::Parse {
                            path: path.to_path_buf(),
                            message: strategy_path(crate::yaml::describe_error(&e, &keys)),
                        },
                    }
                })
            } else {
                serde_yaml::from_value(value).map_err(|e| locate_error(&e, &chain, &keys))
            }
        };
        let mut config = parse(merged.clone())?;
        let sweep = config.sweep.take().unwrap_or_default();
        config.extends = None;
        let axes = sweep_axes(&sweep, path)?;
        let name = experiment_name(&config, path)?;
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
            let mut cfg: ExperimentConfig = if combo.is_empty() {
                config.clone()
            } else {
                serde_yaml::from_value(value).map_err(|e| locate_error(&e, &chain, &keys))?
            };
            for m in &mut cfg.methods {
                m.strategy = m
                    .strategy
                    .take()
                    .map(StrategyConfig::with_recorded_defaults);
                m.optimizer = m.optimizer.clone().with_recorded_defaults();
            }
            let tag = (!combo.is_empty()).then(|| tag_of(&combo));
            if let Some(same) = variants.iter().find(|v: &&Variant| v.config == cfg) {
                // e.g. `[32, 32]` or `[0.1, 0.10]`: the same runs twice, one overwriting the other.
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: "sweep".into(),
                    message: format!(
                        "combinations {} and {} are the same configuration; list each value once",
                        same.tag.as_deref().unwrap_or_default(),
                        tag.as_deref().unwrap_or_default()
                    ),
                });
            }
            variants.push(Variant::validate(cfg, tag, path, &dirs)?);
        }
        Ok(Experiment {
            name,
            path: path.to_path_buf(),
            config,
            sweep: (!sweep.is_empty()).then_some(sweep),
            variants,
        })
    }
}

impl MethodConfig {
    /// Checks the name, the optimizer and the strategy into a [`Method`]; an error names the
    /// key inside the method entry.
    pub fn check(&self) -> Checked<Method> {
        check_method_name(&self.name)?;
        let optimizer = self.optimizer.check().map_err(|e| e.within("optimizer"))?;
        let strategy = match &self.strategy {
            Some(s) => s.check().map_err(|e| e.within("strategy"))?,
            None => StrategySettings::default(),
        };
        Ok(Method {
            name: self.name.clone(),
            optimizer,
            grapes: self.optimizer.grapes,
            strategy,
        })
    }
}

/// The largest batch (training or evaluation).
pub const MAX_BATCH: usize = 1 << 20;
/// The most epochs per task.
pub const MAX_EPOCHS: usize = 100_000;
/// The most optimizer steps per task.
pub const MAX_ITERATIONS: usize = 1_000_000_000;

impl TrainingConfig {
    /// Checks the budget and sizes into [`TrainSettings`] for a model of `kind`; an error names
    /// the key inside the training block.
    pub fn check(&self, kind: ModelKind) -> Checked<TrainSettings> {
        let batch_size = count("batch_size", self.batch_size, MAX_BATCH)?;
        let budget = match (self.epochs, self.iterations) {
            (Some(_), Some(_)) => {
                return Err(KeyError::new(
                    "",
                    "give either `epochs` or `iterations`, not both",
                ))
            }
            (None, None) => {
                return Err(KeyError::new(
                    "",
                    "give `epochs: N` or `iterations: N` per task",
                ))
            }
            (Some(e), None) => Budget::Epochs(count("epochs", e, MAX_EPOCHS)?),
            (None, Some(n)) => Budget::Iterations(count("iterations", n, MAX_ITERATIONS)?),
        };
        if self.backward == BackwardPath::Explicit && kind != ModelKind::Mlp {
            return Err(KeyError::new(
                "backward",
                "the explicit backward only supports `kind: mlp`",
            ));
        }
        Ok(TrainSettings {
            batch_size,
            budget,
            eval_batch_size: count(
                "eval_batch_size",
                self.eval_batch_size.unwrap_or(1000),
                MAX_BATCH,
            )?,
            eval_every: self
                .eval_every
                .map(|n| at_least_one("eval_every", n))
                .transpose()?,
            reset_optimizer: self.reset_optimizer,
            lr_decay: self
                .lr_decay
                .map(|d| -> Checked<LrDecay> {
                    let within = |e: KeyError| e.within("lr_decay");
                    Ok(LrDecay {
                        gamma: fraction("gamma", d.gamma).map_err(within)?,
                        floor: non_negative("floor", d.floor).map_err(within)?,
                    })
                })
                .transpose()?,
            backward: self.backward,
        })
    }
}

impl Variant {
    /// Checks one sweep combination: the stream file, then every block of the config.
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
        let invalid = |err: KeyError| ConfigError::at(path, err, &context);
        let stream_path = resolve_stream(&config.stream, dirs).map_err(|tried| {
            invalid(KeyError::new(
                "stream",
                format!("stream file `{}` not found (tried {tried})", config.stream),
            ))
        })?;
        let stream = StreamSpec::load(&stream_path)?;
        let model = config
            .model
            .check()
            .map_err(|e| invalid(e.within("model")))?;
        let methods = check_methods(&config.methods).map_err(invalid)?;
        let training = config
            .training
            .check(model.kind())
            .map_err(|e| invalid(e.within("training")))?;
        if model.dropout().is_some()
            && matches!(
                training.backward,
                BackwardPath::Explicit | BackwardPath::Autograd
            )
        {
            return Err(invalid(KeyError::new(
                "model.dropout",
                "dropout runs on the fused CPU step only; leave out `training.backward` or \
                 set it to `auto` or `fused`",
            )));
        }
        check_seeds(&config.seeds).map_err(invalid)?;
        Ok(Variant {
            tag,
            config,
            stream,
            model,
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

/// The sweep's axes, in the order written: each dotted key path with its values.
fn sweep_axes(
    sweep: &serde_yaml::Mapping,
    path: &Path,
) -> Result<Vec<(String, Vec<serde_yaml::Value>)>, ConfigError> {
    let mut axes: Vec<(String, Vec<serde_yaml::Value>)> = Vec::new();
    for (k, v) in sweep {
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
        // Counted before anything is built: a product of a few long lists exhausts memory.
        let so_far: usize = axes.iter().map(|(_, v)| v.len()).product();
        if so_far
            .checked_mul(values.len())
            .is_none_or(|n| n > MAX_SWEEP_VARIANTS)
        {
            return Err(invalid(format!(
                "its {} values make the sweep {} × {} = {} configurations, more than {MAX_SWEEP_VARIANTS}; \
                 split the sweep into several configs",
                values.len(),
                so_far,
                values.len(),
                so_far
                    .checked_mul(values.len())
                    .map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
            )));
        }
        axes.push((key, values));
    }
    Ok(axes)
}

/// The most configurations one sweep may expand to (each is validated and planned in memory,
/// and each multiplies the runs by methods × seeds).
pub const MAX_SWEEP_VARIANTS: usize = 10_000;

/// The experiment's name (`name:`, else the file stem), usable as a directory name.
fn experiment_name(config: &ExperimentConfig, path: &Path) -> Result<String, ConfigError> {
    let name = config.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "experiment".into())
    });
    crate::validate::path_name(
        "name",
        "an experiment name (it names the results folder)",
        &name,
        &[],
    )
    .map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        key: e.key,
        message: e.message,
    })?;
    Ok(name)
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
    let text = crate::yaml::read_input(path).map_err(|e| ConfigError::Parse {
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
    let message = strategy_path(crate::yaml::describe_error(err, keys));
    let message = without_serde_location(&message);
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

/// `message` without serde's " at line N column M" (the caller names the line it found).
fn without_serde_location(message: &str) -> String {
    let Some(at) = message.find(" at line ") else {
        return message.to_string();
    };
    let rest = &message[at + " at line ".len()..];
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = rest.strip_prefix(" column ").unwrap_or(rest);
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    format!("{}{rest}", &message[..at])
}

/// Whether a parse error names a line.
fn is_located(e: &ConfigError) -> bool {
    matches!(e, ConfigError::Parse { message, .. } if message.starts_with("line "))
}

/// serde reports an error inside a method's optimizer or strategy block at the method
/// (`methods[1]: unknown field …`, both blocks being read through their own functions); when
/// the keys it expected are an optimizer's (they include `lr`), the error is named
/// `methods[1].optimizer`, when they are a strategy's (or none: `finetune`),
/// `methods[1].strategy`.
fn strategy_path(message: String) -> String {
    const METHOD_KEYS: [&str; 3] = ["`name`", "`optimizer`", "`strategy`"];
    let Some(rest) = message.strip_prefix("methods[") else {
        return message;
    };
    let Some((index, tail)) = rest.split_once("]: unknown field `") else {
        return message;
    };
    if tail.contains("`lr`") {
        return format!("methods[{index}].optimizer: unknown field `{tail}");
    }
    let in_method = METHOD_KEYS.iter().any(|k| tail.contains(k));
    if in_method {
        return message;
    }
    format!("methods[{index}].strategy: unknown field `{tail}")
}

/// The longest method name: run ids (and so directory names) start with it.
pub const MAX_METHOD_NAME: usize = crate::validate::MAX_NAME;

/// A method name names table rows, LaTeX cells and figure labels, and is part of run ids: the
/// shared rule for names ([`crate::validate::path_name`]), and no `[` or `]` (sweep tags use
/// brackets).
fn check_method_name(name: &str) -> Checked<()> {
    crate::validate::path_name("name", "a method name", name, &['[', ']'])
}

/// Checks every method entry and that their names are unique.
fn check_methods(methods: &[MethodConfig]) -> Checked<Vec<Method>> {
    if methods.is_empty() {
        return Err(KeyError::new("methods", "expected at least one method"));
    }
    let mut checked: Vec<Method> = Vec::with_capacity(methods.len());
    for (i, m) in methods.iter().enumerate() {
        let at = format!("methods[{i}]");
        let method = m.check().map_err(|e| e.within(&at))?;
        if checked.iter().any(|x| x.name == method.name) {
            return Err(KeyError::new(
                format!("{at}.name"),
                format!("method `{}` is defined twice", m.name),
            ));
        }
        checked.push(method);
    }
    Ok(checked)
}

/// At least one seed, none listed twice.
fn check_seeds(seeds: &[u64]) -> Checked<()> {
    if seeds.is_empty() {
        return Err(KeyError::new("seeds", "expected at least one seed"));
    }
    match seeds
        .iter()
        .enumerate()
        .find(|(i, s)| seeds[..*i].contains(s))
    {
        Some((_, d)) => Err(KeyError::new("seeds", format!("seed {d} is listed twice"))),
        None => Ok(()),
    }
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

impl crate::error::InputError for ConfigError {
    fn is_input_error(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> serde_yaml::Value {
        serde_yaml::from_str(text).unwrap()
    }

    #[test]
    fn merge_overrides_maps_key_by_key_and_replaces_everything_else() {
        let mut base = yaml("{a: {x: 1, y: 2}, list: [1, 2, 3], s: old}");
        merge(
            &mut base,
            yaml("{a: {y: 20, z: 30}, list: [9], s: new, t: added}"),
        );
        assert_eq!(
            base,
            yaml("{a: {x: 1, y: 20, z: 30}, list: [9], s: new, t: added}")
        );
    }

    #[test]
    fn set_path_reaches_into_maps_and_lists() {
        let mut v = yaml("{methods: [{optimizer: {lr: 1}}, {optimizer: {lr: 2}}], training: {}}");
        set_path(&mut v, "methods.*.optimizer.lr", yaml("0.5")).unwrap();
        set_path(&mut v, "methods.1.optimizer.momentum", yaml("0.9")).unwrap();
        set_path(&mut v, "training.batch_size", yaml("32")).unwrap();
        assert_eq!(
            v,
            yaml(
                "{methods: [{optimizer: {lr: 0.5}}, {optimizer: {lr: 0.5, momentum: 0.9}}], \
                 training: {batch_size: 32}}"
            )
        );
        let err = set_path(&mut v, "methods.2.optimizer.lr", yaml("1")).unwrap_err();
        assert_eq!(
            err,
            "index 2 in `methods.2.optimizer.lr` is past the end of a list of 2"
        );
        let err = set_path(&mut v, "methods.x.optimizer", yaml("1")).unwrap_err();
        assert!(err.contains("not a list index"), "{err}");
        let err = set_path(&mut v, "training.batch_size.deep", yaml("1")).unwrap_err();
        assert!(err.contains("not a mapping or list"), "{err}");
    }

    #[test]
    fn cartesian_product_varies_the_last_axis_fastest() {
        let axes = vec![
            ("a".to_string(), vec![yaml("1"), yaml("2")]),
            ("b".to_string(), vec![yaml("x"), yaml("y")]),
        ];
        let tags: Vec<String> = cartesian(&axes).iter().map(|c| tag_of(c)).collect();
        assert_eq!(tags, vec!["a=1,b=x", "a=1,b=y", "a=2,b=x", "a=2,b=y"]);
        assert_eq!(cartesian(&[]), vec![Vec::new()]);
    }

    #[test]
    fn sweep_tags_use_the_last_segment_unless_two_axes_share_it() {
        let combo = vec![
            ("methods.*.optimizer.lr".to_string(), yaml("0.1")),
            ("model.hidden".to_string(), yaml("[8, 8]")),
        ];
        assert_eq!(tag_of(&combo), "lr=0.1,hidden=[8,8]");
        let clash = vec![
            ("methods.0.optimizer.lr".to_string(), yaml("0.1")),
            ("methods.1.optimizer.lr".to_string(), yaml("0.2")),
        ];
        assert_eq!(
            tag_of(&clash),
            "methods.0.optimizer.lr=0.1,methods.1.optimizer.lr=0.2"
        );
    }

    #[test]
    fn training_blocks_are_checked_key_by_key() {
        let check = |text: &str| {
            serde_yaml::from_str::<TrainingConfig>(text)
                .unwrap()
                .check(ModelKind::Mlp)
        };
        let ok = check("{batch_size: 32, epochs: 2}").unwrap();
        assert_eq!(ok.budget, Budget::Epochs(2));
        assert_eq!(ok.eval_batch_size, 1000);
        assert_eq!(
            check("{batch_size: 0, epochs: 1}").unwrap_err().key,
            "batch_size"
        );
        assert_eq!(
            check("{batch_size: 1, iterations: 0}").unwrap_err().key,
            "iterations"
        );
        assert_eq!(check("{batch_size: 1}").unwrap_err().key, "");
        assert_eq!(
            check("{batch_size: 1, epochs: 1, eval_every: 0}")
                .unwrap_err()
                .key,
            "eval_every"
        );
        let cnn = serde_yaml::from_str::<TrainingConfig>(
            "{batch_size: 1, epochs: 1, backward: explicit}",
        )
        .unwrap()
        .check(ModelKind::Cnn)
        .unwrap_err();
        assert_eq!(cnn.key, "backward");
    }
}
