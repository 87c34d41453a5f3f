//! The fused CPU step against the reference paths: same gradients, same updates, same training.

use candle_core::{Device, Tensor};
use clbench::data::IMAGE_PIXELS;
use clbench::engine::tensor::batch_gradients;
use clbench::engine::BackwardPath;
use clbench::engine::{Dropout, Engine, FusedMlp};
use clbench::models::{logit_mask, mlp, one_hot, Activation, ModelConfig, Network};
use clbench::optim::{GrapesMode, OptimizerConfig, Pull};
use clbench::rng::SeedRng;
use clbench::streams::OutputLayout;

const DEV: Device = Device::Cpu;

fn batch(n: usize, classes: u64, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = SeedRng::derive(seed, "fused-test", 0);
    let x = (0..n * IMAGE_PIXELS)
        .map(|_| rng.uniform_f32(0.0, 1.0))
        .collect();
    let t = (0..n).map(|_| rng.below(classes) as u32).collect();
    (x, t)
}

fn net(hidden: &[usize], activation: Activation, bias: bool, outputs: &OutputLayout) -> Network {
    let mut cfg = ModelConfig::mlp(hidden);
    cfg.activation = activation;
    cfg.bias = bias;
    Network::new(
        &cfg.check().unwrap(),
        outputs,
        &mut SeedRng::derive(4, "init", 0),
        &DEV,
    )
    .unwrap()
}

fn compare(
    net: &Network,
    head: usize,
    mask: Option<std::ops::Range<usize>>,
    mode: GrapesMode,
    what: &str,
) {
    let k = net.params[net.heads[head].weight].dim(0).unwrap();
    let (x, t) = batch(24, mask.as_ref().map_or(k as u64, |r| r.len() as u64), 11);
    let t: Vec<u32> = t
        .iter()
        .map(|&v| v + mask.as_ref().map_or(0, |r| r.start as u32))
        .collect();
    let xt = Tensor::from_slice(&x, (24, IMAGE_PIXELS), &DEV).unwrap();
    let onehot = one_hot(&t, k, &DEV).unwrap();
    let m = mask.as_ref().map(|r| logit_mask(r, k, &DEV).unwrap());
    let (loss, reference, _) = batch_gradients(
        net,
        &xt,
        &onehot,
        m.as_ref(),
        head,
        mode,
        BackwardPath::Explicit,
    )
    .unwrap();
    let mut fused = FusedMlp::from_network(net).unwrap();
    let fused_loss = fused.step(&x, &t, head, mask, mode);
    assert!(
        (fused_loss - loss.to_scalar::<f32>().unwrap()).abs() < 1e-5,
        "{what}: loss"
    );
    for (i, (r, f)) in reference.iter().zip(fused.gradients()).enumerate() {
        match (r, f) {
            (Some(r), Some(f)) => {
                let r = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let d = r
                    .iter()
                    .zip(f)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                let scale = r.iter().map(|a| a.abs()).fold(0.0, f32::max).max(1e-3);
                // Same maths, different summation order (gemm blocking, factor sums): f32 rounding.
                assert!(
                    d <= 2e-6 * scale.max(1.0),
                    "{what}: parameter {i} differs by {d} (scale {scale})"
                );
            }
            (None, None) => {}
            _ => panic!("{what}: parameter {i} has a gradient on one side only"),
        }
    }
}

#[test]
fn fused_gradients_equal_the_explicit_reference() {
    let shared = OutputLayout::Shared { outputs: 10 };
    for mode in [GrapesMode::Off, GrapesMode::Propagating, GrapesMode::Local] {
        for (act, bias) in [
            (Activation::Relu, false),
            (Activation::Relu, true),
            (Activation::Tanh, true),
            (Activation::Sigmoid, false),
        ] {
            compare(
                &net(&[40, 24], act, bias, &shared),
                0,
                None,
                mode,
                &format!("{mode:?} {act:?} bias={bias}"),
            );
        }
        compare(
            &net(&[32], Activation::Relu, true, &shared),
            0,
            Some(4..7),
            mode,
            &format!("{mode:?} masked"),
        );
        let heads = OutputLayout::MultiHead { sizes: vec![2, 3] };
        compare(
            &net(&[16, 16, 16], Activation::Relu, true, &heads),
            1,
            None,
            mode,
            &format!("{mode:?} head 2"),
        );
    }
}

#[test]
fn slice_and_tensor_optimizer_updates_agree() {
    for yaml in [
        "{name: sgd, lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.01}",
        "{name: adamw, lr: 0.01}",
        "{name: rmsprop, lr: 0.01, momentum: 0.5}",
        "{name: adagrad, lr: 0.01, weight_decay: 0.01}",
    ] {
        let cfg: OptimizerConfig = serde_yaml::from_str(yaml).unwrap();
        let network = net(
            &[8],
            Activation::Relu,
            true,
            &OutputLayout::Shared { outputs: 10 },
        );
        let mut fused = FusedMlp::from_network(&network).unwrap();
        let (x, t) = batch(8, 10, 3);
        let (mut a, mut b) = (cfg.check().unwrap().build(), cfg.check().unwrap().build());
        for _ in 0..3 {
            fused.step(&x, &t, 0, None, GrapesMode::Off);
            let grads: Vec<Option<Tensor>> = fused
                .gradients()
                .iter()
                .zip(&network.params)
                .map(|(g, v)| g.map(|g| Tensor::from_slice(g, v.shape(), &DEV).unwrap()))
                .collect();
            fused.apply(a.as_mut()).unwrap();
            b.step(&network.params, &grads).unwrap();
        }
        let check = net(
            &[8],
            Activation::Relu,
            true,
            &OutputLayout::Shared { outputs: 10 },
        );
        fused.write_back(&check).unwrap();
        for (p, q) in check.params.iter().zip(&network.params) {
            let (p, q) = (
                p.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                q.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(p, q, "{yaml}");
        }
    }
}

#[test]
fn fused_step_matches_the_tensor_step_over_many_updates() {
    // Train the same network with both paths and compare the weights after 20 SGD+GRAPES steps.
    let cfg: OptimizerConfig =
        serde_yaml::from_str("{name: sgd, lr: 0.05, momentum: 0.9, grapes: propagating}").unwrap();
    let shared = OutputLayout::Shared { outputs: 10 };
    let a = net(&[64, 32], Activation::Relu, false, &shared);
    let b = net(&[64, 32], Activation::Relu, false, &shared);
    let mut fused = FusedMlp::from_network(&a).unwrap();
    let (mut oa, mut ob) = (cfg.check().unwrap().build(), cfg.check().unwrap().build());
    for s in 0..20 {
        let (x, t) = batch(16, 10, 100 + s);
        fused.step(&x, &t, 0, None, GrapesMode::Propagating);
        fused.apply(oa.as_mut()).unwrap();
        let xt = Tensor::from_slice(&x, (16, IMAGE_PIXELS), &DEV).unwrap();
        let onehot = one_hot(&t, 10, &DEV).unwrap();
        let g = mlp::backward(
            &b,
            &b.detached(),
            &xt,
            &onehot,
            None,
            0,
            Some(&b.grapes_factors().unwrap()),
        )
        .unwrap();
        ob.step(&b.params, &g.grads).unwrap();
    }
    fused.write_back(&a).unwrap();
    for (p, q) in a.params.iter().zip(&b.params) {
        let d = (p.as_tensor() - q.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-5, "weights drifted by {d}");
    }
}

/// Dropout on the fused step against candle's autograd through the same network with the same
/// masks multiplied in after every hidden activation: same loss and gradients, for each
/// activation (tanh and sigmoid take their derivative at the undropped output) and with
/// propagating GRAPES (the factors scale the error after the mask).
#[test]
fn fused_dropout_equals_autograd_with_the_same_masks() {
    use candle_core::D;
    for (act, mode) in [
        (Activation::Relu, GrapesMode::Off),
        (Activation::Tanh, GrapesMode::Off),
        (Activation::Sigmoid, GrapesMode::Off),
        (Activation::Relu, GrapesMode::Propagating),
    ] {
        let shared = OutputLayout::Shared { outputs: 10 };
        let network = net(&[32, 16], act, true, &shared);
        let (rows, p) = (12, 0.3f32);
        let (x, t) = batch(rows, 10, 5);
        let rng = || SeedRng::derive(9, "dropout", 1);
        // The masks the engine draws: layer by layer, [rows, width] each.
        let mut draw = Dropout::new(p, rng());
        let masks: Vec<Vec<f32>> = [32, 16]
            .iter()
            .map(|&w| {
                let mut m = vec![0.0; rows * w];
                draw.fill_mask(&mut m);
                m
            })
            .collect();
        assert!(masks.iter().flatten().any(|&m| m == 0.0));
        assert!(masks.iter().flatten().any(|&m| m > 1.0));

        let mut fused = FusedMlp::from_network(&network).unwrap();
        fused.set_dropout(Some(Dropout::new(p, rng()))).unwrap();
        let fused_loss = fused.step(&x, &t, 0, None, mode);

        // Autograd: h ← act(h Wᵀ + b) · mask, GRAPES' gradient scaling on the dropped output
        // (its factors multiply the error the layer's units pass back).
        let params = network.tracked();
        let factors = network.grapes_factors().unwrap();
        let mut h = Tensor::from_slice(&x, (rows, IMAGE_PIXELS), &DEV).unwrap();
        for (l, layer) in network.hidden.iter().enumerate() {
            let a =
                clbench::models::linear(&h, &params[layer.weight], layer.bias.map(|b| &params[b]))
                    .unwrap();
            let width = a.dim(1).unwrap();
            let mask = Tensor::from_slice(&masks[l], (rows, width), &DEV).unwrap();
            h = act.apply(&a).unwrap().mul(&mask).unwrap();
            if mode == GrapesMode::Propagating {
                h = clbench::optim::grapes::scale_gradient(&h, &factors[l]).unwrap();
            }
        }
        let out = &network.heads[0];
        let logits =
            clbench::models::linear(&h, &params[out.weight], out.bias.map(|b| &params[b])).unwrap();
        let onehot = one_hot(&t, 10, &DEV).unwrap();
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        let loss = (logp.mul(&onehot).unwrap().sum_all().unwrap() * (-1.0 / rows as f64)).unwrap();
        let store = loss.backward().unwrap();
        let what = format!("{act:?} {mode:?}");
        assert!(
            (fused_loss - loss.to_scalar::<f32>().unwrap()).abs() < 1e-5,
            "{what}: loss {fused_loss} vs {}",
            loss.to_scalar::<f32>().unwrap()
        );
        for (i, (v, f)) in network.params.iter().zip(fused.gradients()).enumerate() {
            let r = store
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let f = f.expect("every parameter has a gradient");
            let d = r
                .iter()
                .zip(f)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            let scale = r.iter().map(|a| a.abs()).fold(0.0, f32::max).max(1.0);
            assert!(d <= 2e-6 * scale, "{what}: parameter {i} differs by {d}");
        }
    }
}

/// Dropout drops only while training: the logits of a network with dropout switched on are
/// those without it, and switching it off restores the plain step bit for bit.
#[test]
fn dropout_leaves_evaluation_and_the_off_step_alone() {
    let shared = OutputLayout::Shared { outputs: 10 };
    let network = net(&[32], Activation::Relu, true, &shared);
    let (x, t) = batch(8, 10, 2);
    let mut plain = FusedMlp::from_network(&network).unwrap();
    let mut dropped = FusedMlp::from_network(&network).unwrap();
    dropped
        .set_dropout(Some(Dropout::new(0.5, SeedRng::derive(1, "dropout", 0))))
        .unwrap();
    assert_eq!(
        plain.logits(None, &x, 0).unwrap(),
        dropped.logits(None, &x, 0).unwrap()
    );
    let with = dropped.step(&x, &t, 0, None, GrapesMode::Off);
    let without = plain.step(&x, &t, 0, None, GrapesMode::Off);
    assert_ne!(
        with.to_bits(),
        without.to_bits(),
        "the masks change the loss"
    );
    dropped.set_dropout(None).unwrap();
    let again = dropped.step(&x, &t, 0, None, GrapesMode::Off);
    assert_eq!(again.to_bits(), without.to_bits());
    let g = |e: &FusedMlp| -> Vec<Vec<f32>> {
        e.gradients().iter().map(|g| g.unwrap().to_vec()).collect()
    };
    assert_eq!(g(&dropped), g(&plain));
}

/// The optimizer applied inside the backward pass, each weight updated block by block as its
/// gradient is computed (`Engine::accumulate_and_apply` on the fused MLP), gives the bits of
/// the gradients and the update as two passes: every rule, with and without biases and
/// GRAPES (both modes), with dropout, with a second objective on another head and a soft
/// one on the same head (LwF's), at batches below and above one packed block of depth (256),
/// on 1 to 3 threads, over several steps (the optimizers' state included).
#[test]
fn updating_inside_the_backward_pass_keeps_the_bits() {
    use clbench::engine::kernels::{run_on, thread_pool};
    use clbench::engine::Objective;
    use clbench::models::loss::{DistillScale, Targets};
    let rules = [
        "{name: sgd, lr: 0.05}",
        "{name: sgd, lr: 0.05, momentum: 0.9}",
        "{name: sgd, lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.01}",
        "{name: adam, lr: 0.001}",
        "{name: adamw, lr: 0.01}",
        "{name: rmsprop, lr: 0.01, momentum: 0.5}",
        "{name: adagrad, lr: 0.01, weight_decay: 0.01}",
    ];
    let heads = OutputLayout::MultiHead { sizes: vec![10, 4] };
    // (hidden, bias, rows, GRAPES, dropout, objectives: 1 = labels, 2 = + another head,
    // 3 = + soft targets on the same head; pull: 0 none, 1 a penalty's, 2 with SI's path
    // integral on the total gradient, 3 on the task loss's)
    type Case = (&'static [usize], bool, usize, GrapesMode, bool, usize, u8);
    let cases: &[Case] = &[
        (&[40, 24], true, 16, GrapesMode::Off, false, 1, 0),
        (&[40, 24], false, 16, GrapesMode::Propagating, false, 1, 1),
        (&[40, 24], true, 16, GrapesMode::Local, true, 2, 2),
        (&[200], true, 300, GrapesMode::Off, false, 3, 0),
        (&[200], true, 300, GrapesMode::Propagating, false, 1, 3),
        (&[], true, 16, GrapesMode::Off, false, 2, 1),
    ];
    for yaml in rules {
        let cfg: OptimizerConfig = serde_yaml::from_str(yaml).unwrap();
        for &(hidden, bias, rows, mode, dropout, objectives, pulled) in cases {
            for threads in [1, 2, 3] {
                let what = format!(
                    "{yaml}, {hidden:?} bias {bias}, batch {rows}, {mode:?}, dropout {dropout}, \
                     {objectives} objectives, pull {pulled}, {threads} threads"
                );
                let network = net(hidden, Activation::Relu, bias, &heads);
                // A penalty's coefficients: a ≥ 0, b anything, per parameter.
                let sizes: Vec<usize> = FusedMlp::from_network(&network)
                    .unwrap()
                    .params()
                    .iter()
                    .map(Vec::len)
                    .collect();
                let coefficients = |seed: u64, scale: f32| -> Vec<Vec<f32>> {
                    let mut rng = SeedRng::derive(seed, "pull", 0);
                    sizes
                        .iter()
                        .map(|&n| (0..n).map(|_| rng.uniform_f32(0.0, scale)).collect())
                        .collect()
                };
                let (a, b) = (coefficients(1, 2.0), coefficients(2, 0.1));
                let mut params = Vec::new();
                let mut paths = Vec::new();
                for updating in [false, true] {
                    let mut path: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
                    let mut engine = FusedMlp::from_network(&network).unwrap();
                    if dropout {
                        let rng = SeedRng::derive(9, "dropout", 1);
                        engine.set_dropout(Some(Dropout::new(0.25, rng))).unwrap();
                    }
                    let mut opt = cfg.check().unwrap().build();
                    let mut losses = Vec::new();
                    run_on(&thread_pool(threads).unwrap(), || {
                        for s in 0..3 {
                            let (x, t) = batch(rows, 10, 40 + s);
                            let (_, t2) = batch(rows, 4, 60 + s);
                            let soft: Vec<f32> = (0..rows * 10)
                                .map(|i| ((i * 7919) % 13) as f32 / 78.0 / 10.0 * 6.0)
                                .collect();
                            let mut parts = vec![Objective {
                                targets: Targets::Hard(&t),
                                head: 0,
                                range: None,
                                weight: 1.0,
                            }];
                            if objectives == 2 {
                                parts.push(Objective {
                                    targets: Targets::Hard(&t2),
                                    head: 1,
                                    range: None,
                                    weight: 0.5,
                                });
                            }
                            if objectives == 3 {
                                parts.push(Objective {
                                    targets: Targets::Soft {
                                        probs: &soft,
                                        temperature: 2.0,
                                        scale: DistillScale::None,
                                    },
                                    head: 0,
                                    range: None,
                                    weight: 3.0,
                                });
                            }
                            let mut pull = (pulled > 0).then(|| Pull {
                                s: 0.5,
                                a: &a,
                                b: &b,
                                path: (pulled > 1).then(|| (&mut path[..], pulled == 2)),
                            });
                            let l = if updating {
                                engine
                                    .accumulate_and_apply(
                                        &x,
                                        &parts,
                                        mode,
                                        opt.as_mut(),
                                        pull.as_mut(),
                                    )
                                    .unwrap()
                            } else {
                                engine.zero_grad();
                                let l = engine.accumulate_all(&x, &parts, mode).unwrap();
                                engine.apply_pulled(opt.as_mut(), pull.as_mut()).unwrap();
                                l
                            };
                            losses.push(l);
                        }
                    });
                    if updating {
                        assert!(
                            engine.gradients().iter().all(Option::is_none),
                            "{what}: no gradient is kept"
                        );
                    }
                    params.push((engine.params().to_vec(), losses));
                    paths.push(path);
                }
                let bits = |p: &Vec<Vec<f32>>| -> Vec<Vec<u32>> {
                    p.iter()
                        .map(|v| v.iter().map(|x| x.to_bits()).collect())
                        .collect()
                };
                assert_eq!(params[0].1, params[1].1, "{what}: losses");
                assert!(
                    bits(&params[0].0) == bits(&params[1].0),
                    "{what}: parameters"
                );
                assert!(bits(&paths[0]) == bits(&paths[1]), "{what}: path integral");
                if pulled > 1 {
                    assert!(
                        paths[0].iter().flatten().any(|&w| w != 0.0),
                        "{what}: no path integral"
                    );
                }
            }
        }
    }
}
