//! Riemannian Walk (RWalk; Chaudhry, Dokania, Ajanthan & Torr, ECCV 2018) as a plugin strategy:
//! `strategy: {name: rwalk, lambda: 1, alpha: 0.9, damping: 0.1}`.
//!
//! The penalty is `λ Σ_i (F_i + s_i) (θ_i − θ*_i)²` towards the weights `θ*` at the end of the
//! previous task, where
//! - `F` is the EWC++ Fisher (the paper's eq. 5): a moving average of the squared gradient of
//!   the task's loss, `F ← α g² + (1 − α) F` at every step, never reset between tasks;
//! - `s` is the path score (eqs. 9–10): the loss change credited to each parameter along the
//!   task's path, `W_i = Σ_steps −g_i Δθ_i`, over the distance it moved in the Fisher metric,
//!   `s_task = max(0, W_i / (F_i (θ_i − θ*_i)² + damping))` at the end of the task, averaged
//!   with the earlier tasks' scores, `s ← ½ (s + s_task)`.
//!
//! As FACIL's implementation (Masana et al. 2022, `src/approach/rwalk.py`), the score divides
//! the task's whole path by its total displacement with a damping term, where the paper sums
//! the ratio step by step with a tiny ε (unstable with SGD's first steps); neither `F` nor `s`
//! is rescaled. The gradient is that of the task's loss alone, before the penalty.

use clbench::plugin::StrategyPlugin;
use clbench::strategy::{Context, Strategy};
use clbench::validate::{non_negative, positive, unit_interval, Checked};
use serde::{Deserialize, Serialize};

/// The `rwalk` block.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RwalkSettings {
    /// Penalty strength λ (≥ 0).
    pub lambda: f64,
    /// Weight α of the newest squared gradient in the EWC++ Fisher, in [0, 1] (default 0.9).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Damping of the path score's denominator (> 0, default 0.1, FACIL's).
    #[serde(default = "default_damping")]
    pub damping: f64,
}

fn default_alpha() -> f64 {
    0.9
}
fn default_damping() -> f64 {
    0.1
}

impl StrategyPlugin for RwalkSettings {
    const ORIGIN: &'static str = clbench::origin!();

    fn check(&self) -> Checked<()> {
        non_negative("lambda", self.lambda)?;
        unit_interval("alpha", self.alpha)?;
        positive("damping", self.damping)?;
        Ok(())
    }

    fn build(&self, _batch_size: usize) -> Box<dyn Strategy> {
        Box::new(Rwalk {
            lambda: self.lambda as f32,
            alpha: self.alpha as f32,
            damping: self.damping as f32,
            ..Rwalk::default()
        })
    }
}

/// RWalk's state during a run: one buffer of each kind per parameter tensor.
#[derive(Default)]
struct Rwalk {
    lambda: f32,
    alpha: f32,
    damping: f32,
    /// EWC++ Fisher.
    fisher: Vec<Vec<f32>>,
    /// Averaged path scores of the finished tasks.
    score: Vec<Vec<f32>>,
    /// This task's path integral `W = Σ −g Δθ` so far.
    path: Vec<Vec<f32>>,
    /// Weights at the end of the previous task (the penalty's anchor; none while the first
    /// task trains).
    anchor: Vec<Vec<f32>>,
    /// Weights when this task started.
    start: Vec<Vec<f32>>,
    /// This step's task-loss gradient and the weights before the update.
    grad: Vec<Vec<f32>>,
    before: Vec<Vec<f32>>,
}

fn zeros_like(params: &[Vec<f32>]) -> Vec<Vec<f32>> {
    params.iter().map(|p| vec![0.0; p.len()]).collect()
}

impl Strategy for Rwalk {
    fn before_task(&mut self, ctx: &mut Context, _task: usize) -> candle_core::Result<()> {
        let params = ctx.engine.params();
        if self.fisher.is_empty() {
            self.fisher = zeros_like(params);
            self.score = zeros_like(params);
        }
        self.path = zeros_like(params);
        self.start = params.to_vec();
        Ok(())
    }

    fn regularize(&mut self, params: &[Vec<f32>], grads: &mut [Vec<f32>], touched: &[bool]) {
        self.grad = grads.to_vec();
        self.before = params.to_vec();
        for i in (0..params.len()).filter(|&i| touched[i]) {
            for (f, g) in self.fisher[i].iter_mut().zip(&grads[i]) {
                *f = self.alpha * g * g + (1.0 - self.alpha) * *f;
            }
            if self.anchor.is_empty() {
                continue;
            }
            // ∂/∂θ of λ Σ (F + s)(θ − θ*)².
            let (f, s, a) = (&self.fisher[i], &self.score[i], &self.anchor[i]);
            for (j, g) in grads[i].iter_mut().enumerate() {
                *g += 2.0 * self.lambda * (f[j] + s[j]) * (params[i][j] - a[j]);
            }
        }
    }

    fn after_update(&mut self, params: &[Vec<f32>], touched: &[bool]) {
        for i in (0..params.len()).filter(|&i| touched[i]) {
            let (g, before) = (&self.grad[i], &self.before[i]);
            for (j, (w, p)) in self.path[i].iter_mut().zip(&params[i]).enumerate() {
                *w -= g[j] * (p - before[j]);
            }
        }
    }

    fn after_task(&mut self, ctx: &mut Context, task: usize) -> candle_core::Result<()> {
        let params = ctx.engine.params();
        for (i, p) in params.iter().enumerate() {
            let (start, path, fisher) = (&self.start[i], &self.path[i], &self.fisher[i]);
            for (j, s) in self.score[i].iter_mut().enumerate() {
                let moved = p[j] - start[j];
                let task_score = (path[j] / (fisher[j] * moved * moved + self.damping)).max(0.0);
                *s = if task == 0 {
                    task_score
                } else {
                    0.5 * (*s + task_score)
                };
            }
        }
        self.anchor = params.to_vec();
        Ok(())
    }
}
