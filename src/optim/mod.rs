//! Optimizers: SGD (momentum, Nesterov), Adam, AdamW, RMSprop and Adagrad with PyTorch's update
//! rules,
//! and GRAPES ([`grapes`]), which modulates the gradients any of them receives.
//!
//! The shape follows candle-nn's `optim.rs`: a small [`Optimizer`] trait and a config type. The
//! raw, deserialized [`OptimizerConfig`] is checked once into validated [`OptimizerSettings`]
//! (in the spirit of linfa's `ParamGuard`), which builds the optimizer.

pub mod grapes;

use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

pub use grapes::GrapesMode;

use std::sync::Arc;

#[cfg(target_arch = "x86_64")]
use crate::engine::kernels::Isa;
use crate::plugin::{PluginBlock, Registry, UpdateRule, UpdateStep};
use crate::validate::{non_negative, not_applicable, positive, unit_interval, Checked, KeyError};

/// Updates parameters from gradients.
///
/// Every update rule is written once, on `f32` slices ([`Optimizer::step_slices`]); the
/// tensor entry point ([`Optimizer::step`]) copies each parameter and gradient to the host,
/// applies the same rule and writes the parameter back.
pub trait Optimizer {
    /// Applies one update. `grads[i]` belongs to `params[i]`; a `None` gradient leaves the
    /// parameter and its state untouched (as PyTorch does for parameters without a gradient).
    fn step(&mut self, params: &[Var], grads: &[Option<Tensor>]) -> Result<()>;
    /// The same update on host slices (the fast training path).
    fn step_slices(&mut self, params: &mut [&mut [f32]], grads: &[Option<&[f32]>]) {
        self.step_slices_pulled(params, grads, None);
    }
    /// [`Optimizer::step_slices`] with a quadratic penalty's gradient added to every gradient
    /// inside the update's own pass (`g + s·(a·θ − b)`, θ before the update: the same numbers
    /// as adding it first, one pass over the parameters fewer).
    fn step_slices_pulled(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[Option<&[f32]>],
        pull: Option<&mut Pull>,
    );
    /// Starts this step's update of parameter `i` (of `params` parameter tensors, `len`
    /// values) to be applied in parts ([`PartialUpdate::apply`]): the fused step updates each
    /// block of a weight's rows as soon as the backward pass has computed its gradient. The
    /// state advances as one [`Optimizer::step_slices`] with a gradient for `i` would advance
    /// it, so applying every part once gives that step's bits. `None` where the optimizer
    /// cannot (the default; plugin rules): the caller then applies whole gradients.
    fn begin_partial(
        &mut self,
        _params: usize,
        _i: usize,
        _len: usize,
    ) -> Option<PartialUpdate<'_>> {
        None
    }
    /// Whether [`Optimizer::begin_partial`] gives an update (for every parameter).
    fn applies_in_parts(&self) -> bool {
        false
    }
    /// Forgets all state (momentum buffers, moment estimates, accumulators, step counts).
    fn reset(&mut self);
    /// The learning rate the next update uses.
    fn learning_rate(&self) -> f64;
    /// Sets the learning rate of the next updates (a schedule's step); the state is kept.
    fn set_learning_rate(&mut self, lr: f64);
}

/// A quadratic penalty's pull towards its anchors, in the form the update adds to a gradient:
/// `g + s · (a ⊙ θ − b)` for parameter tensor i, with `a[i]` and `b[i]` of θ's size (the
/// penalties' [`crate::strategy::penalty::QuadraticPenalty`] stores exactly these).
#[derive(Debug)]
pub struct Pull<'a> {
    /// The factor `s` (twice the penalty's multiplier).
    pub s: f32,
    /// Per parameter tensor, the coefficients of θ.
    pub a: &'a [Vec<f32>],
    /// Per parameter tensor, the constant terms.
    pub b: &'a [Vec<f32>],
    /// SI's path integral ω, per parameter tensor, accumulated in the same pass: for every
    /// updated element `ω −= g̃ · (θ_new − θ_old)`, θ_old the parameter before its update and g̃
    /// its gradient with the pull (`true`) or before it (`false`). The same numbers as copying
    /// g̃ and running `ω −= g̃ · (θ_new − θ_old)` as a pass of its own after the update.
    pub path: Option<(&'a mut [Vec<f32>], bool)>,
}

/// One step's update of one parameter, applied in parts ([`Optimizer::begin_partial`]): the
/// rule with this step's constants and the parameter's state buffers. The update is
/// elementwise, so the parts may come in any order and from several threads at once.
pub struct PartialUpdate<'a> {
    rule: Rule,
    first: *mut f32,
    second: *mut f32,
    len: usize,
    pull: Option<PartialPull>,
    _state: std::marker::PhantomData<&'a mut [f32]>,
}

/// The parameter's share of a [`Pull`] in a [`PartialUpdate`]: `s`, the starts of `a` and `b`,
/// and of SI's path integral with its flag.
#[derive(Clone, Copy)]
struct PartialPull {
    s: f32,
    a: *const f32,
    b: *const f32,
    path: Option<(*mut f32, bool)>,
}

// SAFETY: a `PartialUpdate` holds the exclusive borrow of one parameter's state (and of its
// path integral, with a pull) for `'a`, and reads the pull's coefficients; threads that share
// it write disjoint ranges (`PartialUpdate::apply` requires it).
unsafe impl Send for PartialUpdate<'_> {}
unsafe impl Sync for PartialUpdate<'_> {}

impl<'a> PartialUpdate<'a> {
    /// The update with parameter `i`'s share of a penalty's `pull` added to its gradient
    /// inside the update ([`Optimizer::step_slices_pulled`]'s numbers), SI's path integral
    /// accumulated on the way where the pull has one.
    pub fn pulled<'b>(mut self, pull: &'b mut Pull<'_>, i: usize) -> PartialUpdate<'b>
    where
        'a: 'b,
    {
        let (a, b) = (&pull.a[i], &pull.b[i]);
        assert!(
            a.len() == self.len && b.len() == self.len,
            "pull sizes differ"
        );
        let path = pull.path.as_mut().map(|(r, with)| {
            assert_eq!(r[i].len(), self.len, "path integral size differs");
            (r[i].as_mut_ptr(), *with)
        });
        self.pull = Some(PartialPull {
            s: pull.s,
            a: a.as_ptr(),
            b: b.as_ptr(),
            path,
        });
        self
    }

    /// Updates the parameter's values `offset .. offset + p.len()` (`p`) with their gradient
    /// `g`, exactly as the whole update would.
    ///
    /// # Safety
    /// Parts applied while another is being applied (from other threads) must not overlap; each
    /// value must be updated once per step.
    pub unsafe fn apply(&self, offset: usize, p: &mut [f32], g: &[f32]) {
        let n = p.len();
        assert!(
            offset <= self.len && n <= self.len - offset && g.len() == n,
            "part outside the parameter"
        );
        // SAFETY: inside the state buffers (asserted above); no other part overlaps (caller).
        let (first, second) = unsafe {
            (
                std::slice::from_raw_parts_mut(self.first.add(offset), n),
                std::slice::from_raw_parts_mut(self.second.add(offset), n),
            )
        };
        // SAFETY: the pull's buffers have the parameter's length (asserted in `pulled`); the
        // path integral's part is this part's alone (caller).
        let pull = self.pull.map(|q| unsafe {
            (
                q.s,
                std::slice::from_raw_parts(q.a.add(offset), n),
                std::slice::from_raw_parts(q.b.add(offset), n),
                q.path
                    .map(|(r, with)| (std::slice::from_raw_parts_mut(r.add(offset), n), with)),
            )
        });
        self.rule.apply(p, g, first, second, pull);
    }
}

/// One parameter tensor's share of a [`Pull`]: `(s, a, b, path)`.
type PullSlices<'a> = (f32, &'a [f32], &'a [f32], Option<(&'a mut [f32], bool)>);

/// The optimizer of a method, as written in an experiment config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// `sgd`, `adam`, `adamw`, `rmsprop` or `adagrad`.
    pub name: String,
    /// Learning rate (required, > 0).
    pub lr: f64,
    /// SGD and RMSprop: momentum factor (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// SGD: Nesterov momentum (default false; needs momentum > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nesterov: Option<bool>,
    /// SGD: dampening of the momentum (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dampening: Option<f64>,
    /// L2 penalty added to the gradient (AdamW: decoupled decay). Default 0 (AdamW 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Adam/AdamW: (β1, β2), default (0.9, 0.999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub betas: Option<(f64, f64)>,
    /// Adam/AdamW/RMSprop: ε, default 1e-8; Adagrad: default 1e-10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// RMSprop: smoothing constant α, default 0.99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Adagrad: the value every squared-gradient accumulator starts from (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_accumulator: Option<f64>,
    /// GRAPES variant: `off` (default), `propagating` or `local`.
    #[serde(default)]
    pub grapes: GrapesMode,
    /// A plugin optimizer's block (every key but `lr` and `grapes`, which are above), when
    /// `name` is not a built-in optimizer ([`crate::plugin`]). Read and written by
    /// [`OptimizerConfig::from_block`] and [`OptimizerConfig::to_block`], which a method's
    /// `optimizer:` goes through.
    #[serde(skip)]
    pub plugin: Option<PluginBlock>,
}

/// A validated optimizer configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum OptimizerSettings {
    /// Stochastic gradient descent.
    Sgd {
        lr: f64,
        momentum: f64,
        dampening: f64,
        nesterov: bool,
        weight_decay: f64,
    },
    /// Adam (Kingma & Ba 2015), L2 weight decay added to the gradient.
    Adam {
        lr: f64,
        betas: (f64, f64),
        eps: f64,
        weight_decay: f64,
        decoupled: bool,
    },
    /// RMSprop (Hinton 2012), PyTorch's form.
    RmsProp {
        lr: f64,
        alpha: f64,
        eps: f64,
        momentum: f64,
        weight_decay: f64,
    },
    /// Adagrad (Duchi, Hazan & Singer 2011), PyTorch's form without its `lr_decay`.
    Adagrad {
        lr: f64,
        eps: f64,
        initial_accumulator: f64,
        weight_decay: f64,
    },
    /// An optimizer from another crate ([`crate::plugin::OptimizerPlugin`]).
    Plugin { lr: f64, rule: PluginRule },
}

/// A checked plugin optimizer: its recorded block (what identifies it) and its rule.
#[derive(Clone)]
pub struct PluginRule {
    block: PluginBlock,
    rule: Arc<dyn UpdateRule>,
}

impl PluginRule {
    /// The block as the run records it.
    pub fn block(&self) -> &PluginBlock {
        &self.block
    }
}

impl PartialEq for PluginRule {
    fn eq(&self, other: &Self) -> bool {
        self.block == other.block
    }
}

impl std::fmt::Debug for PluginRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.rule)
    }
}

/// The optimizer names accepted in configs.
pub const OPTIMIZER_NAMES: &[&str] = &["sgd", "adam", "adamw", "rmsprop", "adagrad"];

impl OptimizerConfig {
    /// Reads an `optimizer:` block: a built-in optimizer's keys into the fields (serde's
    /// errors for unknown keys), any other name's keys but `lr` and `grapes` into
    /// [`OptimizerConfig::plugin`].
    pub fn from_block(value: serde_yaml::Value) -> std::result::Result<OptimizerConfig, String> {
        let builtin = match value.get("name").and_then(serde_yaml::Value::as_str) {
            Some(name) => OPTIMIZER_NAMES.contains(&name.to_ascii_lowercase().as_str()),
            None => true,
        };
        if builtin {
            return serde_yaml::from_value(value).map_err(|e| e.to_string());
        }
        let serde_yaml::Value::Mapping(map) = value else {
            return Err("expected a mapping of the optimizer's keys".into());
        };
        let (block, kept) = PluginBlock::split(map, &["lr", "grapes"])?;
        #[derive(Deserialize)]
        struct Common {
            lr: f64,
            #[serde(default)]
            grapes: GrapesMode,
        }
        let common: Common =
            serde_yaml::from_value(serde_yaml::Value::Mapping(kept)).map_err(|e| e.to_string())?;
        Ok(OptimizerConfig {
            name: block.name.clone(),
            lr: common.lr,
            momentum: None,
            nesterov: None,
            dampening: None,
            weight_decay: None,
            betas: None,
            eps: None,
            alpha: None,
            initial_accumulator: None,
            grapes: common.grapes,
            plugin: Some(block),
        })
    }

    /// The block as written back (a run's config): the fields of a built-in optimizer, or a
    /// plugin's `name`, `lr`, its keys, `grapes` and `plugin`.
    pub fn to_block(&self) -> serde_yaml::Value {
        match &self.plugin {
            None => serde_yaml::to_value(self).expect("an optimizer block serializes"),
            Some(block) => {
                let mut m = block.to_mapping();
                let origin = m.shift_remove(crate::plugin::ORIGIN_KEY);
                m.insert("lr".into(), self.lr.into());
                // `name` first, then `lr`, as for the built-in optimizers.
                let mut ordered = serde_yaml::Mapping::new();
                for key in ["name", "lr"] {
                    if let Some(v) = m.shift_remove(key) {
                        ordered.insert(key.into(), v);
                    }
                }
                ordered.extend(m);
                ordered.insert(
                    "grapes".into(),
                    serde_yaml::to_value(self.grapes).expect("a GRAPES mode serializes"),
                );
                if let Some(origin) = origin {
                    ordered.insert(crate::plugin::ORIGIN_KEY.into(), origin);
                }
                serde_yaml::Value::Mapping(ordered)
            }
        }
    }

    /// The block with what a run's identity must record written out: a plugin's settings as
    /// its type writes them and its `plugin` origin ([`crate::plugin`]); built-in blocks are
    /// unchanged.
    pub fn with_recorded_defaults(mut self) -> OptimizerConfig {
        if let Some(block) = self.plugin.take() {
            self.plugin = Some(Registry::current().record_optimizer(block));
        }
        self
    }

    /// Checks every value into [`OptimizerSettings`]; an error names the key inside the
    /// optimizer block.
    pub fn check(&self) -> Checked<OptimizerSettings> {
        let lr = positive("lr", self.lr)?;
        if let Some(block) = &self.plugin {
            let rule = Registry::current().check_optimizer(block)?;
            return Ok(OptimizerSettings::Plugin {
                lr,
                rule: PluginRule {
                    block: block.clone(),
                    rule,
                },
            });
        }
        let name = self.name.to_ascii_lowercase();
        let not_for =
            |key: &str, set: bool| not_applicable(key, set, &format!("optimizer `{name}`"));
        match name.as_str() {
            "sgd" => {
                not_for("betas", self.betas.is_some())?;
                not_for("eps", self.eps.is_some())?;
                not_for("alpha", self.alpha.is_some())?;
                not_for("initial_accumulator", self.initial_accumulator.is_some())?;
                let momentum = unit_interval("momentum", self.momentum.unwrap_or(0.0))?;
                let nesterov = self.nesterov.unwrap_or(false);
                let dampening = non_negative("dampening", self.dampening.unwrap_or(0.0))?;
                if nesterov && (momentum == 0.0 || dampening != 0.0) {
                    return Err(KeyError::new(
                        "nesterov",
                        "Nesterov momentum needs momentum > 0 and dampening 0",
                    ));
                }
                Ok(OptimizerSettings::Sgd {
                    lr,
                    momentum,
                    dampening,
                    nesterov,
                    weight_decay: non_negative("weight_decay", self.weight_decay.unwrap_or(0.0))?,
                })
            }
            "adam" | "adamw" => {
                not_for("momentum", self.momentum.is_some())?;
                not_for("nesterov", self.nesterov.is_some())?;
                not_for("dampening", self.dampening.is_some())?;
                not_for("alpha", self.alpha.is_some())?;
                not_for("initial_accumulator", self.initial_accumulator.is_some())?;
                let (b1, b2) = self.betas.unwrap_or((0.9, 0.999));
                let decoupled = name == "adamw";
                let default_decay = if decoupled { 0.01 } else { 0.0 };
                Ok(OptimizerSettings::Adam {
                    lr,
                    betas: (unit_interval("betas", b1)?, unit_interval("betas", b2)?),
                    eps: positive("eps", self.eps.unwrap_or(1e-8))?,
                    weight_decay: non_negative(
                        "weight_decay",
                        self.weight_decay.unwrap_or(default_decay),
                    )?,
                    decoupled,
                })
            }
            "rmsprop" => {
                not_for("betas", self.betas.is_some())?;
                not_for("nesterov", self.nesterov.is_some())?;
                not_for("dampening", self.dampening.is_some())?;
                not_for("initial_accumulator", self.initial_accumulator.is_some())?;
                Ok(OptimizerSettings::RmsProp {
                    lr,
                    alpha: unit_interval("alpha", self.alpha.unwrap_or(0.99))?,
                    eps: positive("eps", self.eps.unwrap_or(1e-8))?,
                    momentum: unit_interval("momentum", self.momentum.unwrap_or(0.0))?,
                    weight_decay: non_negative("weight_decay", self.weight_decay.unwrap_or(0.0))?,
                })
            }
            "adagrad" => {
                not_for("momentum", self.momentum.is_some())?;
                not_for("nesterov", self.nesterov.is_some())?;
                not_for("dampening", self.dampening.is_some())?;
                not_for("betas", self.betas.is_some())?;
                not_for("alpha", self.alpha.is_some())?;
                Ok(OptimizerSettings::Adagrad {
                    lr,
                    eps: positive("eps", self.eps.unwrap_or(1e-10))?,
                    initial_accumulator: non_negative(
                        "initial_accumulator",
                        self.initial_accumulator.unwrap_or(0.0),
                    )?,
                    weight_decay: non_negative("weight_decay", self.weight_decay.unwrap_or(0.0))?,
                })
            }
            other => {
                let hint = crate::yaml::did_you_mean(other, OPTIMIZER_NAMES)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                Err(KeyError::new(
                    "name",
                    format!(
                        "unknown optimizer `{other}`; expected one of {}{hint}",
                        OPTIMIZER_NAMES.join(", ")
                    ),
                ))
            }
        }
    }
}

impl OptimizerSettings {
    /// Plain SGD with learning rate `lr` (PyTorch's defaults elsewhere: no momentum, no decay).
    pub fn sgd(lr: f64) -> OptimizerSettings {
        OptimizerSettings::Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    /// SGD with heavy-ball momentum (no dampening, no Nesterov, no decay).
    pub fn sgd_momentum(lr: f64, momentum: f64) -> OptimizerSettings {
        OptimizerSettings::Sgd {
            lr,
            momentum,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    /// Adam with PyTorch's defaults: betas (0.9, 0.999), ε 1e-8, no weight decay.
    pub fn adam(lr: f64) -> OptimizerSettings {
        OptimizerSettings::Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// A fresh optimizer with these settings.
    pub fn build(&self) -> Box<dyn Optimizer + Send> {
        if let OptimizerSettings::Plugin { lr, rule } = self {
            return Box::new(PluginOptimizer {
                lr: *lr,
                rule: rule.rule.clone(),
                state: Vec::new(),
                pulled: Vec::new(),
                before: Vec::new(),
            });
        }
        Box::new(Stateful {
            settings: self.clone(),
            state: Vec::new(),
        })
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            OptimizerSettings::Sgd { lr, .. }
            | OptimizerSettings::Adam { lr, .. }
            | OptimizerSettings::RmsProp { lr, .. }
            | OptimizerSettings::Adagrad { lr, .. }
            | OptimizerSettings::Plugin { lr, .. } => lr,
        }
    }

    /// The same settings with learning rate `new`.
    pub fn with_lr(mut self, new: f64) -> OptimizerSettings {
        match &mut self {
            OptimizerSettings::Sgd { lr, .. }
            | OptimizerSettings::Adam { lr, .. }
            | OptimizerSettings::RmsProp { lr, .. }
            | OptimizerSettings::Adagrad { lr, .. }
            | OptimizerSettings::Plugin { lr, .. } => *lr = new,
        }
        self
    }

    /// Starts one update of a parameter of `n` values: its state (created at the first
    /// update) advanced by a step, and the rule with this step's constants.
    fn begin(&self, st: &mut ParamState, n: usize) -> Rule {
        let first_step = st.first.is_empty();
        if first_step {
            st.first = vec![0.0; n];
            let start = match *self {
                OptimizerSettings::Adagrad {
                    initial_accumulator,
                    ..
                } => initial_accumulator as f32,
                _ => 0.0,
            };
            st.second = vec![start; n];
        }
        assert_eq!(st.first.len(), n, "parameter size changed");
        st.steps += 1;
        Rule::new(self, first_step, st.steps)
    }

    /// One update of parameter `p` with gradient `g` and its state, in place. The rules are
    /// PyTorch's (`torch.optim.SGD`, `Adam`, `AdamW`, `RMSprop`, `Adagrad`). Large parameters
    /// are updated in parallel chunks (the update is elementwise, so the result does not depend
    /// on it).
    fn update(&self, p: &mut [f32], g: &[f32], st: &mut ParamState, pull: Option<PullSlices>) {
        assert_eq!(p.len(), g.len(), "parameter and gradient sizes differ");
        if let Some((_, a, b, path)) = &pull {
            let n = p.len();
            assert!(a.len() == n && b.len() == n, "pull sizes differ");
            assert!(
                path.as_ref().is_none_or(|r| r.0.len() == n),
                "path integral size differs"
            );
        }
        let n = p.len();
        let rule = self.begin(st, n);
        let (first, second) = (&mut st.first[..], &mut st.second[..]);
        const CHUNK: usize = 1 << 15;
        if n < 2 * CHUNK || rayon::current_num_threads() < 2 {
            rule.apply(p, g, first, second, pull);
            return;
        }
        use rayon::prelude::*;
        // The path integral, if any, is cut into the same chunks as the parameter.
        let (pull, path) = match pull {
            Some((s, a, b, path)) => (Some((s, a, b)), path),
            None => (None, None),
        };
        let with_pull = path.as_ref().is_some_and(|r| r.1);
        let mut paths: Vec<Option<&mut [f32]>> = match path {
            Some((r, _)) => r.chunks_mut(CHUNK).map(Some).collect(),
            None => (0..n.div_ceil(CHUNK)).map(|_| None).collect(),
        };
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(first.par_chunks_mut(CHUNK))
            .zip(second.par_chunks_mut(CHUNK))
            .zip(paths.par_iter_mut())
            .enumerate()
            .for_each(|(c, ((((p, g), m), v), rec))| {
                let at = c * CHUNK..c * CHUNK + p.len();
                let pull = pull.map(|(s, a, b)| {
                    (
                        s,
                        &a[at.clone()],
                        &b[at],
                        rec.take().map(|r| (r, with_pull)),
                    )
                });
                rule.apply(p, g, m, v, pull);
            });
    }
}

/// [`Rule::apply`]'s loops compiled with a target feature: `$name` runs
/// [`Rule::apply_portable`] inlined into a function that enables `$feature`.
macro_rules! rule_apply_for {
    ($(#[$doc:meta])* $name:ident, $feature:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// The CPU must run the instruction set this copy enables.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name(
            self,
            p: &mut [f32],
            g: &[f32],
            first: &mut [f32],
            second: &mut [f32],
            pull: Option<PullSlices>,
        ) {
            self.apply_portable(p, g, first, second, pull)
        }
    };
}

/// One update rule with its constants for the current step, applied to aligned chunks of a
/// parameter, its gradient and its two state buffers (momentum or first moment; second moment).
#[derive(Debug, Clone, Copy)]
enum Rule {
    Sgd {
        lr: f32,
        wd: f32,
        momentum: f32,
        damp: f32,
        nesterov: bool,
        first_step: bool,
    },
    Adam {
        lr: f32,
        wd: f32,
        b1: f32,
        b2: f32,
        eps: f32,
        c1: f32,
        c2: f32,
        decoupled: bool,
    },
    RmsProp {
        lr: f32,
        wd: f32,
        alpha: f32,
        eps: f32,
        momentum: f32,
    },
    Adagrad {
        lr: f32,
        wd: f32,
        eps: f32,
    },
}

impl Rule {
    fn new(s: &OptimizerSettings, first_step: bool, steps: i32) -> Rule {
        match *s {
            OptimizerSettings::Plugin { .. } => {
                unreachable!("a plugin optimizer is built as a `PluginOptimizer`")
            }
            OptimizerSettings::Sgd {
                lr,
                momentum,
                dampening,
                nesterov,
                weight_decay,
            } => Rule::Sgd {
                lr: lr as f32,
                wd: weight_decay as f32,
                momentum: momentum as f32,
                damp: dampening as f32,
                nesterov,
                first_step,
            },
            OptimizerSettings::Adam {
                lr,
                betas: (b1, b2),
                eps,
                weight_decay,
                decoupled,
            } => Rule::Adam {
                lr: lr as f32,
                wd: weight_decay as f32,
                b1: b1 as f32,
                b2: b2 as f32,
                eps: eps as f32,
                c1: (1.0 - libm::pow(b1, f64::from(steps))) as f32,
                c2: (1.0 - libm::pow(b2, f64::from(steps))) as f32,
                decoupled,
            },
            OptimizerSettings::RmsProp {
                lr,
                alpha,
                eps,
                momentum,
                weight_decay,
            } => Rule::RmsProp {
                lr: lr as f32,
                wd: weight_decay as f32,
                alpha: alpha as f32,
                eps: eps as f32,
                momentum: momentum as f32,
            },
            OptimizerSettings::Adagrad {
                lr,
                eps,
                weight_decay,
                ..
            } => Rule::Adagrad {
                lr: lr as f32,
                wd: weight_decay as f32,
                eps: eps as f32,
            },
        }
    }

    /// The update of aligned chunks, the gradient of element j being `g[j]`, or with a pull
    /// `(s, a, b, path)`, `g[j] + s·(a[j]·θ[j] − b[j])` at the parameter before its update,
    /// SI's path integral `ω[j] −= g̃ · (θ_new − θ_old)` accumulated on the way (g̃ with the pull
    /// or before it, see [`Pull::path`]).
    ///
    /// The loops are compiled three times, for the vector registers of the product kernel this
    /// process uses ([`Isa::detected`]): AVX-512, AVX2 and the plain x86-64 (or other) target.
    /// Every operation is elementwise and rounded once by IEEE 754 (multiplications and
    /// additions are never contracted into fused multiply-adds, square roots and divisions are
    /// exact), so the three give the same bits; the wider registers make the pass about as fast
    /// as memory allows (Adam's pass, four lanes at a time on plain x86-64, took 13 % of a
    /// 784-1000-1000-10 step on one thread, 8 % with AVX-512, on a Zen 4).
    fn apply(
        self,
        p: &mut [f32],
        g: &[f32],
        first: &mut [f32],
        second: &mut [f32],
        pull: Option<PullSlices>,
    ) {
        #[cfg(target_arch = "x86_64")]
        match Isa::detected() {
            // SAFETY: the CPU runs the chosen kernel's instruction set (`Isa::detected` picks
            // only one this CPU runs), and AVX-512F or AVX2 is all that the copies enable.
            Isa::Avx512 => return unsafe { self.apply_avx512(p, g, first, second, pull) },
            Isa::Avx2Fma => return unsafe { self.apply_avx2(p, g, first, second, pull) },
            Isa::Scalar => {}
        }
        self.apply_portable(p, g, first, second, pull)
    }

    rule_apply_for!(
        /// [`Rule::apply`] compiled for AVX-512F.
        apply_avx512,
        "avx512f"
    );
    rule_apply_for!(
        /// [`Rule::apply`] compiled for AVX2.
        apply_avx2,
        "avx2"
    );

    /// [`Rule::apply`] for whatever target the caller is compiled for.
    #[inline(always)]
    fn apply_portable(
        self,
        p: &mut [f32],
        g: &[f32],
        first: &mut [f32],
        second: &mut [f32],
        pull: Option<PullSlices>,
    ) {
        let n = p.len();
        let g = &g[..n];
        match pull {
            None => self.apply_with(p, first, second, |j, _| g[j], |_, _, _| {}),
            Some((s, a, b, None)) => {
                let (a, b) = (&a[..n], &b[..n]);
                self.apply_with(
                    p,
                    first,
                    second,
                    |j, p| g[j] + s * (a[j] * p - b[j]),
                    |_, _, _| {},
                )
            }
            Some((s, a, b, Some((omega, with_pull)))) => {
                let (a, b, omega) = (&a[..n], &b[..n], &mut omega[..n]);
                // g̃ is computed again from the same values, so it has the bits the update used.
                self.apply_with(
                    p,
                    first,
                    second,
                    |j, p| g[j] + s * (a[j] * p - b[j]),
                    |j, old, new| {
                        let g = if with_pull {
                            g[j] + s * (a[j] * old - b[j])
                        } else {
                            g[j]
                        };
                        omega[j] -= g * (new - old);
                    },
                )
            }
        }
    }

    /// The rules, each element's gradient from `grad(j, θ_j)`, and `done(j, θ_old, θ_new)`
    /// after each element's update (indexed loops: the gradient is read through the closure by
    /// index, so every buffer is, over slices cut to `n`).
    #[inline(always)]
    #[allow(clippy::needless_range_loop)]
    fn apply_with(
        self,
        p: &mut [f32],
        first: &mut [f32],
        second: &mut [f32],
        mut grad: impl FnMut(usize, f32) -> f32,
        mut done: impl FnMut(usize, f32, f32),
    ) {
        let n = p.len();
        let (first, second) = (&mut first[..n], &mut second[..n]);
        match self {
            Rule::Sgd {
                lr,
                wd,
                momentum: 0.0,
                ..
            } => {
                for j in 0..n {
                    let old = p[j];
                    let g = grad(j, old);
                    p[j] -= lr * (g + wd * p[j]);
                    done(j, old, p[j]);
                }
            }
            Rule::Sgd {
                lr,
                wd,
                momentum: m,
                damp,
                nesterov,
                first_step,
            } => {
                for j in 0..n {
                    let old = p[j];
                    let d = grad(j, old) + wd * p[j];
                    let buf = &mut first[j];
                    *buf = if first_step {
                        d
                    } else {
                        m * *buf + (1.0 - damp) * d
                    };
                    let step = if nesterov { d + m * *buf } else { *buf };
                    p[j] -= lr * step;
                    done(j, old, p[j]);
                }
            }
            Rule::Adam {
                lr,
                wd,
                b1,
                b2,
                eps,
                c1,
                c2,
                decoupled,
            } => {
                for j in 0..n {
                    let old = p[j];
                    let g = grad(j, old);
                    let g = if decoupled {
                        p[j] *= 1.0 - lr * wd;
                        g
                    } else {
                        g + wd * p[j]
                    };
                    let (m, v) = (&mut first[j], &mut second[j]);
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    p[j] -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                    done(j, old, p[j]);
                }
            }
            Rule::RmsProp {
                lr,
                wd,
                alpha: a,
                eps,
                momentum: m,
            } => {
                for j in 0..n {
                    let old = p[j];
                    let g = grad(j, old) + wd * p[j];
                    let v = &mut second[j];
                    *v = a * *v + (1.0 - a) * g * g;
                    let step = g / (v.sqrt() + eps);
                    if m > 0.0 {
                        let buf = &mut first[j];
                        *buf = m * *buf + step;
                        p[j] -= lr * *buf;
                    } else {
                        p[j] -= lr * step;
                    }
                    done(j, old, p[j]);
                }
            }
            Rule::Adagrad { lr, wd, eps } => {
                // torch.optim.Adagrad: sum += g²; p −= lr · g / (√sum + ε).
                for j in 0..n {
                    let old = p[j];
                    let g = grad(j, old) + wd * p[j];
                    let sum = &mut second[j];
                    *sum += g * g;
                    p[j] -= lr * (g / (sum.sqrt() + eps));
                    done(j, old, p[j]);
                }
            }
        }
    }
}

/// Per-parameter state buffers (empty until the first update).
#[derive(Debug, Clone, Default)]
struct ParamState {
    /// Momentum buffer (SGD, RMSprop) or first moment (Adam).
    first: Vec<f32>,
    /// Second moment (Adam), squared-gradient average (RMSprop) or sum (Adagrad).
    second: Vec<f32>,
    /// Updates applied to this parameter (Adam's bias correction).
    steps: i32,
}

/// The tensor entry point of every optimizer ([`Optimizer::step`]): each parameter with a
/// gradient is copied to the host, updated there by `update(index, θ, g)` (the rule written
/// once on slices) and written back.
fn step_on_host(
    params: &[Var],
    grads: &[Option<Tensor>],
    mut update: impl FnMut(usize, &mut [f32], &[f32]),
) -> Result<()> {
    for (i, (var, grad)) in params.iter().zip(grads).enumerate() {
        let Some(g) = grad else { continue };
        let shape = var.shape().clone();
        let mut p = var
            .as_tensor()
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let g = g
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        update(i, &mut p, &g);
        var.set(&Tensor::from_vec(p, shape, var.device())?.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// Settings plus per-parameter state: every rule shares this layout.
struct Stateful {
    settings: OptimizerSettings,
    state: Vec<ParamState>,
}

impl Stateful {
    fn ensure_state(&mut self, n: usize) {
        if self.state.len() != n {
            self.state = vec![ParamState::default(); n];
        }
    }
}

impl Optimizer for Stateful {
    fn step(&mut self, params: &[Var], grads: &[Option<Tensor>]) -> Result<()> {
        self.ensure_state(params.len());
        let (settings, state) = (&self.settings, &mut self.state);
        step_on_host(params, grads, |i, p, g| {
            settings.update(p, g, &mut state[i], None)
        })
    }

    fn step_slices_pulled(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[Option<&[f32]>],
        mut pull: Option<&mut Pull>,
    ) {
        self.ensure_state(params.len());
        for (i, ((p, g), st)) in params
            .iter_mut()
            .zip(grads)
            .zip(self.state.iter_mut())
            .enumerate()
        {
            if let Some(g) = g {
                let pull = pull.as_deref_mut().map(|q| {
                    let path = q
                        .path
                        .as_mut()
                        .map(|(r, with)| (r[i].as_mut_slice(), *with));
                    (q.s, q.a[i].as_slice(), q.b[i].as_slice(), path)
                });
                self.settings.update(p, g, st, pull);
            }
        }
    }

    fn applies_in_parts(&self) -> bool {
        true
    }

    fn begin_partial(&mut self, params: usize, i: usize, len: usize) -> Option<PartialUpdate<'_>> {
        self.ensure_state(params);
        let st = &mut self.state[i];
        let rule = self.settings.begin(st, len);
        Some(PartialUpdate {
            rule,
            first: st.first.as_mut_ptr(),
            second: st.second.as_mut_ptr(),
            len,
            pull: None,
            _state: std::marker::PhantomData,
        })
    }

    fn reset(&mut self) {
        self.state.clear();
    }

    fn learning_rate(&self) -> f64 {
        self.settings.lr()
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.settings = self.settings.clone().with_lr(lr);
    }
}

/// A plugin's update rule ([`crate::plugin::OptimizerPlugin`]) with the state, learning rate
/// and step counts clbench keeps for it.
struct PluginOptimizer {
    lr: f64,
    rule: Arc<dyn UpdateRule>,
    /// Per parameter tensor: its updates so far and its state buffers.
    state: Vec<(u64, Vec<Vec<f32>>)>,
    /// The gradient with a penalty's pull added, per tensor (reused between steps).
    pulled: Vec<f32>,
    /// A tensor's values before its update, for SI's path integral (reused between steps).
    before: Vec<f32>,
}

impl PluginOptimizer {
    /// One update of tensor `i`. Large tensors go in parallel chunks, as the built-in rules
    /// do (the plugin's rule is elementwise, so the result does not depend on it).
    fn update(&mut self, i: usize, p: &mut [f32], g: &[f32]) {
        assert_eq!(p.len(), g.len(), "parameter and gradient sizes differ");
        let buffers = self.rule.state_buffers();
        let (steps, state) = &mut self.state[i];
        if state.len() != buffers || state.iter().any(|b| b.len() != p.len()) {
            *state = vec![vec![0.0; p.len()]; buffers];
            *steps = 0;
        }
        *steps += 1;
        let step = UpdateStep {
            lr: self.lr as f32,
            step: *steps,
            tensor: i,
            offset: 0,
        };
        const CHUNK: usize = 1 << 15;
        let rule = self.rule.as_ref();
        if p.len() < 2 * CHUNK || rayon::current_num_threads() < 2 {
            let mut chunks: Vec<&mut [f32]> = state.iter_mut().map(|b| &mut b[..]).collect();
            rule.update(&step, p, g, &mut chunks);
            return;
        }
        use rayon::prelude::*;
        // Every state buffer cut into the same chunks as the parameter.
        let mut per_chunk: Vec<Vec<&mut [f32]>> =
            (0..p.len().div_ceil(CHUNK)).map(|_| Vec::new()).collect();
        for buffer in state.iter_mut() {
            for (c, part) in buffer.chunks_mut(CHUNK).enumerate() {
                per_chunk[c].push(part);
            }
        }
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(per_chunk.par_iter_mut())
            .enumerate()
            .for_each(|(c, ((p, g), st))| {
                let step = UpdateStep {
                    offset: c * CHUNK,
                    ..step
                };
                rule.update(&step, p, g, st);
            });
    }
}

impl Optimizer for PluginOptimizer {
    fn step(&mut self, params: &[Var], grads: &[Option<Tensor>]) -> Result<()> {
        if self.state.len() != params.len() {
            self.state = vec![(0, Vec::new()); params.len()];
        }
        step_on_host(params, grads, |i, p, g| self.update(i, p, g))
    }

    fn step_slices_pulled(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[Option<&[f32]>],
        mut pull: Option<&mut Pull>,
    ) {
        if self.state.len() != params.len() {
            self.state = vec![(0, Vec::new()); params.len()];
        }
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            match pull.as_deref_mut() {
                None => self.update(i, p, g),
                Some(q) => {
                    // The penalty's gradient added first (the built-in rules add it inside
                    // their own pass: the same numbers), SI's path integral after the update.
                    let (a, b) = (&q.a[i], &q.b[i]);
                    let mut pulled = std::mem::take(&mut self.pulled);
                    pulled.clear();
                    pulled.extend(
                        g.iter()
                            .zip(p.iter())
                            .enumerate()
                            .map(|(j, (&g, &p))| g + q.s * (a[j] * p - b[j])),
                    );
                    let mut before = std::mem::take(&mut self.before);
                    if q.path.is_some() {
                        before.clear();
                        before.extend_from_slice(p);
                    }
                    self.update(i, p, &pulled);
                    if let Some((omega, with_pull)) = q.path.as_mut() {
                        let g: &[f32] = if *with_pull { &pulled } else { g };
                        for (((w, &g), &new), &old) in
                            omega[i].iter_mut().zip(g).zip(p.iter()).zip(&before)
                        {
                            *w -= g * (new - old);
                        }
                    }
                    self.pulled = pulled;
                    self.before = before;
                }
            }
        }
    }

    fn reset(&mut self) {
        self.state.clear();
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }
}

/// The update rules against hand-computed steps (PyTorch's conventions).
#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn run(yaml: &str, p0: f32, grads: &[f32]) -> Vec<f32> {
        let cfg: OptimizerConfig = serde_yaml::from_str(yaml).unwrap();
        let mut opt = cfg.check().unwrap().build();
        let var = Var::new(&[p0], &Device::Cpu).unwrap();
        let mut out = Vec::new();
        for &g in grads {
            let g = Tensor::new(&[g], &Device::Cpu).unwrap();
            opt.step(std::slice::from_ref(&var), &[Some(g)]).unwrap();
            out.push(var.as_tensor().to_vec1::<f32>().unwrap()[0]);
        }
        out
    }

    fn close(a: &[f32], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((*x as f64 - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn sgd_with_momentum_and_weight_decay() {
        // buf1 = g1 + wd p0 = 1 + 0.1 = 1.1 → p1 = 1 − 0.1·1.1 = 0.89
        // d2 = 2 + 0.1·0.89 = 2.089; buf2 = 0.9·1.1 + 2.089 = 3.079 → p2 = 0.89 − 0.3079 = 0.5821
        close(
            &run(
                "{name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 0.1}",
                1.0,
                &[1.0, 2.0],
            ),
            &[0.89, 0.5821],
        );
    }

    #[test]
    fn sgd_nesterov() {
        // buf1 = 1, d = 1 + 0.9 = 1.9 → p1 = 1 − 0.19 = 0.81; buf2 = 0.9 + 1 = 1.9, d = 1 + 1.71 = 2.71
        close(
            &run(
                "{name: sgd, lr: 0.1, momentum: 0.9, nesterov: true}",
                1.0,
                &[1.0, 1.0],
            ),
            &[0.81, 0.81 - 0.271],
        );
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        // m̂ = g, v̂ = g² → step = lr · g / (|g| + ε) ≈ lr.
        let p = run("{name: adam, lr: 0.01}", 0.5, &[3.0]);
        close(&p, &[0.5 - 0.01 * 3.0 / (3.0 + 1e-8)]);
    }

    #[test]
    fn adamw_decays_the_weights_separately() {
        let p = run("{name: adamw, lr: 0.1, weight_decay: 0.5}", 2.0, &[1.0]);
        close(&p, &[2.0 * (1.0 - 0.05) - 0.1 * 1.0 / (1.0 + 1e-8)]);
    }

    #[test]
    fn rmsprop_matches_its_formula() {
        // v = 0.01·4 = 0.04 → step = 2/(0.2 + ε) = 10 → p = 1 − 0.01·10
        close(&run("{name: rmsprop, lr: 0.01}", 1.0, &[2.0]), &[0.9]);
    }

    #[test]
    fn adagrad_matches_its_formula() {
        // sum1 = 4 → p1 = 1 − 0.1·2/2 = 0.9; sum2 = 4 + 1 = 5 → p2 = 0.9 − 0.1·1/√5.
        close(
            &run("{name: adagrad, lr: 0.1}", 1.0, &[2.0, 1.0]),
            &[0.9, 0.9 - 0.1 / 5f64.sqrt()],
        );
        // Weight decay enters the gradient; the accumulator starts where it is told.
        // g = 2 + 0.5·1 = 2.5, sum = 1 + 6.25 = 7.25 → p = 1 − 0.1·2.5/√7.25.
        close(
            &run(
                "{name: adagrad, lr: 0.1, weight_decay: 0.5, initial_accumulator: 1.0}",
                1.0,
                &[2.0],
            ),
            &[1.0 - 0.25 / 7.25f64.sqrt()],
        );
    }

    #[test]
    fn adagrad_matches_pytorch_to_the_bit() {
        // torch 2.15.0, float32: `torch.optim.Adagrad([p], lr=0.01)` from p = 0.5 with the
        // gradients 0.3, −0.2, 0.05, and `Adagrad([p], lr=0.1, weight_decay=0.5,
        // initial_accumulator_value=1.0)` from p = 1 with gradient 2; the bits of `p` after
        // every step (`p.detach().numpy().view('uint32')`).
        let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(run("{name: adagrad, lr: 0.01}", 0.5, &[0.3, -0.2, 0.05])),
            [1056629064, 1056815190, 1056769099]
        );
        assert_eq!(
            bits(run(
                "{name: adagrad, lr: 0.1, weight_decay: 0.5, initial_accumulator: 1.0}",
                1.0,
                &[2.0]
            )),
            [1063795491]
        );
    }

    #[test]
    fn the_learning_rate_can_be_changed_between_steps() {
        let cfg: OptimizerConfig =
            serde_yaml::from_str("{name: sgd, lr: 1.0, momentum: 0.5}").unwrap();
        let mut opt = cfg.check().unwrap().build();
        assert_eq!(opt.learning_rate(), 1.0);
        let var = Var::new(&[0f32], &Device::Cpu).unwrap();
        let g = || Some(Tensor::new(&[1f32], &Device::Cpu).unwrap());
        opt.step(std::slice::from_ref(&var), &[g()]).unwrap();
        opt.set_learning_rate(0.1);
        assert_eq!(opt.learning_rate(), 0.1);
        opt.step(std::slice::from_ref(&var), &[g()]).unwrap();
        // −1, then the momentum buffer 0.5 + 1 = 1.5 at lr 0.1: −1.15.
        close(&var.as_tensor().to_vec1::<f32>().unwrap(), &[-1.15]);
    }

    #[test]
    fn reset_forgets_momentum() {
        let cfg: OptimizerConfig =
            serde_yaml::from_str("{name: sgd, lr: 1.0, momentum: 0.9}").unwrap();
        let mut opt = cfg.check().unwrap().build();
        let var = Var::new(&[0f32], &Device::Cpu).unwrap();
        let g = || Some(Tensor::new(&[1f32], &Device::Cpu).unwrap());
        opt.step(std::slice::from_ref(&var), &[g()]).unwrap();
        opt.reset();
        opt.step(std::slice::from_ref(&var), &[g()]).unwrap();
        // Without the reset the second step would be 1.9.
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), vec![-2.0]);
    }

    #[test]
    fn a_missing_gradient_leaves_parameter_and_state_alone() {
        let cfg: OptimizerConfig =
            serde_yaml::from_str("{name: adam, lr: 0.1, weight_decay: 0.1}").unwrap();
        let mut opt = cfg.check().unwrap().build();
        let var = Var::new(&[1f32], &Device::Cpu).unwrap();
        opt.step(std::slice::from_ref(&var), &[None]).unwrap();
        assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), vec![1.0]);
    }

    #[test]
    fn invalid_settings_name_the_key() {
        let check = |yaml: &str| {
            let cfg: OptimizerConfig = serde_yaml::from_str(yaml).unwrap();
            cfg.check().unwrap_err()
        };
        assert_eq!(check("{name: sgd, lr: -0.1}").key, "lr");
        assert_eq!(check("{name: sgd, lr: 0.1, momentum: 1.5}").key, "momentum");
        assert_eq!(
            check("{name: sgd, lr: 0.1, nesterov: true}").key,
            "nesterov"
        );
        let e = check("{name: adam, lr: 0.1, momentum: 0.9}");
        assert_eq!(e.key, "momentum");
        assert_eq!(e.message, "does not apply to optimizer `adam`");
        assert_eq!(
            check("{name: adagrad, lr: 0.1, momentum: 0.9}").key,
            "momentum"
        );
        assert_eq!(
            check("{name: adagrad, lr: 0.1, initial_accumulator: -1}").key,
            "initial_accumulator"
        );
        assert_eq!(
            check("{name: sgd, lr: 0.1, initial_accumulator: 0.1}").key,
            "initial_accumulator"
        );
        let e = check("{name: adamm, lr: 0.1}");
        assert_eq!(e.key, "name");
        assert!(e.message.contains("did you mean `adam`"), "{}", e.message);
    }

    #[test]
    fn constructors_equal_their_checked_configs() {
        let check = |yaml: &str| {
            serde_yaml::from_str::<OptimizerConfig>(yaml)
                .unwrap()
                .check()
                .unwrap()
        };
        assert_eq!(OptimizerSettings::sgd(0.1), check("{name: sgd, lr: 0.1}"));
        assert_eq!(
            OptimizerSettings::sgd_momentum(0.01, 0.9),
            check("{name: sgd, lr: 0.01, momentum: 0.9}")
        );
        assert_eq!(
            OptimizerSettings::adam(0.001),
            check("{name: adam, lr: 0.001}")
        );
    }
}
