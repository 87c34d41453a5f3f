//! Sequential training on real MNIST streams: learning, reproducibility, divergence, optimizers.

use candle_core::Device;
use clbench::models::{ModelConfig, ModelKind};
use clbench::optim::GrapesMode;
use clbench::train::{train_sequence, BackwardPath, RunStatus, Silent};

use crate::common::{method, settings, stream};

#[test]
fn split_mnist_task_incremental_learns_every_task_with_grapes() {
    let s = stream("split-mnist-task-il.yaml", 0);
    let model = ModelConfig::mlp(&[100]);
    let m = method(
        "{name: sgd, lr: 0.05, momentum: 0.9, grapes: propagating}",
        None,
    );
    let r = train_sequence(
        &s,
        &model.check().unwrap(),
        &m,
        &settings(60, 64, BackwardPath::Auto),
        0,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    assert_eq!(r.accuracy.len(), 6);
    for t in 0..5 {
        // Right after learning it, each 2-way task is nearly solved.
        assert!(
            r.accuracy[t + 1][t] > 0.9,
            "task {}: {:?}",
            t + 1,
            r.accuracy
        );
    }
    // Row 0 and the random baseline sit near chance for a 2-way head.
    assert!(r.baseline_accuracy.iter().all(|&b| b < 0.9));
    let factors = &r.tasks[0].grapes_factors;
    assert_eq!(factors.len(), 1);
    assert!((factors[0].stats.max - 2.0).abs() < 1e-9);
    assert!(factors[0].stats.mean >= 1.0 && factors[0].stats.mean <= 2.0);
    assert!(r
        .tasks
        .iter()
        .all(|t| t.samples == 60 * 64 && t.samples_per_s > 0.0));
}

#[test]
fn same_seed_gives_a_bit_identical_accuracy_matrix() {
    let s = stream("permuted-mnist-5.yaml", 9);
    let model = ModelConfig::mlp(&[64, 64]);
    let m = method(
        "{name: sgd, lr: 0.01, momentum: 0.9, grapes: propagating}",
        None,
    );
    let a = train_sequence(
        &s,
        &model.check().unwrap(),
        &m,
        &settings(40, 32, BackwardPath::Auto),
        9,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    let b = train_sequence(
        &stream("permuted-mnist-5.yaml", 9),
        &model.check().unwrap(),
        &m,
        &settings(40, 32, BackwardPath::Auto),
        9,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    assert_eq!(a.accuracy, b.accuracy);
    assert_eq!(a.loss, b.loss);
    assert_eq!(a.baseline_accuracy, b.baseline_accuracy);
    let c = train_sequence(
        &stream("permuted-mnist-5.yaml", 10),
        &model.check().unwrap(),
        &m,
        &settings(40, 32, BackwardPath::Auto),
        10,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    assert_ne!(a.accuracy, c.accuracy);
}

#[test]
fn explicit_and_autograd_paths_train_the_same_model() {
    let s = stream("split-mnist-class-il.yaml", 2);
    let mut model = ModelConfig::mlp(&[32, 32]);
    model.bias = false;
    let m = method(
        "{name: sgd, lr: 0.02, momentum: 0.9, grapes: propagating}",
        None,
    );
    let mut st = settings(15, 32, BackwardPath::Auto);
    let explicit = train_sequence(
        &s,
        &model.check().unwrap(),
        &m,
        &st,
        2,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    st.backward = BackwardPath::Autograd;
    let autograd = train_sequence(
        &s,
        &model.check().unwrap(),
        &m,
        &st,
        2,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    for (a, b) in explicit
        .accuracy
        .iter()
        .flatten()
        .zip(autograd.accuracy.iter().flatten())
    {
        // Float rounding differs between the two backward passes; accuracies agree to a few
        // test examples out of ~2000 per task.
        assert!((a - b).abs() < 0.01, "{a} vs {b}");
    }
}

#[test]
fn a_diverging_run_stops_cleanly_and_keeps_what_it_recorded() {
    let s = stream("permuted-mnist-5.yaml", 0);
    let model = ModelConfig::mlp(&[32]);
    let m = method("{name: sgd, lr: 1.0e6, momentum: 0.9}", None);
    let r = train_sequence(
        &s,
        &model.check().unwrap(),
        &m,
        &settings(200, 64, BackwardPath::Auto),
        0,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    match r.status {
        RunStatus::Diverged { task, step, .. } => {
            assert_eq!(task, 1);
            assert!((1..=200).contains(&step));
            assert_eq!(r.accuracy.len(), 1, "only row 0 was completed");
            assert_eq!(r.tasks.len(), 1);
            assert_eq!(r.tasks[0].steps, step - 1);
        }
        other => panic!("expected divergence, got {other:?}"),
    }
    assert!(r.accuracy[0].iter().all(|a| a.is_finite()));
    assert!(clbench::experiment::matrix_of(&r).is_none());
}

/// Regression: a run whose loss is not finite at its very first step has no mean training loss
/// (`None`, written as `null`) and NaN test losses (written as `null`); its record must read
/// back from the store, and the report must
/// count it as diverged instead of skipping it while the store calls it complete.
#[test]
fn a_run_diverging_at_its_first_step_round_trips_through_the_store() {
    use clbench::experiment::{plan, Experiment, RunStore};
    use clbench::models::init::Init;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("diverge.yaml");
    std::fs::write(
        &config,
        format!(
            "name: diverge\nstream: {}\nmodel: {{kind: mlp, hidden: [8]}}\n\
             methods:\n  - name: sgd\n    optimizer: {{name: sgd, lr: 0.1}}\n\
             training: {{batch_size: 16, iterations: 3}}\nseeds: [0]\n",
            crate::common::tasks_dir()
                .join("split-mnist-domain-il.yaml")
                .display()
        ),
    )
    .unwrap();
    let exp = Experiment::load(&config).unwrap();
    let run = plan(&exp, None).remove(0);
    // Weights of order 1e30 overflow the first forward pass: the loss is NaN at step 1.
    let model = run.model.clone().with_init(Init::Normal { std: 1e30 });
    let s = stream("split-mnist-domain-il.yaml", 0);
    let r = train_sequence(
        &s,
        &model,
        &run.method,
        &run.training,
        0,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    assert!(
        matches!(
            r.status,
            RunStatus::Diverged {
                task: 1,
                step: 1,
                ..
            }
        ),
        "{:?}",
        r.status
    );
    assert_eq!(r.tasks[0].steps, 0);
    assert_eq!(r.tasks[0].mean_train_loss, None);
    let store = RunStore::new(dir.path().join("out"));
    store.write(&run.spec, &r).unwrap();
    let (runs, warnings) = store.load().unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(runs.len(), 1);
    let back = &runs[0].record;
    assert_eq!((&back.status, &back.tasks), (&r.status, &r.tasks));
    // (serde_json's default float parsing may differ from the written value in the last bit.)
    let close = |a: &[Vec<f64>], b: &[Vec<f64>]| {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() <= 1e-15)
    };
    assert!(close(&back.accuracy, &r.accuracy));
    // The untrained model's outputs overflow: its test loss is NaN, stored as null, read as NaN.
    assert!(r.loss[0][0].is_nan() && back.loss[0][0].is_nan());
    let summary = runs[0].summary();
    assert_eq!(summary.status.as_str(), "diverged");
    assert_eq!(
        (summary.diverged_task, summary.diverged_step),
        (Some(1), Some(1))
    );
    assert_eq!(summary.metric("acc"), None);
}

#[test]
fn every_optimizer_learns_the_first_split_task() {
    let s = stream("split-mnist-domain-il.yaml", 0);
    let model = ModelConfig::mlp(&[64]);
    for yaml in [
        "{name: sgd, lr: 0.1}",
        "{name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.0001}",
        "{name: adam, lr: 0.001}",
        "{name: adamw, lr: 0.001, weight_decay: 0.01, grapes: local}",
        "{name: rmsprop, lr: 0.001, momentum: 0.5}",
        "{name: adagrad, lr: 0.01}",
        "{name: adagrad, lr: 0.01, grapes: propagating}",
    ] {
        let m = method(yaml, None);
        let r = train_sequence(
            &s,
            &model.check().unwrap(),
            &m,
            &settings(40, 64, BackwardPath::Auto),
            0,
            &Device::Cpu,
            &Silent,
        )
        .unwrap();
        assert!(r.accuracy[1][0] > 0.95, "{yaml}: {}", r.accuracy[1][0]);
    }
}

#[test]
fn cnn_trains_with_grapes_through_autograd() {
    let s = stream("split-mnist-task-il.yaml", 0);
    let mut model = ModelConfig::mlp(&[32]);
    model.kind = ModelKind::Cnn;
    model.channels = Some([4, 8]);
    let m = method("{name: adam, lr: 0.002, grapes: propagating}", None);
    let r = train_sequence(
        &s,
        &model.check().unwrap(),
        &m,
        &settings(25, 32, BackwardPath::Auto),
        0,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    assert!(r.accuracy[1][0] > 0.9, "{:?}", r.accuracy);
    assert_eq!(r.tasks[0].grapes_factors.len(), 3);
}

#[test]
fn learning_curves_are_recorded_every_n_steps() {
    let s = stream("split-mnist-class-il.yaml", 0);
    let model = ModelConfig::mlp(&[32]);
    let m = method("{name: sgd, lr: 0.05}", None);
    let mut st = settings(20, 32, BackwardPath::Auto);
    st.eval_every = Some(10);
    let r = train_sequence(
        &s,
        &model.check().unwrap(),
        &m,
        &st,
        0,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    // Task k is followed at steps 10 and 20 on tasks 1..=k.
    let points = r.curves.iter().filter(|c| c.training_task == 3).count();
    assert_eq!(points, 2 * 3);
    assert!(r.curves.iter().all(|c| c.eval_task <= c.training_task));
}

#[test]
fn off_grapes_mode_records_no_factors() {
    assert!(!GrapesMode::Off.is_on());
    let s = stream("split-mnist-class-il.yaml", 0);
    let m = method("{name: sgd, lr: 0.05}", None);
    let r = train_sequence(
        &s,
        &ModelConfig::mlp(&[16]).check().unwrap(),
        &m,
        &settings(5, 16, BackwardPath::Auto),
        0,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    assert!(r.tasks.iter().all(|t| t.grapes_factors.is_empty()));
}

/// A padded stream (`pad: 2`, 32×32 inputs) trains an MLP and a CNN whose inputs follow it, on
/// the fused engines and on autograd alike (the same gradients), and learns.
#[test]
fn a_padded_stream_trains_models_with_larger_inputs() {
    use clbench::engine::{engine_for, Engine, Part, TensorEngine};
    use clbench::models::loss::Targets;
    use clbench::models::Network;
    use clbench::rng::SeedRng;
    let spec = clbench::streams::StreamSpec::from_yaml(
        "dataset: mnist\nkind: split\nscenario: task-incremental\npad: 2\n",
        std::path::Path::new("padded.yaml"),
    )
    .unwrap();
    let file = clbench::streams::StreamFile {
        path: "padded.yaml".into(),
        spec,
    };
    let mut s = clbench::streams::TaskStream::build(&file, 0).unwrap();
    for t in &mut s.tasks {
        t.test.truncate(400);
    }
    let mlp = ModelConfig::mlp(&[32]);
    let mut cnn = ModelConfig::mlp(&[16]);
    cnn.kind = ModelKind::Cnn;
    cnn.channels = Some([3, 4]);
    let mut batch = clbench::streams::Batch::default();
    s.train_batch(0, &s.tasks[0].train[..16], &mut batch);
    for (cfg, first_layer) in [(&mlp, 1024 * 32), (&cnn, 3 * 5 * 5)] {
        let spec = cfg.check().unwrap().for_input_side(s.image_side());
        let net = Network::new(
            &spec,
            &s.outputs,
            &mut SeedRng::derive(1, "init", 0),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(net.params[0].as_tensor().elem_count(), first_layer);
        let mut fused = engine_for(&net, BackwardPath::Fused, &Device::Cpu).unwrap();
        let mut tensor = TensorEngine::new(&net, BackwardPath::Autograd, &Device::Cpu).unwrap();
        let part = Part {
            pixels: &batch.pixels,
            targets: Targets::Hard(&batch.targets),
            head: 0,
            range: None,
            weight: 1.0,
        };
        for e in [fused.as_mut(), &mut tensor as &mut dyn Engine] {
            e.zero_grad();
            e.accumulate(&part, GrapesMode::Propagating).unwrap();
        }
        let gf = fused.grads_mut().0.to_vec();
        let gt = tensor.grads_mut().0.to_vec();
        for (i, (a, b)) in gf.iter().zip(&gt).enumerate() {
            let scale = b.iter().map(|v| v.abs()).fold(1e-3, f32::max);
            let d = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(
                d <= 1e-4 * scale,
                "{:?}: parameter {i} differs by {d}",
                cfg.kind
            );
        }
        let m = method("{name: sgd, lr: 0.05, momentum: 0.9}", None);
        let r = train_sequence(
            &s,
            &cfg.check().unwrap(),
            &m,
            &settings(
                if cfg.kind == ModelKind::Cnn { 10 } else { 40 },
                32,
                BackwardPath::Auto,
            ),
            0,
            &Device::Cpu,
            &Silent,
        )
        .unwrap();
        assert_eq!(r.status, RunStatus::Completed);
        assert!(r.accuracy[1][0] > 0.8, "{:?}: {:?}", cfg.kind, r.accuracy);
    }
}

/// `training.lr_decay` as Stable SGD counts: task t = 1, 2, … trains at `max(lr·γ^t, floor)`.
/// Hand-traced: a one-task run with γ equals a run at lr·γ; with a floor above every decayed
/// rate, a run equals one at the floor; the formula over Stable SGD's 20 tasks.
#[test]
fn lr_decay_follows_the_hand_traced_schedule() {
    use clbench::train::LrDecay;
    let d = LrDecay {
        gamma: 0.8,
        floor: 5e-5,
    };
    let want: Vec<f64> = (1..=20).map(|t| (0.1 * 0.8f64.powi(t)).max(5e-5)).collect();
    let got: Vec<f64> = (0..20).map(|t| d.lr(0.1, t)).collect();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-15 * w, "{got:?} vs {want:?}");
    }

    let s = stream("split-mnist-task-il.yaml", 0);
    let model = ModelConfig::mlp(&[32]).check().unwrap();
    let run = |opt: &str, decay: Option<LrDecay>, tasks: usize| {
        let mut st = settings(20, 32, BackwardPath::Auto);
        st.lr_decay = decay;
        let mut s = s.clone();
        s.tasks.truncate(tasks);
        train_sequence(
            &s,
            &model,
            &method(opt, None),
            &st,
            1,
            &Device::Cpu,
            &Silent,
        )
        .unwrap()
    };
    let decayed = run(
        "{name: sgd, lr: 0.2, momentum: 0.5}",
        Some(LrDecay {
            gamma: 0.5,
            floor: 0.0,
        }),
        1,
    );
    let at_first_rate = run("{name: sgd, lr: 0.1, momentum: 0.5}", None, 1);
    assert_eq!(decayed.accuracy, at_first_rate.accuracy);
    assert_eq!(decayed.loss, at_first_rate.loss);
    let floored = run(
        "{name: sgd, lr: 0.2}",
        Some(LrDecay {
            gamma: 0.25,
            floor: 0.05,
        }),
        3,
    );
    let at_floor = run("{name: sgd, lr: 0.05}", None, 3);
    assert_eq!(floored.accuracy, at_floor.accuracy);
    // Without a floor the second task trains slower than at a constant rate: same first row,
    // different second.
    let halving = run(
        "{name: sgd, lr: 0.2}",
        Some(LrDecay {
            gamma: 0.5,
            floor: 0.0,
        }),
        2,
    );
    let constant = run("{name: sgd, lr: 0.1}", None, 2);
    assert_eq!(halving.accuracy[1], constant.accuracy[1]);
    assert_ne!(halving.accuracy[2], constant.accuracy[2]);
}

/// A model with dropout trains (the masks come from the run's seed: two runs give the same
/// bits, another seed other bits), differs from the same model without dropout, and a
/// dropout of 0 is no dropout.
#[test]
fn dropout_trains_reproducibly_from_the_run_seed() {
    let s = stream("split-mnist-task-il.yaml", 0);
    let mut cfg = ModelConfig::mlp(&[64, 64]);
    let run = |cfg: &ModelConfig, seed: u64| {
        train_sequence(
            &s,
            &cfg.check().unwrap(),
            &method(
                "{name: sgd, lr: 0.05, momentum: 0.8, grapes: propagating}",
                None,
            ),
            &settings(40, 16, BackwardPath::Auto),
            seed,
            &Device::Cpu,
            &Silent,
        )
        .unwrap()
    };
    let plain = run(&cfg, 0);
    cfg.dropout = Some(0.0);
    assert_eq!(run(&cfg, 0).accuracy, plain.accuracy);
    cfg.dropout = Some(0.5);
    let a = run(&cfg, 0);
    assert_eq!(a.accuracy, run(&cfg, 0).accuracy);
    assert_ne!(a.accuracy, plain.accuracy);
    for t in 0..5 {
        assert!(a.accuracy[t + 1][t] > 0.9, "{:?}", a.accuracy);
    }
    let mut cnn = cfg.clone();
    cnn.kind = ModelKind::Cnn;
    cnn.hidden = Some(vec![16]);
    cnn.channels = Some([3, 4]);
    let mut short = s.clone();
    for t in &mut short.tasks {
        t.test.truncate(300);
    }
    let r = train_sequence(
        &short,
        &cnn.check().unwrap(),
        &method("{name: adam, lr: 0.001}", None),
        &settings(5, 16, BackwardPath::Auto),
        0,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    assert_eq!(r.status, RunStatus::Completed);
}
