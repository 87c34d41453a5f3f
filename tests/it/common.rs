//! Helpers shared by the integration tests: the repository, the `clbench` binary, the shipped
//! streams, and methods and settings built the way a config builds them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::Device;
use clbench::engine::BackwardPath;
use clbench::optim::OptimizerConfig;
use clbench::strategy::StrategyConfig;
use clbench::streams::{StreamSpec, TaskStream};
use clbench::train::{Budget, Method, TrainSettings};

/// Every test computes on the CPU.
pub const DEV: Device = Device::Cpu;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tasks/`.
pub fn tasks_dir() -> PathBuf {
    repo().join("tasks")
}

/// Runs the `clbench` binary with `args` in `cwd`.
pub fn clbench_in(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clbench"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// Runs the `clbench` binary with `args` in the repository root.
pub fn clbench(args: &[&str]) -> Output {
    clbench_in(args, &repo())
}

/// Standard output, then standard error.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A shipped stream (`tasks/<name>`), built with `seed`.
pub fn stream(name: &str, seed: u64) -> TaskStream {
    let file = StreamSpec::load(&tasks_dir().join(name)).unwrap();
    TaskStream::build(&file, seed).unwrap()
}

/// An optimizer block as written in a config (`{name: sgd, lr: 0.1}`).
pub fn optimizer(yaml: &str) -> OptimizerConfig {
    serde_yaml::from_str(yaml).unwrap()
}

/// A method named `m` from an optimizer block and an optional strategy block, checked as a
/// config's method entry is.
pub fn method(optimizer_yaml: &str, strategy_yaml: Option<&str>) -> Method {
    let cfg = optimizer(optimizer_yaml);
    Method {
        name: "m".into(),
        optimizer: cfg.check().unwrap(),
        grapes: cfg.grapes,
        strategy: strategy_yaml.map_or_else(Default::default, |s| {
            serde_yaml::from_str::<StrategyConfig>(s)
                .unwrap()
                .check()
                .unwrap()
        }),
    }
}

/// `iterations` steps of `batch` examples per task, evaluation in batches of 2000.
pub fn settings(iterations: usize, batch: usize, backward: BackwardPath) -> TrainSettings {
    TrainSettings {
        batch_size: batch,
        budget: Budget::Iterations(iterations),
        eval_batch_size: 2000,
        eval_every: None,
        reset_optimizer: false,
        lr_decay: None,
        backward,
    }
}
