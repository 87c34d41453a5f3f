//! Weight initialization, seeded and portable (PyTorch's conventions for the bounds).

use serde::{Deserialize, Serialize};

use crate::rng::SeedRng;

/// How a layer's weights are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", tag = "name", deny_unknown_fields)]
pub enum Init {
    /// `U(-b, b)` with `b = sqrt(6 / fan_in)`: `torch.nn.init.kaiming_uniform_` with its
    /// defaults (gain √2), as in the GRAPES reference notebook.
    #[default]
    KaimingUniform,
    /// `U(-b, b)` with `b = 1 / sqrt(fan_in)`: PyTorch's default for `nn.Linear` and
    /// `nn.Conv2d` (`kaiming_uniform_` with `a = √5`), and the initialization of van de Ven et
    /// al.'s continual-learning reference implementation.
    TorchDefault,
    /// `U(-b, b)` with `b = sqrt(6 / (fan_in + fan_out))` (Glorot & Bengio 2010).
    XavierUniform,
    /// `N(0, std²)`.
    Normal {
        /// Standard deviation.
        std: f64,
    },
}

impl Init {
    /// Draws `fan_out × fan_in` weights (row-major `[out, in…]`) from `rng`.
    pub fn sample(self, rng: &mut SeedRng, fan_in: usize, fan_out: usize, n: usize) -> Vec<f32> {
        let uniform = |rng: &mut SeedRng, b: f64| -> Vec<f32> {
            (0..n)
                .map(|_| rng.uniform_f32(-b as f32, b as f32))
                .collect()
        };
        match self {
            Init::KaimingUniform => uniform(rng, (6.0 / fan_in as f64).sqrt()),
            Init::TorchDefault => uniform(rng, (1.0 / fan_in as f64).sqrt()),
            Init::XavierUniform => uniform(rng, (6.0 / (fan_in + fan_out) as f64).sqrt()),
            Init::Normal { std } => (0..n).map(|_| (rng.normal() * std) as f32).collect(),
        }
    }

    /// Biases: `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, PyTorch's default for `nn.Linear` and `nn.Conv2d`.
    pub fn sample_bias(rng: &mut SeedRng, fan_in: usize, n: usize) -> Vec<f32> {
        let b = (1.0 / fan_in as f64).sqrt() as f32;
        (0..n).map(|_| rng.uniform_f32(-b, b)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every uniform kind stays within its bound and has the variance b²/3 of `U(-b, b)`.
    #[test]
    fn uniform_kinds_match_their_bounds_and_variance() {
        let (fan_in, fan_out, n) = (784, 1000, 200_000);
        for (init, bound) in [
            (Init::KaimingUniform, (6.0 / fan_in as f64).sqrt()),
            (Init::TorchDefault, (1.0 / fan_in as f64).sqrt()),
            (
                Init::XavierUniform,
                (6.0 / (fan_in + fan_out) as f64).sqrt(),
            ),
        ] {
            let mut rng = SeedRng::derive(7, "init-test", 0);
            let w = init.sample(&mut rng, fan_in, fan_out, n);
            assert!(w.iter().all(|&x| x.abs() <= bound as f32), "{init:?}");
            let var = w.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / n as f64;
            let expected = bound * bound / 3.0;
            assert!(
                (var / expected - 1.0).abs() < 0.02,
                "{init:?}: {var} vs {expected}"
            );
        }
    }
}
