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
use crate::optim::{grapes, GrapesMode};

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
        let par = threads();
        let batch = x.len() / self.input_width();
        let heads: Vec<(LayerRef, &[f32])> = self.errors[..self.heads_used]
            .iter()
            .map(|(h, e)| (self.heads[*h], e.as_slice()))
            .collect();
        // Output layers: never modulated.
        for &(layer, error) in &heads {
            layer_grads(
                grads,
                touched,
                batch,
                layer,
                error,
                last_input(&self.acts, x),
                par,
            );
        }
        // Hidden layers, top down.
        let dropped = self.dropout.is_some();
        for l in (0..self.hidden.len()).rev() {
            let layer = self.hidden[l];
            {
                let (lower, upper) = self.deltas.split_at_mut(l + 1);
                let d = &mut lower[l];
                d.resize(batch * layer.out, 0.0);
                if l + 1 == self.hidden.len() {
                    error_below(d, &heads, params, batch, layer.out, par);
                } else {
                    let above = self.hidden[l + 1];
                    error_below(d, &[(above, &upper[0])], params, batch, layer.out, par);
                }
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
            let width = self.input_width();
            dst.resize(batch * width, 0.0);
            match self.hidden.first() {
                Some(&first) => {
                    error_below(dst, &[(first, &self.deltas[0])], params, batch, width, par)
                }
                None => error_below(dst, &heads, params, batch, width, par),
            }
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
        if mode.is_on() {
            for (f, layer) in factors.iter_mut().zip(&self.dense.hidden) {
                grapes::modulation_factors_into(&params[layer.weight], layer.out, f);
            }
        }
        self.dense
            .backward(params, grads, touched, x, mode, factors, None);
        losses
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
