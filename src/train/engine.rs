//! The gradient engine: the model's parameters and gradients as host `f32` buffers, and the one
//! operation every training step and every continual-learning strategy is built from —
//! "add `weight × ∇ loss` of this batch part to the gradients".
//!
//! Two engines implement it: [`FusedEngine`] (the fused CPU step of an MLP, the default) and
//! [`TensorEngine`] (candle tensors: the explicit MLP backward or autograd, any model, any
//! device). Strategies ([`crate::strategy`]) only see this trait, so each is written once.

use std::ops::Range;

use candle_core::{Device, Result, Tensor};

use super::step::{objective_gradients, BackwardPath};
use crate::data::IMAGE_PIXELS;
use crate::models::fused::FusedMlp;
use crate::models::loss::Targets;
use crate::models::Network;
use crate::optim::{GrapesMode, Optimizer};

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

/// Parameters, gradients and the batch-gradient operation of a model.
pub trait Engine {
    /// The parameters, in the order of [`Network::params`].
    fn params(&self) -> &[Vec<f32>];
    /// Clears the gradients: every parameter counts as having none.
    fn zero_grad(&mut self);
    /// Adds `part.weight × ∇` of the part's mean loss to the gradients, GRAPES applied as
    /// `grapes` says, and returns the mean loss. A non-finite loss adds nothing.
    fn accumulate(&mut self, part: &Part, grapes: GrapesMode) -> Result<f32>;
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
    fn apply(&mut self, optimizer: &mut (dyn Optimizer + Send)) -> Result<()>;
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
    /// Copies the parameters into the network's `Var`s (before an evaluation).
    fn sync(&self, net: &Network) -> Result<()>;
}

/// The fused CPU step ([`FusedMlp`]) as an engine.
pub struct FusedEngine(pub FusedMlp);

impl Engine for FusedEngine {
    fn params(&self) -> &[Vec<f32>] {
        self.0.params()
    }

    fn zero_grad(&mut self) {
        self.0.zero_grad();
    }

    fn accumulate(&mut self, part: &Part, grapes: GrapesMode) -> Result<f32> {
        Ok(self.0.accumulate(
            part.pixels,
            &part.targets,
            part.head,
            part.range.clone(),
            grapes,
            part.weight,
        ))
    }

    fn state_mut(&mut self) -> (&[Vec<f32>], &mut [Vec<f32>], &mut [bool]) {
        self.0.state_mut()
    }

    fn apply(&mut self, optimizer: &mut (dyn Optimizer + Send)) -> Result<()> {
        self.0.apply(optimizer);
        Ok(())
    }

    fn logits(
        &mut self,
        params: Option<&[Vec<f32>]>,
        pixels: &[f32],
        head: usize,
    ) -> Result<Vec<f32>> {
        Ok(self.0.logits(params, pixels, head))
    }

    fn factors(&self) -> &[Vec<f32>] {
        self.0.factors()
    }

    fn sync(&self, net: &Network) -> Result<()> {
        self.0.write_back(net)
    }
}

/// Candle tensors on any device: gradients by the explicit MLP backward or autograd, copied to
/// host buffers; the optimizer runs on host copies of the parameters, which are written back
/// to the network's `Var`s after every update.
pub struct TensorEngine {
    net: Network,
    path: BackwardPath,
    device: Device,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    touched: Vec<bool>,
    factors: Vec<Vec<f32>>,
}

impl TensorEngine {
    /// An engine over `net`'s parameters (shared with `net`: updates are visible there).
    pub fn new(net: &Network, path: BackwardPath, device: &Device) -> Result<Self> {
        let params = net
            .params
            .iter()
            .map(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>())
            .collect::<Result<Vec<_>>>()?;
        Ok(TensorEngine {
            net: net.clone(),
            path,
            device: device.clone(),
            grads: params.iter().map(|p| vec![0.0; p.len()]).collect(),
            touched: vec![false; params.len()],
            factors: Vec::new(),
            params,
        })
    }
}

impl Engine for TensorEngine {
    fn params(&self) -> &[Vec<f32>] {
        &self.params
    }

    fn zero_grad(&mut self) {
        self.touched.fill(false);
    }

    fn accumulate(&mut self, part: &Part, grapes: GrapesMode) -> Result<f32> {
        let rows = part.pixels.len() / IMAGE_PIXELS;
        let x = Tensor::from_slice(part.pixels, (rows, IMAGE_PIXELS), &self.device)?;
        let (loss, grads, factors) = objective_gradients(
            &self.net,
            &x,
            &part.targets,
            part.range.as_ref(),
            part.head,
            grapes,
            self.path,
            &self.device,
        )?;
        let loss = loss.to_scalar::<f32>()?;
        if !loss.is_finite() {
            return Ok(loss);
        }
        for (i, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            let dst = &mut self.grads[i];
            if self.touched[i] {
                dst.iter_mut()
                    .zip(&g)
                    .for_each(|(d, v)| *d += part.weight * v);
            } else {
                dst.iter_mut()
                    .zip(&g)
                    .for_each(|(d, v)| *d = part.weight * v);
                self.touched[i] = true;
            }
        }
        if let Some(f) = factors {
            self.factors = f
                .iter()
                .map(|t| t.flatten_all()?.to_vec1::<f32>())
                .collect::<Result<Vec<_>>>()?;
        }
        Ok(loss)
    }

    fn state_mut(&mut self) -> (&[Vec<f32>], &mut [Vec<f32>], &mut [bool]) {
        (&self.params, &mut self.grads, &mut self.touched)
    }

    fn apply(&mut self, optimizer: &mut (dyn Optimizer + Send)) -> Result<()> {
        let grads: Vec<Option<&[f32]>> = self
            .grads
            .iter()
            .zip(&self.touched)
            .map(|(g, &t)| t.then_some(g.as_slice()))
            .collect();
        let mut params: Vec<&mut [f32]> = self.params.iter_mut().map(Vec::as_mut_slice).collect();
        optimizer.step_slices(&mut params, &grads);
        for ((var, p), &t) in self.net.params.iter().zip(&self.params).zip(&self.touched) {
            if t {
                var.set(&Tensor::from_slice(p, var.shape(), &self.device)?)?;
            }
        }
        Ok(())
    }

    fn logits(
        &mut self,
        params: Option<&[Vec<f32>]>,
        pixels: &[f32],
        head: usize,
    ) -> Result<Vec<f32>> {
        let rows = pixels.len() / IMAGE_PIXELS;
        let x = Tensor::from_slice(pixels, (rows, IMAGE_PIXELS), &self.device)?;
        let p = match params {
            Some(p) => self
                .net
                .params
                .iter()
                .zip(p)
                .map(|(v, p)| Tensor::from_slice(p, v.shape(), &self.device))
                .collect::<Result<Vec<_>>>()?,
            None => self.net.detached(),
        };
        self.net
            .forward(&p, &x, head, None)?
            .flatten_all()?
            .to_vec1::<f32>()
    }

    fn factors(&self) -> &[Vec<f32>] {
        &self.factors
    }

    fn sync(&self, _net: &Network) -> Result<()> {
        // The `Var`s are shared with the network and written after every update.
        Ok(())
    }
}
