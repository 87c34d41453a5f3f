//! The plan: one fully resolved [`RunSpec`] per (method, seed), each with a stable id.

use serde::{Deserialize, Serialize};

use super::config::{Experiment, MethodConfig, TrainingConfig};
use crate::models::ModelConfig;
use crate::streams::StreamSpec;

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

/// Expands an experiment into its runs: methods in config order, each over every seed.
/// `seeds` replaces the config's seeds when given (`--seeds`).
pub fn plan(exp: &Experiment, seeds: Option<&[u64]>) -> Vec<RunSpec> {
    let seeds = seeds.unwrap_or(&exp.config.seeds);
    let stream_name = exp.stream.spec.name.clone().unwrap_or_else(|| {
        exp.stream
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    exp.config
        .methods
        .iter()
        .flat_map(|m| {
            seeds.iter().map(|&seed| RunSpec {
                stream_name: stream_name.clone(),
                stream: exp.stream.spec.clone(),
                model: exp.config.model.clone(),
                method: m.clone(),
                training: exp.config.training.clone(),
                seed,
            })
        })
        .collect()
}
