//! Where a run ran: the machine, the build and the kernels, recorded beside every run
//! (`platform.json` in the run store) so that a table can say what made it.
//!
//! Runs on the portable fused path ([`KernelPath::Portable`]) give the same bits on every
//! machine (see [`crate::engine::kernels`]); runs through candle ([`KernelPath::Candle`]:
//! autograd, the explicit tensor backward, the CNN, any GPU) depend on the platform, and the
//! report warns when one group of results mixes such runs from different platforms
//! ([`Platform::fingerprint`]).

use serde::{Deserialize, Serialize};

use crate::engine::kernels::Isa;

/// Which code computed a run's products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelPath {
    /// The fused MLP step on its portable kernels: bit-identical on every machine.
    Portable,
    /// candle's kernels (autograd, tensor backward, CNN, GPU): bits depend on the platform.
    Candle,
}

impl KernelPath {
    /// `portable` or `candle`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelPath::Portable => "portable",
            KernelPath::Candle => "candle",
        }
    }
}

/// The machine, build and kernels of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// clbench's version.
    pub clbench_version: String,
    /// The git commit it was built from, `-dirty` when its sources differed from it
    /// (`unknown` outside a git checkout).
    pub git_commit: String,
    /// The compiler that built it.
    pub rustc: String,
    /// The target triple it was built for.
    pub target: String,
    /// The CPU's model name (`/proc/cpuinfo` on Linux; `unknown` elsewhere).
    pub cpu: String,
    /// The instruction set of the portable kernels on this CPU (`avx512f`, `avx2+fma`,
    /// `scalar`).
    pub kernel_isa: String,
    /// Which kernels computed the run.
    pub kernel_path: KernelPath,
    /// The device (`cpu`, `cuda:0`, …).
    pub device: String,
    /// Threads of the run's pool.
    pub threads: usize,
    /// The plugin methods the run used ([`crate::plugin`]), `"<kind> <name>"` → `"<crate>
    /// <version>"`; absent for built-in methods.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub plugins: std::collections::BTreeMap<String, String>,
}

impl Platform {
    /// This machine and build, for a run on `path` and `device` with `threads` threads.
    pub fn current(path: KernelPath, device: &str, threads: usize) -> Platform {
        Platform {
            clbench_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: env!("CLBENCH_GIT_COMMIT").into(),
            rustc: env!("CLBENCH_RUSTC_VERSION").into(),
            target: env!("CLBENCH_TARGET").into(),
            cpu: cpu_model(),
            kernel_isa: Isa::detected().name().into(),
            kernel_path: path,
            device: device.into(),
            threads,
            plugins: Default::default(),
        }
    }

    /// What decides a platform-dependent run's bits: `None` for portable runs (any machine
    /// gives the same), else the kernel path, device, CPU, target and compiler.
    pub fn fingerprint(&self) -> Option<String> {
        (self.kernel_path == KernelPath::Candle).then(|| {
            format!(
                "candle on {} ({}, {}, {})",
                self.device, self.cpu, self.target, self.rustc
            )
        })
    }
}

/// The CPU's model name, read once.
pub fn cpu_model() -> String {
    static MODEL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|info| {
                    info.lines()
                        .find(|l| l.starts_with("model name"))
                        .and_then(|l| l.split_once(':'))
                        .map(|(_, v)| v.trim().to_string())
                })
                .unwrap_or_else(|| "unknown".into())
        })
        .clone()
}
