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

use super::loss::{output_error, Targets};
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
    /// Local GRAPES: the modulated copy of a layer's error.
    scratch: Vec<f32>,
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
            scratch: Vec::new(),
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

    /// The parameters, in the order of [`Network::params`].
    pub fn params(&self) -> &[Vec<f32>] {
        &self.params
    }

    /// The parameters, writable (strategies that reset or project them).
    pub fn params_mut(&mut self) -> &mut [Vec<f32>] {
        &mut self.params
    }

    /// The parameters, the gradient buffers and which of them hold a gradient since
    /// [`Self::zero_grad`].
    pub fn state_mut(&mut self) -> (&[Vec<f32>], &mut [Vec<f32>], &mut [bool]) {
        (&self.params, &mut self.grads, &mut self.touched)
    }

    /// Marks every gradient as zero (the next [`Self::accumulate`] overwrites instead of adding).
    pub fn zero_grad(&mut self) {
        self.touched.fill(false);
    }

    /// Applies the optimizer to the parameters with the accumulated gradients.
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
        self.accumulate(x, &Targets::Hard(targets), head, mask, mode, 1.0)
    }

    /// Logits `[batch, outputs of head]` of a batch, computed with `params` (e.g. a snapshot of
    /// an earlier model) or, when `None`, with the current parameters.
    pub fn logits(&mut self, params: Option<&[Vec<f32>]>, x: &[f32], head: usize) -> Vec<f32> {
        let batch = x.len() / self.input_width();
        let params = params.unwrap_or(&self.params);
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
        self.out.clone()
    }

    fn input_width(&self) -> usize {
        self.hidden.first().unwrap_or(&self.heads[0]).inp
    }

    /// Adds `weight × ∇` of the batch's mean loss against `targets` to the gradients (parameters
    /// not touched since [`Self::zero_grad`] are overwritten) and returns the mean loss. `x` is
    /// `[batch, 784]` row-major; `mask` restricts the loss to a range of the head's outputs.
    /// A non-finite loss leaves the gradients as they were.
    pub fn accumulate(
        &mut self,
        x: &[f32],
        targets: &Targets,
        head: usize,
        mask: Option<Range<usize>>,
        mode: GrapesMode,
        weight: f32,
    ) -> f32 {
        let batch = x.len() / self.input_width();
        debug_assert!(targets
            .rows(self.heads[head].out)
            .is_none_or(|r| r == batch));
        let par = parallelism();
        let out_layer = self.heads[head];
        forward(
            &self.hidden,
            out_layer,
            self.activation,
            &self.params,
            x,
            batch,
            &mut self.acts,
            &mut self.out,
        );
        // The output error scale · ∂loss/∂logits replaces the logits.
        let k = out_layer.out;
        let range = mask.unwrap_or(0..k);
        let scale = weight / batch as f32;
        let mut loss = 0.0f64;
        for (r, row) in self.out.chunks_exact_mut(k).enumerate() {
            loss += output_error(row, targets, r, &range, scale);
        }
        let loss = (loss / batch as f64) as f32;
        if !loss.is_finite() {
            return loss;
        }
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
            // Local GRAPES scales this layer's own weight and bias gradients only: its error
            // rows are scaled in a copy, while `deltas[l]` (passed down) stays unmodulated.
            let error: &[f32] = if mode == GrapesMode::Local {
                self.scratch.clone_from(&self.deltas[l]);
                grapes::modulate_in_place(&mut self.scratch, &self.factors[l]);
                &self.scratch
            } else {
                &self.deltas[l]
            };
            layer_grads(
                &mut self.grads,
                &mut self.touched,
                batch,
                layer,
                error,
                input,
                par,
            );
        }
        loss
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
    let par = parallelism();
    for (l, &layer) in hidden.iter().enumerate() {
        let (before, rest) = acts.split_at_mut(l);
        let input: &[f32] = if l == 0 { x } else { &before[l - 1] };
        let act = &mut rest[0];
        act.resize(batch * layer.out, 0.0);
        linear(batch, layer, input, params, act, par);
        match activation {
            Activation::Relu => act.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Tanh => act.iter_mut().for_each(|v| *v = v.tanh()),
            Activation::Sigmoid => act.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp())),
        }
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
    par: Parallelism,
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

/// Candle's rule for CPU threads (`RAYON_NUM_THREADS`, else all cores).
pub(crate) fn parallelism() -> Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// Runs `work` on a thread of rayon's pool when the step is multi-threaded (else here), keeping
/// the caller's tracing span. The split products of [`mm`] then fork from inside the pool, one
/// share on the calling worker and one stolen by the other, instead of being injected from
/// outside while the caller parks, which cost two thread wake-ups per product (about 28,000
/// context switches a second at the 256-wide shapes). Measured on 2 threads, paired rounds:
/// +10% samples/s on 784-256-256-10 at batch 64, +3% on 784-1000-1000-10 at batch 128.
pub(crate) fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    if matches!(parallelism(), Parallelism::None) || rayon::current_thread_index().is_some() {
        return work();
    }
    let span = tracing::Span::current();
    rayon::scope(|_| span.in_scope(work))
}

/// Products with fewer multiply-adds than this are not split between threads.
const SPLIT_MIN_WORK: usize = 1 << 21;
/// Smallest share of the split dimension per thread. At least 128 keeps every share off gemm's
/// small-matrix path (m ≤ 64 and n ≤ 64), whose depth blocking differs, so a split product is
/// bit-identical to the whole one.
const SPLIT_MIN_SHARE: usize = 128;

/// `c [m, n] = a [m, k] · b [k, n]` (`c += …` with `accumulate`), all row-major; `a_t` means
/// `a` is stored as `[k, m]`, `b_t` that `b` is stored as `[n, k]`.
///
/// With several threads, a large product is cut along the longer of `m` and `n` into one
/// contiguous share per thread, each computed by single-threaded gemm: one fork and join per
/// product instead of gemm's synchronization at every packing and depth block (measured on 2
/// threads, paired rounds: +21% samples/s on 784-256-256-10 at batch 64, +4% on
/// 784-1000-1000-10 at batch 128). Every element is summed in the same order as by
/// the whole product (the depth blocking depends on `k` only), so results do not depend on the
/// thread count.
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
    accumulate: bool,
    par: Parallelism,
) {
    let product = Product::new(m, n, k, c, a, a_t, b, b_t, accumulate);
    let threads = match par {
        Parallelism::None => 1,
        Parallelism::Rayon(t) => t.max(1),
    };
    let split_rows = m >= n;
    let len = m.max(n);
    let shares = threads.min(len / SPLIT_MIN_SHARE);
    if shares < 2 || m.saturating_mul(n).saturating_mul(k) < SPLIT_MIN_WORK {
        // SAFETY: `Product::new` checked that the whole product lies inside the three slices.
        unsafe { product.run(0..len, split_rows, par) };
        return;
    }
    // Share boundaries on multiples of 16 (whole register tiles).
    let bound = |i: usize| {
        if i == shares {
            len
        } else {
            (len * i / shares) / 16 * 16
        }
    };
    use rayon::prelude::*;
    (0..shares).into_par_iter().for_each(|i| {
        // SAFETY: the shares are disjoint ranges of rows (or columns) of `c`, inside the slices
        // (checked by `Product::new`); `a` and `b` are only read.
        unsafe { product.run(bound(i)..bound(i + 1), split_rows, Parallelism::None) };
    });
}

/// `c [m, n] = a [m, k] · b [k, n]`, row-major, threaded by gemm itself (no split): the
/// benchmark's second peak measurement.
pub(crate) fn mm_gemm_threads(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    par: Parallelism,
) {
    let product = Product::new(m, n, k, c, a, false, b, false, false);
    // SAFETY: `Product::new` checked that the whole product lies inside the three slices.
    unsafe { product.run(0..m, true, par) };
}

/// `gemm` entry of a product fixed by [`mm`]'s layouts: pointers and strides, shared by the
/// threads computing its shares.
#[derive(Clone, Copy)]
struct Product {
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
    accumulate: bool,
}

// SAFETY: a `Product` is only used inside `mm` and `mm_gemm_threads`, while the slices it
// points into are borrowed, and its threads write disjoint parts of `c`.
unsafe impl Send for Product {}
unsafe impl Sync for Product {}

impl Product {
    /// The product of [`mm`]'s arguments; panics unless the slices hold the whole product.
    #[allow(clippy::too_many_arguments)]
    fn new(
        m: usize,
        n: usize,
        k: usize,
        c: &mut [f32],
        a: &[f32],
        a_t: bool,
        b: &[f32],
        b_t: bool,
        accumulate: bool,
    ) -> Product {
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
        Product {
            m,
            n,
            k,
            c: c.as_mut_ptr(),
            a: a.as_ptr(),
            a_rs,
            a_cs,
            b: b.as_ptr(),
            b_rs,
            b_cs,
            accumulate,
        }
    }

    /// Computes rows `range` of `c` (`split_rows`) or its columns `range`.
    ///
    /// # Safety
    /// `range` must lie within `m` (rows) or `n` (columns), the pointers must be valid for the
    /// whole product, and no other thread may touch the same part of `c`.
    unsafe fn run(&self, range: Range<usize>, split_rows: bool, par: Parallelism) {
        let (m, n, c, a, b) = if split_rows {
            (
                range.len(),
                self.n,
                self.c.add(range.start * self.n),
                self.a.offset(range.start as isize * self.a_rs),
                self.b,
            )
        } else {
            (
                self.m,
                range.len(),
                self.c.add(range.start),
                self.a,
                self.b.offset(range.start as isize * self.b_cs),
            )
        };
        gemm::gemm(
            m,
            n,
            self.k,
            c,
            1,
            self.n as isize,
            self.accumulate,
            a,
            self.a_cs,
            self.a_rs,
            b,
            self.b_cs,
            self.b_rs,
            if self.accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        // A fixed, irregular sequence: rounding differences would show in the sums.
        (0..len as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// Every product the fused step makes at the 784-1000-1000-10 / batch-128 and
    /// 784-256-256-10 / batch-64 shapes (forward, error passed down, weight gradient), with and
    /// without accumulation: split between threads, it equals the single-threaded whole
    /// product bit for bit.
    #[test]
    fn split_products_equal_the_whole_product_bit_for_bit() {
        let shapes: &[(usize, usize, usize, bool, bool)] = &[
            (128, 1000, 784, false, true),
            (128, 1000, 1000, false, true),
            (128, 10, 1000, false, true),
            (128, 1000, 1000, false, false),
            (1000, 1000, 128, true, false),
            (1000, 784, 128, true, false),
            (64, 256, 784, false, true),
            (256, 784, 64, true, false),
            (2048, 2048, 2048, false, false),
            (300, 200, 500, true, true),
        ];
        for &(m, n, k, a_t, b_t) in shapes {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            for accumulate in [false, true] {
                let start = values(m * n, 3);
                let mut whole = start.clone();
                mm(
                    m,
                    n,
                    k,
                    &mut whole,
                    &a,
                    a_t,
                    &b,
                    b_t,
                    accumulate,
                    Parallelism::None,
                );
                for threads in [2, 3, 4] {
                    let mut split = start.clone();
                    mm(
                        m,
                        n,
                        k,
                        &mut split,
                        &a,
                        a_t,
                        &b,
                        b_t,
                        accumulate,
                        Parallelism::Rayon(threads),
                    );
                    let same = whole
                        .iter()
                        .zip(&split)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(
                        same,
                        "{m}×{k}·{k}×{n} (a_t {a_t}, b_t {b_t}, accumulate {accumulate}, {threads} threads)"
                    );
                }
                // And the whole product against a plain f64 triple loop.
                let at = |i: usize, p: usize| if a_t { a[p * m + i] } else { a[i * k + p] };
                let bt = |p: usize, j: usize| if b_t { b[j * k + p] } else { b[p * n + j] };
                for &(i, j) in &[(0, 0), (m - 1, n - 1), (m / 2, n / 3)] {
                    let mut sum: f64 = (0..k).map(|p| at(i, p) as f64 * bt(p, j) as f64).sum();
                    if accumulate {
                        sum += start[i * n + j] as f64;
                    }
                    let got = whole[i * n + j] as f64;
                    assert!(
                        (got - sum).abs() <= 1e-3 * (1.0 + sum.abs()),
                        "{got} vs {sum}"
                    );
                }
            }
        }
    }
}
