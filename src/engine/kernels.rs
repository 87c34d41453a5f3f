//! The matrix products of the fused step: portable, deterministic kernels chosen at run time,
//! and how a product is split between the threads of the current rayon pool.
//!
//! # The summation rule (why every machine gets the same bits)
//!
//! Every element of a product is one chain of fused multiply-adds over the depth, in order:
//!
//! ```text
//! c[i][j] ← fma(a[i][k−1], b[k−1][j], … fma(a[i][1], b[1][j], fma(a[i][0], b[0][j], c₀)) …)
//! ```
//!
//! with `c₀ = 0`, or the old `c[i][j]` when the product accumulates. A fused multiply-add is
//! rounded once, by IEEE 754, on every machine, so the chain has one result. The kernels below
//! vectorize *across* output elements (each SIMD lane holds a different `c[i][j]`), never
//! across the depth, and the depth blocking stores and reloads the running chain exactly
//! (`f32` in, `f32` out). The AVX-512, AVX2 + FMA and scalar (`f32::mul_add`) kernels, every
//! cache blocking, every tile shape and every split between threads therefore give the same
//! bits. The tests hold every kernel this machine can run, split between 1 to 4 threads, to a
//! plain triple loop of `f32::mul_add`, bit for bit.
//!
//! The binary is built for plain x86-64 (or any other target); the SIMD kernels are compiled
//! with `#[target_feature]` and picked once at run time ([`Isa::detected`]), so one binary runs
//! on any machine of its architecture.
//!
//! Threads are a value, not a global: each job builds its own pool ([`thread_pool`]) once and
//! runs its training on it ([`run_on`]); the fused step passes that pool's size ([`threads`])
//! to every product.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::sync::OnceLock;

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

/// Runs `work` on this thread while the pool's other threads poll for the work it forks (the
/// shares of its products) instead of going to sleep between forks.
///
/// A rayon worker that finds no work yields a few dozen times and then sleeps; waking it takes
/// a system call and, on a virtual machine, the hypervisor's interrupt to an idle vCPU. Between
/// a training step's products (the elementwise passes, the small output layer, the next
/// batch) that happened at nearly every product. Here each other thread of the pool runs one
/// polling job for the whole of `work`: it executes any job of the pool it can take
/// ([`rayon::yield_now`]) and otherwise yields its CPU to the operating system between short
/// spins, so it never sleeps, and a process sharing the CPU still gets it. The polling stops
/// when `work` returns or unwinds. Scheduling only: what runs where does not change any
/// product's chains (see the module documentation), so results keep their bits.
///
/// With one thread, or outside a rayon pool, this is `work()`.
pub fn with_threads_polling<R>(work: impl FnOnce() -> R) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    /// Sets the flag when `work` returns or unwinds, so the pollers (and the scope) end.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    /// Polls between yields of the CPU to the operating system.
    const SPINS_PER_YIELD: u32 = 64;
    let Some(owner) = rayon::current_thread_index() else {
        return work();
    };
    let pollers = threads() - 1;
    if pollers == 0 {
        return work();
    }
    let done = AtomicBool::new(false);
    rayon::in_place_scope(|scope| {
        for _ in 0..pollers {
            scope.spawn(|_| {
                // A poller that the owner itself picks up (while it waits for a share that
                // another thread took) ends at once: the owner is the one that ends `work`.
                // So does one that a polling thread picks up: one poller per thread.
                if rayon::current_thread_index() == Some(owner) || POLLING.get() {
                    return;
                }
                POLLING.set(true);
                let mut idle = 0u32;
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() == Some(rayon::Yield::Executed) {
                        idle = 0;
                        continue;
                    }
                    idle = idle.wrapping_add(1);
                    if idle.is_multiple_of(SPINS_PER_YIELD) {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
                POLLING.set(false);
            });
        }
        let _done = Done(&done);
        work()
    })
}

/// [`with_threads_polling`] where `poll` (the products run on the CPU), else `work()`: a GPU
/// computes them itself, and polling threads would only spin.
pub fn with_threads_polling_if<R>(poll: bool, work: impl FnOnce() -> R) -> R {
    if poll {
        with_threads_polling(work)
    } else {
        work()
    }
}

thread_local! {
    /// Whether this thread runs a poller of [`with_threads_polling`].
    static POLLING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The threads of the current rayon pool (the job's pool, see [`run_on`]).
pub fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// The instruction set a product kernel uses. All of them give the same bits (see the module
/// documentation); they differ in speed only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: 8 × 32 register tiles.
    Avx512,
    /// AVX2 with FMA: 6 × 16 register tiles.
    Avx2Fma,
    /// Portable Rust, `f32::mul_add`: 4 × 8 tiles.
    Scalar,
}

impl Isa {
    /// The kernel every product uses: the fastest this CPU runs ([`Isa::best`]), unless
    /// [`Isa::choose`] picked another before the first product.
    pub fn detected() -> Isa {
        *CHOSEN.get_or_init(Isa::best)
    }

    /// Makes every product of this process use `isa` (to measure a slower kernel: its bits are
    /// the same). Fails when this CPU cannot run it, or when products already use another.
    pub fn choose(isa: Isa) -> Result<(), String> {
        if !isa.runs_here() {
            return Err(format!(
                "this CPU cannot run the {isa} kernels (it runs: {})",
                Isa::available_names()
            ));
        }
        match *CHOSEN.get_or_init(|| isa) {
            chosen if chosen == isa => Ok(()),
            chosen => Err(format!("the products already use the {chosen} kernels")),
        }
    }

    /// The kernel named `name` (`avx512f`, `avx2+fma`, `scalar`).
    pub fn from_name(name: &str) -> Option<Isa> {
        [Isa::Avx512, Isa::Avx2Fma, Isa::Scalar]
            .into_iter()
            .find(|i| i.name() == name)
    }

    /// The fastest kernel this CPU runs, detected once.
    pub fn best() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return Isa::Avx512;
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    return Isa::Avx2Fma;
                }
            }
            Isa::Scalar
        })
    }

    /// Every kernel this CPU can run, fastest first.
    pub fn available() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2Fma, Isa::Scalar]
            .into_iter()
            .filter(|i| i.runs_here())
            .collect()
    }

    /// The names of [`Isa::available`], comma-separated (for messages).
    pub fn available_names() -> String {
        Isa::available()
            .iter()
            .map(|i| i.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether this CPU runs the kernel (every CPU with AVX-512F also has AVX2 and FMA).
    pub fn runs_here(self) -> bool {
        let rank = |i: Isa| match i {
            Isa::Scalar => 0,
            Isa::Avx2Fma => 1,
            Isa::Avx512 => 2,
        };
        rank(self) <= rank(Isa::best())
    }

    /// The name stored in run records and printed by `clbench bench`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512f",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Scalar => "scalar",
        }
    }

    /// `f32` lanes of one vector register of this kernel.
    pub fn lanes(self) -> usize {
        match self {
            Isa::Avx512 => 16,
            Isa::Avx2Fma => 8,
            Isa::Scalar => 1,
        }
    }

    /// The register tile of this kernel, `(rows, columns)` of `c`: a product's work is its
    /// `m × n` rounded up to whole tiles (for a caller choosing between two equal products).
    pub fn tile(self) -> (usize, usize) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => (x86::Avx512::MR, x86::Avx512::NR),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => (x86::Avx2::MR, x86::Avx2::NR),
            _ => (Scalar::MR, Scalar::NR),
        }
    }

    /// `m × n` rounded up to this kernel's whole register tiles.
    pub fn padded_area(self, m: usize, n: usize) -> usize {
        let (mr, nr) = self.tile();
        m.div_ceil(mr) * mr * n.div_ceil(nr) * nr
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kernel of this process's products (see [`Isa::detected`]).
static CHOSEN: OnceLock<Isa> = OnceLock::new();

/// Products with fewer multiply-adds than this are not split between threads (about 5 µs of
/// work; a fork costs far less while the pool's threads poll, see [`with_threads_polling`]).
const SPLIT_MIN_WORK: usize = 1 << 20;
/// Smallest share of the split dimension per thread.
const SPLIT_MIN_SHARE: usize = 64;

/// `c [m, n] = a [m, k] · b [k, n]` (`c += …` with `accumulate`), all row-major; `a_t` means
/// `a` is stored as `[k, m]`, `b_t` that `b` is stored as `[n, k]`. Summed by the rule of the
/// module documentation, with the kernel of [`Isa::detected`].
///
/// With several threads, a large product is cut along the longer of `m` and `n` into one
/// contiguous share per thread: one fork and join per product. Each element is the same chain
/// whichever share computes it, so results do not depend on the thread count.
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
    threads: usize,
) {
    mm_with(
        Isa::detected(),
        m,
        n,
        k,
        c,
        a,
        a_t,
        b,
        b_t,
        accumulate,
        threads,
    );
}

/// [`mm`] with a given kernel; panics if this CPU cannot run it (see [`Isa::available`]).
#[allow(clippy::too_many_arguments)]
pub fn mm_with(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    accumulate: bool,
    threads: usize,
) {
    assert!(isa.runs_here(), "this CPU cannot run the {isa} kernel");
    let product = Product::new(m, n, k, c, a, a_t, b, b_t, accumulate);
    product.run_split(isa, threads);
}

/// What [`mm_finished`] hands its `finish`: `finish(row, col, values)` receives the finished
/// elements `(row, col) … (row, col + values.len() − 1)` of the product.
pub type Finish<'a> = dyn Fn(usize, usize, &[f32]) + Sync + 'a;

/// `c = a · b` as [`mm`] computes it (the same chains, so the same bits), but never stored
/// as a whole: each thread computes its share block by block into a scratch buffer of its own
/// and hands every finished run of a row to `finish` (see [`Finish`]) while it is in cache;
/// every element is handed over exactly once, the runs of one call to `finish` never overlap
/// another's, and calls come from several threads at once. The fused step applies the
/// optimizer's update to a weight this way as its gradient is computed, without the gradient
/// ever reaching memory. Products deeper than one packed block (`KC` = 256 steps: a weight
/// gradient over a batch of more than 256) are computed whole into a thread-local buffer
/// first, then handed over row by row.
#[allow(clippy::too_many_arguments)]
pub fn mm_finished(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    threads: usize,
    finish: &Finish,
) {
    mm_finished_with(Isa::detected(), m, n, k, a, a_t, b, b_t, threads, finish);
}

/// [`mm_finished`] with a given kernel; panics if this CPU cannot run it.
#[allow(clippy::too_many_arguments)]
pub fn mm_finished_with(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_t: bool,
    b: &[f32],
    b_t: bool,
    threads: usize,
    finish: &Finish,
) {
    assert!(isa.runs_here(), "this CPU cannot run the {isa} kernel");
    if k > KC {
        let mut c = WHOLE_PRODUCT.take();
        c.resize(m * n, 0.0);
        mm_with(isa, m, n, k, &mut c, a, a_t, b, b_t, false, threads);
        rows_in_parallel(&mut c, n, |start, rows| {
            for (i, row) in rows.chunks_exact(n).enumerate() {
                finish(start / n + i, 0, row);
            }
        });
        WHOLE_PRODUCT.set(c);
        return;
    }
    let mut product = Product::new(m, n, k, &mut [], a, a_t, b, b_t, false);
    product.finish = Some(finish);
    product.run_split(isa, threads);
}

thread_local! {
    /// [`mm_finished`]'s whole product where it is deeper than one block, kept between calls.
    static WHOLE_PRODUCT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Product<'_> {
    /// Runs the product, split between `threads` threads as [`mm`] describes (`isa` must run
    /// on this CPU: the callers assert it).
    fn run_split(&self, isa: Isa, threads: usize) {
        let (m, n, k) = (self.m, self.n, self.k);
        let product = self;
        let split_rows = m >= n;
        let len = m.max(n);
        let shares = threads.max(1).min(len / SPLIT_MIN_SHARE);
        if shares < 2 || m.saturating_mul(n).saturating_mul(k) < SPLIT_MIN_WORK {
            // SAFETY: `Product::new` checked that the whole product lies inside the three slices
            // (or that it goes to `finish`); `isa` runs on this CPU (the callers assert it).
            unsafe { product.run(isa, 0..len, split_rows) };
            return;
        }
        // Share boundaries on whole register tiles, as even as the tiles allow: a partial last
        // tile costs a whole one (1000 columns of 32-wide tiles split 512 | 488, 16 tiles each; cut
        // at 480 | 520 they were 15 | 17). Speed only: the chains do not depend on the split.
        let (mr, nr) = isa.tile();
        let grain = if split_rows { mr } else { nr };
        let tiles = len.div_ceil(grain);
        let bound = |i: usize| {
            if i == shares {
                len
            } else {
                ((tiles * i + shares / 2) / shares * grain).min(len)
            }
        };
        use rayon::prelude::*;
        (0..shares).into_par_iter().for_each(|i| {
            // SAFETY: the shares are disjoint ranges of rows (or columns) of `c`, inside the slices
            // (checked by `Product::new`); `a` and `b` are only read; `isa` runs on this CPU.
            unsafe { product.run(isa, bound(i)..bound(i + 1), split_rows) };
        });
    }
}

/// `c [m, n] = a [m, k] · b [k, n]`, row-major, by the `gemm` crate (candle's CPU matmul) with
/// its own threading: the benchmark's reference for the kernels above. Its summation order
/// depends on the CPU (see the module documentation); training never uses it.
pub fn mm_gemm_crate(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    threads: usize,
) {
    assert!(c.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    let par = match threads {
        0 | 1 => gemm::Parallelism::None,
        t => gemm::Parallelism::Rayon(t),
    };
    // SAFETY: the three slices hold the whole product (asserted above); strides are row-major.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// One operand of a product: element `(r, c)` at `ptr + r·rs + c·cs`.
#[derive(Clone, Copy)]
struct Operand {
    ptr: *const f32,
    rs: usize,
    cs: usize,
}

impl Operand {
    /// The operand starting at element `(r, c)`.
    unsafe fn at(self, r: usize, c: usize) -> Operand {
        Operand {
            ptr: self.ptr.add(r * self.rs + c * self.cs),
            ..self
        }
    }
}

/// A product fixed by [`mm`]'s layouts: pointers and strides, shared by the threads computing
/// its shares. It borrows the three slices for its whole life (`'a`), so it cannot outlive
/// them, and it is not `Copy`: threads share it by reference.
struct Product<'a> {
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    a: Operand,
    b: Operand,
    accumulate: bool,
    /// Where finished elements go instead of `c` ([`mm_finished`]; `c` is then empty).
    finish: Option<&'a Finish<'a>>,
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
        // `c` may be empty only for `mm_finished`, which sets `finish` before running.
        assert!(
            (c.is_empty() || c.len() >= m * n) && a.len() >= m * k && b.len() >= k * n,
            "matrix sizes"
        );
        let (a_rs, a_cs) = if a_t { (1, m) } else { (k, 1) };
        let (b_rs, b_cs) = if b_t { (1, k) } else { (n, 1) };
        Product {
            m,
            n,
            k,
            c: c.as_mut_ptr(),
            a: Operand {
                ptr: a.as_ptr(),
                rs: a_rs,
                cs: a_cs,
            },
            b: Operand {
                ptr: b.as_ptr(),
                rs: b_rs,
                cs: b_cs,
            },
            accumulate,
            finish: None,
            _borrows: PhantomData,
        }
    }

    /// Computes rows `range` of `c` (`split_rows`) or its columns `range`.
    ///
    /// # Safety
    /// `range` must lie within `m` (rows) or `n` (columns), the pointers must be valid for the
    /// whole product, no other thread may touch the same part of `c`, and the CPU must run
    /// `isa`.
    unsafe fn run(&self, isa: Isa, range: Range<usize>, split_rows: bool) {
        debug_assert!(
            range.start <= range.end && range.end <= if split_rows { self.m } else { self.n },
            "share {range:?} outside the product ({} × {}, split_rows {split_rows})",
            self.m,
            self.n
        );
        // With `finish`, `c` is never written (the block computes into its scratch).
        let c_at = |offset: usize| {
            if self.finish.is_some() {
                self.c
            } else {
                self.c.add(offset)
            }
        };
        let block = if split_rows {
            Block {
                m: range.len(),
                n: self.n,
                k: self.k,
                c: c_at(range.start * self.n),
                c_rs: self.n,
                a: self.a.at(range.start, 0),
                b: self.b,
                accumulate: self.accumulate,
                finish: self.finish.map(|f| (f, range.start, 0)),
            }
        } else {
            Block {
                m: self.m,
                n: range.len(),
                k: self.k,
                c: c_at(range.start),
                c_rs: self.n,
                a: self.a,
                b: self.b.at(0, range.start),
                accumulate: self.accumulate,
                finish: self.finish.map(|f| (f, 0, range.start)),
            }
        };
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => block.compute::<x86::Avx512>(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => block.compute::<x86::Avx2>(),
            _ => block.compute::<Scalar>(),
        }
    }
}

/// Depth of one packed block: the chain of every element is stored and reloaded between
/// blocks (exactly), so this changes speed only.
const KC: usize = 256;
/// Rows of `a` packed at once (the packed block stays in L2).
const MC: usize = 128;
/// Columns of `b` packed at once.
const NC: usize = 1024;
/// A `b` with contiguous rows is read in place, not packed, when the product has at most this
/// many row tiles (each panel of `b` is then read this often; packing it would cost about as
/// much). Speed only: the chains are the same.
const DIRECT_B_TILES: usize = 4;
/// An `a` with contiguous rows (packing it is a transposition) is read in place, not packed,
/// when the product has at most this many column panels (each row tile of `a` is then read this
/// often): the convolutions' weight gradients, the fully connected layers' forward pass as
/// `W · inputᵀ` (see [`reads_a_in_place`]). Speed only.
const DIRECT_A_PANELS: usize = 4;

/// Whether a product of `n` columns (per thread share) reads an `a` with contiguous rows in
/// place instead of packing it (at most four column panels of the detected kernel).
pub fn reads_a_in_place(n: usize) -> bool {
    n <= DIRECT_A_PANELS * Isa::detected().tile().1
}

/// A register-tile kernel: `MR × NR` chains advanced `kc` steps.
trait MicroKernel {
    const MR: usize;
    const NR: usize;

    /// `c[i][j] = fma chain over p < kc of a[i][p] · b[p][j]`, starting from `c` (`load`) or
    /// from zero. `a`'s element `(i, p)` is at `a + p·MR + i` (packed, step-major) or, with
    /// `a_rs > 0`, at `a + i·a_rs + p` (the rows of an operand read in place); `b` holds `kc`
    /// rows of `NR` values, row `p` at `b + p·b_rs` (`b_rs = NR`: a packed panel; larger: the
    /// rows of an operand read in place); `c` is an `MR × NR` tile with row stride `c_rs`.
    /// Either way of reading `a` or `b` gives the same chains.
    ///
    /// # Safety
    /// The pointers must be valid for those extents and the CPU must run the kernel.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        kc: usize,
        a: *const f32,
        a_rs: usize,
        b: *const f32,
        b_rs: usize,
        c: *mut f32,
        c_rs: usize,
        load: bool,
    );
}

/// The portable kernel: `f32::mul_add` is one rounding on every target.
struct Scalar;

impl MicroKernel for Scalar {
    const MR: usize = 4;
    const NR: usize = 8;

    unsafe fn tile(
        kc: usize,
        a: *const f32,
        a_rs: usize,
        b: *const f32,
        b_rs: usize,
        c: *mut f32,
        c_rs: usize,
        load: bool,
    ) {
        let mut acc = [[0f32; 8]; 4];
        if load {
            for (i, row) in acc.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = *c.add(i * c_rs + j);
                }
            }
        }
        let (a_is, a_ps) = if a_rs > 0 { (a_rs, 1) } else { (1, 4) };
        for p in 0..kc {
            let b = std::slice::from_raw_parts(b.add(p * b_rs), 8);
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = *a.add(i * a_is + p * a_ps);
                for (v, &bj) in row.iter_mut().zip(b) {
                    *v = ai.mul_add(bj, *v);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                *c.add(i * c_rs + j) = *v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::MicroKernel;

    /// A register-tile kernel of `$mr` rows × two vectors: `$mr × 2` accumulators, two vectors
    /// of `b` and `$mr` broadcasts of `a` per step, each accumulator advanced by one fused
    /// multiply-add per step (the summation rule of the module documentation).
    macro_rules! tile_kernel {
        ($(#[$doc:meta])* $name:ident, $tile:ident, $feature:literal, $mr:literal, $lanes:literal,
         $zero:ident, $load:ident, $store:ident, $splat:ident, $fma:ident) => {
            $(#[$doc])*
            pub(super) struct $name;

            impl MicroKernel for $name {
                const MR: usize = $mr;
                const NR: usize = 2 * $lanes;

                unsafe fn tile(
                    kc: usize,
                    a: *const f32,
                    a_rs: usize,
                    b: *const f32,
                    b_rs: usize,
                    c: *mut f32,
                    c_rs: usize,
                    load: bool,
                ) {
                    if a_rs > 0 {
                        $tile::<true>(kc, a, a_rs, b, b_rs, c, c_rs, load)
                    } else {
                        $tile::<false>(kc, a, 0, b, b_rs, c, c_rs, load)
                    }
                }
            }

            /// The tile; `DIRECT_A`: `a`'s rows read in place (row stride `a_rs`), else `a`
            /// packed step-major (the strides are constants, so the packed loop is unchanged).
            #[target_feature(enable = $feature)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn $tile<const DIRECT_A: bool>(
                kc: usize,
                a: *const f32,
                a_rs: usize,
                b: *const f32,
                b_rs: usize,
                c: *mut f32,
                c_rs: usize,
                load: bool,
            ) {
                let mut acc = [[$zero(); 2]; $mr];
                if load {
                    for (i, row) in acc.iter_mut().enumerate() {
                        row[0] = $load(c.add(i * c_rs));
                        row[1] = $load(c.add(i * c_rs + $lanes));
                    }
                }
                let (a_is, a_ps) = if DIRECT_A { (a_rs, 1) } else { (1, $mr) };
                for p in 0..kc {
                    let b0 = $load(b.add(p * b_rs));
                    let b1 = $load(b.add(p * b_rs + $lanes));
                    let ap = a.add(p * a_ps);
                    for (i, row) in acc.iter_mut().enumerate() {
                        let ai = $splat(*ap.add(i * a_is));
                        row[0] = $fma(ai, b0, row[0]);
                        row[1] = $fma(ai, b1, row[1]);
                    }
                }
                for (i, row) in acc.iter().enumerate() {
                    $store(c.add(i * c_rs), row[0]);
                    $store(c.add(i * c_rs + $lanes), row[1]);
                }
            }
        };
    }

    tile_kernel!(
        /// AVX-512F, 8 × 32: 16 accumulators.
        Avx512, tile_avx512, "avx512f", 8, 16,
        _mm512_setzero_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_fmadd_ps
    );
    tile_kernel!(
        /// AVX2 + FMA, 6 × 16: 12 accumulators.
        Avx2, tile_avx2, "avx2,fma", 6, 8,
        _mm256_setzero_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_fmadd_ps
    );

    /// `out[p·lanes + l] = src[l·along + p]` for `l < rows`, `p < steps` (both multiples of 8),
    /// in 8 × 8 blocks through AVX registers, eight rows of `out` at a time, so that `out` is
    /// written front to back (its rows in whole cache lines; the rows of `src` that one pass
    /// reads are read again by the next while they are in cache).
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn transpose_8x8_blocks(
        out: *mut f32,
        lanes: usize,
        src: *const f32,
        along: usize,
        rows: usize,
        steps: usize,
    ) {
        for p0 in (0..steps).step_by(8) {
            for l0 in (0..rows).step_by(8) {
                let r = |i: usize| _mm256_loadu_ps(src.add((l0 + i) * along + p0));
                let (r0, r1, r2, r3, r4, r5, r6, r7) =
                    (r(0), r(1), r(2), r(3), r(4), r(5), r(6), r(7));
                let t0 = _mm256_unpacklo_ps(r0, r1);
                let t1 = _mm256_unpackhi_ps(r0, r1);
                let t2 = _mm256_unpacklo_ps(r2, r3);
                let t3 = _mm256_unpackhi_ps(r2, r3);
                let t4 = _mm256_unpacklo_ps(r4, r5);
                let t5 = _mm256_unpackhi_ps(r4, r5);
                let t6 = _mm256_unpacklo_ps(r6, r7);
                let t7 = _mm256_unpackhi_ps(r6, r7);
                let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let columns = [
                    _mm256_permute2f128_ps::<0x20>(s0, s4),
                    _mm256_permute2f128_ps::<0x20>(s1, s5),
                    _mm256_permute2f128_ps::<0x20>(s2, s6),
                    _mm256_permute2f128_ps::<0x20>(s3, s7),
                    _mm256_permute2f128_ps::<0x31>(s0, s4),
                    _mm256_permute2f128_ps::<0x31>(s1, s5),
                    _mm256_permute2f128_ps::<0x31>(s2, s6),
                    _mm256_permute2f128_ps::<0x31>(s3, s7),
                ];
                for (i, c) in columns.into_iter().enumerate() {
                    _mm256_storeu_ps(out.add((p0 + i) * lanes + l0), c);
                }
            }
        }
    }
}

thread_local! {
    /// Buffers of this thread, kept between products: packed `a` block, packed `b` block, and
    /// the scratch block of [`mm_finished`].
    static PACKS: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// One thread's part of a product: `c [m, n] (+)= a [m, k] · b [k, n]`, `c` with row stride
/// `c_rs`.
struct Block<'f> {
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    c_rs: usize,
    a: Operand,
    b: Operand,
    accumulate: bool,
    /// [`mm_finished`]'s `finish` and where this block starts in the product (row, column):
    /// the block is then computed into the thread's scratch, one block of `MC` rows at a
    /// time, and handed over (`k` is at most one packed block, `accumulate` false).
    finish: Option<(&'f Finish<'f>, usize, usize)>,
}

impl Block<'_> {
    /// Packs `b` in blocks of `KC × NC` and `a` in blocks of `MC × KC` (either read in place
    /// instead where few tiles reuse it: [`DIRECT_B_TILES`], [`DIRECT_A_PANELS`]), and runs
    /// the kernel on every tile; edge tiles go through a zero-padded copy. With `finish`, the
    /// tiles of each `MC × NC` block of `c` go to the scratch buffer instead, and its rows to
    /// `finish` once the block is done.
    ///
    /// # Safety
    /// As [`Product::run`].
    unsafe fn compute<K: MicroKernel>(&self) {
        let (m, n, k) = (self.m, self.n, self.k);
        if m == 0 || n == 0 {
            return;
        }
        debug_assert!(self.finish.is_none() || (k <= KC && !self.accumulate));
        if k == 0 {
            if let Some((finish, row0, col0)) = self.finish {
                let zeros = vec![0f32; n];
                (0..m).for_each(|i| finish(row0 + i, col0, &zeros));
            } else if !self.accumulate {
                for i in 0..m {
                    std::ptr::write_bytes(self.c.add(i * self.c_rs), 0, n);
                }
            }
            return;
        }
        PACKS.with_borrow_mut(|(pack_a, pack_b, scratch)| {
            let mut edge = vec![0f32; K::MR * K::NR];
            if self.finish.is_some() {
                scratch.resize(MC.min(m) * NC.min(n), 0.0);
            }
            for jc in (0..n).step_by(NC) {
                let nc = NC.min(n - jc);
                let panels_b = nc.div_ceil(K::NR);
                // Whole panels of a `b` with contiguous rows are read in place when few
                // row tiles reuse each (packing would copy as much as the tiles read); only a
                // last, partial panel is packed (zero-padded).
                let whole = nc / K::NR;
                let direct = self.b.cs == 1 && m <= DIRECT_B_TILES * K::MR;
                // Whole row tiles of an `a` with contiguous rows are read in place when few
                // panels reuse each; a last, partial row tile is packed (zero-padded).
                let direct_a = self.a.cs == 1 && n <= DIRECT_A_PANELS * K::NR;
                for pc in (0..k).step_by(KC) {
                    let kc = KC.min(k - pc);
                    let mut packed_b = std::ptr::null();
                    if direct {
                        if whole < panels_b {
                            let jr = whole * K::NR;
                            packed_b =
                                pack(pack_b, self.b.at(pc, jc + jr), kc, nc - jr, K::NR, true);
                        }
                    } else {
                        packed_b = pack(pack_b, self.b.at(pc, jc), kc, nc, K::NR, true);
                    }
                    let load = self.accumulate || pc > 0;
                    for ic in (0..m).step_by(MC) {
                        let mc = MC.min(m - ic);
                        let whole_a = if direct_a { mc / K::MR * K::MR } else { 0 };
                        let mut packed_a = std::ptr::null();
                        if whole_a < mc {
                            packed_a = pack(
                                pack_a,
                                self.a.at(ic + whole_a, pc),
                                kc,
                                mc - whole_a,
                                K::MR,
                                false,
                            );
                        }
                        for jp in 0..panels_b {
                            let jr = jp * K::NR;
                            let nr = K::NR.min(nc - jr);
                            let (bp, b_rs) = if !direct {
                                (packed_b.add(jp * kc * K::NR), K::NR)
                            } else if jp < whole {
                                (self.b.at(pc, jc + jr).ptr, self.b.rs)
                            } else {
                                (packed_b, K::NR)
                            };
                            for ir in (0..mc).step_by(K::MR) {
                                let mr = K::MR.min(mc - ir);
                                let (ap, a_rs) = if ir < whole_a {
                                    (self.a.at(ic + ir, pc).ptr, self.a.rs)
                                } else {
                                    let tile = (ir - whole_a) / K::MR;
                                    (packed_a.add(tile * kc * K::MR), 0)
                                };
                                // The tile's place: in `c`, or in the block's scratch
                                // (rows of `nc` values).
                                let (c, c_rs) = if self.finish.is_some() {
                                    (scratch.as_mut_ptr().add(ir * nc + jr), nc)
                                } else {
                                    (self.c.add((ic + ir) * self.c_rs + jc + jr), self.c_rs)
                                };
                                if mr == K::MR && nr == K::NR {
                                    K::tile(kc, ap, a_rs, bp, b_rs, c, c_rs, load);
                                } else {
                                    edge.fill(0.0);
                                    if load {
                                        for i in 0..mr {
                                            for j in 0..nr {
                                                edge[i * K::NR + j] = *c.add(i * c_rs + j);
                                            }
                                        }
                                    }
                                    K::tile(kc, ap, a_rs, bp, b_rs, edge.as_mut_ptr(), K::NR, true);
                                    for i in 0..mr {
                                        for j in 0..nr {
                                            *c.add(i * c_rs + j) = edge[i * K::NR + j];
                                        }
                                    }
                                }
                            }
                        }
                        // The block's elements are final (one packed block of depth).
                        if let Some((finish, row0, col0)) = self.finish {
                            for (i, row) in scratch[..mc * nc].chunks_exact(nc).enumerate() {
                                finish(row0 + ic + i, col0 + jc, row);
                            }
                        }
                    }
                }
            }
        });
    }
}

/// `dst.copy_from_slice(src)` for short rows (a packed panel's 8 to 32 values, an im2col row):
/// eight values at a time by register moves, where a library `memmove` call per row cost more
/// than the copy.
#[inline(always)]
pub(crate) fn copy_short(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (d, s) in (&mut d).zip(&mut s) {
        let v: &[f32; 8] = s.try_into().expect("chunks of 8");
        let d: &mut [f32; 8] = d.try_into().expect("chunks of 8");
        *d = *v;
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// Packed blocks start on a 64-byte boundary (this many `f32`s), so that no vector load of a
/// packed panel is split across two cache lines. Speed only.
const ALIGN_FLOATS: usize = 16;

/// Packs `depth × width` values of `src` into panels of `lanes` along the width, each panel
/// step-major (`panel[p·lanes + l]`), zero-padded to whole panels. `src` is seen as
/// `[depth, width]` when `depth_rows` (the `b` side), else as `[width, depth]` (the `a` side).
/// Returns the start of the packed block inside `dst` (aligned to [`ALIGN_FLOATS`]); `dst` is
/// grown as needed and kept by the caller between products.
///
/// # Safety
/// `src` must be valid for the whole `depth × width` block.
unsafe fn pack(
    dst: &mut Vec<f32>,
    src: Operand,
    depth: usize,
    width: usize,
    lanes: usize,
    depth_rows: bool,
) -> *const f32 {
    let panels = width.div_ceil(lanes);
    let len = panels * depth * lanes;
    // Grown, never cleared: every value of a whole panel is written below, and only a last,
    // partial panel is zeroed first (its lanes past `width` are the padding).
    if dst.len() < len + ALIGN_FLOATS - 1 {
        dst.resize(len + ALIGN_FLOATS - 1, 0.0);
    }
    let skip = dst
        .as_ptr()
        .align_offset(ALIGN_FLOATS * 4)
        .min(ALIGN_FLOATS - 1);
    let dst = &mut dst[skip..skip + len];
    if !width.is_multiple_of(lanes) {
        dst[(panels - 1) * depth * lanes..].fill(0.0);
    }
    // Element (p, w): step p of width position w.
    let (step, along) = if depth_rows {
        (src.rs, src.cs)
    } else {
        (src.cs, src.rs)
    };
    for (panel, out) in dst.chunks_exact_mut(depth * lanes).enumerate() {
        let w0 = panel * lanes;
        let w = lanes.min(width - w0);
        if along == 1 {
            // Contiguous along the width: copy rows of the panel.
            for (p, row) in out.chunks_exact_mut(lanes).enumerate() {
                let s = std::slice::from_raw_parts(src.ptr.add(p * step + w0), w);
                copy_short(&mut row[..w], s);
            }
        } else {
            // Contiguous (or strided) along the depth: a transposition. Whole 8 × 8 blocks go
            // through AVX registers where the CPU has them (data movement only: the bits of
            // the product do not depend on it); the rest is copied one value at a time.
            let base = src.ptr.add(w0 * along);
            let done = transpose_blocks(out, lanes, base, along, step, w, depth);
            for l in 0..w {
                let first = if l < done.0 { done.1 } else { 0 };
                for p in first..depth {
                    out[p * lanes + l] = *base.add(l * along + p * step);
                }
            }
        }
    }
    dst.as_ptr()
}

/// Transpositions of at least this many values are split between the pool's threads (a split
/// of a smaller one costs more in wake-ups than it saves; under Miri small ones are split too,
/// so that its tests reach the split).
const PARALLEL_TRANSPOSE: usize = if cfg!(miri) { 16 } else { 32 * 1024 };

/// `dst [cols, rows] = srcᵀ` for `src [rows, cols]`, both row-major: whole 8 × 8 blocks through
/// AVX registers where the kernels use them, the rest one value at a time (data movement only).
/// Large ones are split between the pool's threads by rows of `dst` (whole blocks of 8).
pub fn transpose(dst: &mut [f32], src: &[f32], rows: usize, cols: usize) {
    transpose_then(dst, src, rows, cols, |_, _| {});
}

/// [`transpose`], then `then(start, run)` on the rows of `dst` that each thread has just
/// written (whole rows of `rows` values, in one call per thread's part; `start` is the run's
/// offset in `dst`), while they are in its cache: an elementwise pass over the result without
/// a pass of its own.
pub fn transpose_then(
    dst: &mut [f32],
    src: &[f32],
    rows: usize,
    cols: usize,
    then: impl Fn(usize, &mut [f32]) + Sync,
) {
    assert!(
        src.len() >= rows * cols && dst.len() >= rows * cols,
        "matrix sizes"
    );
    let dst = &mut dst[..rows * cols];
    let par = threads();
    let per = if par > 1 && rows * cols >= PARALLEL_TRANSPOSE {
        cols.div_ceil(par).next_multiple_of(8)
    } else {
        cols
    };
    if per >= cols || rows == 0 {
        transpose_columns(dst, src, rows, cols, 0..cols);
        then(0, dst);
    } else {
        use rayon::prelude::*;
        dst.par_chunks_mut(per * rows)
            .enumerate()
            .for_each(|(i, part)| {
                let first = i * per;
                transpose_columns(part, src, rows, cols, first..(first + per).min(cols));
                then(first * rows, part);
            });
    }
}

/// Elementwise passes over at least this many values are split between the pool's threads.
pub(crate) const PARALLEL_ELEMENTWISE: usize = if cfg!(miri) { 16 } else { 32 * 1024 };

/// `f(start, run)` on `v` (whole rows of `row` values), split between the pool's threads into
/// contiguous runs of whole rows where `v` is large (from 32 k values); `start` is the
/// run's offset in `v`. For elementwise passes, whose results do not depend on the split.
pub fn rows_in_parallel(v: &mut [f32], row: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let rows = v.len() / row.max(1);
    let par = threads().min(rows);
    if par < 2 || v.len() < PARALLEL_ELEMENTWISE {
        f(0, v);
        return;
    }
    let run = rows.div_ceil(par) * row;
    use rayon::prelude::*;
    v.par_chunks_mut(run)
        .enumerate()
        .for_each(|(i, part)| f(i * run, part));
}

/// `out[(c − first)·rows + r] = src[r·cols + c]` for the columns `c` of `src [rows, cols]` in
/// `columns = first..end`: those rows of `srcᵀ`.
fn transpose_columns(
    out: &mut [f32],
    src: &[f32],
    rows: usize,
    cols: usize,
    columns: std::ops::Range<usize>,
) {
    assert!(columns.end <= cols && src.len() >= rows * cols);
    let (first, width) = (columns.start, columns.len());
    // SAFETY: `src` holds `rows` rows of `cols` values (asserted above), so columns
    // `first..first + width` of every row lie inside it.
    let (r0, c0) =
        unsafe { transpose_blocks(out, rows, src.as_ptr().add(first), cols, 1, rows, width) };
    for r in 0..rows {
        let done = if r < r0 { c0 } else { 0 };
        for c in done..width {
            out[c * rows + r] = src[r * cols + first + c];
        }
    }
}

/// Transposes whole 8 × 8 blocks of `src` (width position `l` at `l·along`, step `p` at
/// `p·step`, contiguous along the steps) into `out[p·lanes + l]`, with AVX where the kernels use
/// it. Returns `(rows, steps)`: the blocks cover width positions `< rows` and steps `< steps`
/// (`(0, 0)` when nothing was done).
///
/// # Safety
/// `src` must be valid for `w` width positions of `depth` steps.
unsafe fn transpose_blocks(
    out: &mut [f32],
    lanes: usize,
    src: *const f32,
    along: usize,
    step: usize,
    w: usize,
    depth: usize,
) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if step == 1 && lanes.is_multiple_of(8) && Isa::detected() != Isa::Scalar {
            let (rows, steps) = (w / 8 * 8, depth / 8 * 8);
            assert!(out.len() >= depth * lanes);
            // SAFETY: AVX is present (both SIMD kernels imply it); the blocks lie inside `src`
            // (caller) and `out` (asserted above).
            x86::transpose_8x8_blocks(out.as_mut_ptr(), lanes, src, along, rows, steps);
            return (rows, steps);
        }
    }
    let _ = (out, lanes, src, along, step, w, depth);
    (0, 0)
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

    /// The rule itself, written as plainly as possible.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        c: &mut [f32],
        a: &[f32],
        a_t: bool,
        b: &[f32],
        b_t: bool,
        accumulate: bool,
    ) {
        for i in 0..m {
            for j in 0..n {
                let mut acc = if accumulate { c[i * n + j] } else { 0.0 };
                for p in 0..k {
                    let x = if a_t { a[p * m + i] } else { a[i * k + p] };
                    let y = if b_t { b[j * k + p] } else { b[p * n + j] };
                    acc = x.mul_add(y, acc);
                }
                c[i * n + j] = acc;
            }
        }
    }

    #[cfg(miri)]
    const SHAPES: &[(usize, usize, usize, bool, bool)] = &[
        (130, 40, 9, false, true),
        (5, 7, 3, true, false),
        (9, 33, 0, false, false),
        (9, 70, 5, false, false),
        // `a` read in place (contiguous rows, few column panels), with a packed last row tile.
        (11, 9, 6, false, false),
        // The same with four column panels of the scalar kernel, the last one partial (the
        // fully connected forward pass as `W · inputᵀ`).
        (17, 27, 5, false, true),
    ];
    #[cfg(not(miri))]
    const SHAPES: &[(usize, usize, usize, bool, bool)] = &[
        (128, 1000, 784, false, true),
        (128, 10, 1000, false, true),
        (128, 1000, 10, false, false),
        (1000, 784, 128, true, false),
        (64, 256, 784, false, true),
        (256, 784, 64, true, false),
        (300, 200, 517, true, true),
        (1, 1, 1, false, false),
        (7, 3, 0, false, false),
        (13, 37, 300, false, false),
        // `b` read in place (few row tiles, contiguous rows): the CNN's convolutions.
        (16, 4608, 25, false, false),
        (32, 512, 400, false, false),
        (32, 1100, 30, true, false),
        // `a` read in place (contiguous rows, few column panels): the convolutions' weight
        // gradients (both orientations), with partial row tiles.
        (16, 25, 4608, false, true),
        (25, 16, 4608, false, true),
        (400, 32, 512, false, true),
        (37, 61, 70, false, false),
        // The fully connected forward pass as `W · inputᵀ` (`a` = W read in place for up to
        // four column panels): 2×1000 at batch 128, the CNN's hidden layer, a partial panel.
        (1000, 128, 784, false, true),
        (128, 128, 256, false, true),
        (1000, 100, 1000, false, true),
    ];
    #[cfg(miri)]
    const THREADS: &[usize] = &[1, 2];
    #[cfg(not(miri))]
    const THREADS: &[usize] = &[1, 2, 3, 4];

    /// Every kernel this CPU runs, every thread count, with and without accumulation, at the
    /// shapes of the fused step and at odd ones: the same bits as the plain chain of
    /// fused multiply-adds.
    #[test]
    fn every_kernel_and_split_gives_the_bits_of_the_plain_chain() {
        let pool = |t| thread_pool(t).unwrap();
        for &(m, n, k, a_t, b_t) in SHAPES {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            for accumulate in [false, true] {
                let start = values(m * n, 3);
                let mut want = start.clone();
                reference(m, n, k, &mut want, &a, a_t, &b, b_t, accumulate);
                for isa in Isa::available() {
                    for &threads in THREADS {
                        let mut got = start.clone();
                        run_on(&pool(threads), || {
                            mm_with(
                                isa, m, n, k, &mut got, &a, a_t, &b, b_t, accumulate, threads,
                            )
                        });
                        let same = want
                            .iter()
                            .zip(&got)
                            .all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(
                            same,
                            "{m}×{k}·{k}×{n} (a_t {a_t}, b_t {b_t}, accumulate {accumulate}, \
                             {isa}, {threads} threads)"
                        );
                    }
                }
            }
        }
    }

    /// [`mm_finished`] hands every element over exactly once, with the bits of the plain chain,
    /// for every kernel and thread count, at the same shapes (those deeper than one packed block
    /// through its whole-product path) and at a weight gradient wider than one block of
    /// columns.
    #[test]
    fn finished_products_hand_over_the_bits_of_the_plain_chain_once() {
        use std::sync::Mutex;
        let pool = |t| thread_pool(t).unwrap();
        let wide: &[(usize, usize, usize, bool, bool)] = if cfg!(miri) {
            &[(9, 21, 4, true, false)]
        } else {
            &[(300, 2100, 64, true, false), (2100, 300, 128, true, false)]
        };
        for &(m, n, k, a_t, b_t) in SHAPES.iter().chain(wide) {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let mut want = vec![0.0; m * n];
            reference(m, n, k, &mut want, &a, a_t, &b, b_t, false);
            for isa in Isa::available() {
                for &threads in THREADS {
                    // NaN marks an element not handed over yet.
                    let got = Mutex::new(vec![f32::NAN; m * n]);
                    let finish = |row: usize, col: usize, run: &[f32]| {
                        let mut got = got.lock().unwrap();
                        for (j, &v) in run.iter().enumerate() {
                            let slot = &mut got[row * n + col + j];
                            assert!(slot.is_nan(), "({row}, {}) handed over twice", col + j);
                            *slot = v;
                        }
                    };
                    run_on(&pool(threads), || {
                        mm_finished_with(isa, m, n, k, &a, a_t, &b, b_t, threads, &finish)
                    });
                    let got = got.into_inner().unwrap();
                    let same = want
                        .iter()
                        .zip(&got)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(
                        same,
                        "{m}×{k}·{k}×{n} (a_t {a_t}, b_t {b_t}, {isa}, {threads} threads)"
                    );
                }
            }
        }
    }

    /// [`transpose`] moves every value to its transposed place, whole 8 × 8 blocks and edges.
    #[test]
    fn transpose_transposes() {
        let large = if cfg!(miri) { (5, 3) } else { (128, 1000) };
        // Split between two threads (above PARALLEL_TRANSPOSE; with ragged last parts too).
        let split = if cfg!(miri) {
            [(16, 40), (6, 20), (9, 17)]
        } else {
            [(1000, 128), (333, 100), (260, 131)]
        };
        let shapes = [(1, 1), (3, 17), (8, 8), (9, 16), (16, 9), (37, 45), large];
        let pool = thread_pool(2).unwrap();
        for (rows, cols) in shapes.into_iter().chain(split) {
            let src = values(rows * cols, 6);
            let mut dst = vec![f32::NAN; rows * cols];
            run_on(&pool, || transpose(&mut dst, &src, rows, cols));
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * rows + r].to_bits(),
                        src[r * cols + c].to_bits(),
                        "{rows}×{cols} at ({r}, {c})"
                    );
                }
            }
        }
    }

    /// [`with_threads_polling`] returns `work`'s value; products inside it keep their bits and
    /// have their shares taken by the polling threads; outside a pool and with one thread it
    /// is `work()`; a panic in `work` reaches the caller (the pollers stop, nothing hangs).
    #[test]
    fn polling_threads_take_the_shares_and_stop_with_the_work() {
        let (m, n, k) = if cfg!(miri) {
            (9, 70, 5)
        } else {
            (1000, 128, 784)
        };
        let a = values(m * k, 7);
        let b = values(k * n, 8);
        let mut want = vec![0.0; m * n];
        reference(m, n, k, &mut want, &a, false, &b, true, false);
        assert_eq!(with_threads_polling(|| 7), 7);
        for threads in [1, 2, 3] {
            let pool = thread_pool(threads).unwrap();
            let (got, workers) = run_on(&pool, || {
                with_threads_polling(|| {
                    let mut got = vec![0.0; m * n];
                    let workers = std::sync::Mutex::new(std::collections::HashSet::new());
                    for _ in 0..3 {
                        mm(m, n, k, &mut got, &a, false, &b, true, false, threads);
                    }
                    // Two halves of a fork: the first waits (up to 10 s, for a loaded
                    // machine) until another thread has taken the second.
                    let taken = std::sync::atomic::AtomicBool::new(false);
                    rayon::join(
                        || {
                            let started = std::time::Instant::now();
                            while threads > 1
                                && !taken.load(std::sync::atomic::Ordering::Acquire)
                                && started.elapsed().as_secs() < 10
                            {
                                std::thread::yield_now();
                            }
                            workers
                                .lock()
                                .unwrap()
                                .insert(rayon::current_thread_index())
                        },
                        || {
                            taken.store(true, std::sync::atomic::Ordering::Release);
                            workers
                                .lock()
                                .unwrap()
                                .insert(rayon::current_thread_index())
                        },
                    );
                    (got, workers.into_inner().unwrap().len())
                })
            });
            assert!(want
                .iter()
                .zip(&got)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
            assert_eq!(
                workers > 1,
                threads > 1,
                "{threads} threads: {workers} took work"
            );
        }
        let pool = thread_pool(2).unwrap();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_on(&pool, || with_threads_polling(|| panic!("work failed")))
        }));
        assert!(caught.is_err());
        // The pool still serves work afterwards: its polling thread stopped.
        assert_eq!(
            run_on(&pool, || with_threads_polling(|| rayon::join(|| 1, || 2))),
            (1, 2)
        );
    }

    /// [`transpose_then`] runs its pass once on every row of the result, after the
    /// transposition, split or not; both it and [`rows_in_parallel`] hand every run its offset.
    #[test]
    fn passes_after_a_transposition_and_by_rows_see_every_value_once() {
        let pool = thread_pool(2).unwrap();
        let shapes = if cfg!(miri) {
            [(3, 5), (16, 40)]
        } else {
            [(37, 45), (1000, 128)]
        };
        for (rows, cols) in shapes {
            let src = values(rows * cols, 9);
            let mut dst = vec![f32::NAN; rows * cols];
            run_on(&pool, || {
                transpose_then(&mut dst, &src, rows, cols, |start, part| {
                    assert_eq!(start % rows, 0, "whole rows");
                    assert_eq!(part.len() % rows, 0, "whole rows");
                    for (i, v) in part.iter_mut().enumerate() {
                        *v += (start + i) as f32;
                    }
                })
            });
            for r in 0..rows {
                for c in 0..cols {
                    let at = c * rows + r;
                    assert_eq!(dst[at], src[r * cols + c] + at as f32, "{rows}×{cols}");
                }
            }
            let mut v = vec![0.0f32; rows * cols];
            run_on(&pool, || {
                rows_in_parallel(&mut v, cols, |start, run| {
                    assert_eq!(start % cols, 0, "whole rows");
                    for (i, x) in run.iter_mut().enumerate() {
                        *x += (start + i) as f32;
                    }
                })
            });
            assert!(v.iter().enumerate().all(|(i, &x)| x == i as f32));
        }
    }

    /// The chain is a real product: against an `f64` triple loop. (Not under Miri: the test
    /// above already runs the unsafe code there, against the plain chain.)
    #[test]
    #[cfg_attr(miri, ignore)]
    fn products_are_products() {
        let (m, n, k) = (37, 45, 300);
        let a = values(m * k, 4);
        let b = values(k * n, 5);
        let mut c = vec![0.0; m * n];
        mm(m, n, k, &mut c, &a, false, &b, false, false, 1);
        for i in 0..m {
            for j in 0..n {
                let sum: f64 = (0..k)
                    .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                    .sum();
                assert!((c[i * n + j] as f64 - sum).abs() <= 1e-4 * (1.0 + sum.abs()));
            }
        }
    }
}
