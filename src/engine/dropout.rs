//! Inverted dropout for the fused steps: while a task trains, every hidden unit (each fully
//! connected unit, each position of a convolution's feature maps) is dropped with probability
//! `p` and the kept ones are scaled by `1/(1 − p)` (PyTorch's `nn.Dropout` in train mode), so
//! evaluation uses the network as it is.
//!
//! The masks come from a [`SeedRng`] stream that the trainer derives from the run's seed and
//! the task, drawn one unit at a time in a fixed order (layer by layer, row by row; the CNN's
//! convolutions chunk by chunk before its parallel stages, its dense layers on a forked
//! stream) on one thread: the same masks on every machine, with any number of threads and
//! `--jobs`.

use crate::rng::SeedRng;

/// A drop probability and the random stream of its masks.
#[derive(Debug, Clone)]
pub struct Dropout {
    /// A unit is dropped when the next 32 random bits fall below this (`p · 2³²`).
    threshold: u64,
    /// The factor of a kept unit, `1/(1 − p)` in `f32`.
    scale: f32,
    rng: SeedRng,
}

impl Dropout {
    /// Dropout with probability `p` (in (0, 1)) drawing from `rng`.
    ///
    /// # Panics
    /// If `p` is not in (0, 1).
    pub fn new(p: f32, rng: SeedRng) -> Dropout {
        assert!(p > 0.0 && p < 1.0, "dropout probability {p} not in (0, 1)");
        Dropout {
            threshold: (f64::from(p) * 4_294_967_296.0) as u64,
            scale: 1.0 / (1.0 - p),
            rng,
        }
    }

    /// The factor of a kept unit, `1/(1 − p)`.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// A second dropout of the same probability on its own random stream, seeded from this
    /// one's next draw (the CNN's convolutions and its fully connected layers each draw from
    /// one).
    pub fn fork(&mut self) -> Dropout {
        Dropout {
            threshold: self.threshold,
            scale: self.scale,
            rng: SeedRng::derive(self.rng.next_u64(), "dropout-fork", 0),
        }
    }

    /// Fills `mask` with the next mask: 0 for a dropped unit, [`Dropout::scale`] for a kept one.
    pub fn fill_mask(&mut self, mask: &mut [f32]) {
        for m in mask {
            *m = if u64::from(self.rng.next_u32()) < self.threshold {
                0.0
            } else {
                self.scale
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_drop_about_p_and_scale_the_rest() {
        let mut d = Dropout::new(0.25, SeedRng::derive(1, "dropout", 0));
        let mut mask = vec![0.0; 100_000];
        d.fill_mask(&mut mask);
        let dropped = mask.iter().filter(|&&m| m == 0.0).count();
        // Binomial(100000, 0.25): sd ≈ 137, so ± 1000 is over 7 sd.
        assert!((24_000..26_000).contains(&dropped), "{dropped}");
        assert!(mask.iter().all(|&m| m == 0.0 || m == 1.0 / (1.0 - 0.25f32)));
    }

    #[test]
    fn the_same_stream_gives_the_same_masks() {
        let draw = || {
            let mut d = Dropout::new(0.5, SeedRng::derive(7, "dropout", 3));
            let mut a = vec![0.0; 64];
            let mut b = vec![0.0; 64];
            d.fill_mask(&mut a);
            d.fill_mask(&mut b);
            (a, b)
        };
        let (a, b) = draw();
        assert_eq!((a.clone(), b.clone()), draw());
        assert_ne!(a, b, "consecutive masks differ");
    }
}
