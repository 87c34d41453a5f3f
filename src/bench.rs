//! Throughput measurements for `clbench bench`: training and evaluation samples per second of
//! the reference MLPs and CNNs, the machine's matrix-product peak, and parallel scaling.
//!
//! Everything here measures the same code paths that `clbench run` uses (the engine of
//! [`crate::engine`] and the optimizers of [`crate::optim`]); only the data is random
//! MNIST-shaped tensors made once, so that the numbers compare with the PyTorch reference in
//! `bench/torch_reference.py`.

use std::time::{Duration, Instant};

use candle_core::{Device, Result};
use serde::Serialize;

use crate::data::IMAGE_PIXELS;
use crate::engine::{engine_for, kernels, BackwardPath, Objective};
use crate::models::loss::Targets;
use crate::models::{ModelConfig, ModelKind, ModelSpec, Network};
use crate::optim::{GrapesMode, OptimizerSettings};
use crate::rng::SeedRng;
use crate::streams::OutputLayout;

/// One training-throughput measurement.
#[derive(Debug, Clone, Serialize)]
pub struct TrainMeasurement {
    /// [`BenchModel::name`]: `784-256-256-10`, `cnn-8-16-128`.
    pub model: String,
    /// Batch size.
    pub batch: usize,
    /// `sgd` or `sgd+grapes` (SGD with momentum, ± propagating GRAPES).
    pub method: String,
    /// CPU threads of the matrix products.
    pub threads: usize,
    /// Training samples per second after the warm-up: the median over [`WINDOW_PARTS`] equal
    /// parts of the measuring window.
    pub samples_per_s: f64,
    /// Multiply-adds ×2 per training sample (forward, and the backward products that are needed).
    pub flop_per_sample: f64,
    /// samples_per_s × flop_per_sample / 1e9.
    pub gflop_per_s: f64,
}

/// A model that `clbench bench` measures, with its name and training FLOP per sample.
#[derive(Debug, Clone)]
pub struct BenchModel {
    /// `784-256-256-10` for an MLP, `cnn-8-16-128` for a CNN (channels, then hidden widths).
    pub name: String,
    /// The model.
    pub spec: ModelSpec,
    /// Training FLOP per sample ([`mlp_training_flop`], [`cnn_training_flop`]).
    pub flop_per_sample: f64,
    /// Forward-pass FLOP per sample (2 per multiply-add), the part of
    /// [`BenchModel::flop_per_sample`] that a teacher's forward pass costs.
    pub forward_flop_per_sample: f64,
}

impl BenchModel {
    /// An MLP with these hidden widths (ReLU, biases, 10 outputs).
    pub fn mlp(hidden: &[usize]) -> BenchModel {
        BenchModel {
            name: model_name(hidden),
            spec: ModelSpec::mlp(hidden),
            flop_per_sample: mlp_training_flop(hidden),
            forward_flop_per_sample: forward_flop(&mlp_layers(hidden)),
        }
    }

    /// The CNN `clbench` ships with these channels, 5×5 kernels and one hidden layer of
    /// `hidden` units (ReLU, biases, 10 outputs).
    pub fn cnn(channels: [usize; 2], hidden: usize) -> BenchModel {
        let cfg = ModelConfig {
            kind: ModelKind::Cnn,
            hidden: Some(vec![hidden]),
            channels: Some(channels),
            kernel: Some(5),
            ..ModelConfig::mlp(&[hidden])
        };
        let spec = cfg
            .check()
            .unwrap_or_else(|e| panic!("BenchModel::cnn({channels:?}, {hidden}): {e}"));
        BenchModel {
            name: format!("cnn-{}-{}-{hidden}", channels[0], channels[1]),
            flop_per_sample: cnn_training_flop(&spec),
            forward_flop_per_sample: forward_flop(&cnn_layers(&spec)),
            spec,
        }
    }
}

/// The model's name, `784-h1-...-10`.
pub fn model_name(hidden: &[usize]) -> String {
    let mut parts = vec![IMAGE_PIXELS.to_string()];
    parts.extend(hidden.iter().map(usize::to_string));
    parts.push("10".into());
    parts.join("-")
}

/// Training FLOP of layers with these forward multiply-adds per sample, input layer first:
/// 2 per multiply-add forward, the same again for every weight gradient, and again for the error
/// passed down (not needed below the first layer).
fn training_flop(layers: &[f64]) -> f64 {
    let forward = forward_flop(layers);
    let weight_grads = forward;
    let input_grads = forward - 2.0 * layers[0];
    forward + weight_grads + input_grads
}

/// Forward FLOP of layers with these multiply-adds per sample: 2 per multiply-add.
fn forward_flop(layers: &[f64]) -> f64 {
    layers.iter().map(|m| 2.0 * m).sum()
}

/// The multiply-adds per sample of an MLP's layers, input layer first.
fn mlp_layers(hidden: &[usize]) -> Vec<f64> {
    let mut widths = vec![IMAGE_PIXELS];
    widths.extend_from_slice(hidden);
    widths.push(10);
    widths.windows(2).map(|w| (w[0] * w[1]) as f64).collect()
}

/// FLOP per training sample of an MLP: 2·(in·out) per layer forward, the same again for every
/// weight gradient, and again for the error passed down (not needed below the first layer).
pub fn mlp_training_flop(hidden: &[usize]) -> f64 {
    training_flop(&mlp_layers(hidden))
}

/// FLOP per training sample of a CNN, counted as [`mlp_training_flop`] counts an MLP's: a
/// convolution's multiply-adds are `c_out · c_in · k² · s²` (`s` the side of its output), a
/// linear layer's `in · out`; pooling and activations are not counted.
pub fn cnn_training_flop(spec: &ModelSpec) -> f64 {
    training_flop(&cnn_layers(spec))
}

/// The multiply-adds per sample of a CNN's layers (convolutions, then linear layers).
fn cnn_layers(spec: &ModelSpec) -> Vec<f64> {
    let mut layers = Vec::new();
    let mut width = IMAGE_PIXELS;
    if let Some(conv) = spec.conv() {
        let (mut side, mut c_in) = (crate::data::IMAGE_SIDE, 1);
        for c_out in conv.channels {
            let s = side - conv.kernel + 1;
            layers.push((c_out * c_in * conv.kernel * conv.kernel * s * s) as f64);
            side = s / 2;
            c_in = c_out;
        }
        width = c_in * side * side;
    }
    for &h in spec.hidden() {
        layers.push((width * h) as f64);
        width = h;
    }
    layers.push((width * 10) as f64);
    layers
}

/// `count` batches of random MNIST-shaped pixels and labels, the same every time.
fn random_batches(batch: usize, count: usize) -> Result<Vec<(Vec<f32>, Vec<u32>)>> {
    let mut rng = SeedRng::derive(0, "bench-data", 0);
    Ok((0..count)
        .map(|_| {
            let x: Vec<f32> = (0..batch * IMAGE_PIXELS)
                .map(|_| rng.uniform_f32(0.0, 1.0))
                .collect();
            let t: Vec<u32> = (0..batch).map(|_| rng.below(10) as u32).collect();
            (x, t)
        })
        .collect())
}

/// A training throughput is measured in this many equal parts of its window, and reported as
/// the parts' median rate: a burst of a shared host's drift inside one part (this project's
/// virtual machines slow down by a third for seconds at a time) does not move it, where it
/// moved a rate over the whole window. `bench/torch_reference.py` measures PyTorch the same way.
pub const WINDOW_PARTS: usize = 5;

/// Trains `model` with SGD (lr 0.01, momentum 0.9), ± propagating GRAPES, on random data:
/// `warmup` steps, then as many steps as fit in `duration`, through the engine `clbench run`
/// uses (the fused step on CPU) and as its trainer takes a fine-tuning step, with the pool's
/// threads polling for work on the CPU as in a task of `clbench run`; the rate is the median
/// of [`WINDOW_PARTS`] equal parts of `duration`.
/// Runs on the current rayon pool (see [`crate::engine::kernels::run_on`]).
pub fn train_throughput(
    model: &BenchModel,
    batch: usize,
    grapes: GrapesMode,
    warmup: usize,
    duration: Duration,
    device: &Device,
) -> Result<TrainMeasurement> {
    let net = Network::new(
        &model.spec,
        &OutputLayout::Shared { outputs: 10 },
        &mut SeedRng::derive(0, "init", 0),
        device,
    )?;
    let mut optimizer = OptimizerSettings::sgd_momentum(0.01, 0.9).build();
    let mut engine = engine_for(&net, BackwardPath::Auto, device)?;
    let data = random_batches(batch, 8)?;
    // A fine-tuning step as the trainer takes it (`Engine::accumulate_and_apply`: on the fused
    // MLP, the update applied inside the backward pass).
    let mut step = |i: usize| -> Result<()> {
        let (x, t) = &data[i % data.len()];
        let objective = [Objective {
            targets: Targets::Hard(t),
            head: 0,
            range: None,
            weight: 1.0,
        }];
        engine.accumulate_and_apply(x, &objective, grapes, optimizer.as_mut(), None)?;
        Ok(())
    };
    // As the trainer runs a task's steps: on the CPU, the pool's other threads polling for
    // the products' shares (see `with_threads_polling`).
    let mut rates = crate::engine::kernels::with_threads_polling_if(device.is_cpu(), || {
        for i in 0..warmup {
            step(i)?;
        }
        let part = duration / WINDOW_PARTS as u32;
        let mut done = 0;
        let mut rates = Vec::with_capacity(WINDOW_PARTS);
        for _ in 0..WINDOW_PARTS {
            let started = Instant::now();
            let mut steps = 0;
            while started.elapsed() < part || steps < 2 {
                step(done + steps)?;
                steps += 1;
            }
            rates.push((steps * batch) as f64 / started.elapsed().as_secs_f64());
            done += steps;
        }
        Ok::<_, candle_core::Error>(rates)
    })?;
    rates.sort_by(f64::total_cmp);
    let samples_per_s = rates[WINDOW_PARTS / 2];
    let flop = model.flop_per_sample;
    Ok(TrainMeasurement {
        model: model.name.clone(),
        batch,
        method: if grapes.is_on() {
            "sgd+grapes".into()
        } else {
            "sgd".into()
        },
        threads: rayon::current_num_threads(),
        samples_per_s,
        flop_per_sample: flop,
        gflop_per_s: samples_per_s * flop / 1e9,
    })
}

/// The strategies `clbench bench --strategies` measures, as a config's `strategy` block writes
/// them: those of `configs/permuted-mnist-10-baselines.yaml` (the joint bound aside: its step
/// is fine-tuning's), with importance estimates from 200 examples (they run between tasks and
/// are not timed).
pub const BENCH_STRATEGIES: [&str; 8] = [
    "{name: finetune}",
    "{name: ewc, lambda: 100, fisher: exact, samples: 200}",
    "{name: online-ewc, lambda: 100, gamma: 1.0, fisher: exact, samples: 200}",
    "{name: si, c: 10, xi: 0.1}",
    "{name: mas, lambda: 0.01, samples: 200}",
    "{name: replay, budget: 10, per: class}",
    "{name: agem, budget: 10, per: class}",
    "{name: lwf, temperature: 2.0}",
];

/// One strategy's cost per training step.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyMeasurement {
    /// [`BenchModel::name`].
    pub model: String,
    /// Batch size.
    pub batch: usize,
    /// The strategy's config name (`finetune`, `ewc`, …).
    pub strategy: String,
    /// CPU threads of the matrix products.
    pub threads: usize,
    /// Seconds per step (median round).
    pub seconds_per_step: f64,
    /// Seconds per step relative to fine-tuning's in the same round (median over rounds).
    pub relative: f64,
    /// The step's FLOP relative to fine-tuning's ([`flop_ratio`]).
    pub flop_ratio: f64,
}

/// The FLOP of a training step of `strategy` (a config name) relative to fine-tuning's: 1 for
/// the penalties (their elementwise work is not counted), 2 for replay and A-GEM (a second
/// batch, from the memory, forward and backward), 1 + forward / training FLOP for LwF (the
/// teacher's forward pass; the distillation's error joins the labels' in the student's one
/// backward pass).
pub fn flop_ratio(model: &BenchModel, strategy: &str) -> f64 {
    match strategy {
        "replay" | "agem" => 2.0,
        "lwf" => 1.0 + model.forward_flop_per_sample / model.flop_per_sample,
        _ => 1.0,
    }
}

/// Permuted MNIST with two tasks (the shipped MNIST files), as `clbench bench --strategies`
/// trains it.
pub fn two_task_stream(
) -> std::result::Result<crate::streams::TaskStream, crate::streams::StreamError> {
    let path = std::path::PathBuf::from("<clbench bench --strategies>");
    let spec = crate::streams::StreamSpec::from_yaml(
        "name: permuted-mnist-2\ndataset: mnist\nkind: permuted\nscenario: domain-incremental\ntasks: 2\n",
        &path,
    )?;
    crate::streams::TaskStream::build(&crate::streams::StreamFile { path, spec }, 0)
}

/// Seconds per training step of `strategy` (a config block, e.g. `{name: lwf}`) with Adam
/// (lr 1e-4), measured on the second task of `stream` after `steps` steps of the first (so that
/// its memory, anchors or teacher exist), `steps` steps of batch `batch`, seed 0, through the
/// trainer `clbench run` uses. Only the steps are timed (the trainer's own per-task clock), not
/// evaluation or importance estimates.
pub fn strategy_step_seconds(
    model: &BenchModel,
    batch: usize,
    strategy: &str,
    steps: usize,
    stream: &crate::streams::TaskStream,
    device: &Device,
) -> Result<f64> {
    use crate::train::{train_sequence, Budget, Method, Silent, TrainSettings};
    let checked = |e: crate::validate::KeyError| candle_core::Error::msg(e.to_string());
    let block: crate::strategy::StrategyConfig =
        serde_yaml::from_str(strategy).map_err(candle_core::Error::msg)?;
    let method = Method {
        name: block.name().to_string(),
        optimizer: OptimizerSettings::adam(1e-4),
        grapes: GrapesMode::Off,
        strategy: block.check().map_err(checked)?,
    };
    let settings = TrainSettings {
        batch_size: batch,
        budget: Budget::Iterations(steps),
        eval_batch_size: 1000,
        eval_every: None,
        reset_optimizer: false,
        lr_decay: None,
        backward: BackwardPath::Auto,
    };
    let record = train_sequence(stream, &model.spec, &method, &settings, 0, device, &Silent)?;
    let task = record
        .tasks
        .get(1)
        .ok_or_else(|| candle_core::Error::msg(format!("{strategy}: the run diverged")))?;
    Ok(task.train_seconds / task.steps.max(1) as f64)
}

/// Forward-only samples per second of `model` at batch `batch`, as evaluation computes them.
pub fn eval_throughput(
    model: &BenchModel,
    batch: usize,
    duration: Duration,
    device: &Device,
) -> Result<f64> {
    let net = Network::new(
        &model.spec,
        &OutputLayout::Shared { outputs: 10 },
        &mut SeedRng::derive(0, "init", 0),
        device,
    )?;
    // Evaluation's own path: the engine's logits, scored on the host.
    let mut engine = engine_for(&net, BackwardPath::Auto, device)?;
    let data = random_batches(batch, 2)?;
    let range = 0..10;
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < duration || n < 3 {
        let (x, targets) = &data[n % 2];
        let logits = engine.logits(None, x, 0)?;
        for (z, &t) in logits.chunks_exact(10).zip(targets) {
            std::hint::black_box(crate::models::loss::score_row(z, &range, t as usize));
        }
        n += 1;
    }
    Ok((n * batch) as f64 / started.elapsed().as_secs_f64())
}

/// GFLOP/s of repeated `n × n` by `n × n` f32 matrix products on preallocated buffers: by the
/// portable kernels the fused training step uses, split between threads as it does
/// (`portable`), or by the `gemm` crate (candle's CPU matmul) with its own threading.
pub fn matmul_peak(n: usize, duration: Duration, portable: bool) -> f64 {
    let mut rng = SeedRng::derive(0, "bench-matmul", 0);
    let a: Vec<f32> = (0..n * n).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
    let b: Vec<f32> = (0..n * n).map(|_| rng.uniform_f32(-1.0, 1.0)).collect();
    let mut c = vec![0f32; n * n];
    let par = kernels::threads();
    let product = |c: &mut [f32]| {
        if portable {
            kernels::mm(n, n, n, c, &a, false, &b, false, false, par);
        } else {
            kernels::mm_gemm_crate(n, n, n, c, &a, &b, par);
        }
    };
    product(&mut c);
    let started = Instant::now();
    let mut k = 0;
    while started.elapsed() < duration || k < 2 {
        product(&mut c);
        k += 1;
    }
    2.0 * (n * n * n) as f64 * k as f64 / started.elapsed().as_secs_f64() / 1e9
}

/// The machine's theoretical `f32` FMA peak on `threads` cores, with how it was derived.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FmaPeak {
    /// Cores counted (the threads, at most the cores available).
    pub cores: usize,
    /// Clock in GHz while busy: measured ([`measured_clock_ghz`]) where possible, else the
    /// highest `cpu MHz` of `/proc/cpuinfo`.
    pub ghz: f64,
    /// How the clock was found: `measured` or `nominal`.
    pub clock: &'static str,
    /// The highest `cpu MHz` of `/proc/cpuinfo`, in GHz (a virtual machine reports its nominal
    /// clock there), when known.
    pub nominal_ghz: Option<f64>,
    /// Vector FMAs of the kernels' width each core starts per cycle ([`vector_fmas_per_cycle`]):
    /// 2 on most AVX2 and AVX-512 server cores, 1 for AVX-512 on AMD Zen 4.
    pub fma_units: usize,
    /// Where `fma_units` comes from, for the derivation line.
    pub fma_source: &'static str,
    /// `f32` lanes of the kernels' vectors (16 AVX-512, 8 AVX2, 1 scalar).
    pub lanes: usize,
    /// `cores × ghz × fma_units × lanes × 2` (an FMA is two FLOPs).
    pub gflop_per_s: f64,
}

impl FmaPeak {
    /// The peak for `threads` threads on this machine; `None` when the clock is unknown.
    pub fn of(threads: usize) -> Option<FmaPeak> {
        let nominal_ghz = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .map(|info| {
                info.lines()
                    .filter(|l| l.starts_with("cpu MHz"))
                    .filter_map(|l| l.split_once(':')?.1.trim().parse::<f64>().ok())
                    .fold(0.0f64, f64::max)
                    / 1000.0
            })
            .filter(|&g| g > 0.0);
        let (ghz, clock) = match measured_clock_ghz() {
            Some(g) => (g, "measured"),
            None => (nominal_ghz?, "nominal"),
        };
        let available = std::thread::available_parallelism().map_or(1, usize::from);
        let cores = threads.clamp(1, available);
        let isa = crate::engine::kernels::Isa::detected();
        let lanes = isa.lanes();
        let (fma_units, fma_source) = vector_fmas_per_cycle(isa);
        Some(FmaPeak {
            cores,
            ghz,
            clock,
            nominal_ghz,
            fma_units,
            fma_source,
            lanes,
            gflop_per_s: cores as f64 * ghz * fma_units as f64 * lanes as f64 * 2.0,
        })
    }

    /// `2 cores × 3.70 GHz (measured; 2.60 nominal) × 2 FMA/cycle (assumed) × 16 lanes × 2 FLOP
    /// = 473.6 GFLOP/s`.
    pub fn derivation(&self) -> String {
        let nominal = match (self.clock, self.nominal_ghz) {
            ("measured", Some(n)) => format!("; {n:.2} nominal"),
            _ => String::new(),
        };
        format!(
            "{} cores × {:.2} GHz ({}{nominal}) × {} FMA/cycle ({}) × {} lanes × 2 FLOP = \
             {:.1} GFLOP/s",
            self.cores,
            self.ghz,
            self.clock,
            self.fma_units,
            self.fma_source,
            self.lanes,
            self.gflop_per_s
        )
    }
}

/// Vector FMAs of `isa`'s width one core starts per cycle, and why: AMD's family 19h cores
/// (Zen 3 and Zen 4) have two 256-bit FMA pipes, and Zen 4 runs each 512-bit FMA on both, so
/// AVX-512 starts one per cycle there (the same FLOPs as AVX2's two); every other AVX2 or
/// AVX-512 core is assumed to have two (Intel since Haswell, Zen 2, Zen 5; a few low-end
/// AVX-512 Xeons have one). The scalar kernel: 2, one per pipe.
pub fn vector_fmas_per_cycle(isa: crate::engine::kernels::Isa) -> (usize, &'static str) {
    use crate::engine::kernels::Isa;
    #[cfg(target_arch = "x86_64")]
    {
        if isa == Isa::Avx512 && amd_family() == Some(0x19) {
            return (1, "Zen 4: 512-bit FMAs on two 256-bit pipes");
        }
    }
    let _ = isa;
    (2, "assumed")
}

/// The CPU family of an AMD processor (base family plus extended family, from CPUID leaf 1);
/// `None` for other vendors.
#[cfg(target_arch = "x86_64")]
fn amd_family() -> Option<u32> {
    use std::arch::x86_64::__cpuid;
    // CPUID exists on every x86-64 processor; leaves 0 and 1 always exist.
    let (vendor, leaf1) = (__cpuid(0), __cpuid(1));
    let mut name = Vec::with_capacity(12);
    for r in [vendor.ebx, vendor.edx, vendor.ecx] {
        name.extend_from_slice(&r.to_le_bytes());
    }
    if name != b"AuthenticAMD" {
        return None;
    }
    let base = (leaf1.eax >> 8) & 0xF;
    let extended = (leaf1.eax >> 20) & 0xFF;
    Some(if base == 0xF { base + extended } else { base })
}

/// One core's clock while busy, in GHz: the best of three timings of a chain of dependent
/// register-to-register integer additions, which every x86-64 core retires at one per cycle
/// (turbo included, which the nominal clock of `/proc/cpuinfo` leaves out). `None` on other
/// architectures.
///
/// The added value is a register, not an immediate: Intel's cores since Golden Cove (Alder
/// Lake, Sapphire and Emerald Rapids) fold additions of small immediates at register renaming,
/// so a chain of `add x, 1` ran at about four per cycle there (11.9 "GHz" on a Xeon of model
/// 207 whose dependent `imul`s, three cycles each, timed 2.97 GHz).
pub fn measured_clock_ghz() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        const ITERATIONS: u64 = 25_000_000;
        let mut best = 0.0f64;
        for _ in 0..3 {
            let started = Instant::now();
            let (mut x, mut n, one) = (0u64, ITERATIONS, 1u64);
            // SAFETY: register arithmetic only: no memory, no stack, flags clobbered (the
            // default for `asm!`).
            unsafe {
                std::arch::asm!(
                    "2:",
                    "add {x}, {one}", "add {x}, {one}", "add {x}, {one}", "add {x}, {one}",
                    "add {x}, {one}", "add {x}, {one}", "add {x}, {one}", "add {x}, {one}",
                    "sub {n}, 1",
                    "jnz 2b",
                    x = inout(reg) x,
                    n = inout(reg) n,
                    one = in(reg) one,
                    options(nomem, nostack),
                );
            }
            std::hint::black_box((x, n));
            let cycles = (8 * ITERATIONS) as f64;
            best = best.max(cycles / started.elapsed().as_secs_f64() / 1e9);
        }
        Some(best)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// Peak resident set size of finished child processes, in MB (Linux `getrusage`).
pub fn children_peak_rss_mb() -> Option<f64> {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    (rc == 0).then(|| usage.ru_maxrss as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The FLOP counts `bench/torch_reference.py` also prints (its `flop_per_sample` and
    /// `cnn_flop_per_sample`), so the two programs' GFLOP/s compare.
    #[test]
    fn flop_counts_match_the_pytorch_reference() {
        assert_eq!(mlp_training_flop(&[256, 256]), 1_211_392.0);
        assert_eq!(BenchModel::mlp(&[1000, 1000]).flop_per_sample, 9_196_000.0);
        // conv1 8·1·25·24² + conv2 16·8·25·8² + 256·128 + 128·10 multiply-adds forward.
        assert_eq!(BenchModel::cnn([8, 16], 128).flop_per_sample, 1_893_888.0);
        assert_eq!(BenchModel::cnn([16, 32], 128).flop_per_sample, 6_237_696.0);
    }
}
