//! An episodic memory of training examples, filled by reservoir sampling, and the two
//! strategies that use it: experience replay and A-GEM.

use std::collections::BTreeMap;

use candle_core::Result;

use super::{BudgetUnit, Context, LossWeight, StepData, Strategy};
use crate::engine::Part;
use crate::models::loss::Targets;
use crate::rng::SeedRng;
use crate::streams::{Example, MixedBatch, TaskStream};

/// A uniform sample of the examples seen so far, within a budget: one reservoir over
/// everything (`total`) or one per class of every task (`class`: class-balanced). Every
/// distinct example enters a reservoir once, however often it is trained on.
#[derive(Debug, Clone)]
pub struct Memory {
    budget: usize,
    per: BudgetUnit,
    /// Reservoirs by (task, target); the `total` memory has the single key (0, 0).
    slots: BTreeMap<(usize, u32), Reservoir>,
    /// Examples of the current task already offered.
    offered: Vec<bool>,
    offered_task: Option<usize>,
    rng: Option<SeedRng>,
}

#[derive(Debug, Clone, Default)]
struct Reservoir {
    items: Vec<Example>,
    seen: u64,
}

impl Memory {
    /// An empty memory of `budget` examples per class or in total.
    pub fn new(budget: usize, per: BudgetUnit) -> Self {
        Memory {
            budget,
            per,
            slots: BTreeMap::new(),
            offered: Vec::new(),
            offered_task: None,
            rng: None,
        }
    }

    /// Offers the examples of a step; `seed` keys the memory's random stream.
    pub fn observe(&mut self, stream: &TaskStream, seed: u64, examples: &[Example]) {
        let rng = self
            .rng
            .get_or_insert_with(|| SeedRng::derive(seed, "memory", 0));
        for &(task, i) in examples {
            if self.offered_task != Some(task) {
                self.offered_task = Some(task);
                self.offered = vec![false; stream.dataset.train.labels.len()];
            }
            if std::mem::replace(&mut self.offered[i as usize], true) {
                continue;
            }
            let key = match self.per {
                BudgetUnit::Total => (0, 0),
                BudgetUnit::Class => {
                    let label = stream.dataset.train.labels[i as usize];
                    let target = stream.tasks[task].target_of[label as usize]
                        .expect("training examples belong to their task's classes");
                    (task, target)
                }
            };
            let r = self.slots.entry(key).or_default();
            r.seen += 1;
            if r.items.len() < self.budget {
                r.items.push((task, i));
            } else {
                let j = rng.below(r.seen) as usize;
                if j < self.budget {
                    r.items[j] = (task, i);
                }
            }
        }
    }

    /// Every stored example, in a fixed order.
    pub fn examples(&self) -> Vec<Example> {
        self.slots.values().flat_map(|r| r.items.clone()).collect()
    }

    /// Number of stored examples per (task, target) key (`total`: one key).
    pub fn counts(&self) -> Vec<((usize, u32), usize)> {
        self.slots
            .iter()
            .map(|(k, r)| (*k, r.items.len()))
            .collect()
    }

    /// Up to `n` stored examples of tasks before `task`, drawn without replacement.
    pub fn sample_before(&mut self, task: usize, n: usize, seed: u64) -> Vec<Example> {
        let mut pool: Vec<Example> = self
            .slots
            .values()
            .flat_map(|r| r.items.iter().copied().filter(|e| e.0 < task))
            .collect();
        let rng = self
            .rng
            .get_or_insert_with(|| SeedRng::derive(seed, "memory", 0));
        if pool.len() > n {
            // Partial Fisher–Yates: the first n positions are a uniform sample.
            for k in 0..n {
                let j = k + rng.below((pool.len() - k) as u64) as usize;
                pool.swap(k, j);
            }
            pool.truncate(n);
        }
        pool
    }
}

/// Adds `weight × mean loss` of a mixed batch to the gradients (each group weighted by its
/// share of the examples); returns the mean loss.
pub fn accumulate_mixed(ctx: &mut Context, batch: &MixedBatch, weight: f32) -> Result<f32> {
    let n = batch.len() as f32;
    let mut loss = 0.0;
    for g in batch.groups() {
        let share = g.batch.len() as f32 / n;
        loss += share
            * ctx.engine.accumulate(
                &Part {
                    pixels: &g.batch.pixels,
                    targets: Targets::Hard(&g.batch.targets),
                    head: g.head,
                    range: g.range.clone(),
                    weight: weight * share,
                },
                ctx.grapes,
            )?;
    }
    Ok(loss)
}

/// Experience replay: every step adds the loss on a batch drawn from the memory of earlier
/// tasks (each replayed example scored on its own task's head and outputs).
pub struct Replay {
    memory: Memory,
    batch_size: usize,
    weight: LossWeight,
    replayed: MixedBatch,
}

impl Replay {
    /// Replay of `batch_size` examples per step from `memory`.
    pub fn new(memory: Memory, batch_size: usize, weight: LossWeight) -> Self {
        Replay {
            memory,
            batch_size,
            weight,
            replayed: MixedBatch::default(),
        }
    }

    /// The memory.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }
}

impl Strategy for Replay {
    fn data_weight(&self, task: usize) -> f32 {
        self.weight.weights(task).0
    }

    fn extend_gradients(&mut self, ctx: &mut Context, task: usize, step: &StepData) -> Result<()> {
        let (_, w) = self.weight.weights(task);
        if task > 0 && w != 0.0 {
            let examples = self.memory.sample_before(task, self.batch_size, ctx.seed);
            if !examples.is_empty() {
                self.replayed.fill(ctx.stream, &examples);
                accumulate_mixed(ctx, &self.replayed, w)?;
            }
        }
        self.memory.observe(ctx.stream, ctx.seed, step.examples);
        Ok(())
    }
}

/// The step's gradient set aside while a strategy computes other gradients in the engine's
/// buffers (A-GEM's reference gradient, GEM's memory gradients), then put back.
#[derive(Debug, Clone, Default)]
pub struct SetAside {
    /// The gradients, in the engine's parameter order.
    pub grads: Vec<Vec<f32>>,
    /// Which parameters have one.
    pub touched: Vec<bool>,
}

impl SetAside {
    /// Moves the engine's current gradients and flags aside, leaving the engine buffers of the
    /// same sizes (whose contents are stale: the caller zeroes the flags before using them).
    /// The buffers are swapped, not copied.
    pub fn take(&mut self, engine: &mut dyn crate::engine::Engine) {
        let (g, t) = engine.grads_mut();
        self.grads.resize(g.len(), Vec::new());
        for (kept, live) in self.grads.iter_mut().zip(g.iter_mut()) {
            if kept.len() != live.len() {
                *kept = vec![0.0; live.len()];
            }
            std::mem::swap(kept, live);
        }
        self.touched.clear();
        self.touched.extend_from_slice(t);
    }

    /// Puts the gradients and flags back into the engine (swapping the buffers again).
    pub fn restore(&mut self, engine: &mut dyn crate::engine::Engine) {
        let (g, t) = engine.grads_mut();
        for (live, kept) in g.iter_mut().zip(self.grads.iter_mut()) {
            std::mem::swap(live, kept);
        }
        t.copy_from_slice(&self.touched);
    }
}

/// A-GEM: when the step's gradient g points against the gradient g_ref of a memory batch
/// (`g·g_ref < 0`), it is replaced by its projection `g − (g·g_ref / g_ref·g_ref) g_ref`, whose
/// dot product with g_ref is zero.
pub struct Agem {
    memory: Memory,
    batch_size: usize,
    reference: MixedBatch,
    current: SetAside,
    /// Steps whose gradient was projected, and steps with a reference gradient.
    pub projected: (usize, usize),
}

impl Agem {
    /// A-GEM with reference batches of `batch_size` examples from `memory`.
    pub fn new(memory: Memory, batch_size: usize) -> Self {
        Agem {
            memory,
            batch_size,
            reference: MixedBatch::default(),
            current: SetAside::default(),
            projected: (0, 0),
        }
    }
}

/// Projects `g` (with its `touched` flags) against `r`: returns whether it projected.
/// Parameters without a gradient count as zero.
pub fn project(
    g: &mut [Vec<f32>],
    g_touched: &mut [bool],
    r: &[Vec<f32>],
    r_touched: &[bool],
) -> bool {
    let (dot, norm) = dot_and_norm(g, g_touched, r, r_touched);
    if dot >= 0.0 || norm == 0.0 {
        return false;
    }
    let c = (dot / norm) as f32;
    for i in (0..g.len()).filter(|&i| r_touched[i]) {
        if !g_touched[i] {
            g[i].fill(0.0);
            g_touched[i] = true;
        }
        g[i].iter_mut().zip(&r[i]).for_each(|(a, &b)| *a -= c * b);
    }
    true
}

/// `(g·r, r·r)` in f64, parameters without a gradient counting as zero: two serial chains,
/// element after element in parameter order, whose order fixes the bits of every projected step
/// (so neither is split into partial sums). They are independent, so they run side by side: on
/// two threads where the pool has them, otherwise interleaved in one loop, where each chain's
/// additions fill the other's latency (the same sums, in the same order, as two loops).
pub fn dot_and_norm(
    g: &[Vec<f32>],
    g_touched: &[bool],
    r: &[Vec<f32>],
    r_touched: &[bool],
) -> (f64, f64) {
    if rayon::current_num_threads() > 1 {
        return rayon::join(
            || serial_dot(g, r, |i| r_touched[i] && g_touched[i]),
            || serial_dot(r, r, |i| r_touched[i]),
        );
    }
    let (mut dot, mut norm) = (0.0f64, 0.0f64);
    for i in (0..r.len()).filter(|&i| r_touched[i]) {
        if g_touched[i] {
            debug_assert_eq!(
                g[i].len(),
                r[i].len(),
                "parameter {i}: gradient sizes differ"
            );
            for (&x, &y) in g[i].iter().zip(&r[i]) {
                dot += x as f64 * y as f64;
                norm += y as f64 * y as f64;
            }
        } else {
            for &y in &r[i] {
                norm += y as f64 * y as f64;
            }
        }
    }
    (dot, norm)
}

/// `Σ a·b` in f64 over the parameters `i` with `which(i)`, element after element in parameter
/// order: one serial chain.
fn serial_dot(a: &[Vec<f32>], b: &[Vec<f32>], which: impl Fn(usize) -> bool) -> f64 {
    let mut sum = 0.0f64;
    for i in (0..a.len()).filter(|&i| which(i)) {
        for (&x, &y) in a[i].iter().zip(&b[i]) {
            sum += x as f64 * y as f64;
        }
    }
    sum
}

impl Strategy for Agem {
    fn extend_gradients(&mut self, ctx: &mut Context, task: usize, step: &StepData) -> Result<()> {
        if task > 0 {
            let examples = self.memory.sample_before(task, self.batch_size, ctx.seed);
            if !examples.is_empty() {
                // Set the step's gradient aside, compute the reference gradient in its place.
                self.current.take(ctx.engine);
                ctx.engine.zero_grad();
                self.reference.fill(ctx.stream, &examples);
                accumulate_mixed(ctx, &self.reference, 1.0)?;
                let (r, r_touched) = ctx.engine.grads_mut();
                self.projected.1 += 1;
                let current = &mut self.current;
                if project(&mut current.grads, &mut current.touched, r, r_touched) {
                    self.projected.0 += 1;
                }
                // The (projected) step gradient goes back in place of the reference.
                self.current.restore(ctx.engine);
            }
        }
        self.memory.observe(ctx.stream, ctx.seed, step.examples);
        Ok(())
    }

    /// How often the constraint bound so far (`-v` shows it): a diagnostic only, no record
    /// holds it.
    fn after_task(&mut self, _ctx: &mut Context, task: usize) -> Result<()> {
        let (projected, checked) = self.projected;
        tracing::debug!(
            task = task + 1,
            projected,
            checked,
            "A-GEM: steps projected so far, of those with a reference gradient"
        );
        Ok(())
    }
}
