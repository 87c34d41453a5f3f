//! Optimizer update rules against hand-computed steps (PyTorch's conventions).

use candle_core::{Device, Tensor, Var};
use clbench::optim::OptimizerConfig;

fn run(yaml: &str, p0: f32, grads: &[f32]) -> Vec<f32> {
    let cfg: OptimizerConfig = serde_yaml::from_str(yaml).unwrap();
    let mut opt = cfg.check().unwrap().build();
    let var = Var::new(&[p0], &Device::Cpu).unwrap();
    let mut out = Vec::new();
    for &g in grads {
        let g = Tensor::new(&[g], &Device::Cpu).unwrap();
        opt.step(std::slice::from_ref(&var), &[Some(g)]).unwrap();
        out.push(var.as_tensor().to_vec1::<f32>().unwrap()[0]);
    }
    out
}

fn close(a: &[f32], b: &[f64]) {
    for (x, y) in a.iter().zip(b) {
        assert!((*x as f64 - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

#[test]
fn sgd_with_momentum_and_weight_decay() {
    // buf1 = g1 + wd p0 = 1 + 0.1 = 1.1 → p1 = 1 − 0.1·1.1 = 0.89
    // d2 = 2 + 0.1·0.89 = 2.089; buf2 = 0.9·1.1 + 2.089 = 3.079 → p2 = 0.89 − 0.3079 = 0.5821
    close(
        &run(
            "{name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 0.1}",
            1.0,
            &[1.0, 2.0],
        ),
        &[0.89, 0.5821],
    );
}

#[test]
fn sgd_nesterov() {
    // buf1 = 1, d = 1 + 0.9 = 1.9 → p1 = 1 − 0.19 = 0.81; buf2 = 0.9 + 1 = 1.9, d = 1 + 1.71 = 2.71
    close(
        &run(
            "{name: sgd, lr: 0.1, momentum: 0.9, nesterov: true}",
            1.0,
            &[1.0, 1.0],
        ),
        &[0.81, 0.81 - 0.271],
    );
}

#[test]
fn adam_first_step_moves_by_lr() {
    // m̂ = g, v̂ = g² → step = lr · g / (|g| + ε) ≈ lr.
    let p = run("{name: adam, lr: 0.01}", 0.5, &[3.0]);
    close(&p, &[0.5 - 0.01 * 3.0 / (3.0 + 1e-8)]);
}

#[test]
fn adamw_decays_the_weights_separately() {
    let p = run("{name: adamw, lr: 0.1, weight_decay: 0.5}", 2.0, &[1.0]);
    close(&p, &[2.0 * (1.0 - 0.05) - 0.1 * 1.0 / (1.0 + 1e-8)]);
}

#[test]
fn rmsprop_matches_its_formula() {
    // v = 0.01·4 = 0.04 → step = 2/(0.2 + ε) = 10 → p = 1 − 0.01·10
    close(&run("{name: rmsprop, lr: 0.01}", 1.0, &[2.0]), &[0.9]);
}

#[test]
fn reset_forgets_momentum() {
    let cfg: OptimizerConfig = serde_yaml::from_str("{name: sgd, lr: 1.0, momentum: 0.9}").unwrap();
    let mut opt = cfg.check().unwrap().build();
    let var = Var::new(&[0f32], &Device::Cpu).unwrap();
    let g = || Some(Tensor::new(&[1f32], &Device::Cpu).unwrap());
    opt.step(std::slice::from_ref(&var), &[g()]).unwrap();
    opt.reset();
    opt.step(std::slice::from_ref(&var), &[g()]).unwrap();
    // Without the reset the second step would be 1.9.
    assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), vec![-2.0]);
}

#[test]
fn a_missing_gradient_leaves_parameter_and_state_alone() {
    let cfg: OptimizerConfig =
        serde_yaml::from_str("{name: adam, lr: 0.1, weight_decay: 0.1}").unwrap();
    let mut opt = cfg.check().unwrap().build();
    let var = Var::new(&[1f32], &Device::Cpu).unwrap();
    opt.step(std::slice::from_ref(&var), &[None]).unwrap();
    assert_eq!(var.as_tensor().to_vec1::<f32>().unwrap(), vec![1.0]);
}

#[test]
fn invalid_settings_name_the_key() {
    let check = |yaml: &str| {
        let cfg: OptimizerConfig = serde_yaml::from_str(yaml).unwrap();
        cfg.check().unwrap_err()
    };
    assert_eq!(check("{name: sgd, lr: -0.1}").0, "lr");
    assert_eq!(check("{name: sgd, lr: 0.1, momentum: 1.5}").0, "momentum");
    assert_eq!(check("{name: sgd, lr: 0.1, nesterov: true}").0, "nesterov");
    assert_eq!(check("{name: adam, lr: 0.1, momentum: 0.9}").0, "momentum");
    let (key, msg) = check("{name: adamm, lr: 0.1}");
    assert_eq!(key, "name");
    assert!(msg.contains("did you mean `adam`"), "{msg}");
}
