//! The store never mixes, loses or double-counts runs, and bad input is a clear error (exit 2)
//! that leaves what is stored untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::{clbench_in, repo, text};

/// Two methods, one seed each by default, a few steps: about a second per run.
fn config(lr: &str, seeds: &str) -> String {
    format!(
        "name: tiny\nstream: {}\nmodel: {{kind: mlp, hidden: [16]}}\nmethods:\n  \
         - name: sgd\n    optimizer: {{name: sgd, lr: {lr}}}\n  \
         - name: sgd+grapes\n    optimizer: {{name: sgd, lr: {lr}, grapes: propagating}}\n\
         training: {{batch_size: 16, iterations: 5}}\nseeds: {seeds}\n",
        repo().join("tasks/split-mnist-domain-il.yaml").display()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn run(config: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ];
    args.extend_from_slice(extra);
    clbench_in(&args, &repo())
}

/// Every file under `dir` with its bytes (the store's state).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The ids of the complete runs of a store.
fn complete_runs(out: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("complete.json").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

fn summary_n(out: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(out.join("tables/summary.csv")).unwrap();
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            format!("{} n={}", f[1], f[2])
        })
        .collect()
}

#[test]
fn a_second_configuration_under_a_stored_method_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let first = write(dir.path(), "a.yaml", &config("0.01", "[0]"));
    assert!(run(&first, &out, &[]).status.success());
    let before = snapshot(&out);
    let second = write(dir.path(), "b.yaml", &config("0.3", "[1]"));
    let o = run(&second, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("two different configurations"), "{t}");
    assert!(t.contains("method.optimizer.lr (0.01 vs 0.3)"), "{t}");
    assert_eq!(snapshot(&out), before, "nothing stored changed");
    // The same configuration with another seed is welcome.
    let more = write(dir.path(), "c.yaml", &config("0.01", "[1]"));
    assert!(run(&more, &out, &[]).status.success());
    assert_eq!(summary_n(&out), vec!["sgd n=2", "sgd+grapes n=2"]);
}

#[test]
fn copied_corrupt_or_edited_runs_are_skipped_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = write(dir.path(), "a.yaml", &config("0.01", "[0, 1]"));
    assert!(run(&cfg, &out, &[]).status.success());
    let ids = complete_runs(&out);
    assert_eq!(ids.len(), 4);
    let runs = out.join("runs");
    // A copy under another name.
    let copy = runs.join("sgd-s7-0123456789");
    std::fs::create_dir(&copy).unwrap();
    for f in std::fs::read_dir(runs.join(&ids[0])).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
    }
    // An accuracy of 57 (a percentage typed into a fraction's place).
    let record = runs.join(&ids[1]).join("record.json");
    let text57 = std::fs::read_to_string(&record).unwrap();
    let first_acc = text57
        .split("\"accuracy\": [\n    [\n      ")
        .nth(1)
        .unwrap();
    let value = first_acc.split(',').next().unwrap().trim().to_string();
    std::fs::write(&record, text57.replacen(&value, "57.0", 1)).unwrap();
    // A derived file edited after the fact.
    let csv = runs.join(&ids[2]).join("accuracy.csv");
    let edited = std::fs::read_to_string(&csv)
        .unwrap()
        .replacen(",0.", ",0.9", 1);
    std::fs::write(&csv, edited).unwrap();
    let o = clbench_in(&["report", out.to_str().unwrap()], &repo());
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("sgd-s7-0123456789") && t.contains("a copy or a rename"),
        "{t}"
    );
    assert!(t.contains("57 is not a fraction"), "{t}");
    assert!(
        t.contains("accuracy.csv") && t.contains("disagrees with record.json"),
        "{t}"
    );
    // The original of the copy and the untouched run count; nothing else.
    assert!(t.contains("2 runs;"), "{t}");
}

#[test]
fn the_same_run_planned_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = write(dir.path(), "a.yaml", &config("0.01", "[0]"));
    let o = run(&cfg, &out, &["--seeds", "0,0,1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("seed 0 is listed twice"), "{}", text(&o));
    let swept = write(
        dir.path(),
        "s.yaml",
        &format!(
            "{}sweep:\n  methods.*.optimizer.lr: [0.1, 0.10]\n",
            config("0.01", "[0]")
        ),
    );
    let o = run(&swept, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("key `sweep`") && t.contains("same configuration"),
        "{t}"
    );
    assert!(!out.exists(), "nothing was written");
}

#[test]
fn bad_input_is_a_clear_error_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let base = config("0.01", "[0]");
    let long = "m".repeat(300);
    let cases: Vec<(String, &str)> = vec![
        (
            base.replace("name: sgd\n", "name: .hidden\n"),
            "methods[0].name",
        ),
        (
            base.replace("name: sgd\n", &format!("name: {long}\n")),
            "longer than 100",
        ),
        (
            base.replace("name: sgd\n", "name: \"a\\nb\"\n"),
            "control character",
        ),
        (
            base.replace(
                "optimizer: {name: sgd, lr: 0.01}\n",
                "optimizer: {name: sgd, lr: 0.01}\n    strategy: {name: finetune, lambda: 5}\n",
            ),
            "unknown field `lambda`",
        ),
        (
            base.replace("iterations: 5", "epochs: 9838263505978428"),
            "training.epochs",
        ),
        (
            base.replace("hidden: [16]", "hidden: [1000000000000]"),
            "model.hidden",
        ),
        (
            base.replace("hidden: [16]", "hidden: [20000, 20000, 20000]"),
            "more than 500000000 weights",
        ),
        (
            base.replace("batch_size: 16", "batch_size: 0"),
            "training.batch_size",
        ),
    ];
    for (text_of_config, expected) in cases {
        let cfg = write(dir.path(), "bad.yaml", &text_of_config);
        let o = run(&cfg, &out, &[]);
        assert_eq!(o.status.code(), Some(2), "{expected}: {}", text(&o));
        assert!(text(&o).contains(expected), "{expected}: {}", text(&o));
        assert!(
            text(&o).contains("bad.yaml"),
            "the file is named: {}",
            text(&o)
        );
    }
    let stream = write(
        dir.path(),
        "huge.yaml",
        "dataset: mnist\nkind: permuted\nscenario: domain-incremental\ntasks: 1000000000\n",
    );
    let cfg = write(
        dir.path(),
        "bad.yaml",
        &base.replace(
            &repo()
                .join("tasks/split-mnist-domain-il.yaml")
                .display()
                .to_string(),
            &stream.display().to_string(),
        ),
    );
    let o = run(&cfg, &out, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("at most 10000 tasks"), "{}", text(&o));
    let good = write(dir.path(), "good.yaml", &base);
    for (flags, expected) in [
        (vec!["--threads", "18446744073709551615"], "--threads"),
        (vec!["--shard", "5/9"], "holds none of the 2 runs"),
    ] {
        let o = run(&good, &out, &flags);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", text(&o));
        assert!(text(&o).contains(expected), "{flags:?}: {}", text(&o));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_clbench"))
        .args([
            "run",
            good.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
        ])
        .env("SLURM_ARRAY_TASK_ID", "abc")
        .env("SLURM_ARRAY_TASK_COUNT", "4")
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("SLURM_ARRAY_TASK_ID"), "{}", text(&o));
    let a_file = write(dir.path(), "a-file", "not a store");
    for args in [
        vec!["report", a_file.to_str().unwrap()],
        vec![
            "run",
            good.to_str().unwrap(),
            "--out",
            a_file.to_str().unwrap(),
        ],
    ] {
        let o = clbench_in(&args, &repo());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert_eq!(
            text(&o).lines().count(),
            1,
            "one line, said once: {}",
            text(&o)
        );
    }
    let wrong_level = write(
        dir.path(),
        "level.yaml",
        &base.replace("batch_size: 16,", "batch_size: 16, lr: 0.1,"),
    );
    let o = clbench_in(&["validate", wrong_level.to_str().unwrap()], &repo());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("`lr` is a key of another block"),
        "{}",
        text(&o)
    );
    assert!(!out.exists(), "no case wrote anything");
    // A byte-order mark, as some editors write, is not an error.
    let bom = write(dir.path(), "bom.yaml", &format!("\u{feff}{base}"));
    let o = clbench_in(&["validate", bom.to_str().unwrap()], &repo());
    assert!(o.status.success(), "{}", text(&o));
}

/// Two writers on one store (two terminals, or Slurm array tasks sharing `--out`): every run is
/// trained once and stored once, nothing is left half-written, and the results are those of a
/// single writer.
#[test]
fn two_writers_on_one_store_store_every_run_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "a.yaml", &config("0.01", "[0, 1, 2]"));
    let alone = dir.path().join("alone");
    assert!(run(&cfg, &alone, &[]).status.success());
    let expected = complete_runs(&alone);
    assert_eq!(expected.len(), 6);
    const TRIALS: usize = 4;
    for trial in 0..TRIALS {
        let out = dir.path().join(format!("shared-{trial}"));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_clbench"))
                    .args(["run", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()])
                    .args(["-q", "--threads", "1"])
                    .current_dir(repo())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for w in writers {
            let o = w.wait_with_output().unwrap();
            assert!(o.status.success(), "trial {trial}: {}", text(&o));
        }
        assert_eq!(complete_runs(&out), expected, "trial {trial}");
        let leftovers: Vec<_> = std::fs::read_dir(out.join("runs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "trial {trial}: {leftovers:?}");
        for id in &expected {
            let a = std::fs::read(alone.join("runs").join(id).join("accuracy.csv")).unwrap();
            let b = std::fs::read(out.join("runs").join(id).join("accuracy.csv")).unwrap();
            assert_eq!(a, b, "trial {trial}: {id}");
        }
    }
}

/// `report --check` writes nothing and finds a table that is not what the stored runs give.
#[test]
fn report_check_finds_tables_that_do_not_match_their_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cfg = write(dir.path(), "a.yaml", &config("0.01", "[0]"));
    assert!(run(&cfg, &out, &[]).status.success());
    let check = || clbench_in(&["report", out.to_str().unwrap(), "--check"], &repo());
    let o = check();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("regenerate byte for byte from 2 stored runs"),
        "{}",
        text(&o)
    );
    let summary = out.join("tables/summary.csv");
    let edited = std::fs::read_to_string(&summary)
        .unwrap()
        .replacen('0', "1", 1);
    std::fs::write(&summary, &edited).unwrap();
    let before = snapshot(&out);
    let o = check();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("differs: ") && text(&o).contains("summary.csv"),
        "{}",
        text(&o)
    );
    assert_eq!(snapshot(&out), before, "--check writes nothing");
}
