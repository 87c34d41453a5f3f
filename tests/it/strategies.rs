//! Continual-learning strategies: each one's defining property, strength 0 == fine-tuning,
//! the engines against each other, and real training on split MNIST.

use std::ops::Range;
use std::path::Path;

use clbench::data::IMAGE_PIXELS;
use clbench::engine::{engine_for, Engine, FusedMlp, Part, TensorEngine};
use clbench::models::loss::{DistillScale, Targets};
use clbench::models::{ModelConfig, ModelKind, ModelSpec, Network};
use clbench::optim::GrapesMode;
use clbench::rng::SeedRng;
use clbench::strategy::lwf::{distillation_terms, DistillationTerm};
use clbench::strategy::memory::{dot_and_norm, project, Memory};
use clbench::strategy::penalty::{estimate, Importance, Penalized};
use clbench::strategy::{BudgetUnit, Context, FisherKind, LossWeight, Strategy};
use clbench::streams::{StreamSpec, TaskStream};
use clbench::train::{
    train_sequence, BackwardPath, Method, RunRecord, RunStatus, Silent, TrainSettings,
};

use crate::common::{method, settings, stream, DEV};

fn run(s: &TaskStream, model: &ModelConfig, m: &Method, st: &TrainSettings) -> RunRecord {
    let r = train_sequence(s, &model.check().unwrap(), m, st, 3, &DEV, &Silent).unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    r
}

fn final_acc(r: &RunRecord) -> f64 {
    let last = r.accuracy.last().unwrap();
    last.iter().sum::<f64>() / last.len() as f64
}

#[test]
fn every_strategy_with_strength_zero_equals_finetuning_exactly() {
    let s = stream("split-mnist-class-il.yaml", 0);
    let model = ModelConfig::mlp(&[64]);
    for opt in [
        "{name: adam, lr: 0.001}",
        "{name: sgd, lr: 0.05, momentum: 0.9, grapes: propagating}",
    ] {
        let st = settings(25, 32, BackwardPath::Auto);
        let base = run(&s, &model, &method(opt, None), &st);
        for strategy in [
            "{name: finetune}",
            "{name: ewc, lambda: 0, samples: 50}",
            "{name: online-ewc, lambda: 0, gamma: 0.9}",
            "{name: si, c: 0}",
            "{name: mas, lambda: 0, samples: 50}",
            "{name: l2, lambda: 0}",
            "{name: replay, budget: 10, weight: 0}",
            "{name: lwf, weight: 0}",
        ] {
            let r = run(&s, &model, &method(opt, Some(strategy)), &st);
            assert_eq!(r.accuracy, base.accuracy, "{opt} {strategy}");
            assert_eq!(r.loss, base.loss, "{opt} {strategy}");
        }
    }
}

/// Trains `strategy` by hand through the engine on the first `steps` batches of task 0, then
/// ends the task.
fn train_task_zero(
    s: &TaskStream,
    engine: &mut dyn Engine,
    strategy: &mut dyn Strategy,
    steps: usize,
) {
    let mut opt = method("{name: sgd, lr: 0.05}", None).optimizer.build();
    let task = &s.tasks[0];
    let mut batch = clbench::streams::Batch::default();
    let mut ctx = Context {
        stream: s,
        engine,
        grapes: GrapesMode::Off,
        seed: 5,
    };
    strategy.before_task(&mut ctx, 0).unwrap();
    for k in 0..steps {
        let idx: Vec<u32> = task.train[k * 16..(k + 1) * 16].to_vec();
        s.train_batch(0, &idx, &mut batch);
        ctx.engine.zero_grad();
        ctx.engine
            .accumulate(
                &Part {
                    pixels: &batch.pixels,
                    targets: Targets::Hard(&batch.targets),
                    head: task.head,
                    range: task.output_range.clone(),
                    weight: 1.0,
                },
                GrapesMode::Off,
            )
            .unwrap();
        let (p, g, t) = ctx.engine.state_mut();
        strategy.regularize(p, g, t);
        ctx.engine.apply(opt.as_mut()).unwrap();
        let (p, _, t) = ctx.engine.state_mut();
        strategy.after_update(p, t);
    }
    strategy.after_task(&mut ctx, 0).unwrap();
}

#[test]
fn each_regularizer_is_zero_right_after_its_own_task_and_pulls_back_after() {
    let s = stream("split-mnist-task-il.yaml", 0);
    let net = Network::new(
        &ModelSpec::mlp(&[32]),
        &s.outputs,
        &mut SeedRng::derive(1, "init", 0),
        &DEV,
    )
    .unwrap();
    for (name, mut strategy) in [
        (
            "ewc",
            Penalized::ewc(100.0, FisherKind::Exact, Some(64), None),
        ),
        (
            "online-ewc",
            Penalized::ewc(100.0, FisherKind::Empirical, Some(64), Some(0.5)),
        ),
        (
            "si",
            Penalized::si(1.0, 0.1, clbench::strategy::SiGradient::Total),
        ),
        ("mas", Penalized::mas(1.0, Some(64))),
        ("l2", Penalized::l2(1.0)),
    ] {
        let mut engine = FusedMlp::from_network(&net).unwrap();
        train_task_zero(&s, &mut engine, &mut strategy, 20);
        let params = engine.params().to_vec();
        let mut grads: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
        let touched = vec![true; params.len()];
        strategy.regularize(&params, &mut grads, &touched);
        assert!(
            grads.iter().flatten().all(|&g| g == 0.0),
            "{name}: non-zero penalty gradient at its own anchor"
        );
        let scale = strategy.penalty().value(&params).abs();
        assert!(scale < 1e-6, "{name}: penalty {scale} at its anchor");
        // Moving away costs something, and the gradient points back.
        let moved: Vec<Vec<f32>> = params
            .iter()
            .map(|p| p.iter().map(|v| v + 0.05).collect())
            .collect();
        assert!(strategy.penalty().value(&moved) > 0.0, "{name}");
        let mut grads: Vec<Vec<f32>> = params.iter().map(|p| vec![0.0; p.len()]).collect();
        strategy.regularize(&moved, &mut grads, &touched);
        let dot: f64 = grads.iter().flatten().map(|&g| g as f64 * 0.05).sum();
        assert!(dot > 0.0, "{name}: the penalty gradient must point back");
    }
}

/// Per-example gradients of a one-hidden-layer ReLU MLP with biases, by hand, in f64: returns
/// (logits, gradient of −log p(y) for each label y over `k` outputs).
fn hand_gradients(p: &[Vec<f32>], x: &[f32], hidden: usize, k: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let (w1, b1, w2, b2) = (&p[0], &p[1], &p[2], &p[3]);
    let a: Vec<f64> = (0..hidden)
        .map(|j| {
            b1[j] as f64
                + (0..IMAGE_PIXELS)
                    .map(|i| w1[j * IMAGE_PIXELS + i] as f64 * x[i] as f64)
                    .sum::<f64>()
        })
        .collect();
    let h: Vec<f64> = a.iter().map(|v| v.max(0.0)).collect();
    let z: Vec<f64> = (0..k)
        .map(|c| {
            b2[c] as f64
                + (0..hidden)
                    .map(|j| w2[c * hidden + j] as f64 * h[j])
                    .sum::<f64>()
        })
        .collect();
    let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
    let prob: Vec<f64> = z.iter().map(|v| (v - max).exp() / sum).collect();
    let grads = (0..k)
        .map(|y| {
            let d2: Vec<f64> = (0..k)
                .map(|c| prob[c] - if c == y { 1.0 } else { 0.0 })
                .collect();
            let d1: Vec<f64> = (0..hidden)
                .map(|j| {
                    if a[j] > 0.0 {
                        (0..k).map(|c| d2[c] * w2[c * hidden + j] as f64).sum()
                    } else {
                        0.0
                    }
                })
                .collect();
            let mut g = Vec::new();
            for &dj in &d1 {
                g.extend(x.iter().map(|&xi| dj * xi as f64));
            }
            g.extend(d1.iter().copied());
            for &dc in &d2 {
                g.extend(h.iter().map(|&hj| dc * hj));
            }
            g.extend(d2.iter().copied());
            g
        })
        .collect();
    (prob, grads)
}

#[test]
fn ewc_fisher_of_a_tiny_network_matches_a_hand_computation() {
    let mut s = stream("split-mnist-task-il.yaml", 0);
    s.tasks[0].train.truncate(6);
    let hidden = 3;
    let net = Network::new(
        &ModelSpec::mlp(&[hidden]),
        &s.outputs,
        &mut SeedRng::derive(2, "init", 0),
        &DEV,
    )
    .unwrap();
    let mut fused = FusedMlp::from_network(&net).unwrap();
    let mut tensor = TensorEngine::new(&net, BackwardPath::Autograd, &DEV).unwrap();
    let params = fused.params().to_vec();
    // Head 1 (task 1) has 2 outputs; parameters: hidden1 W, b, then head1 W, b.
    let own = [0usize, 1, 2, 3];
    let p: Vec<Vec<f32>> = own.iter().map(|&i| params[i].clone()).collect();
    let mut batch = clbench::streams::Batch::default();
    for kind in [
        FisherKind::Exact,
        FisherKind::Empirical,
        FisherKind::Predicted,
    ] {
        let mut expected = vec![0.0f64; p.iter().map(Vec::len).sum()];
        for &i in &s.tasks[0].train {
            s.train_batch(0, &[i], &mut batch);
            let (prob, g) = hand_gradients(&p, &batch.pixels, hidden, 2);
            let weights: Vec<(usize, f64)> = match kind {
                FisherKind::Exact => vec![(0, prob[0]), (1, prob[1])],
                FisherKind::Empirical => vec![(batch.targets[0] as usize, 1.0)],
                FisherKind::Predicted => vec![(if prob[1] > prob[0] { 1 } else { 0 }, 1.0)],
            };
            for (y, w) in weights {
                for (e, v) in expected.iter_mut().zip(&g[y]) {
                    *e += w * v * v / 6.0;
                }
            }
        }
        for engine in [&mut fused as &mut dyn Engine, &mut tensor] {
            let mut ctx = Context {
                stream: &s,
                engine,
                grapes: GrapesMode::Off,
                seed: 0,
            };
            let f = estimate(&mut ctx, 0, Importance::Fisher(kind), None).unwrap();
            let got: Vec<f32> = own.iter().flat_map(|&i| f[i].clone()).collect();
            let scale = expected.iter().cloned().fold(0.0, f64::max);
            assert!(scale > 0.0);
            for (k, (&g, &e)) in got.iter().zip(&expected).enumerate() {
                assert!(
                    (g as f64 - e).abs() <= 1e-4 * scale,
                    "{kind:?}: Fisher entry {k}: {g} vs hand {e}"
                );
            }
            // Parameters of the other heads are untouched by task 1's data.
            assert!(f[4..].iter().flatten().all(|&v| v == 0.0));
        }
    }
}

#[test]
fn agem_projection_never_points_against_the_reference_gradient() {
    let mut rng = SeedRng::derive(7, "agem-test", 0);
    let mut projected = 0;
    for trial in 0..200 {
        let shapes = [5usize, 3, 4];
        let mut draw = || -> Vec<Vec<f32>> {
            shapes
                .iter()
                .map(|&n| (0..n).map(|_| rng.uniform_f32(-1.0, 1.0)).collect())
                .collect()
        };
        let (mut g, r) = (draw(), draw());
        let mut g_touched = vec![true, trial % 3 != 0, true];
        let r_touched = vec![true, true, trial % 5 != 0];
        let dot = |g: &[Vec<f32>], gt: &[bool]| -> f64 {
            (0..3)
                .filter(|&i| gt[i] && r_touched[i])
                .flat_map(|i| g[i].iter().zip(&r[i]).map(|(a, b)| *a as f64 * *b as f64))
                .sum()
        };
        let before = dot(&g, &g_touched);
        let original = g.clone();
        let did = project(&mut g, &mut g_touched, &r, &r_touched);
        let after = dot(&g, &g_touched);
        assert_eq!(did, before < 0.0, "projects exactly when g·g_ref < 0");
        if did {
            projected += 1;
            assert!(
                after >= -1e-5,
                "trial {trial}: g·g_ref = {after} after projection"
            );
        } else {
            assert_eq!(g, original, "an agreeing gradient is left alone");
        }
    }
    assert!(
        projected > 20,
        "both cases exercised ({projected} projections)"
    );
}

#[test]
fn agem_sums_have_the_same_bits_on_one_thread_and_on_two() {
    // The two chains interleaved in one loop (one thread) or on two threads: either way each is
    // the serial sum, element after element in parameter order, that fixes A-GEM's bits.
    let mut rng = SeedRng::derive(11, "agem-sums", 0);
    let shapes = [7usize, 1000, 3, 513];
    let draw = |rng: &mut SeedRng| -> Vec<Vec<f32>> {
        shapes
            .iter()
            .map(|&n| (0..n).map(|_| rng.uniform_f32(-3.0, 3.0)).collect())
            .collect()
    };
    for trial in 0..12 {
        let (g, r) = (draw(&mut rng), draw(&mut rng));
        let g_touched: Vec<bool> = (0..4).map(|i| (trial >> i) & 1 == 0 || i == 1).collect();
        let r_touched: Vec<bool> = (0..4).map(|i| i != trial % 5).collect();
        let (mut dot, mut norm) = (0.0f64, 0.0f64);
        for i in 0..4 {
            if r_touched[i] && g_touched[i] {
                for (&x, &y) in g[i].iter().zip(&r[i]) {
                    dot += x as f64 * y as f64;
                }
            }
        }
        for i in (0..4).filter(|&i| r_touched[i]) {
            for &y in &r[i] {
                norm += y as f64 * y as f64;
            }
        }
        for threads in [1, 2] {
            let pool = clbench::engine::kernels::thread_pool(threads).unwrap();
            let (d, n) = pool.install(|| dot_and_norm(&g, &g_touched, &r, &r_touched));
            assert_eq!(
                (d.to_bits(), n.to_bits()),
                (dot.to_bits(), norm.to_bits()),
                "trial {trial}, {threads} thread(s)"
            );
        }
    }
}

#[test]
fn replay_memory_stays_within_budget_and_is_class_balanced() {
    let s = stream("split-mnist-class-il.yaml", 0);
    let mut per_class = Memory::new(30, BudgetUnit::Class);
    let mut total = Memory::new(50, BudgetUnit::Total);
    for t in 0..2 {
        // Every example twice (two epochs): each distinct example is offered once.
        for _ in 0..2 {
            for chunk in s.tasks[t].train.chunks(128) {
                let ex: Vec<(usize, u32)> = chunk.iter().map(|&i| (t, i)).collect();
                per_class.observe(&s, 1, &ex);
                total.observe(&s, 1, &ex);
                assert!(total.examples().len() <= 50);
                assert!(per_class.counts().iter().all(|(_, n)| *n <= 30));
            }
        }
    }
    let counts = per_class.counts();
    assert_eq!(counts.len(), 4, "two tasks of two classes");
    assert!(counts.iter().all(|(_, n)| *n == 30), "{counts:?}");
    let mut stored = per_class.examples();
    stored.sort_unstable();
    stored.dedup();
    assert_eq!(stored.len(), 120, "no example stored twice");
    // Every stored example has the class its slot says.
    for ((task, target), _) in counts {
        assert!(task < 2 && target < 4);
    }
    assert_eq!(total.examples().len(), 50);
    let from_first = total.examples().iter().filter(|e| e.0 == 0).count();
    // A uniform sample of ~24.7k examples, ~51% from task 1: far from all or none.
    assert!(
        (10..=40).contains(&from_first),
        "{from_first} of 50 from task 1"
    );
    // Only earlier tasks are replayed.
    assert!(total.sample_before(1, 20, 1).iter().all(|e| e.0 == 0));
    assert!(total.sample_before(0, 20, 1).is_empty());
}

#[test]
fn fused_and_tensor_engines_agree_on_every_objective() {
    let mut mlp = ModelConfig::mlp(&[20, 12]);
    mlp.activation = clbench::models::Activation::Tanh;
    let cnn = ModelConfig {
        kind: ModelKind::Cnn,
        hidden: Some(vec![12]),
        channels: Some([3, 4]),
        ..mlp.clone()
    };
    for cfg in [mlp, cnn] {
        engines_agree_on_every_objective(&cfg);
    }
}

/// The fused engine of `cfg`'s model (MLP or CNN) against autograd, on every kind of target,
/// GRAPES off and on, two weighted parts accumulated.
fn engines_agree_on_every_objective(cfg: &ModelConfig) {
    let s = stream("split-mnist-task-il.yaml", 0);
    let net = Network::new(
        &cfg.check().unwrap(),
        &s.outputs,
        &mut SeedRng::derive(3, "init", 0),
        &DEV,
    )
    .unwrap();
    let mut batch = clbench::streams::Batch::default();
    s.train_batch(1, &s.tasks[1].train[..10], &mut batch);
    let probs: Vec<f32> = (0..10)
        .flat_map(|i| [0.2 + 0.06 * i as f32, 0.8 - 0.06 * i as f32])
        .collect();
    for grapes in [GrapesMode::Off, GrapesMode::Propagating, GrapesMode::Local] {
        for (what, targets) in [
            ("hard", Targets::Hard(&batch.targets)),
            (
                "soft",
                Targets::Soft {
                    probs: &probs,
                    temperature: 2.0,
                    scale: DistillScale::None,
                },
            ),
            (
                "soft, T²",
                Targets::Soft {
                    probs: &probs,
                    temperature: 2.0,
                    scale: DistillScale::TSquared,
                },
            ),
            ("norm", Targets::SquaredNorm),
        ] {
            let mut fused = engine_for(&net, BackwardPath::Fused, &DEV).unwrap();
            let mut tensor = TensorEngine::new(&net, BackwardPath::Autograd, &DEV).unwrap();
            let mut losses = Vec::new();
            for e in [fused.as_mut(), &mut tensor as &mut dyn Engine] {
                e.zero_grad();
                // Two weighted parts accumulate into one gradient.
                for (head, w) in [(1, 0.7f32), (1, 0.3)] {
                    let l = e
                        .accumulate(
                            &Part {
                                pixels: &batch.pixels,
                                targets,
                                head,
                                range: None,
                                weight: w,
                            },
                            grapes,
                        )
                        .unwrap();
                    losses.push(l);
                }
            }
            assert!(
                (losses[0] - losses[2]).abs() < 1e-4 * losses[0].abs().max(1.0),
                "{what}"
            );
            same_gradients(
                fused.as_mut(),
                &mut tensor,
                &format!("{:?} {what} {grapes:?}", cfg.kind),
            );
        }
    }
}

/// The two engines reached the same parameters, with gradients within 1e-4 of the largest
/// (or 1e-3) of each parameter's.
fn same_gradients(a: &mut dyn Engine, b: &mut dyn Engine, what: &str) {
    let (ga, ta) = a.grads_mut();
    let (ga, ta) = (ga.to_vec(), ta.to_vec());
    let (gb, tb) = b.grads_mut();
    assert_eq!(ta, tb.to_vec(), "{what}: same parameters reached");
    for i in (0..ga.len()).filter(|&i| ta[i]) {
        let scale = gb[i].iter().map(|v| v.abs()).fold(1e-3, f32::max);
        let d = ga[i]
            .iter()
            .zip(&gb[i])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(d <= 1e-4 * scale, "{what}: parameter {i} differs by {d}");
    }
}

/// Several objectives on the same pixels, accumulated in one pass of the fused engines (the
/// output errors summed per head, one backward), give the gradients of one pass per objective
/// (autograd), on one head and across heads, MLP and CNN, GRAPES off and on.
#[test]
fn objectives_on_shared_pixels_accumulate_in_one_pass_as_in_several() {
    let mlp = ModelConfig::mlp(&[20, 12]);
    let cnn = ModelConfig {
        kind: ModelKind::Cnn,
        hidden: Some(vec![12]),
        channels: Some([3, 4]),
        ..mlp.clone()
    };
    let s = stream("split-mnist-task-il.yaml", 0);
    let mut batch = clbench::streams::Batch::default();
    s.train_batch(1, &s.tasks[1].train[..10], &mut batch);
    let probs: Vec<f32> = (0..10)
        .flat_map(|i| [0.2 + 0.06 * i as f32, 0.8 - 0.06 * i as f32])
        .collect();
    let soft = Targets::Soft {
        probs: &probs,
        temperature: 2.0,
        scale: DistillScale::None,
    };
    let objective = |targets, head, weight| clbench::engine::Objective {
        targets,
        head,
        range: None,
        weight,
    };
    let objectives = [
        objective(Targets::Hard(&batch.targets), 1, 0.6),
        objective(soft, 1, 0.3),
        objective(soft, 0, 0.5),
        objective(Targets::SquaredNorm, 0, 0.01),
    ];
    for cfg in [mlp, cnn] {
        let net = Network::new(
            &cfg.check().unwrap(),
            &s.outputs,
            &mut SeedRng::derive(5, "init", 0),
            &DEV,
        )
        .unwrap();
        for grapes in [GrapesMode::Off, GrapesMode::Propagating, GrapesMode::Local] {
            let mut fused = engine_for(&net, BackwardPath::Fused, &DEV).unwrap();
            let mut tensor = TensorEngine::new(&net, BackwardPath::Autograd, &DEV).unwrap();
            fused.zero_grad();
            tensor.zero_grad();
            let lf = fused
                .accumulate_all(&batch.pixels, &objectives, grapes)
                .unwrap();
            let lt = tensor
                .accumulate_all(&batch.pixels, &objectives, grapes)
                .unwrap();
            for (a, b) in lf.iter().zip(&lt) {
                assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "{lf:?} {lt:?}");
            }
            same_gradients(
                fused.as_mut(),
                &mut tensor,
                &format!("{:?} {grapes:?}", cfg.kind),
            );
        }
    }
}

#[test]
fn strategies_fight_class_incremental_forgetting_and_joint_is_the_upper_bound() {
    let s = stream("split-mnist-class-il.yaml", 0);
    let model = ModelConfig::mlp(&[100]);
    let st = settings(100, 64, BackwardPath::Auto);
    let adam = "{name: adam, lr: 0.001}";
    let finetune = final_acc(&run(&s, &model, &method(adam, None), &st));
    let replay = final_acc(&run(
        &s,
        &model,
        &method(adam, Some("{name: replay, budget: 50}")),
        &st,
    ));
    let joint = final_acc(&run(&s, &model, &method(adam, Some("{name: joint}")), &st));
    // Fine-tuning only remembers the last task (~20%); replay keeps a good part of the rest.
    assert!(finetune < 0.3, "finetune {finetune}");
    assert!(
        replay > finetune + 0.25,
        "replay {replay} vs finetune {finetune}"
    );
    assert!(
        joint > 0.85 && joint > replay,
        "joint {joint}, replay {replay}"
    );
}

/// `joint` with `data: once`: every task's budget (5 × 60 iterations) on all tasks' data in the
/// first phase, nothing after, so every row of the matrix is the same model, scored on every
/// class from the first row on (also with the softmax over the classes seen so far: all tasks
/// are met at once).
#[test]
fn joint_once_trains_every_budget_on_all_tasks_and_then_stands_still() {
    let model = ModelConfig::mlp(&[100]);
    let st = settings(60, 64, BackwardPath::Auto);
    let adam = "{name: adam, lr: 0.001}";
    for file in [
        "split-mnist-class-il.yaml",
        "split-mnist-class-il-seen-so-far.yaml",
    ] {
        let s = stream(file, 0);
        let r = run(
            &s,
            &model,
            &method(adam, Some("{name: joint, data: once}")),
            &st,
        );
        let steps: Vec<usize> = r.tasks.iter().map(|t| t.steps).collect();
        assert_eq!(steps, [300, 0, 0, 0, 0], "{file}");
        assert!(r.tasks[1..].iter().all(|t| t.mean_train_loss.is_none()));
        for row in &r.accuracy[2..] {
            assert_eq!(
                row, &r.accuracy[1],
                "{file}: the model changed after phase 1"
            );
        }
        // One phase on all ten digits learns every task at once.
        assert!(
            r.accuracy[1].iter().all(|&a| a > 0.8),
            "{file}: {:?}",
            r.accuracy[1]
        );
        let m = clbench::metrics::AccuracyMatrix::new(r.accuracy.clone(), None).unwrap();
        assert_eq!(m.bwt(), Some(0.0));
        assert_eq!(m.forgetting(), Some(0.0));
        assert_eq!(m.learning_accuracy(), m.acc());
    }
}

fn inline_stream(text: &str) -> TaskStream {
    let spec = StreamSpec::from_yaml(text, Path::new("inline.yaml")).unwrap();
    let file = clbench::streams::StreamFile {
        path: "inline.yaml".into(),
        spec,
    };
    TaskStream::build(&file, 0).unwrap()
}

#[test]
fn class_incremental_seen_so_far_trains_each_task_over_the_classes_met_so_far() {
    let stream_of = |rest: &str| {
        inline_stream(&format!(
            "dataset: mnist\nkind: split\ngroups: [[0, 1], [2, 3]]\n{rest}"
        ))
    };
    let seen = stream_of("scenario: class-incremental\nclass_output: seen-so-far\n");
    let all = stream_of("scenario: class-incremental\n");
    let masked = stream_of("scenario: task-incremental\ntask_output: masked\n");
    let model = ModelConfig::mlp(&[32]);
    let st = settings(30, 32, BackwardPath::Auto);
    let m = method("{name: adam, lr: 0.001}", None);
    let (rs, ra, rm) = (
        run(&seen, &model, &m, &st),
        run(&all, &model, &m, &st),
        run(&masked, &model, &m, &st),
    );
    // Task 1 learned with the softmax over its own two classes is, step for step, task 1 of
    // the masked task-incremental stream (same network, data and targets): same accuracy and
    // loss after it.
    assert_eq!(rs.accuracy[1][0], rm.accuracy[1][0]);
    assert_eq!(rs.loss[1][0], rm.loss[1][0]);
    // Over all four outputs it is another objective.
    assert_ne!(rs.loss[1][0], ra.loss[1][0]);
    // Task 2, not yet learned, is scored over the classes up to its own, i.e. all four here.
    assert_eq!(rs.loss[0][1], ra.loss[0][1]);
    // LwF's teacher spans what the earlier task was scored on before the current one, the
    // student what it is scored on now: with the softmax over the classes seen so far, the
    // earlier classes against the classes seen so far (the reference pads the targets with
    // zeros); over all outputs, all outputs for both; task-incremental masks, the task's own.
    let term = |teacher, student| DistillationTerm {
        head: 0,
        teacher,
        student,
        tasks: 1,
    };
    for view in [seen.at_stage(1), std::borrow::Cow::Borrowed(&seen)] {
        assert_eq!(distillation_terms(&view, 1), vec![term(0..2, 0..4)]);
    }
    assert_eq!(distillation_terms(&all, 1), vec![term(0..4, 0..4)]);
    assert_eq!(
        distillation_terms(&masked.at_stage(1), 1),
        vec![term(0..2, 0..2)]
    );
    assert!(distillation_terms(&seen, 0).is_empty());
}

#[test]
fn every_strategy_trains_with_grapes_on_both_engines_and_on_a_cnn() {
    let mut s = stream("split-mnist-task-il.yaml", 0);
    for t in &mut s.tasks {
        // Smaller test sets keep the CNN's evaluations short.
        t.test.truncate(400);
    }
    let mlp = ModelConfig::mlp(&[48]);
    let mut cnn = ModelConfig::mlp(&[32]);
    cnn.kind = ModelKind::Cnn;
    cnn.channels = Some([4, 8]);
    for strategy in [
        "{name: joint, data: all}",
        "{name: ewc, lambda: 10, samples: 40}",
        "{name: online-ewc, lambda: 10, gamma: 0.8, samples: 40, fisher: empirical}",
        "{name: si, c: 1, xi: 0.1}",
        "{name: mas, lambda: 1, samples: 40}",
        "{name: l2, lambda: 0.1}",
        "{name: replay, budget: 100, per: total, batch_size: 32}",
        "{name: agem, budget: 10}",
        "{name: gem, budget: 10}",
        "{name: lwf, temperature: 2, weight: 1}",
    ] {
        let m = method(
            "{name: sgd, lr: 0.05, momentum: 0.9, grapes: propagating}",
            Some(strategy),
        );
        for (model, backward, steps) in [
            (&mlp, BackwardPath::Auto, 30),
            (&mlp, BackwardPath::Explicit, 15),
            (&cnn, BackwardPath::Auto, 4),
        ] {
            let r = run(&s, model, &m, &settings(steps, 32, backward));
            assert!(
                r.accuracy.iter().flatten().all(|a| a.is_finite()),
                "{strategy}"
            );
            if model.kind == ModelKind::Mlp {
                // Every task is learned when it is trained (2-way task-IL heads; a strong
                // penalty costs some plasticity on the last task; with SGD, λ·F·lr must stay
                // well below 2 or the penalty itself oscillates).
                for t in 0..5 {
                    assert!(r.accuracy[t + 1][t] > 0.7, "{strategy}: {:?}", r.accuracy);
                }
            }
            assert!(r.tasks.iter().all(|t| !t.grapes_factors.is_empty()));
        }
    }
}

#[test]
fn strategy_blocks_are_validated_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tasks/split-mnist-task-il.yaml");
    let config = |strategy: &str| {
        let path = dir.path().join("x.yaml");
        std::fs::write(
            &path,
            format!(
                "stream: {}\nmodel: {{kind: mlp, hidden: [10]}}\nmethods:\n  - name: m\n    optimizer: {{name: sgd, lr: 0.1}}\n    strategy: {strategy}\ntraining: {{batch_size: 8, iterations: 1}}\nseeds: [0]\n",
                tasks.display()
            ),
        )
        .unwrap();
        clbench::experiment::Experiment::load(&path)
            .map(|e| e.variants[0].methods[0].strategy.clone())
    };
    let ok = config("{name: ewc, lambda: 100, fisher: true}").unwrap();
    assert_eq!(ok.config().name(), "ewc");
    for (strategy, expected) in [
        (
            "{name: ewc, lambda: -1}",
            "key `methods[0].strategy.lambda`: expected a finite number ≥ 0, got -1",
        ),
        (
            "{name: online-ewc, lambda: 1, gamma: 1.5}",
            "key `methods[0].strategy.gamma`",
        ),
        (
            "{name: replay, budget: 0}",
            "key `methods[0].strategy.budget`",
        ),
        (
            "{name: lwf, temperature: 0}",
            "key `methods[0].strategy.temperature`",
        ),
        ("{name: ewc, lamda: 1}", "unknown field `lamda`"),
        (
            "{name: ewc, lambda: 1, fisher: sampled}",
            "unknown Fisher `sampled`",
        ),
        ("{name: gem}", "missing field `budget`"),
        (
            "{name: gem, budget: 10, margin: -1}",
            "key `methods[0].strategy.margin`",
        ),
        (
            "{name: gem, budget: 10, per: class}",
            "unknown variant `class`",
        ),
        (
            "{name: gme, budget: 10}",
            "unknown strategy `gme`; expected one of finetune",
        ),
    ] {
        let e = config(strategy).unwrap_err().to_string();
        assert!(e.contains(expected), "{strategy}: {e}");
        assert!(e.contains("x.yaml"), "{strategy}: the file is named: {e}");
    }
}

/// The reference's `loss_fn_kd(scores, target_scores, T, norm=False)` in f64, by hand: the
/// teacher's softmax at T over `teacher`, zero-padded to the student's outputs `student`, the
/// cross-entropy with the student's log-softmax at T, summed over classes, mean over rows.
fn reference_kd(
    student_z: &[f32],
    teacher_z: &[f32],
    k: usize,
    t: f64,
    teacher: &Range<usize>,
    student: &Range<usize>,
) -> f64 {
    let softmax = |z: &[f32], r: &Range<usize>| -> Vec<f64> {
        let e: Vec<f64> = r.clone().map(|c| (z[c] as f64 / t).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|v| v / sum).collect()
    };
    let rows = student_z.len() / k;
    let mut total = 0.0;
    for b in 0..rows {
        let zs = &student_z[b * k..(b + 1) * k];
        let zt = &teacher_z[b * k..(b + 1) * k];
        let q = softmax(zt, teacher);
        let p = softmax(zs, student);
        for (i, c) in teacher.clone().enumerate() {
            total -= q[i] * p[c - student.start].ln();
        }
    }
    total / rows as f64
}

#[test]
fn lwf_distillation_is_the_reference_objective_checked_by_hand_and_finite_differences() {
    let s = stream("split-mnist-class-il.yaml", 0);
    let mut cfg = ModelConfig::mlp(&[6]);
    cfg.activation = clbench::models::Activation::Tanh;
    let spec = cfg.check().unwrap();
    let net = Network::new(&spec, &s.outputs, &mut SeedRng::derive(5, "init", 0), &DEV).unwrap();
    let teacher_net =
        Network::new(&spec, &s.outputs, &mut SeedRng::derive(6, "init", 0), &DEV).unwrap();
    let mut batch = clbench::streams::Batch::default();
    s.train_batch(2, &s.tasks[2].train[..5], &mut batch);
    let k = 10;
    // Class-incremental, task 3 over the classes seen so far: the teacher over 0..4, the
    // student over 0..6.
    let (teacher, student) = (0..4, 0..6);
    let t = 2.0f32;
    let mut teacher_engine = FusedMlp::from_network(&teacher_net).unwrap();
    let zt = teacher_engine.logits(None, &batch.pixels, 0).unwrap();
    let q = clbench::models::loss::softmax_rows(&zt, k, &teacher, t);
    for fused in [true, false] {
        let mut engine: Box<dyn Engine> = if fused {
            Box::new(FusedMlp::from_network(&net).unwrap())
        } else {
            Box::new(TensorEngine::new(&net, BackwardPath::Autograd, &DEV).unwrap())
        };
        let mut grads = Vec::new();
        for scale in [DistillScale::None, DistillScale::TSquared] {
            engine.zero_grad();
            let loss = engine
                .accumulate(
                    &Part {
                        pixels: &batch.pixels,
                        targets: Targets::Soft {
                            probs: &q,
                            temperature: t,
                            scale,
                        },
                        head: 0,
                        range: Some(student.clone()),
                        weight: 1.0,
                    },
                    GrapesMode::Off,
                )
                .unwrap() as f64;
            let zs = engine.logits(None, &batch.pixels, 0).unwrap();
            let by_hand =
                reference_kd(&zs, &zt, k, t as f64, &teacher, &student) * scale.factor(t) as f64;
            assert!(
                (loss - by_hand).abs() < 1e-5 * by_hand,
                "{scale:?}: {loss} vs {by_hand}"
            );
            grads.push(engine.grads_mut().0.to_vec());
        }
        // No T²: the gradient is the reference objective's, by central differences on the
        // largest gradient entries of every parameter tensor.
        let params = engine.params().to_vec();
        for (i, g) in grads[0].iter().enumerate() {
            let mut order: Vec<usize> = (0..g.len()).collect();
            order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
            for &j in &order[..3] {
                let eps = 1e-2f32;
                let mut at = |d: f32| {
                    let mut p = params.clone();
                    p[i][j] += d;
                    let z = engine.logits(Some(&p), &batch.pixels, 0).unwrap();
                    reference_kd(&z, &zt, k, t as f64, &teacher, &student)
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                assert!(
                    (g[j] as f64 - numeric).abs() < 0.02 * numeric.abs() + 1e-5,
                    "fused {fused}: parameter {i}[{j}]: {} vs {numeric}",
                    g[j]
                );
            }
            // T² multiplies it by T² = 4.
            for (a, b) in g.iter().zip(&grads[1][i]) {
                assert!((b - 4.0 * a).abs() <= 1e-5 * b.abs().max(1e-3), "{a} {b}");
            }
        }
    }
}

#[test]
fn lwf_terms_and_weights_follow_the_reference() {
    let domain = stream("split-mnist-domain-il.yaml", 0);
    let task = stream("split-mnist-task-il.yaml", 0);
    let class = stream("split-mnist-class-il.yaml", 0);
    // Domain-incremental: the earlier tasks share the head and its softmax: one term standing
    // for all of them, weighted (k − 1) under `per-task` (the reference multiplies the
    // distillation loss by the number of earlier contexts), (1 − 1/k) under `balanced`.
    let terms = distillation_terms(&domain, 3);
    assert_eq!(
        terms,
        vec![DistillationTerm {
            head: 0,
            teacher: 0..2,
            student: 0..2,
            tasks: 3
        }]
    );
    let counts: Vec<usize> = terms.iter().map(|t| t.tasks).collect();
    let per_task: LossWeight = serde_yaml::from_str("per-task").unwrap();
    let balanced: LossWeight = serde_yaml::from_str("balanced").unwrap();
    assert_eq!(per_task.weights(3), (1.0, 3.0));
    assert_eq!(per_task.term_weights(3, &counts), vec![3.0]);
    assert_eq!(balanced.term_weights(3, &counts), vec![0.75]);
    // Task-incremental: one term per earlier task, each at weight 1 (per-task) or sharing 3/4.
    let terms = distillation_terms(&task, 3);
    assert_eq!(terms.len(), 3);
    assert!(terms.iter().all(|t| t.tasks == 1 && t.teacher == t.student));
    assert_eq!(per_task.term_weights(3, &[1, 1, 1]), vec![1.0; 3]);
    assert_eq!(balanced.term_weights(3, &[1, 1, 1]), vec![0.25; 3]);
    // Class-incremental over all outputs: one softmax, one term standing for one task, so
    // `L_current + L_distill` as in the reference (no multiplication for class-IL).
    assert_eq!(
        distillation_terms(&class, 3),
        vec![DistillationTerm {
            head: 0,
            teacher: 0..10,
            student: 0..10,
            tasks: 1
        }]
    );
    // The strategy block's defaults are the reference's.
    let m = method("{name: adam, lr: 0.001}", Some("{name: lwf}"));
    let yaml = serde_yaml::to_string(m.strategy.config()).unwrap();
    assert!(
        yaml.contains("scale: none")
            && yaml.contains("weight: per-task")
            && yaml.contains("temperature: 2"),
        "{yaml}"
    );
}

/// SI's path integral on the total gradient (the reference implementation's, the default) or
/// on the task loss's (Zenke et al.'s): the same first task, different importances after it.
/// A config that leaves `gradient` out gets `total` written into its runs' configs; a stored
/// run config without the key (made before it existed, with `task-loss`) keeps its id.
#[test]
fn si_path_integral_on_the_total_or_the_task_loss_gradient() {
    use clbench::strategy::{SiGradient, StrategyConfig};
    let block: StrategyConfig = serde_yaml::from_str("{name: si, c: 1}").unwrap();
    let recorded = block.clone().with_recorded_defaults();
    assert!(serde_yaml::to_string(&recorded)
        .unwrap()
        .contains("gradient: total"));
    assert!(!serde_yaml::to_string(&block).unwrap().contains("gradient"));
    let old_spec: clbench::experiment::RunSpec = serde_yaml::from_str(
        "stream_name: s\nstream: {dataset: mnist, kind: permuted, scenario: domain-incremental, tasks: 2}\n\
         model: {kind: mlp, hidden: [8]}\n\
         method: {name: si, optimizer: {name: sgd, lr: 0.1}, strategy: {name: si, c: 1.0, xi: 0.1}}\n\
         training: {batch_size: 8, iterations: 1}\nseed: 0\n",
    )
    .unwrap();
    let again: clbench::experiment::RunSpec =
        serde_yaml::from_str(&serde_yaml::to_string(&old_spec).unwrap()).unwrap();
    assert_eq!(old_spec.id(), again.id());
    assert!(!serde_yaml::to_string(&old_spec)
        .unwrap()
        .contains("gradient"));

    let s = stream("split-mnist-domain-il.yaml", 0);
    let model = ModelConfig::mlp(&[32]);
    let records: Vec<RunRecord> = [SiGradient::Total, SiGradient::TaskLoss]
        .iter()
        .map(|g| {
            let block = format!(
                "{{name: si, c: 5, xi: 0.1, gradient: {}}}",
                serde_yaml::to_string(g).unwrap().trim()
            );
            let m = method("{name: sgd, lr: 0.05}", Some(&block));
            run(&s, &model, &m, &settings(40, 32, BackwardPath::Auto))
        })
        .collect();
    assert_eq!(
        records[0].accuracy[1], records[1].accuracy[1],
        "task 1 has no penalty yet"
    );
    assert_ne!(records[0].accuracy[5], records[1].accuracy[5]);
}

/// L2's penalty is `λ/2 Σ (θ − θ*)²` towards the weights after the last task only: its value
/// by hand, its gradient against central finite differences of its value, and a second task
/// that moves the anchor instead of adding a term.
#[test]
fn l2_penalty_value_and_gradient_by_hand_and_finite_differences() {
    let s = stream("split-mnist-task-il.yaml", 0);
    let net = Network::new(
        &ModelSpec::mlp(&[8]),
        &s.outputs,
        &mut SeedRng::derive(2, "init", 0),
        &DEV,
    )
    .unwrap();
    let lambda = 3.0f64;
    let mut strategy = Penalized::l2(lambda);
    let mut engine = FusedMlp::from_network(&net).unwrap();
    train_task_zero(&s, &mut engine, &mut strategy, 5);
    let anchor = engine.params().to_vec();
    // A point away from the anchor, different per element.
    let theta: Vec<Vec<f32>> = anchor
        .iter()
        .enumerate()
        .map(|(i, p)| {
            p.iter()
                .enumerate()
                .map(|(j, v)| v + 0.01 * (((i * 7 + j * 13) % 11) as f32 - 5.0))
                .collect()
        })
        .collect();
    let by_hand: f64 = theta
        .iter()
        .flatten()
        .zip(anchor.iter().flatten())
        .map(|(&t, &a)| (t as f64 - a as f64).powi(2))
        .sum::<f64>()
        * lambda
        / 2.0;
    let value = strategy.penalty().value(&theta);
    assert!(
        (value - by_hand).abs() < 1e-6 * by_hand.max(1.0),
        "{value} vs {by_hand}"
    );
    let mut grads: Vec<Vec<f32>> = theta.iter().map(|p| vec![0.0; p.len()]).collect();
    strategy.regularize(&theta, &mut grads, &vec![true; theta.len()]);
    let h = 1e-2f32;
    for (i, p) in theta.iter().enumerate() {
        for j in (0..p.len()).step_by(97) {
            let mut plus = theta.clone();
            plus[i][j] += h;
            let mut minus = theta.clone();
            minus[i][j] -= h;
            let fd = (strategy.penalty().value(&plus) - strategy.penalty().value(&minus))
                / (plus[i][j] as f64 - minus[i][j] as f64);
            let g = grads[i][j] as f64;
            assert!(
                (g - fd).abs() < 1e-3 * fd.abs().max(0.1),
                "param {i}[{j}]: {g} vs {fd}"
            );
        }
    }
    // After a second task the single term is anchored at the new weights.
    train_task_zero(&s, &mut engine, &mut strategy, 5);
    let second = engine.params().to_vec();
    assert_ne!(second, anchor);
    assert!(strategy.penalty().value(&second).abs() < 1e-6);
    assert!(strategy.penalty().value(&anchor) > 0.0);
}

/// GEM in a real run: after two tasks, the gradient of a step on the third is checked against
/// both memories; with margin 0 and ε 0 the projected gradient has a non-negative dot product
/// with each memory's gradient (recomputed here), and a step that conflicts is changed.
#[test]
fn gem_projection_meets_every_memory_constraint() {
    use clbench::strategy::gem::{Gem, GemMemory};
    use clbench::strategy::memory::accumulate_mixed;
    use clbench::strategy::StepData;
    use clbench::streams::MixedBatch;
    let s = stream("split-mnist-domain-il.yaml", 0);
    let net = Network::new(
        &ModelSpec::mlp(&[32]),
        &s.outputs,
        &mut SeedRng::derive(1, "init", 0),
        &DEV,
    )
    .unwrap();
    let mut engine = FusedMlp::from_network(&net).unwrap();
    let mut gem = Gem::new(40, GemMemory::Task, 0.0, 0.0);
    let mut opt = method("{name: sgd, lr: 0.1}", None).optimizer.build();
    let mut batch = MixedBatch::default();
    let mut conflicts = 0;
    for task in 0..3 {
        for k in 0..30 {
            let examples: Vec<(usize, u32)> = s.tasks[task].train[k * 32..(k + 1) * 32]
                .iter()
                .map(|&i| (task, i))
                .collect();
            batch.fill(&s, &examples);
            let mut ctx = Context {
                stream: &s,
                engine: &mut engine,
                grapes: GrapesMode::Off,
                seed: 5,
            };
            ctx.engine.zero_grad();
            accumulate_mixed(&mut ctx, &batch, 1.0).unwrap();
            let before: Vec<Vec<f32>> = ctx.engine.grads_mut().0.to_vec();
            let step = StepData {
                examples: &examples,
                batch: &batch,
            };
            gem.extend_gradients(&mut ctx, task, &step).unwrap();
            let after: Vec<Vec<f32>> = ctx.engine.grads_mut().0.to_vec();
            if task > 0 {
                // Each earlier task's memory gradient, recomputed from its stored examples.
                let mut dots = Vec::new();
                for earlier in 0..task {
                    let mem = gem_memory(&s, earlier, 40);
                    let mut mb = MixedBatch::default();
                    mb.fill(&s, &mem);
                    let mut c2 = Context {
                        stream: &s,
                        engine: &mut engine,
                        grapes: GrapesMode::Off,
                        seed: 5,
                    };
                    c2.engine.zero_grad();
                    accumulate_mixed(&mut c2, &mb, 1.0).unwrap();
                    let (r, t) = c2.engine.grads_mut();
                    let dot = |g: &[Vec<f32>]| -> f64 {
                        g.iter()
                            .zip(r.iter())
                            .zip(t.iter())
                            .filter(|(_, &t)| t)
                            .map(|((a, b), _)| {
                                a.iter()
                                    .zip(b)
                                    .map(|(&x, &y)| x as f64 * y as f64)
                                    .sum::<f64>()
                            })
                            .sum()
                    };
                    let norm = dot(&after).abs().max(dot(r).abs()).max(1e-12);
                    dots.push((dot(&before), dot(&after), norm));
                }
                for &(_, a, norm) in &dots {
                    assert!(a >= -1e-4 * norm, "task {task} step {k}: {dots:?}");
                }
                if dots.iter().any(|&(b, _, _)| b < 0.0) {
                    conflicts += 1;
                    assert_ne!(before, after, "a conflicting gradient is projected");
                } else {
                    assert_eq!(before, after, "a gradient without conflict is left alone");
                }
                // Put the (projected) gradient back, as the trainer would apply it.
                let (g, t) = engine.grads_mut();
                for (d, s) in g.iter_mut().zip(&after) {
                    d.copy_from_slice(s);
                }
                t.fill(true);
            }
            engine.apply(opt.as_mut()).unwrap();
        }
        let mut ctx = Context {
            stream: &s,
            engine: &mut engine,
            grapes: GrapesMode::Off,
            seed: 5,
        };
        gem.after_task(&mut ctx, task).unwrap();
    }
    assert!(
        conflicts > 0,
        "domain-IL split MNIST steps conflict with earlier tasks"
    );
    assert_eq!(gem.projected.0, conflicts);
}

/// The examples GEM stores for `task` (its documented draw: a partial Fisher–Yates shuffle of
/// the task's training indices from `SeedRng::derive(seed, "gem-memory", task)`).
fn gem_memory(s: &TaskStream, task: usize, keep: usize) -> Vec<(usize, u32)> {
    let mut ex = s.tasks[task].train.clone();
    let mut rng = SeedRng::derive(5, "gem-memory", task as u64);
    for k in 0..keep {
        let j = k + rng.below((ex.len() - k) as u64) as usize;
        ex.swap(k, j);
    }
    ex.truncate(keep);
    ex.into_iter().map(|i| (task, i)).collect()
}

/// A penalty's gradient added inside the optimizer's pass (`Strategy::pull`, what the trainer
/// does for every penalty) gives the bits of adding it first (`Strategy::regularize`, then the
/// update), for every optimizer rule, for L2 and for SI (whose pass also copies the gradient
/// into its path integral, with the penalty or before it), over several steps and the end of
/// the task, on one thread and on two (a 1024×256 layer is updated in parallel chunks).
#[test]
fn the_penalty_in_the_optimizer_pass_gives_the_bits_of_adding_it_first() {
    use clbench::engine::kernels::{run_on, thread_pool};
    let spec = ModelSpec::mlp(&[256]).for_input_side(32);
    let padded = {
        let text = "dataset: mnist\nkind: split\nscenario: task-incremental\npad: 2\n";
        let spec = StreamSpec::from_yaml(text, Path::new("padded.yaml")).unwrap();
        TaskStream::build(
            &clbench::streams::StreamFile {
                path: "padded.yaml".into(),
                spec,
            },
            0,
        )
        .unwrap()
    };
    let net = Network::new(
        &spec,
        &padded.outputs,
        &mut SeedRng::derive(4, "init", 0),
        &DEV,
    )
    .unwrap();
    for opt in [
        "{name: sgd, lr: 0.05}",
        "{name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.001}",
        "{name: adam, lr: 0.001}",
        "{name: adamw, lr: 0.001}",
        "{name: rmsprop, lr: 0.001, momentum: 0.5}",
        "{name: adagrad, lr: 0.01, weight_decay: 0.01}",
    ] {
        for (which, threads) in [("l2", 1), ("l2", 2), ("si-total", 2), ("si-task-loss", 1)] {
            let run = |fused: bool| {
                run_on(&thread_pool(threads).unwrap(), || {
                    let mut strategy = match which {
                        "l2" => Penalized::l2(50.0),
                        "si-total" => Penalized::si(5.0, 0.1, clbench::strategy::SiGradient::Total),
                        _ => Penalized::si(5.0, 0.1, clbench::strategy::SiGradient::TaskLoss),
                    };
                    let mut engine = FusedMlp::from_network(&net).unwrap();
                    train_task_zero(&padded, &mut engine, &mut strategy, 3);
                    let mut o = method(opt, None).optimizer.build();
                    let mut batch = clbench::streams::Batch::default();
                    let mut ctx_engine = engine;
                    strategy
                        .before_task(
                            &mut Context {
                                stream: &padded,
                                engine: &mut ctx_engine,
                                grapes: GrapesMode::Off,
                                seed: 5,
                            },
                            1,
                        )
                        .unwrap();
                    let mut engine = ctx_engine;
                    for k in 0..4 {
                        let idx: Vec<u32> = padded.tasks[1].train[k * 16..(k + 1) * 16].to_vec();
                        padded.train_batch(1, &idx, &mut batch);
                        engine.zero_grad();
                        engine
                            .accumulate(
                                &Part {
                                    pixels: &batch.pixels,
                                    targets: Targets::Hard(&batch.targets),
                                    head: padded.tasks[1].head,
                                    range: None,
                                    weight: 1.0,
                                },
                                GrapesMode::Off,
                            )
                            .unwrap();
                        if fused {
                            let mut pull =
                                strategy.pull().expect("an acting penalty offers a pull");
                            engine.apply_pulled(o.as_mut(), Some(&mut pull)).unwrap();
                        } else {
                            let (p, g, t) = engine.state_mut();
                            strategy.regularize(p, g, t);
                            engine.apply(o.as_mut()).unwrap();
                        }
                        let (p, _, t) = engine.state_mut();
                        strategy.after_update(p, t);
                    }
                    // The end of the task turns SI's path integral into its new importance.
                    strategy
                        .after_task(
                            &mut Context {
                                stream: &padded,
                                engine: &mut engine,
                                grapes: GrapesMode::Off,
                                seed: 5,
                            },
                            1,
                        )
                        .unwrap();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    let zeros: Vec<Vec<f32>> =
                        engine.params().iter().map(|p| vec![0.0; p.len()]).collect();
                    (
                        engine.params().iter().map(|p| bits(p)).collect::<Vec<_>>(),
                        strategy.penalty().value(&zeros).to_bits(),
                    )
                })
            };
            assert_eq!(run(true), run(false), "{which}, {opt}, {threads} thread(s)");
        }
    }
}
