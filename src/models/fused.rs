//! The fused CPU training step of an MLP: forward, backward, GRAPES and the optimizer update on
//! reusable `f32` buffers, with the matrix products done by `gemm` (the kernels candle itself
//! uses) and every elementwise step fused into one pass. Every buffer is allocated at the first
//! step and reused. It computes exactly what [`super::mlp::backward`] computes; the tests hold the two (and
//! candle's autograd) to the same gradients.
//!
//! The parameters live here while a task trains; [`FusedMlp::write_back`] copies them into the
//! network's candle `Var`s before every evaluation.

use std::ops::Range;

use candle_core::{Result, Tensor};
use gemm::Parallelism;

use super::{Activation, Network};
use crate::optim::{grapes, GrapesMode, Optimizer};

#[derive(Debug, Clone, Copy)]
struct LayerRef {
    weight: usize,
    bias: Option<usize>,
    out: usize,
    inp: usize,
}

/// An MLP's parameters, gradients and workspaces as host buffers.
#[derive(Debug, Clone)]
pub struct FusedMlp {
    activation: Activation,
    hidden: Vec<LayerRef>,
    heads: Vec<LayerRef>,
    /// Parameters in the order of [`Network::params`].
    params: Vec<Vec<f32>>,
    /// Gradients of the last step, same order; valid where `touched`.
    grads: Vec<Vec<f32>>,
    touched: Vec<bool>,
    /// Output of every hidden layer, `[batch, width]`.
    acts: Vec<Vec<f32>>,
    /// Error of every hidden layer, `[batch, width]`.
    deltas: Vec<Vec<f32>>,
    /// Logits, then the output error.
    out: Vec<f32>,
    /// GRAPES factors of every hidden layer (valid after a step with GRAPES on).
    factors: Vec<Vec<f32>>,
}

impl FusedMlp {
    /// Copies a network's parameters. Fails for networks with convolutions.
    pub fn from_network(net: &Network) -> Result<FusedMlp> {
        if !net.is_mlp() {
            candle_core::bail!("the fused path only supports MLPs");
        }
        let layer = |l: &super::Layer| -> Result<LayerRef> {
            let (out, inp) = net.params[l.weight].as_tensor().dims2()?;
            Ok(LayerRef {
                weight: l.weight,
                bias: l.bias,
                out,
                inp,
            })
        };
        let hidden = net.hidden.iter().map(layer).collect::<Result<Vec<_>>>()?;
        let heads = net.heads.iter().map(layer).collect::<Result<Vec<_>>>()?;
        let params = net
            .params
            .iter()
            .map(|v| v.as_tensor().flatten_all()?.to_vec1::<f32>())
            .collect::<Result<Vec<_>>>()?;
        let grads = params.iter().map(|p| vec![0.0; p.len()]).collect();
        Ok(FusedMlp {
            activation: net.activation,
            factors: hidden.iter().map(|l| vec![1.0; l.out]).collect(),
            acts: vec![Vec::new(); hidden.len()],
            deltas: vec![Vec::new(); hidden.len()],
            touched: vec![false; params.len()],
            hidden,
            heads,
            params,
            grads,
            out: Vec::new(),
        })
    }

    /// Copies the parameters into the network's `Var`s.
    pub fn write_back(&self, net: &Network) -> Result<()> {
        for (var, p) in net.params.iter().zip(&self.params) {
            var.set(&Tensor::from_slice(p, var.shape(), var.device())?)?;
        }
        Ok(())
    }

    /// The gradients of the last step (`None` for parameters it did not reach).
    pub fn gradients(&self) -> Vec<Option<&[f32]>> {
        self.grads
            .iter()
            .zip(&self.touched)
            .map(|(g, &t)| t.then_some(g.as_slice()))
            .collect()
    }

    /// The GRAPES factors used by the last step, one vector per hidden layer.
    pub fn factors(&self) -> &[Vec<f32>] {
        &self.factors
    }

    /// Applies the optimizer to the parameters with the last step's gradients.
    pub fn apply(&mut self, optimizer: &mut (dyn Optimizer + Send)) {
        let grads: Vec<Option<&[f32]>> = self
            .grads
            .iter()
            .zip(&self.touched)
            .map(|(g, &t)| t.then_some(g.as_slice()))
            .collect();
        let mut params: Vec<&mut [f32]> = self.params.iter_mut().map(Vec::as_mut_slice).collect();
        optimizer.step_slices(&mut params, &grads);
    }

    /// Loss and gradients of one batch: `x` is `[batch, 784]` row-major, `targets` are output
    /// indices of head `head`; `mask` restricts the softmax to a range of outputs (masked
    /// task-incremental). Returns the mean cross-entropy; gradients are left in place. A
    /// non-finite loss skips the backward pass.
    pub fn step(
        &mut self,
        x: &[f32],
        targets: &[u32],
        head: usize,
        mask: Option<Range<usize>>,
        mode: GrapesMode,
    ) -> f32 {
        let batch = targets.len();
        let par = parallelism();
        // Forward through the hidden layers.
        for l in 0..self.hidden.len() {
            let layer = self.hidden[l];
            let (before, rest) = self.acts.split_at_mut(l);
            let input: &[f32] = if l == 0 { x } else { &before[l - 1] };
            let act = &mut rest[0];
            act.resize(batch * layer.out, 0.0);
            linear(batch, layer, input, &self.params, act, par);
            match self.activation {
                Activation::Relu => act.iter_mut().for_each(|v| *v = v.max(0.0)),
                Activation::Tanh => act.iter_mut().for_each(|v| *v = v.tanh()),
                Activation::Sigmoid => act.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
            }
        }
        let out_layer = self.heads[head];
        let last: &[f32] = self.acts.last().map_or(x, Vec::as_slice);
        let k = out_layer.out;
        self.out.resize(batch * k, 0.0);
        linear(batch, out_layer, last, &self.params, &mut self.out, par);
        // Softmax cross-entropy; the output error (softmax − one-hot) / batch replaces the logits.
        let range = mask.unwrap_or(0..k);
        let mut loss = 0.0f64;
        let inv_batch = 1.0 / batch as f32;
        for (row, &t) in self.out.chunks_exact_mut(k).zip(targets) {
            let max = row[range.clone()]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for v in &row[range.clone()] {
                sum += (v - max).exp();
            }
            let log_sum = sum.ln();
            loss -= (row[t as usize] - max - log_sum) as f64;
            for (j, v) in row.iter_mut().enumerate() {
                let p = if range.contains(&j) {
                    (*v - max - log_sum).exp()
                } else {
                    0.0
                };
                *v = (p - if j == t as usize { 1.0 } else { 0.0 }) * inv_batch;
            }
        }
        let loss = (loss / batch as f64) as f32;
        if !loss.is_finite() {
            return loss;
        }
        self.touched.fill(false);
        if mode.is_on() {
            for (f, layer) in self.factors.iter_mut().zip(&self.hidden) {
                grapes::modulation_factors_into(&self.params[layer.weight], layer.out, f);
            }
        }
        // Output layer: never modulated.
        layer_grads(
            &mut self.grads,
            &mut self.touched,
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
                    &self.params[above.weight],
                    false,
                    par,
                );
            }
            let (h, d) = (&self.acts[l], &mut self.deltas[l]);
            match self.activation {
                Activation::Relu => d
                    .iter_mut()
                    .zip(h)
                    .for_each(|(d, &h)| *d = if h > 0.0 { *d } else { 0.0 }),
                Activation::Tanh => d.iter_mut().zip(h).for_each(|(d, &h)| *d *= 1.0 - h * h),
                Activation::Sigmoid => d.iter_mut().zip(h).for_each(|(d, &h)| *d *= h * (1.0 - h)),
            }
            if mode == GrapesMode::Propagating {
                grapes::modulate_in_place(d, &self.factors[l]);
            }
            let input: &[f32] = if l == 0 { x } else { &self.acts[l - 1] };
            layer_grads(
                &mut self.grads,
                &mut self.touched,
                batch,
                layer,
                &self.deltas[l],
                input,
                par,
            );
            if mode == GrapesMode::Local {
                grapes::scale_rows_in_place(&mut self.grads[layer.weight], &self.factors[l]);
                if let Some(b) = layer.bias {
                    grapes::scale_rows_in_place(&mut self.grads[b], &self.factors[l]);
                }
            }
        }
        loss
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
    par: Parallelism,
) {
    // gW [out, in] = dᵀ [out, batch] · input [batch, in]
    mm(
        layer.out,
        layer.inp,
        batch,
        &mut grads[layer.weight],
        d,
        true,
        input,
        false,
        par,
    );
    touched[layer.weight] = true;
    if let Some(b) = layer.bias {
        let gb = &mut grads[b];
        gb.fill(0.0);
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
    par: Parallelism,
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

/// Candle's rule for CPU threads (`RAYON_NUM_THREADS`, else all cores).
pub(crate) fn parallelism() -> Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `c [m, n] = a [m, k] · b [k, n]`, all row-major; `a_t` means `a` is stored as `[k, m]`,
/// `b_t` that `b` is stored as `[n, k]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mm(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    par: Parallelism,
) {
    assert!(
        c.len() >= m * n && a.len() >= m * k && b.len() >= k * n,
        "matrix sizes"
    );
    let (a_rs, a_cs) = if a_t {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (b_rs, b_cs) = if b_t {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    // SAFETY: the asserts above keep every access of gemm inside the three slices, whose
    // strides describe exactly the row-major layouts documented above; c does not alias a or b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}
