//! Gradient episodic memory (GEM; Lopez-Paz & Ranzato 2017): every step, the gradient `g` of the
//! current batch is checked against the gradient `g_k` of each earlier task's episodic memory;
//! when it points against any of them (`⟨g, g_k⟩ < 0`), it is replaced by the `g̃` closest to
//! it that does not, found through the dual quadratic program
//!
//! ```text
//! minimize_v  ½ vᵀ (G Gᵀ + ε I) v + (G g)ᵀ v   subject to  v ≥ margin,      g̃ = Gᵀ v + g,
//! ```
//!
//! `G` the matrix whose rows are the `g_k`. This is the dual that GEM's reference code solves
//! (facebookresearch/GradientEpisodicMemory `model/gem.py`, `project2cone2`, with `quadprog`),
//! and that Hsu et al. (2018) reuse (GT-RIPL/Continual-Learning-Benchmark `agents/exp_replay.py`):
//! ε = 0.001 added to the diagonal, and the `margin` (their `memory_strength` / `reg_coef`,
//! 0.5) as the lower bound of the dual variables. With ε = 0 and margin 0 it is the exact
//! projection onto `{g̃ : ⟨g̃, g_k⟩ ≥ 0 ∀k}`.
//!
//! The program is small (one variable per earlier task) and strictly convex; clbench solves it
//! with projected Gauss–Seidel (cyclic coordinate descent, each coordinate minimized exactly and
//! clamped at its bound) in `f64` until the KKT conditions hold to a relative 1e-12, instead of
//! `quadprog`'s dual active-set method: the same minimizer, another route to it.
//!
//! Memory, as Hsu et al. keep it: after each task, a uniform random subset of its training
//! examples (drawn from the run's seed) is stored; `per: task` keeps `budget` examples of every
//! task (GEM's `n_memories`), `per: total` shares `budget` equally among the tasks learned so
//! far (`budget / k` each after k tasks: Hsu et al.'s `memory_size`, the earlier tasks' subsets
//! shortened as new tasks arrive). Each task's memory gradient is the mean loss of its whole
//! memory, on its own head and outputs.

use candle_core::Result;
use serde::{Deserialize, Serialize};

use super::memory::{accumulate_mixed, SetAside};
use super::{Context, StepData, Strategy};
use crate::rng::SeedRng;
use crate::streams::{Example, MixedBatch};

/// How GEM's memory budget is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GemMemory {
    /// `budget` examples of every task (GEM's `n_memories`).
    #[default]
    Task,
    /// `budget` examples in all, shared equally among the tasks learned so far (Hsu et al.).
    Total,
}

/// The solution of GEM's dual program and how it was reached.
#[derive(Debug, Clone, PartialEq)]
pub struct DualSolution {
    /// The dual variables, one per memory gradient (each ≥ the margin).
    pub v: Vec<f64>,
    /// Sweeps of coordinate descent.
    pub sweeps: usize,
}

/// Solves `min_v ½ vᵀ (P + ε I) v + qᵀ v` subject to `v ≥ margin` for a symmetric positive
/// semi-definite `P` (`n × n`, row-major) by projected Gauss–Seidel, from `v = margin`. Stops
/// when no coordinate's KKT residual exceeds `1e-12 ×` the problem's scale, or after 100 000
/// sweeps. A coordinate whose diagonal is 0 (a zero memory gradient with ε = 0) stays at the
/// margin.
pub fn solve_dual(p: &[f64], q: &[f64], eps: f64, margin: f64) -> DualSolution {
    let n = q.len();
    assert_eq!(p.len(), n * n, "P must be n × n");
    let diag: Vec<f64> = (0..n).map(|k| p[k * n + k] + eps).collect();
    let scale = q
        .iter()
        .chain(p.iter())
        .fold(0.0f64, |m, x| m.max(x.abs()))
        .max(f64::MIN_POSITIVE);
    let tol = 1e-12 * scale * (1.0 + margin.abs());
    let mut v = vec![margin; n];
    let mut sweeps = 0;
    while sweeps < 100_000 {
        sweeps += 1;
        let mut worst = 0.0f64;
        for k in 0..n {
            if diag[k] <= 0.0 {
                continue;
            }
            // ∂/∂v_k = (P v)_k + ε v_k + q_k.
            let grad: f64 = (0..n).map(|j| p[k * n + j] * v[j]).sum::<f64>() + eps * v[k] + q[k];
            // KKT residual: the gradient where v_k is free, its negative part at the bound.
            let residual = if v[k] > margin {
                grad.abs()
            } else {
                (-grad).max(0.0)
            };
            worst = worst.max(residual);
            v[k] = (v[k] - grad / diag[k]).max(margin);
        }
        if worst <= tol {
            break;
        }
    }
    DualSolution { v, sweeps }
}

/// GEM with an episodic memory per task.
pub struct Gem {
    budget: usize,
    per: GemMemory,
    margin: f64,
    eps: f64,
    /// Every learned task's stored examples, in their random order (the first `n` of a list
    /// are its memory when each task may keep `n`).
    memories: Vec<Vec<Example>>,
    batch: MixedBatch,
    /// The step's own gradient while the memory gradients are computed.
    current: SetAside,
    /// Each earlier task's memory gradient (zeros where a parameter has none).
    references: Vec<Vec<Vec<f32>>>,
    /// Steps whose gradient was projected, and steps checked against a memory.
    pub projected: (usize, usize),
}

impl Gem {
    /// GEM keeping `budget` examples per task or in total, with GEM's `margin` and `eps` on
    /// the dual's diagonal.
    pub fn new(budget: usize, per: GemMemory, margin: f64, eps: f64) -> Gem {
        Gem {
            budget,
            per,
            margin,
            eps,
            memories: Vec::new(),
            batch: MixedBatch::default(),
            current: SetAside::default(),
            references: Vec::new(),
            projected: (0, 0),
        }
    }

    /// Examples each learned task keeps while `learned` tasks have been learned.
    fn per_task(&self, learned: usize) -> usize {
        match self.per {
            GemMemory::Task => self.budget,
            GemMemory::Total => self.budget / learned.max(1),
        }
    }
}

impl Strategy for Gem {
    fn extend_gradients(&mut self, ctx: &mut Context, task: usize, _step: &StepData) -> Result<()> {
        let earlier = self.memories.len().min(task);
        if earlier == 0 {
            return Ok(());
        }
        let keep = self.per_task(self.memories.len());
        // Set the step's gradient aside; compute each memory's gradient in its place.
        self.current.take(ctx.engine);
        self.references.resize(earlier, Vec::new());
        for k in 0..earlier {
            let examples = &self.memories[k][..keep.min(self.memories[k].len())];
            ctx.engine.zero_grad();
            if !examples.is_empty() {
                self.batch.fill(ctx.stream, examples);
                accumulate_mixed(ctx, &self.batch, 1.0)?;
            }
            let (g, touched) = ctx.engine.grads_mut();
            let r = &mut self.references[k];
            r.resize(g.len(), Vec::new());
            for ((dst, src), &t) in r.iter_mut().zip(g.iter()).zip(touched.iter()) {
                dst.resize(src.len(), 0.0);
                if t {
                    dst.copy_from_slice(src);
                } else {
                    dst.fill(0.0);
                }
            }
        }
        // Dot products in f64, untouched parameters counting as zero.
        let dot = |a: &[Vec<f32>], a_touched: Option<&[bool]>, b: &[Vec<f32>]| -> f64 {
            a.iter()
                .zip(b)
                .enumerate()
                .filter(|(i, _)| a_touched.is_none_or(|t| t[*i]))
                .map(|(_, (x, y))| {
                    x.iter()
                        .zip(y)
                        .map(|(&x, &y)| f64::from(x) * f64::from(y))
                        .sum::<f64>()
                })
                .sum()
        };
        let gk: Vec<f64> = self
            .references
            .iter()
            .map(|r| dot(&self.current.grads, Some(&self.current.touched), r))
            .collect();
        self.projected.1 += 1;
        if gk.iter().any(|&d| d < 0.0) {
            self.projected.0 += 1;
            let n = earlier;
            let mut p = vec![0.0; n * n];
            for a in 0..n {
                for b in a..n {
                    let d = dot(&self.references[a], None, &self.references[b]);
                    p[a * n + b] = d;
                    p[b * n + a] = d;
                }
            }
            let q: Vec<f64> = gk.clone();
            let v = solve_dual(&p, &q, self.eps, self.margin).v;
            // g̃ = g + Σ_k v_k g_k; every parameter now has a gradient.
            let current = &mut self.current;
            for (i, g) in current.grads.iter_mut().enumerate() {
                if !current.touched[i] {
                    g.fill(0.0);
                    current.touched[i] = true;
                }
                for (r, &vk) in self.references.iter().zip(&v) {
                    let vk = vk as f32;
                    g.iter_mut().zip(&r[i]).for_each(|(g, &r)| *g += vk * r);
                }
            }
        }
        self.current.restore(ctx.engine);
        Ok(())
    }

    fn after_task(&mut self, ctx: &mut Context, task: usize) -> Result<()> {
        // A uniform random subset of the task's training examples, as many as a task may ever
        // keep (the first `n` of it when it may keep `n`).
        let mut examples: Vec<u32> = ctx.stream.tasks[task].train.clone();
        let keep = self.per_task(1).min(examples.len());
        let mut rng = SeedRng::derive(ctx.seed, "gem-memory", task as u64);
        for k in 0..keep {
            let j = k + rng.below((examples.len() - k) as u64) as usize;
            examples.swap(k, j);
        }
        examples.truncate(keep);
        self.memories.truncate(task);
        self.memories
            .push(examples.into_iter().map(|i| (task, i)).collect());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two conflicting memory gradients in the plane: with ε = 0 and margin 0 the projection
    /// satisfies every constraint, is tight on the active ones, and is the closest such vector
    /// (checked against a fine grid search).
    #[test]
    fn the_dual_gives_the_closest_gradient_that_meets_every_constraint() {
        let g = [1.0f64, -1.0];
        let refs = [[0.0f64, 1.0], [1.0, 1.0]];
        let n = refs.len();
        let mut p = vec![0.0; n * n];
        for a in 0..n {
            for b in 0..n {
                p[a * n + b] = refs[a][0] * refs[b][0] + refs[a][1] * refs[b][1];
            }
        }
        let q: Vec<f64> = refs.iter().map(|r| r[0] * g[0] + r[1] * g[1]).collect();
        let v = solve_dual(&p, &q, 0.0, 0.0).v;
        assert!(v.iter().all(|&x| x >= 0.0));
        let gt = [
            g[0] + v[0] * refs[0][0] + v[1] * refs[1][0],
            g[1] + v[0] * refs[0][1] + v[1] * refs[1][1],
        ];
        for r in &refs {
            assert!(gt[0] * r[0] + gt[1] * r[1] >= -1e-12, "{gt:?}");
        }
        // Grid search of the primal: min ‖x − g‖² with ⟨x, r⟩ ≥ 0.
        let mut best = (f64::INFINITY, [0.0, 0.0]);
        for i in -300..=300 {
            for j in -300..=300 {
                let x = [i as f64 / 100.0, j as f64 / 100.0];
                if refs.iter().all(|r| x[0] * r[0] + x[1] * r[1] >= 0.0) {
                    let d = (x[0] - g[0]).powi(2) + (x[1] - g[1]).powi(2);
                    if d < best.0 {
                        best = (d, x);
                    }
                }
            }
        }
        let d = (gt[0] - g[0]).powi(2) + (gt[1] - g[1]).powi(2);
        assert!(d <= best.0 + 1e-9, "{gt:?} ({d}) vs grid {:?}", best);
        assert!((gt[0] - best.1[0]).abs() < 0.02 && (gt[1] - best.1[1]).abs() < 0.02);
    }

    /// With GEM's ε and margin, the solution meets the KKT conditions of its own program:
    /// every v_k ≥ margin, the gradient ≥ 0 at the bound and 0 where v_k is above it.
    #[test]
    fn the_dual_meets_its_kkt_conditions_with_eps_and_margin() {
        let mut rng = SeedRng::derive(3, "gem-test", 0);
        for n in [1usize, 3, 7, 19] {
            let dim = 40;
            let rows: Vec<Vec<f64>> = (0..n)
                .map(|_| (0..dim).map(|_| rng.normal()).collect())
                .collect();
            let g: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
            let d = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
            let p: Vec<f64> = (0..n * n).map(|i| d(&rows[i / n], &rows[i % n])).collect();
            let q: Vec<f64> = rows.iter().map(|r| d(r, &g)).collect();
            let (eps, margin) = (0.001, 0.5);
            let s = solve_dual(&p, &q, eps, margin);
            for k in 0..n {
                let grad: f64 =
                    (0..n).map(|j| p[k * n + j] * s.v[j]).sum::<f64>() + eps * s.v[k] + q[k];
                assert!(s.v[k] >= margin);
                if s.v[k] > margin + 1e-9 {
                    assert!(
                        grad.abs() < 1e-8,
                        "n {n}: free coordinate {k} has gradient {grad}"
                    );
                } else {
                    assert!(
                        grad > -1e-8,
                        "n {n}: bound coordinate {k} has gradient {grad}"
                    );
                }
            }
            assert!(s.sweeps < 100_000, "n {n}: did not converge");
        }
    }
}
