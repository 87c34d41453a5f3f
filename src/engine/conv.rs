//! The fused CPU training step of the CNN: two `conv k×k → activation → 2×2 max-pool` stages,
//! then the fully connected layers of [`super::fused`], on reusable `f32` buffers, with every
//! product done by the portable kernels of [`super::kernels`] (the same bits on every machine,
//! for any number of threads).
//!
//! # Chunks of samples
//!
//! The convolutional stages run on chunks of [`CHUNK`] samples, one chunk per task on the
//! threads of the current rayon pool; each chunk keeps its own im2col matrices, activations,
//! argmaxes and workspaces (allocated at the first step, then reused), about 1 MB per chunk
//! at 8 and 16 channels, and its products run on its thread. The fully connected layers then run on the whole
//! batch (their products split between threads as the MLP's do).
//!
//! # Layout and products
//!
//! A chunk's input to a stage is channel-major, `[c_in, rows, side, side]` (the pixels
//! `[rows, 28, 28]` are that with one channel). Its convolution is one product over an im2col
//! matrix `cols` `[c_in·k·k, rows·s·s]` (row `(c, ky, kx)`, column `(b, y, x)`, value
//! `input[c, b, y + ky, x + kx]`, with `s = side − k + 1`):
//!
//! ```text
//! forward         Y   [c_out, rows·s·s] = W [c_out, c_in·k·k] · cols
//! weight grad     ∇W  [c_out, c_in·k·k] = δ [c_out, rows·s·s] · colsᵀ   (one per chunk)
//! input grad      ∇cols                 = Wᵀ · δ, then summed back onto the input (col2im)
//! ```
//!
//! The forward pass keeps each chunk's im2col matrices for the weight gradients. The bias is
//! added after the product; its gradient is each channel's sum of `δ` in order.
//! A stage's weight and bias gradients are the sums of the chunks' ones, added in chunk order;
//! the chunks are fixed by the batch, not by the threads, so every number is the same for any
//! thread count. The max-pool keeps each window's argmax ([`crate::models::pool`], the rule
//! autograd uses too) and the backward pass writes each pooled gradient there. The last
//! stage's output is flattened per sample in candle's order (channel, row, column) for the
//! fully connected layers, and their input error is unflattened the same way.
//!
//! # GRAPES
//!
//! A convolution's factors are per output channel, from the sums of `|W|` over each channel's
//! `c_in·k·k` weights ([`grapes::modulation_factors_into`]). Propagating GRAPES multiplies
//! channel `c`'s error by `M_c` before it is used and passed down; local GRAPES scales a copy
//! used for the layer's own gradients only — as in the MLP, and as autograd's
//! [`grapes::scale_gradient`] on each stage's activation output computes.

use candle_core::Result;
use rayon::prelude::*;

use super::fused::{activate, derive, Dense};
use super::kernels::{copy_short, mm, Isa};
use super::{Dropout, Fused, FusedPasses, Objective};
use crate::models::pool::{pool_plane, pooled_side};
use crate::models::{Activation, LayerKind, Network};
use crate::optim::{grapes, GrapesMode};

/// Samples per chunk of the convolutional stages: fixed (the weight gradients are summed chunk
/// by chunk, so this, not the threads, fixes their bits). Eight 28×28 images make an im2col
/// matrix of the first stage of 0.5 MB.
pub const CHUNK: usize = 8;

/// Rows evaluated at once by [`super::Engine::logits`].
const EVAL_ROWS: usize = 256;

/// One `conv → activation → max-pool` stage: where its parameters are and its sizes.
#[derive(Debug, Clone, Copy)]
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
}

/// One stage's state for the samples of one chunk.
#[derive(Debug, Clone, Default)]
struct StageWork {
    /// im2col of the stage's input, `[c_in·k·k, rows·side_conv²]`, kept for the weight
    /// gradient.
    cols: Vec<f32>,
    /// Activation output, `[c_out, rows, side_conv²]`.
    act: Vec<f32>,
    /// Pooled output, `[c_out, rows, side_pool²]`.
    pooled: Vec<f32>,
    /// For each pooled value, the index of its input inside its `side_conv²` plane.
    argmax: Vec<u32>,
    /// Error of `pooled`.
    pooled_delta: Vec<f32>,
    /// This chunk's weight gradient.
    grad_w: Vec<f32>,
    /// This chunk's bias gradient.
    grad_b: Vec<f32>,
    /// Training-time dropout of the activation (`[c_out, rows, side_conv²]`: 0 or `1/(1 − p)`),
    /// drawn before the chunks run; empty when dropout is off.
    mask: Vec<f32>,
    /// The activation before its mask (where the derivative is taken) while dropout is on.
    undropped: Vec<f32>,
}

/// Everything one chunk of samples needs: each stage's state and the workspaces its thread
/// uses.
#[derive(Debug, Clone, Default)]
struct ChunkWork {
    stages: Vec<StageWork>,
    /// Error of a stage's convolution output (before the activation).
    delta: Vec<f32>,
    /// Local GRAPES: the modulated copy of `delta`.
    scratch: Vec<f32>,
    /// Error of `cols`.
    dcols: Vec<f32>,
    /// A stage's weight gradient of this chunk, transposed (`[c_in·k·k, c_out]`).
    grad_w_t: Vec<f32>,
}

impl Stage {
    fn depth(&self) -> usize {
        self.c_in * self.k * self.k
    }

    /// Forward pass of the `rows` samples of `input` (`[c_in, rows, side_in²]`): `work`'s
    /// activations, pooled values and argmaxes. With `dropping`, the activation is multiplied
    /// by `work.mask` before it is pooled (the undropped activation kept).
    fn forward(
        &self,
        params: &[Vec<f32>],
        input: &[f32],
        rows: usize,
        act: Activation,
        work: &mut StageWork,
        dropping: bool,
    ) {
        let (sc, sp) = (self.side_conv, self.side_pool);
        let n = rows * sc * sc;
        im2col(input, self.c_in, rows, self.side_in, self.k, &mut work.cols);
        work.act.resize(self.c_out * n, 0.0);
        mm(
            self.c_out,
            n,
            self.depth(),
            &mut work.act,
            &params[self.weight],
            false,
            &work.cols,
            false,
            false,
            1,
        );
        if let Some(b) = self.bias {
            for (row, &b) in work.act.chunks_exact_mut(n).zip(&params[b]) {
                row.iter_mut().for_each(|v| *v += b);
            }
        }
        activate(act, &mut work.act);
        if dropping {
            work.undropped.clone_from(&work.act);
            work.act
                .iter_mut()
                .zip(&work.mask)
                .for_each(|(a, m)| *a *= m);
        }
        let planes = self.c_out * rows;
        work.pooled.resize(planes * sp * sp, 0.0);
        work.argmax.resize(planes * sp * sp, 0);
        for ((plane, out), arg) in work
            .act
            .chunks_exact(sc * sc)
            .zip(work.pooled.chunks_exact_mut(sp * sp))
            .zip(work.argmax.chunks_exact_mut(sp * sp))
        {
            pool_plane(plane, sc, out, arg);
        }
    }

    /// Backward pass of one chunk from the pooled error of `ws.stages[s]`: this chunk's weight
    /// and bias gradients into its `grad_w` and `grad_b` (from the im2col matrix the forward
    /// pass kept), and, with `input_delta`, the error of the stage's input
    /// (`[c_in, rows, side_in²]`). `factors` are the stage's GRAPES factors.
    /// With `dropping`, the error passes back through the stage's dropout mask and the
    /// activation's derivative is taken at the undropped activation.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        params: &[Vec<f32>],
        rows: usize,
        act: Activation,
        mode: GrapesMode,
        factors: &[f32],
        ws: &mut ChunkWork,
        s: usize,
        input_delta: Option<&mut Vec<f32>>,
        dropping: bool,
    ) {
        let (sc, sp) = (self.side_conv, self.side_pool);
        let depth = self.depth();
        let n = rows * sc * sc;
        let work = &mut ws.stages[s];
        // Each pooled error to its window's argmax (every other position gets none), times
        // the activation's derivative, times the channel's factor under propagating GRAPES.
        let d = &mut ws.delta;
        d.clear();
        d.resize(self.c_out * n, 0.0);
        for ((plane, pd), arg) in d
            .chunks_exact_mut(sc * sc)
            .zip(work.pooled_delta.chunks_exact(sp * sp))
            .zip(work.argmax.chunks_exact(sp * sp))
        {
            for (&v, &i) in pd.iter().zip(arg) {
                plane[i as usize] = v;
            }
        }
        if dropping {
            d.iter_mut().zip(&work.mask).for_each(|(d, m)| *d *= m);
            derive(act, d, &work.undropped);
        } else {
            derive(act, d, &work.act);
        }
        if mode == GrapesMode::Propagating {
            modulate_rows(d, n, factors);
        }
        let error: &[f32] = if mode == GrapesMode::Local {
            ws.scratch.clone_from(d);
            modulate_rows(&mut ws.scratch, n, factors);
            &ws.scratch
        } else {
            d
        };
        // ∇W [c_out, depth] = δ [c_out, n] · colsᵀ, or ∇Wᵀ [depth, c_out] = cols · δᵀ then
        // transposed: each element is the same chain over the n pixels either way. The second
        // reads `cols` in place and packs only δ into panels, where the first transposes
        // `cols` into them; it is taken unless it costs more whole register tiles (a few
        // output channels fill a tile's columns poorly: 8 or 16 of the AVX-512 tile's 32).
        work.grad_w.resize(self.c_out * depth, 0.0);
        let isa = Isa::detected();
        if isa.padded_area(depth, self.c_out) <= isa.padded_area(self.c_out, depth) {
            ws.grad_w_t.resize(depth * self.c_out, 0.0);
            mm(
                depth,
                self.c_out,
                n,
                &mut ws.grad_w_t,
                &work.cols,
                false,
                error,
                true,
                false,
                1,
            );
            for (d, row) in ws.grad_w_t.chunks_exact(self.c_out).enumerate() {
                for (c, &g) in row.iter().enumerate() {
                    work.grad_w[c * depth + d] = g;
                }
            }
        } else {
            mm(
                self.c_out,
                depth,
                n,
                &mut work.grad_w,
                error,
                false,
                &work.cols,
                true,
                false,
                1,
            );
        }
        if self.bias.is_some() {
            work.grad_b.clear();
            work.grad_b
                .extend(error.chunks_exact(n).map(|row| row.iter().sum::<f32>()));
        }
        if let Some(dst) = input_delta {
            // ∇cols [depth, n] = Wᵀ (W stored [c_out, depth]) · δ [c_out, n].
            ws.dcols.resize(depth * n, 0.0);
            mm(
                depth,
                n,
                self.c_out,
                &mut ws.dcols,
                &params[self.weight],
                true,
                &ws.delta,
                false,
                false,
                1,
            );
            col2im(&ws.dcols, self.c_in, rows, self.side_in, self.k, dst);
        }
    }
}

/// Multiplies row `c` (length `n`) of a `[channels, n]` error by `factors[c]`.
fn modulate_rows(d: &mut [f32], n: usize, factors: &[f32]) {
    for (row, &m) in d.chunks_exact_mut(n).zip(factors) {
        row.iter_mut().for_each(|v| *v *= m);
    }
}

/// `cols[(c, ky, kx), (b, y, x)] = input[c, b, y + ky, x + kx]` for a `[channels, batch, side,
/// side]` input and `k × k` windows.
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
    for (r, row) in cols.chunks_exact_mut(n).enumerate() {
        let (c, ky, kx) = (r / (k * k), r / k % k, r % k);
        for b in 0..batch {
            let plane = &input[(c * batch + b) * side * side..][..side * side];
            for y in 0..s {
                let src = &plane[(y + ky) * side + kx..][..s];
                copy_short(&mut row[(b * s + y) * s..][..s], src);
            }
        }
    }
}

/// The adjoint of [`im2col`]: `input[c, b, y + ky, x + kx] = Σ cols[(c, ky, kx), (b, y, x)]`,
/// summed over `(ky, kx)` in row-major order.
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
    input.clear();
    input.resize(channels * batch * side * side, 0.0);
    for (channel, rows) in input
        .chunks_exact_mut(batch * side * side)
        .zip(cols.chunks_exact(k * k * n))
    {
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
    }
}

/// The fused passes of a CNN: its convolutional stages and fully connected layers, with their
/// workspaces. (GRAPES factors: one vector per hidden layer, the convolutions first.)
#[derive(Debug, Clone)]
pub struct CnnPasses {
    activation: Activation,
    stages: Vec<Stage>,
    dense: Dense,
    /// One per chunk of the largest batch so far.
    chunks: Vec<ChunkWork>,
    /// The last stage's output flattened per sample, `[batch, c·s·s]`: the dense input.
    features: Vec<f32>,
    /// The error of `features`.
    feature_delta: Vec<f32>,
    /// Pixels of one input image (`side_in²` of the first stage).
    pixels: usize,
    /// Training-time dropout of the convolutions' activations (the fully connected layers'
    /// is `dense`'s own, on a stream forked from this one).
    dropout: Option<Dropout>,
}

/// A CNN's parameters, gradients and workspaces as host buffers.
pub type FusedCnn = Fused<CnnPasses>;

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
        let input_side = net.spec.input_side();
        let mut side = input_side;
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
        let widths: Vec<usize> = stages
            .iter()
            .map(|s| s.c_out)
            .chain(dense.hidden_layers().iter().map(|l| l.out))
            .collect();
        let passes = CnnPasses {
            pixels: input_side * input_side,
            activation: net.activation,
            stages,
            dense,
            chunks: Vec::new(),
            features: Vec::new(),
            feature_delta: Vec::new(),
            dropout: None,
        };
        Fused::new(passes, net, widths.into_iter())
    }
}

impl CnnPasses {
    /// Width of the flattened output of the last stage (the dense input).
    fn feature_width(&self) -> usize {
        let last = self.stages.last().expect("at least one stage");
        last.c_out * last.side_pool * last.side_pool
    }

    /// The convolutional stages of `x` (`[batch, 784]`) with `params`, chunk by chunk in
    /// parallel, and their output flattened into `features`. With `training` and dropout on,
    /// every chunk's and stage's mask is drawn first, in chunk then stage order on this thread
    /// (the same masks for any number of threads), and applied after each activation.
    fn features(&mut self, params: &[Vec<f32>], x: &[f32], training: bool) {
        let batch = x.len() / self.pixels;
        let chunks = batch.div_ceil(CHUNK);
        if self.chunks.len() < chunks {
            let stages = vec![StageWork::default(); self.stages.len()];
            self.chunks.resize(
                chunks,
                ChunkWork {
                    stages,
                    ..ChunkWork::default()
                },
            );
        }
        let dropping = training && self.dropout.is_some();
        if let (true, Some(dropout)) = (dropping, &mut self.dropout) {
            for (c, ws) in self.chunks[..chunks].iter_mut().enumerate() {
                let rows = (batch - c * CHUNK).min(CHUNK);
                for (stage, work) in self.stages.iter().zip(&mut ws.stages) {
                    work.mask
                        .resize(stage.c_out * rows * stage.side_conv * stage.side_conv, 0.0);
                    dropout.fill_mask(&mut work.mask);
                }
            }
        }
        let width = self.feature_width();
        let pixels = self.pixels;
        self.features.resize(batch * width, 0.0);
        let (stages, act) = (&self.stages, self.activation);
        self.chunks[..chunks]
            .par_iter_mut()
            .zip(x.par_chunks(CHUNK * pixels))
            .zip(self.features.par_chunks_mut(CHUNK * width))
            .for_each(|((ws, x), features)| {
                let rows = x.len() / pixels;
                for (s, stage) in stages.iter().enumerate() {
                    let (before, rest) = ws.stages.split_at_mut(s);
                    let input: &[f32] = before.last().map_or(x, |p| &p.pooled);
                    stage.forward(params, input, rows, act, &mut rest[0], dropping);
                }
                // [c, b, plane] → [b, c, plane]
                let last = ws.stages.last().expect("at least one stage");
                let plane = width / stages[stages.len() - 1].c_out;
                for (c, channel) in last.pooled.chunks_exact(rows * plane).enumerate() {
                    for (b, src) in channel.chunks_exact(plane).enumerate() {
                        features[b * width + c * plane..][..plane].copy_from_slice(src);
                    }
                }
            });
    }
}

impl FusedPasses for CnnPasses {
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
        let batch = x.len() / self.pixels;
        self.features(params, x, true);
        let dropping = self.dropout.is_some();
        let losses = self
            .dense
            .objectives_error(params, &self.features, objectives);
        if !self.dense.has_error() {
            return losses;
        }
        let convs = self.stages.len();
        if mode.is_on() {
            let widths = self
                .stages
                .iter()
                .map(|s| (s.weight, s.c_out))
                .chain(self.dense.hidden_layers().iter().map(|l| (l.weight, l.out)));
            for (f, (w, out)) in factors.iter_mut().zip(widths) {
                grapes::modulation_factors_into(&params[w], out, f);
            }
        }
        self.dense.backward(
            params,
            grads,
            touched,
            &self.features,
            mode,
            &factors[convs..],
            Some(&mut self.feature_delta),
        );
        // The convolutional stages, chunk by chunk in parallel.
        let width = self.feature_width();
        let pixels = self.pixels;
        let (stages, act, factors) = (&self.stages, self.activation, &*factors);
        self.chunks[..batch.div_ceil(CHUNK)]
            .par_iter_mut()
            .zip(x.par_chunks(CHUNK * pixels))
            .zip(self.feature_delta.par_chunks(CHUNK * width))
            .for_each(|((ws, x), fd)| {
                let rows = x.len() / pixels;
                // [b, c, plane] → [c, b, plane]
                let last = stages[convs - 1];
                let plane = last.side_pool * last.side_pool;
                let top = &mut ws.stages[convs - 1].pooled_delta;
                top.resize(rows * width, 0.0);
                for (b, sample) in fd.chunks_exact(width).enumerate() {
                    for (c, src) in sample.chunks_exact(plane).enumerate() {
                        top[(c * rows + b) * plane..][..plane].copy_from_slice(src);
                    }
                }
                for (s, stage) in stages.iter().enumerate().rev() {
                    // Where the error of the stage's input goes (the stage below's pooled
                    // output), taken out of `ws` while the stage uses the rest of it.
                    let mut below =
                        (s > 0).then(|| std::mem::take(&mut ws.stages[s - 1].pooled_delta));
                    stage.backward(
                        params,
                        rows,
                        act,
                        mode,
                        &factors[s],
                        ws,
                        s,
                        below.as_mut(),
                        dropping,
                    );
                    if let Some(delta) = below {
                        ws.stages[s - 1].pooled_delta = delta;
                    }
                }
            });
        // Each stage's gradients: the chunks' ones summed in chunk order.
        let chunks = &self.chunks[..batch.div_ceil(CHUNK)];
        let weight_part: fn(&StageWork) -> &[f32] = |w| &w.grad_w;
        let bias_part: fn(&StageWork) -> &[f32] = |w| &w.grad_b;
        for (s, stage) in self.stages.iter().enumerate() {
            let parts = std::iter::once((stage.weight, weight_part))
                .chain(stage.bias.map(|b| (b, bias_part)));
            for (index, part_of) in parts {
                let g = &mut grads[index];
                for (i, chunk) in chunks.iter().enumerate() {
                    let part = part_of(&chunk.stages[s]);
                    if i == 0 && !touched[index] {
                        g.copy_from_slice(part);
                    } else {
                        g.iter_mut().zip(part).for_each(|(g, p)| *g += p);
                    }
                }
                touched[index] = true;
            }
        }
        losses
    }

    fn logits(&mut self, params: &[Vec<f32>], x: &[f32], head: usize) -> Vec<f32> {
        let mut logits = Vec::new();
        for rows in x.chunks(EVAL_ROWS * self.pixels) {
            self.features(params, rows, false);
            logits.extend_from_slice(self.dense.forward(params, &self.features, head));
        }
        logits
    }

    /// Dropout after every convolution's activation (before its pooling) and after every
    /// fully connected hidden layer, the latter on a stream forked from `dropout`.
    fn set_dropout(&mut self, mut dropout: Option<Dropout>) {
        self.dense.set_dropout(dropout.as_mut().map(Dropout::fork));
        self.dropout = dropout;
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
