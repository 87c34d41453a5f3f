//! Continual-learning strategies: what a method does beyond "minimize the current task's loss
//! with this optimizer". Each is a named, configurable block of a method in an experiment
//! config and combines with every optimizer, with or without GRAPES:
//!
//! ```yaml
//! methods:
//!   - name: ewc+grapes
//!     optimizer: {name: adam, lr: 0.001, grapes: propagating}
//!     strategy: {name: ewc, lambda: 1.0e5}
//! ```
//!
//! | name | what it adds | module |
//! |---|---|---|
//! | `finetune` (default) | nothing: plain sequential training, the lower bound | here |
//! | `joint` | trains on the union of tasks 1..k (`cumulative`), of all tasks (`all`), or once on all tasks with every task's budget (`once`) | here |
//! | `ewc`, `online-ewc` | `λ/2 Σ F (θ−θ*)²`, F the diagonal Fisher (Kirkpatrick 2017; Schwarz 2018) | [`penalty`] |
//! | `l2` | `λ/2 Σ (θ−θ*)²` towards the weights after the previous task (Hsu et al. 2018's L2) | [`penalty`] |
//! | `si` | `c Σ Ω (θ−θ*)²`, Ω from the path integral (Zenke 2017) | [`penalty`] |
//! | `mas` | `λ Σ Ω (θ−θ*)²`, Ω = E\|∂‖f(x)‖²/∂θ\| (Aljundi 2018) | [`penalty`] |
//! | `replay` | the loss on a batch from a reservoir memory of earlier tasks | [`memory`] |
//! | `agem` | projects the gradient so it does not increase the memory's loss (Chaudhry 2019) | [`memory`] |
//! | `gem` | projects the gradient so it increases no earlier task's memory loss, by a small QP (Lopez-Paz & Ranzato 2017) | [`gem`] |
//! | `lwf` | distillation of the previous model's outputs on the current inputs (Li & Hoiem 2017) | [`lwf`] |
//!
//! The raw [`StrategyConfig`] is checked once into [`StrategySettings`], which builds the
//! runtime [`Strategy`]. A strategy sees the model only through [`Engine`]: the parameters,
//! the gradients, and "add the gradient of this batch part".

pub mod gem;
pub mod lwf;
pub mod memory;
pub mod penalty;

use std::ops::Range;
use std::sync::Arc;

use candle_core::Result;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, Objective};
use crate::models::loss::DistillScale;
use crate::optim::GrapesMode;
use crate::plugin::{BuildStrategy, PluginBlock, Registry};
use crate::streams::{Example, MixedBatch, TaskStream};
use crate::validate::{at_least_one, fraction, non_negative, positive, Checked, KeyError};

/// How the loss on earlier tasks' data (replayed or distilled) is weighted against the loss on
/// the current task's data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LossWeight {
    /// `balanced`: `(1/k) L_current + (1 − 1/k) L_earlier` while training task k, as in
    /// van de Ven, Tuytelaars & Tolias (2022) for replay; `per-task`:
    /// `L_current + Σ_{j<k} L_j`, every earlier task's term at weight 1, as their reference
    /// implementation weighs LwF.
    Named(WeightName),
    /// A number α: `L_current + α L_earlier` (α = 0 is plain fine-tuning).
    Fixed(f64),
}

/// The named weightings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightName {
    /// `balanced`, see [`LossWeight::Named`].
    Balanced,
    /// `per-task`, see [`LossWeight::Named`].
    PerTask,
}

impl Default for LossWeight {
    fn default() -> Self {
        LossWeight::Named(WeightName::Balanced)
    }
}

impl LossWeight {
    /// (weight of the current data, weight of the earlier tasks' term) while training the
    /// 0-based task `task`.
    pub fn weights(self, task: usize) -> (f32, f32) {
        match self {
            LossWeight::Named(WeightName::Balanced) => {
                let k = (task + 1) as f32;
                (1.0 / k, 1.0 - 1.0 / k)
            }
            LossWeight::Named(WeightName::PerTask) => (1.0, task as f32),
            LossWeight::Fixed(a) => (1.0, a as f32),
        }
    }

    /// The weights of the earlier tasks' terms while training `task`, when term i stands for
    /// `counts[i]` earlier tasks (`Σ counts` = the earlier tasks): `balanced` and a number
    /// share the earlier weight in proportion to the counts; `per-task` gives each term its
    /// count.
    pub fn term_weights(self, task: usize, counts: &[usize]) -> Vec<f32> {
        let (_, w) = self.weights(task);
        let total: usize = counts.iter().sum();
        counts
            .iter()
            .map(|&c| match self {
                LossWeight::Named(WeightName::PerTask) => c as f32,
                _ => w * c as f32 / total.max(1) as f32,
            })
            .collect()
    }
}

/// How much of the run's training budget (`training.iterations` or `training.epochs`) one
/// task's phase gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseBudget {
    /// The configured budget: the iterations, or the epochs of the phase's data.
    OneTask,
    /// The budget of every task together: `tasks ×` the iterations, or the epochs of the
    /// phase's data (every task's, so the same number of examples as the epochs of each task).
    AllTasks,
    /// No training: no steps and no `before_task`/`after_task` hooks; the model is evaluated
    /// as it stands.
    Skip,
}

/// Which data joint training uses while "training task k".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JointData {
    /// The union of tasks 1..k (the accuracy of row k is the intransigence reference).
    #[default]
    Cumulative,
    /// All tasks' data from the first phase on (multi-task training; the last row is the
    /// upper bound).
    All,
    /// All tasks' data in the first phase only, for the budget of every task together
    /// ([`PhaseBudget::AllTasks`]); no training after it, so every row of the accuracy matrix
    /// is that one model (BWT and forgetting 0, learning accuracy = ACC). The joint bound as
    /// van de Ven et al. train it for their comparisons (the reference implementation's
    /// `compare.py`: `--joint`, once and from scratch on the data of all contexts, with
    /// `iters = contexts × iters`).
    Once,
}

/// Which diagonal Fisher information EWC estimates. Written `exact` (also accepted: `true`,
/// as in "the true Fisher"), `empirical` or `predicted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FisherKind {
    /// The true Fisher, computed exactly as the expectation over the model's own predictive
    /// distribution: `Σ_y p(y|x) (∂ log p(y|x)/∂θ)²`.
    #[default]
    Exact,
    /// With the dataset's labels: `(∂ log p(y_true|x)/∂θ)²`.
    Empirical,
    /// With the model's most probable label (the estimate of van de Ven's earlier code).
    Predicted,
}

impl<'de> Deserialize<'de> for FisherKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use crate::yaml::BoolOrName;
        match BoolOrName::deserialize(d)? {
            BoolOrName::Bool(true) => Ok(FisherKind::Exact),
            BoolOrName::Name(n) => match n.as_str() {
                "exact" | "true" => Ok(FisherKind::Exact),
                "empirical" => Ok(FisherKind::Empirical),
                "predicted" => Ok(FisherKind::Predicted),
                other => Err(serde::de::Error::custom(format!(
                    "unknown Fisher `{other}`: expected `exact` (the true Fisher), `empirical` or `predicted`"
                ))),
            },
            BoolOrName::Bool(false) => Err(serde::de::Error::custom(
                "expected `exact` (the true Fisher), `empirical` or `predicted`, got `false`",
            )),
        }
    }
}

/// How a memory budget is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BudgetUnit {
    /// `budget` examples of every class of every task (class-balanced).
    #[default]
    Class,
    /// `budget` examples in all (one reservoir over everything seen).
    Total,
}

/// Which gradient synaptic intelligence's path integral `ω = −Σ g·Δθ` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SiGradient {
    /// The gradient of the whole objective, SI's own penalty included: what van de Ven,
    /// Tuytelaars & Tolias's reference implementation accumulates (`p.grad` after the backward
    /// pass of the total loss, GMvandeVen/continual-learning `models/cl/continual_learner.py`).
    #[default]
    Total,
    /// The gradient of the task's loss alone, before the penalty: Zenke, Poole & Ganguli's
    /// (2017) definition, as their code computes it (`unreg_grads`, the gradient of the
    /// unregularized loss, in ganguli-lab/pathint `protocols.py`), and clbench's before the key
    /// existed.
    TaskLoss,
}

/// A method's strategy, as written in an experiment config (`strategy:` of a method).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StrategyConfig {
    /// Plain sequential training.
    Finetune {},
    /// Training on several tasks' data at once.
    Joint {
        /// `cumulative` (default), `all` or `once`.
        #[serde(default)]
        data: JointData,
    },
    /// Elastic weight consolidation: one Fisher and anchor per task.
    Ewc {
        /// Penalty strength λ (≥ 0).
        lambda: f64,
        /// `exact` (default), `empirical` or `predicted`.
        #[serde(default)]
        fisher: FisherKind,
        /// Training examples of the task the Fisher is estimated on (default: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        samples: Option<usize>,
    },
    /// Online EWC: one running Fisher, decayed by γ at every task, anchored at the last task.
    OnlineEwc {
        /// Penalty strength λ (≥ 0).
        lambda: f64,
        /// Decay γ of the earlier Fisher, in (0, 1] (default 1).
        #[serde(default = "one")]
        gamma: f64,
        /// `exact` (default), `empirical` or `predicted`.
        #[serde(default)]
        fisher: FisherKind,
        /// Training examples of the task the Fisher is estimated on (default: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        samples: Option<usize>,
    },
    /// An unweighted quadratic penalty towards the weights after the previous task.
    L2 {
        /// Penalty strength λ (≥ 0) of `λ/2 Σ (θ − θ*)²`.
        lambda: f64,
    },
    /// Synaptic intelligence.
    Si {
        /// Penalty strength c (≥ 0).
        c: f64,
        /// Damping ξ (> 0, default 0.1).
        #[serde(default = "si_xi")]
        xi: f64,
        /// The gradient the path integral multiplies each parameter change by: `total`
        /// (default) or `task-loss`, see [`SiGradient`]. A config that leaves it out gets
        /// `total` written into its runs' configs (so their ids say which); a stored run
        /// without the key was made before it existed, with `task-loss`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gradient: Option<SiGradient>,
    },
    /// Memory aware synapses.
    Mas {
        /// Penalty strength λ (≥ 0).
        lambda: f64,
        /// Training examples of the task the importance is estimated on (default: all).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        samples: Option<usize>,
    },
    /// Experience replay from a reservoir memory.
    Replay {
        /// Memory size, per class (default) or in total.
        budget: usize,
        /// `class` (default) or `total`.
        #[serde(default)]
        per: BudgetUnit,
        /// Replayed examples per step (default: the training batch size).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch_size: Option<usize>,
        /// `balanced` (default) or a number α.
        #[serde(default)]
        weight: LossWeight,
    },
    /// Averaged gradient episodic memory.
    Agem {
        /// Memory size, per class (default) or in total.
        budget: usize,
        /// `class` (default) or `total`.
        #[serde(default)]
        per: BudgetUnit,
        /// Memory examples of the reference gradient (default: the training batch size).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch_size: Option<usize>,
    },
    /// Gradient episodic memory.
    Gem {
        /// Memory size, per task (default) or in total.
        budget: usize,
        /// `task` (default: `budget` examples of every task) or `total` (`budget` shared
        /// equally among the tasks learned so far).
        #[serde(default)]
        per: gem::GemMemory,
        /// Lower bound of the dual variables (GEM's `memory_strength`; default 0.5).
        #[serde(default = "half")]
        margin: f64,
        /// Added to the dual's diagonal (default 0.001, as GEM's code).
        #[serde(default = "gem_eps")]
        eps: f64,
    },
    /// Learning without forgetting.
    Lwf {
        /// Distillation temperature T (> 0, default 2).
        #[serde(default = "two")]
        temperature: f64,
        /// Factor of the distillation loss: `none` (default, the reference implementation's)
        /// or `t-squared` (Hinton et al.'s).
        #[serde(default)]
        scale: DistillScale,
        /// `per-task` (default, the reference implementation's), `balanced` or a number α.
        #[serde(default = "per_task")]
        weight: LossWeight,
    },
    /// A strategy from another crate ([`crate::plugin::StrategyPlugin`]), read and written by
    /// [`StrategyConfig::from_block`] and [`StrategyConfig::to_block`].
    #[serde(skip)]
    Plugin(PluginBlock),
}

/// The names of the built-in strategies.
pub const STRATEGY_NAMES: &[&str] = &[
    "finetune",
    "joint",
    "ewc",
    "online-ewc",
    "l2",
    "si",
    "mas",
    "replay",
    "agem",
    "gem",
    "lwf",
];

fn one() -> f64 {
    1.0
}
fn two() -> f64 {
    2.0
}
fn per_task() -> LossWeight {
    LossWeight::Named(WeightName::PerTask)
}
fn si_xi() -> f64 {
    0.1
}
fn half() -> f64 {
    0.5
}
fn gem_eps() -> f64 {
    0.001
}

/// The keys a strategy block may hold (for "did you mean" hints).
pub const STRATEGY_KEYS: &[&str] = &[
    "strategy",
    "data",
    "lambda",
    "fisher",
    "samples",
    "gamma",
    "c",
    "xi",
    "budget",
    "per",
    "weight",
    "temperature",
    "scale",
    "margin",
    "eps",
];

/// A validated strategy (see [`StrategyConfig::check`]).
#[derive(Debug, Clone)]
pub struct StrategySettings(StrategyConfig, Option<Arc<dyn BuildStrategy>>);

impl PartialEq for StrategySettings {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Default for StrategySettings {
    fn default() -> Self {
        StrategySettings(StrategyConfig::Finetune {}, None)
    }
}

impl StrategyConfig {
    /// Reads a `strategy:` block: a built-in strategy by serde (its errors for unknown keys
    /// and values), any other name as a [`StrategyConfig::Plugin`] block, checked later
    /// against the registry.
    pub fn from_block(value: serde_yaml::Value) -> std::result::Result<StrategyConfig, String> {
        let plugin = match value.get("name").and_then(serde_yaml::Value::as_str) {
            Some(name) => !STRATEGY_NAMES.contains(&name),
            None => false,
        };
        match value {
            serde_yaml::Value::Mapping(map) if plugin => {
                let (block, _) = PluginBlock::split(map, &[])?;
                Ok(StrategyConfig::Plugin(block))
            }
            value => serde_yaml::from_value(value).map_err(|e| e.to_string()),
        }
    }

    /// The block as written back (a run's config).
    pub fn to_block(&self) -> serde_yaml::Value {
        match self {
            StrategyConfig::Plugin(block) => serde_yaml::Value::Mapping(block.to_mapping()),
            builtin => serde_yaml::to_value(builtin).expect("a strategy block serializes"),
        }
    }

    /// The strategy's name as written (`ewc`, `online-ewc`, …).
    pub fn name(&self) -> &str {
        match self {
            StrategyConfig::Plugin(block) => &block.name,
            StrategyConfig::Finetune {} => "finetune",
            StrategyConfig::Joint { .. } => "joint",
            StrategyConfig::Ewc { .. } => "ewc",
            StrategyConfig::OnlineEwc { .. } => "online-ewc",
            StrategyConfig::L2 { .. } => "l2",
            StrategyConfig::Si { .. } => "si",
            StrategyConfig::Mas { .. } => "mas",
            StrategyConfig::Replay { .. } => "replay",
            StrategyConfig::Agem { .. } => "agem",
            StrategyConfig::Gem { .. } => "gem",
            StrategyConfig::Lwf { .. } => "lwf",
        }
    }

    /// The block with the defaults that a run's identity must record written out: SI's
    /// `gradient` (its default changed from `task-loss` to `total`; runs stored before carry
    /// no key). Applied to every method of an experiment before its runs are planned.
    /// A plugin's block gets its settings as its type writes them and its `plugin` origin
    /// ([`crate::plugin`]).
    pub fn with_recorded_defaults(self) -> StrategyConfig {
        match self {
            StrategyConfig::Si { c, xi, gradient } => StrategyConfig::Si {
                c,
                xi,
                gradient: Some(gradient.unwrap_or_default()),
            },
            StrategyConfig::Plugin(block) => {
                StrategyConfig::Plugin(Registry::current().record_strategy(block))
            }
            other => other,
        }
    }

    /// Checks every value into [`StrategySettings`]; an error names the key inside the
    /// strategy block.
    pub fn check(&self) -> Checked<StrategySettings> {
        let samples = |s: &Option<usize>| s.map_or(Ok(0), |n| at_least_one("samples", n));
        let weight = |w: &LossWeight| match w {
            LossWeight::Fixed(a) => non_negative("weight", *a).map(drop),
            LossWeight::Named(_) => Ok(()),
        };
        let memory = |budget: usize, batch: &Option<usize>| -> Checked<()> {
            if budget == 0 {
                return Err(KeyError::new(
                    "budget",
                    "expected at least 1 example, got 0",
                ));
            }
            batch.map_or(Ok(0), |b| at_least_one("batch_size", b))?;
            Ok(())
        };
        match self {
            StrategyConfig::Plugin(block) => {
                let plugin = Registry::current().check_strategy(block)?;
                return Ok(StrategySettings(self.clone(), Some(plugin)));
            }
            StrategyConfig::Finetune {} | StrategyConfig::Joint { .. } => {}
            StrategyConfig::Ewc {
                lambda, samples: s, ..
            } => {
                non_negative("lambda", *lambda)?;
                samples(s)?;
            }
            StrategyConfig::OnlineEwc {
                lambda,
                gamma,
                samples: s,
                ..
            } => {
                non_negative("lambda", *lambda)?;
                fraction("gamma", *gamma)?;
                samples(s)?;
            }
            StrategyConfig::L2 { lambda } => {
                non_negative("lambda", *lambda)?;
            }
            StrategyConfig::Si { c, xi, .. } => {
                non_negative("c", *c)?;
                positive("xi", *xi)?;
            }
            StrategyConfig::Mas { lambda, samples: s } => {
                non_negative("lambda", *lambda)?;
                samples(s)?;
            }
            StrategyConfig::Replay {
                budget,
                batch_size,
                weight: w,
                ..
            } => {
                memory(*budget, batch_size)?;
                weight(w)?;
            }
            StrategyConfig::Agem {
                budget, batch_size, ..
            } => memory(*budget, batch_size)?,
            StrategyConfig::Gem {
                budget,
                margin,
                eps,
                ..
            } => {
                memory(*budget, &None)?;
                non_negative("margin", *margin)?;
                non_negative("eps", *eps)?;
            }
            StrategyConfig::Lwf {
                temperature,
                weight: w,
                ..
            } => {
                positive("temperature", *temperature)?;
                weight(w)?;
            }
        }
        Ok(StrategySettings(self.clone(), None))
    }
}

impl StrategySettings {
    /// The validated config.
    pub fn config(&self) -> &StrategyConfig {
        &self.0
    }

    /// Builds the runtime strategy for a run with `batch_size` examples per step.
    pub fn build(&self, batch_size: usize) -> Box<dyn Strategy> {
        if let Some(plugin) = &self.1 {
            return plugin.build(batch_size);
        }
        match self.0 {
            StrategyConfig::Plugin(_) => unreachable!("a checked plugin block has its builder"),
            StrategyConfig::Finetune {} => Box::new(Finetune),
            StrategyConfig::Joint { data } => Box::new(Joint { data }),
            StrategyConfig::Ewc {
                lambda,
                fisher,
                samples,
            } => Box::new(penalty::Penalized::ewc(lambda, fisher, samples, None)),
            StrategyConfig::OnlineEwc {
                lambda,
                gamma,
                fisher,
                samples,
            } => Box::new(penalty::Penalized::ewc(
                lambda,
                fisher,
                samples,
                Some(gamma),
            )),
            StrategyConfig::L2 { lambda } => Box::new(penalty::Penalized::l2(lambda)),
            StrategyConfig::Si { c, xi, gradient } => {
                Box::new(penalty::Penalized::si(c, xi, gradient.unwrap_or_default()))
            }
            StrategyConfig::Mas { lambda, samples } => {
                Box::new(penalty::Penalized::mas(lambda, samples))
            }
            StrategyConfig::Replay {
                budget,
                per,
                batch_size: b,
                weight,
            } => Box::new(memory::Replay::new(
                memory::Memory::new(budget, per),
                b.unwrap_or(batch_size),
                weight,
            )),
            StrategyConfig::Agem {
                budget,
                per,
                batch_size: b,
            } => Box::new(memory::Agem::new(
                memory::Memory::new(budget, per),
                b.unwrap_or(batch_size),
            )),
            StrategyConfig::Gem {
                budget,
                per,
                margin,
                eps,
            } => Box::new(gem::Gem::new(budget, per, margin, eps)),
            StrategyConfig::Lwf {
                temperature,
                scale,
                weight,
            } => Box::new(lwf::Lwf::new(temperature as f32, scale, weight)),
        }
    }
}

/// What a strategy can reach during a run.
pub struct Context<'a> {
    /// The task stream.
    pub stream: &'a TaskStream,
    /// The model.
    pub engine: &'a mut dyn Engine,
    /// The GRAPES variant of the method (for terms that train the model).
    pub grapes: GrapesMode,
    /// The run's seed (strategies derive their own random streams from it).
    pub seed: u64,
}

/// The current step's training data, as the trainer built it.
pub struct StepData<'a> {
    /// The examples, as (task, index).
    pub examples: &'a [Example],
    /// The same examples grouped by head (pixels and targets).
    pub batch: &'a MixedBatch,
}

/// A continual-learning strategy: hooks around the trainer's steps. Every hook defaults to
/// doing nothing, which is fine-tuning.
///
/// Per step, the trainer: zeroes the gradients, accumulates the current data's loss with weight
/// [`Strategy::data_weight`] together with [`Strategy::objectives_on`] the same pixels, calls
/// [`Strategy::extend_gradients`], then [`Strategy::regularize`] and applies the optimizer (or
/// applies it with the strategy's [`Strategy::pull`] when there is one), and calls
/// [`Strategy::after_update`].
pub trait Strategy: Send {
    /// Tasks whose training data a step of the 0-based task `task` is drawn from.
    fn training_tasks(&self, task: usize, _tasks: usize) -> Range<usize> {
        task..task + 1
    }

    /// How much training the phase of the 0-based task `task` (of `tasks`) gets.
    fn phase_budget(&self, _task: usize, _tasks: usize) -> PhaseBudget {
        PhaseBudget::OneTask
    }

    /// Weight of the current data's loss while training `task`.
    fn data_weight(&self, _task: usize) -> f32 {
        1.0
    }

    /// Before the first step of `task`.
    fn before_task(&mut self, _ctx: &mut Context, _task: usize) -> Result<()> {
        Ok(())
    }

    /// More objectives on the pixels of one group of the current data (`pixels`, a `share`
    /// of the batch), accumulated in the same forward and backward pass as the group's own
    /// loss (distillation on the current inputs, in LwF). The objectives may borrow from the
    /// strategy (its soft targets).
    fn objectives_on<'s>(
        &'s mut self,
        _ctx: &mut Context,
        _task: usize,
        _pixels: &[f32],
        _share: f32,
    ) -> Result<Vec<Objective<'s>>> {
        Ok(Vec::new())
    }

    /// After the current data's gradient is accumulated: add terms (replay) or transform the
    /// gradient (A-GEM).
    fn extend_gradients(
        &mut self,
        _ctx: &mut Context,
        _task: usize,
        _step: &StepData,
    ) -> Result<()> {
        Ok(())
    }

    /// Last change to the gradients before the update (penalties). Only parameters that have a
    /// gradient in this step are touched.
    fn regularize(&mut self, _params: &[Vec<f32>], _grads: &mut [Vec<f32>], _touched: &[bool]) {}

    /// A quadratic penalty whose gradient the optimizer may add inside its own pass instead of
    /// [`Strategy::regularize`] adding it before (the same numbers, one pass over the
    /// parameters fewer), with SI's path integral accumulated on the way where the strategy
    /// has one ([`crate::optim::Pull::path`]). When this is `Some`, the trainer does not call `regularize`; a
    /// strategy returns `Some` only when its `regularize` would do exactly this and nothing
    /// else.
    fn pull(&mut self) -> Option<crate::optim::Pull<'_>> {
        None
    }

    /// After the optimizer updated the parameters.
    fn after_update(&mut self, _params: &[Vec<f32>], _touched: &[bool]) {}

    /// Whether the steps of `task` need nothing between the backward pass and the update but
    /// [`Strategy::pull`]: [`Strategy::extend_gradients`] and [`Strategy::regularize`] do
    /// nothing then, and [`Strategy::after_update`] reads no gradient flag (data weights and
    /// [`Strategy::objectives_on`] are allowed; a strategy with objectives on the pixels must
    /// not have a pull). The trainer may then let the engine apply the optimizer, with the
    /// pull, inside the backward pass ([`crate::engine::Engine::accumulate_and_apply`]), where
    /// no gradient is kept. The default, `false`, is always safe.
    fn leaves_gradients_alone(&self, _task: usize) -> bool {
        false
    }

    /// After the last step of `task`.
    fn after_task(&mut self, _ctx: &mut Context, _task: usize) -> Result<()> {
        Ok(())
    }
}

/// Plain sequential training.
pub struct Finetune;
impl Strategy for Finetune {
    fn leaves_gradients_alone(&self, _task: usize) -> bool {
        true
    }
}

/// Joint training on the union of several tasks.
pub struct Joint {
    data: JointData,
}

impl Strategy for Joint {
    fn training_tasks(&self, task: usize, tasks: usize) -> Range<usize> {
        match self.data {
            JointData::Cumulative => 0..task + 1,
            JointData::All | JointData::Once => 0..tasks,
        }
    }

    fn phase_budget(&self, task: usize, _tasks: usize) -> PhaseBudget {
        match (self.data, task) {
            (JointData::Once, 0) => PhaseBudget::AllTasks,
            (JointData::Once, _) => PhaseBudget::Skip,
            _ => PhaseBudget::OneTask,
        }
    }

    fn leaves_gradients_alone(&self, _task: usize) -> bool {
        true
    }
}
