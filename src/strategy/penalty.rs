//! Quadratic penalties that hold important parameters near their values after earlier tasks:
//! EWC and online EWC (Fisher importance), SI (path-integral importance), MAS
//! (output-sensitivity importance) and L2 (every parameter equally important). All share
//! [`QuadraticPenalty`]; they differ in how the importance is estimated and how the terms of
//! successive tasks are combined. The trainer hands each penalty's gradient to the optimizer
//! as a [`Pull`], added inside the update's own pass ([`Strategy::pull`]).

use candle_core::Result;

use super::{Context, FisherKind, SiGradient, Strategy};
use crate::engine::Part;
use crate::models::loss::{softmax_rows, Targets};
use crate::optim::{GrapesMode, Pull};
use crate::rng::SeedRng;
use crate::streams::{Batch, Task};

/// `scale · Σ_k Σ_i Ω_k,i (θ_i − θ*_k,i)²`, stored as `A = Σ_k Ω_k` and `B = Σ_k Ω_k θ*_k` so
/// that any number of terms costs two buffers: the gradient is `2 · scale · (A θ − B)`, which is
/// exactly zero at the anchor of a single term.
#[derive(Debug, Clone, Default)]
pub struct QuadraticPenalty {
    /// The multiplier of the sum (EWC and L2: λ/2, SI: c, MAS: λ).
    pub scale: f32,
    a: Vec<Vec<f32>>,
    b: Vec<Vec<f32>>,
    /// `Σ_k Σ_i Ω θ*²`, for the value.
    c: f64,
}

impl QuadraticPenalty {
    /// An empty penalty with the given multiplier.
    pub fn new(scale: f32) -> Self {
        QuadraticPenalty {
            scale,
            ..Default::default()
        }
    }

    /// Whether no term has been added.
    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
    }

    /// Adds the term `Σ Ω (θ − θ*)²` (offline EWC: one term per task).
    pub fn add_term(&mut self, importance: &[Vec<f32>], anchor: &[Vec<f32>]) {
        if self.a.is_empty() {
            self.a = importance.iter().map(|v| vec![0.0; v.len()]).collect();
            self.b = self.a.clone();
        }
        for (((a, b), w), t) in self
            .a
            .iter_mut()
            .zip(&mut self.b)
            .zip(importance)
            .zip(anchor)
        {
            for (((a, b), &w), &t) in a.iter_mut().zip(b.iter_mut()).zip(w).zip(t) {
                *a += w;
                *b += w * t;
                self.c += (w as f64) * (t as f64) * (t as f64);
            }
        }
    }

    /// Replaces every term by the single term `Σ Ω (θ − θ*)²` (online EWC, SI, MAS).
    pub fn set_term(&mut self, importance: &[Vec<f32>], anchor: &[Vec<f32>]) {
        self.a.clear();
        self.c = 0.0;
        self.add_term(importance, anchor);
    }

    /// Whether the penalty adds anything to a gradient.
    fn acts(&self) -> bool {
        !self.is_empty() && self.scale != 0.0
    }

    /// Adds the penalty's gradient to the gradients of the parameters marked in `touched`.
    pub fn add_gradient(&self, params: &[Vec<f32>], grads: &mut [Vec<f32>], touched: &[bool]) {
        if !self.acts() {
            return;
        }
        let s = 2.0 * self.scale;
        for i in (0..params.len()).filter(|&i| touched[i]) {
            let (a, b) = (&self.a[i], &self.b[i]);
            elementwise(
                grads[i].as_mut_slice(),
                [&params[i], a, b],
                |g, [p, a, b]| {
                    *g += s * (a * p - b);
                },
            );
        }
    }

    /// The penalty's gradient as a [`Pull`] for the optimizer's own pass (`None` while it adds
    /// nothing): what [`QuadraticPenalty::add_gradient`] adds, `2 · scale · (A θ − B)`.
    pub fn pull(&self) -> Option<Pull<'_>> {
        self.acts().then(|| Pull {
            s: 2.0 * self.scale,
            a: &self.a,
            b: &self.b,
            path: None,
        })
    }

    /// As [`QuadraticPenalty::add_gradient`] for parameter `i`, in the same pass copying its
    /// gradient into `copy` (SI's path integral uses it): with the penalty (`total`) or before
    /// it.
    fn add_gradient_copying(
        &self,
        i: usize,
        params: &[f32],
        grads: &mut [f32],
        copy: &mut [f32],
        total: bool,
    ) {
        if !self.acts() {
            copy.copy_from_slice(grads);
            return;
        }
        let s = 2.0 * self.scale;
        let (a, b) = (&self.a[i], &self.b[i]);
        if total {
            elementwise2(grads, copy, [params, a, b], |g, c, [p, a, b]| {
                *g += s * (a * p - b);
                *c = *g;
            });
        } else {
            elementwise2(grads, copy, [params, a, b], |g, c, [p, a, b]| {
                *c = *g;
                *g += s * (a * p - b);
            });
        }
    }

    /// The penalty's value at `params`.
    pub fn value(&self, params: &[Vec<f32>]) -> f64 {
        let mut v = self.c;
        for ((p, a), b) in params.iter().zip(&self.a).zip(&self.b) {
            for ((&p, &a), &b) in p.iter().zip(a).zip(b) {
                let p = p as f64;
                v += a as f64 * p * p - 2.0 * b as f64 * p;
            }
        }
        self.scale as f64 * v
    }
}

/// Elements per parallel chunk of the per-parameter passes (as the optimizer's).
const CHUNK: usize = 1 << 15;

/// `f(out[j], [in_0[j], in_1[j], in_2[j]])` for every element, in parallel chunks on the
/// current rayon pool for large parameters (elementwise: the result does not depend on the
/// split).
fn elementwise<F>(out: &mut [f32], inputs: [&[f32]; 3], f: F)
where
    F: Fn(&mut f32, [f32; 3]) + Sync,
{
    let run = |out: &mut [f32], start: usize| {
        let [x, y, z] = inputs.map(|v| &v[start..start + out.len()]);
        for (((o, &x), &y), &z) in out.iter_mut().zip(x).zip(y).zip(z) {
            f(o, [x, y, z]);
        }
    };
    if out.len() < 2 * CHUNK || rayon::current_num_threads() < 2 {
        run(out, 0);
    } else {
        use rayon::prelude::*;
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, out)| run(out, c * CHUNK));
    }
}

/// As [`elementwise`] with two outputs.
fn elementwise2<F>(out: &mut [f32], out2: &mut [f32], inputs: [&[f32]; 3], f: F)
where
    F: Fn(&mut f32, &mut f32, [f32; 3]) + Sync,
{
    let run = |out: &mut [f32], out2: &mut [f32], start: usize| {
        let [x, y, z] = inputs.map(|v| &v[start..start + out.len()]);
        for ((((o, o2), &x), &y), &z) in out.iter_mut().zip(out2.iter_mut()).zip(x).zip(y).zip(z) {
            f(o, o2, [x, y, z]);
        }
    };
    if out.len() < 2 * CHUNK || rayon::current_num_threads() < 2 {
        run(out, out2, 0);
    } else {
        use rayon::prelude::*;
        out.par_chunks_mut(CHUNK)
            .zip(out2.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(c, (out, out2))| run(out, out2, c * CHUNK));
    }
}

/// How a parameter's importance is estimated from a task's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Importance {
    /// The diagonal Fisher information (EWC).
    Fisher(FisherKind),
    /// `E |∂ ‖f(x)‖² / ∂θ|`, the sensitivity of the squared norm of the logits (MAS).
    OutputSensitivity,
}

/// Estimates the importance of every parameter from per-example gradients on training examples
/// of `task` (all of them, or `samples` drawn without replacement from the run's seed),
/// averaged over the examples. Gradients are plain backprop: GRAPES modulates learning, not
/// the model's likelihood.
pub fn estimate(
    ctx: &mut Context,
    task: usize,
    kind: Importance,
    samples: Option<usize>,
) -> Result<Vec<Vec<f32>>> {
    let t = &ctx.stream.tasks[task];
    let mut examples = t.train.clone();
    if let Some(n) = samples.filter(|&n| n < examples.len()) {
        SeedRng::derive(ctx.seed, "importance-samples", task as u64).shuffle(&mut examples);
        examples.truncate(n);
    }
    let mut total: Vec<Vec<f32>> = ctx
        .engine
        .params()
        .iter()
        .map(|p| vec![0.0; p.len()])
        .collect();
    let k = ctx.stream.outputs.head_size(t.head);
    let range = t.output_range.clone().unwrap_or(0..k);
    let mut batch = Batch::default();
    let mut add = |ctx: &mut Context, weight: f32, square: bool| {
        let (grads, touched) = ctx.engine.grads_mut();
        for ((tot, g), _) in total
            .iter_mut()
            .zip(grads.iter())
            .zip(touched.iter())
            .filter(|(_, &t)| t)
        {
            if square {
                tot.iter_mut()
                    .zip(g)
                    .for_each(|(s, g)| *s += weight * g * g);
            } else {
                tot.iter_mut()
                    .zip(g)
                    .for_each(|(s, g)| *s += weight * g.abs());
            }
        }
    };
    for &i in &examples {
        ctx.stream.train_batch(task, &[i], &mut batch);
        fn part<'a>(pixels: &'a [f32], targets: Targets<'a>, t: &Task) -> Part<'a> {
            Part {
                pixels,
                targets,
                head: t.head,
                range: t.output_range.clone(),
                weight: 1.0,
            }
        }
        match kind {
            Importance::OutputSensitivity => {
                ctx.engine.zero_grad();
                ctx.engine.accumulate(
                    &part(&batch.pixels, Targets::SquaredNorm, t),
                    GrapesMode::Off,
                )?;
                add(ctx, 1.0, false);
            }
            Importance::Fisher(fisher) => {
                let labels: Vec<(u32, f32)> = match fisher {
                    FisherKind::Empirical => vec![(batch.targets[0], 1.0)],
                    FisherKind::Exact | FisherKind::Predicted => {
                        let z = ctx.engine.logits(None, &batch.pixels, t.head)?;
                        let p = softmax_rows(&z, k, &range, 1.0);
                        if fisher == FisherKind::Exact {
                            range
                                .clone()
                                .filter(|&c| p[c] > 0.0)
                                .map(|c| (c as u32, p[c]))
                                .collect()
                        } else {
                            let best = range
                                .clone()
                                .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                                .unwrap_or(0);
                            vec![(best as u32, 1.0)]
                        }
                    }
                };
                for (label, weight) in labels {
                    ctx.engine.zero_grad();
                    let label = [label];
                    ctx.engine.accumulate(
                        &part(&batch.pixels, Targets::Hard(&label), t),
                        GrapesMode::Off,
                    )?;
                    add(ctx, weight, true);
                }
            }
        }
    }
    let n = examples.len().max(1) as f32;
    for v in &mut total {
        v.iter_mut().for_each(|x| *x /= n);
    }
    ctx.engine.zero_grad();
    Ok(total)
}

/// Logs (at debug level, `-v`) the sum and the largest value of a task's new importance
/// estimate per parameter tensor, in the order of the network's parameters: what to compare
/// with another implementation's estimate.
fn log_importance(what: &str, task: usize, importance: &[Vec<f32>]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    for (param, v) in importance.iter().enumerate() {
        let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
        let max = v.iter().copied().fold(0.0f32, f32::max);
        tracing::debug!(what, task = task + 1, param, sum, max, "importance");
    }
}

/// Synaptic intelligence's running path integral within a task.
///
/// Where the penalty acts (every task after the first), the optimizer accumulates ω in its own
/// pass ([`crate::optim::Pull::path`]); otherwise the gradient is copied in
/// [`Strategy::regularize`] and ω accumulated by a pass of its own in
/// [`Strategy::after_update`], which keeps `before` current. Both compute
/// `ω −= g · (θ_new − θ_old)` from the same values.
#[derive(Debug, Clone, Default)]
struct PathIntegral {
    /// Parameters at the start of the task.
    start: Vec<Vec<f32>>,
    /// `ω = −Σ g Δθ` so far in this task.
    omega: Vec<Vec<f32>>,
    /// The gradient of the last step (before the penalty or with it), and the parameters
    /// before its update: the separate pass's inputs.
    grads: Vec<Vec<f32>>,
    before: Vec<Vec<f32>>,
    /// The last update accumulated ω in the optimizer's pass (the separate pass is skipped).
    fused: bool,
    /// `before` was not kept current by the last updates (they were fused): refreshed before
    /// the separate pass is needed again.
    before_stale: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    Ewc {
        fisher: FisherKind,
        samples: Option<usize>,
        /// `Some(γ)`: online EWC.
        gamma: Option<f64>,
    },
    Si {
        xi: f64,
        gradient: SiGradient,
        path: PathIntegral,
    },
    Mas {
        samples: Option<usize>,
    },
    L2,
}

/// EWC, online EWC, SI, MAS or L2: a [`QuadraticPenalty`] plus its importance estimate.
#[derive(Debug, Clone)]
pub struct Penalized {
    kind: Kind,
    penalty: QuadraticPenalty,
    /// The running importance of the online forms.
    running: Vec<Vec<f32>>,
}

impl Penalized {
    /// EWC with strength λ (`λ/2 Σ F (θ − θ*)²`); with `gamma`, online EWC.
    pub fn ewc(
        lambda: f64,
        fisher: FisherKind,
        samples: Option<usize>,
        gamma: Option<f64>,
    ) -> Self {
        Self::with(
            Kind::Ewc {
                fisher,
                samples,
                gamma,
            },
            lambda / 2.0,
        )
    }

    /// SI with strength c and damping ξ (`c Σ Ω (θ − θ*)²`), its path integral on `gradient`.
    pub fn si(c: f64, xi: f64, gradient: SiGradient) -> Self {
        Self::with(
            Kind::Si {
                xi,
                gradient,
                path: PathIntegral::default(),
            },
            c,
        )
    }

    /// MAS with strength λ (`λ Σ Ω (θ − θ*)²`).
    pub fn mas(lambda: f64, samples: Option<usize>) -> Self {
        Self::with(Kind::Mas { samples }, lambda)
    }

    /// L2 towards the last task's weights with strength λ (`λ/2 Σ (θ − θ*)²`, one term:
    /// Hsu et al. 2018's `L2` agent, whose `reg_coef · Σ (θ − θ*)²` is λ = 2 · reg_coef).
    pub fn l2(lambda: f64) -> Self {
        Self::with(Kind::L2, lambda / 2.0)
    }

    fn with(kind: Kind, scale: f64) -> Self {
        Penalized {
            kind,
            penalty: QuadraticPenalty::new(scale as f32),
            running: Vec::new(),
        }
    }

    /// The penalty (for inspection and tests).
    pub fn penalty(&self) -> &QuadraticPenalty {
        &self.penalty
    }

    /// Online forms: `Ω ← decay · Ω + importance`.
    fn accumulate_running(&mut self, importance: Vec<Vec<f32>>, decay: f32) {
        if self.running.is_empty() {
            self.running = importance;
            return;
        }
        for (r, v) in self.running.iter_mut().zip(importance) {
            r.iter_mut().zip(v).for_each(|(r, v)| *r = decay * *r + v);
        }
    }
}

impl Strategy for Penalized {
    fn before_task(&mut self, ctx: &mut Context, _task: usize) -> Result<()> {
        if let Kind::Si { path, .. } = &mut self.kind {
            let p = ctx.engine.params();
            path.start = p.to_vec();
            path.omega = p.iter().map(|v| vec![0.0; v.len()]).collect();
            path.grads = path.omega.clone();
            path.before = p.to_vec();
            path.fused = false;
            path.before_stale = false;
        }
        Ok(())
    }

    /// While the penalty acts, its pull is all a step needs (SI's `after_update` then only
    /// marks its path integral as accumulated by the pull); before the first anchor, SI's
    /// `regularize` copies the gradients for its path integral, so the step keeps two passes.
    fn leaves_gradients_alone(&self, _task: usize) -> bool {
        self.penalty.acts()
    }

    /// The penalty in the optimizer's pass; for SI the same pass accumulates the path integral
    /// (on the gradient with the penalty for `gradient: total`, before it for `task-loss`).
    /// While the penalty adds nothing (SI's first task), SI keeps [`Strategy::regularize`],
    /// which copies the gradient for [`Strategy::after_update`]'s pass.
    fn pull(&mut self) -> Option<Pull<'_>> {
        let mut pull = self.penalty.pull()?;
        if let Kind::Si { path, gradient, .. } = &mut self.kind {
            path.fused = true;
            pull.path = Some((&mut path.omega, *gradient == SiGradient::Total));
        }
        Some(pull)
    }

    fn regularize(&mut self, params: &[Vec<f32>], grads: &mut [Vec<f32>], touched: &[bool]) {
        match &mut self.kind {
            // One pass per parameter: the gradient copied for the path integral, then the
            // penalty added.
            Kind::Si { path, gradient, .. } => {
                let total = *gradient == SiGradient::Total;
                if path.before_stale {
                    path.before.clone_from_slice(params);
                    path.before_stale = false;
                }
                for i in (0..params.len()).filter(|&i| touched[i]) {
                    self.penalty.add_gradient_copying(
                        i,
                        &params[i],
                        &mut grads[i],
                        &mut path.grads[i],
                        total,
                    );
                }
            }
            _ => self.penalty.add_gradient(params, grads, touched),
        }
    }

    fn after_update(&mut self, params: &[Vec<f32>], touched: &[bool]) {
        if let Kind::Si { path, .. } = &mut self.kind {
            if path.fused {
                // The optimizer's pass accumulated ω; `before` was left behind.
                path.fused = false;
                path.before_stale = true;
                return;
            }
            // ω −= g · (θ_new − θ_old), and θ_old ← θ_new for the next step, in one pass.
            for i in (0..params.len()).filter(|&i| touched[i]) {
                elementwise2(
                    &mut path.omega[i],
                    &mut path.before[i],
                    [&path.grads[i], &params[i], &params[i]],
                    |w, old, [g, new, _]| {
                        *w -= g * (new - *old);
                        *old = new;
                    },
                );
            }
        }
    }

    fn after_task(&mut self, ctx: &mut Context, task: usize) -> Result<()> {
        if self.penalty.scale == 0.0 {
            // Strength 0: the penalty never acts; skip the estimate.
            return Ok(());
        }
        let anchor = ctx.engine.params().to_vec();
        match &mut self.kind {
            Kind::Ewc {
                fisher,
                samples,
                gamma,
            } => {
                let (fisher, samples, gamma) = (*fisher, *samples, *gamma);
                let f = estimate(ctx, task, Importance::Fisher(fisher), samples)?;
                log_importance("fisher", task, &f);
                match gamma {
                    None => self.penalty.add_term(&f, &anchor),
                    Some(g) => {
                        self.accumulate_running(f, g as f32);
                        self.penalty.set_term(&self.running, &anchor);
                    }
                }
            }
            Kind::Si { xi, path, .. } => {
                let xi = *xi as f32;
                let importance: Vec<Vec<f32>> = path
                    .omega
                    .iter()
                    .zip(&path.start)
                    .zip(&anchor)
                    .map(|((w, s), e)| {
                        w.iter()
                            .zip(s)
                            .zip(e)
                            .map(|((&w, &s), &e)| w / ((e - s) * (e - s) + xi))
                            .collect()
                    })
                    .collect();
                log_importance("si", task, &importance);
                self.accumulate_running(importance, 1.0);
                self.penalty.set_term(&self.running, &anchor);
            }
            Kind::L2 => {
                let ones: Vec<Vec<f32>> = anchor.iter().map(|p| vec![1.0; p.len()]).collect();
                self.penalty.set_term(&ones, &anchor);
            }
            Kind::Mas { samples } => {
                let samples = *samples;
                let omega = estimate(ctx, task, Importance::OutputSensitivity, samples)?;
                log_importance("mas", task, &omega);
                self.accumulate_running(omega, 1.0);
                self.penalty.set_term(&self.running, &anchor);
            }
        }
        Ok(())
    }
}
