//! Learning without forgetting (Li & Hoiem 2017): while training task k, the current inputs are
//! also scored against the soft outputs a snapshot of the model (taken before task k) gives
//! them on the earlier tasks' outputs, with the distillation loss at temperature T.
//!
//! As in van de Ven, Tuytelaars & Tolias's reference implementation
//! (GMvandeVen/continual-learning, `train/train_task_based.py` and `models/classifier.py`):
//!
//! - the loss on a step of task k is `L_current + Σ_{j<k} L_j` (`weight: per-task`, the
//!   reference's `lwf_weighting`), with `L_j` the distillation term of earlier task j; in a
//!   class-incremental stream the earlier tasks share one softmax and form one term;
//! - `L_j = −Σ_c q_c log softmax(z/T)_c`, averaged over the batch, without Hinton et al.'s T²
//!   (`scale: none`; `t-squared` multiplies it by T²);
//! - the teacher's softmax q spans the outputs task j was scored on *before* task k, the
//!   student's those it is scored on *while* task k trains. They differ only in a
//!   class-incremental stream with the softmax over the classes seen so far: the teacher's
//!   spans the earlier classes, the student's also the current ones (q = 0 there, so the
//!   distillation also pulls the current classes' logits down, as the reference's zero padding
//!   of the targets does). Over the whole 10-way head (`class_output: all`) both span all
//!   outputs.

use std::ops::Range;

use candle_core::Result;

use super::{Context, LossWeight, Strategy};
use crate::engine::Objective;
use crate::models::loss::{softmax_rows, DistillScale, Targets};
use crate::streams::{Scenario, TaskStream};

/// The LwF strategy.
pub struct Lwf {
    temperature: f32,
    scale: DistillScale,
    weight: LossWeight,
    /// The parameters before the current task.
    previous: Vec<Vec<f32>>,
    /// The distillation terms of the current task and their weights.
    terms: Vec<(DistillationTerm, f32)>,
    /// The soft targets of the current step, one buffer per term (kept between steps).
    soft: Vec<Vec<f32>>,
}

impl Lwf {
    /// LwF at temperature `temperature`, its loss scaled by `scale` and weighted by `weight`.
    pub fn new(temperature: f32, scale: DistillScale, weight: LossWeight) -> Self {
        Lwf {
            temperature,
            scale,
            weight,
            previous: Vec::new(),
            terms: Vec::new(),
            soft: Vec::new(),
        }
    }
}

/// One distillation term: on head `head`, the teacher's softmax over `teacher`, the student's
/// over `student` (a superset of `teacher`), standing for `tasks` earlier tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistillationTerm {
    /// The output head.
    pub head: usize,
    /// The outputs the previous model's softmax (the soft targets) spans.
    pub teacher: Range<usize>,
    /// The outputs the current model's softmax spans.
    pub student: Range<usize>,
    /// How many earlier tasks the term stands for (its weight under `per-task`).
    pub tasks: usize,
}

/// The distillation terms of training the 0-based task `task` of `stream`: one per distinct
/// (head, teacher outputs, student outputs) of the earlier tasks, where task j's teacher
/// outputs are those it was scored on before task `task` (`stream.at_stage(task − 1)`) and its
/// student outputs those it is scored on at stage `task`. A class-incremental stream's earlier
/// tasks share one softmax: they form one term, standing for one task.
pub fn distillation_terms(stream: &TaskStream, task: usize) -> Vec<DistillationTerm> {
    if task == 0 {
        return Vec::new();
    }
    let before = stream.at_stage(task - 1);
    let now = stream.at_stage(task);
    let class_il = stream.spec.scenario == Scenario::ClassIncremental;
    let mut out: Vec<DistillationTerm> = Vec::new();
    for j in 0..task {
        let (b, n) = (&before.tasks[j], &now.tasks[j]);
        let whole = 0..stream.outputs.head_size(n.head);
        let term = DistillationTerm {
            head: n.head,
            teacher: b.output_range.clone().unwrap_or(whole.clone()),
            student: n.output_range.clone().unwrap_or(whole),
            tasks: 1,
        };
        match out
            .iter_mut()
            .find(|t| (t.head, &t.teacher, &t.student) == (term.head, &term.teacher, &term.student))
        {
            Some(t) if !class_il => t.tasks += 1,
            Some(_) => {}
            None => out.push(term),
        }
    }
    out
}

impl Strategy for Lwf {
    // Distillation is an objective on the current pixels; nothing touches the gradients.
    fn leaves_gradients_alone(&self, _task: usize) -> bool {
        true
    }

    fn data_weight(&self, task: usize) -> f32 {
        self.weight.weights(task).0
    }

    fn before_task(&mut self, ctx: &mut Context, task: usize) -> Result<()> {
        if task > 0 {
            self.previous = ctx.engine.params().to_vec();
            let terms = distillation_terms(ctx.stream, task);
            let counts: Vec<usize> = terms.iter().map(|t| t.tasks).collect();
            let weights = self.weight.term_weights(task, &counts);
            self.terms = terms.into_iter().zip(weights).collect();
        }
        Ok(())
    }

    /// The distillation terms on the current inputs: the teacher's soft targets (a forward
    /// pass of the frozen snapshot, read in place), scored in the same forward and backward
    /// pass of the student as the labels.
    fn objectives_on<'s>(
        &'s mut self,
        ctx: &mut Context,
        task: usize,
        pixels: &[f32],
        share: f32,
    ) -> Result<Vec<Objective<'s>>> {
        if task == 0 {
            return Ok(Vec::new());
        }
        self.soft.resize_with(self.terms.len(), Vec::new);
        for ((term, w), q) in self.terms.iter().zip(&mut self.soft) {
            if *w == 0.0 {
                continue;
            }
            let k = ctx.stream.outputs.head_size(term.head);
            let z = ctx.engine.logits(Some(&self.previous), pixels, term.head)?;
            *q = softmax_rows(&z, k, &term.teacher, self.temperature);
        }
        Ok(self
            .terms
            .iter()
            .zip(&self.soft)
            .filter(|((_, w), _)| *w != 0.0)
            .map(|((term, w), q)| Objective {
                targets: Targets::Soft {
                    probs: q,
                    temperature: self.temperature,
                    scale: self.scale,
                },
                head: term.head,
                range: Some(term.student.clone()),
                weight: w * share,
            })
            .collect())
    }
}
