//! The YAML definition of a task stream (a file under `tasks/`), and its validation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StreamError;

/// How tasks are derived from the dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamKind {
    /// Every task is the whole dataset under its own fixed pixel permutation.
    Permuted,
    /// Every task is a group of classes.
    Split,
    /// Every task is the whole dataset rotated by its own angle.
    Rotated,
}

/// What the learner knows and predicts (van de Ven, Tuytelaars & Tolias 2022).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Task identity is given; the model predicts among the task's own classes.
    TaskIncremental,
    /// Task identity is not given; all tasks share one output space (e.g. "first or second class").
    DomainIncremental,
    /// Task identity is not given; the model predicts among every class of the stream.
    ClassIncremental,
}

/// How a task-incremental model restricts its output to the current task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskOutput {
    /// One output head per task.
    #[default]
    MultiHead,
    /// One shared output layer whose logits outside the task's classes are masked.
    Masked,
}

/// Which outputs a class-incremental model's softmax spans while it learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassOutput {
    /// Every class of the stream from the first task on (one fixed softmax over all outputs).
    #[default]
    All,
    /// Only the classes seen so far ("active classes" of van de Ven, Tuytelaars & Tolias 2022):
    /// while task k trains, and when the model is evaluated after it, the softmax spans the
    /// classes of tasks 1..k; a task not yet learned is scored over the classes up to its own.
    SeenSoFar,
}

/// Angles of a rotated stream: an explicit list, an evenly spaced range, or steps with a random
/// jitter.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Angles {
    /// Degrees, one per task.
    List(Vec<f64>),
    /// `tasks` angles evenly spaced from `from` to `to` inclusive.
    Range(AngleRange),
    /// `from + step · i − jitter · u_i` for task i = 0, 1, …, u_i uniform in [0, 1).
    Steps(AngleSteps),
}

impl<'de> Deserialize<'de> for Angles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        use serde_yaml::Value;
        let forms = "`angles` expects a list of degrees, `{from, to, tasks}` or \
                     `{from, step, jitter, tasks}`";
        match Value::deserialize(d)? {
            v @ Value::Sequence(_) => serde_yaml::from_value(v)
                .map(Angles::List)
                .map_err(|e| D::Error::custom(format!("`angles: [deg, ...]`: {e}"))),
            Value::Mapping(m) => {
                let has = |k: &str| m.contains_key(Value::from(k));
                if has("step") {
                    serde_yaml::from_value(Value::Mapping(m))
                        .map(Angles::Steps)
                        .map_err(|e| {
                            D::Error::custom(format!(
                                "`angles: {{from, step, jitter, tasks}}`: {e}"
                            ))
                        })
                } else if has("to") {
                    serde_yaml::from_value(Value::Mapping(m))
                        .map(Angles::Range)
                        .map_err(|e| {
                            D::Error::custom(format!("`angles: {{from, to, tasks}}`: {e}"))
                        })
                } else {
                    Err(D::Error::custom(format!(
                        "{forms}; this mapping has neither `to` nor `step`"
                    )))
                }
            }
            other => Err(D::Error::custom(format!(
                "{forms}, got {}",
                crate::validate::short_excerpt(
                    serde_yaml::to_string(&other).unwrap_or_default().trim()
                )
            ))),
        }
    }
}

/// Angles in steps with a random jitter: task i (0-based) is rotated by
/// `from + step · i − jitter · u_i`, `u_i` uniform in [0, 1) drawn from the stream's seed. Stable
/// SGD's rotated MNIST (Mirzadeh et al. 2020, `stable_sgd/data_utils.py`,
/// `get_rotated_mnist`: `(task_id − 1) · 10 − random() · 10`) is `{from: 0, step: 10, jitter:
/// 10, tasks: 20}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AngleSteps {
    /// The first task's angle before its jitter, in degrees.
    pub from: f64,
    /// Degrees between consecutive tasks.
    pub step: f64,
    /// The largest jitter subtracted from each angle, in degrees (≥ 0; default 0: evenly
    /// spaced steps).
    #[serde(default)]
    pub jitter: f64,
    /// Number of tasks.
    pub tasks: usize,
}

/// An evenly spaced range of angles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AngleRange {
    /// First angle in degrees.
    pub from: f64,
    /// Last angle in degrees (inclusive).
    pub to: f64,
    /// Number of tasks.
    pub tasks: usize,
}

/// A task stream file, exactly as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Display name (defaults to the file stem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Dataset name: `mnist` or `fashion-mnist`.
    pub dataset: String,
    /// `permuted`, `split` or `rotated`.
    pub kind: StreamKind,
    /// `task-incremental`, `domain-incremental` or `class-incremental`.
    pub scenario: Scenario,
    /// Task-incremental only: `multi-head` (default) or `masked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_output: Option<TaskOutput>,
    /// Class-incremental only: `all` (default) or `seen-so-far`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_output: Option<ClassOutput>,
    /// Pins the stream's randomness (permutations, class order) to this seed instead of the
    /// run's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Permuted: number of tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<usize>,
    /// Permuted: whether task 1 sees the unpermuted images (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_identity: Option<bool>,
    /// Split: the class groups, one per task (default: consecutive pairs of the dataset's classes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<Vec<u8>>>,
    /// Split: shuffle the class order with the stream seed before forming groups of the same sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shuffle_classes: Option<bool>,
    /// Standardize pixels instead of scaling them to `[0, 1]`: `true` with the dataset's mean
    /// and standard deviation (MNIST: 0.1307, 0.3081), `{mean, std}` with these (of pixels in
    /// `[0, 1]`, as torchvision's `Normalize`; e.g. Hsu et al.'s 0.1000, 0.2752 for MNIST
    /// padded to 32×32). Default false. Padding pixels are standardized too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    /// Pad every image with this many pixels of zeros on every side before any transform
    /// (`pad: 2` turns MNIST's 28×28 into 32×32, as torchvision's `Pad(2)`): a permutation runs
    /// over all (28 + 2·pad)² positions, a rotation turns the padded image, and the model's
    /// input grows to match. Default 0 (no padding; the stream's bits as without the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad: Option<usize>,
    /// Rotated: the angles in degrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub angles: Option<Angles>,
    /// Hold out this fraction (in (0, 1)) of every class's training images as the evaluation
    /// set, and never touch the test set: the stream for choosing hyperparameters
    /// ([`crate::data::Dataset::validation_split`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<f64>,
}

/// How a stream standardizes its pixels (`normalize:`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Normalize {
    /// `true`: the dataset's own mean and standard deviation; `false`: scale to `[0, 1]`.
    Dataset(bool),
    /// Explicit statistics of pixels in `[0, 1]`.
    Stats(NormalizeStats),
}

/// The mean and standard deviation a stream standardizes with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeStats {
    /// Subtracted from every pixel in `[0, 1]`.
    pub mean: f64,
    /// Divides every pixel after the mean is subtracted (> 0).
    pub std: f64,
}

impl<'de> Deserialize<'de> for Normalize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::Bool(b) => Ok(Normalize::Dataset(b)),
            v @ serde_yaml::Value::Mapping(_) => serde_yaml::from_value(v)
                .map(Normalize::Stats)
                .map_err(|e| D::Error::custom(format!("`normalize: {{mean, std}}`: {e}"))),
            other => Err(D::Error::custom(format!(
                "`normalize` expects `true`, `false` or `{{mean: …, std: …}}`, got {}",
                crate::validate::short_excerpt(
                    serde_yaml::to_string(&other).unwrap_or_default().trim()
                )
            ))),
        }
    }
}

impl Normalize {
    /// The (mean, std) to standardize with, `dataset` the dataset's own statistics; `None`
    /// when pixels are only scaled to `[0, 1]`.
    pub fn mean_std(self, dataset: (f32, f32)) -> Option<(f32, f32)> {
        match self {
            Normalize::Dataset(false) => None,
            Normalize::Dataset(true) => Some(dataset),
            Normalize::Stats(s) => Some((s.mean as f32, s.std as f32)),
        }
    }
}

/// The most padding a stream may add on each side (100×100 images from MNIST's 28×28).
pub const MAX_PAD: usize = 36;

/// A stream spec together with the file it came from (for error messages and provenance).
#[derive(Debug, Clone)]
pub struct StreamFile {
    /// The file.
    pub path: PathBuf,
    /// Its content.
    pub spec: StreamSpec,
}

impl StreamSpec {
    /// Parses and validates YAML text; `path` names the source in errors.
    pub fn from_yaml(text: &str, path: &Path) -> Result<StreamSpec, StreamError> {
        let text = crate::yaml::strip_bom(text);
        let spec: StreamSpec = serde_yaml::from_str(text).map_err(|e| StreamError::Parse {
            path: path.to_path_buf(),
            message: crate::yaml::describe_error(&e, STREAM_KEYS),
        })?;
        spec.validate(path)?;
        Ok(spec)
    }

    /// Reads, parses and validates a stream file.
    pub fn load(path: &Path) -> Result<StreamFile, StreamError> {
        let text = crate::yaml::read_input(path).map_err(|e| StreamError::Parse {
            path: path.to_path_buf(),
            message: format!("cannot read the file: {e}"),
        })?;
        Ok(StreamFile {
            path: path.to_path_buf(),
            spec: Self::from_yaml(&text, path)?,
        })
    }

    /// The number of tasks this spec defines.
    pub fn num_tasks(&self) -> usize {
        match self.kind {
            StreamKind::Permuted => self.tasks.unwrap_or(0),
            StreamKind::Split => self.groups.as_ref().map_or(5, Vec::len),
            StreamKind::Rotated => match &self.angles {
                Some(Angles::List(a)) => a.len(),
                Some(Angles::Range(r)) => r.tasks,
                Some(Angles::Steps(r)) => r.tasks,
                None => 0,
            },
        }
    }

    /// The rotation angles in degrees, one per task (rotated streams only); `seed` is the
    /// stream's seed, which draws the jitter of `{from, step, jitter, tasks}` angles.
    pub fn angle_list(&self, seed: u64) -> Vec<f64> {
        match &self.angles {
            Some(Angles::Steps(r)) => (0..r.tasks)
                .map(|i| {
                    let u = crate::rng::SeedRng::derive(seed, "angle-jitter", i as u64).unit_f64();
                    r.from + r.step * i as f64 - r.jitter * u
                })
                .collect(),
            Some(Angles::List(a)) => a.clone(),
            Some(Angles::Range(r)) if r.tasks == 1 => vec![r.from],
            Some(Angles::Range(r)) => (0..r.tasks)
                .map(|i| r.from + (r.to - r.from) * i as f64 / (r.tasks - 1) as f64)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Checks everything that does not need the dataset: the dataset's name, that every key
    /// applies to the stream's kind and scenario, and the kind's own keys.
    pub fn validate(&self, path: &Path) -> Result<(), StreamError> {
        let invalid = |key: &str, message: String| StreamError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        if let Some(name) = &self.name {
            crate::validate::path_name("name", "a stream name (it names figure files)", name, &[])
                .map_err(|e| invalid(&e.key, e.message))?;
        }
        self.check_keys_apply().map_err(|(k, m)| invalid(k, m))?;
        match self.kind {
            StreamKind::Permuted => self.check_permuted(),
            StreamKind::Split => self.check_split(),
            StreamKind::Rotated => self.check_rotated(),
        }
        .map_err(|(k, m)| invalid(k, m))
    }

    /// The dataset exists, and every key that is set applies to the kind and scenario.
    fn check_keys_apply(&self) -> Result<(), (&'static str, String)> {
        let invalid = |key: &'static str, message: String| (key, message);
        if super::super::data::dataset_info(&self.dataset).is_none() {
            return Err(invalid(
                "dataset",
                format!(
                    "unknown dataset `{}` (expected one of: {})",
                    self.dataset,
                    crate::data::dataset_names().join(", ")
                ),
            ));
        }
        // Keys that only make sense for some kinds.
        let only = |key: &'static str, set: bool, kind: StreamKind, allowed: &[StreamKind]| {
            if set && !allowed.contains(&kind) {
                Err(invalid(
                    key,
                    format!(
                        "does not apply to a {} stream",
                        serde_yaml::to_string(&kind).unwrap_or_default().trim()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        use StreamKind::{Permuted, Rotated, Split};
        only("tasks", self.tasks.is_some(), self.kind, &[Permuted])?;
        only(
            "first_identity",
            self.first_identity.is_some(),
            self.kind,
            &[Permuted],
        )?;
        only("groups", self.groups.is_some(), self.kind, &[Split])?;
        only(
            "shuffle_classes",
            self.shuffle_classes.is_some(),
            self.kind,
            &[Split],
        )?;
        only("angles", self.angles.is_some(), self.kind, &[Rotated])?;
        if self.task_output.is_some() && self.scenario != Scenario::TaskIncremental {
            return Err(invalid(
                "task_output",
                "only applies to the task-incremental scenario".into(),
            ));
        }
        if self.class_output.is_some() && self.scenario != Scenario::ClassIncremental {
            return Err(invalid(
                "class_output",
                "only applies to the class-incremental scenario".into(),
            ));
        }
        if let Some(Normalize::Stats(s)) = self.normalize {
            // Checked as the f32 values the pixels are standardized with.
            if !(s.mean as f32).is_finite() {
                return Err(invalid(
                    "normalize.mean",
                    format!("expected a finite number, got {}", s.mean),
                ));
            }
            if !((s.std as f32).is_finite() && (s.std as f32) >= 1e-6) {
                return Err(invalid(
                    "normalize.std",
                    format!("expected a number ≥ 1e-6 (and finite), got {}", s.std),
                ));
            }
        }
        if let Some(p) = self.pad {
            if p > MAX_PAD {
                return Err(invalid(
                    "pad",
                    format!(
                        "expected at most {MAX_PAD} pixels on each side, got {p} (images of \
                         {side}×{side})",
                        side = crate::data::IMAGE_SIDE + 2 * p.min(1 << 20)
                    ),
                ));
            }
        }
        if let Some(f) = self.validation {
            if !(f > 0.0 && f < 1.0) {
                return Err(invalid(
                    "validation",
                    format!("expected a fraction of the training set in (0, 1), got {f}"),
                ));
            }
        }
        Ok(())
    }

    /// A permuted stream's task count.
    fn check_permuted(&self) -> Result<(), (&'static str, String)> {
        let invalid = |key: &'static str, message: String| (key, message);
        match self.tasks {
            None => {
                return Err(invalid(
                    "tasks",
                    "a permuted stream needs `tasks: N`".into(),
                ))
            }
            Some(0) => return Err(invalid("tasks", "expected at least 1 task, got 0".into())),
            Some(n) if n > MAX_TASKS => {
                return Err(invalid(
                    "tasks",
                    format!("expected at most {MAX_TASKS} tasks, got {n}"),
                ))
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// A split stream's groups: non-empty, disjoint, of equal sizes of at least two classes in
    /// the domain-incremental scenario.
    fn check_split(&self) -> Result<(), (&'static str, String)> {
        let invalid = |key: &'static str, message: String| (key, message);

        if let Some(groups) = &self.groups {
            if groups.is_empty() {
                return Err(invalid("groups", "expected at least one group".into()));
            }
            let mut seen = [false; 256];
            for (i, g) in groups.iter().enumerate() {
                if g.is_empty() {
                    return Err(invalid("groups", format!("group {} is empty", i + 1)));
                }
                for &c in g {
                    if seen[c as usize] {
                        return Err(invalid(
                            "groups",
                            format!("class {c} appears in more than one group"),
                        ));
                    }
                    seen[c as usize] = true;
                }
            }
            if self.scenario == Scenario::DomainIncremental && groups[0].len() < 2 {
                return Err(invalid(
                    "groups",
                    "domain-incremental tasks of one class each have a 1-way output (every prediction is right); give each group at least 2 classes".into(),
                ));
            }
            if self.scenario == Scenario::DomainIncremental
                && groups.iter().any(|g| g.len() != groups[0].len())
            {
                return Err(invalid(
                    "groups",
                    "domain-incremental tasks share one output space: every group needs the same number of classes".into(),
                ));
            }
        }
        Ok(())
    }

    /// A rotated stream's angles: present, bounded in number, finite.
    fn check_rotated(&self) -> Result<(), (&'static str, String)> {
        let invalid = |key: &'static str, message: String| (key, message);

        match &self.angles {
            None => {
                return Err(invalid(
                    "angles",
                    "a rotated stream needs `angles: [deg, ...]`, `angles: {from, to, tasks}` or \
                     `angles: {from, step, jitter, tasks}`"
                        .into(),
                ))
            }
            Some(Angles::Range(AngleRange { tasks: 0, .. }))
            | Some(Angles::Steps(AngleSteps { tasks: 0, .. })) => {
                return Err(invalid("angles", "expected at least 1 task, got 0".into()))
            }
            Some(Angles::Steps(r)) if r.tasks > MAX_TASKS => {
                return Err(invalid(
                    "angles",
                    format!("expected at most {MAX_TASKS} tasks, got {}", r.tasks),
                ))
            }
            Some(Angles::Steps(r)) if !(r.jitter.is_finite() && r.jitter >= 0.0) => {
                return Err(invalid(
                    "angles",
                    format!("`jitter` must be a finite number ≥ 0, got {}", r.jitter),
                ))
            }
            Some(Angles::Range(r)) if r.tasks > MAX_TASKS => {
                return Err(invalid(
                    "angles",
                    format!("expected at most {MAX_TASKS} tasks, got {}", r.tasks),
                ))
            }
            Some(Angles::List(a)) if a.len() > MAX_TASKS => {
                return Err(invalid(
                    "angles",
                    format!("expected at most {MAX_TASKS} angles, got {}", a.len()),
                ))
            }
            Some(Angles::List(a)) if a.is_empty() => {
                return Err(invalid("angles", "expected at least one angle".into()))
            }
            _ => {}
        }
        // The jitter lies in [0, jitter): any seed's angles are finite when seed 0's are.
        if let Some(bad) = self.angle_list(0).into_iter().find(|a| !a.is_finite()) {
            return Err(invalid(
                "angles",
                format!("angle {bad} is not a finite number"),
            ));
        }
        Ok(())
    }
}

/// The most tasks a stream may define (each task's examples are indexed eagerly).
pub const MAX_TASKS: usize = 10_000;

/// The keys a stream file may contain (for "did you mean" hints).
pub const STREAM_KEYS: &[&str] = &[
    "name",
    "dataset",
    "kind",
    "scenario",
    "task_output",
    "class_output",
    "seed",
    "tasks",
    "first_identity",
    "groups",
    "shuffle_classes",
    "angles",
    "normalize",
    "pad",
    "validation",
];
