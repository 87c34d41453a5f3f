//! The matrix products of the fused step, `gemm` underneath, and how a product is split
//! between the threads of the current rayon pool.
//!
//! Threads are a value, not a global: each job builds its own pool ([`thread_pool`]) once and
//! runs its training on it ([`run_on`]); every product here reads that pool's size with
//! [`rayon::current_num_threads`]. Results do not depend on it (see [`mm`]).

use std::marker::PhantomData;
use std::ops::Range;

use gemm::Parallelism;

/// A rayon pool of `threads` threads (at least 1) for one job.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("clbench-{i}"))
        .build()
}

/// Runs `work` on `pool`, keeping the caller's tracing span. The products of [`mm`] then fork
/// from inside the pool, one share on the calling worker and one stolen by another, instead of
/// being injected from outside while the caller parks (which cost two thread wake-ups per
/// product: about 28,000 context switches a second at the 256-wide shapes).
pub fn run_on<R: Send>(pool: &rayon::ThreadPool, work: impl FnOnce() -> R + Send) -> R {
    let span = tracing::Span::current();
    pool.install(|| span.in_scope(work))
}

/// The threads of the current rayon pool (the job's pool, see [`run_on`]), as gemm's
/// parallelism.
pub fn parallelism() -> Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
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
pub fn mm(
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
pub fn mm_gemm_threads(
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
/// threads computing its shares. It borrows the three slices for its whole life (`'a`), so it
/// cannot outlive them, and it is not `Copy`: threads share it by reference.
struct Product<'a> {
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
    _borrows: PhantomData<(&'a mut [f32], &'a [f32])>,
}

// SAFETY: a `Product` holds the exclusive borrow of `c` and shared borrows of `a` and `b` for
// `'a`; the threads that share it read `a` and `b` and write disjoint parts of `c`
// (`Product::run` requires it, and checks the range in debug builds).
unsafe impl Send for Product<'_> {}
unsafe impl Sync for Product<'_> {}

impl<'a> Product<'a> {
    /// The product of [`mm`]'s arguments; panics unless the slices hold the whole product.
    #[allow(clippy::too_many_arguments)]
    fn new(
        m: usize,
        n: usize,
        k: usize,
        c: &'a mut [f32],
        a: &'a [f32],
        a_t: bool,
        b: &'a [f32],
        b_t: bool,
        accumulate: bool,
    ) -> Product<'a> {
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
            _borrows: PhantomData,
        }
    }

    /// Computes rows `range` of `c` (`split_rows`) or its columns `range`.
    ///
    /// # Safety
    /// `range` must lie within `m` (rows) or `n` (columns), the pointers must be valid for the
    /// whole product, and no other thread may touch the same part of `c`.
    unsafe fn run(&self, range: Range<usize>, split_rows: bool, par: Parallelism) {
        debug_assert!(
            range.start <= range.end && range.end <= if split_rows { self.m } else { self.n },
            "share {range:?} outside the product ({} × {}, split_rows {split_rows})",
            self.m,
            self.n
        );
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
    /// Under Miri (which checks the pointer arithmetic and the borrows of [`Product`], and is
    /// about a million times slower), one product just large enough to be split and one that
    /// is not.
    #[cfg(miri)]
    const SHAPES: &[(usize, usize, usize, bool, bool)] =
        &[(256, 128, 64, false, true), (5, 7, 3, true, false)];
    #[cfg(miri)]
    const THREADS: &[usize] = &[2];
    #[cfg(not(miri))]
    const THREADS: &[usize] = &[2, 3, 4];

    #[test]
    fn split_products_equal_the_whole_product_bit_for_bit() {
        #[cfg(miri)]
        let shapes = SHAPES;
        #[cfg(not(miri))]
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
                for &threads in THREADS {
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
