//! `clbench bench`: throughput, matmul peak, parallel scaling and peak memory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::{BenchArgs, UsageError};

pub(crate) fn bench_command(args: BenchArgs) -> Result<ExitCode> {
    use clbench::bench;
    use clbench::optim::GrapesMode;
    if !(args.seconds > 0.0 && args.seconds.is_finite()) {
        return Err(UsageError(format!(
            "--seconds {}: expected a positive number",
            args.seconds
        ))
        .into());
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = args.threads.unwrap_or(cores).max(1);
    let duration = std::time::Duration::from_secs_f64(args.seconds);
    let device = candle_core::Device::Cpu;
    let emit = |json: serde_json::Value, text: String| {
        if args.json {
            println!("{json}");
        } else {
            println!("{text}");
        }
    };
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    // The peak is the best of short 2048³ products, both with the training step's split between
    // threads and with gemm's own threading, five of each now and five more after the training
    // measurements (the speed of shared machines drifts; the best of all is the peak).
    let measure_peak = || {
        let mut best = [0.0f64; 2];
        for _ in 0..5 {
            for (b, split) in best.iter_mut().zip([true, false]) {
                *b = b.max(bench::matmul_peak(2048, duration / 10, split));
            }
        }
        best
    };
    let before = measure_peak();
    // Rounds alternate between the two methods, and each method's median round is reported, so
    // that drifts of the machine's speed hit both alike; GRAPES's cost is the median of the
    // paired rounds' ratios, which cancels drifts slower than a round.
    const ROUNDS: u32 = 9;
    let mut by_config = Vec::new();
    let mut overheads = Vec::new();
    for (hidden, batch) in [(vec![256, 256], 64usize), (vec![1000, 1000], 128)] {
        let mut rounds: [Vec<bench::TrainMeasurement>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            for (k, grapes) in [GrapesMode::Off, GrapesMode::Propagating]
                .into_iter()
                .enumerate()
            {
                rounds[k].push(bench::train_throughput(
                    &hidden,
                    batch,
                    grapes,
                    20,
                    duration / ROUNDS,
                    &device,
                )?);
            }
        }
        let mut ratios: Vec<f64> = rounds[0]
            .iter()
            .zip(&rounds[1])
            .map(|(plain, grapes)| plain.samples_per_s / grapes.samples_per_s)
            .collect();
        ratios.sort_by(f64::total_cmp);
        overheads.push(100.0 * (ratios[ratios.len() / 2] - 1.0));
        for mut r in rounds {
            r.sort_by(|a, b| a.samples_per_s.total_cmp(&b.samples_per_s));
            by_config.push(r.swap_remove(r.len() / 2));
        }
    }
    let after = measure_peak();
    let [split, whole] = [0, 1].map(|i| before[i].max(after[i]));
    let peak = split.max(whole);
    let [best_before, best_after] = [before, after].map(|[s, w]| s.max(w));
    emit(
        serde_json::json!({"kind": "matmul_peak", "n": 2048, "threads": threads, "gflop_per_s": peak,
            "split_gflop_per_s": split, "gemm_threads_gflop_per_s": whole,
            "before_gflop_per_s": best_before, "after_gflop_per_s": best_after}),
        format!(
            "matmul 2048×2048×2048, {threads} threads, best of 10 before and after training: \
             {peak:.1} GFLOP/s, the peak for \"% peak\" (split between threads {split:.1}, \
             gemm's own threading {whole:.1}; before {best_before:.1}, after {best_after:.1})\n"
        ),
    );
    if !args.json {
        println!(
            "{:<16} {:>5} {:<11} {:>7} {:>12} {:>11} {:>10} {:>8}",
            "model", "batch", "method", "threads", "samples/s", "FLOP/sample", "GFLOP/s", "% peak"
        );
    }
    for m in &by_config {
        let mut json = serde_json::to_value(m)?;
        json["kind"] = "train".into();
        json["percent_of_peak"] = (100.0 * m.gflop_per_s / peak).into();
        emit(
            json,
            format!(
                "{:<16} {:>5} {:<11} {:>7} {:>12.0} {:>11.2e} {:>10.1} {:>7.1}%",
                m.model,
                m.batch,
                m.method,
                m.threads,
                m.samples_per_s,
                m.flop_per_sample,
                m.gflop_per_s,
                100.0 * m.gflop_per_s / peak
            ),
        );
    }
    for (pair, &overhead) in by_config.chunks(2).zip(&overheads) {
        emit(
            serde_json::json!({"kind": "grapes_overhead", "model": pair[0].model, "batch": pair[0].batch, "percent": overhead}),
            format!(
                "GRAPES costs {overhead:.1}% on {} at batch {}",
                pair[0].model, pair[0].batch
            ),
        );
    }
    for (hidden, batch) in [(vec![256, 256], 1000usize), (vec![1000, 1000], 1000)] {
        let sps = bench::eval_throughput(&hidden, batch, duration, &device)?;
        emit(
            serde_json::json!({"kind": "eval", "model": bench::model_name(&hidden), "batch": batch, "threads": threads, "samples_per_s": sps}),
            format!(
                "evaluation {} at batch {batch}: {sps:.0} samples/s",
                bench::model_name(&hidden)
            ),
        );
    }
    // Parallel scaling: one single-threaded run, then two at once.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let one = bench::train_throughput(&[256, 256], 64, GrapesMode::Off, 20, duration, &device)?
        .samples_per_s;
    let two: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    bench::train_throughput(
                        &[256, 256],
                        64,
                        GrapesMode::Off,
                        20,
                        duration,
                        &candle_core::Device::Cpu,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread").map(|m| m.samples_per_s))
            .collect::<candle_core::Result<Vec<f64>>>()
    })?;
    let total: f64 = two.iter().sum();
    emit(
        serde_json::json!({"kind": "parallel", "model": "784-256-256-10", "batch": 64, "one_run_samples_per_s": one, "two_runs_samples_per_s": total, "scaling": total / one}),
        format!("two single-threaded runs at once: {total:.0} samples/s in all, {:.2}× one run ({one:.0})", total / one),
    );
    if !args.skip_rss {
        let config = PathBuf::from("configs/paper-forgetting.yaml");
        if config.is_file() {
            let out =
                std::env::temp_dir().join(format!("clbench-bench-rss-{}", std::process::id()));
            let status = std::process::Command::new(std::env::current_exe()?)
                .args([
                    "run",
                    "configs/paper-forgetting.yaml",
                    "--seeds",
                    "1234",
                    "--out",
                ])
                .arg(&out)
                .args(["-q", "--threads", &threads.to_string()])
                .stdout(std::process::Stdio::null())
                .status()?;
            let _ = std::fs::remove_dir_all(&out);
            let rss = bench::children_peak_rss_mb().unwrap_or(f64::NAN);
            emit(
                serde_json::json!({"kind": "peak_rss", "config": "configs/paper-forgetting.yaml", "seeds": [1234], "ok": status.success(), "peak_rss_mb": rss}),
                format!("peak RSS of configs/paper-forgetting.yaml (seed 1234, both methods): {rss:.0} MB"),
            );
        } else {
            tracing::warn!("configs/paper-forgetting.yaml not found here: peak RSS not measured");
        }
    }
    Ok(ExitCode::SUCCESS)
}
