//! Sequential training on real MNIST streams: learning, reproducibility, divergence, optimizers.

use std::path::Path;

use candle_core::Device;
use clbench::models::{ModelConfig, ModelKind};
use clbench::optim::{GrapesMode, OptimizerConfig};
use clbench::streams::{StreamSpec, TaskStream};
use clbench::train::{
    train_sequence, BackwardPath, Budget, Method, RunStatus, Silent, TrainSettings,
};

fn stream(name: &str, seed: u64) -> TaskStream {
    let file = StreamSpec::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tasks")
            .join(name),
    )
    .unwrap();
    TaskStream::build(&file, seed).unwrap()
}

fn optimizer(yaml: &str) -> OptimizerConfig {
    serde_yaml::from_str(yaml).unwrap()
}

fn method(yaml: &str) -> Method {
    let cfg = optimizer(yaml);
    Method {
        name: cfg.name.clone(),
        optimizer: cfg.check().unwrap(),
        grapes: cfg.grapes,
        strategy: Default::default(),
    }
}

fn settings(iterations: usize, batch: usize) -> TrainSettings {
    TrainSettings {
        batch_size: batch,
        budget: Budget::Iterations(iterations),
        eval_batch_size: 2000,
        eval_every: None,
        reset_optimizer: false,
        backward: BackwardPath::Auto,
    }
}

#[test]
fn split_mnist_task_incremental_learns_every_task_with_grapes() {
    let s = stream("split-mnist-task-il.yaml", 0);
    let model = ModelConfig::mlp(&[100]);
    let m = method("{name: sgd, lr: 0.05, momentum: 0.9, grapes: propagating}");
    let r = train_sequence(&s, &model, &m, &settings(60, 64), 0, &Device::Cpu, &Silent).unwrap();
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
    let m = method("{name: sgd, lr: 0.01, momentum: 0.9, grapes: propagating}");
    let a = train_sequence(&s, &model, &m, &settings(40, 32), 9, &Device::Cpu, &Silent).unwrap();
    let b = train_sequence(
        &stream("permuted-mnist-5.yaml", 9),
        &model,
        &m,
        &settings(40, 32),
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
        &model,
        &m,
        &settings(40, 32),
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
    let m = method("{name: sgd, lr: 0.02, momentum: 0.9, grapes: propagating}");
    let mut st = settings(15, 32);
    let explicit = train_sequence(&s, &model, &m, &st, 2, &Device::Cpu, &Silent).unwrap();
    st.backward = BackwardPath::Autograd;
    let autograd = train_sequence(&s, &model, &m, &st, 2, &Device::Cpu, &Silent).unwrap();
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
    let m = method("{name: sgd, lr: 1.0e6, momentum: 0.9}");
    let r = train_sequence(&s, &model, &m, &settings(200, 64), 0, &Device::Cpu, &Silent).unwrap();
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
    ] {
        let m = method(yaml);
        let r =
            train_sequence(&s, &model, &m, &settings(40, 64), 0, &Device::Cpu, &Silent).unwrap();
        assert!(r.accuracy[1][0] > 0.95, "{yaml}: {}", r.accuracy[1][0]);
    }
}

#[test]
fn cnn_trains_with_grapes_through_autograd() {
    let s = stream("split-mnist-task-il.yaml", 0);
    let mut model = ModelConfig::mlp(&[32]);
    model.kind = ModelKind::Cnn;
    model.channels = Some([4, 8]);
    let m = method("{name: adam, lr: 0.002, grapes: propagating}");
    let r = train_sequence(&s, &model, &m, &settings(25, 32), 0, &Device::Cpu, &Silent).unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    assert!(r.accuracy[1][0] > 0.9, "{:?}", r.accuracy);
    assert_eq!(r.tasks[0].grapes_factors.len(), 3);
}

#[test]
fn learning_curves_are_recorded_every_n_steps() {
    let s = stream("split-mnist-class-il.yaml", 0);
    let model = ModelConfig::mlp(&[32]);
    let m = method("{name: sgd, lr: 0.05}");
    let mut st = settings(20, 32);
    st.eval_every = Some(10);
    let r = train_sequence(&s, &model, &m, &st, 0, &Device::Cpu, &Silent).unwrap();
    // Task k is followed at steps 10 and 20 on tasks 1..=k.
    let points = r.curves.iter().filter(|c| c.training_task == 3).count();
    assert_eq!(points, 2 * 3);
    assert!(r.curves.iter().all(|c| c.eval_task <= c.training_task));
}

#[test]
fn off_grapes_mode_records_no_factors() {
    assert!(!GrapesMode::Off.is_on());
    let s = stream("split-mnist-class-il.yaml", 0);
    let m = method("{name: sgd, lr: 0.05}");
    let r = train_sequence(
        &s,
        &ModelConfig::mlp(&[16]),
        &m,
        &settings(5, 16),
        0,
        &Device::Cpu,
        &Silent,
    )
    .unwrap();
    assert!(r.tasks.iter().all(|t| t.grapes_factors.is_empty()));
}
