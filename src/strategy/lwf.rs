//! Learning without forgetting (Li & Hoiem 2017): while training task k, the current inputs are
//! also scored against the soft outputs a snapshot of the model (taken before task k) gives
//! them on the earlier tasks' outputs, with the distillation loss at temperature T.

use std::ops::Range;

use candle_core::Result;

use super::{Context, LossWeight, StepData, Strategy};
use crate::engine::Part;
use crate::models::loss::{softmax_rows, Targets};
use crate::streams::Scenario;

/// The LwF strategy.
pub struct Lwf {
    temperature: f32,
    weight: LossWeight,
    /// The parameters before the current task.
    previous: Vec<Vec<f32>>,
    /// The (head, outputs) the earlier tasks were scored on.
    targets: Vec<(usize, Range<usize>)>,
}

impl Lwf {
    /// LwF at temperature `temperature`.
    pub fn new(temperature: f32, weight: LossWeight) -> Self {
        Lwf {
            temperature,
            weight,
            previous: Vec::new(),
            targets: Vec::new(),
        }
    }
}

/// The outputs tasks `0..task` were scored on: each masked task-incremental task's own range,
/// and on a shared head the span of the earlier tasks' targets (class-incremental: the classes
/// seen before `task`, whether or not the stream restricts its softmax to the classes seen so
/// far; domain-incremental: the whole head). One entry per distinct (head, range).
pub fn earlier_outputs(
    stream: &crate::streams::TaskStream,
    task: usize,
) -> Vec<(usize, Range<usize>)> {
    let mut out: Vec<(usize, Range<usize>)> = Vec::new();
    let mut spans: Vec<(usize, u32, u32)> = Vec::new();
    let task_masks = stream.spec.scenario == Scenario::TaskIncremental;
    for t in &stream.tasks[..task] {
        match &t.output_range {
            Some(r) if task_masks => out.push((t.head, r.clone())),
            _ => {
                let (lo, hi) = t.target_span();
                match spans.iter_mut().find(|s| s.0 == t.head) {
                    Some(s) => {
                        s.1 = s.1.min(lo);
                        s.2 = s.2.max(hi);
                    }
                    None => spans.push((t.head, lo, hi)),
                }
            }
        }
    }
    out.extend(
        spans
            .into_iter()
            .map(|(h, lo, hi)| (h, lo as usize..hi as usize + 1)),
    );
    out.sort_by_key(|(h, r)| (*h, r.start, r.end));
    out.dedup();
    out
}

impl Strategy for Lwf {
    fn data_weight(&self, task: usize) -> f32 {
        self.weight.weights(task).0
    }

    fn before_task(&mut self, ctx: &mut Context, task: usize) -> Result<()> {
        if task > 0 {
            self.previous = ctx.engine.params().to_vec();
            self.targets = earlier_outputs(ctx.stream, task);
        }
        Ok(())
    }

    fn extend_gradients(&mut self, ctx: &mut Context, task: usize, step: &StepData) -> Result<()> {
        let (_, w) = self.weight.weights(task);
        if task == 0 || w == 0.0 || self.targets.is_empty() {
            return Ok(());
        }
        let n = step.batch.len() as f32;
        let per_target = w / self.targets.len() as f32;
        for g in step.batch.groups() {
            let share = g.batch.len() as f32 / n;
            for (head, range) in &self.targets {
                let k = ctx.stream.outputs.head_size(*head);
                let z = ctx
                    .engine
                    .logits(Some(&self.previous), &g.batch.pixels, *head)?;
                let q = softmax_rows(&z, k, range, self.temperature);
                ctx.engine.accumulate(
                    &Part {
                        pixels: &g.batch.pixels,
                        targets: Targets::Soft {
                            probs: &q,
                            temperature: self.temperature,
                        },
                        head: *head,
                        range: Some(range.clone()),
                        weight: per_target * share,
                    },
                    ctx.grapes,
                )?;
            }
        }
        Ok(())
    }
}
