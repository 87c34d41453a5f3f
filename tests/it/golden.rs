//! Golden files: the same config and seed give the same bits on every machine.
//!
//! `tests/golden/golden.yaml` (three tasks of split MNIST, a tanh MLP with biases, SGD and Adam
//! ± GRAPES, EWC, replay, LwF) and `tests/golden/cnn.yaml` (the same tasks, a small CNN, SGD ±
//! both GRAPES variants, replay) and `tests/golden/regimes.yaml` (the same tasks padded and
//! standardized, dropout, Adagrad, L2, per-task learning-rate decay and optimizer reset) are
//! run by the binary, and each report's accuracy table (every
//! run's accuracy and test loss after every task, written with shortest round-trip floats) is
//! compared byte for byte with the committed `tests/golden/accuracy.csv`,
//! `tests/golden/cnn-accuracy.csv` and `tests/golden/regimes-accuracy.csv`. The fused steps' kernels are portable (see
//! `src/engine/kernels.rs`), so this holds on AVX-512, AVX2 and scalar machines alike: each
//! scenario runs on every kernel this CPU can run (`clbench run --kernels`), and each of those
//! runs must give the committed bytes. The SIMD kernels run every method; the scalar kernel
//! (`f32::mul_add`, a library call on plain x86-64: about 20 times slower) runs SGD + GRAPES
//! only, its rows compared. CI also runs a method of each under QEMU emulating a CPU without
//! AVX-512 (`scripts/cross-isa-check.sh`), where the kernels are chosen by detection rather than
//! by the flag.
//!
//! A change meant to change results regenerates the files:
//! `CLBENCH_BLESS=1 cargo test --test it golden` (written from the fastest kernels, then held
//! against the others), and says why in its commit.

use clbench::engine::kernels::Isa;

use crate::common::{clbench, repo, text};

#[test]
fn the_golden_scenario_gives_the_committed_bits() {
    golden("golden.yaml", "accuracy.csv");
}

#[test]
fn the_cnn_golden_scenario_gives_the_committed_bits() {
    golden("cnn.yaml", "cnn-accuracy.csv");
}

/// Dropout (its masks from the run's seed), Adagrad, the L2 strategy, per-task learning-rate
/// decay and optimizer reset, on a padded and standardized stream.
#[test]
fn the_training_regime_golden_scenario_gives_the_committed_bits() {
    golden("regimes.yaml", "regimes-accuracy.csv");
}

/// Runs `tests/golden/<config>` on every kernel this CPU runs and compares each accuracy table
/// with `tests/golden/<table>`.
fn golden(config: &str, table: &str) {
    let golden = repo().join("tests/golden").join(table);
    let config = format!("tests/golden/{config}");
    let bless = std::env::var_os("CLBENCH_BLESS").is_some();
    for (i, isa) in Isa::available().into_iter().enumerate() {
        let method = (isa == Isa::Scalar).then_some(SCALAR_METHOD);
        let got = run(&config, isa, method);
        if bless && i == 0 && method.is_none() {
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (create it with CLBENCH_BLESS=1 cargo test --test it golden)",
                golden.display()
            )
        });
        let want = match method {
            Some(m) => rows_of(&want, m),
            None => want,
        };
        assert!(
            want.lines().count() > 1,
            "{}: no rows of {method:?}",
            golden.display()
        );
        if got != want {
            let first = got
                .lines()
                .zip(want.lines())
                .position(|(g, w)| g != w)
                .unwrap_or(got.lines().count().min(want.lines().count()));
            panic!(
                "{config}: the accuracy table differs from {} at line {} \
                 (this machine: {}; kernels: {isa}):\n  got:  {}\n  want: {}",
                golden.display(),
                first + 1,
                clbench::platform::cpu_model(),
                got.lines().nth(first).unwrap_or("(end of file)"),
                want.lines().nth(first).unwrap_or("(end of file)"),
            );
        }
    }
}

/// The one method both golden scenarios run on the slow scalar kernel.
const SCALAR_METHOD: &str = "sgd+grapes";

/// The header and the rows of `method` (the third column) of an accuracy table.
fn rows_of(table: &str, method: &str) -> String {
    table
        .lines()
        .enumerate()
        .filter(|(i, line)| *i == 0 || line.split(',').nth(2) == Some(method))
        .map(|(_, line)| format!("{line}\n"))
        .collect()
}

/// Runs `config` (only `method`, when given) with `--kernels isa` into a fresh directory;
/// returns its accuracy table.
fn run(config: &str, isa: Isa, method: Option<&str>) -> String {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("golden");
    let mut args = vec![
        "run",
        config,
        "--out",
        dir.to_str().unwrap(),
        "--threads",
        "2",
        "--kernels",
        isa.name(),
        "--quiet",
    ];
    if let Some(m) = method {
        args.extend(["--methods", m]);
    }
    let o = clbench(&args);
    assert!(o.status.success(), "{config} --kernels {isa}: {}", text(&o));
    let platform = std::fs::read_to_string(
        std::fs::read_dir(dir.join("runs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path()
            .join("platform.json"),
    )
    .unwrap();
    assert!(
        platform.contains(&format!("\"kernel_isa\": \"{}\"", isa.name())),
        "{config} --kernels {isa}: platform.json does not record them:\n{platform}"
    );
    std::fs::read_to_string(dir.join("tables/accuracy.csv")).unwrap()
}
