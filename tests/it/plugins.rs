//! Methods from outside clbench (`clbench::plugin`): the example crate's RWalk strategy and
//! Lookahead optimizer (`examples/own_methods/`, compiled here as they are) run through configs,
//! the store and the report like built-in methods.

use std::process::ExitCode;

use clbench::experiment::Experiment;
use clbench::plugin::{OptimizerPlugin, Registry, UpdateStep};

use crate::common::{clbench, repo, text};

#[path = "../../examples/own_methods/lookahead.rs"]
#[allow(dead_code)]
mod lookahead;
#[path = "../../examples/own_methods/rwalk.rs"]
#[allow(dead_code)]
mod rwalk;

fn registry() -> Registry {
    Registry::builtin()
        .strategy::<rwalk::RwalkSettings>("rwalk")
        .optimizer::<lookahead::LookaheadSgd>("lookahead-sgd")
}

/// The example's config, made small: 2 tasks' worth of steps on a 16-unit MLP, one seed.
fn small_config(dir: &std::path::Path, methods: &str) -> std::path::PathBuf {
    let text = format!(
        "name: own\nstream: {}/tasks/split-mnist-task-il.yaml\nmodel: {{kind: mlp, hidden: [16]}}\n\
         methods:\n{methods}training: {{batch_size: 16, iterations: 6}}\nseeds: [0]\n",
        repo().display()
    );
    let path = dir.join("own.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

const METHODS: &str = "  - name: sgd
    optimizer: {name: sgd, lr: 0.1, momentum: 0.9}
  - name: lookahead
    optimizer: {name: lookahead-sgd, lr: 0.1, k: 2}
  - name: rwalk
    optimizer: {name: sgd, lr: 0.1, momentum: 0.9}
    strategy: {name: rwalk, lambda: 1.0}
  - name: rwalk+grapes
    optimizer: {name: sgd, lr: 0.1, momentum: 0.9, grapes: propagating}
    strategy: {name: rwalk, lambda: 1.0}
";

fn error_of(dir: &std::path::Path, methods: &str) -> String {
    registry().install().unwrap();
    Experiment::load(&small_config(dir, methods))
        .unwrap_err()
        .to_string()
}

#[test]
fn plugin_methods_run_into_a_store_that_the_plain_binary_reports() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(dir.path(), METHODS);
    let out = dir.path().join("out");
    // The example's binary, in this process: `own-methods run <config> --out <out>`.
    let run_own = || {
        let args = [
            "own-methods",
            "run",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
        ];
        clbench::cli::main_from(registry(), args)
    };
    assert_eq!(run_own(), ExitCode::SUCCESS);

    // Each plugin block is recorded with its settings written out and its origin.
    let runs: Vec<_> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 4);
    let run_of = |method: &str| {
        runs.iter()
            .find(|p| {
                let name = p.file_name().unwrap().to_str().unwrap();
                name.strip_prefix(method)
                    .is_some_and(|rest| rest.starts_with("-s0-"))
            })
            .unwrap_or_else(|| panic!("no run of {method}"))
            .clone()
    };
    let origin = clbench::origin!();
    let rwalk = std::fs::read_to_string(run_of("rwalk").join("run.yaml")).unwrap();
    assert!(rwalk.contains("name: rwalk"), "{rwalk}");
    assert!(rwalk.contains("alpha: 0.9"), "{rwalk}");
    assert!(rwalk.contains(&format!("plugin: {origin}")), "{rwalk}");
    let look = std::fs::read_to_string(run_of("lookahead").join("run.yaml")).unwrap();
    assert!(look.contains("name: lookahead-sgd"), "{look}");
    assert!(
        look.contains("momentum: 0.9") && look.contains("k: 2"),
        "{look}"
    );
    let platform = std::fs::read_to_string(run_of("rwalk").join("platform.json")).unwrap();
    assert!(
        platform.contains(&format!("\"strategy rwalk\": \"{origin}\"")),
        "{platform}"
    );
    let plain = std::fs::read_to_string(run_of("sgd").join("platform.json")).unwrap();
    assert!(!plain.contains("plugins"), "{plain}");

    // The plugin's strategy changed training: RWalk's accuracy matrix differs from SGD's after
    // task 1 (the penalty acts from task 2 on) and equals it before.
    let matrix = |m: &str| std::fs::read_to_string(run_of(m).join("accuracy.csv")).unwrap();
    let (sgd, rw) = (matrix("sgd"), matrix("rwalk"));
    assert_ne!(sgd, rw);
    let rows = |t: &str| {
        t.lines()
            .filter(|l| l.starts_with("0,") || l.starts_with("1,"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&sgd), rows(&rw), "identical until the first penalty");
    assert_ne!(sgd, matrix("lookahead"));

    // The plain `clbench` binary, which knows neither plugin, rebuilds the report from the
    // stored blocks and pairs rwalk with its GRAPES twin.
    let o = clbench(&["report", out.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", text(&o));
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    for m in ["lookahead", "rwalk", "rwalk+grapes"] {
        assert!(summary.contains(&format!("| {m} ")), "{m}: {summary}");
    }
    let effect = std::fs::read_to_string(out.join("tables/grapes_effect.csv")).unwrap();
    assert!(effect.contains("rwalk"), "{effect}");
    let o = clbench(&["report", out.to_str().unwrap(), "--check", "-q"]);
    assert!(o.status.success(), "{}", text(&o));

    // Running again resumes (same ids); a pinned older version of the plugin is refused.
    assert_eq!(run_own(), ExitCode::SUCCESS);
    assert_eq!(std::fs::read_dir(out.join("runs")).unwrap().count(), 4);
    let pinned = small_config(
        dir.path(),
        &METHODS.replace(
            "{name: rwalk, lambda: 1.0}",
            "{name: rwalk, lambda: 1.0, plugin: other-crate 0.0.1}",
        ),
    );
    let err = Experiment::load(&pinned).unwrap_err().to_string();
    assert!(
        err.contains("strategy.plugin") && err.contains("other-crate 0.0.1"),
        "{err}"
    );
}

#[test]
fn a_plugin_block_is_checked_like_a_built_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // A misspelt key of the plugin's settings.
        (
            "  - name: r\n    optimizer: {name: sgd, lr: 0.1}\n    strategy: {name: rwalk, lamda: 1.0}\n",
            "methods[0].strategy.lamda",
        ),
        // A value of the wrong type.
        (
            "  - name: r\n    optimizer: {name: sgd, lr: 0.1}\n    strategy: {name: rwalk, lambda: strong}\n",
            "methods[0].strategy.lambda",
        ),
        // A value the plugin's check refuses.
        (
            "  - name: r\n    optimizer: {name: sgd, lr: 0.1}\n    strategy: {name: rwalk, lambda: -1.0}\n",
            "methods[0].strategy.lambda",
        ),
        (
            "  - name: l\n    optimizer: {name: lookahead-sgd, lr: 0.1, k: 0}\n",
            "methods[0].optimizer.k",
        ),
        // `lr` is every optimizer's, and checked by clbench.
        (
            "  - name: l\n    optimizer: {name: lookahead-sgd, lr: -0.1}\n",
            "methods[0].optimizer.lr",
        ),
        // A name nobody registered: the known ones, plugins included, and a hint.
        (
            "  - name: r\n    optimizer: {name: sgd, lr: 0.1}\n    strategy: {name: rwalks}\n",
            "did you mean `rwalk`",
        ),
    ];
    for (methods, expected) in cases {
        let err = error_of(dir.path(), methods);
        assert!(err.contains(expected), "expected `{expected}` in: {err}");
    }
}

#[test]
fn plugin_names_may_not_shadow_built_in_methods() {
    let err = Registry::builtin()
        .strategy::<rwalk::RwalkSettings>("ewc")
        .optimizer::<lookahead::LookaheadSgd>("adam")
        .install()
        .unwrap_err()
        .to_string();
    assert!(err.contains("strategy `ewc` is a built-in"), "{err}");
    assert!(err.contains("optimizer `adam` is a built-in"), "{err}");
    let twice = Registry::builtin()
        .strategy::<rwalk::RwalkSettings>("rwalk")
        .strategy::<rwalk::RwalkSettings>("rwalk")
        .install()
        .unwrap_err()
        .to_string();
    assert!(twice.contains("registered twice"), "{twice}");
}

/// Lookahead's rule against a hand trace: k = 2, α = 0.5, momentum 0.5, lr 0.1, gradient 1.
#[test]
fn lookahead_follows_its_algorithm() {
    let rule = lookahead::LookaheadSgd {
        momentum: 0.5,
        k: 2,
        alpha: 0.5,
    };
    let (mut p, mut buf, mut slow) = (vec![1.0f32], vec![0.0f32], vec![0.0f32]);
    let mut after = Vec::new();
    for step in 1..=3 {
        let s = UpdateStep {
            lr: 0.1,
            step,
            tensor: 0,
            offset: 0,
        };
        rule.update(&s, &mut p, &[1.0], &mut [&mut buf[..], &mut slow[..]]);
        after.push(p[0]);
    }
    // Step 1: buf 1, θ 0.9 (φ = 1). Step 2: buf 1.5, θ 0.75, then φ = 1 + 0.5·(0.75 − 1) =
    // 0.875 and θ = φ. Step 3: buf 1.75, θ 0.875 − 0.175 = 0.7.
    let expected = [0.9f32, 0.875, 0.7];
    for (a, e) in after.iter().zip(expected) {
        assert!((a - e).abs() < 1e-6, "{after:?} vs {expected:?}");
    }
}
