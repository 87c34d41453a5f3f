//! The fused CNN step against candle's autograd (the reference), and autograd's CNN gradient
//! against finite differences.

use candle_core::{Device, Tensor};
use clbench::data::IMAGE_PIXELS;
use clbench::engine::kernels::{run_on, thread_pool};
use clbench::engine::tensor::batch_gradients;
use clbench::engine::{BackwardPath, Engine, FusedCnn, Part};
use clbench::models::loss::Targets;
use clbench::models::{logit_mask, one_hot, Activation, ModelConfig, ModelKind, Network};
use clbench::optim::{GrapesMode, OptimizerConfig};
use clbench::rng::SeedRng;
use clbench::streams::OutputLayout;

const DEV: Device = Device::Cpu;

fn batch(n: usize, classes: u64, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = SeedRng::derive(seed, "fused-cnn-test", 0);
    let x = (0..n * IMAGE_PIXELS)
        .map(|_| rng.uniform_f32(0.0, 1.0))
        .collect();
    let t = (0..n).map(|_| rng.below(classes) as u32).collect();
    (x, t)
}

fn cnn(
    channels: [usize; 2],
    hidden: &[usize],
    activation: Activation,
    bias: bool,
    outputs: &OutputLayout,
) -> Network {
    let cfg = ModelConfig {
        kind: ModelKind::Cnn,
        hidden: Some(hidden.to_vec()),
        activation,
        bias,
        channels: Some(channels),
        ..ModelConfig::mlp(&[1])
    };
    Network::new(
        &cfg.check().unwrap(),
        outputs,
        &mut SeedRng::derive(7, "init", 0),
        &DEV,
    )
    .unwrap()
}

/// Largest difference between two gradients, relative to the larger of 1e-3 and the
/// reference's largest magnitude.
fn relative_gap(reference: &[f32], got: &[f32]) -> f32 {
    let d = reference
        .iter()
        .zip(got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    d / reference.iter().map(|a| a.abs()).fold(1e-3, f32::max)
}

/// Fused gradients of one batch against autograd's.
fn compare(
    net: &Network,
    rows: usize,
    head: usize,
    mask: Option<std::ops::Range<usize>>,
    mode: GrapesMode,
    what: &str,
) {
    let k = net.params[net.heads[head].weight].dim(0).unwrap();
    let classes = mask.as_ref().map_or(k, |r| r.len()) as u64;
    let (x, t) = batch(rows, classes, 11);
    let t: Vec<u32> = t
        .iter()
        .map(|&v| v + mask.as_ref().map_or(0, |r| r.start as u32))
        .collect();
    let xt = Tensor::from_slice(&x, (rows, IMAGE_PIXELS), &DEV).unwrap();
    let onehot = one_hot(&t, k, &DEV).unwrap();
    let m = mask.as_ref().map(|r| logit_mask(r, k, &DEV).unwrap());
    let (loss, reference, factors) = batch_gradients(
        net,
        &xt,
        &onehot,
        m.as_ref(),
        head,
        mode,
        BackwardPath::Autograd,
    )
    .unwrap();
    let mut fused = FusedCnn::from_network(net).unwrap();
    fused.zero_grad();
    let part = Part {
        pixels: &x,
        targets: Targets::Hard(&t),
        head,
        range: mask,
        weight: 1.0,
    };
    let fused_loss = fused.accumulate(&part, mode).unwrap();
    let loss = loss.to_scalar::<f32>().unwrap();
    assert!(
        (fused_loss - loss).abs() < 1e-5 * loss.abs().max(1.0),
        "{what}: loss {fused_loss} vs {loss}"
    );
    if let Some(factors) = factors {
        for (l, (f, r)) in fused.factors().iter().zip(&factors).enumerate() {
            let r = r.to_vec1::<f32>().unwrap();
            assert!(relative_gap(&r, f) < 1e-6, "{what}: factors of layer {l}");
        }
    }
    for (i, (r, f)) in reference.iter().zip(fused.gradients()).enumerate() {
        match (r, f) {
            (Some(r), Some(f)) => {
                let r = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let gap = relative_gap(&r, f);
                // Same maths, other summation orders (candle's conv and matmul, our chains):
                // f32 rounding over sums of up to thousands of terms.
                assert!(
                    gap < 2e-5,
                    "{what}: parameter {i} differs by {gap} (relative)"
                );
            }
            (None, None) => {}
            _ => panic!("{what}: parameter {i} has a gradient on one side only"),
        }
    }
}

#[test]
fn fused_cnn_gradients_equal_autograd() {
    let shared = OutputLayout::Shared { outputs: 10 };
    for channels in [[8, 16], [16, 32]] {
        for mode in [GrapesMode::Off, GrapesMode::Propagating, GrapesMode::Local] {
            for (act, bias, rows) in [
                (Activation::Relu, true, 7),
                (Activation::Relu, false, 5),
                (Activation::Tanh, true, 3),
                (Activation::Sigmoid, false, 4),
                (Activation::Sigmoid, true, 1),
            ] {
                compare(
                    &cnn(channels, &[24], act, bias, &shared),
                    rows,
                    0,
                    None,
                    mode,
                    &format!("{channels:?} {mode:?} {act:?} bias={bias} rows={rows}"),
                );
            }
        }
    }
    for mode in [GrapesMode::Off, GrapesMode::Propagating, GrapesMode::Local] {
        compare(
            &cnn([4, 6], &[12, 10], Activation::Tanh, true, &shared),
            6,
            0,
            Some(2..5),
            mode,
            &format!("{mode:?} two hidden layers, masked"),
        );
        let heads = OutputLayout::MultiHead {
            sizes: vec![2, 3, 2],
        };
        compare(
            &cnn([3, 5], &[], Activation::Relu, true, &heads),
            9,
            1,
            None,
            mode,
            &format!("{mode:?} no hidden layer, head 2"),
        );
    }
}

/// Mean cross-entropy of a batch through the network's autograd forward (no graph kept).
fn loss_of(net: &Network, x: &Tensor, onehot: &Tensor) -> f64 {
    let logits = net.forward(&net.detached(), x, 0, None).unwrap();
    let (loss, _) = clbench::models::cross_entropy(&logits, onehot, None).unwrap();
    loss.to_scalar::<f32>().unwrap() as f64
}

/// The reference path itself: autograd's gradient of the convolution weights is the slope of
/// the loss (central differences). Candle's own `max_pool2d` backward passes a quarter of the
/// gradient on; this catches that.
#[test]
fn autograd_cnn_gradients_match_finite_differences() {
    let net = cnn(
        [2, 3],
        &[6],
        Activation::Tanh,
        true,
        &OutputLayout::Shared { outputs: 10 },
    );
    let (x, t) = batch(3, 10, 5);
    let xt = Tensor::from_slice(&x, (3, IMAGE_PIXELS), &DEV).unwrap();
    let onehot = one_hot(&t, 10, &DEV).unwrap();
    let (_, grads, _) = batch_gradients(
        &net,
        &xt,
        &onehot,
        None,
        0,
        GrapesMode::Off,
        BackwardPath::Autograd,
    )
    .unwrap();
    let eps = 1e-2f32;
    for layer in &net.hidden[..2] {
        let var = &net.params[layer.weight];
        let g = grads[layer.weight]
            .as_ref()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let w0 = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = g.iter().map(|v| v.abs()).fold(0.0, f32::max);
        // The largest entries, where a wrong factor cannot hide in the noise.
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &i in &order[..4] {
            let at = |v: f32| {
                let mut w = w0.clone();
                w[i] = v;
                var.set(&Tensor::from_vec(w, var.shape(), &DEV).unwrap())
                    .unwrap();
                loss_of(&net, &xt, &onehot)
            };
            let slope = (at(w0[i] + eps) - at(w0[i] - eps)) / (2.0 * eps as f64);
            at(w0[i]);
            assert!(
                (slope - g[i] as f64).abs() < 0.05 * scale as f64,
                "{}: weight {i}: autograd {} vs finite differences {slope}",
                layer.name,
                g[i]
            );
        }
    }
}

/// The fused CNN's gradients, updates and logits are the same bits for 1, 2 and 3 threads,
/// with dropout off and on (its masks drawn before the chunks run in parallel).
#[test]
fn fused_cnn_bits_do_not_depend_on_threads() {
    for dropout in [None, Some(0.25f32)] {
        cnn_bits_for_threads(dropout);
    }
}

fn cnn_bits_for_threads(dropout: Option<f32>) {
    let net = cnn(
        [8, 16],
        &[32],
        Activation::Relu,
        true,
        &OutputLayout::Shared { outputs: 10 },
    );
    let cfg: OptimizerConfig =
        serde_yaml::from_str("{name: sgd, lr: 0.05, momentum: 0.9, grapes: propagating}").unwrap();
    let run =
        |threads: usize| {
            run_on(&thread_pool(threads).unwrap(), || {
                let mut engine = FusedCnn::from_network(&net).unwrap();
                engine
                    .set_dropout(dropout.map(|p| {
                        clbench::engine::Dropout::new(p, SeedRng::derive(3, "dropout", 0))
                    }))
                    .unwrap();
                let mut opt = cfg.check().unwrap().build();
                for s in 0..3 {
                    let (x, t) = batch(64, 10, 20 + s);
                    engine.zero_grad();
                    let part = Part {
                        pixels: &x,
                        targets: Targets::Hard(&t),
                        head: 0,
                        range: None,
                        weight: 1.0,
                    };
                    engine.accumulate(&part, GrapesMode::Propagating).unwrap();
                    engine.apply(opt.as_mut()).unwrap();
                }
                let (x, _) = batch(300, 10, 99);
                let logits = engine.logits(None, &x, 0).unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                let params: Vec<Vec<u32>> = engine.params().iter().map(|p| bits(p)).collect();
                (params, bits(&logits))
            })
        };
    let one = run(1);
    assert_eq!(one, run(2), "1 vs 2 threads, dropout {dropout:?}");
    assert_eq!(one, run(3), "1 vs 3 threads, dropout {dropout:?}");
}

/// Evaluation in chunks gives autograd's forward logits, with the current parameters or a
/// snapshot.
#[test]
fn fused_cnn_logits_equal_the_autograd_forward() {
    let net = cnn(
        [8, 16],
        &[20],
        Activation::Sigmoid,
        true,
        &OutputLayout::MultiHead { sizes: vec![4, 6] },
    );
    let (x, _) = batch(300, 10, 3);
    let xt = Tensor::from_slice(&x, (300, IMAGE_PIXELS), &DEV).unwrap();
    let want = net
        .forward(&net.detached(), &xt, 1, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let mut engine = FusedCnn::from_network(&net).unwrap();
    let snapshot = engine.params().to_vec();
    for params in [None, Some(snapshot.as_slice())] {
        let got = engine.logits(params, &x, 1).unwrap();
        assert_eq!(got.len(), 300 * 6);
        assert!(relative_gap(&want, &got) < 1e-5);
    }
}

/// Dropout on the fused CNN step against candle's autograd through the same network with the
/// same masks: after each convolution's activation (before pooling, drawn chunk by chunk) and
/// after the fully connected hidden layer (on the forked stream): same loss and gradients.
#[test]
fn fused_cnn_dropout_equals_autograd_with_the_same_masks() {
    use candle_core::D;
    use clbench::engine::Dropout;
    for act in [Activation::Relu, Activation::Tanh] {
        let net = cnn(
            [3, 4],
            &[16],
            act,
            true,
            &OutputLayout::Shared { outputs: 10 },
        );
        let (rows, p) = (6, 0.3f32);
        let (x, t) = batch(rows, 10, 5);
        let rng = || SeedRng::derive(9, "dropout", 2);
        // The engine's draws: the dense stream forked first, then each stage's mask
        // ([c_out, rows, side²]) of the one chunk.
        let mut conv = Dropout::new(p, rng());
        let mut dense = conv.fork();
        let mask = |d: &mut Dropout, n: usize| {
            let mut m = vec![0.0; n];
            d.fill_mask(&mut m);
            m
        };
        let m1 = mask(&mut conv, 3 * rows * 24 * 24);
        let m2 = mask(&mut conv, 4 * rows * 8 * 8);
        let m3 = mask(&mut dense, rows * 16);

        let mut fused = FusedCnn::from_network(&net).unwrap();
        fused.set_dropout(Some(Dropout::new(p, rng()))).unwrap();
        fused.zero_grad();
        let fused_loss = fused
            .accumulate(
                &Part {
                    pixels: &x,
                    targets: Targets::Hard(&t),
                    head: 0,
                    range: None,
                    weight: 1.0,
                },
                GrapesMode::Off,
            )
            .unwrap();

        let params = net.tracked();
        let conv_mask = |m: &[f32], c: usize, s: usize| {
            Tensor::from_slice(m, (c, rows, s, s), &DEV)
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let stage = |h: &Tensor, l: usize, m: &Tensor| {
            let layer = &net.hidden[l];
            let b = &params[layer.bias.unwrap()];
            let a = h
                .conv2d(&params[layer.weight], 0, 1, 1, 1)
                .unwrap()
                .broadcast_add(&b.reshape((1, (), 1, 1)).unwrap())
                .unwrap();
            let h = act.apply(&a).unwrap().mul(m).unwrap();
            clbench::models::pool::max_pool_2x2(&h).unwrap()
        };
        let h = Tensor::from_slice(&x, (rows, 1, 28, 28), &DEV).unwrap();
        let h = stage(&h, 0, &conv_mask(&m1, 3, 24));
        let h = stage(&h, 1, &conv_mask(&m2, 4, 8)).flatten_from(1).unwrap();
        let fc = &net.hidden[2];
        let h = act
            .apply(
                &clbench::models::linear(&h, &params[fc.weight], fc.bias.map(|b| &params[b]))
                    .unwrap(),
            )
            .unwrap()
            .mul(&Tensor::from_slice(&m3, (rows, 16), &DEV).unwrap())
            .unwrap();
        let out = &net.heads[0];
        let logits =
            clbench::models::linear(&h, &params[out.weight], out.bias.map(|b| &params[b])).unwrap();
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
        let onehot = one_hot(&t, 10, &DEV).unwrap();
        let loss = (logp.mul(&onehot).unwrap().sum_all().unwrap() * (-1.0 / rows as f64)).unwrap();
        let store = loss.backward().unwrap();
        let want = loss.to_scalar::<f32>().unwrap();
        assert!(
            (fused_loss - want).abs() < 1e-5,
            "{act:?}: loss {fused_loss} vs {want}"
        );
        for (i, (v, g)) in net.params.iter().zip(fused.gradients()).enumerate() {
            let r = store
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let gap = relative_gap(&r, g.expect("every parameter has a gradient"));
            assert!(
                gap < 2e-5,
                "{act:?}: parameter {i} differs by {gap} (relative)"
            );
        }
    }
}
