//! The `clbench` binary end to end: exit codes, messages and the files a run writes.

use std::path::PathBuf;

use crate::common::{clbench_in, repo, text};

#[test]
fn tasks_describe_prints_one_line_per_task() {
    let o = clbench_in(
        &["tasks", "describe", "tasks/split-mnist-class-il.yaml"],
        &repo(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("task ")).collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[4].contains("classes [8, 9]") && lines[4].contains("targets 8..9"),
        "{out}"
    );
    let o = clbench_in(
        &[
            "tasks",
            "describe",
            "tasks/permuted-mnist-5.yaml",
            "--seed",
            "7",
        ],
        &repo(),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("permute(seed 7, task 5"), "{out}");
}

#[test]
fn bad_input_exits_with_code_2_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "dataset: mnist\nkind: split\nscenario: class-incremental\ngroups: [[0, 1], []]\n",
    )
    .unwrap();
    let o = clbench_in(&["tasks", "describe", "bad.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("bad.yaml: key `groups`: group 2 is empty"),
        "{}",
        text(&o)
    );
    let o = clbench_in(&["tasks", "describe", "missing.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let o = clbench_in(&["run", "no-such-config.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let o = clbench_in(&["frobnicate"], dir.path());
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn data_list_and_verify_report_the_shipped_mnist() {
    let o = clbench_in(&["data", "list"], &repo());
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    let mnist = out.lines().find(|l| l.starts_with("mnist ")).unwrap();
    assert!(mnist.contains("verified"), "{out}");
    let o = clbench_in(&["data", "verify", "mnist"], &repo());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("ok "))
            .count(),
        4
    );
}

const TINY: &str = r#"
name: tiny
stream: tasks/split-mnist-class-il.yaml
model: {kind: mlp, hidden: [32]}
methods:
  - name: sgd
    optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
  - name: sgd+grapes
    optimizer: {name: sgd, lr: 0.05, momentum: 0.9, grapes: propagating}
training: {batch_size: 32, iterations: 20}
seeds: [0, 1]
"#;

#[test]
fn run_writes_the_store_and_metrics_and_skips_complete_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tiny.yaml");
    std::fs::write(&config, TINY).unwrap();
    let out = dir.path().join("out");
    let args = [
        "run",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ];
    let o = clbench_in(&args, &repo());
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("4 trained, 0 already complete"), "{stdout}");
    assert!(stdout.contains("sgd+grapes"), "{stdout}");
    let runs: Vec<PathBuf> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 4);
    for r in &runs {
        for f in [
            "run.yaml",
            "record.json",
            "accuracy.csv",
            "metrics.json",
            "complete.json",
            "platform.json",
            "timing.json",
        ] {
            assert!(r.join(f).is_file(), "{} lacks {f}", r.display());
        }
        // What depends on the machine stays out of the record and the metrics.
        for f in ["record.json", "metrics.json"] {
            let text = std::fs::read_to_string(r.join(f)).unwrap();
            assert!(
                !text.contains("seconds") && !text.contains("samples_per_s"),
                "{f}: {text}"
            );
        }
        let platform: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(r.join("platform.json")).unwrap())
                .unwrap();
        assert_eq!(platform["kernel_path"], "portable");
        assert_eq!(
            platform["kernel_isa"],
            clbench::engine::kernels::Isa::detected().name()
        );
        for key in ["cpu", "git_commit", "rustc", "target", "clbench_version"] {
            assert!(
                platform[key].as_str().is_some_and(|v| !v.is_empty()),
                "{key}"
            );
        }
        let acc = std::fs::read_to_string(r.join("accuracy.csv")).unwrap();
        assert_eq!(
            acc.lines().next().unwrap(),
            "after_task,eval_task,accuracy,loss"
        );
        assert_eq!(acc.lines().count(), 1 + 6 * 5);
    }
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let header = metrics.lines().next().unwrap();
    for col in [
        "run_id",
        "method",
        "seed",
        "acc",
        "bwt",
        "fwt",
        "forgetting",
        "learning_accuracy",
    ] {
        assert!(header.split(',').any(|c| c == col), "{header}");
    }
    assert!(!header.contains("seconds") && !header.contains("samples_per_s"));
    assert_eq!(metrics.lines().count(), 5);
    // Timing and platform have their own table.
    let timing = std::fs::read_to_string(out.join("tables/timing.csv")).unwrap();
    let header = timing.lines().next().unwrap();
    for col in [
        "run_id",
        "train_seconds",
        "samples_per_s",
        "cpu",
        "kernel_isa",
        "kernel_path",
    ] {
        assert!(header.split(',').any(|c| c == col), "{header}");
    }
    assert_eq!(timing.lines().count(), 5);
    assert!(
        timing.lines().skip(1).all(|l| l.contains(",portable,")),
        "{timing}"
    );
    // Running again trains nothing.
    let o = clbench_in(&args, &repo());
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("0 trained, 4 already complete"));
    // --seeds adds only the new seed's runs.
    let o = clbench_in(
        &[
            "run",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
            "--seeds",
            "1,2",
        ],
        &repo(),
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("2 trained, 2 already complete"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_bad_config_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            TINY.replace(
                "lr: 0.05, momentum: 0.9}\n  - name: sgd+grapes",
                "lr: -1, momentum: 0.9}\n  - name: sgd+grapes",
            ),
            "methods[0].optimizer.lr",
        ),
        (
            TINY.replace("batch_size: 32", "batch_size: 0"),
            "training.batch_size",
        ),
        (TINY.replace("seeds: [0, 1]", "seeds: []"), "key `seeds`"),
        (
            TINY.replace("hidden: [32]", "hidden: [32, 0]"),
            "model.hidden",
        ),
        (
            TINY.replace("split-mnist-class-il", "split-mnist-nope"),
            "stream file",
        ),
        (
            TINY.replace("batch_size", "batchsize"),
            "did you mean `batch_size`",
        ),
    ];
    for (i, (yaml, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let o = clbench_in(
            &[
                "run",
                path.to_str().unwrap(),
                "--out",
                dir.path().join("o").to_str().unwrap(),
            ],
            &repo(),
        );
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let t = text(&o);
        assert!(
            t.contains(&format!("bad{i}.yaml")) && t.contains(expected),
            "case {i}: {t}"
        );
    }
}

#[test]
fn platform_names_the_kernels_and_bench_refuses_kernels_it_cannot_run() {
    let o = clbench_in(&["platform"], &repo());
    assert!(o.status.success(), "{}", text(&o));
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let isa = clbench::engine::kernels::Isa::detected();
    assert_eq!(p["kernel_isa"], isa.name());
    assert_eq!(p["kernels_available"][0], isa.name());
    assert_eq!(
        p["kernels_available"].as_array().unwrap().last().unwrap(),
        "scalar"
    );
    let o = clbench_in(&["bench", "--kernels", "sse9"], &repo());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--kernels sse9: expected avx512f, avx2+fma or scalar"));
    if !clbench::engine::kernels::Isa::Avx512.runs_here() {
        let o = clbench_in(&["bench", "--kernels", "avx512f"], &repo());
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains("this CPU cannot run them"),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn figure_width_out_of_range_is_a_usage_error_that_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for width in ["0.5", "25", "NaN"] {
        let out = dir.path().join(format!("w{width}"));
        let o = clbench_in(
            &[
                "report",
                "results/quickstart",
                "--out",
                out.to_str().unwrap(),
                "--figure-width",
                width,
            ],
            &repo(),
        );
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains(&format!(
                "--figure-width {width}: expected a width in inches"
            )),
            "{}",
            text(&o)
        );
        assert!(
            !out.exists(),
            "--figure-width {width} wrote {}",
            out.display()
        );
    }
}
