//! Milliseconds per training step of one `clbench bench` model, as quantiles over a fixed
//! number of steps (minimum, 10th percentile, median): a steadier A/B measure than a rate over
//! a time window on a machine whose speed drifts. The fused step `clbench run` uses, one batch
//! of random pixels, SGD with momentum (or Adam: `adam`), the pool's threads polling for work as
//! in a task of `clbench run`.
//!
//! ```text
//! cargo build --example step_time
//! target/debug/examples/step_time <threads> <1000|256|256b10|cnn16|cnn8> <steps> [adam] [apart]
//! ```
//!
//! The step is `Engine::accumulate_and_apply`, as a fine-tuning step of `clbench run` takes it
//! (the MLP's update applied inside its backward pass); `apart` times the gradients and the
//! update as two passes instead (as a step with a penalty or replay takes them).
use candle_core::Device;
use clbench::bench::BenchModel;
use clbench::engine::{engine_for, kernels, BackwardPath, Part};
use clbench::models::loss::Targets;
use clbench::models::Network;
use clbench::optim::{GrapesMode, OptimizerSettings};
use clbench::rng::SeedRng;
use clbench::streams::OutputLayout;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: step_time <threads> <1000|256|256b10|cnn16|cnn8> <steps> [adam] [apart]");
        std::process::exit(2);
    }
    let threads: usize = args[1].parse().unwrap();
    let which = &args[2];
    let steps: usize = args[3].parse().unwrap();
    let (model, batch) = match which.as_str() {
        "1000" => (BenchModel::mlp(&[1000, 1000]), 128),
        "256" => (BenchModel::mlp(&[256, 256]), 64),
        "256b10" => (BenchModel::mlp(&[256, 256]), 10),
        "cnn16" => (BenchModel::cnn([16, 32], 128), 128),
        "cnn8" => (BenchModel::cnn([8, 16], 128), 128),
        other => panic!("unknown model {other}: 1000, 256, 256b10, cnn16 or cnn8"),
    };
    let pool = kernels::thread_pool(threads).unwrap();
    kernels::run_on(&pool, || {
        let net = Network::new(
            &model.spec,
            &OutputLayout::Shared { outputs: 10 },
            &mut SeedRng::derive(0, "init", 0),
            &Device::Cpu,
        )
        .unwrap();
        let apart = args[4..].iter().any(|a| a == "apart");
        let mut opt = if args[4..].iter().any(|a| a == "adam") {
            OptimizerSettings::adam(1e-4).build()
        } else {
            OptimizerSettings::sgd_momentum(0.01, 0.9).build()
        };
        let mut engine = engine_for(&net, BackwardPath::Auto, &Device::Cpu).unwrap();
        let mut rng = SeedRng::derive(0, "x", 0);
        let x: Vec<f32> = (0..batch * 784)
            .map(|_| rng.uniform_f32(0.0, 1.0))
            .collect();
        let t: Vec<u32> = (0..batch).map(|_| rng.below(10) as u32).collect();
        let mut times = Vec::new();
        // The pool's other threads poll for the products' shares, as in `clbench run`.
        kernels::with_threads_polling(|| {
            for _ in 0..steps {
                let s = std::time::Instant::now();
                let part = Part {
                    pixels: &x,
                    targets: Targets::Hard(&t),
                    head: 0,
                    range: None,
                    weight: 1.0,
                };
                if apart {
                    engine.zero_grad();
                    engine.accumulate(&part, GrapesMode::Off).unwrap();
                    engine.apply(opt.as_mut()).unwrap();
                } else {
                    let objective = [part.objective()];
                    engine
                        .accumulate_and_apply(&x, &objective, GrapesMode::Off, opt.as_mut(), None)
                        .unwrap();
                }
                times.push(s.elapsed().as_secs_f64());
            }
        });
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let q = |f: f64| times[((times.len() - 1) as f64 * f) as usize] * 1e3;
        println!(
            "{which} t{threads} ms/step min {:.3} p10 {:.3} med {:.3}",
            q(0.0),
            q(0.1),
            q(0.5)
        );
    });
}
