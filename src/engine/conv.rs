//! The fused CPU training step of the CNN: two `conv k×k → activation → 2×2 max-pool` stages,
//! then the fully connected layers of [`super::fused`], on reusable `f32` buffers, with every
//! product done by the portable kernels of [`super::kernels`] (the same bits on every machine,
//! for any number of threads).
//!
//! # Layout and products
//!
//! A stage's input is channel-major, `[c_in, batch, side, side]` (the pixels `[batch, 28, 28]`
//! are that with one channel). Its convolution is one product over an im2col matrix `cols`
//! `[c_in·k·k, batch·s·s]` (row `(c, ky, kx)`, column `(b, y, x)`, value
//! `input[c, b, y + ky, x + kx]`, with `s = side − k + 1`):
//!
//! ```text
//! forward         Y   [c_out, batch·s·s] = W [c_out, c_in·k·k] · cols
//! weight grad     ∇W  [c_out, c_in·k·k]  = δ [c_out, batch·s·s] · colsᵀ
//! input grad      ∇cols                  = Wᵀ · δ, then summed back onto the input (col2im)
//! ```
//!
//! so the batch and the positions are the long side of every product, where the kernels split
//! between threads. The bias is added after the product and its gradient is each channel's sum
//! of `δ` in order. The max-pool keeps each window's argmax ([`crate::models::pool`], the rule
//! autograd uses too) and the backward pass writes each pooled gradient there. The last
//! stage's output is flattened per sample in candle's order (channel, row, column) for the
//! fully connected layers, and their input error is unflattened the same way.
//!
//! # GRAPES
//!
//! A convolution's factors are per output channel, from the sums of `|W|` over each channel's
//! `c_in·k·k` weights ([`grapes::modulation_factors_into`]). Propagating GRAPES multiplies
//! channel `c`'s error rows by `M_c` before they are used and passed down; local GRAPES scales
//! a copy used for the layer's own gradients only — as in the MLP, and as autograd's
//! [`grapes::scale_gradient`] on each stage's activation output computes.

use std::ops::Range;

use candle_core::Result;
use rayon::prelude::*;

use super::fused::{host_params, write_params, Dense};
use super::kernels::{copy_short, mm, threads};
use super::{Engine, Part};
use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};
use crate::models::loss::Targets;
use crate::models::pool::{pool_plane, pooled_side};
use crate::models::{Activation, LayerKind, Network};
use crate::optim::{grapes, GrapesMode, Optimizer};

/// Rows evaluated at once by [`Engine::logits`] (bounds the im2col buffers: about 7 MB for the
/// first stage).
const EVAL_CHUNK: usize = 256;

/// One `conv → activation → max-pool` stage: where its parameters are, its sizes, and its
/// workspaces for the current batch.
#[derive(Debug, Clone)]
struct Stage {
    weight: usize,
    bias: Option<usize>,
    c_in: usize,
    c_out: usize,
    k: usize,
    /// Side of the input planes.
    side_in: usize,
    /// Side of the convolution's output planes (`side_in − k + 1`).
    side_conv: usize,
    /// Side of the pooled planes.
    side_pool: usize,
    /// im2col of the input, `[c_in·k·k, batch·side_conv²]`.
    cols: Vec<f32>,
    /// Activation output, `[c_out, batch, side_conv²]`.
    act: Vec<f32>,
    /// Pooled output, `[c_out, batch, side_pool²]`.
    pooled: Vec<f32>,
    /// For each pooled value, the index of its input inside its `side_conv²` plane.
    argmax: Vec<u32>,
    /// Error of the convolution's output (before the activation), same layout as `act`.
    delta: Vec<f32>,
}

impl Stage {
    fn depth(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// Forward pass of `batch` samples of `input` (`[c_in, batch, side_in²]`) with `params`:
    /// `cols`, `act`, `pooled` and `argmax`.
    fn forward(&mut self, params: &[Vec<f32>], input: &[f32], batch: usize, act: Activation) {
        let par = threads();
        let (sc, sp) = (self.side_conv, self.side_pool);
        let n = batch * sc * sc;
        im2col(
            input,
            self.c_in,
            batch,
            self.side_in,
            self.k,
            &mut self.cols,
        );
        self.act.resize(self.c_out * n, 0.0);
        mm(
            self.c_out,
            n,
            self.depth(),
            &mut self.act,
            &params[self.weight],
            false,
            &self.cols,
            false,
            false,
            par,
        );
        self.pooled.resize(self.c_out * batch * sp * sp, 0.0);
        self.argmax.resize(self.c_out * batch * sp * sp, 0);
        let bias = self.bias.map(|b| params[b].as_slice());
        // One channel per task: bias, activation and pooling of its `batch` planes.
        self.act
            .par_chunks_mut(n)
            .zip(self.pooled.par_chunks_mut(batch * sp * sp))
            .zip(self.argmax.par_chunks_mut(batch * sp * sp))
            .enumerate()
            .for_each(|(c, ((row, pooled), argmax))| {
                if let Some(b) = bias {
                    row.iter_mut().for_each(|v| *v += b[c]);
                }
                activate(act, row);
                for ((plane, out), arg) in row
                    .chunks_exact(sc * sc)
                    .zip(pooled.chunks_exact_mut(sp * sp))
                    .zip(argmax.chunks_exact_mut(sp * sp))
                {
                    pool_plane(plane, sc, out, arg);
                }
            });
    }

    /// Backward pass from the error of the pooled output (`pooled_delta`, layout of `pooled`):
    /// adds the weight and bias gradients and, with `input_delta`, writes the error of the
    /// stage's input (`[c_in, batch, side_in²]`). `factors` are the stage's GRAPES factors.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        params: &[Vec<f32>],
        grads: &mut [Vec<f32>],
        touched: &mut [bool],
        pooled_delta: &[f32],
        act: Activation,
        mode: GrapesMode,
        factors: &[f32],
        scratch: &mut Vec<f32>,
        input_delta: Option<(&mut Vec<f32>, &mut Vec<f32>)>,
    ) {
        let par = threads();
        let (sc, sp) = (self.side_conv, self.side_pool);
        let depth = self.depth();
        let n = self.act.len() / self.c_out;
        let batch = n / (sc * sc);
        self.delta.resize(self.act.len(), 0.0);
        // One channel per task: each pooled error to its window's argmax (every other
        // position gets none), times the activation's derivative, times the channel's factor
        // under propagating GRAPES.
        self.delta
            .par_chunks_mut(n)
            .zip(self.act.par_chunks(n))
            .zip(pooled_delta.par_chunks(batch * sp * sp))
            .zip(self.argmax.par_chunks(batch * sp * sp))
            .enumerate()
            .for_each(|(c, (((d, h), pd), arg))| {
                d.fill(0.0);
                for ((plane, pd), arg) in d
                    .chunks_exact_mut(sc * sc)
                    .zip(pd.chunks_exact(sp * sp))
                    .zip(arg.chunks_exact(sp * sp))
                {
                    for (&v, &i) in pd.iter().zip(arg) {
                        plane[i as usize] = v;
                    }
                }
                derive(act, d, h);
                if mode == GrapesMode::Propagating {
                    let m = factors[c];
                    d.iter_mut().for_each(|v| *v *= m);
                }
            });
        let error: &[f32] = if mode == GrapesMode::Local {
            scratch.resize(self.delta.len(), 0.0);
            scratch
                .par_chunks_mut(n)
                .zip(self.delta.par_chunks(n))
                .zip(factors.par_iter())
                .for_each(|((s, d), &m)| s.iter_mut().zip(d).for_each(|(s, d)| *s = d * m));
            &scratch[..]
        } else {
            &self.delta
        };
        // ∇W [c_out, depth] (+)= δ [c_out, n] · colsᵀ (cols stored [depth, n]).
        mm(
            self.c_out,
            depth,
            n,
            &mut grads[self.weight],
            error,
            false,
            &self.cols,
            true,
            touched[self.weight],
            par,
        );
        touched[self.weight] = true;
        if let Some(b) = self.bias {
            let gb = &mut grads[b];
            if !touched[b] {
                gb.fill(0.0);
            }
            gb.par_iter_mut()
                .zip(error.par_chunks(n))
                .for_each(|(g, row)| *g += row.iter().sum::<f32>());
            touched[b] = true;
        }
        if let Some((dst, dcols)) = input_delta {
            // ∇cols [depth, n] = Wᵀ (W stored [c_out, depth]) · δ [c_out, n].
            dcols.resize(depth * n, 0.0);
            mm(
                depth,
                n,
                self.c_out,
                dcols,
                &params[self.weight],
                true,
                &self.delta,
                false,
                false,
                par,
            );
            col2im(dcols, self.c_in, batch, self.side_in, self.k, dst);
        }
    }
}

/// Applies the activation in place.
fn activate(act: Activation, v: &mut [f32]) {
    match act {
        Activation::Relu => v.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Tanh => v.iter_mut().for_each(|v| *v = libm::tanhf(*v)),
        Activation::Sigmoid => v
            .iter_mut()
            .for_each(|v| *v = 1.0 / (1.0 + libm::expf(-*v))),
    }
}

/// Multiplies an error `d` by the activation's derivative, given the activation's output `h`.
fn derive(act: Activation, d: &mut [f32], h: &[f32]) {
    match act {
        Activation::Relu => d
            .iter_mut()
            .zip(h)
            .for_each(|(d, &h)| *d = if h > 0.0 { *d } else { 0.0 }),
        Activation::Tanh => d.iter_mut().zip(h).for_each(|(d, &h)| *d *= 1.0 - h * h),
        Activation::Sigmoid => d.iter_mut().zip(h).for_each(|(d, &h)| *d *= h * (1.0 - h)),
    }
}

/// `cols[(c, ky, kx), (b, y, x)] = input[c, b, y + ky, x + kx]` for a `[channels, batch, side,
/// side]` input and `k × k` windows; rows are filled in parallel.
fn im2col(
    input: &[f32],
    channels: usize,
    batch: usize,
    side: usize,
    k: usize,
    cols: &mut Vec<f32>,
) {
    let s = side - k + 1;
    let n = batch * s * s;
    cols.resize(channels * k * k * n, 0.0);
    cols.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
        let (c, ky, kx) = (r / (k * k), r / k % k, r % k);
        for b in 0..batch {
            let plane = &input[(c * batch + b) * side * side..][..side * side];
            for y in 0..s {
                let src = &plane[(y + ky) * side + kx..][..s];
                copy_short(&mut row[(b * s + y) * s..][..s], src);
            }
        }
    });
}

/// The adjoint of [`im2col`]: `input[c, b, y + ky, x + kx] = Σ cols[(c, ky, kx), (b, y, x)]`,
/// summed over `(ky, kx)` in row-major order; channels in parallel.
fn col2im(
    cols: &[f32],
    channels: usize,
    batch: usize,
    side: usize,
    k: usize,
    input: &mut Vec<f32>,
) {
    let s = side - k + 1;
    let n = batch * s * s;
    input.resize(channels * batch * side * side, 0.0);
    input
        .par_chunks_mut(batch * side * side)
        .zip(cols.par_chunks(k * k * n))
        .for_each(|(channel, rows)| {
            channel.fill(0.0);
            for (r, row) in rows.chunks_exact(n).enumerate() {
                let (ky, kx) = (r / k, r % k);
                for b in 0..batch {
                    let plane = &mut channel[b * side * side..][..side * side];
                    for y in 0..s {
                        let dst = &mut plane[(y + ky) * side + kx..][..s];
                        for (d, v) in dst.iter_mut().zip(&row[(b * s + y) * s..][..s]) {
                            *d += v;
                        }
                    }
                }
            }
        });
}

/// A CNN's parameters, gradients and workspaces as host buffers.
#[derive(Debug, Clone)]
pub struct FusedCnn {
    activation: Activation,
    stages: Vec<Stage>,
    dense: Dense,
    /// Parameters in the order of [`Network::params`].
    params: Vec<Vec<f32>>,
    /// Gradients of the last step, same order; valid where `touched`.
    grads: Vec<Vec<f32>>,
    touched: Vec<bool>,
    /// GRAPES factors of every hidden layer, the convolutions first (valid after a step with
    /// GRAPES on).
    factors: Vec<Vec<f32>>,
    /// The last stage's output flattened per sample, `[batch, c·s·s]`: the dense input.
    features: Vec<f32>,
    /// The error of `features`.
    feature_delta: Vec<f32>,
    /// The error of each stage's pooled output, layout of [`Stage::pooled`].
    pooled_deltas: Vec<Vec<f32>>,
    /// Error of an im2col matrix.
    dcols: Vec<f32>,
    /// Local GRAPES: the modulated copy of a stage's error.
    scratch: Vec<f32>,
    /// Logits of an evaluation, chunk after chunk.
    logits: Vec<f32>,
}

impl FusedCnn {
    /// Copies a network's parameters. Fails unless its hidden layers are convolutions followed
    /// by fully connected layers.
    pub fn from_network(net: &Network) -> Result<FusedCnn> {
        let convs = net
            .hidden
            .iter()
            .take_while(|l| l.kind == LayerKind::Conv)
            .count();
        if convs == 0
            || net.hidden[convs..]
                .iter()
                .any(|l| l.kind != LayerKind::Linear)
        {
            candle_core::bail!("the fused CNN step needs convolutions followed by linear layers");
        }
        let mut stages = Vec::with_capacity(convs);
        let mut side = IMAGE_SIDE;
        let mut channels = 1;
        for layer in &net.hidden[..convs] {
            let (c_out, c_in, k, k2) = net.params[layer.weight].as_tensor().dims4()?;
            if c_in != channels || k != k2 || k > side {
                candle_core::bail!(
                    "{}: a {c_out}×{c_in}×{k}×{k2} kernel does not fit {channels} channels of \
                     {side}×{side}",
                    layer.name
                );
            }
            let side_conv = side - k + 1;
            let side_pool = pooled_side(side_conv);
            stages.push(Stage {
                weight: layer.weight,
                bias: layer.bias,
                c_in,
                c_out,
                k,
                side_in: side,
                side_conv,
                side_pool,
                cols: Vec::new(),
                act: Vec::new(),
                pooled: Vec::new(),
                argmax: Vec::new(),
                delta: Vec::new(),
            });
            side = side_pool;
            channels = c_out;
        }
        let dense = Dense::new(net, &net.hidden[convs..], &net.heads)?;
        if dense.input_width() != channels * side * side {
            candle_core::bail!(
                "the first linear layer takes {} inputs; the convolutions give {channels}×{side}×{side}",
                dense.input_width()
            );
        }
        let params = host_params(net)?;
        let factors = stages
            .iter()
            .map(|s| s.c_out)
            .chain(dense.hidden_layers().iter().map(|l| l.out))
            .map(|width| vec![1.0; width])
            .collect();
        Ok(FusedCnn {
            activation: net.activation,
            pooled_deltas: vec![Vec::new(); stages.len()],
            stages,
            dense,
            grads: params.iter().map(|p| vec![0.0; p.len()]).collect(),
            touched: vec![false; params.len()],
            params,
            factors,
            features: Vec::new(),
            feature_delta: Vec::new(),
            dcols: Vec::new(),
            scratch: Vec::new(),
            logits: Vec::new(),
        })
    }

    /// Copies the parameters into the network's `Var`s.
    pub fn write_back(&self, net: &Network) -> Result<()> {
        write_params(&self.params, net)
    }

    /// The gradients of the last accumulation (`None` for parameters it did not reach).
    pub fn gradients(&self) -> Vec<Option<&[f32]>> {
        self.grads
            .iter()
            .zip(&self.touched)
            .map(|(g, &t)| t.then_some(g.as_slice()))
            .collect()
    }

    /// The convolutions and the flattening of `x` (`[batch, 784]`) into `features`, with
    /// `params`.
    fn features(&mut self, params: &[Vec<f32>], x: &[f32]) {
        let batch = x.len() / IMAGE_PIXELS;
        for s in 0..self.stages.len() {
            let (before, rest) = self.stages.split_at_mut(s);
            let input: &[f32] = before.last().map_or(x, |p| &p.pooled);
            rest[0].forward(params, input, batch, self.activation);
        }
        let last = self.stages.last().expect("at least one stage");
        let plane = last.side_pool * last.side_pool;
        let width = last.c_out * plane;
        self.features.resize(batch * width, 0.0);
        // [c, b, plane] → [b, c, plane]
        for (c, channel) in last.pooled.chunks_exact(batch * plane).enumerate() {
            for (b, src) in channel.chunks_exact(plane).enumerate() {
                self.features[b * width + c * plane..][..plane].copy_from_slice(src);
            }
        }
    }

    /// Adds `weight × ∇` of the batch's mean loss to the gradients and returns the mean loss;
    /// a non-finite loss leaves the gradients as they were (see [`Engine::accumulate`]).
    fn accumulate_batch(
        &mut self,
        x: &[f32],
        targets: &Targets,
        head: usize,
        mask: Option<Range<usize>>,
        mode: GrapesMode,
        weight: f32,
    ) -> f32 {
        let batch = x.len() / IMAGE_PIXELS;
        let params = std::mem::take(&mut self.params);
        self.features(&params, x);
        self.params = params;
        self.dense.forward(&self.params, &self.features, head);
        let loss = self.dense.output_error(targets, head, mask, weight);
        if !loss.is_finite() {
            return loss;
        }
        let convs = self.stages.len();
        if mode.is_on() {
            let widths = self
                .stages
                .iter()
                .map(|s| (s.weight, s.c_out))
                .chain(self.dense.hidden_layers().iter().map(|l| (l.weight, l.out)));
            for (f, (w, out)) in self.factors.iter_mut().zip(widths) {
                grapes::modulation_factors_into(&self.params[w], out, f);
            }
        }
        self.dense.backward(
            &self.params,
            &mut self.grads,
            &mut self.touched,
            &self.features,
            head,
            mode,
            &self.factors[convs..],
            Some(&mut self.feature_delta),
        );
        // [b, c, plane] → [c, b, plane]
        let last = &self.stages[convs - 1];
        let plane = last.side_pool * last.side_pool;
        let width = last.c_out * plane;
        let top = &mut self.pooled_deltas[convs - 1];
        top.resize(batch * width, 0.0);
        for (b, sample) in self.feature_delta.chunks_exact(width).enumerate() {
            for (c, src) in sample.chunks_exact(plane).enumerate() {
                top[(c * batch + b) * plane..][..plane].copy_from_slice(src);
            }
        }
        for s in (0..convs).rev() {
            let (below, above) = self.pooled_deltas.split_at_mut(s);
            let input_delta = below.last_mut().map(|d| (d, &mut self.dcols));
            self.stages[s].backward(
                &self.params,
                &mut self.grads,
                &mut self.touched,
                &above[0],
                self.activation,
                mode,
                &self.factors[s],
                &mut self.scratch,
                input_delta,
            );
        }
        loss
    }
}

impl Engine for FusedCnn {
    fn params(&self) -> &[Vec<f32>] {
        &self.params
    }

    fn zero_grad(&mut self) {
        self.touched.fill(false);
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
        (&self.params, &mut self.grads, &mut self.touched)
    }

    fn apply(&mut self, optimizer: &mut (dyn Optimizer + Send)) -> Result<()> {
        super::step_touched(optimizer, &mut self.params, &self.grads, &self.touched);
        Ok(())
    }

    fn logits(&mut self, params: Option<&[Vec<f32>]>, x: &[f32], head: usize) -> Result<Vec<f32>> {
        let own = std::mem::take(&mut self.params);
        let params = params.unwrap_or(&own);
        let mut logits = std::mem::take(&mut self.logits);
        logits.clear();
        for chunk in x.chunks(EVAL_CHUNK * IMAGE_PIXELS) {
            self.features(params, chunk);
            logits.extend_from_slice(self.dense.forward(params, &self.features, head));
        }
        self.params = own;
        let out = logits.clone();
        self.logits = logits;
        Ok(out)
    }

    fn factors(&self) -> &[Vec<f32>] {
        &self.factors
    }

    fn sync(&self, net: &Network) -> Result<()> {
        self.write_back(net)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `col2im` is the adjoint of `im2col`: ⟨im2col(x), y⟩ = ⟨x, col2im(y)⟩.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        let (channels, batch, side, k) = (2, 3, 7, 3);
        let x: Vec<f32> = (0..channels * batch * side * side)
            .map(|i| ((i * 37) % 11) as f32 - 5.0)
            .collect();
        let mut cols = Vec::new();
        im2col(&x, channels, batch, side, k, &mut cols);
        let y: Vec<f32> = (0..cols.len())
            .map(|i| ((i * 13) % 7) as f32 - 3.0)
            .collect();
        let mut back = Vec::new();
        col2im(&y, channels, batch, side, k, &mut back);
        let lhs: f64 = cols.iter().zip(&y).map(|(a, b)| (a * b) as f64).sum();
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| (a * b) as f64).sum();
        assert_eq!(lhs, rhs);
        // Spot check: row (c 1, ky 2, kx 0), column (b 2, y 1, x 3).
        let s = side - k + 1;
        let n = batch * s * s;
        let row = k * k + 2 * k;
        assert_eq!(
            cols[row * n + (2 * s + 1) * s + 3],
            x[((batch + 2) * side + 3) * side + 3]
        );
    }
}
