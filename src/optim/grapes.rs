//! GRAPES — Group Responsibility for Adjusting the Propagation of Error Signals
//! (Dellaferrera et al., Nature Communications 13, 2022). All of its maths lives in this file.
//!
//! For a hidden layer with weights `W` of shape `[out, in]` (or a convolution kernel
//! `[out, in, kh, kw]`), node `n` has importance `I_n = Σ_i |W[n, i]|` (the sum over every
//! incoming weight of that node or output channel) and modulation factor
//! `M_n = clip(2 · I_n / max_m I_m, 1, 2)`. Factors are recomputed from the current weights at
//! every optimizer step and treated as constants.
//!
//! - **Propagating** (the paper's default): a hidden layer's error `δ_l` is multiplied by `M_l`
//!   before it is used for the layer's gradient *and* passed on to the layers below, so a layer's
//!   effective gain is the product of its own factors and those of every hidden layer above it.
//!   An explicit backward calls [`modulate`] on `δ_l`; autograd models place [`scale_gradient`]
//!   (an identity whose backward multiplies by `M`) on each hidden layer's output.
//! - **Local** (the patent's variant): only the layer's own weight and bias gradients are
//!   scaled row by row ([`scale_rows`]); the error passed upstream is left unmodulated.
//!
//! The output layer is never modulated.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, D};
use serde::{Deserialize, Serialize};

/// Which GRAPES variant, if any, modulates the gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrapesMode {
    /// Plain backpropagation.
    #[default]
    Off,
    /// Modulated errors propagate to the layers below (the paper's GRAPES).
    Propagating,
    /// Only each layer's own gradient is modulated.
    Local,
}

impl GrapesMode {
    /// Whether factors need computing.
    pub fn is_on(self) -> bool {
        self != GrapesMode::Off
    }
}

/// The modulation factors of a hidden layer's weight (`[out, in]` or `[out, in, kh, kw]`):
/// a 1-D tensor of `out` values in `[1, 2]`, detached from any graph.
pub fn modulation_factors(weight: &Tensor) -> Result<Tensor> {
    let w = weight.detach();
    let out = w.dim(0)?;
    let importance = w.abs()?.reshape((out, ()))?.sum(D::Minus1)?;
    let max = importance.max_keepdim(0)?;
    // A layer whose weights are all zero has no preferred node: every factor is 1.
    let max_value = max.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?[0];
    if max_value <= 0.0 || !max_value.is_finite() {
        return Tensor::ones(out, w.dtype(), w.device());
    }
    (importance.broadcast_div(&max)? * 2.0)?.clamp(1.0f32, 2.0f32)
}

/// The modulation factors of a hidden layer from its row-major weights (`out` rows of
/// `weight.len() / out` incoming weights each) into `dst`: the slice form of
/// [`modulation_factors`], used by the fused CPU path.
///
/// A large layer's rows are summed on the threads of the current rayon pool; each row's sum
/// is computed by one thread in the same order, so the factors do not depend on the threads.
pub fn modulation_factors_into(weight: &[f32], out: usize, dst: &mut [f32]) {
    let fan_in = weight.len() / out.max(1);
    // Below about 64 K weights a fork and join costs more than the sums.
    const PARALLEL_MIN_WEIGHTS: usize = 1 << 16;
    if weight.len() >= PARALLEL_MIN_WEIGHTS && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        dst.par_iter_mut()
            .zip(weight.par_chunks_exact(fan_in.max(1)))
            .with_min_len(16)
            .for_each(|(d, row)| *d = abs_sum(row));
    } else {
        for (d, row) in dst.iter_mut().zip(weight.chunks_exact(fan_in.max(1))) {
            *d = abs_sum(row);
        }
    }
    let max = dst.iter().copied().fold(0.0f32, f32::max);
    if max <= 0.0 || !max.is_finite() {
        dst.fill(1.0);
        return;
    }
    for d in dst.iter_mut() {
        *d = ((*d / max) * 2.0).clamp(1.0, 2.0);
    }
}

/// Σ|x| with eight independent partial sums, so that the compiler can vectorize it (a single
/// running sum is a serial chain of additions, and made GRAPES cost 20% of a training step).
fn abs_sum(row: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|w| w.abs()).sum();
    for c in chunks {
        for (acc, w) in lanes.iter_mut().zip(c) {
            *acc += w.abs();
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Multiplies each row of a row-major `[batch, nodes]` error by the node factors, in place.
pub fn modulate_in_place(delta: &mut [f32], factors: &[f32]) {
    for row in delta.chunks_exact_mut(factors.len()) {
        for (d, m) in row.iter_mut().zip(factors) {
            *d *= m;
        }
    }
}

/// Multiplies an error `delta` (`[batch, out]` or `[batch, out, h, w]`) node-wise by `factors`.
pub fn modulate(delta: &Tensor, factors: &Tensor) -> Result<Tensor> {
    delta.broadcast_mul(&broadcastable(factors, delta.rank())?)
}

/// Scales row `n` of a gradient (weight `[out, ...]` or bias `[out]`) by `factors[n]`.
pub fn scale_rows(grad: &Tensor, factors: &Tensor) -> Result<Tensor> {
    let mut shape = vec![factors.dim(0)?];
    shape.extend(std::iter::repeat_n(1, grad.rank() - 1));
    grad.broadcast_mul(&factors.reshape(shape)?)
}

/// Reshapes `[out]` factors to broadcast over a tensor of `rank` whose dim 1 is the node axis.
fn broadcastable(factors: &Tensor, rank: usize) -> Result<Tensor> {
    let mut shape = vec![1, factors.dim(0)?];
    shape.extend(std::iter::repeat_n(1, rank.saturating_sub(2)));
    factors.reshape(shape)
}

/// Identity in the forward pass; its backward multiplies the incoming gradient by `factors`.
/// Placed on each hidden layer's output, it makes autograd compute propagating GRAPES.
pub fn scale_gradient(hidden: &Tensor, factors: &Tensor) -> Result<Tensor> {
    let f = broadcastable(factors, hidden.rank())?;
    hidden.apply_op1(GradScale { factors: f })
}

struct GradScale {
    factors: Tensor,
}

fn copy_storage<S, D>(s: &S, l: &Layout) -> Result<(S, Shape)>
where
    S: BackendStorage<Device = D>,
    D: BackendDevice<Storage = S>,
{
    // SAFETY: every element of `dst` is written by copy_strided_src before it is read.
    let mut dst = unsafe { s.device().alloc_uninit(l.shape(), s.dtype())? };
    s.copy_strided_src(&mut dst, 0, l)?;
    Ok((dst, l.shape().clone()))
}

impl CustomOp1 for GradScale {
    fn name(&self) -> &'static str {
        "grapes-scale-gradient"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        copy_storage(storage, layout)
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        copy_storage(storage, layout)
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.broadcast_mul(&self.factors)?))
    }
}

/// Summary of one layer's factors at one step, for run diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FactorStats {
    /// Mean factor over the layer's nodes.
    pub mean: f64,
    /// Largest factor (2 whenever any weight is non-zero).
    pub max: f64,
    /// Fraction of nodes with a factor above 1.
    pub frac_above_one: f64,
}

impl FactorStats {
    /// Statistics of a factor vector.
    pub fn of(factors: &Tensor) -> Result<FactorStats> {
        Ok(Self::of_slice(
            &factors
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?,
        ))
    }

    /// Statistics of a factor slice.
    pub fn of_slice(v: &[f32]) -> FactorStats {
        let n = v.len().max(1) as f64;
        FactorStats {
            mean: v.iter().map(|&m| m as f64).sum::<f64>() / n,
            max: v
                .iter()
                .map(|&m| m as f64)
                .fold(f64::NEG_INFINITY, f64::max),
            frac_above_one: v.iter().filter(|&&m| m > 1.0).count() as f64 / n,
        }
    }
}

/// Running average of [`FactorStats`] over the steps of a task, per hidden layer.
#[derive(Debug, Clone, Default)]
pub struct FactorStatsAccumulator {
    sums: Vec<FactorStats>,
    steps: usize,
}

impl FactorStatsAccumulator {
    /// Adds one step's factors given as slices.
    pub fn add_slices(&mut self, factors: &[Vec<f32>]) {
        let stats: Vec<FactorStats> = factors.iter().map(|f| FactorStats::of_slice(f)).collect();
        self.add_stats(&stats);
    }

    fn add_stats(&mut self, stats: &[FactorStats]) {
        if self.sums.len() < stats.len() {
            self.sums.resize(stats.len(), FactorStats::default());
        }
        for (sum, s) in self.sums.iter_mut().zip(stats) {
            sum.mean += s.mean;
            sum.max += s.max;
            sum.frac_above_one += s.frac_above_one;
        }
        self.steps += 1;
    }

    /// The averages so far, per layer (empty if nothing was added).
    pub fn averages(&self) -> Vec<FactorStats> {
        let n = self.steps.max(1) as f64;
        self.sums
            .iter()
            .map(|s| FactorStats {
                mean: s.mean / n,
                max: s.max / n,
                frac_above_one: s.frac_above_one / n,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn factors_follow_the_row_sums() {
        // Row |sums|: 4, 2, 1, 3  → 2*I/max = 2, 1, 0.5, 1.5 → clipped 2, 1, 1, 1.5.
        let w = Tensor::new(
            &[[1f32, -3.0], [2.0, 0.0], [-0.5, 0.5], [0.0, -3.0]],
            &Device::Cpu,
        )
        .unwrap();
        let m = modulation_factors(&w).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(m, vec![2.0, 1.0, 1.0, 1.5]);
    }

    #[test]
    fn conv_factors_sum_over_each_output_channel() {
        // Two output channels, 1 input channel, 2x2 kernels: |sums| 4 and 1.
        let w = Tensor::new(
            &[
                [[[1f32, 1.0], [1.0, -1.0]]],
                [[[0.25f32, 0.25], [0.25, 0.25]]],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let m = modulation_factors(&w).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(m, vec![2.0, 1.0]);
    }

    #[test]
    fn zero_weights_give_unit_factors() {
        let w = Tensor::zeros((3, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let m = modulation_factors(&w).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(m, vec![1.0; 3]);
    }

    #[test]
    fn scale_gradient_is_identity_forward_and_scales_backward() {
        let x = candle_core::Var::new(&[[1f32, 2.0, 3.0]], &Device::Cpu).unwrap();
        let f = Tensor::new(&[1f32, 1.5, 2.0], &Device::Cpu).unwrap();
        let y = scale_gradient(x.as_tensor(), &f).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), vec![vec![1.0, 2.0, 3.0]]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(g, vec![vec![1.0, 1.5, 2.0]]);
    }

    #[test]
    fn stats_count_amplified_nodes() {
        let f = Tensor::new(&[1f32, 2.0, 1.5, 1.0], &Device::Cpu).unwrap();
        let s = FactorStats::of(&f).unwrap();
        assert_eq!(s.max, 2.0);
        assert_eq!(s.frac_above_one, 0.5);
        assert!((s.mean - 1.375).abs() < 1e-12);
    }
}
