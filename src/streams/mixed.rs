//! Batches that mix examples of several tasks (joint training, replay, A-GEM's reference
//! gradient): examples are grouped by the output they are scored on, so that each group is one
//! forward pass through one head (and one softmax range).

use std::ops::Range;

use super::{Batch, TaskStream};
use crate::rng::SeedRng;

/// A training example of a stream: `(0-based task, index into the dataset's training split)`.
pub type Example = (usize, u32);

/// Examples that share a head and an output range.
#[derive(Debug, Clone, Default)]
pub struct BatchGroup {
    /// The output head.
    pub head: usize,
    /// The softmax range within the head (masked task-incremental), if any.
    pub range: Option<Range<usize>>,
    /// Pixels and targets.
    pub batch: Batch,
}

/// A batch split into [`BatchGroup`]s; buffers are reused between fills.
#[derive(Debug, Clone, Default)]
pub struct MixedBatch {
    groups: Vec<BatchGroup>,
    used: usize,
    scratch: Batch,
    indices: Vec<u32>,
}

impl MixedBatch {
    /// The groups of the last fill, in order of the first task of each.
    pub fn groups(&self) -> &[BatchGroup] {
        &self.groups[..self.used]
    }

    /// Total number of examples.
    pub fn len(&self) -> usize {
        self.groups().iter().map(|g| g.batch.len()).sum()
    }

    /// Whether the batch holds no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills with examples of a single task (one group).
    pub fn fill_task(&mut self, stream: &TaskStream, task: usize, indices: &[u32]) {
        self.used = 0;
        let g = self.group(stream, task);
        stream.train_batch(task, indices, &mut self.groups[g].batch);
    }

    /// Fills with `examples` of any tasks: examples of tasks with the same head and range share
    /// a group; within a group, examples keep their order by task, then by position.
    pub fn fill(&mut self, stream: &TaskStream, examples: &[Example]) {
        self.used = 0;
        let mut tasks: Vec<usize> = examples.iter().map(|e| e.0).collect();
        tasks.sort_unstable();
        tasks.dedup();
        for t in tasks {
            self.indices.clear();
            self.indices
                .extend(examples.iter().filter(|e| e.0 == t).map(|e| e.1));
            let g = self.group(stream, t);
            stream.train_batch(t, &self.indices, &mut self.scratch);
            let b = &mut self.groups[g].batch;
            b.pixels.extend_from_slice(&self.scratch.pixels);
            b.targets.extend_from_slice(&self.scratch.targets);
        }
    }

    /// The index of the (emptied, if new in this fill) group for `task`'s head and range.
    fn group(&mut self, stream: &TaskStream, task: usize) -> usize {
        let t = &stream.tasks[task];
        if let Some(i) = self.groups[..self.used]
            .iter()
            .position(|g| g.head == t.head && g.range == t.output_range)
        {
            return i;
        }
        if self.used == self.groups.len() {
            self.groups.push(BatchGroup::default());
        }
        let g = &mut self.groups[self.used];
        g.head = t.head;
        g.range.clone_from(&t.output_range);
        g.batch.pixels.clear();
        g.batch.targets.clear();
        self.used += 1;
        self.used - 1
    }
}

/// Batches over the union of several tasks' training examples, reshuffled every epoch from
/// `(seed, first task, epoch)` (joint training).
#[derive(Debug, Clone)]
pub struct MixedOrder {
    seed: u64,
    examples: Vec<Example>,
    order: Vec<Example>,
    batch_size: usize,
    epoch: u64,
    pos: usize,
    drop_last: bool,
    salt: u64,
}

impl MixedOrder {
    /// Batches of `batch_size` over the training examples of `tasks`; `drop_last` as in
    /// [`super::BatchOrder::new`].
    pub fn new(
        stream: &TaskStream,
        seed: u64,
        tasks: Range<usize>,
        batch_size: usize,
        drop_last: bool,
    ) -> Self {
        let salt = ((tasks.start as u64) << 16) | tasks.end as u64;
        let examples: Vec<Example> = tasks
            .flat_map(|t| stream.tasks[t].train.iter().map(move |&i| (t, i)))
            .collect();
        let mut s = MixedOrder {
            seed,
            drop_last: drop_last && examples.len() >= batch_size,
            examples,
            order: Vec::new(),
            batch_size: batch_size.max(1),
            epoch: 0,
            pos: 0,
            salt,
        };
        s.reshuffle();
        s
    }

    fn reshuffle(&mut self) {
        self.order.clone_from(&self.examples);
        SeedRng::derive(self.seed, "joint-order", (self.salt << 32) | self.epoch)
            .shuffle(&mut self.order);
        self.pos = 0;
    }

    /// Number of batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        if self.drop_last {
            self.examples.len() / self.batch_size
        } else {
            self.examples.len().div_ceil(self.batch_size)
        }
    }

    /// The next batch; a new epoch starts (reshuffled) when one is used up.
    pub fn next_batch(&mut self) -> &[Example] {
        let remaining = self.order.len() - self.pos;
        if remaining == 0 || (self.drop_last && remaining < self.batch_size) {
            self.epoch += 1;
            self.reshuffle();
        }
        let end = (self.pos + self.batch_size).min(self.order.len());
        let start = self.pos;
        self.pos = end;
        &self.order[start..end]
    }
}
