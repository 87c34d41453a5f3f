//! Golden files: the same config and seed give the same bits on every machine.
//!
//! `tests/golden/golden.yaml` (three tasks of split MNIST, a tanh MLP with biases, SGD and Adam
//! ± GRAPES, EWC, replay, LwF) and `tests/golden/cnn.yaml` (the same tasks, a small CNN, SGD ±
//! both GRAPES variants, EWC) are run by the binary, and each report's accuracy table (every
//! run's accuracy and test loss after every task, written with shortest round-trip floats) is
//! compared byte for byte with the committed `tests/golden/accuracy.csv` and
//! `tests/golden/cnn-accuracy.csv`. The fused steps' kernels are portable (see
//! `src/engine/kernels.rs`), so this holds on AVX-512, AVX2 and scalar machines alike; CI also
//! runs both under QEMU emulating a CPU without AVX-512.
//!
//! A change meant to change results regenerates the files:
//! `CLBENCH_BLESS=1 cargo test --test it golden`, and says why in its commit.

use crate::common::{clbench, repo, text};

#[test]
fn the_golden_scenario_gives_the_committed_bits() {
    golden("golden.yaml", "accuracy.csv");
}

#[test]
fn the_cnn_golden_scenario_gives_the_committed_bits() {
    golden("cnn.yaml", "cnn-accuracy.csv");
}

/// Runs `tests/golden/<config>` and compares its accuracy table with `tests/golden/<table>`.
fn golden(config: &str, table: &str) {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("golden");
    let dir_arg = dir.to_str().unwrap();
    let config = format!("tests/golden/{config}");
    let o = clbench(&[
        "run",
        &config,
        "--out",
        dir_arg,
        "--threads",
        "2",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let got = std::fs::read_to_string(dir.join("tables/accuracy.csv")).unwrap();
    let golden = repo().join("tests/golden").join(table);
    if std::env::var_os("CLBENCH_BLESS").is_some() {
        std::fs::write(&golden, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (create it with CLBENCH_BLESS=1 cargo test --test it golden)",
            golden.display()
        )
    });
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "{config}: the accuracy table differs from {} at line {} \
             (this machine: {}; kernels: {}):\n  got:  {}\n  want: {}",
            golden.display(),
            first + 1,
            clbench::platform::cpu_model(),
            clbench::engine::kernels::Isa::detected(),
            got.lines().nth(first).unwrap_or("(end of file)"),
            want.lines().nth(first).unwrap_or("(end of file)"),
        );
    }
}
