//! The gradient engine: the model's parameters and gradients as host `f32` buffers, and the one
//! operation every training step and every continual-learning strategy is built from —
//! "add `weight × ∇ loss` of this batch part to the gradients".
//!
//! It sits beneath [`crate::train`] and [`crate::strategy`] and depends only on
//! [`crate::models`] and [`crate::optim`]:
//!
//! - [`FusedMlp`] ([`fused`]): the fused CPU step of an MLP, the default for MLPs on CPU;
//! - [`FusedCnn`] ([`conv`]): the fused CPU step of the CNN (its fully connected layers are
//!   [`fused`]'s), the default for CNNs on CPU;
//! - [`TensorEngine`] ([`tensor`]): candle tensors — the explicit MLP backward or autograd, any
//!   model, any device;
//! - [`kernels`]: the matrix products of the fused step and how they are split between the
//!   threads of the current rayon pool.
//!
//! Strategies only see the [`Engine`] trait, so each is written once. [`BackwardPath`] names
//! which engine and backward pass a run uses.

pub mod conv;
pub mod dropout;
pub mod fused;
pub mod kernels;
pub mod tensor;

use std::ops::Range;

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::models::loss::Targets;
use crate::models::Network;
use crate::optim::{GrapesMode, Optimizer, Pull};

pub use conv::{CnnPasses, FusedCnn};
pub use dropout::Dropout;
pub use fused::{FusedMlp, MlpPasses};
pub use tensor::TensorEngine;

/// Which backward pass computes the gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackwardPath {
    /// The fused step on CPU; elsewhere the explicit backward for MLPs, autograd for CNNs.
    #[default]
    Auto,
    /// Always candle's autograd (the reference path).
    Autograd,
    /// The explicit MLP backward on candle tensors (fails for CNNs).
    Explicit,
    /// The fused, allocation-free step on CPU ([`fused`] for MLPs, [`conv`] for CNNs); off the
    /// CPU, as `auto`.
    Fused,
}

impl BackwardPath {
    /// The tensor-level path for `net` (what runs where the fused step does not): `Fused` and
    /// `Explicit` compute the same gradients for an MLP, so both give `Explicit` there; a CNN
    /// gets autograd.
    pub fn resolve(self, net: &Network) -> BackwardPath {
        match self {
            BackwardPath::Auto | BackwardPath::Fused if net.is_mlp() => BackwardPath::Explicit,
            BackwardPath::Auto | BackwardPath::Fused => BackwardPath::Autograd,
            other => other,
        }
    }

    /// Whether training on `device` uses the fused step.
    pub fn is_fused(self, device: &Device) -> bool {
        device.is_cpu() && matches!(self, BackwardPath::Auto | BackwardPath::Fused)
    }
}

/// What every engine keeps on the host: the parameters in the order of [`Network::params`],
/// the gradients of the current step in the same order, and which parameters the step has
/// reached. A gradient is valid only where `touched`; [`Engine::zero_grad`] clears the flags,
/// not the buffers, and the first contribution to an untouched parameter overwrites its buffer.
#[derive(Debug, Clone)]
pub(crate) struct HostParams {
    pub(crate) params: Vec<Vec<f32>>,
    pub(crate) grads: Vec<Vec<f32>>,
    pub(crate) touched: Vec<bool>,
}

impl HostParams {
    /// Copies `net`'s parameters; no gradient yet.
    pub(crate) fn of(net: &Network) -> Result<HostParams> {
        let params = net
            .params
            .iter()
            .map(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>())
            .collect::<Result<Vec<_>>>()?;
        Ok(HostParams {
            grads: params.iter().map(|p| vec![0.0; p.len()]).collect(),
            touched: vec![false; params.len()],
            params,
        })
    }

    /// Copies the parameters into `net`'s `Var`s (those that `only` flags, or all).
    pub(crate) fn write_back(&self, net: &Network, only: Option<&[bool]>) -> Result<()> {
        for (i, (var, p)) in net.params.iter().zip(&self.params).enumerate() {
            if only.is_none_or(|o| o[i]) {
                var.set(&Tensor::from_slice(p, var.shape(), var.device())?)?;
            }
        }
        Ok(())
    }

    /// The gradients of the current step (`None` for parameters it did not reach).
    pub(crate) fn gradients(&self) -> Vec<Option<&[f32]>> {
        self.grads
            .iter()
            .zip(&self.touched)
            .map(|(g, &t)| t.then_some(g.as_slice()))
            .collect()
    }

    /// Starts a step: no parameter has a gradient.
    pub(crate) fn zero_grad(&mut self) {
        self.touched.fill(false);
    }

    /// Parameters, gradients and touched flags, for [`Engine::state_mut`].
    pub(crate) fn state_mut(&mut self) -> (&[Vec<f32>], &mut [Vec<f32>], &mut [bool]) {
        (&self.params, &mut self.grads, &mut self.touched)
    }

    /// Adds `weight × g` to parameter `i`'s gradient (overwriting it where the step had not
    /// reached `i` yet).
    pub(crate) fn add(&mut self, i: usize, weight: f32, g: &[f32]) {
        let dst = &mut self.grads[i];
        if self.touched[i] {
            dst.iter_mut().zip(g).for_each(|(d, v)| *d += weight * v);
        } else {
            dst.iter_mut().zip(g).for_each(|(d, v)| *d = weight * v);
            self.touched[i] = true;
        }
    }

    /// Applies `optimizer` with the gradients that `touched` flags (the other parameters have
    /// no gradient this step and are left alone, state included), a penalty's `pull` added to
    /// them inside the update's pass.
    pub(crate) fn step(&mut self, optimizer: &mut (dyn Optimizer + Send), pull: Option<&mut Pull>) {
        let grads: Vec<Option<&[f32]>> = self
            .grads
            .iter()
            .zip(&self.touched)
            .map(|(g, &t)| t.then_some(g.as_slice()))
            .collect();
        let mut params: Vec<&mut [f32]> = self.params.iter_mut().map(Vec::as_mut_slice).collect();
        optimizer.step_slices_pulled(&mut params, &grads, pull);
    }
}

/// The model-specific half of a fused CPU engine ([`FusedMlp`], [`FusedCnn`]): its forward and
/// backward passes on host buffers. [`Fused`] holds the parameters, gradients and GRAPES
/// factors and supplies the rest of [`Engine`], the same for every fused model.
pub trait FusedPasses {
    /// Adds `Σ weight × ∇` of the objectives' mean losses on the batch `x` to `grads` with one
    /// forward and one backward pass (a parameter whose `touched` flag is off is overwritten,
    /// then flagged), GRAPES applied as `mode` says with the factors written into `factors`;
    /// returns each objective's mean loss (a non-finite one adds nothing).
    #[allow(clippy::too_many_arguments)]
    fn accumulate(
        &mut self,
        params: &[Vec<f32>],
        grads: &mut [Vec<f32>],
        touched: &mut [bool],
        factors: &mut [Vec<f32>],
        x: &[f32],
        objectives: &[Objective],
        mode: GrapesMode,
    ) -> Vec<f32>;
    /// [`FusedPasses::accumulate`] into zeroed gradients followed by `optimizer`'s step (with a
    /// penalty's `pull`, as [`Engine::apply_pulled`]), with each parameter updated as soon as
    /// the backward pass has its gradient and no gradient stored (`touched` is left alone);
    /// nothing is updated when the first objective's loss is not finite. The same bits as the
    /// two apart. `None` (the default) where these passes cannot; then nothing was done.
    /// Called only with an optimizer that [`Optimizer::applies_in_parts`].
    #[allow(clippy::too_many_arguments)]
    fn accumulate_updating(
        &mut self,
        _params: &mut [Vec<f32>],
        _optimizer: &mut (dyn Optimizer + Send),
        _pull: Option<&mut Pull>,
        _factors: &mut [Vec<f32>],
        _x: &[f32],
        _objectives: &[Objective],
        _mode: GrapesMode,
    ) -> Option<Vec<f32>> {
        None
    }
    /// Logits `[rows, head outputs]` of `x` with `params`, nothing dropped.
    fn logits(&mut self, params: &[Vec<f32>], x: &[f32], head: usize) -> Vec<f32>;
    /// Turns training-time dropout on or off (see [`Engine::set_dropout`]).
    fn set_dropout(&mut self, dropout: Option<Dropout>);
}

/// A fused CPU engine: a model's [`FusedPasses`] with its parameters, gradients and GRAPES
/// factors as host buffers.
#[derive(Debug, Clone)]
pub struct Fused<P> {
    passes: P,
    host: HostParams,
    /// GRAPES factors of every hidden layer (valid after a step with GRAPES on).
    factors: Vec<Vec<f32>>,
}

impl<P> Fused<P> {
    /// `passes` over a copy of `net`'s parameters, with one factor vector per hidden layer of
    /// the given widths.
    pub(crate) fn new(
        passes: P,
        net: &Network,
        widths: impl Iterator<Item = usize>,
    ) -> Result<Self> {
        Ok(Fused {
            passes,
            host: HostParams::of(net)?,
            factors: widths.map(|w| vec![1.0; w]).collect(),
        })
    }

    /// Copies the parameters into the network's `Var`s.
    pub fn write_back(&self, net: &Network) -> Result<()> {
        self.host.write_back(net, None)
    }

    /// The gradients of the last step (`None` for parameters it did not reach).
    pub fn gradients(&self) -> Vec<Option<&[f32]>> {
        self.host.gradients()
    }

    /// Adds the objectives' gradients of the batch `x` (see [`FusedPasses::accumulate`]).
    fn accumulate_objectives(
        &mut self,
        x: &[f32],
        objectives: &[Objective],
        mode: GrapesMode,
    ) -> Vec<f32>
    where
        P: FusedPasses,
    {
        let host = &mut self.host;
        self.passes.accumulate(
            &host.params,
            &mut host.grads,
            &mut host.touched,
            &mut self.factors,
            x,
            objectives,
            mode,
        )
    }
}

impl<P: FusedPasses> Engine for Fused<P> {
    fn params(&self) -> &[Vec<f32>] {
        &self.host.params
    }

    fn zero_grad(&mut self) {
        self.host.zero_grad();
    }

    fn accumulate(&mut self, part: &Part, grapes: GrapesMode) -> Result<f32> {
        let objective = part.objective();
        Ok(self.accumulate_objectives(part.pixels, std::slice::from_ref(&objective), grapes)[0])
    }

    fn accumulate_all(
        &mut self,
        pixels: &[f32],
        objectives: &[Objective],
        grapes: GrapesMode,
    ) -> Result<Vec<f32>> {
        Ok(self.accumulate_objectives(pixels, objectives, grapes))
    }

    fn state_mut(&mut self) -> (&[Vec<f32>], &mut [Vec<f32>], &mut [bool]) {
        self.host.state_mut()
    }

    fn accumulate_and_apply(
        &mut self,
        pixels: &[f32],
        objectives: &[Objective],
        grapes: GrapesMode,
        optimizer: &mut (dyn Optimizer + Send),
        mut pull: Option<&mut Pull>,
    ) -> Result<Vec<f32>> {
        if optimizer.applies_in_parts() {
            self.host.zero_grad();
            if let Some(losses) = self.passes.accumulate_updating(
                &mut self.host.params,
                optimizer,
                pull.as_deref_mut(),
                &mut self.factors,
                pixels,
                objectives,
                grapes,
            ) {
                return Ok(losses);
            }
        }
        accumulate_then_apply(self, pixels, objectives, grapes, optimizer, pull)
    }

    fn apply_pulled(
        &mut self,
        optimizer: &mut (dyn Optimizer + Send),
        pull: Option<&mut Pull>,
    ) -> Result<()> {
        self.host.step(optimizer, pull);
        Ok(())
    }

    fn logits(&mut self, params: Option<&[Vec<f32>]>, x: &[f32], head: usize) -> Result<Vec<f32>> {
        let params = params.unwrap_or(&self.host.params);
        Ok(self.passes.logits(params, x, head))
    }

    fn factors(&self) -> &[Vec<f32>] {
        &self.factors
    }

    fn set_dropout(&mut self, dropout: Option<Dropout>) -> Result<()> {
        self.passes.set_dropout(dropout);
        Ok(())
    }

    fn sync(&self, net: &Network) -> Result<()> {
        self.write_back(net)
    }
}

/// The engine a run on `device` trains `net` with: the fused step when `path` allows it there,
/// else candle tensors.
pub fn engine_for(net: &Network, path: BackwardPath, device: &Device) -> Result<Box<dyn Engine>> {
    Ok(if path.is_fused(device) {
        if net.is_mlp() {
            Box::new(FusedMlp::from_network(net)?)
        } else {
            Box::new(FusedCnn::from_network(net)?)
        }
    } else {
        Box::new(TensorEngine::new(net, path.resolve(net), device)?)
    })
}

/// [`Engine::accumulate_and_apply`] as two passes: the gradients, then the update.
fn accumulate_then_apply<E: Engine + ?Sized>(
    engine: &mut E,
    pixels: &[f32],
    objectives: &[Objective],
    grapes: GrapesMode,
    optimizer: &mut (dyn Optimizer + Send),
    pull: Option<&mut Pull>,
) -> Result<Vec<f32>> {
    engine.zero_grad();
    let losses = engine.accumulate_all(pixels, objectives, grapes)?;
    if losses.first().is_some_and(|l| l.is_finite()) {
        engine.apply_pulled(optimizer, pull)?;
    }
    Ok(losses)
}

/// One term of a step's objective: a batch scored on one head.
#[derive(Debug, Clone)]
pub struct Part<'a> {
    /// `[rows, 784]` pixels, row-major.
    pub pixels: &'a [f32],
    /// What the rows are scored against.
    pub targets: Targets<'a>,
    /// The output head.
    pub head: usize,
    /// The outputs the loss sees (all of the head when `None`).
    pub range: Option<Range<usize>>,
    /// The term's weight in the objective.
    pub weight: f32,
}

impl<'a> Part<'a> {
    /// The part's objective, without its pixels.
    pub fn objective(&self) -> Objective<'a> {
        Objective {
            targets: self.targets,
            head: self.head,
            range: self.range.clone(),
            weight: self.weight,
        }
    }
}

/// One term of a step's objective on pixels that several terms share (the current labels and
/// a teacher's soft targets on the same images, in LwF): what a [`Part`] is, less its pixels.
#[derive(Debug, Clone)]
pub struct Objective<'a> {
    /// What the rows are scored against.
    pub targets: Targets<'a>,
    /// The output head.
    pub head: usize,
    /// The outputs the loss sees (all of the head when `None`).
    pub range: Option<Range<usize>>,
    /// The term's weight in the objective.
    pub weight: f32,
}

/// Parameters, gradients and the batch-gradient operation of a model.
pub trait Engine {
    /// The parameters, in the order of [`Network::params`].
    fn params(&self) -> &[Vec<f32>];
    /// Clears the gradients: every parameter counts as having none.
    fn zero_grad(&mut self);
    /// Adds `part.weight × ∇` of the part's mean loss to the gradients, GRAPES applied as
    /// `grapes` says, and returns the mean loss. A non-finite loss adds nothing.
    fn accumulate(&mut self, part: &Part, grapes: GrapesMode) -> Result<f32>;
    /// Adds `Σ_k objectives[k].weight × ∇` of each objective's mean loss on the same `pixels`
    /// to the gradients, GRAPES applied as `grapes` says, and returns each objective's mean
    /// loss; an objective whose loss is not finite adds nothing. The fused engines run one
    /// forward and one backward pass for all of them (the output errors summed per head), so
    /// that a second objective costs its output layer, not a second pass; the default makes one
    /// [`Engine::accumulate`] per objective.
    fn accumulate_all(
        &mut self,
        pixels: &[f32],
        objectives: &[Objective],
        grapes: GrapesMode,
    ) -> Result<Vec<f32>> {
        objectives
            .iter()
            .map(|o| {
                self.accumulate(
                    &Part {
                        pixels,
                        targets: o.targets,
                        head: o.head,
                        range: o.range.clone(),
                        weight: o.weight,
                    },
                    grapes,
                )
            })
            .collect()
    }
    /// The step of a trainer whose strategy needs nothing between the backward pass and the
    /// update but a penalty's `pull`: the gradients zeroed, [`Engine::accumulate_all`], then
    /// `optimizer`'s step ([`Engine::apply_pulled`]) unless the first objective's loss is not
    /// finite; returns the losses. The fused MLP engine applies each weight's update while the
    /// backward pass computes its gradient, block by block in cache ([`fused::MlpPasses`]),
    /// and stores no gradient: afterwards no parameter has one ([`Engine::grads_mut`]). The
    /// same bits either way.
    fn accumulate_and_apply(
        &mut self,
        pixels: &[f32],
        objectives: &[Objective],
        grapes: GrapesMode,
        optimizer: &mut (dyn Optimizer + Send),
        pull: Option<&mut Pull>,
    ) -> Result<Vec<f32>> {
        accumulate_then_apply(self, pixels, objectives, grapes, optimizer, pull)
    }
    /// The gradients, and which parameters have one since [`Engine::zero_grad`] (the others
    /// are zero and are left alone by the optimizer).
    fn grads_mut(&mut self) -> (&mut [Vec<f32>], &mut [bool]) {
        let (_, g, t) = self.state_mut();
        (g, t)
    }
    /// The parameters, the gradients and their flags at once (penalties read the first and
    /// write the second).
    fn state_mut(&mut self) -> (&[Vec<f32>], &mut [Vec<f32>], &mut [bool]);
    /// Updates the parameters with the optimizer and the current gradients.
    fn apply(&mut self, optimizer: &mut (dyn Optimizer + Send)) -> Result<()> {
        self.apply_pulled(optimizer, None)
    }
    /// [`Engine::apply`] with a penalty's pull added to the gradients inside the optimizer's
    /// own pass ([`Optimizer::step_slices_pulled`]): the numbers of adding it first, without
    /// a pass of its own.
    fn apply_pulled(
        &mut self,
        optimizer: &mut (dyn Optimizer + Send),
        pull: Option<&mut Pull>,
    ) -> Result<()>;
    /// Logits `[rows, head outputs]` of `pixels` with `params` (a snapshot) or the current
    /// parameters.
    fn logits(
        &mut self,
        params: Option<&[Vec<f32>]>,
        pixels: &[f32],
        head: usize,
    ) -> Result<Vec<f32>>;
    /// The GRAPES factors of the last accumulation with GRAPES on, one vector per hidden layer.
    fn factors(&self) -> &[Vec<f32>];
    /// Turns training-time dropout on (every [`Engine::accumulate`] and
    /// [`Engine::accumulate_all`] draws new masks from it) or off (`None`; logits never drop).
    /// Only the fused engines have it; the default fails for `Some`.
    fn set_dropout(&mut self, dropout: Option<Dropout>) -> Result<()> {
        match dropout {
            None => Ok(()),
            Some(_) => candle_core::bail!(
                "dropout needs the fused CPU step (`training.backward: auto` or `fused`, on the CPU)"
            ),
        }
    }
    /// Copies the parameters into the network's `Var`s (before an evaluation).
    fn sync(&self, net: &Network) -> Result<()>;
}
