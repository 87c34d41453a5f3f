//! The plan: one fully resolved [`RunSpec`] per (method, seed), each with a stable id.

use serde::{Deserialize, Serialize};

use super::config::{Experiment, MethodConfig, TrainingConfig};
use crate::models::{ModelConfig, ModelSpec};
use crate::streams::{StreamFile, StreamSpec};
use crate::train::{Method, TrainSettings};

/// Everything that determines one run's result. Its hash is the run id, so changing any setting
/// makes a new run and never overwrites an old one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Stream name (display).
    pub stream_name: String,
    /// The stream's full definition (not its path: editing the file changes the id).
    pub stream: StreamSpec,
    /// The model.
    pub model: ModelConfig,
    /// The method (name and optimizer).
    pub method: MethodConfig,
    /// Training settings.
    pub training: TrainingConfig,
    /// The seed.
    pub seed: u64,
}

impl RunSpec {
    /// The run id: `<method>-s<seed>-<first 10 hex digits of SHA-256 of the canonical JSON>`.
    pub fn id(&self) -> String {
        let json = serde_json::to_vec(self).expect("a run spec always serializes");
        let hash = crate::data::sha256_hex(&json);
        let slug: String = self
            .method
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{slug}-s{}-{}", self.seed, &hash[..10])
    }
}

impl RunSpec {
    /// Everything but the seed, as JSON: the runs of one method whose configurations are equal
    /// are seeds of one experiment, and only those may be pooled.
    pub fn configuration(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("a run spec always serializes");
        if let Some(map) = value.as_object_mut() {
            map.remove("seed");
        }
        value
    }
}

/// The dotted keys at which two JSON values differ, in order, at most `limit` of them.
pub fn differing_keys(a: &serde_json::Value, b: &serde_json::Value, limit: usize) -> Vec<String> {
    fn walk(a: &serde_json::Value, b: &serde_json::Value, at: &str, out: &mut Vec<String>) {
        use serde_json::Value::Object;
        match (a, b) {
            (Object(x), Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let null = serde_json::Value::Null;
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    walk(
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        &path,
                        out,
                    );
                }
            }
            _ if a != b => out.push(format!("{at} ({a} vs {b})")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(a, b, "", &mut out);
    out.truncate(limit);
    out
}

/// A run of the plan: its spec (as written, hashed into the id) and the validated values that
/// train it. Executing a run needs nothing else.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// The fully resolved run config (its hash is the run id).
    pub spec: RunSpec,
    /// The stream file the run's stream is built from (with the run's seed).
    pub stream: StreamFile,
    /// The model.
    pub model: ModelSpec,
    /// The method, named as in the results (`name[sweep tag]` in a sweep).
    pub method: Method,
    /// Training settings.
    pub training: TrainSettings,
}

impl PlannedRun {
    /// The run id.
    pub fn id(&self) -> String {
        self.spec.id()
    }
}

/// Expands an experiment into its runs: for each sweep variant, methods in config order, each
/// over every seed. `seeds` replaces the config's seeds when given (`--seeds`).
pub fn plan(exp: &Experiment, seeds: Option<&[u64]>) -> Vec<PlannedRun> {
    let mut runs = Vec::new();
    for variant in &exp.variants {
        let seeds = seeds.unwrap_or(&variant.config.seeds);
        let stream_name = variant.stream.spec.name.clone().unwrap_or_else(|| {
            variant
                .stream
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        for (written, checked) in variant.config.methods.iter().zip(&variant.methods) {
            let name = variant.method_name(&written.name);
            let method_config = MethodConfig {
                name: name.clone(),
                ..written.clone()
            };
            let method = Method {
                name,
                ..checked.clone()
            };
            for &seed in seeds {
                runs.push(PlannedRun {
                    spec: RunSpec {
                        stream_name: stream_name.clone(),
                        stream: variant.stream.spec.clone(),
                        model: variant.config.model.clone(),
                        method: method_config.clone(),
                        training: variant.config.training.clone(),
                        seed,
                    },
                    stream: variant.stream.clone(),
                    model: variant.model.clone(),
                    method: method.clone(),
                    training: variant.training.clone(),
                });
            }
        }
    }
    runs
}

/// A deterministic share of a plan for one of `count` workers (`index` in `0..count`): the runs
/// sorted by id, every `count`-th one starting at `index`. The shares of all workers cover every
/// run exactly once.
pub fn shard(mut runs: Vec<PlannedRun>, index: usize, count: usize) -> Vec<PlannedRun> {
    runs.sort_by_key(PlannedRun::id);
    runs.into_iter()
        .enumerate()
        .filter(|(k, _)| k % count.max(1) == index)
        .map(|(_, r)| r)
        .collect()
}
