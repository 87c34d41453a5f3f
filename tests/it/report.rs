//! Reports built from a run store: frames, tables, figures, and bad stores.

use std::path::Path;
use std::process::Command;

use clbench::error::InputError;
use clbench::experiment::{RunSpec, RunStore};
use clbench::platform::{KernelPath, Platform};
use clbench::report::{build_report, Spread, TableOptions};
use clbench::train::{RunRecord, RunStatus, TaskTraining};

pub(crate) fn spec(method: &str, seed: u64) -> RunSpec {
    let yaml = format!(
        r#"
stream_name: toy
stream: {{dataset: mnist, kind: permuted, scenario: domain-incremental, tasks: 3}}
model: {{kind: mlp, hidden: [8]}}
method: {{name: "{method}", optimizer: {{name: sgd, lr: 0.1}}}}
training: {{batch_size: 8, iterations: 1}}
seed: {seed}
"#
    );
    serde_yaml::from_str(&yaml).unwrap()
}

/// A 3-task matrix whose final accuracies depend on `quality`.
pub(crate) fn record(quality: f64, status: RunStatus) -> RunRecord {
    let acc = vec![
        vec![0.1, 0.1, 0.1],
        vec![0.9, 0.12, 0.1],
        vec![0.7 + quality, 0.92, 0.11],
        vec![0.6 + quality, 0.8 + quality, 0.93],
    ];
    RunRecord {
        status,
        loss: acc
            .iter()
            .map(|r| r.iter().map(|a| 1.0 - a).collect())
            .collect(),
        accuracy: acc,
        baseline_accuracy: vec![0.1, 0.09, 0.11],
        tasks: (1..=3)
            .map(|t| TaskTraining {
                task: t,
                steps: 10,
                samples: 80,
                train_seconds: 0.5,
                samples_per_s: 160.0,
                mean_train_loss: Some(0.5),
                grapes_factors: vec![],
            })
            .collect(),
        curves: vec![],
        parameters: 100,
        platform: None,
    }
}

fn fill(store: &RunStore, reverse: bool) {
    let mut runs = Vec::new();
    for seed in 0..5u64 {
        runs.push((
            spec("sgd", seed),
            record(0.01 * seed as f64, RunStatus::Completed),
        ));
        runs.push((
            spec("sgd+grapes", seed),
            record(0.05 + 0.013 * seed as f64, RunStatus::Completed),
        ));
    }
    // Diverged in task 2: row 0 and the row after task 1, statistics of tasks 1 and 2.
    let mut diverged = record(
        0.0,
        RunStatus::Diverged {
            task: 2,
            step: 3,
            loss: "NaN".into(),
        },
    );
    diverged.accuracy.truncate(2);
    diverged.loss.truncate(2);
    diverged.tasks.truncate(2);
    runs.push((spec("adam", 0), diverged));
    if reverse {
        runs.reverse();
    }
    for (s, r) in runs {
        store.write(&s, &r).unwrap();
    }
}

fn options() -> TableOptions {
    TableOptions {
        baseline: Some("sgd".into()),
        ..TableOptions::default()
    }
}

#[test]
fn report_is_invariant_to_the_order_of_runs() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    fill(&RunStore::new(a.path()), false);
    fill(&RunStore::new(b.path()), true);
    let ra = build_report(&[a.path().to_path_buf()], a.path(), &options()).unwrap();
    let rb = build_report(&[b.path().to_path_buf()], b.path(), &options()).unwrap();
    assert_eq!(ra.markdown, rb.markdown);
    for f in [
        "metrics.csv",
        "tables/summary.csv",
        "tables/comparison.csv",
        "tables/accuracy.csv",
        "tables/summary.tex",
    ] {
        assert_eq!(
            std::fs::read(a.path().join(f)).unwrap(),
            std::fs::read(b.path().join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn report_writes_every_frame_table_and_figure() {
    let dir = tempfile::tempdir().unwrap();
    fill(&RunStore::new(dir.path()), false);
    let r = build_report(&[dir.path().to_path_buf()], dir.path(), &options()).unwrap();
    assert_eq!(r.runs, 11);
    for name in [
        "accuracy",
        "metrics",
        "summary",
        "comparison",
        "average_accuracy",
    ] {
        for ext in ["csv", "parquet", "json"] {
            let p = dir.path().join("tables").join(format!("{name}.{ext}"));
            assert!(std::fs::metadata(&p).unwrap().len() > 0, "{}", p.display());
        }
    }
    // Parquet starts and ends with its magic bytes.
    let pq = std::fs::read(dir.path().join("tables/metrics.parquet")).unwrap();
    assert_eq!(&pq[..4], b"PAR1");
    for fig in ["accuracy-matrix", "task-accuracy", "first-task", "metrics"] {
        let png = std::fs::read(dir.path().join(format!("figures/toy-{fig}.png"))).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(png.len() > 10_000, "{fig}: {} bytes", png.len());
        let svg =
            std::fs::read_to_string(dir.path().join(format!("figures/toy-{fig}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.contains("toy"), "{fig}");
        let pdf = std::fs::read(dir.path().join(format!("figures/toy-{fig}.pdf"))).unwrap();
        assert_pdf_figure(&pdf, fig);
    }
    // A second report of the same runs writes the same PDF bytes (no date, no random id).
    let again = tempfile::tempdir().unwrap();
    build_report(&[dir.path().to_path_buf()], again.path(), &options()).unwrap();
    for fig in ["accuracy-matrix", "metrics"] {
        let name = format!("figures/toy-{fig}.pdf");
        assert!(
            std::fs::read(dir.path().join(&name)).unwrap()
                == std::fs::read(again.path().join(&name)).unwrap(),
            "{name} differs between two reports of the same runs"
        );
    }
    // The diverged run is counted but not averaged.
    let md = &r.markdown;
    assert!(md.contains("| adam | 0 |"), "{md}");
    // GRAPES is better on every seed here: bold and marked against the baseline.
    let grapes_line = md.lines().find(|l| l.starts_with("| sgd+grapes")).unwrap();
    assert!(
        grapes_line.contains("**") && grapes_line.contains('†'),
        "{md}"
    );
    assert!(md.contains("paired t-test"));
}

/// A generated figure is a one-page vector PDF with its text in an embedded font subset (a
/// TrueType CID font with a ToUnicode map: no Type 3 font, no base-14 font left to the reader).
fn assert_pdf_figure(pdf: &[u8], fig: &str) {
    assert!(pdf.starts_with(b"%PDF-"), "{fig}");
    let text = String::from_utf8_lossy(pdf);
    for needed in [
        "/Type /Page",
        "/MediaBox",
        "/CIDFontType2",
        "/FontFile2",
        "/ToUnicode",
        "+DejaVuSans",
    ] {
        assert!(text.contains(needed), "{fig}: no {needed}");
    }
    for absent in ["/Type3", "/CreationDate", "/Producer", "/Subtype /Image"] {
        assert!(!text.contains(absent), "{fig}: {absent}");
    }
    assert!(text.trim_end().ends_with("%%EOF"), "{fig}");
}

#[test]
fn summary_and_comparison_hold_the_right_numbers() {
    let dir = tempfile::tempdir().unwrap();
    fill(&RunStore::new(dir.path()), false);
    let r = build_report(&[dir.path().to_path_buf()], dir.path(), &options()).unwrap();
    let s = &r.summary;
    let methods: Vec<&str> = s
        .column("method")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    assert_eq!(methods, vec!["adam", "sgd", "sgd+grapes"]);
    let n: Vec<u32> = s
        .column("n")
        .unwrap()
        .u32()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    assert_eq!(n, vec![0, 5, 5]);
    // sgd ACC per seed: (0.6+q + 0.8+q + 0.93)/3 with q = 0.01·seed → mean at q = 0.02.
    let acc = s.column("acc_mean").unwrap().f64().unwrap().get(1).unwrap();
    assert!((acc - (0.62 + 0.82 + 0.93) / 3.0).abs() < 1e-12);
    let lo = s
        .column("acc_ci95_low")
        .unwrap()
        .f64()
        .unwrap()
        .get(1)
        .unwrap();
    let hi = s
        .column("acc_ci95_high")
        .unwrap()
        .f64()
        .unwrap()
        .get(1)
        .unwrap();
    assert!(lo < acc && acc < hi);
    // Comparisons: adam has no completed runs, so (sgd, sgd+grapes) pairs over 5 seeds.
    let c = &r.comparison;
    let metric = c.column("metric").unwrap().str().unwrap().clone();
    let a = c.column("method_a").unwrap().str().unwrap().clone();
    let i = (0..c.height())
        .find(|&i| metric.get(i) == Some("acc") && a.get(i) == Some("sgd"))
        .unwrap();
    assert_eq!(c.column("n").unwrap().u32().unwrap().get(i), Some(5));
    assert_eq!(c.column("losses").unwrap().u32().unwrap().get(i), Some(5));
    assert!(c.column("p_t").unwrap().f64().unwrap().get(i).unwrap() < 0.001);
    // Exact Wilcoxon with 5 pairs all one way: p = 2/32.
    assert!(
        (c.column("p_wilcoxon")
            .unwrap()
            .f64()
            .unwrap()
            .get(i)
            .unwrap()
            - 0.0625)
            .abs()
            < 1e-12
    );
}

#[test]
fn half_written_and_corrupt_runs_are_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    fill(&store, false);
    // A run killed mid-write: files but no completion marker.
    let half = dir.path().join("runs/sgd-s9-0000000000");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("run.yaml"), "stream_name: toy\n").unwrap();
    // A complete-looking run whose record is damaged.
    let bad = dir.path().join("runs/sgd-s8-1111111111");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("complete.json"), "{}").unwrap();
    std::fs::write(
        bad.join("run.yaml"),
        serde_yaml::to_string(&spec("sgd", 8)).unwrap(),
    )
    .unwrap();
    std::fs::write(bad.join("record.json"), "{ truncated").unwrap();
    let r = build_report(&[dir.path().to_path_buf()], dir.path(), &options()).unwrap();
    assert_eq!(r.runs, 11);
    assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    assert!(r
        .warnings
        .iter()
        .any(|w| w.contains("sgd-s9") && w.contains("incomplete")));
    assert!(r.warnings.iter().any(|w| w.contains("record.json")));
}

#[test]
fn an_empty_results_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = build_report(&[dir.path().to_path_buf()], dir.path(), &options()).unwrap_err();
    assert!(e.is_input_error());
    assert!(e.to_string().contains("no complete runs"), "{e}");
}

#[test]
fn latex_table_and_pdf_figure_compile_with_pdflatex() {
    let have = Command::new("pdflatex")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs texlive; pdflatex must be present"
        );
        eprintln!("pdflatex not installed: skipping the compile check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fill(&RunStore::new(dir.path()), false);
    let opts = TableOptions {
        spread: Spread::Sem,
        caption: Some("Toy results with 100% & more_".into()),
        label: Some("tab:toy".into()),
        ..options()
    };
    build_report(&[dir.path().to_path_buf()], dir.path(), &opts).unwrap();
    // The table and a generated figure, included as it is (a paper's text width: 7 in here
    // would overflow article's default, so at \\linewidth; fonts scale with it).
    let doc = "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n\\begin{document}\n\\input{tables/summary.tex}\n\\begin{figure}\n\\includegraphics[width=\\linewidth]{figures/toy-metrics.pdf}\n\\caption{Toy metrics.}\n\\end{figure}\n\\end{document}\n";
    std::fs::write(dir.path().join("doc.tex"), doc).unwrap();
    let out = Command::new("pdflatex")
        .args(["-interaction=nonstopmode", "-halt-on-error", "doc.tex"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(Path::new(&dir.path().join("doc.pdf")).is_file());
    let log = std::fs::read_to_string(dir.path().join("doc.log")).unwrap_or_default();
    assert!(
        log.contains("figures/toy-metrics.pdf"),
        "the figure was not included:\n{log}"
    );
    let tex = std::fs::read_to_string(dir.path().join("tables/summary.tex")).unwrap();
    assert!(
        tex.contains("\\toprule")
            && tex.contains("\\label{tab:toy}")
            && tex.contains("100\\% \\& more\\_")
    );
    assert!(tex.contains("standard error"));
}

#[test]
fn metrics_command_reads_any_frameworks_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.csv");
    std::fs::write(
        &m,
        "after_task,task_1,task_2\n0,0.1,0.2\n1,0.9,0.3\n2,0.6,0.95\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clbench"))
        .args(["metrics", m.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!((v["acc"].as_f64().unwrap() - 0.775).abs() < 1e-12);
    assert!((v["bwt"].as_f64().unwrap() + 0.3).abs() < 1e-12);
    assert!((v["fwt"].as_f64().unwrap() - 0.1).abs() < 1e-12);
    assert!((v["forgetting"].as_f64().unwrap() - 0.3).abs() < 1e-12);
    assert!((v["learning_accuracy"].as_f64().unwrap() - 0.925).abs() < 1e-12);
    assert!((v["avg_incremental_accuracy"].as_f64().unwrap() - (0.9 + 0.775) / 2.0).abs() < 1e-12);
    std::fs::write(&m, "after_task,task_1\n0,0.1\n1,1.5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clbench"))
        .args(["metrics", m.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("m.csv:3: task_1: accuracy 1.5 is not in [0, 1]"));
    let one = dir.path().join("one.csv");
    std::fs::write(&one, "after_task,task_1\n0,0.1\n1,0.9\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_clbench"))
        .args(["metrics", one.to_str().unwrap(), "--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["bwt"].is_null() && v["fwt"].is_null() && v["forgetting"].is_null());
}

#[test]
fn learning_curves_are_exported_and_drawn_when_recorded() {
    use clbench::train::CurvePoint;
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    for seed in 0..2u64 {
        let mut r = record(0.01 * seed as f64, RunStatus::Completed);
        for task in 1..=3usize {
            for step in [5usize, 10] {
                for eval_task in 1..=task {
                    r.curves.push(CurvePoint {
                        training_task: task,
                        step,
                        eval_task,
                        accuracy: 0.5 + 0.01 * step as f64,
                    });
                }
            }
        }
        store.write(&spec("sgd", seed), &r).unwrap();
    }
    build_report(&[dir.path().to_path_buf()], dir.path(), &options()).unwrap();
    let csv = std::fs::read_to_string(dir.path().join("tables/learning_curves.csv")).unwrap();
    // 2 seeds × (1 + 2 + 3 tasks seen) × 2 steps.
    assert_eq!(csv.lines().count(), 1 + 2 * 6 * 2);
    assert!(
        csv.lines().nth(1).unwrap().contains(",0.5,1,"),
        "progress of step 5 of 10 in task 1: {csv}"
    );
    let png = std::fs::read(dir.path().join("figures/toy-learning-curves.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    // Stores without curves draw no such figure.
    let other = tempfile::tempdir().unwrap();
    fill(&RunStore::new(other.path()), false);
    build_report(&[other.path().to_path_buf()], other.path(), &options()).unwrap();
    assert!(!other
        .path()
        .join("figures/toy-learning-curves.png")
        .exists());
}

/// A platform for the tests below.
fn platform(path: KernelPath, cpu: &str) -> Platform {
    Platform {
        cpu: cpu.into(),
        ..Platform::current(path, "cpu", 1)
    }
}

#[test]
fn report_warns_when_candle_runs_of_one_group_come_from_different_platforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    for seed in 0..2u64 {
        // Candle runs of `sgd` on two CPUs; portable runs of `sgd+grapes` on two CPUs.
        let cpu = format!("CPU {seed}");
        let mut r = record(0.01, RunStatus::Completed);
        r.platform = Some(platform(KernelPath::Candle, &cpu));
        store.write(&spec("sgd", seed), &r).unwrap();
        let mut r = record(0.02, RunStatus::Completed);
        r.platform = Some(platform(KernelPath::Portable, &cpu));
        store.write(&spec("sgd+grapes", seed), &r).unwrap();
    }
    let report = build_report(&[dir.path().to_path_buf()], dir.path(), &options()).unwrap();
    let warned: Vec<&String> = report
        .warnings
        .iter()
        .filter(|w| w.contains("platform"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", report.warnings);
    assert!(
        warned[0].starts_with("toy / sgd:")
            && warned[0].contains("CPU 0")
            && warned[0].contains("CPU 1"),
        "{}",
        warned[0]
    );
    // The platforms and timings are in their own table, not in the results.
    let timing = std::fs::read_to_string(dir.path().join("tables/timing.csv")).unwrap();
    assert!(
        timing.contains(",CPU 0,") && timing.contains(",candle,") && timing.contains(",portable,")
    );
    let metrics = std::fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
    assert!(!metrics.contains("CPU") && !metrics.contains("samples_per_s"));
}

#[test]
fn timing_is_stored_beside_the_record_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    let path = store
        .write(&spec("sgd", 0), &record(0.0, RunStatus::Completed))
        .unwrap();
    let record_json = std::fs::read_to_string(path.join("record.json")).unwrap();
    assert!(!record_json.contains("train_seconds"), "{record_json}");
    let (runs, warnings) = store.load().unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(runs[0].record.tasks[2].train_seconds, 0.5);
    assert_eq!(runs[0].record.tasks[2].samples_per_s, 160.0);
    // A timing file that times other tasks than the record trained: the run is skipped, and
    // the warning names the file.
    std::fs::write(
        path.join("timing.json"),
        r#"{"tasks": [{"task": 1, "train_seconds": 1.0, "samples_per_s": 2.0}]}"#,
    )
    .unwrap();
    let (runs, warnings) = store.load().unwrap();
    assert!(runs.is_empty());
    assert!(warnings[0].contains("timing.json"), "{warnings:?}");
}

/// `spec` with the optimizer written out (`{name: sgd, lr: 0.1, grapes: …}`).
fn spec_with(method: &str, optimizer: &str, seed: u64) -> RunSpec {
    let mut s = spec(method, seed);
    s.method.optimizer = serde_yaml::from_str(optimizer).unwrap();
    s
}

#[test]
fn grapes_effect_pairs_runs_by_configuration_and_tests_the_paired_differences() {
    let dir = tempfile::tempdir().unwrap();
    let store = RunStore::new(dir.path());
    // `a` and `a+grapes` differ only in GRAPES; `b+grapes` has another learning rate than
    // `b`, so it is no pair of it, whatever its name says.
    let gains = [0.02, 0.03, 0.025, 0.04, 0.035];
    for seed in 0..5u64 {
        let g = gains[seed as usize];
        for (method, optimizer, quality) in [
            ("a", "{name: sgd, lr: 0.1}", 0.0),
            ("a+grapes", "{name: sgd, lr: 0.1, grapes: propagating}", g),
            ("b", "{name: sgd, lr: 0.2}", 0.0),
            (
                "b+grapes",
                "{name: sgd, lr: 0.3, grapes: propagating}",
                0.05,
            ),
        ] {
            let s = spec_with(method, optimizer, seed);
            store
                .write(
                    &s,
                    &record(quality + seed as f64 * 0.001, RunStatus::Completed),
                )
                .unwrap();
        }
    }
    let out = dir.path().join("report");
    let report = build_report(&[dir.path().to_path_buf()], &out, &options()).unwrap();
    use polars::prelude::SerReader;
    let frame = polars::prelude::CsvReadOptions::default()
        .try_into_reader_with_file_path(Some(out.join("tables/grapes_effect.csv")))
        .unwrap()
        .finish()
        .unwrap();
    let col = |c: &str| frame.column(c).unwrap().clone();
    let methods: Vec<String> = col("method_grapes")
        .str()
        .unwrap()
        .iter()
        .flatten()
        .map(str::to_string)
        .collect();
    assert!(methods.iter().all(|m| m == "a+grapes"), "{methods:?}");
    // ACC = mean of the last row: (0.6 + q + 0.8 + q + 0.93) / 3, so ΔACC = 2g/3 per seed.
    let metric = col("metric");
    let acc = (0..frame.height())
        .find(|&i| metric.str().unwrap().get(i) == Some("acc"))
        .unwrap();
    let diffs: Vec<f64> = gains.iter().map(|g| 2.0 * g / 3.0).collect();
    let mean = diffs.iter().sum::<f64>() / 5.0;
    let get = |c: &str| col(c).f64().unwrap().get(acc).unwrap();
    assert!((get("diff_mean") - mean).abs() < 1e-9);
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / 4.0).sqrt();
    // t(0.975, 4) = 2.776445.
    let half = 2.776445 * sd / 5f64.sqrt();
    assert!((get("diff_ci95_high") - (mean + half)).abs() < 1e-6);
    assert!(get("p_t") < 0.01, "a consistent gain is significant");
    // Exact signed-rank: all 5 differences positive → p = 2/32.
    assert!((get("p_wilcoxon") - 0.0625).abs() < 1e-12);
    assert_eq!(col("better").i64().unwrap().get(acc), Some(5));
    let md = std::fs::read_to_string(out.join("tables/grapes_effect.md")).unwrap();
    assert!(
        md.contains("| a+grapes vs a | ACC | 5 |") && md.contains("helps"),
        "{md}"
    );
    // Forgetting is lower with GRAPES here: also "helps" (lower is better).
    let forgetting_row = md.lines().find(|l| l.contains("| Forgetting |")).unwrap();
    assert!(forgetting_row.contains("helps"), "{forgetting_row}");
    assert!(report
        .files
        .iter()
        .any(|f| f.ends_with("figures/grapes-effect.png")));
}
