//! The fused CPU training step of an MLP: forward, backward, GRAPES and the optimizer update on
//! reusable `f32` buffers, with the matrix products done by the portable kernels of
//! [`super::kernels`] (the same bits on every machine) and every elementwise step fused into
//! one pass; `tanh`, `exp` and `ln` come from the pure-Rust `libm`. Every buffer is allocated at
//! the first step and reused. It computes what [`crate::models::mlp::backward`] computes; the
//! tests hold the two (and candle's autograd) to the same gradients.
//!
//! The parameters live here while a task trains, and evaluation reads them here
//! ([`Engine::logits`]); [`FusedMlp::write_back`] copies them into the network's candle `Var`s
//! after every task.
//!
//! The fully connected layers are `Dense`, which the CNN's fused step ([`super::conv`]) uses
//! for its layers after the convolutions, asking it for the error of its input as well.

use std::ops::Range;

use candle_core::Result;

use super::kernels::{mm, threads};
use super::{Engine, HostParams, Part};
use crate::models::loss::{output_error, Targets};
use crate::models::{Activation, Layer, Network};
use crate::optim::{grapes, GrapesMode, Optimizer};

#[derive(Debug, Clone, Copy)]
pub(super) struct LayerRef {
    pub(super) weight: usize,
    pub(super) bias: Option<usize>,
    pub(super) out: usize,
    pub(super) inp: usize,
}

impl LayerRef {
    /// Where `layer`'s parameters are and its sizes (`[out, in]` weights).
    pub(super) fn of(net: &Network, layer: &Layer) -> Result<LayerRef> {
        let (out, inp) = net.params[layer.weight].as_tensor().dims2()?;
        Ok(LayerRef {
            weight: layer.weight,
            bias: layer.bias,
            out,
            inp,
        })
    }
}

/// The fully connected layers of a model (hidden layers and output heads) with their
/// workspaces: the whole of an MLP, the tail of a CNN. Parameters, gradients and GRAPES factors
/// belong to the engine that owns it and are passed in.
#[derive(Debug, Clone)]
pub(super) struct Dense {
    activation: Activation,
    hidden: Vec<LayerRef>,
    heads: Vec<LayerRef>,
    /// Output of every hidden layer, `[batch, width]`.
    acts: Vec<Vec<f32>>,
    /// Error of every hidden layer, `[batch, width]`.
    deltas: Vec<Vec<f32>>,
    /// Logits, then the output error.
    out: Vec<f32>,
    /// Local GRAPES: the modulated copy of a layer's error.
    scratch: Vec<f32>,
}

impl Dense {
    /// The fully connected layers `hidden` and `heads` of `net`.
    pub(super) fn new(net: &Network, hidden: &[Layer], heads: &[Layer]) -> Result<Dense> {
        let refs = |layers: &[Layer]| {
            layers
                .iter()
                .map(|l| LayerRef::of(net, l))
                .collect::<Result<Vec<_>>>()
        };
        let hidden = refs(hidden)?;
        Ok(Dense {
            activation: net.activation,
            acts: vec![Vec::new(); hidden.len()],
            deltas: vec![Vec::new(); hidden.len()],
            hidden,
            heads: refs(heads)?,
            out: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Width of the input of the first layer.
    pub(super) fn input_width(&self) -> usize {
        self.hidden.first().unwrap_or(&self.heads[0]).inp
    }

    /// Widths of the hidden layers (the lengths of their GRAPES factor vectors).
    pub(super) fn hidden_layers(&self) -> &[LayerRef] {
        &self.hidden
    }

    /// Logits `[batch, head outputs]` of `x` (`[batch, input_width]`), every hidden layer's
    /// output kept for the backward pass.
    pub(super) fn forward(&mut self, params: &[Vec<f32>], x: &[f32], head: usize) -> &[f32] {
        let batch = x.len() / self.input_width();
        forward(
            &self.hidden,
            self.heads[head],
            self.activation,
            params,
            x,
            batch,
            &mut self.acts,
            &mut self.out,
        );
        &self.out
    }

    /// Replaces the logits of the last [`Dense::forward`] with `weight / batch × ∂loss/∂logits`
    /// and returns the mean loss (`mask` restricts the softmax to a range of the head).
    pub(super) fn output_error(
        &mut self,
        targets: &Targets,
        head: usize,
        mask: Option<Range<usize>>,
        weight: f32,
    ) -> f32 {
        let k = self.heads[head].out;
        let batch = self.out.len() / k;
        debug_assert!(targets.rows(k).is_none_or(|r| r == batch));
        let range = mask.unwrap_or(0..k);
        let scale = weight / batch as f32;
        let mut loss = 0.0f64;
        for (r, row) in self.out.chunks_exact_mut(k).enumerate() {
            loss += output_error(row, targets, r, &range, scale);
        }
        (loss / batch as f64) as f32
    }

    /// Backward pass from the output error of [`Dense::output_error`]: adds every layer's
    /// weight and bias gradients (head `head` and the hidden layers) and, with `input_delta`,
    /// writes the error of the input `[batch, input_width]` (as passed down: modulated by
    /// propagating GRAPES, not by local GRAPES). `factors` are the hidden layers' GRAPES
    /// factors, read when `mode` is on.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &mut self,
        params: &[Vec<f32>],
        grads: &mut [Vec<f32>],
        touched: &mut [bool],
        x: &[f32],
        head: usize,
        mode: GrapesMode,
        factors: &[Vec<f32>],
        input_delta: Option<&mut Vec<f32>>,
    ) {
        let par = threads();
        let out_layer = self.heads[head];
        let batch = self.out.len() / out_layer.out;
        // Output layer: never modulated.
        layer_grads(
            grads,
            touched,
            batch,
            out_layer,
            &self.out,
            last_input(&self.acts, x),
            par,
        );
        // Hidden layers, top down.
        for l in (0..self.hidden.len()).rev() {
            let layer = self.hidden[l];
            let above = if l + 1 == self.hidden.len() {
                out_layer
            } else {
                self.hidden[l + 1]
            };
            {
                let (lower, upper) = self.deltas.split_at_mut(l + 1);
                let upstream: &[f32] = if l + 1 == self.hidden.len() {
                    &self.out
                } else {
                    &upper[0]
                };
                let d = &mut lower[l];
                d.resize(batch * layer.out, 0.0);
                // upstream [batch, above.out] · W_above [above.out, layer.out]
                mm(
                    batch,
                    layer.out,
                    above.out,
                    d,
                    upstream,
                    false,
                    &params[above.weight],
                    false,
                    false,
                    par,
                );
            }
            let (h, d) = (&self.acts[l], &mut self.deltas[l]);
            derive(self.activation, d, h);
            if mode == GrapesMode::Propagating {
                grapes::modulate_in_place(d, &factors[l]);
            }
            let input: &[f32] = if l == 0 { x } else { &self.acts[l - 1] };
            // Local GRAPES scales this layer's own weight and bias gradients only: its error
            // rows are scaled in a copy, while `deltas[l]` (passed down) stays unmodulated.
            let error: &[f32] = if mode == GrapesMode::Local {
                self.scratch.clone_from(&self.deltas[l]);
                grapes::modulate_in_place(&mut self.scratch, &factors[l]);
                &self.scratch
            } else {
                &self.deltas[l]
            };
            layer_grads(grads, touched, batch, layer, error, input, par);
        }
        if let Some(dst) = input_delta {
            let (first, upstream) = match self.hidden.first() {
                Some(&first) => (first, &self.deltas[0]),
                None => (out_layer, &self.out),
            };
            dst.resize(batch * first.inp, 0.0);
            // upstream [batch, first.out] · W_first [first.out, in]
            mm(
                batch,
                first.inp,
                first.out,
                dst,
                upstream,
                false,
                &params[first.weight],
                false,
                false,
                par,
            );
        }
    }
}

/// An MLP's parameters, gradients and workspaces as host buffers.
#[derive(Debug, Clone)]
pub struct FusedMlp {
    dense: Dense,
    host: HostParams,
    /// GRAPES factors of every hidden layer (valid after a step with GRAPES on).
    factors: Vec<Vec<f32>>,
}

impl FusedMlp {
    /// Copies a network's parameters. Fails for networks with convolutions.
    pub fn from_network(net: &Network) -> Result<FusedMlp> {
        if !net.is_mlp() {
            candle_core::bail!("the fused MLP step only supports MLPs (see FusedCnn)");
        }
        let dense = Dense::new(net, &net.hidden, &net.heads)?;
        Ok(FusedMlp {
            factors: dense.hidden.iter().map(|l| vec![1.0; l.out]).collect(),
            dense,
            host: HostParams::of(net)?,
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

    /// Loss and gradients of one batch: `x` is `[batch, 784]` row-major, `targets` are output
    /// indices of head `head`; `mask` restricts the softmax to a range of outputs (masked
    /// task-incremental). Returns the mean cross-entropy; gradients replace the previous ones.
    /// A non-finite loss skips the backward pass.
    pub fn step(
        &mut self,
        x: &[f32],
        targets: &[u32],
        head: usize,
        mask: Option<Range<usize>>,
        mode: GrapesMode,
    ) -> f32 {
        self.zero_grad();
        self.accumulate_batch(x, &Targets::Hard(targets), head, mask, mode, 1.0)
    }

    /// Adds `weight × ∇` of the batch's mean loss against `targets` to the gradients (parameters
    /// not touched since [`Engine::zero_grad`] are overwritten) and returns the mean loss. `x` is
    /// `[batch, 784]` row-major; `mask` restricts the loss to a range of the head's outputs.
    /// A non-finite loss leaves the gradients as they were.
    fn accumulate_batch(
        &mut self,
        x: &[f32],
        targets: &Targets,
        head: usize,
        mask: Option<Range<usize>>,
        mode: GrapesMode,
        weight: f32,
    ) -> f32 {
        let host = &mut self.host;
        self.dense.forward(&host.params, x, head);
        let loss = self.dense.output_error(targets, head, mask, weight);
        if !loss.is_finite() {
            return loss;
        }
        if mode.is_on() {
            for (f, layer) in self.factors.iter_mut().zip(&self.dense.hidden) {
                grapes::modulation_factors_into(&host.params[layer.weight], layer.out, f);
            }
        }
        self.dense.backward(
            &host.params,
            &mut host.grads,
            &mut host.touched,
            x,
            head,
            mode,
            &self.factors,
            None,
        );
        loss
    }
}

impl Engine for FusedMlp {
    fn params(&self) -> &[Vec<f32>] {
        &self.host.params
    }

    fn zero_grad(&mut self) {
        self.host.zero_grad();
    }

    fn accumulate(&mut self, part: &Part, grapes: GrapesMode) -> Result<f32> {
        Ok(self.accumulate_batch(
            part.pixels,
            &part.targets,
            part.head,
            part.range.clone(),
            grapes,
            part.weight,
        ))
    }

    fn state_mut(&mut self) -> (&[Vec<f32>], &mut [Vec<f32>], &mut [bool]) {
        self.host.state_mut()
    }

    fn apply(&mut self, optimizer: &mut (dyn Optimizer + Send)) -> Result<()> {
        self.host.step(optimizer);
        Ok(())
    }

    fn logits(&mut self, params: Option<&[Vec<f32>]>, x: &[f32], head: usize) -> Result<Vec<f32>> {
        let params = params.unwrap_or(&self.host.params);
        Ok(self.dense.forward(params, x, head).to_vec())
    }

    fn factors(&self) -> &[Vec<f32>] {
        &self.factors
    }

    fn sync(&self, net: &Network) -> Result<()> {
        self.write_back(net)
    }
}

/// Forward pass: every hidden layer's output into `acts`, the logits of `out_layer` into `out`.
#[allow(clippy::too_many_arguments)]
fn forward(
    hidden: &[LayerRef],
    out_layer: LayerRef,
    activation: Activation,
    params: &[Vec<f32>],
    x: &[f32],
    batch: usize,
    acts: &mut [Vec<f32>],
    out: &mut Vec<f32>,
) {
    let par = threads();
    for (l, &layer) in hidden.iter().enumerate() {
        let (before, rest) = acts.split_at_mut(l);
        let input: &[f32] = if l == 0 { x } else { &before[l - 1] };
        let act = &mut rest[0];
        act.resize(batch * layer.out, 0.0);
        linear(batch, layer, input, params, act, par);
        activate(activation, act);
    }
    let last: &[f32] = acts.last().map_or(x, Vec::as_slice);
    out.resize(batch * out_layer.out, 0.0);
    linear(batch, out_layer, last, params, out, par);
}

/// Weight and bias gradients of `layer` from its error `d` and its input.
fn layer_grads(
    grads: &mut [Vec<f32>],
    touched: &mut [bool],
    batch: usize,
    layer: LayerRef,
    d: &[f32],
    input: &[f32],
    par: usize,
) {
    // gW [out, in] (+)= dᵀ [out, batch] · input [batch, in]
    mm(
        layer.out,
        layer.inp,
        batch,
        &mut grads[layer.weight],
        d,
        true,
        input,
        false,
        touched[layer.weight],
        par,
    );
    touched[layer.weight] = true;
    if let Some(b) = layer.bias {
        let gb = &mut grads[b];
        if !touched[b] {
            gb.fill(0.0);
        }
        for row in d.chunks_exact(layer.out) {
            for (g, v) in gb.iter_mut().zip(row) {
                *g += v;
            }
        }
        touched[b] = true;
    }
}

fn last_input<'a>(acts: &'a [Vec<f32>], x: &'a [f32]) -> &'a [f32] {
    acts.last().map_or(x, Vec::as_slice)
}

/// `dst [batch, out] = input [batch, in] · Wᵀ (+ b)`.
fn linear(
    batch: usize,
    layer: LayerRef,
    input: &[f32],
    params: &[Vec<f32>],
    dst: &mut [f32],
    par: usize,
) {
    mm(
        batch,
        layer.out,
        layer.inp,
        dst,
        input,
        false,
        &params[layer.weight],
        true,
        false,
        par,
    );
    if let Some(b) = layer.bias {
        let bias = &params[b];
        for row in dst.chunks_exact_mut(layer.out) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

/// Applies the activation in place.
pub(super) fn activate(act: Activation, v: &mut [f32]) {
    match act {
        Activation::Relu => v.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Tanh => v.iter_mut().for_each(|v| *v = libm::tanhf(*v)),
        Activation::Sigmoid => v
            .iter_mut()
            .for_each(|v| *v = 1.0 / (1.0 + libm::expf(-*v))),
    }
}

/// Multiplies an error `d` by the activation's derivative, given the activation's output `h`.
pub(super) fn derive(act: Activation, d: &mut [f32], h: &[f32]) {
    match act {
        Activation::Relu => d
            .iter_mut()
            .zip(h)
            .for_each(|(d, &h)| *d = if h > 0.0 { *d } else { 0.0 }),
        Activation::Tanh => d.iter_mut().zip(h).for_each(|(d, &h)| *d *= 1.0 - h * h),
        Activation::Sigmoid => d.iter_mut().zip(h).for_each(|(d, &h)| *d *= h * (1.0 - h)),
    }
}
