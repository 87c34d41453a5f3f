//! Milliseconds per product for the five large products of one 784-1000-1000-10 training step
//! at batch 128 (forward of both hidden layers as `W · inputᵀ`, the error passed down to the
//! first hidden layer, both weight gradients) and a 2048³ product, each alone and repeated,
//! with the pool's threads polling as in a task of `clbench run`: minimum and median, and the
//! minimum's GFLOP/s. Tells a slow product from a slow step (`examples/step_time`).
//!
//! ```text
//! cargo build --example prod_time
//! target/debug/examples/prod_time <threads> <repetitions>
//! ```
use clbench::engine::kernels;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: prod_time <threads> <repetitions>");
        std::process::exit(2);
    }
    let threads: usize = args[1].parse().expect("threads: a whole number");
    let reps: usize = args[2].parse().expect("repetitions: a whole number");
    let pool = kernels::thread_pool(threads).expect("a thread pool");
    // (what, m, n, k, a stored transposed, b stored transposed), as `kernels::mm` takes them.
    let shapes = [
        ("forward 1: W·xᵀ", 1000, 128, 784, false, true),
        ("forward 2: W·hᵀ", 1000, 128, 1000, false, true),
        ("error 2: δ·W", 128, 1000, 1000, false, false),
        ("grad W2: δᵀ·h", 1000, 1000, 128, true, false),
        ("grad W1: δᵀ·x", 1000, 784, 128, true, false),
        ("head fwd", 128, 10, 1000, false, true),
        ("head error", 128, 1000, 10, false, false),
        ("head grads", 10, 1000, 128, true, false),
        ("2048³", 2048, 2048, 2048, false, false),
    ];
    kernels::run_on(&pool, || {
        kernels::with_threads_polling(|| {
            for &(what, m, n, k, a_t, b_t) in &shapes {
                let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
                let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
                let mut c = vec![0f32; m * n];
                let times = if m * n * k > 1 << 30 { 5 } else { reps.max(1) };
                let mut ms: Vec<f64> = (0..times)
                    .map(|_| {
                        let start = Instant::now();
                        kernels::mm(m, n, k, &mut c, &a, a_t, &b, b_t, false, threads);
                        start.elapsed().as_secs_f64() * 1e3
                    })
                    .collect();
                ms.sort_by(f64::total_cmp);
                let gflop = 2.0 * (m * n * k) as f64 / 1e9;
                println!(
                    "{what:18} min {:.3} ms  median {:.3} ms  {:.0} GFLOP/s",
                    ms[0],
                    ms[ms.len() / 2],
                    gflop / ms[0] * 1e3
                );
            }
        })
    });
}
