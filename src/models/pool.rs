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

/// Side of a pooled plane.
pub fn pooled_side(side: usize) -> usize {
    side / 2
}

/// Max-pools one `side × side` plane (row-major) into `out` (`pooled_side(side)²` values) and
/// writes, for each pooled value, the index inside the plane of the input it came from.
pub fn pool_plane(plane: &[f32], side: usize, out: &mut [f32], argmax: &mut [u32]) {
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
