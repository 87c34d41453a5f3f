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

use std::cell::RefCell;
use std::ops::Range;

use candle_core::Result;

use super::kernels::{self, mm, threads};
use super::{Dropout, Engine, Fused, FusedPasses, Objective};
use crate::models::loss::{output_error, Targets};
use crate::models::{Activation, Layer, Network};
use crate::optim::{grapes, GrapesMode, Optimizer, PartialUpdate, Pull};

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
    /// Logits of the last [`Dense::forward`].
    out: Vec<f32>,
    /// The output errors of a step, one per head that an objective scores (in the order the
    /// objectives first name them): `(head, [batch, head outputs])`; the first `heads_used`
    /// entries are valid. Buffers are kept between steps.
    errors: Vec<(usize, Vec<f32>)>,
    heads_used: usize,
    /// One objective's error before it is added to its head's.
    term_error: Vec<f32>,
    /// Local GRAPES: the modulated copy of a layer's error.
    scratch: Vec<f32>,
    /// Training-time dropout, when on: the masks of the last [`Dense::objectives_error`]
    /// (`[batch, width]` per hidden layer: 0 or `1/(1 − p)`) and every hidden layer's output
    /// before its mask (the activation's derivative is taken there; `acts` hold the outputs
    /// after it, the next layer's input).
    dropout: Option<Dropout>,
    masks: Vec<Vec<f32>>,
    undropped: Vec<Vec<f32>>,
    /// A bias gradient on its way into the optimizer ([`Dense::backward_updating`]).
    bias_gradient: Vec<f32>,
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
            errors: Vec::new(),
            heads_used: 0,
            term_error: Vec::new(),
            scratch: Vec::new(),
            dropout: None,
            masks: Vec::new(),
            undropped: Vec::new(),
            bias_gradient: Vec::new(),
        })
    }

    /// Turns training-time dropout on or off (see [`Engine::set_dropout`]).
    pub(super) fn set_dropout(&mut self, dropout: Option<Dropout>) {
        self.dropout = dropout;
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
        self.forward_hidden(params, x);
        let batch = x.len() / self.input_width();
        let layer = self.heads[head];
        self.out.resize(batch * layer.out, 0.0);
        linear(
            batch,
            layer,
            last_input(&self.acts, x),
            params,
            &mut self.out,
            threads(),
            None,
        );
        &self.out
    }

    /// Every hidden layer's output of `x` into `acts` as the model trains: with dropout on,
    /// each layer's output is masked before the next layer reads it (its undropped output and
    /// mask kept for the backward pass).
    fn forward_hidden_training(&mut self, params: &[Vec<f32>], x: &[f32]) {
        let batch = x.len() / self.input_width();
        let Some(dropout) = &mut self.dropout else {
            self.forward_hidden(params, x);
            return;
        };
        let layers = self.hidden.len();
        self.masks.resize(layers, Vec::new());
        self.undropped.resize(layers, Vec::new());
        let (masks, undropped) = (&mut self.masks, &mut self.undropped);
        forward_hidden(
            &self.hidden,
            self.activation,
            params,
            x,
            batch,
            &mut self.acts,
            |l, act| {
                let (mask, kept) = (&mut masks[l], &mut undropped[l]);
                mask.resize(act.len(), 0.0);
                dropout.fill_mask(mask);
                kept.clone_from(act);
                act.iter_mut().zip(mask.iter()).for_each(|(a, m)| *a *= m);
            },
        );
    }

    /// Every hidden layer's output of `x` into `acts`.
    fn forward_hidden(&mut self, params: &[Vec<f32>], x: &[f32]) {
        let batch = x.len() / self.input_width();
        forward_hidden(
            &self.hidden,
            self.activation,
            params,
            x,
            batch,
            &mut self.acts,
            |_, _| {},
        );
    }

    /// The forward pass of `x` and the output error of every objective (each
    /// `weight / batch × ∂loss/∂logits` on its head, the errors of objectives on one head
    /// summed in their order), ready for [`Dense::backward`]. Returns each objective's mean
    /// loss; an objective whose loss is not finite adds no error.
    pub(super) fn objectives_error(
        &mut self,
        params: &[Vec<f32>],
        x: &[f32],
        objectives: &[Objective],
    ) -> Vec<f32> {
        self.forward_hidden_training(params, x);
        let batch = x.len() / self.input_width();
        let par = threads();
        self.heads_used = 0;
        let mut losses = Vec::with_capacity(objectives.len());
        for o in objectives {
            let layer = self.heads[o.head];
            let buf = &mut self.term_error;
            buf.resize(batch * layer.out, 0.0);
            linear(
                batch,
                layer,
                last_input(&self.acts, x),
                params,
                buf,
                par,
                None,
            );
            let loss = output_error_rows(buf, layer.out, &o.targets, o.range.clone(), o.weight);
            losses.push(loss);
            if !loss.is_finite() {
                continue;
            }
            let used = &mut self.errors[..self.heads_used];
            match used.iter_mut().find(|(h, _)| *h == o.head) {
                Some((_, sum)) => sum.iter_mut().zip(buf.iter()).for_each(|(s, e)| *s += e),
                None => {
                    // The first objective on a head: its error is the head's (swapped in).
                    if self.errors.len() == self.heads_used {
                        self.errors.push((o.head, Vec::new()));
                    }
                    let slot = &mut self.errors[self.heads_used];
                    slot.0 = o.head;
                    std::mem::swap(&mut slot.1, buf);
                    self.heads_used += 1;
                }
            }
        }
        losses
    }

    /// With GRAPES on, every hidden layer's factors from its weights into `factors`.
    fn grapes_factors(&self, params: &[Vec<f32>], mode: GrapesMode, factors: &mut [Vec<f32>]) {
        if mode.is_on() {
            for (f, layer) in factors.iter_mut().zip(&self.hidden) {
                grapes::modulation_factors_into(&params[layer.weight], layer.out, f);
            }
        }
    }

    /// Whether the last [`Dense::objectives_error`] left any error to propagate.
    pub(super) fn has_error(&self) -> bool {
        self.heads_used > 0
    }

    /// Backward pass from the output errors of [`Dense::objectives_error`]: adds every
    /// layer's weight and bias gradients (the heads scored and the hidden layers) and, with
    /// `input_delta`, writes the error of the input `[batch, input_width]` (as passed down:
    /// modulated by propagating GRAPES, not by local GRAPES). `factors` are the hidden layers'
    /// GRAPES factors, read when `mode` is on.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &mut self,
        params: &[Vec<f32>],
        grads: &mut [Vec<f32>],
        touched: &mut [bool],
        x: &[f32],
        mode: GrapesMode,
        factors: &[Vec<f32>],
        input_delta: Option<&mut Vec<f32>>,
    ) {
        let mut sink = IntoGrads {
            params,
            grads,
            touched,
        };
        self.backward_into(&mut sink, x, mode, factors, input_delta);
    }

    /// [`Dense::backward`] with each layer's gradients going straight into `optimizer`'s
    /// update of its parameters (with a penalty's `pull` added inside it), block by block as
    /// the weight gradient's rows are computed ([`kernels::mm_finished`]), instead of into
    /// gradient buffers: the same bits as the backward pass followed by the optimizer's step
    /// over those gradients, without the gradients ever reaching memory. `optimizer` must
    /// apply in parts ([`Optimizer::applies_in_parts`]).
    pub(super) fn backward_updating(
        &mut self,
        params: &mut [Vec<f32>],
        optimizer: &mut (dyn Optimizer + Send),
        pull: Option<&mut Pull>,
        x: &[f32],
        mode: GrapesMode,
        factors: &[Vec<f32>],
    ) {
        let mut bias = std::mem::take(&mut self.bias_gradient);
        let mut sink = IntoUpdate {
            params,
            optimizer,
            pull,
            bias: &mut bias,
        };
        self.backward_into(&mut sink, x, mode, factors, None);
        self.bias_gradient = bias;
    }

    /// The backward pass, each layer's gradients handed to `sink`. Every layer's error is
    /// passed down before its own gradients are taken, so that a sink that updates the layer
    /// ([`IntoUpdate`]) does so after the last read of its weights (the order changes no bit:
    /// the products are independent).
    fn backward_into(
        &mut self,
        sink: &mut impl LayerSink,
        x: &[f32],
        mode: GrapesMode,
        factors: &[Vec<f32>],
        input_delta: Option<&mut Vec<f32>>,
    ) {
        let par = threads();
        let batch = x.len() / self.input_width();
        let heads: Vec<(LayerRef, &[f32])> = self.errors[..self.heads_used]
            .iter()
            .map(|(h, e)| (self.heads[*h], e.as_slice()))
            .collect();
        let dropped = self.dropout.is_some();
        let top = self.hidden.len();
        // Hidden layers, top down: each one's error, then the gradients of the layer above it
        // (the output layers above the top one; never modulated).
        for l in (0..top).rev() {
            let layer = self.hidden[l];
            {
                let (lower, upper) = self.deltas.split_at_mut(l + 1);
                let d = &mut lower[l];
                d.resize(batch * layer.out, 0.0);
                if l + 1 == top {
                    error_below(d, &heads, sink.params(), batch, layer.out, par);
                } else {
                    let above = self.hidden[l + 1];
                    error_below(
                        d,
                        &[(above, &upper[0])],
                        sink.params(),
                        batch,
                        layer.out,
                        par,
                    );
                }
            }
            if l + 1 == top {
                for &(head, error) in &heads {
                    sink.finish(batch, head, error, &self.acts[l], par);
                }
            } else {
                let error =
                    local_error(&mut self.scratch, &self.deltas[l + 1], mode, factors, l + 1);
                sink.finish(batch, self.hidden[l + 1], error, &self.acts[l], par);
            }
            // Elementwise, so split between the threads by rows: through the dropout mask,
            // then the activation's derivative (at its undropped output), then propagating
            // GRAPES.
            let mask = dropped.then(|| self.masks[l].as_slice());
            let h = if dropped {
                &self.undropped[l]
            } else {
                &self.acts[l]
            };
            let (activation, propagating) = (self.activation, mode == GrapesMode::Propagating);
            kernels::rows_in_parallel(&mut self.deltas[l], layer.out, |start, rows| {
                let at = start..start + rows.len();
                if let Some(mask) = mask {
                    rows.iter_mut()
                        .zip(&mask[at.clone()])
                        .for_each(|(d, m)| *d *= m);
                }
                derive(activation, rows, &h[at]);
                if propagating {
                    grapes::modulate_in_place(rows, &factors[l]);
                }
            });
        }
        // The error of the input, then the gradients of the first layer (the output layers
        // when there is no hidden one).
        if let Some(dst) = input_delta {
            let width = self.input_width();
            dst.resize(batch * width, 0.0);
            match self.hidden.first() {
                Some(&first) => error_below(
                    dst,
                    &[(first, &self.deltas[0])],
                    sink.params(),
                    batch,
                    width,
                    par,
                ),
                None => error_below(dst, &heads, sink.params(), batch, width, par),
            }
        }
        match self.hidden.first() {
            Some(&first) => {
                let error = local_error(&mut self.scratch, &self.deltas[0], mode, factors, 0);
                sink.finish(batch, first, error, x, par);
            }
            None => {
                for &(head, error) in &heads {
                    sink.finish(batch, head, error, x, par);
                }
            }
        }
    }
}

/// The error that hidden layer `l`'s own weight and bias gradients are taken from: `delta`
/// (its error, as passed down), or with local GRAPES a copy in `scratch` scaled by the layer's
/// factors (local GRAPES modulates a layer's own gradients only).
fn local_error<'a>(
    scratch: &'a mut Vec<f32>,
    delta: &'a [f32],
    mode: GrapesMode,
    factors: &[Vec<f32>],
    l: usize,
) -> &'a [f32] {
    if mode == GrapesMode::Local {
        scratch.clear();
        scratch.extend_from_slice(delta);
        grapes::modulate_in_place(scratch, &factors[l]);
        scratch
    } else {
        delta
    }
}

/// Where [`Dense::backward_into`] reads the parameters and puts each layer's gradients.
trait LayerSink {
    /// The parameters (as the forward pass used them, for every layer not finished yet).
    fn params(&self) -> &[Vec<f32>];
    /// `layer`'s weight and bias gradients from its error `d` `[batch, out]` and its input
    /// `[batch, in]`; after this the pass reads none of `layer`'s parameters again.
    fn finish(&mut self, batch: usize, layer: LayerRef, d: &[f32], input: &[f32], par: usize);
}

/// Gradients into the step's gradient buffers (added where `touched`, else overwriting).
struct IntoGrads<'a> {
    params: &'a [Vec<f32>],
    grads: &'a mut [Vec<f32>],
    touched: &'a mut [bool],
}

impl LayerSink for IntoGrads<'_> {
    fn params(&self) -> &[Vec<f32>] {
        self.params
    }

    fn finish(&mut self, batch: usize, layer: LayerRef, d: &[f32], input: &[f32], par: usize) {
        layer_grads(self.grads, self.touched, batch, layer, d, input, par);
    }
}

/// Gradients straight into the optimizer's update of the layer's parameters
/// ([`Dense::backward_updating`]); `bias` holds a bias gradient on its way.
struct IntoUpdate<'a, 'p> {
    params: &'a mut [Vec<f32>],
    optimizer: &'a mut (dyn Optimizer + Send),
    pull: Option<&'a mut Pull<'p>>,
    bias: &'a mut Vec<f32>,
}

/// A parameter's values, written by the threads of [`kernels::mm_finished`] in the disjoint
/// runs it hands over.
struct SharedValues(*mut f32);

// SAFETY: only used to write disjoint runs of one parameter from the threads of one product
// (see `IntoUpdate::finish`), while the parameter is borrowed exclusively.
unsafe impl Sync for SharedValues {}

impl SharedValues {
    fn at(&self, offset: usize) -> *mut f32 {
        // SAFETY (of the callers' use): `offset` lies inside the parameter.
        self.0.wrapping_add(offset)
    }
}

/// `optimizer`'s update of parameter `i` (of `count`, `len` values) for this step, with its
/// share of the penalty's `pull` when there is one.
fn begin_update<'a>(
    optimizer: &'a mut (dyn Optimizer + Send),
    pull: Option<&'a mut Pull<'_>>,
    count: usize,
    i: usize,
    len: usize,
) -> PartialUpdate<'a> {
    let update = optimizer
        .begin_partial(count, i, len)
        .expect("an optimizer that applies in parts");
    match pull {
        Some(pull) => update.pulled(pull, i),
        None => update,
    }
}

impl LayerSink for IntoUpdate<'_, '_> {
    fn params(&self) -> &[Vec<f32>] {
        self.params
    }

    fn finish(&mut self, batch: usize, layer: LayerRef, d: &[f32], input: &[f32], par: usize) {
        let count = self.params.len();
        let weight = &mut self.params[layer.weight];
        let len = weight.len();
        let values = SharedValues(weight.as_mut_ptr());
        let update = begin_update(
            self.optimizer,
            self.pull.as_deref_mut(),
            count,
            layer.weight,
            len,
        );
        let width = layer.inp;
        // gW [out, in] = dᵀ [out, batch] · input [batch, in], each finished run of a row
        // updated as it is handed over.
        kernels::mm_finished(
            layer.out,
            layer.inp,
            batch,
            d,
            true,
            input,
            false,
            par,
            &|row, col, g| {
                let offset = row * width + col;
                assert!(offset + g.len() <= len, "run outside the weight");
                // SAFETY: `mm_finished` hands every element over once, in runs that never
                // overlap, so the threads write disjoint values of the weight, which this sink
                // borrows exclusively (asserted inside it above); the state is the update's.
                unsafe {
                    let p = std::slice::from_raw_parts_mut(values.at(offset), g.len());
                    update.apply(offset, p, g);
                }
            },
        );
        if let Some(b) = layer.bias {
            self.bias.resize(layer.out, 0.0);
            bias_grads(self.bias, true, d, layer.out);
            let p = &mut self.params[b];
            let update = begin_update(self.optimizer, self.pull.as_deref_mut(), count, b, p.len());
            // SAFETY: the whole parameter, once, from this thread alone.
            unsafe { update.apply(0, p, self.bias) };
        }
    }
}

/// `dst [batch, width] = Σ_k error_k [batch, layer_k.out] · W_k [layer_k.out, width]`, the
/// error that the layers `above` pass to their common input, in their order (the first
/// product overwrites `dst`, each next one adds to it).
fn error_below(
    dst: &mut [f32],
    above: &[(LayerRef, &[f32])],
    params: &[Vec<f32>],
    batch: usize,
    width: usize,
    par: usize,
) {
    for (k, &(layer, error)) in above.iter().enumerate() {
        mm(
            batch,
            width,
            layer.out,
            dst,
            error,
            false,
            &params[layer.weight],
            false,
            k > 0,
            par,
        );
    }
}

/// Replaces the logits `z` (`[batch, k]`) by `weight / batch × ∂loss/∂logits` and returns the
/// mean loss (`mask` restricts the softmax to a range of the head).
fn output_error_rows(
    z: &mut [f32],
    k: usize,
    targets: &Targets,
    mask: Option<Range<usize>>,
    weight: f32,
) -> f32 {
    let batch = z.len() / k;
    debug_assert!(targets.rows(k).is_none_or(|r| r == batch));
    let range = mask.unwrap_or(0..k);
    let scale = weight / batch as f32;
    let mut loss = 0.0f64;
    for (r, row) in z.chunks_exact_mut(k).enumerate() {
        loss += output_error(row, targets, r, &range, scale);
    }
    (loss / batch as f64) as f32
}

/// The fused passes of an MLP: its fully connected layers.
#[derive(Debug, Clone)]
pub struct MlpPasses {
    dense: Dense,
}

/// An MLP's parameters, gradients and workspaces as host buffers.
pub type FusedMlp = Fused<MlpPasses>;

impl FusedMlp {
    /// Copies a network's parameters. Fails for networks with convolutions.
    pub fn from_network(net: &Network) -> Result<FusedMlp> {
        if !net.is_mlp() {
            candle_core::bail!("the fused MLP step only supports MLPs (see FusedCnn)");
        }
        let dense = Dense::new(net, &net.hidden, &net.heads)?;
        let widths: Vec<usize> = dense.hidden.iter().map(|l| l.out).collect();
        Fused::new(MlpPasses { dense }, net, widths.into_iter())
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
        let objective = Objective {
            targets: Targets::Hard(targets),
            head,
            range: mask,
            weight: 1.0,
        };
        self.accumulate_all(x, std::slice::from_ref(&objective), mode)
            .expect("the fused step does not fail")[0]
    }
}

impl FusedPasses for MlpPasses {
    fn accumulate(
        &mut self,
        params: &[Vec<f32>],
        grads: &mut [Vec<f32>],
        touched: &mut [bool],
        factors: &mut [Vec<f32>],
        x: &[f32],
        objectives: &[Objective],
        mode: GrapesMode,
    ) -> Vec<f32> {
        let losses = self.dense.objectives_error(params, x, objectives);
        if !self.dense.has_error() {
            return losses;
        }
        self.dense.grapes_factors(params, mode, factors);
        self.dense
            .backward(params, grads, touched, x, mode, factors, None);
        losses
    }

    fn accumulate_updating(
        &mut self,
        params: &mut [Vec<f32>],
        optimizer: &mut (dyn Optimizer + Send),
        pull: Option<&mut Pull>,
        factors: &mut [Vec<f32>],
        x: &[f32],
        objectives: &[Objective],
        mode: GrapesMode,
    ) -> Option<Vec<f32>> {
        let losses = self.dense.objectives_error(params, x, objectives);
        // A step whose data loss is not finite updates nothing (see
        // `Engine::accumulate_and_apply`).
        if !self.dense.has_error() || !losses.first().is_some_and(|l| l.is_finite()) {
            return Some(losses);
        }
        self.dense.grapes_factors(params, mode, factors);
        self.dense
            .backward_updating(params, optimizer, pull, x, mode, factors);
        Some(losses)
    }

    fn logits(&mut self, params: &[Vec<f32>], x: &[f32], head: usize) -> Vec<f32> {
        self.dense.forward(params, x, head).to_vec()
    }

    fn set_dropout(&mut self, dropout: Option<Dropout>) {
        self.dense.set_dropout(dropout);
    }
}

/// Forward pass of the hidden layers: every hidden layer's output into `acts`.
/// `after(l, output)` runs on each layer's activated output before the next layer reads it
/// (training-time dropout).
fn forward_hidden(
    hidden: &[LayerRef],
    activation: Activation,
    params: &[Vec<f32>],
    x: &[f32],
    batch: usize,
    acts: &mut [Vec<f32>],
    mut after: impl FnMut(usize, &mut Vec<f32>),
) {
    let par = threads();
    for (l, &layer) in hidden.iter().enumerate() {
        let (before, rest) = acts.split_at_mut(l);
        let input: &[f32] = if l == 0 { x } else { &before[l - 1] };
        let act = &mut rest[0];
        act.resize(batch * layer.out, 0.0);
        linear(batch, layer, input, params, act, par, Some(activation));
        after(l, act);
    }
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
        bias_grads(&mut grads[b], !touched[b], d, layer.out);
        touched[b] = true;
    }
}

/// `gb [out] (+)= Σ_rows d [rows, out]`, each element summed over the rows in their order (from
/// zero when `fresh`); split between the threads by ranges of `out` where `d` is large (each
/// element's sum stays one chain on one thread, so the bits do not depend on the split).
fn bias_grads(gb: &mut [f32], fresh: bool, d: &[f32], out: usize) {
    let sum = |first: usize, gb: &mut [f32]| {
        if fresh {
            gb.fill(0.0);
        }
        for row in d.chunks_exact(out) {
            for (g, v) in gb.iter_mut().zip(&row[first..]) {
                *g += v;
            }
        }
    };
    let par = threads().min(out / 16);
    if par < 2 || d.len() < kernels::PARALLEL_ELEMENTWISE {
        sum(0, gb);
        return;
    }
    // Ranges of whole 64-byte lines of `gb` and of each row of `d`.
    let per = out.div_ceil(par).next_multiple_of(16);
    use rayon::prelude::*;
    gb.par_chunks_mut(per)
        .enumerate()
        .for_each(|(i, part)| sum(i * per, part));
}

fn last_input<'a>(acts: &'a [Vec<f32>], x: &'a [f32]) -> &'a [f32] {
    acts.last().map_or(x, Vec::as_slice)
}

/// What one value of a packing transposition costs, in multiply-adds of a register tile's
/// lanes: about two cycles a value, against the 64 lane multiply-adds per cycle of two AVX-512
/// FMA units. Chooses between [`linear`]'s two ways only (speed, not bits).
const TRANSPOSITION_COST: usize = 128;

thread_local! {
    /// `[out, batch]` outputs of [`linear`]'s transposed product, kept between calls.
    static TRANSPOSED_OUTPUT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `dst [batch, out] = input [batch, in] · Wᵀ (+ b)`, then `activation` (when given) applied in
/// place: the bias and the activation in one pass over the rows, split between the threads.
///
/// Where the batch is small enough for the product to read `W`'s rows in place
/// ([`kernels::reads_a_in_place`]) and it costs no more ([`TRANSPOSITION_COST`]: register
/// tiles plus the packing's transposition), it is computed as `dstᵀ [out, batch] = W · inputᵀ`
/// and transposed: that packs the small `input` instead of transposing the whole weight matrix
/// into panels at every step (a wide hidden layer); an output layer of few units, whose `Wᵀ` is
/// smaller than `inputᵀ`, goes the other way. Each element is the same chain over `in` either
/// way (the kernels' summation rule), so the bits do not depend on the choice; the bias is
/// added after the chain in both.
fn linear(
    batch: usize,
    layer: LayerRef,
    input: &[f32],
    params: &[Vec<f32>],
    dst: &mut [f32],
    par: usize,
    activation: Option<Activation>,
) {
    let bias = layer.bias.map(|b| params[b].as_slice());
    // Per element: the chain, + bias, then the activation (the order of the separate passes
    // this replaces).
    let finish = |_: usize, rows: &mut [f32]| {
        if let Some(bias) = bias {
            for row in rows.chunks_exact_mut(layer.out) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
        }
        if let Some(act) = activation {
            activate(act, rows);
        }
    };
    let isa = kernels::Isa::detected();
    // Each way's cost: its register tiles' multiply-adds plus the transposition its packing
    // needs (`inputᵀ` one way, `Wᵀ` the other).
    let cost = |area: usize, transposed_values: usize| {
        area * layer.inp + TRANSPOSITION_COST * transposed_values
    };
    let transposed = kernels::reads_a_in_place(batch)
        && cost(isa.padded_area(layer.out, batch), batch * layer.inp)
            <= cost(isa.padded_area(batch, layer.out), layer.out * layer.inp);
    if transposed {
        // Taken out of the thread-local for the product (not borrowed across it: while `mm`
        // waits for its shares this thread may run other work of the pool).
        let mut out_t = TRANSPOSED_OUTPUT.take();
        out_t.resize(layer.out * batch, 0.0);
        mm(
            layer.out,
            batch,
            layer.inp,
            &mut out_t,
            &params[layer.weight],
            false,
            input,
            true,
            false,
            par,
        );
        // The bias and activation on each thread's rows as soon as it has transposed them.
        kernels::transpose_then(dst, &out_t, layer.out, batch, finish);
        TRANSPOSED_OUTPUT.set(out_t);
    } else {
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
        kernels::rows_in_parallel(dst, layer.out, finish);
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
