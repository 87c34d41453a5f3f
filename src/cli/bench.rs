//! `clbench bench`: throughput, matmul peak, parallel scaling and peak memory; `clbench
//! platform`: what this machine and build are.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;

use crate::bench::{self, BenchModel, TrainMeasurement};
use crate::engine::kernels::{run_on, thread_pool, Isa};
use crate::optim::GrapesMode;
use crate::platform::{KernelPath, Platform};

use super::args::{BenchArgs, BenchModelsArg, PlatformArgs};
use super::settings::BenchSettings;

/// Rounds per method; each method's median round is reported.
const ROUNDS: u32 = 9;

/// The models measured, each with its training batch size: the reference MLPs and the CNN at
/// both of its channel settings.
fn models(which: BenchModelsArg) -> Vec<(BenchModel, usize)> {
    let mut models = Vec::new();
    if which != BenchModelsArg::Cnn {
        models.push((BenchModel::mlp(&[256, 256]), 64));
        models.push((BenchModel::mlp(&[256, 256]), 10));
        models.push((BenchModel::mlp(&[1000, 1000]), 128));
    }
    if which != BenchModelsArg::Mlp {
        models.push((BenchModel::cnn([8, 16], 128), 128));
        models.push((BenchModel::cnn([16, 32], 128), 128));
    }
    models
}

/// Prints each measurement as a JSON line or as text.
struct Output {
    json: bool,
}

impl Output {
    fn emit(&self, json: serde_json::Value, text: String) -> Result<(), super::StdoutError> {
        if self.json {
            say!("{json}");
        } else {
            say!("{text}");
        }
        Ok(())
    }
}

/// `clbench bench`: the matmul peak before and after, training throughput of both methods in
/// alternating rounds, evaluation throughput, parallel scaling and the paper protocol's peak
/// memory.
pub(crate) fn bench_command(args: BenchArgs) -> Result<ExitCode> {
    let settings = BenchSettings::new(&args)?;
    if let Some(isa) = settings.kernels {
        Isa::choose(isa).map_err(anyhow::Error::msg)?;
    }
    let out = Output {
        json: settings.json,
    };
    let pool = thread_pool(settings.threads)?;
    let duration = settings.duration;
    if settings.strategies {
        run_on(&pool, || strategy_costs(&out, duration))?;
        return Ok(ExitCode::SUCCESS);
    }
    // The theoretical FMA peak, once (its clock is measured).
    let fma = bench::FmaPeak::of(settings.threads);
    let (by_config, overheads, peak) = run_on(&pool, || -> Result<_> {
        let before = measure_peak(duration);
        let (by_config, overheads) = training_rounds(settings.models, duration)?;
        let after = measure_peak(duration);
        let peak = report_peak(&out, settings.threads, before, after, fma.as_ref())?;
        Ok((by_config, overheads, peak))
    })?;
    report_training(&out, &by_config, &overheads, peak, fma.as_ref())?;
    run_on(&pool, || {
        evaluation(&out, settings.models, settings.threads, duration)
    })?;
    parallel_scaling(&out, duration)?;
    if !settings.skip_rss {
        peak_rss(&out, settings.threads)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The best of short 2048³ products, both by the portable kernels training uses (split
/// between threads as the training step splits them) and by the `gemm` crate with its own
/// threading, five of each (the speed of shared machines drifts; the best of all, before and
/// after the training measurements, is the peak).
fn measure_peak(duration: Duration) -> [f64; 2] {
    let mut best = [0.0f64; 2];
    for _ in 0..5 {
        for (b, split) in best.iter_mut().zip([true, false]) {
            *b = b.max(bench::matmul_peak(2048, duration / 10, split));
        }
    }
    best
}

/// Training throughput of every shape, with and without GRAPES. Rounds alternate between the
/// two methods and each method's median round is kept, so that drifts of the machine's speed
/// hit both alike; GRAPES's cost is the median of the paired rounds' ratios, which cancels
/// drifts slower than a round. Returns the medians (method pairs in order) and the overheads
/// in percent, one per shape.
fn training_rounds(
    which: BenchModelsArg,
    duration: Duration,
) -> Result<(Vec<TrainMeasurement>, Vec<f64>)> {
    let device = candle_core::Device::Cpu;
    let mut by_config = Vec::new();
    let mut overheads = Vec::new();
    for (model, batch) in models(which) {
        let mut rounds: [Vec<TrainMeasurement>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            for (k, grapes) in [GrapesMode::Off, GrapesMode::Propagating]
                .into_iter()
                .enumerate()
            {
                rounds[k].push(bench::train_throughput(
                    &model,
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
    Ok((by_config, overheads))
}

/// Prints the peak measured before and after training (the portable kernels, which training
/// uses, and the `gemm` crate for reference) beside the machine's theoretical FMA peak; returns
/// the portable kernels' peak.
fn report_peak(
    out: &Output,
    threads: usize,
    before: [f64; 2],
    after: [f64; 2],
    fma: Option<&bench::FmaPeak>,
) -> Result<f64, super::StdoutError> {
    let [portable, gemm_crate] = [0, 1].map(|i| before[i].max(after[i]));
    let isa = Isa::detected();
    let of_fma = fma.map(|f| 100.0 * portable / f.gflop_per_s);
    out.emit(
        serde_json::json!({"kind": "matmul_peak", "n": 2048, "threads": threads,
            "kernel_isa": isa.name(), "gflop_per_s": portable,
            "gemm_crate_gflop_per_s": gemm_crate,
            "before_gflop_per_s": before[0], "after_gflop_per_s": after[0],
            "fma_peak": fma, "percent_of_fma_peak": of_fma}),
        format!(
            "matmul 2048×2048×2048, {threads} threads, best of 10 before and after training: \
             portable kernels ({isa}) {portable:.1} GFLOP/s, the reference for \"% peak\" \
             (before {:.1}, after {:.1}); the gemm crate (candle's matmul) {gemm_crate:.1}\n\
             theoretical FMA peak: {}{}\n",
            before[0],
            after[0],
            fma.map_or("unknown (no clock in /proc/cpuinfo)".into(), |f| f
                .derivation()),
            of_fma.map_or(String::new(), |p| format!(
                "; the portable kernels reach {p:.0}% of it"
            )),
        ),
    )?;
    Ok(portable)
}

/// Prints the training measurements (with their share of the peak) and GRAPES's overhead.
fn report_training(
    out: &Output,
    by_config: &[TrainMeasurement],
    overheads: &[f64],
    peak: f64,
    fma: Option<&bench::FmaPeak>,
) -> Result<()> {
    if !out.json {
        say!(
            "{:<16} {:>5} {:<11} {:>7} {:>12} {:>11} {:>10} {:>8}",
            "model",
            "batch",
            "method",
            "threads",
            "samples/s",
            "FLOP/sample",
            "GFLOP/s",
            "% peak"
        );
    }
    for m in by_config {
        let mut json = serde_json::to_value(m)?;
        json["kind"] = "train".into();
        json["percent_of_peak"] = (100.0 * m.gflop_per_s / peak).into();
        json["kernel_isa"] = Isa::detected().name().into();
        if let Some(fma) = fma.filter(|f| f.cores == m.threads) {
            json["percent_of_fma_peak"] = (100.0 * m.gflop_per_s / fma.gflop_per_s).into();
        }
        out.emit(
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
        )?;
    }
    for (pair, &overhead) in by_config.chunks(2).zip(overheads) {
        out.emit(
            serde_json::json!({"kind": "grapes_overhead", "model": pair[0].model, "batch": pair[0].batch, "percent": overhead}),
            format!(
                "GRAPES costs {overhead:.1}% on {} at batch {}",
                pair[0].model, pair[0].batch
            ),
        )?;
    }
    Ok(())
}

/// Rounds of the strategy measurements; each strategy's median round is reported.
const STRATEGY_ROUNDS: usize = 3;

/// Each strategy's seconds per training step relative to fine-tuning's, at the two MLP shapes
/// of the baselines, beside its FLOP ratio. Every round trains each strategy once, in turn (the
/// machine's drifts hit all alike); a strategy's ratio is the median over rounds of its time
/// over fine-tuning's time in the same round.
fn strategy_costs(out: &Output, duration: Duration) -> Result<()> {
    let device = candle_core::Device::Cpu;
    let stream = bench::two_task_stream()?;
    if !out.json {
        say!(
            "{:<16} {:>5} {:<11} {:>7} {:>9} {:>13} {:>10} {:>11}",
            "model",
            "batch",
            "strategy",
            "threads",
            "ms/step",
            "× fine-tuning",
            "FLOP ratio",
            "× its FLOP"
        );
    }
    for (model, batch) in [
        (BenchModel::mlp(&[1000, 1000]), 128),
        (BenchModel::mlp(&[256, 256]), 64),
    ] {
        // Steps per task so that one round of all strategies takes about `duration`.
        let probe = bench::strategy_step_seconds(
            &model,
            batch,
            bench::BENCH_STRATEGIES[0],
            10,
            &stream,
            &device,
        )?;
        // Each strategy is timed right after a fine-tuning run of its own, and compared with
        // it: this host's speed drifts by tens of percent within a minute, so a ratio to a
        // fine-tuning run measured a whole round earlier drifted with it.
        let others = bench::BENCH_STRATEGIES.len() - 1;
        let per_round = duration.as_secs_f64() / STRATEGY_ROUNDS as f64;
        let steps = ((per_round / (2 * others) as f64 / probe) as usize).clamp(20, 5000);
        let mut seconds = vec![Vec::new(); bench::BENCH_STRATEGIES.len()];
        let mut ratios = vec![Vec::new(); bench::BENCH_STRATEGIES.len()];
        let time =
            |s: &str| bench::strategy_step_seconds(&model, batch, s, steps, &stream, &device);
        for _ in 0..STRATEGY_ROUNDS {
            for (k, block) in bench::BENCH_STRATEGIES.iter().enumerate().skip(1) {
                let finetune = time(bench::BENCH_STRATEGIES[0])?;
                let t = time(block)?;
                seconds[0].push(finetune);
                ratios[0].push(1.0);
                seconds[k].push(t);
                ratios[k].push(t / finetune);
            }
        }
        for (k, block) in bench::BENCH_STRATEGIES.iter().enumerate() {
            let strategy = block
                .trim_start_matches("{name: ")
                .split([',', '}'])
                .next()
                .unwrap_or(block)
                .to_string();
            let m = bench::StrategyMeasurement {
                model: model.name.clone(),
                batch,
                flop_ratio: bench::flop_ratio(&model, &strategy),
                strategy,
                threads: rayon::current_num_threads(),
                seconds_per_step: median(&mut seconds[k]),
                relative: median(&mut ratios[k]),
            };
            let mut json = serde_json::to_value(&m)?;
            json["kind"] = "strategy".into();
            json["steps"] = steps.into();
            json["relative_to_flop_ratio"] = (m.relative / m.flop_ratio).into();
            out.emit(
                json,
                format!(
                    "{:<16} {:>5} {:<11} {:>7} {:>9.2} {:>12.2}× {:>10.2} {:>10.2}×",
                    m.model,
                    m.batch,
                    m.strategy,
                    m.threads,
                    1e3 * m.seconds_per_step,
                    m.relative,
                    m.flop_ratio,
                    m.relative / m.flop_ratio
                ),
            )?;
        }
    }
    Ok(())
}

/// The median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Forward-only throughput at batch 1000 (evaluation).
fn evaluation(
    out: &Output,
    which: BenchModelsArg,
    threads: usize,
    duration: Duration,
) -> Result<()> {
    let device = candle_core::Device::Cpu;
    let mut done: Vec<String> = Vec::new();
    for (model, _) in models(which) {
        if done.contains(&model.name) {
            continue; // one model at two training batches: evaluated once
        }
        done.push(model.name.clone());
        let batch = 1000;
        let sps = bench::eval_throughput(&model, batch, duration, &device)?;
        out.emit(
            serde_json::json!({"kind": "eval", "model": model.name, "batch": batch, "threads": threads, "samples_per_s": sps}),
            format!(
                "evaluation {} at batch {batch}: {sps:.0} samples/s",
                model.name
            ),
        )?;
    }
    Ok(())
}

/// One single-threaded run, then two at once, each on a pool of its own (as `--jobs 2`).
fn parallel_scaling(out: &Output, duration: Duration) -> Result<()> {
    let single = || -> Result<f64> {
        let pool = thread_pool(1)?;
        let m = run_on(&pool, || {
            bench::train_throughput(
                &BenchModel::mlp(&[256, 256]),
                64,
                GrapesMode::Off,
                20,
                duration,
                &candle_core::Device::Cpu,
            )
        })?;
        Ok(m.samples_per_s)
    };
    let one = single()?;
    let two: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2).map(|_| s.spawn(single)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect::<Result<Vec<f64>>>()
    })?;
    let total: f64 = two.iter().sum();
    out.emit(
        serde_json::json!({"kind": "parallel", "model": "784-256-256-10", "batch": 64, "one_run_samples_per_s": one, "two_runs_samples_per_s": total, "scaling": total / one}),
        format!("two single-threaded runs at once: {total:.0} samples/s in all, {:.2}× one run ({one:.0})", total / one),
    )?;
    Ok(())
}

/// The peak resident memory of one seed of the paper protocol, trained by a child process.
fn peak_rss(out: &Output, threads: usize) -> Result<()> {
    const CONFIG: &str = "configs/paper-forgetting.yaml";
    if !Path::new(CONFIG).is_file() {
        tracing::warn!("{CONFIG} not found here: peak RSS not measured");
        return Ok(());
    }
    let dir = super::Scratch::new("clbench-bench-rss")?;
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(["run", CONFIG, "--seeds", "1234", "--out"])
        .arg(dir.path())
        .args(["-q", "--threads", &threads.to_string()])
        .stdout(std::process::Stdio::null())
        .status()?;
    drop(dir);
    let rss = bench::children_peak_rss_mb().unwrap_or(f64::NAN);
    out.emit(
        serde_json::json!({"kind": "peak_rss", "config": CONFIG, "seeds": [1234], "ok": status.success(), "peak_rss_mb": rss}),
        format!("peak RSS of {CONFIG} (seed 1234, both methods): {rss:.0} MB"),
    )?;
    Ok(())
}

/// `clbench platform`: this machine and build as a run on the portable path records them.
pub(crate) fn platform_command(args: PlatformArgs) -> Result<ExitCode> {
    let p = Platform::current(KernelPath::Portable, "cpu", 1);
    if args.short {
        say!(
            "{} · kernels {} · clbench {} ({}) · {} · {}",
            p.cpu,
            p.kernel_isa,
            p.clbench_version,
            p.git_commit,
            p.target,
            p.rustc
        );
    } else {
        let mut value = serde_json::to_value(&p)?;
        if let Some(o) = value.as_object_mut() {
            o.remove("kernel_path");
            o.remove("device");
            o.remove("threads");
            o.insert(
                "kernels_available".into(),
                Isa::available().iter().map(|i| i.name()).collect(),
            );
        }
        say!("{}", serde_json::to_string_pretty(&value)?);
    }
    Ok(ExitCode::SUCCESS)
}
