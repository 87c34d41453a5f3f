//! The CNN's 2×2 max-pool, stride 2, and its one rule for which input a window's gradient goes
//! to: **the first maximum in row-major order** (top-left, top-right, bottom-left,
//! bottom-right), as PyTorch's CPU `max_pool2d` does. A trailing odd row or column is dropped
//! (floor), as in PyTorch.
//!
//! Both engines use this rule: candle's autograd through [`max_pool_2x2`] (the pooled values
//! are gathered with `index_select`, whose backward scatters each window's gradient to its
//! argmax), and the fused CNN step through [`pool_plane`].
//!
//! Why not candle's own `max_pool2d`: its backward in candle-core 0.11 multiplies the upstream
//! gradient by (number of maxima in the window) / 4 instead of dividing it by the number of
//! maxima, so a window with one maximum passes on a quarter of its gradient, and for odd sides
//! its nearest-neighbour upsampling maps gradients to the wrong windows. The forward values are
//! the same: a window's maximum.

use candle_core::{DType, Device, Result, Tensor};

use crate::engine::kernels::Isa;

/// Side of a pooled plane.
pub fn pooled_side(side: usize) -> usize {
    side / 2
}

/// Max-pools one `side × side` plane (row-major) into `out` (`pooled_side(side)²` values) and
/// writes, for each pooled value, the index inside the plane of the input it came from.
///
/// On a CPU with AVX-512F (the kernel [`Isa::detected`] picks) a plane of up to 33 × 33 is
/// pooled a row of windows at a time, 16 lanes wide, by the same comparisons in the same order
/// as the scalar loop; the values and indices are selections, so both give the same result.
pub fn pool_plane(plane: &[f32], side: usize, out: &mut [f32], argmax: &mut [u32]) {
    let ps = pooled_side(side);
    assert!(
        plane.len() >= side * side && out.len() >= ps * ps && argmax.len() >= ps * ps,
        "pool_plane: buffers too short for a {side} × {side} plane"
    );
    #[cfg(target_arch = "x86_64")]
    if (1..=16).contains(&ps) && Isa::detected() == Isa::Avx512 {
        // SAFETY: the CPU runs AVX-512F (the detected kernel); the buffers hold the plane and
        // its pooled values (asserted above).
        unsafe { avx512::pool_plane(plane, side, out, argmax) };
        return;
    }
    pool_plane_scalar(plane, side, out, argmax);
}

/// [`pool_plane`], one window at a time.
fn pool_plane_scalar(plane: &[f32], side: usize, out: &mut [f32], argmax: &mut [u32]) {
    let ps = pooled_side(side);
    let (out, argmax) = (&mut out[..ps * ps], &mut argmax[..ps * ps]);
    for y in 0..ps {
        let top = &plane[2 * y * side..][..2 * ps];
        let bottom = &plane[(2 * y + 1) * side..][..2 * ps];
        let (out, argmax) = (&mut out[y * ps..][..ps], &mut argmax[y * ps..][..ps]);
        let base = (2 * y * side) as u32;
        for x in 0..ps {
            let c = 2 * x;
            let candidates = [
                (top[c], base + c as u32),
                (top[c + 1], base + c as u32 + 1),
                (bottom[c], base + (side + c) as u32),
                (bottom[c + 1], base + (side + c) as u32 + 1),
            ];
            let (mut best, mut at) = candidates[0];
            for &(v, i) in &candidates[1..] {
                // `>` keeps the first of equal maxima; a NaN wins, as in PyTorch (non-short-
                // circuit `|` and `&`, so that the choice compiles to selects, not branches).
                let take = (v > best) | (v.is_nan() & !best.is_nan());
                best = if take { v } else { best };
                at = if take { i } else { at };
            }
            out[x] = best;
            argmax[x] = at;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// [`super::pool_plane`] for `1 ≤ side / 2 ≤ 16`: each row of windows in one pass, lane
    /// `x` holding window `x`, the four candidates taken in the scalar loop's order with its
    /// rule (`>`, or a NaN over a number).
    ///
    /// # Safety
    /// The CPU must run AVX-512F; `plane` must hold `side²` values, `out` and `argmax`
    /// `(side / 2)²`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pool_plane(
        plane: &[f32],
        side: usize,
        out: &mut [f32],
        argmax: &mut [u32],
    ) {
        let ps = side / 2;
        debug_assert!((1..=16).contains(&ps));
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        // Masks of the 2·ps values of a row pair's top (or bottom) row, split into the first
        // 16 and the rest, and of the ps windows.
        let row = (1u32 << (2 * ps).min(16)) - 1;
        let rest = (1u32 << (2 * ps).saturating_sub(16)) - 1;
        let windows = ((1u32 << ps) - 1) as __mmask16;
        let (row, rest) = (row as __mmask16, rest as __mmask16);
        let down = _mm512_set1_epi32(side as i32);
        // The second half of a row is read under its mask only (none of it when 2·ps ≤ 16),
        // so its address may lie past the plane: formed with `wrapping_add`, never read.
        for y in 0..ps {
            let top = plane.as_ptr().add(2 * y * side);
            let bottom = top.add(side);
            let (t0, t1) = (
                _mm512_maskz_loadu_ps(row, top),
                _mm512_maskz_loadu_ps(rest, top.wrapping_add(16)),
            );
            let (b0, b1) = (
                _mm512_maskz_loadu_ps(row, bottom),
                _mm512_maskz_loadu_ps(rest, bottom.wrapping_add(16)),
            );
            let base = _mm512_set1_epi32((2 * y * side) as i32);
            let left = _mm512_add_epi32(base, even);
            let right = _mm512_add_epi32(base, odd);
            let candidates = [
                (_mm512_permutex2var_ps(t0, odd, t1), right),
                (
                    _mm512_permutex2var_ps(b0, even, b1),
                    _mm512_add_epi32(left, down),
                ),
                (
                    _mm512_permutex2var_ps(b0, odd, b1),
                    _mm512_add_epi32(right, down),
                ),
            ];
            let mut best = _mm512_permutex2var_ps(t0, even, t1);
            let mut at = left;
            for (v, i) in candidates {
                let greater = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best);
                let v_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                let best_nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(best, best);
                let take = greater | (v_nan & !best_nan);
                best = _mm512_mask_blend_ps(take, best, v);
                at = _mm512_mask_blend_epi32(take, at, i);
            }
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(y * ps), windows, best);
            _mm512_mask_storeu_epi32(argmax.as_mut_ptr().add(y * ps).cast(), windows, at);
        }
    }
}

/// 2×2 max-pool of `x: [n, c, h, w]` (square planes) whose gradient follows the module's rule.
/// The window maxima are found on the host; the pooled values are gathered on `x`'s device.
pub fn max_pool_2x2(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h != w {
        candle_core::bail!("max_pool_2x2 expects square planes, got {h}×{w}");
    }
    let ps = pooled_side(h);
    let values = x
        .detach()
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let planes = n * c;
    let mut pooled = vec![0f32; ps * ps];
    let mut index = vec![0u32; planes * ps * ps];
    for (p, (plane, idx)) in values
        .chunks_exact(h * w)
        .zip(index.chunks_exact_mut(ps * ps))
        .enumerate()
    {
        pool_plane(plane, h, &mut pooled, idx);
        let base = (p * h * w) as u32;
        idx.iter_mut().for_each(|i| *i += base);
    }
    let index = Tensor::from_vec(index, planes * ps * ps, x.device())?.to_dtype(DType::U32)?;
    x.flatten_all()?
        .index_select(&index, 0)?
        .reshape((n, c, ps, ps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_take_their_first_maximum_and_drop_an_odd_edge() {
        #[rustfmt::skip]
        let plane = [
            1.0, 3.0, 0.0, 0.0, 9.0,
            3.0, 2.0, 5.0, 5.0, 9.0,
            0.0, 0.0, -1.0, -2.0, 9.0,
            0.0, 0.0, -3.0, -1.0, 9.0,
            9.0, 9.0, 9.0, 9.0, 9.0,
        ];
        let mut out = [0.0; 4];
        let mut arg = [0u32; 4];
        pool_plane(&plane, 5, &mut out, &mut arg);
        assert_eq!(out, [3.0, 5.0, 0.0, -1.0]);
        // Ties go to the first in row-major order.
        assert_eq!(arg, [1, 7, 10, 12]);
    }

    /// The vector path (where this CPU has it) against the scalar loop, on planes full of ties,
    /// signed zeros, infinities and NaNs, at every side it takes and the sides around.
    #[test]
    fn every_path_pools_as_the_scalar_loop() {
        let palette = [
            0.0,
            -0.0,
            1.0,
            1.0,
            -2.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            3.0,
            3.0,
            -1.0,
        ];
        let mut state = 12345u32;
        for side in 1..=35 {
            for _ in 0..40 {
                let plane: Vec<f32> = (0..side * side)
                    .map(|_| {
                        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                        palette[(state >> 16) as usize % palette.len()]
                    })
                    .collect();
                let ps = pooled_side(side);
                let (mut out, mut arg) = (vec![7.0; ps * ps], vec![u32::MAX; ps * ps]);
                let (mut want, mut want_arg) = (vec![7.0; ps * ps], vec![u32::MAX; ps * ps]);
                pool_plane(&plane, side, &mut out, &mut arg);
                pool_plane_scalar(&plane, side, &mut want, &mut want_arg);
                assert_eq!(arg, want_arg, "side {side}");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&out), bits(&want), "side {side}");
            }
        }
    }

    #[test]
    fn the_gradient_goes_to_the_argmax_whole() {
        let x = candle_core::Var::new(
            &[[[[1f32, 4.0, 0.0], [2.0, 3.0, 0.0], [7.0, 7.0, 7.0]]]],
            &Device::Cpu,
        )
        .unwrap();
        let y = max_pool_2x2(x.as_tensor()).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), [4.0]);
        let g = (y * 3.0).unwrap().sum_all().unwrap().backward().unwrap();
        let g = g.get(x.as_tensor()).unwrap();
        assert_eq!(
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
    }
}
