//! Experiment configs: extends, sweeps, validation, run ids, shards, resume after kill -9,
//! parallel runs, dry runs and Slurm scripts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clbench::experiment::{plan, shard, Experiment};

use crate::common::{clbench, repo, text};

const BASE: &str = r#"
name: base
stream: tasks/split-mnist-class-il.yaml
model: {kind: mlp, hidden: [16]}
methods:
  - name: sgd
    optimizer: {name: sgd, lr: 0.05}
  - name: sgd+grapes
    optimizer: {name: sgd, lr: 0.05, grapes: propagating}
training:
  batch_size: 16
  iterations: 5
seeds: [0, 1, 2]
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Regression: a store written from a config that `extends` another records the resolved
/// experiment, so the report finds the default baseline (the parent's first method) and its
/// tables carry the significance note.
#[test]
fn a_store_records_the_resolved_experiment_and_its_default_baseline() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "base.yaml",
        &BASE.replace(
            "stream: tasks/",
            &format!("stream: {}/tasks/", repo().display()),
        ),
    );
    let child = write(
        dir.path(),
        "child.yaml",
        "extends: base.yaml\nname: child\nseeds: [0, 1]\ntraining: {iterations: 3}\n",
    );
    let out = dir.path().join("out");
    let o = clbench(&[
        "run",
        child.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let record = clbench::experiment::RunStore::new(&out)
        .experiment()
        .unwrap();
    assert_eq!(record.name, "child");
    assert_eq!(record.methods, vec!["sgd", "sgd+grapes"]);
    assert_eq!(record.config.training.iterations, Some(3));
    assert_eq!(record.config.extends, None);
    assert_eq!(
        clbench::report::default_baseline(&out).as_deref(),
        Some("sgd")
    );
    // The recorded experiment reads back even when the config files are gone.
    std::fs::remove_file(dir.path().join("base.yaml")).unwrap();
    let o = clbench(&["report", out.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", text(&o));
    let tex = std::fs::read_to_string(out.join("tables/summary.tex")).unwrap();
    assert!(tex.contains("differs from sgd"), "{tex}");
}

#[test]
fn extends_overrides_and_sweep_expands_the_cartesian_product() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.yaml", BASE);
    let child = write(
        dir.path(),
        "child.yaml",
        "extends: base.yaml\nname: child\nseeds: [7, 8]\ntraining: {batch_size: 32}\nsweep:\n  methods.*.optimizer.lr: [0.1, 0.01]\n  model.hidden: [[8], [8, 8]]\n",
    );
    let exp = Experiment::load(&child).unwrap();
    assert_eq!(exp.name, "child");
    assert_eq!(exp.variants.len(), 4);
    let tags: Vec<&str> = exp
        .variants
        .iter()
        .map(|v| v.tag.as_deref().unwrap())
        .collect();
    assert_eq!(
        tags,
        vec![
            "lr=0.1,hidden=[8]",
            "lr=0.1,hidden=[8,8]",
            "lr=0.01,hidden=[8]",
            "lr=0.01,hidden=[8,8]"
        ]
    );
    for v in &exp.variants {
        // Inherited and overridden keys: iterations from the base, batch size from the child.
        assert_eq!(v.config.training.batch_size, 32);
        assert_eq!(v.config.training.iterations, Some(5));
        assert_eq!(v.config.seeds, vec![7, 8]);
    }
    assert_eq!(exp.variants[3].config.methods[1].optimizer.lr, 0.01);
    assert_eq!(exp.variants[1].config.model.hidden, Some(vec![8, 8]));
    let runs = plan(&exp, None);
    assert_eq!(runs.len(), 4 * 2 * 2);
    assert_eq!(runs[0].spec.method.name, "sgd[lr=0.1,hidden=[8]]");
    // Every run is distinct.
    let mut ids: Vec<String> = runs.iter().map(|r| r.id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 16);
    assert_eq!(plan(&exp, None).len(), 16);
}

#[test]
fn an_unknown_key_in_an_extending_config_names_file_line_column_and_suggests() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.yaml", BASE);
    let child = write(
        dir.path(),
        "child.yaml",
        "extends: base.yaml\ntraining:\n  batch_size: 8\n  iteratons: 3\n",
    );
    let e = Experiment::load(&child).unwrap_err().to_string();
    assert!(
        e.contains("child.yaml") && e.contains("line 4 column 3"),
        "{e}"
    );
    assert!(e.contains("did you mean `iterations`"), "{e}");
    // A sweep value out of range names the key and the combination.
    let bad = write(
        dir.path(),
        "bad.yaml",
        "extends: base.yaml\nsweep:\n  training.batch_size: [8, 0]\n",
    );
    let e = Experiment::load(&bad).unwrap_err().to_string();
    assert!(
        e.contains("training.batch_size") && e.contains("batch_size=0"),
        "{e}"
    );
    let cyc = write(dir.path(), "cyc.yaml", "extends: cyc.yaml\n");
    assert!(Experiment::load(&cyc)
        .unwrap_err()
        .to_string()
        .contains("extends"));
    let seeds = write(
        dir.path(),
        "seeds.yaml",
        "extends: base.yaml\nsweep:\n  seeds: [[1], [2]]\n",
    );
    assert!(Experiment::load(&seeds)
        .unwrap_err()
        .to_string()
        .contains("cannot be swept"));
}

#[test]
fn run_ids_are_stable() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "base.yaml", BASE);
    let exp = Experiment::load(&p).unwrap();
    let runs = plan(&exp, None);
    // Pinned: a change here silently orphans every stored run. Bump only on purpose.
    assert_eq!(runs[0].id(), PINNED_ID, "run id of sgd seed 0 changed");
    assert!(runs[0].id().starts_with("sgd-s0-"));
    // The config's name, description and file location do not enter the id.
    let q = write(
        dir.path(),
        "other.yaml",
        &BASE.replace("name: base", "name: other\ndescription: x"),
    );
    assert_eq!(
        plan(&Experiment::load(&q).unwrap(), None)[0].id(),
        runs[0].id()
    );
    // Any setting does.
    let r = write(
        dir.path(),
        "lr.yaml",
        &BASE.replacen("lr: 0.05", "lr: 0.06", 1),
    );
    assert_ne!(
        plan(&Experiment::load(&r).unwrap(), None)[0].id(),
        runs[0].id()
    );
}

const PINNED_ID: &str = "sgd-s0-7e1613430e";

/// The keys of optimizer studies: Adagrad, `training.lr_decay`, `training.reset_optimizer` by
/// name, `model.dropout`, strategy `l2`, a stream's `normalize: {mean, std}`. Each bad value
/// names its file and key; the named reset values are the booleans (same run ids).
#[test]
fn optimizer_study_keys_are_validated_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let load = |name: &str, text: &str| Experiment::load(&write(dir.path(), name, text));
    let base_id = plan(&load("base.yaml", BASE).unwrap(), None)[0].id();
    let with = |old: &str, new: &str| BASE.replacen(old, new, 1);
    let never = load(
        "never.yaml",
        &with("iterations: 5", "iterations: 5\n  reset_optimizer: never"),
    )
    .unwrap();
    assert_eq!(plan(&never, None)[0].id(), base_id);
    let per_task = load(
        "per-task.yaml",
        &with(
            "iterations: 5",
            "iterations: 5\n  reset_optimizer: per-task",
        ),
    )
    .unwrap();
    let as_bool = load(
        "true.yaml",
        &with("iterations: 5", "iterations: 5\n  reset_optimizer: true"),
    )
    .unwrap();
    assert!(per_task.variants[0].training.reset_optimizer);
    assert_eq!(plan(&per_task, None)[0].id(), plan(&as_bool, None)[0].id());
    let stable = load(
        "stable.yaml",
        &with(
            "iterations: 5",
            "iterations: 5\n  lr_decay: {gamma: 0.8, floor: 5.0e-5}",
        )
        .replacen("hidden: [16]}", "hidden: [16], dropout: 0.5}", 1)
        .replacen("{name: sgd, lr: 0.05}", "{name: adagrad, lr: 0.01}", 1),
    )
    .unwrap();
    let v = &stable.variants[0];
    assert_eq!(v.model.dropout(), Some(0.5));
    assert_eq!(v.training.lr_decay.unwrap().gamma, 0.8);
    assert_ne!(plan(&stable, None)[0].id(), base_id);

    for (name, text, expected) in [
        (
            "gamma.yaml",
            with("iterations: 5", "iterations: 5\n  lr_decay: {gamma: 1.5}"),
            "key `training.lr_decay.gamma`: expected a number in (0, 1], got 1.5",
        ),
        (
            "floor.yaml",
            with(
                "iterations: 5",
                "iterations: 5\n  lr_decay: {gamma: 0.5, floor: -1}",
            ),
            "key `training.lr_decay.floor`",
        ),
        (
            "decay-key.yaml",
            with("iterations: 5", "iterations: 5\n  lr_decay: {gama: 0.5}"),
            "unknown field `gama`",
        ),
        (
            "reset.yaml",
            with(
                "iterations: 5",
                "iterations: 5\n  reset_optimizer: sometimes",
            ),
            "unknown value `sometimes` for `reset_optimizer`: expected `per-task` or `never`",
        ),
        (
            "reset-number.yaml",
            with("iterations: 5", "iterations: 5\n  reset_optimizer: 1"),
            "unknown value `1` for `reset_optimizer`",
        ),
        (
            "dropout.yaml",
            with("hidden: [16]}", "hidden: [16], dropout: 1.0}"),
            "key `model.dropout`: expected a drop probability in [0, 1), got 1",
        ),
        (
            "dropout-autograd.yaml",
            with("hidden: [16]}", "hidden: [16], dropout: 0.25}").replacen(
                "iterations: 5",
                "iterations: 5\n  backward: autograd",
                1,
            ),
            "key `model.dropout`: dropout runs on the fused CPU step only",
        ),
        (
            "adagrad.yaml",
            with(
                "{name: sgd, lr: 0.05}",
                "{name: adagrad, lr: 0.05, momentum: 0.9}",
            ),
            "key `methods[0].optimizer.momentum`: does not apply to optimizer `adagrad`",
        ),
        (
            "l2.yaml",
            with(
                "{name: sgd, lr: 0.05}",
                "{name: sgd, lr: 0.05}\n    strategy: {name: l2, lambda: -2}",
            ),
            "key `methods[0].strategy.lambda`",
        ),
    ] {
        let e = load(name, &text).unwrap_err().to_string();
        assert!(e.contains(expected), "{name}: {e}");
        assert!(e.contains(name), "{name}: the file is named: {e}");
    }

    // A stream's own statistics.
    let stream = |name: &str, normalize: &str| {
        let path = write(
            dir.path(),
            name,
            &format!("dataset: mnist\nkind: split\nscenario: task-incremental\npad: 2\nnormalize: {normalize}\n"),
        );
        clbench::streams::StreamSpec::load(&path)
    };
    let ok = stream("hsu.yaml", "{mean: 0.1000, std: 0.2752}").unwrap();
    let built = clbench::streams::TaskStream::build(&ok, 0).unwrap();
    let (scale, shift) = built.pixel_scale_shift;
    // Byte 0 (and the padding) → −mean/std; byte 255 → (1 − mean)/std.
    assert!((shift - (-0.1 / 0.2752) as f32).abs() < 1e-6);
    assert!((255.0 * scale + shift - (0.9 / 0.2752) as f32).abs() < 1e-5);
    for (name, normalize, key) in [
        ("std0.yaml", "{mean: 0.1, std: 0}", "key `normalize.std`"),
        (
            "mean.yaml",
            "{mean: .nan, std: 0.3}",
            "key `normalize.mean`",
        ),
        ("extra.yaml", "{mean: 0.1, std: 0.3, max: 1}", "normalize"),
    ] {
        let e = stream(name, normalize).unwrap_err().to_string();
        assert!(e.contains(key), "{name}: {e}");
        assert!(e.contains(name), "{name}: {e}");
    }
}

#[test]
fn shards_cover_every_run_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "s.yaml",
        &format!("{BASE}sweep:\n  training.batch_size: [8, 16, 32]\n"),
    );
    let exp = Experiment::load(&p).unwrap();
    let all = plan(&exp, None);
    assert_eq!(all.len(), 18);
    for n in [1, 2, 4, 7, 18, 25] {
        let mut seen: Vec<String> = (0..n)
            .flat_map(|i| shard(all.clone(), i, n))
            .map(|r| r.id())
            .collect();
        seen.sort();
        let mut expected: Vec<String> = all.iter().map(|r| r.id()).collect();
        expected.sort();
        assert_eq!(seen, expected, "{n} shards");
        let sizes: Vec<usize> = (0..n).map(|i| shard(all.clone(), i, n).len()).collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
    }
}

fn complete_runs(out: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(out.join("runs"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().join("complete.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_sweep_killed_with_sigkill_resumes_with_every_run_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "k.yaml",
        &BASE
            .replace("iterations: 5", "iterations: 60")
            .replace("hidden: [16]", "hidden: [64]")
            .replace(
                "seeds: [0, 1, 2]",
                "seeds: [0, 1, 2]\nsweep:\n  training.batch_size: [16, 32]",
            ),
    );
    let out = dir.path().join("out");
    let args = [
        "run",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_clbench"))
        .args(args)
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while complete_runs(&out).len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no run completed in time"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = complete_runs(&out);
    assert!(before.len() >= 2 && before.len() < 12, "{}", before.len());
    let o = clbench(&args);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains(&format!("{} already complete", before.len())),
        "{t}"
    );
    let after = complete_runs(&out);
    assert_eq!(after.len(), 12, "{after:?}");
    // The runs completed before the kill were kept, not retrained or rewritten.
    assert!(before.iter().all(|r| after.contains(r)));
    // Exactly the planned runs, once each: the report sees 12 runs.
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(metrics.lines().count(), 13);
}

#[test]
fn parallel_jobs_give_the_same_results_as_one_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "p.yaml", BASE);
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let o = clbench(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        a.to_str().unwrap(),
        "-q",
        "--threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = clbench(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        b.to_str().unwrap(),
        "-q",
        "--jobs",
        "2",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let runs = complete_runs(&a);
    assert_eq!(runs, complete_runs(&b));
    for r in runs {
        let read = |d: &Path| {
            std::fs::read_to_string(d.join("runs").join(&r).join("accuracy.csv")).unwrap()
        };
        assert_eq!(read(&a), read(&b), "{r}");
    }
}

#[test]
fn dry_run_and_validate_train_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "d.yaml", BASE);
    let out = dir.path().join("out");
    let o = clbench(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(o.status.success());
    let t = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        t.lines().filter(|l| l.starts_with("pending")).count(),
        6,
        "{t}"
    );
    assert!(!out.join("runs").exists());
    // After running one shard, the dry run shows those runs as complete.
    let o = clbench(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
        "--shard",
        "0/3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(complete_runs(&out).len(), 2);
    let o = clbench(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("complete"))
            .count(),
        2
    );
    let o = clbench(&["validate", cfg.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("6 runs in total"));
    let bad = write(
        dir.path(),
        "bad.yaml",
        &BASE.replace("seeds: [0, 1, 2]", "seeds: []"),
    );
    assert_eq!(
        clbench(&["validate", bad.to_str().unwrap()]).status.code(),
        Some(2)
    );
    assert_eq!(
        clbench(&["run", cfg.to_str().unwrap(), "--shard", "3/3", "--dry-run"])
            .status
            .code(),
        Some(2)
    );
}

/// `--methods` trains a subset of the config's methods; the store records the whole experiment
/// (its first method stays the report's baseline), a later run of the rest completes it, and an
/// unknown name is a usage error that lists the methods.
#[test]
fn methods_flag_trains_a_subset_and_the_rest_completes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "m.yaml", BASE);
    let out = dir.path().join("out");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
        ];
        args.extend_from_slice(extra);
        clbench(&args)
    };
    let o = run(&["--methods", "sgd+grapes", "--seeds", "0,1"]);
    assert!(o.status.success(), "{}", text(&o));
    let runs = complete_runs(&out);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs.iter().all(|r| r.starts_with("sgd+grapes-s")),
        "{runs:?}"
    );
    let record = std::fs::read_to_string(out.join("experiment.yaml")).unwrap();
    assert!(
        record.contains("- sgd\n") && record.contains("- sgd+grapes"),
        "{record}"
    );
    let o = run(&["--methods", "nope,sgd"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("no method `nope`") && t.contains("its methods are sgd, sgd+grapes"),
        "{t}"
    );
    let o = run(&["--methods", "sgd,sgd"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("method sgd is listed twice"),
        "{}",
        text(&o)
    );
    // The rest of the experiment: the two stored runs are skipped, four are trained.
    let o = run(&[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("4 trained, 2 already complete"),
        "{}",
        text(&o)
    );
    assert_eq!(complete_runs(&out).len(), 6);
}

/// `--kernels` takes a kernel this CPU runs; anything else is a usage error that says what was
/// expected, before anything is written.
#[test]
fn kernels_flag_rejects_unknown_kernels_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "m.yaml", BASE);
    let out = dir.path().join("out");
    let o = clbench(&[
        "run",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--kernels",
        "avx1",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("--kernels avx1: expected avx512f, avx2+fma or scalar"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
}

#[test]
fn shards_run_apart_merge_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "m.yaml", BASE);
    let (a, b) = (dir.path().join("shard0"), dir.path().join("shard1"));
    for (out, s) in [(&a, "0/2"), (&b, "1/2")] {
        let o = clbench(&[
            "run",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
            "--shard",
            s,
        ]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let merged = dir.path().join("merged");
    let o = clbench(&[
        "report",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("6 runs"));
    assert_eq!(
        std::fs::read_to_string(merged.join("metrics.csv"))
            .unwrap()
            .lines()
            .count(),
        7
    );
}

#[test]
fn slurm_script_runs_the_array_in_shards() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "s.yaml", BASE);
    let out = dir.path().join("res ults");
    let o = clbench(&[
        "slurm",
        cfg.to_str().unwrap(),
        "--shards",
        "3",
        "--time",
        "01:30:00",
        "--partition",
        "cpu",
        "--account",
        "lab-x",
        "--qos",
        "long",
        "--mem",
        "8G",
        "--gres",
        "gpu:1",
        "--sbatch=--mail-type=END",
        "--setup",
        "module load rust/1.95",
        "--bin",
        "/opt/cl bench/clbench",
        "--run-args",
        "--device cuda",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.starts_with("#!/bin/bash"));
    for line in [
        "#SBATCH --array=0-2",
        "#SBATCH --partition=cpu",
        "#SBATCH --time=01:30:00",
        "#SBATCH --account=lab-x",
        "#SBATCH --qos=long",
        "#SBATCH --mem=8G",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --mail-type=END",
        "module load rust/1.95",
    ] {
        assert!(s.lines().any(|l| l == line), "{line}: {s}");
    }
    // The job runs where the script was written; paths are quoted for the shell; the log
    // folder exists before submission (Slurm opens the logs before the script runs).
    let cwd = std::env::current_dir().unwrap();
    assert!(
        s.contains(&format!("#SBATCH --chdir={}", cwd.display())),
        "{s}"
    );
    assert!(
        s.contains(&format!(
            "srun '/opt/cl bench/clbench' run '{}' --out '{}' --threads \"$SLURM_CPUS_PER_TASK\" -q '--device' 'cuda'",
            cfg.display(),
            out.display()
        )),
        "{s}"
    );
    assert!(
        s.contains(&format!(
            "#SBATCH --output=\"{}/slurm/%A_%a.out\"",
            out.display()
        )),
        "{s}"
    );
    assert!(out.join("slurm").is_dir());
    // Every #SBATCH line comes before the first command (sbatch stops reading them there).
    let first_command = s.lines().position(|l| l == "set -euo pipefail").unwrap();
    assert!(s
        .lines()
        .skip(first_command)
        .all(|l| !l.starts_with("#SBATCH")));
    // One store per task.
    let o = clbench(&[
        "slurm",
        cfg.to_str().unwrap(),
        "--separate-outs",
        "--out",
        out.to_str().unwrap(),
    ]);
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(
        s.contains(&format!(
            "--out '{}'/shard-\"$SLURM_ARRAY_TASK_ID\"",
            out.display()
        )) && s.contains(&format!(
            "report '{}'/shard-* --out '{}'",
            out.display(),
            out.display()
        )),
        "{s}"
    );
    for bad in [
        vec!["--time", "soon"],
        vec!["--sbatch", "mail-type=END"],
        vec!["--setup", "a\nb"],
        vec!["--account", "a\nb"],
    ] {
        let mut args = vec![
            "slurm",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(bad.iter().copied());
        let o = clbench(&args);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", text(&o));
    }
}

#[test]
fn every_shipped_config_validates() {
    let mut n = 0;
    let mut paths = Vec::new();
    for dir in ["configs", "configs/tuning", "configs/padding-arms"] {
        for entry in std::fs::read_dir(repo().join(dir)).unwrap() {
            paths.push(entry.unwrap().path());
        }
    }
    for path in paths {
        if path.extension().is_some_and(|e| e == "yaml") {
            let exp = Experiment::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!plan(&exp, None).is_empty(), "{}", path.display());
            n += 1;
        }
    }
    assert!(n >= 7, "{n} configs");
}
