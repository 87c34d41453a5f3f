//! Lookahead (Zhang, Lucas, Hinton & Ba, NeurIPS 2019) around SGD with momentum, as a plugin
//! optimizer: `optimizer: {name: lookahead-sgd, lr: 0.1, momentum: 0.9, k: 5, alpha: 0.5}`.
//!
//! The fast weights `θ` take `k` steps of SGD with (PyTorch's) heavy-ball momentum; then the
//! slow weights move towards them, `φ ← φ + α (θ − φ)`, and the fast weights restart from
//! there, `θ ← φ` (Algorithm 1 of the paper). The slow weights start at the weights before
//! the first update (and again after `training.reset_optimizer` resets the state).

use clbench::plugin::{OptimizerPlugin, UpdateStep};
use clbench::validate::{unit_interval, Checked, KeyError};
use serde::{Deserialize, Serialize};

/// The `lookahead-sgd` block (besides `lr` and `grapes`, which every optimizer has).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookaheadSgd {
    /// Momentum of the inner SGD, in [0, 1] (default 0.9).
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Fast steps per synchronization (≥ 1, default 5).
    #[serde(default = "default_k")]
    pub k: u64,
    /// Step size α of the slow weights, in [0, 1] (default 0.5).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
}

fn default_momentum() -> f64 {
    0.9
}
fn default_k() -> u64 {
    5
}
fn default_alpha() -> f64 {
    0.5
}

impl OptimizerPlugin for LookaheadSgd {
    const ORIGIN: &'static str = clbench::origin!();

    fn check(&self) -> Checked<()> {
        unit_interval("momentum", self.momentum)?;
        unit_interval("alpha", self.alpha)?;
        if self.k == 0 {
            return Err(KeyError::new("k", "expected at least 1 fast step, got 0"));
        }
        Ok(())
    }

    /// The momentum buffer and the slow weights.
    fn state_buffers(&self) -> usize {
        2
    }

    fn update(&self, step: &UpdateStep, p: &mut [f32], g: &[f32], state: &mut [&mut [f32]]) {
        let (momentum, alpha) = (self.momentum as f32, self.alpha as f32);
        let [buf, slow] = state else {
            unreachable!("two state buffers")
        };
        let sync = step.step.is_multiple_of(self.k);
        for j in 0..p.len() {
            if step.step == 1 {
                slow[j] = p[j];
            }
            buf[j] = momentum * buf[j] + g[j];
            p[j] -= step.lr * buf[j];
            if sync {
                slow[j] += alpha * (p[j] - slow[j]);
                p[j] = slow[j];
            }
        }
    }
}
