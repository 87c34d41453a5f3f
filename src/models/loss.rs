//! The training objectives a batch can be scored with, written once: hard-label cross-entropy,
//! soft-label cross-entropy at a temperature (distillation) and the squared norm of the logits
//! (MAS importance). [`output_error`] is the host version the fused step uses; [`loss_tensor`]
//! is the candle version autograd differentiates; the tests hold them to the same gradients.

use std::ops::Range;

use candle_core::{Device, Result, Tensor, D};
use serde::{Deserialize, Serialize};

use super::{cross_entropy, logit_mask, one_hot};

/// What a batch is scored against. Every loss is the mean over the batch's rows; softmaxes and
/// norms only see the outputs in the part's range (all outputs of the head when it has none).
#[derive(Debug, Clone, Copy)]
pub enum Targets<'a> {
    /// Class indices into the head: `−log softmax(z)[t]`.
    Hard(&'a [u32]),
    /// Probability rows `[batch, head outputs]` (zero outside the range): the distillation
    /// loss `−s Σ_j q_j log softmax(z/T)_j` with `s` = 1 or T² ([`DistillScale`]); its
    /// gradient with respect to the logits is `(s/T)(softmax(z/T) − q)`.
    Soft {
        /// Target probabilities, row-major.
        probs: &'a [f32],
        /// Temperature T > 0.
        temperature: f32,
        /// The factor s in front of the cross-entropy.
        scale: DistillScale,
    },
    /// `Σ_j z_j²`, the squared L2 norm of the logits (Aljundi et al.'s MAS importance).
    SquaredNorm,
}

/// The factor in front of the distillation cross-entropy at temperature T.
///
/// Hinton et al. (2015) multiply the soft-target loss by T² so that its gradient keeps the
/// same magnitude as T changes (`T(softmax(z/T) − q)`); van de Ven, Tuytelaars & Tolias's
/// reference implementation of LwF does not (`loss_fn_kd(…, norm=False)` in
/// `models/utils/loss_functions.py`: gradient `(1/T)(softmax(z/T) − q)`, T² times weaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DistillScale {
    /// `−Σ_j q_j log softmax(z/T)_j` (the reference implementation's).
    #[default]
    None,
    /// `−T² Σ_j q_j log softmax(z/T)_j` (Hinton et al.'s).
    TSquared,
}

impl DistillScale {
    /// The factor s at temperature `t`.
    pub fn factor(self, t: f32) -> f32 {
        match self {
            DistillScale::None => 1.0,
            DistillScale::TSquared => t * t,
        }
    }

    /// `s/T`, the factor of the gradient `(s/T)(softmax(z/T) − q)`.
    fn gradient_factor(self, t: f32) -> f32 {
        match self {
            DistillScale::None => 1.0 / t,
            DistillScale::TSquared => t,
        }
    }

    /// The name as written in a config.
    pub fn as_str(self) -> &'static str {
        match self {
            DistillScale::None => "none",
            DistillScale::TSquared => "t-squared",
        }
    }
}

impl Targets<'_> {
    /// Number of rows the targets describe (`None` for [`Targets::SquaredNorm`], which has none).
    pub fn rows(&self, outputs: usize) -> Option<usize> {
        match self {
            Targets::Hard(t) => Some(t.len()),
            Targets::Soft { probs, .. } => Some(probs.len() / outputs.max(1)),
            Targets::SquaredNorm => None,
        }
    }
}

/// Replaces one row of logits `z` (of the whole head) by `scale · ∂loss/∂z` and returns the row's
/// loss. Outputs outside `range` get zero error.
pub fn output_error(
    z: &mut [f32],
    targets: &Targets,
    row: usize,
    range: &Range<usize>,
    scale: f32,
) -> f64 {
    let k = z.len();
    match *targets {
        Targets::Hard(t) => {
            let t = t[row] as usize;
            let (max, log_sum) = log_sum_exp(&z[range.clone()], 1.0);
            let loss = -(z[t] - max - log_sum) as f64;
            for (j, v) in z.iter_mut().enumerate() {
                let p = if range.contains(&j) {
                    libm::expf(*v - max - log_sum)
                } else {
                    0.0
                };
                *v = (p - if j == t { 1.0 } else { 0.0 }) * scale;
            }
            loss
        }
        Targets::Soft {
            probs,
            temperature,
            scale: s,
        } => {
            let q = &probs[row * k..(row + 1) * k];
            let inv_t = 1.0 / temperature;
            let g = s.gradient_factor(temperature);
            let (max, log_sum) = log_sum_exp(&z[range.clone()], inv_t);
            let mut loss = 0.0f64;
            for (j, v) in z.iter_mut().enumerate() {
                if range.contains(&j) {
                    let logp = *v * inv_t - max - log_sum;
                    loss -= (q[j] * logp) as f64;
                    *v = g * (libm::expf(logp) - q[j]) * scale;
                } else {
                    *v = 0.0;
                }
            }
            loss * s.factor(temperature) as f64
        }
        Targets::SquaredNorm => {
            let mut loss = 0.0f64;
            for (j, v) in z.iter_mut().enumerate() {
                if range.contains(&j) {
                    loss += (*v * *v) as f64;
                    *v *= 2.0 * scale;
                } else {
                    *v = 0.0;
                }
            }
            loss
        }
    }
}

/// Scores one row of logits `z` against class `target` within `range`: its cross-entropy
/// `−log softmax(z_range)[target]` and the predicted class, the first argmax of `z` in
/// `range` (a NaN never wins; a row of NaNs predicts `range.start`). Computed with the
/// pure-Rust `libm`, the same bits on every platform.
pub fn score_row(z: &[f32], range: &Range<usize>, target: usize) -> (f64, usize) {
    let (max, log_sum) = log_sum_exp(&z[range.clone()], 1.0);
    let loss = -(z[target] - max - log_sum) as f64;
    let mut best = range.start;
    for j in range.clone() {
        if z[j] > z[best] || (z[best].is_nan() && !z[j].is_nan()) {
            best = j;
        }
    }
    (loss, best)
}

/// `(max, log Σ exp(s·z − max))` of `s·z` over a row.
fn log_sum_exp(z: &[f32], s: f32) -> (f32, f32) {
    let max = z.iter().map(|v| v * s).fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = z.iter().map(|v| libm::expf(v * s - max)).sum();
    (max, libm::logf(sum))
}

/// Softmax of each row of `logits` (`[rows, k]`) over `range` at temperature `temperature`,
/// zero outside the range: the soft targets of distillation.
pub fn softmax_rows(logits: &[f32], k: usize, range: &Range<usize>, temperature: f32) -> Vec<f32> {
    let mut out = vec![0.0; logits.len()];
    for (z, p) in logits.chunks_exact(k).zip(out.chunks_exact_mut(k)) {
        let (max, log_sum) = log_sum_exp(&z[range.clone()], 1.0 / temperature);
        for j in range.clone() {
            p[j] = libm::expf(z[j] / temperature - max - log_sum);
        }
    }
    out
}

/// The same objective as a candle scalar (mean over rows), for autograd. `logits: [batch, k]`.
pub fn loss_tensor(
    logits: &Tensor,
    targets: &Targets,
    range: Option<&Range<usize>>,
    device: &Device,
) -> Result<Tensor> {
    let (batch, k) = logits.dims2()?;
    let mask = range.map(|r| logit_mask(r, k, device)).transpose()?;
    match *targets {
        Targets::Hard(t) => {
            let onehot = one_hot(t, k, device)?;
            Ok(cross_entropy(logits, &onehot, mask.as_ref())?.0)
        }
        Targets::Soft {
            probs,
            temperature,
            scale: s,
        } => {
            let q = Tensor::from_slice(probs, (batch, k), device)?;
            let mut z = (logits / temperature as f64)?;
            if let Some(m) = &mask {
                z = z.broadcast_add(m)?;
            }
            let logp = candle_nn::ops::log_softmax(&z, D::Minus1)?;
            // Masked outputs have q = 0; keep their −1e30 log-probabilities out of the product.
            let logp = match range {
                Some(r) => logp.broadcast_mul(&range_indicator(r, k, device)?)?,
                None => logp,
            };
            let factor = s.factor(temperature) as f64;
            logp.mul(&q)?.sum_all()? * (-factor / batch as f64)
        }
        Targets::SquaredNorm => {
            let z = match range {
                Some(r) => logits.broadcast_mul(&range_indicator(r, k, device)?)?,
                None => logits.clone(),
            };
            z.sqr()?.sum_all()? / batch as f64
        }
    }
}

/// `[1, k]` with ones inside `range` and zeros elsewhere.
fn range_indicator(range: &Range<usize>, k: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..k)
        .map(|j| if range.contains(&j) { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_vec(v, (1, k), device)
}
