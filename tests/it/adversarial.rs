//! Adversarial input, one regression test per case of the second bad-input round: names that
//! would leave their folder, sweeps too large to build, folders and files clbench must not
//! overwrite, merges that disagree, checks that must name what they skip, Slurm lines that
//! sbatch would cut, stdout that cannot be written, files echoed whole, Markdown cells and CSV
//! written by other programs. Every case exits as a usage error (2) or a runtime error (1) with
//! a message naming what is wrong, and leaves what was written before as it was.

use std::path::{Path, PathBuf};

use clbench::experiment::RunStore;
use clbench::train::RunStatus;

use crate::common::{clbench_in, repo, text};
use crate::report::{record, spec};

/// A config of one quick run on a stream file `stream` (path relative to the config).
fn config(stream: &str, method: &str) -> String {
    format!(
        r#"
name: tiny
stream: {stream}
model: {{kind: mlp, hidden: [16]}}
methods:
  - name: "{method}"
    optimizer: {{name: sgd, lr: 0.05}}
training: {{batch_size: 16, iterations: 3}}
seeds: [0]
"#
    )
}

/// `<dir>/exp.yaml`: [`config`] of one `sgd` run on the shipped class-incremental split MNIST.
fn quick_config(dir: &Path) -> PathBuf {
    let path = dir.join("exp.yaml");
    let stream = repo().join("tasks/split-mnist-class-il.yaml");
    std::fs::write(&path, config(&stream.display().to_string(), "sgd")).unwrap();
    path
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// A store of two methods over three seeds, written without training.
fn store(dir: &Path) {
    let s = RunStore::new(dir);
    for seed in 0..3u64 {
        s.write(
            &spec("sgd", seed),
            &record(0.01 * seed as f64, RunStatus::Completed),
        )
        .unwrap();
        s.write(
            &spec("sgd+grapes", seed),
            &record(0.03 + 0.01 * seed as f64, RunStatus::Completed),
        )
        .unwrap();
    }
}

#[test]
fn a_stream_name_cannot_write_outside_the_output_folder() {
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("a/b/c");
    std::fs::create_dir_all(&work).unwrap();
    let stream = std::fs::read_to_string(repo().join("tasks/split-mnist-class-il.yaml")).unwrap();
    let stream: String = stream
        .lines()
        .filter(|l| !l.starts_with("name:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        work.join("stream.yaml"),
        format!("name: ../../../escaped\n{stream}"),
    )
    .unwrap();
    std::fs::write(work.join("exp.yaml"), config("stream.yaml", "sgd")).unwrap();
    let out = work.join("out");
    let o = clbench_in(
        &[
            "run",
            path_str(&work.join("exp.yaml")),
            "--out",
            path_str(&out),
            "-q",
        ],
        &repo(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("stream.yaml") && t.contains("key `name`") && t.contains("holds `/`"),
        "{t}"
    );
    assert_eq!(
        files_under(root.path()).len(),
        2,
        "{:?}",
        files_under(root.path())
    );

    // A record that names its stream so (written by hand or another tool) stops the report
    // before any figure is drawn.
    let dir = root.path().join("store");
    let mut bad = spec("sgd", 0);
    bad.stream_name = "../escaped".into();
    RunStore::new(&dir)
        .write(&bad, &record(0.0, RunStatus::Completed))
        .unwrap();
    let o = clbench_in(&["report", path_str(&dir), "-q"], &repo());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("cannot name figure files"),
        "{}",
        text(&o)
    );
    assert!(!root.path().join("escaped-metrics.png").exists());
    assert!(!dir.join("figures").exists());
}

#[test]
fn a_sweep_is_counted_before_it_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let values = "[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]";
    let mut yaml = config(
        &repo()
            .join("tasks/split-mnist-class-il.yaml")
            .display()
            .to_string(),
        "sgd",
    );
    yaml.push_str("sweep:\n");
    for k in 0..10 {
        yaml.push_str(&format!("  methods.0.optimizer.x{k}: {values}\n"));
    }
    std::fs::write(dir.path().join("huge.yaml"), yaml).unwrap();
    let started = std::time::Instant::now();
    let o = clbench_in(&["validate", "huge.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("huge.yaml")
            && t.contains("sweep.methods.0.optimizer.x4")
            && t.contains("more than 10000"),
        "{t}"
    );
    assert!(started.elapsed().as_secs() < 20);
}

#[test]
fn run_refuses_a_folder_that_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = quick_config(dir.path());
    let mine = dir.path().join("mine");
    std::fs::create_dir_all(mine.join("tables")).unwrap();
    for f in ["metrics.csv", "summary.md", "tables/summary.csv"] {
        std::fs::write(mine.join(f), "my own data\n").unwrap();
    }
    let o = clbench_in(
        &["run", path_str(&cfg), "--out", path_str(&mine), "-q"],
        &repo(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("not a clbench results folder"),
        "{}",
        text(&o)
    );
    for f in ["metrics.csv", "summary.md", "tables/summary.csv"] {
        assert_eq!(
            std::fs::read_to_string(mine.join(f)).unwrap(),
            "my own data\n"
        );
    }
    assert_eq!(files_under(&mine).len(), 3);
    // What clbench itself makes before any result is fine: the log folder `clbench slurm`
    // creates, the shard stores of `--separate-outs` (merged into their parent).
    let slurm_out = dir.path().join("from-slurm");
    std::fs::create_dir_all(slurm_out.join("slurm")).unwrap();
    let o = clbench_in(
        &["run", path_str(&cfg), "--out", path_str(&slurm_out), "-q"],
        &repo(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let parent = dir.path().join("separate");
    std::fs::create_dir_all(parent.join("slurm")).unwrap();
    store(&parent.join("shard-0"));
    let o = clbench_in(
        &[
            "report",
            path_str(&parent.join("shard-0")),
            "--out",
            path_str(&parent),
            "-q",
        ],
        &repo(),
    );
    assert!(o.status.success(), "{}", text(&o));
    // `report --out` there is refused the same way.
    let s = dir.path().join("store");
    store(&s);
    let o = clbench_in(
        &["report", path_str(&s), "--out", path_str(&mine), "-q"],
        &repo(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(files_under(&mine).len(), 3);
}

#[test]
fn merges_refuse_disagreeing_copies_and_an_output_among_their_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a2, b) = (
        dir.path().join("A"),
        dir.path().join("A2"),
        dir.path().join("B"),
    );
    store(&a);
    // A2: the same run ids, one of them with other (self-consistent) results.
    let (runs, _) = RunStore::new(&a).load().unwrap();
    for (i, run) in runs.iter().enumerate() {
        let mut r = run.record.clone();
        if i == 0 {
            r.accuracy[3][0] = 0.123;
        }
        RunStore::new(&a2).write(&run.spec, &r).unwrap();
    }
    for order in [[&a, &a2], [&a2, &a]] {
        let out = dir.path().join("merged");
        let o = clbench_in(
            &[
                "report",
                path_str(order[0]),
                path_str(order[1]),
                "--out",
                path_str(&out),
                "-q",
            ],
            &repo(),
        );
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let t = text(&o);
        assert!(
            t.contains(&runs[0].id) && t.contains("different results"),
            "{t}"
        );
        assert!(!out.exists());
    }
    // Identical copies merge (as Slurm shards that both finished one run would).
    let same = dir.path().join("A3");
    for run in &runs {
        RunStore::new(&same).write(&run.spec, &run.record).unwrap();
    }
    let o = clbench_in(
        &[
            "report",
            path_str(&a),
            path_str(&same),
            "--out",
            path_str(&dir.path().join("m2")),
            "-q",
        ],
        &repo(),
    );
    assert!(o.status.success(), "{}", text(&o));

    // `report A B --out A` would write B's rows into A's tables.
    let mut other = spec("adam", 0);
    other.method.optimizer = serde_yaml::from_str("{name: adam, lr: 0.001}").unwrap();
    RunStore::new(&b)
        .write(&other, &record(0.0, RunStatus::Completed))
        .unwrap();
    let o = clbench_in(&["report", path_str(&a)], &repo());
    assert!(o.status.success(), "{}", text(&o));
    let before = std::fs::read(a.join("metrics.csv")).unwrap();
    let o = clbench_in(
        &[
            "report",
            path_str(&a),
            path_str(&b),
            "--out",
            path_str(&a),
            "-q",
        ],
        &repo(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("is one of the stores being merged"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(a.join("metrics.csv")).unwrap(), before);
    // …and a report of A into B, a store of other runs, would replace B's tables.
    let o = clbench_in(
        &["report", path_str(&a), "--out", path_str(&b), "-q"],
        &repo(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("holds runs of its own"), "{}", text(&o));
}

#[test]
fn report_check_names_skipped_runs_differing_and_stale_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("store");
    store(&s);
    let o = clbench_in(&["report", path_str(&s), "-q"], &repo());
    assert!(o.status.success(), "{}", text(&o));
    let o = clbench_in(&["report", path_str(&s), "--check", "-q"], &repo());
    assert!(o.status.success(), "{}", text(&o));
    // A file no record produces.
    std::fs::write(s.join("figures/old-stream-metrics.png"), b"stale").unwrap();
    // A run that can no longer be read is skipped: the check names it, and the file it changes.
    let (runs, _) = RunStore::new(&s).load().unwrap();
    let damaged = s.join("runs").join(&runs[0].id);
    std::fs::remove_file(damaged.join("metrics.json")).unwrap();
    let o = clbench_in(&["report", path_str(&s), "--check", "-q"], &repo());
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains(&runs[0].id), "{t}");
    assert!(
        t.contains("stale:") && t.contains("old-stream-metrics.png"),
        "{t}"
    );
    assert!(t.contains("metrics.csv (differs)"), "{t}");
}

#[test]
fn a_baseline_without_runs_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("store");
    store(&s);
    let o = clbench_in(
        &["report", path_str(&s), "--baseline", "sgdd", "-q"],
        &repo(),
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("--baseline sgdd") && t.contains("sgd+grapes"),
        "{t}"
    );
    assert!(!s.join("tables").exists());
    let o = clbench_in(
        &["report", path_str(&s), "--baseline", "sgd", "-q"],
        &repo(),
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn slurm_never_overwrites_the_config_or_a_foreign_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("exp.yaml");
    let yaml = config(
        &repo()
            .join("tasks/split-mnist-class-il.yaml")
            .display()
            .to_string(),
        "sgd",
    );
    std::fs::write(&cfg, &yaml).unwrap();
    let o = clbench_in(&["slurm", "exp.yaml", "--script", "exp.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("is the experiment's config"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), yaml);
    std::fs::write(dir.path().join("notes.sh"), "#!/bin/bash\necho mine\n").unwrap();
    let o = clbench_in(&["slurm", "exp.yaml", "--script", "notes.sh"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.sh")).unwrap(),
        "#!/bin/bash\necho mine\n"
    );
    // Its own script it replaces.
    for _ in 0..2 {
        let o = clbench_in(&["slurm", "exp.yaml", "--script", "job.sbatch"], dir.path());
        assert!(o.status.success(), "{}", text(&o));
    }
}

#[test]
fn slurm_lines_keep_hashes_and_quotes_in_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("exp#1");
    std::fs::create_dir_all(&work).unwrap();
    let yaml = config(
        &repo()
            .join("tasks/split-mnist-class-il.yaml")
            .display()
            .to_string(),
        "sgd",
    )
    .replace("name: tiny", "name: \"it's\"");
    std::fs::write(work.join("exp.yaml"), yaml).unwrap();
    let o = clbench_in(&["slurm", "exp.yaml", "--out", "out #2"], &work);
    assert!(o.status.success(), "{}", text(&o));
    let script = String::from_utf8_lossy(&o.stdout).to_string();
    let chdir = script
        .lines()
        .find(|l| l.starts_with("#SBATCH --chdir="))
        .unwrap();
    assert!(chdir.contains("exp#1\""), "{chdir}");
    let name = script
        .lines()
        .find(|l| l.starts_with("#SBATCH --job-name="))
        .unwrap();
    assert_eq!(name, "#SBATCH --job-name=\"clbench-it's\"");
    let output = script
        .lines()
        .find(|l| l.starts_with("#SBATCH --output="))
        .unwrap();
    assert_eq!(output, "#SBATCH --output=\"out #2/slurm/%A_%a.out\"");
    // A raw option sbatch would cut short or stop on is refused.
    for bad in ["--comment=a#b", "--comment='open", "--comment=a b"] {
        let o = clbench_in(&["slurm", "exp.yaml", &format!("--sbatch={bad}")], &work);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", text(&o));
    }
    let o = clbench_in(&["slurm", "exp.yaml", "--sbatch=--comment=\"a #1\""], &work);
    assert!(o.status.success(), "{}", text(&o));
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_stdout_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = quick_config(dir.path());
    let stream = repo().join("tasks/split-mnist-class-il.yaml");
    for args in [
        vec!["platform"],
        vec!["tasks", "describe", path_str(&stream)],
        vec!["validate", path_str(&cfg)],
        vec!["slurm", path_str(&cfg)],
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_clbench"))
            .args(&args)
            .current_dir(dir.path())
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("cannot write to standard output"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_file_that_is_not_yaml_is_quoted_short() {
    let dir = tempfile::tempdir().unwrap();
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for _ in 0..25 {
        pem.push_str("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n");
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    std::fs::write(dir.path().join("key.pem"), &pem).unwrap();
    let o = clbench_in(&["tasks", "describe", "key.pem"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("key.pem"), "{err}");
    assert!(err.len() < 400, "{} bytes: {err}", err.len());
}

#[test]
fn a_pipe_in_a_method_name_stays_in_its_markdown_cell() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("store");
    for seed in 0..2u64 {
        RunStore::new(&s)
            .write(&spec("a|b", seed), &record(0.0, RunStatus::Completed))
            .unwrap();
    }
    let o = clbench_in(&["report", path_str(&s), "-q"], &repo());
    assert!(o.status.success(), "{}", text(&o));
    let md = std::fs::read_to_string(s.join("summary.md")).unwrap();
    let cells = |line: &str| line.replace("\\|", "").matches('|').count();
    let header = md.lines().find(|l| l.starts_with("| Method")).unwrap();
    let row = md.lines().find(|l| l.contains("a\\|b")).unwrap();
    assert_eq!(cells(row), cells(header), "{md}");
}

#[test]
fn metrics_reads_a_matrix_written_by_r() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("m.csv"),
        "\"after_task\",\"task_1\",\"task_2\"\n0,0.1,0.1\n1,0.9,0.2\n2,0.7,0.95\n",
    )
    .unwrap();
    let o = clbench_in(&["metrics", "m.csv", "--format", "json"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((v["acc"].as_f64().unwrap() - 0.825).abs() < 1e-12);
}
