//! The task-sequence engine: turns a stream file and a seed into an ordered list of tasks.
//!
//! A [`TaskStream`] holds the dataset once and, per task, the indices of its examples, its
//! transform, its label mapping and where its outputs live (see [`OutputLayout`]). Batches are
//! materialised on demand as `f32` pixels and `u32` targets.

pub mod mixed;
pub mod spec;
pub mod transform;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use crate::data::{self, DataError, Dataset, Split, IMAGE_SIDE};
use crate::rng::SeedRng;

pub use mixed::{BatchGroup, Example, MixedBatch, MixedOrder};
pub use spec::{
    AngleRange, AngleSteps, Angles, ClassOutput, Normalize, NormalizeStats, Scenario, StreamFile,
    StreamKind, StreamSpec, TaskOutput,
};
pub use transform::Transform;

/// What can be wrong with a stream.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The file is not valid YAML for a stream, or has unknown keys.
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A key has a value that cannot be used.
    #[error("{}: key `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// The dataset is missing or damaged.
    #[error("{}: {source}", path.display())]
    Data {
        path: PathBuf,
        #[source]
        source: DataError,
    },
}

impl crate::error::InputError for StreamError {
    /// Whether the error comes from the user's input (always, except a failing disk read).
    fn is_input_error(&self) -> bool {
        match self {
            StreamError::Data { source, .. } => crate::error::InputError::is_input_error(source),
            _ => true,
        }
    }
}

/// Where the model's outputs for the tasks live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputLayout {
    /// One output layer of this many units, shared by all tasks.
    Shared { outputs: usize },
    /// One head per task, of these sizes.
    MultiHead { sizes: Vec<usize> },
}

impl OutputLayout {
    /// Number of output heads.
    pub fn heads(&self) -> usize {
        match self {
            OutputLayout::Shared { .. } => 1,
            OutputLayout::MultiHead { sizes } => sizes.len(),
        }
    }

    /// Units of head `h`.
    pub fn head_size(&self, h: usize) -> usize {
        match self {
            OutputLayout::Shared { outputs } => *outputs,
            OutputLayout::MultiHead { sizes } => sizes[h],
        }
    }
}

/// One task of a stream.
#[derive(Debug, Clone)]
pub struct Task {
    /// 0-based position in the stream (displayed 1-based).
    pub index: usize,
    /// The original dataset labels of this task, in target order.
    pub classes: Vec<u8>,
    /// Target index of every dataset label (`None` for labels not in this task).
    pub target_of: [Option<u32>; 256],
    /// The transform applied to every image.
    pub transform: Transform,
    /// Indices of the training examples in the dataset's training split.
    pub train: Vec<u32>,
    /// Indices of the test examples in the dataset's test split.
    pub test: Vec<u32>,
    /// Which output head the task uses.
    pub head: usize,
    /// The range of output units this task is scored on, when not the whole head: the task's own
    /// classes (masked task-incremental), or in a stream seen at a stage
    /// ([`TaskStream::at_stage`]) with `class_output: seen-so-far`, the classes seen so far.
    pub output_range: Option<std::ops::Range<usize>>,
}

impl Task {
    /// The (first, last) target indices this task maps to, for display.
    pub fn target_span(&self) -> (u32, u32) {
        let t: Vec<u32> = self
            .classes
            .iter()
            .filter_map(|&c| self.target_of[c as usize])
            .collect();
        (
            t.iter().copied().min().unwrap_or(0),
            t.iter().copied().max().unwrap_or(0),
        )
    }
}

/// A batch of examples ready for a model.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// `len × image pixels` pixels (28×28 per image, or the padded side squared), scaled as the
    /// stream says.
    pub pixels: Vec<f32>,
    /// One target index per example (in the task's output head).
    pub targets: Vec<u32>,
}

impl Batch {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// A sequence of tasks over one dataset.
#[derive(Debug, Clone)]
pub struct TaskStream {
    /// Display name.
    pub name: String,
    /// The spec it was built from.
    pub spec: StreamSpec,
    /// The seed that drove its randomness.
    pub seed: u64,
    /// The dataset, shared.
    pub dataset: Arc<Dataset>,
    /// The tasks, in training order.
    pub tasks: Vec<Task>,
    /// Where outputs live.
    pub outputs: OutputLayout,
    /// Pixel value = byte * scale + shift.
    pub pixel_scale_shift: (f32, f32),
}

impl TaskStream {
    /// Builds the stream of `file` under `seed` (ignored if the file pins `seed:`), loading its
    /// dataset (once per process).
    pub fn build(file: &StreamFile, seed: u64) -> Result<TaskStream, StreamError> {
        let dataset = data::load(&file.spec.dataset).map_err(|source| StreamError::Data {
            path: file.path.clone(),
            source,
        })?;
        Self::build_with(file, seed, dataset)
    }

    /// Builds the stream on an already loaded dataset.
    pub fn build_with(
        file: &StreamFile,
        seed: u64,
        dataset: Arc<Dataset>,
    ) -> Result<TaskStream, StreamError> {
        let spec = &file.spec;
        let seed = spec.seed.unwrap_or(seed);
        let dataset = match spec.validation {
            Some(fraction) => Arc::new(dataset.validation_split(fraction)),
            None => dataset,
        };
        let defs = task_definitions(file, seed, &dataset)?;
        let outputs = output_layout(spec, &defs);
        let tasks = assign_targets(spec, &outputs, defs, &dataset);
        let name = spec.name.clone().unwrap_or_else(|| {
            file.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "stream".into())
        });
        let own = data::dataset_info(&spec.dataset)
            .map(|i| i.pixel_mean_std)
            .unwrap_or((0.0, 1.0));
        let pixel_scale_shift = match spec.normalize.and_then(|n| n.mean_std(own)) {
            Some((mean, std)) => (1.0 / (255.0 * std), -mean / std),
            None => (1.0 / 255.0, 0.0),
        };
        Ok(TaskStream {
            pixel_scale_shift,
            name,
            spec: spec.clone(),
            seed,
            dataset,
            tasks,
            outputs,
        })
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Pixels of zeros added on every side of each image (the spec's `pad`, default 0).
    pub fn pad(&self) -> usize {
        self.spec.pad.unwrap_or(0)
    }

    /// Side of the square images the model sees: 28 + 2·[`TaskStream::pad`].
    pub fn image_side(&self) -> usize {
        IMAGE_SIDE + 2 * self.pad()
    }

    /// Pixels of one image the model sees (`image_side²`).
    pub fn image_pixels(&self) -> usize {
        self.image_side() * self.image_side()
    }

    /// Whether the stream has no tasks (never true for a built stream).
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The stream as the learner sees it at `stage` (0-based: the task being learned, or just
    /// learned before an evaluation). Only a class-incremental stream with
    /// `class_output: seen-so-far` differs: every task is scored over the classes of tasks
    /// `0..=max(stage, task)`, i.e. the classes seen so far, and a task not yet learned over the
    /// classes up to its own. Otherwise the stream itself.
    pub fn at_stage(&self, stage: usize) -> Cow<'_, TaskStream> {
        if self.spec.scenario != Scenario::ClassIncremental
            || self.spec.class_output.unwrap_or_default() != ClassOutput::SeenSoFar
        {
            return Cow::Borrowed(self);
        }
        let mut ends = Vec::with_capacity(self.tasks.len());
        let mut end = 0;
        for t in &self.tasks {
            end += t.classes.len();
            ends.push(end);
        }
        let mut view = self.clone();
        for (j, t) in view.tasks.iter_mut().enumerate() {
            t.output_range = Some(0..ends[j.max(stage).min(ends.len() - 1)]);
        }
        Cow::Owned(view)
    }

    /// Fills `batch` with the training examples `indices` (positions in the training split) of
    /// task `task`.
    pub fn train_batch(&self, task: usize, indices: &[u32], batch: &mut Batch) {
        fill(
            &self.tasks[task],
            &self.dataset.train,
            indices,
            self.pixel_scale_shift,
            self.pad(),
            batch,
        );
    }

    /// Fills `batch` with the test examples `indices` of task `task`.
    pub fn test_batch(&self, task: usize, indices: &[u32], batch: &mut Batch) {
        fill(
            &self.tasks[task],
            &self.dataset.test,
            indices,
            self.pixel_scale_shift,
            self.pad(),
            batch,
        );
    }

    /// One line per task, for `clbench tasks describe`.
    pub fn describe(&self) -> Vec<String> {
        self.tasks
            .iter()
            .map(|t| {
                let (lo, hi) = t.target_span();
                let head = match &self.outputs {
                    OutputLayout::MultiHead { .. } => format!("head {}", t.head + 1),
                    OutputLayout::Shared { outputs } => match &t.output_range {
                        Some(r) => {
                            format!("outputs {}..{} of {outputs} (masked)", r.start, r.end - 1)
                        }
                        None if self.spec.class_output == Some(ClassOutput::SeenSoFar) => {
                            format!("shared head of {outputs}, softmax over the classes seen so far")
                        }
                        None => format!("shared head of {outputs}"),
                    },
                };
                format!(
                    "task {:>2}  train {:>5}  test {:>5}  classes {:<20}  targets {}..{}  {}  {}",
                    t.index + 1,
                    t.train.len(),
                    t.test.len(),
                    format!("{:?}", t.classes),
                    lo,
                    hi,
                    head,
                    t.transform.describe(t.index)
                )
            })
            .collect()
    }
}

/// Writes the examples `indices` of `split` into `batch`: each image padded with `pad` pixels
/// of zeros on every side (none for 0), then transformed, then scaled.
fn fill(
    task: &Task,
    split: &Split,
    indices: &[u32],
    (scale, shift): (f32, f32),
    pad: usize,
    batch: &mut Batch,
) {
    let side = IMAGE_SIDE + 2 * pad;
    let pixels = side * side;
    let mut padded = vec![0u8; if pad > 0 { pixels } else { 0 }];
    batch.pixels.resize(indices.len() * pixels, 0.0);
    batch.targets.clear();
    for (k, &i) in indices.iter().enumerate() {
        let i = i as usize;
        let image = if pad > 0 {
            for (r, row) in split.image(i).chunks_exact(IMAGE_SIDE).enumerate() {
                padded[(r + pad) * side + pad..][..IMAGE_SIDE].copy_from_slice(row);
            }
            &padded[..]
        } else {
            split.image(i)
        };
        task.transform.apply(
            image,
            &mut batch.pixels[k * pixels..(k + 1) * pixels],
            scale,
            shift,
        );
        let target = task.target_of[split.labels[i] as usize]
            .expect("task indices only select examples of the task's classes");
        batch.targets.push(target);
    }
}

/// The order in which a task's training examples are visited: one seeded shuffle per epoch.
#[derive(Debug, Clone)]
pub struct BatchOrder {
    seed: u64,
    task: usize,
    examples: Vec<u32>,
    batch_size: usize,
    epoch: u64,
    pos: usize,
    order: Vec<u32>,
    drop_last: bool,
}

impl BatchOrder {
    /// Batches of `batch_size` over `examples` (a task's training indices), reshuffled every
    /// epoch from `(seed, task, epoch)`. With `drop_last`, a final partial batch of an epoch is
    /// skipped (iteration-based training); otherwise it is returned.
    pub fn new(
        seed: u64,
        task: usize,
        examples: &[u32],
        batch_size: usize,
        drop_last: bool,
    ) -> Self {
        let mut s = Self {
            seed,
            task,
            examples: examples.to_vec(),
            batch_size: batch_size.max(1),
            epoch: 0,
            pos: 0,
            order: Vec::new(),
            drop_last: drop_last && examples.len() >= batch_size,
        };
        s.reshuffle();
        s
    }

    fn reshuffle(&mut self) {
        self.order.clone_from(&self.examples);
        SeedRng::derive(
            self.seed,
            "data-order",
            ((self.task as u64) << 32) | self.epoch,
        )
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

    /// The next batch's indices; a new epoch starts (reshuffled) when one is used up.
    pub fn next_batch(&mut self) -> &[u32] {
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

/// Each task's classes and input transform, as the stream's kind defines them.
fn task_definitions(
    file: &StreamFile,
    seed: u64,
    dataset: &Dataset,
) -> Result<Vec<(Vec<u8>, Transform)>, StreamError> {
    let spec = &file.spec;
    let invalid = |key: &str, message: String| StreamError::Invalid {
        path: file.path.clone(),
        key: key.to_string(),
        message,
    };
    let all_classes = dataset.classes();
    let side = IMAGE_SIDE + 2 * spec.pad.unwrap_or(0);
    let defs: Vec<(Vec<u8>, Transform)> = match spec.kind {
        StreamKind::Permuted => {
            let n = spec.tasks.unwrap_or(0);
            (0..n)
                .map(|t| {
                    let transform = if t == 0 && spec.first_identity.unwrap_or(false) {
                        Transform::Identity
                    } else {
                        Transform::permutation(seed, t, side)
                    };
                    (all_classes.clone(), transform)
                })
                .collect()
        }
        StreamKind::Rotated => spec
            .angle_list(seed)
            .into_iter()
            .map(|a| (all_classes.clone(), Transform::rotation(a, side)))
            .collect(),
        StreamKind::Split => {
            let groups = match &spec.groups {
                Some(g) => g.clone(),
                None => all_classes.chunks(2).map(<[u8]>::to_vec).collect(),
            };
            for g in &groups {
                if let Some(c) = g.iter().find(|c| !all_classes.contains(c)) {
                    return Err(invalid(
                        "groups",
                        format!(
                            "class {c} does not occur in dataset `{}` (its classes: {:?})",
                            dataset.name, all_classes
                        ),
                    ));
                }
            }
            let groups = if spec.shuffle_classes.unwrap_or(false) {
                let mut order: Vec<u8> = groups.iter().flatten().copied().collect();
                SeedRng::derive(seed, "class-order", 0).shuffle(&mut order);
                let mut it = order.into_iter();
                groups
                    .iter()
                    .map(|g| it.by_ref().take(g.len()).collect())
                    .collect()
            } else {
                groups
            };
            groups
                .into_iter()
                .map(|g| (g, Transform::Identity))
                .collect()
        }
    };
    if defs.is_empty() {
        return Err(invalid("tasks", "the stream has zero tasks".into()));
    }
    Ok(defs)
}

/// Where the outputs of tasks with these classes live in the stream's scenario.
fn output_layout(spec: &StreamSpec, defs: &[(Vec<u8>, Transform)]) -> OutputLayout {
    let sizes: Vec<usize> = defs.iter().map(|(c, _)| c.len()).collect();
    let total: usize = sizes.iter().sum();
    match (spec.scenario, spec.task_output.unwrap_or_default()) {
        (Scenario::TaskIncremental, TaskOutput::MultiHead) => OutputLayout::MultiHead { sizes },
        (Scenario::TaskIncremental, TaskOutput::Masked) | (Scenario::ClassIncremental, _) => {
            OutputLayout::Shared { outputs: total }
        }
        (Scenario::DomainIncremental, _) => OutputLayout::Shared {
            outputs: sizes.iter().copied().max().unwrap_or(0),
        },
    }
}

/// The tasks: each class's target in the output layout, the head, the masked range, and the
/// examples of the task's classes.
fn assign_targets(
    spec: &StreamSpec,
    outputs: &OutputLayout,
    defs: Vec<(Vec<u8>, Transform)>,
    dataset: &Dataset,
) -> Vec<Task> {
    let mut offset = 0usize;
    defs.into_iter()
        .enumerate()
        .map(|(index, (classes, transform))| {
            // Target of a class: its position in the task, shifted into the task's block of a
            // shared class-incremental (or masked) output layer.
            let base = match (outputs, spec.scenario) {
                (OutputLayout::Shared { .. }, Scenario::DomainIncremental) => 0,
                (OutputLayout::Shared { .. }, _) => offset,
                (OutputLayout::MultiHead { .. }, _) => 0,
            };
            let mut target_of = [None; 256];
            for (pos, &c) in classes.iter().enumerate() {
                target_of[c as usize] = Some((base + pos) as u32);
            }
            let output_range = (spec.scenario == Scenario::TaskIncremental
                && matches!(outputs, OutputLayout::Shared { .. }))
            .then(|| base..base + classes.len());
            let head = match outputs {
                OutputLayout::MultiHead { .. } => index,
                OutputLayout::Shared { .. } => 0,
            };
            offset += classes.len();
            let select = |split: &Split| -> Vec<u32> {
                (0..split.len() as u32)
                    .filter(|&i| target_of[split.labels[i as usize] as usize].is_some())
                    .collect()
            };
            Task {
                index,
                train: select(&dataset.train),
                test: select(&dataset.test),
                classes,
                target_of,
                transform,
                head,
                output_range,
            }
        })
        .collect()
}
