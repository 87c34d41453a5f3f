//! Optimizers: SGD (momentum, Nesterov), Adam, AdamW and RMSprop with PyTorch's update rules,
//! and GRAPES ([`grapes`]), which modulates the gradients any of them receives.
//!
//! The shape follows candle-nn's `optim.rs`: a small [`Optimizer`] trait and a config type. The
//! raw, deserialized [`OptimizerConfig`] is checked once into validated [`OptimizerSettings`]
//! (in the spirit of linfa's `ParamGuard`), which builds the optimizer.

pub mod grapes;

use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

pub use grapes::GrapesMode;

/// Updates parameters from gradients.
pub trait Optimizer {
    /// Applies one update. `grads[i]` belongs to `params[i]`; a `None` gradient leaves the
    /// parameter and its state untouched (as PyTorch does for parameters without a gradient).
    fn step(&mut self, params: &[Var], grads: &[Option<Tensor>]) -> Result<()>;
    /// Forgets all state (momentum buffers, moment estimates, step counts).
    fn reset(&mut self);
}

/// The optimizer of a method, as written in an experiment config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// `sgd`, `adam`, `adamw` or `rmsprop`.
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
    /// Adam/AdamW/RMSprop: ε, default 1e-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// RMSprop: smoothing constant α, default 0.99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// GRAPES variant: `off` (default), `propagating` or `local`.
    #[serde(default)]
    pub grapes: GrapesMode,
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
}

/// The optimizer names accepted in configs.
pub const OPTIMIZER_NAMES: &[&str] = &["sgd", "adam", "adamw", "rmsprop"];

impl OptimizerConfig {
    /// Checks every value; `Err((key, message))` names the offending key (relative to the
    /// optimizer block).
    pub fn check(&self) -> std::result::Result<OptimizerSettings, (String, String)> {
        let err = |key: &str, msg: String| Err((key.to_string(), msg));
        let positive = |key: &str, v: f64| -> std::result::Result<f64, (String, String)> {
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err((
                    key.to_string(),
                    format!("expected a positive number, got {v}"),
                ))
            }
        };
        let non_negative = |key: &str,
                            v: Option<f64>,
                            default: f64|
         -> std::result::Result<f64, (String, String)> {
            let v = v.unwrap_or(default);
            if v.is_finite() && v >= 0.0 {
                Ok(v)
            } else {
                Err((key.to_string(), format!("expected a number ≥ 0, got {v}")))
            }
        };
        let unit = |key: &str, v: f64| -> std::result::Result<f64, (String, String)> {
            if (0.0..1.0).contains(&v) {
                Ok(v)
            } else {
                Err((
                    key.to_string(),
                    format!("expected a number in [0, 1), got {v}"),
                ))
            }
        };
        let lr = positive("lr", self.lr)?;
        let name = self.name.to_ascii_lowercase();
        let not_for = |key: &str, set: bool| -> std::result::Result<(), (String, String)> {
            if set {
                Err((
                    key.to_string(),
                    format!("does not apply to optimizer `{name}`"),
                ))
            } else {
                Ok(())
            }
        };
        match name.as_str() {
            "sgd" => {
                not_for("betas", self.betas.is_some())?;
                not_for("eps", self.eps.is_some())?;
                not_for("alpha", self.alpha.is_some())?;
                let momentum = unit("momentum", self.momentum.unwrap_or(0.0))?;
                let nesterov = self.nesterov.unwrap_or(false);
                let dampening = non_negative("dampening", self.dampening, 0.0)?;
                if nesterov && (momentum == 0.0 || dampening != 0.0) {
                    return err(
                        "nesterov",
                        "Nesterov momentum needs momentum > 0 and dampening 0".into(),
                    );
                }
                Ok(OptimizerSettings::Sgd {
                    lr,
                    momentum,
                    dampening,
                    nesterov,
                    weight_decay: non_negative("weight_decay", self.weight_decay, 0.0)?,
                })
            }
            "adam" | "adamw" => {
                not_for("momentum", self.momentum.is_some())?;
                not_for("nesterov", self.nesterov.is_some())?;
                not_for("dampening", self.dampening.is_some())?;
                not_for("alpha", self.alpha.is_some())?;
                let (b1, b2) = self.betas.unwrap_or((0.9, 0.999));
                let decoupled = name == "adamw";
                Ok(OptimizerSettings::Adam {
                    lr,
                    betas: (unit("betas", b1)?, unit("betas", b2)?),
                    eps: positive("eps", self.eps.unwrap_or(1e-8))?,
                    weight_decay: non_negative(
                        "weight_decay",
                        self.weight_decay,
                        if decoupled { 0.01 } else { 0.0 },
                    )?,
                    decoupled,
                })
            }
            "rmsprop" => {
                not_for("betas", self.betas.is_some())?;
                not_for("nesterov", self.nesterov.is_some())?;
                not_for("dampening", self.dampening.is_some())?;
                Ok(OptimizerSettings::RmsProp {
                    lr,
                    alpha: unit("alpha", self.alpha.unwrap_or(0.99))?,
                    eps: positive("eps", self.eps.unwrap_or(1e-8))?,
                    momentum: unit("momentum", self.momentum.unwrap_or(0.0))?,
                    weight_decay: non_negative("weight_decay", self.weight_decay, 0.0)?,
                })
            }
            other => {
                let hint = crate::yaml::did_you_mean(other, OPTIMIZER_NAMES)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                err(
                    "name",
                    format!(
                        "unknown optimizer `{other}`; expected one of {}{hint}",
                        OPTIMIZER_NAMES.join(", ")
                    ),
                )
            }
        }
    }
}

impl OptimizerSettings {
    /// A fresh optimizer with these settings.
    pub fn build(&self) -> Box<dyn Optimizer + Send> {
        Box::new(Stateful {
            settings: self.clone(),
            state: Vec::new(),
            steps: 0,
        })
    }
}

/// Per-parameter state buffers.
#[derive(Debug, Clone, Default)]
struct ParamState {
    /// Momentum buffer (SGD, RMSprop) or first moment (Adam).
    first: Option<Tensor>,
    /// Second moment (Adam) or squared-gradient average (RMSprop).
    second: Option<Tensor>,
    /// Updates applied to this parameter (Adam's bias correction).
    steps: i32,
}

/// One implementation for every rule: the state layout is shared, the arithmetic differs.
struct Stateful {
    settings: OptimizerSettings,
    state: Vec<ParamState>,
    steps: u64,
}

impl Optimizer for Stateful {
    fn step(&mut self, params: &[Var], grads: &[Option<Tensor>]) -> Result<()> {
        if self.state.len() != params.len() {
            self.state = vec![ParamState::default(); params.len()];
        }
        self.steps += 1;
        for ((var, grad), st) in params.iter().zip(grads).zip(self.state.iter_mut()) {
            let Some(g) = grad else { continue };
            let p = var.as_tensor();
            let new = match self.settings {
                OptimizerSettings::Sgd {
                    lr,
                    momentum,
                    dampening,
                    nesterov,
                    weight_decay,
                } => {
                    let mut d = if weight_decay > 0.0 {
                        (g + (p * weight_decay)?)?
                    } else {
                        g.clone()
                    };
                    if momentum > 0.0 {
                        let buf = match &st.first {
                            None => d.clone(),
                            Some(b) => ((b * momentum)? + (&d * (1.0 - dampening))?)?,
                        };
                        d = if nesterov {
                            (d + (&buf * momentum)?)?
                        } else {
                            buf.clone()
                        };
                        st.first = Some(buf);
                    }
                    (p - (d * lr)?)?
                }
                OptimizerSettings::Adam {
                    lr,
                    betas: (b1, b2),
                    eps,
                    weight_decay,
                    decoupled,
                } => {
                    let (p_dec, g) = if decoupled {
                        ((p * (1.0 - lr * weight_decay))?, g.clone())
                    } else if weight_decay > 0.0 {
                        (p.clone(), (g + (p * weight_decay)?)?)
                    } else {
                        (p.clone(), g.clone())
                    };
                    let m = match &st.first {
                        None => (&g * (1.0 - b1))?,
                        Some(m) => ((m * b1)? + (&g * (1.0 - b1))?)?,
                    };
                    let v = match &st.second {
                        None => (g.sqr()? * (1.0 - b2))?,
                        Some(v) => ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
                    };
                    st.steps += 1;
                    let c1 = 1.0 - b1.powi(st.steps);
                    let c2 = 1.0 - b2.powi(st.steps);
                    let denom = ((&v / c2)?.sqrt()? + eps)?;
                    let update = ((&m / c1)?.div(&denom)? * lr)?;
                    st.first = Some(m);
                    st.second = Some(v);
                    (p_dec - update)?
                }
                OptimizerSettings::RmsProp {
                    lr,
                    alpha,
                    eps,
                    momentum,
                    weight_decay,
                } => {
                    let g = if weight_decay > 0.0 {
                        (g + (p * weight_decay)?)?
                    } else {
                        g.clone()
                    };
                    let v = match &st.second {
                        None => (g.sqr()? * (1.0 - alpha))?,
                        Some(v) => ((v * alpha)? + (g.sqr()? * (1.0 - alpha))?)?,
                    };
                    let step = g.div(&(v.sqrt()? + eps)?)?;
                    st.second = Some(v);
                    let step = if momentum > 0.0 {
                        let buf = match &st.first {
                            None => step,
                            Some(b) => ((b * momentum)? + step)?,
                        };
                        st.first = Some(buf.clone());
                        buf
                    } else {
                        step
                    };
                    (p - (step * lr)?)?
                }
            };
            var.set(&new)?;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.state.clear();
        self.steps = 0;
    }
}
