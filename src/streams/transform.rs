//! Per-image transforms of a task: identity, a fixed pixel permutation, or a rotation.
//!
//! Transforms are applied to one batch at a time as pixels are converted to `f32`, so a stream of
//! N permuted tasks never holds N copies of the dataset.

use std::sync::Arc;

use crate::rng::SeedRng;

/// The transform of one task.
#[derive(Debug, Clone)]
pub enum Transform {
    /// Images as they are.
    Identity,
    /// Output pixel `i` is input pixel `source[i]`.
    Permute {
        /// The source pixel of every output pixel.
        source: Arc<Vec<u16>>,
        /// The stream seed it was derived from.
        seed: u64,
    },
    /// Rotation about the image centre by `degrees` (counter-clockwise as displayed), with
    /// bilinear interpolation and zero padding.
    Rotate {
        /// Angle in degrees.
        degrees: f64,
        /// Precomputed interpolation taps, one set per output pixel.
        table: Arc<Vec<[(u16, f32); 4]>>,
    },
}

impl Transform {
    /// The permutation of task `task` (0-based) of a stream with seed `seed`, over the
    /// `side × side` positions of its (padded) images.
    pub fn permutation(seed: u64, task: usize, side: usize) -> Transform {
        let perm = SeedRng::derive(seed, "pixel-permutation", task as u64).permutation(side * side);
        Transform::Permute {
            source: Arc::new(perm.into_iter().map(|p| p as u16).collect()),
            seed,
        }
    }

    /// A rotation by `degrees` of `side × side` images.
    pub fn rotation(degrees: f64, side: usize) -> Transform {
        Transform::Rotate {
            degrees,
            table: Arc::new(rotation_table(degrees, side)),
        }
    }

    /// Writes the transformed image (`side²` bytes, as the transform was made for) into `out`
    /// (as many floats) as `pixel * scale + shift` (pixel in 0..=255; `scale = 1/255,
    /// shift = 0` gives `[0, 1]`).
    pub fn apply(&self, image: &[u8], out: &mut [f32], scale: f32, shift: f32) {
        match self {
            Transform::Identity => {
                for (o, &p) in out.iter_mut().zip(image) {
                    *o = p as f32 * scale + shift;
                }
            }
            Transform::Permute { source, .. } => {
                for (o, &s) in out.iter_mut().zip(source.iter()) {
                    *o = image[s as usize] as f32 * scale + shift;
                }
            }
            Transform::Rotate { table, .. } => {
                for (o, taps) in out.iter_mut().zip(table.iter()) {
                    let mut v = 0.0f32;
                    for &(src, w) in taps {
                        v += w * image[src as usize] as f32;
                    }
                    *o = v * scale + shift;
                }
            }
        }
    }

    /// A short description for `clbench tasks describe`.
    pub fn describe(&self, task: usize) -> String {
        match self {
            Transform::Identity => "identity".to_string(),
            Transform::Permute { source, seed } => {
                let bytes: Vec<u8> = source.iter().flat_map(|s| s.to_le_bytes()).collect();
                format!(
                    "permute(seed {seed}, task {}, sha256 {})",
                    task + 1,
                    &crate::data::sha256_hex(&bytes)[..12]
                )
            }
            Transform::Rotate { degrees, .. } => format!("rotate({degrees}°, bilinear)"),
        }
    }
}

/// Bilinear taps for every output pixel of a rotation of `side × side` images about their
/// centre (`(13.5, 13.5)` for 28×28). Taps falling outside the image get weight 0 (their index
/// is clamped to a valid pixel).
fn rotation_table(degrees: f64, side: usize) -> Vec<[(u16, f32); 4]> {
    let theta = degrees.to_radians();
    // The pure-Rust `libm`: the same table on every platform.
    let (sin, cos) = libm::sincos(theta);
    let c = (side as f64 - 1.0) / 2.0;
    let n = side as i64;
    let mut table = Vec::with_capacity(side * side);
    for r in 0..side {
        for col in 0..side {
            // Output (x right, y up) rotated by -theta gives the source position.
            let x = col as f64 - c;
            let y = c - r as f64;
            let sx = cos * x + sin * y;
            let sy = -sin * x + cos * y;
            let src_col = sx + c;
            let src_row = c - sy;
            // Snap values within rounding error of the grid so exact rotations stay exact.
            let snap = |v: f64| {
                if (v - v.round()).abs() < 1e-9 {
                    v.round()
                } else {
                    v
                }
            };
            let (src_row, src_col) = (snap(src_row), snap(src_col));
            let r0 = src_row.floor();
            let c0 = src_col.floor();
            let fr = src_row - r0;
            let fc = src_col - c0;
            let mut taps = [(0u16, 0f32); 4];
            let corners = [
                (r0, c0, (1.0 - fr) * (1.0 - fc)),
                (r0, c0 + 1.0, (1.0 - fr) * fc),
                (r0 + 1.0, c0, fr * (1.0 - fc)),
                (r0 + 1.0, c0 + 1.0, fr * fc),
            ];
            for (k, &(rr, cc, w)) in corners.iter().enumerate() {
                let (rr, cc) = (rr as i64, cc as i64);
                if (0..n).contains(&rr) && (0..n).contains(&cc) && w > 0.0 {
                    taps[k] = ((rr * n + cc) as u16, w as f32);
                }
            }
            table.push(taps);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};

    fn image_with(pixels: &[(usize, usize, u8)]) -> Vec<u8> {
        let mut img = vec![0u8; IMAGE_PIXELS];
        for &(r, c, v) in pixels {
            img[r * IMAGE_SIDE + c] = v;
        }
        img
    }

    fn apply(t: &Transform, img: &[u8]) -> Vec<f32> {
        let mut out = vec![0f32; IMAGE_PIXELS];
        t.apply(img, &mut out, 1.0 / 255.0, 0.0);
        out
    }

    #[test]
    fn permutation_is_reproducible_and_distinct_per_task() {
        let a = Transform::permutation(1, 0, IMAGE_SIDE);
        let b = Transform::permutation(1, 0, IMAGE_SIDE);
        let c = Transform::permutation(1, 1, IMAGE_SIDE);
        let src = |t: &Transform| match t {
            Transform::Permute { source, .. } => source.as_ref().clone(),
            _ => unreachable!(),
        };
        assert_eq!(src(&a), src(&b));
        assert_ne!(src(&a), src(&c));
        let mut sorted = src(&c);
        sorted.sort_unstable();
        assert_eq!(sorted, (0..IMAGE_PIXELS as u16).collect::<Vec<_>>());
    }

    #[test]
    fn rotation_by_90_moves_a_known_pixel() {
        // Top-left corner, rotated a quarter turn counter-clockwise, lands bottom-left.
        let img = image_with(&[(0, 0, 255), (0, 27, 51)]);
        let out = apply(&Transform::rotation(90.0, IMAGE_SIDE), &img);
        assert_eq!(out[27 * IMAGE_SIDE], 1.0);
        // Top-right goes to top-left.
        assert!((out[0] - 0.2).abs() < 1e-6);
        let total: f32 = out.iter().sum();
        assert!((total - 1.2).abs() < 1e-5);
    }

    #[test]
    fn rotation_by_180_reverses_and_by_0_is_identity() {
        let img: Vec<u8> = (0..IMAGE_PIXELS).map(|i| (i % 251) as u8).collect();
        let out = apply(&Transform::rotation(180.0, IMAGE_SIDE), &img);
        let reversed: Vec<u8> = img.iter().rev().copied().collect();
        assert_eq!(out, apply(&Transform::Identity, &reversed));
        assert_eq!(
            apply(&Transform::rotation(0.0, IMAGE_SIDE), &img),
            apply(&Transform::Identity, &img)
        );
    }

    #[test]
    fn rotation_by_45_interpolates_bilinearly() {
        // A uniform image stays uniform in the inner disc under any rotation.
        let img = vec![200u8; IMAGE_PIXELS];
        let out = apply(&Transform::rotation(45.0, IMAGE_SIDE), &img);
        let centre = 14 * IMAGE_SIDE + 14;
        assert!((out[centre] - 200.0 / 255.0).abs() < 1e-5);
        // A corner maps from outside the image: zero.
        assert_eq!(out[0], 0.0);
    }
}
