//! One optimizer step: gradients by the explicit MLP backward or by autograd, GRAPES applied,
//! then the optimizer update.

use std::ops::Range;

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::IMAGE_PIXELS;
use crate::models::loss::{loss_tensor, Targets};
use crate::models::{cross_entropy, logit_mask, mlp, one_hot, Network};
use crate::optim::{grapes, GrapesMode, Optimizer};
use crate::streams::{Batch, Task, TaskStream};

/// What a backward pass returns: the loss, one gradient per parameter (`None` for parameters
/// the loss does not reach, such as other tasks' heads), and the GRAPES factors of the hidden
/// layers when GRAPES is on.
pub type Gradients = (Tensor, Vec<Option<Tensor>>, Option<Vec<Tensor>>);

/// Which backward pass computes the gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackwardPath {
    /// MLPs: the fused step on CPU, the explicit backward elsewhere; other models: autograd.
    #[default]
    Auto,
    /// Always candle's autograd (the reference path).
    Autograd,
    /// The explicit MLP backward on candle tensors (fails for CNNs).
    Explicit,
    /// The fused, allocation-free MLP step on CPU ([`crate::models::fused`]).
    Fused,
}

impl BackwardPath {
    /// The concrete path for `net`, ignoring the device (`Fused` and `Explicit` compute the same
    /// gradients; tensor-level callers get `Explicit` for both).
    pub fn resolve(self, net: &Network) -> BackwardPath {
        match self {
            BackwardPath::Auto | BackwardPath::Fused if net.is_mlp() => BackwardPath::Explicit,
            BackwardPath::Auto => BackwardPath::Autograd,
            other => other,
        }
    }

    /// Whether training on `device` uses the fused step.
    pub fn is_fused(self, net: &Network, device: &Device) -> bool {
        net.is_mlp() && device.is_cpu() && matches!(self, BackwardPath::Auto | BackwardPath::Fused)
    }
}

/// The data of one step.
pub struct StepInput<'a> {
    /// The stream (for its output layout).
    pub stream: &'a TaskStream,
    /// The task being trained.
    pub task: &'a Task,
    /// The batch.
    pub batch: &'a Batch,
}

/// What a step reports.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// Mean training loss of the batch, before the update.
    pub loss: f32,
    /// GRAPES factors used (one per hidden layer), when GRAPES is on.
    pub factors: Option<Vec<Tensor>>,
}

/// Loss and per-parameter gradients of one batch, GRAPES included, without updating anything.
pub fn gradients(
    net: &Network,
    input: &StepInput,
    grapes_mode: GrapesMode,
    path: BackwardPath,
    device: &Device,
) -> Result<Gradients> {
    let StepInput {
        stream,
        task,
        batch,
    } = input;
    let outputs = stream.outputs.head_size(task.head);
    let x = Tensor::from_slice(&batch.pixels, (batch.len(), IMAGE_PIXELS), device)?;
    let onehot = one_hot(&batch.targets, outputs, device)?;
    let mask = task
        .output_range
        .as_ref()
        .map(|r| logit_mask(r, outputs, device))
        .transpose()?;
    batch_gradients(
        net,
        &x,
        &onehot,
        mask.as_ref(),
        task.head,
        grapes_mode,
        path,
    )
}

/// Loss, gradients and GRAPES factors for a batch given as tensors: `x: [batch, 784]`,
/// `onehot: [batch, outputs]`, an optional additive logit mask, the output head.
pub fn batch_gradients(
    net: &Network,
    x: &Tensor,
    onehot: &Tensor,
    mask: Option<&Tensor>,
    head: usize,
    grapes_mode: GrapesMode,
    path: BackwardPath,
) -> Result<Gradients> {
    with_grapes(net, grapes_mode, |propagating| match path.resolve(net) {
        BackwardPath::Explicit => {
            if !net.is_mlp() {
                candle_core::bail!(
                    "the explicit backward only supports MLPs; use `backward: autograd`"
                );
            }
            let g = mlp::backward(net, &net.detached(), x, onehot, mask, head, propagating)?;
            Ok((g.loss, g.grads))
        }
        _ => autograd(net, x, head, propagating, |logits| {
            Ok(cross_entropy(logits, onehot, mask)?.0)
        }),
    })
}

/// Loss, gradients and GRAPES factors of a batch `x: [batch, 784]` scored against any
/// [`Targets`] on head `head` (softmax restricted to `range`). Hard targets use `path`; the
/// other objectives are differentiated by autograd.
#[allow(clippy::too_many_arguments)]
pub fn objective_gradients(
    net: &Network,
    x: &Tensor,
    targets: &Targets,
    range: Option<&Range<usize>>,
    head: usize,
    grapes_mode: GrapesMode,
    path: BackwardPath,
    device: &Device,
) -> Result<Gradients> {
    if let Targets::Hard(t) = targets {
        let outputs = net.params[net.heads[head].weight].dim(0)?;
        let onehot = one_hot(t, outputs, device)?;
        let mask = range.map(|r| logit_mask(r, outputs, device)).transpose()?;
        return batch_gradients(net, x, &onehot, mask.as_ref(), head, grapes_mode, path);
    }
    with_grapes(net, grapes_mode, |propagating| {
        autograd(net, x, head, propagating, |logits| {
            loss_tensor(logits, targets, range, device)
        })
    })
}

/// Computes the GRAPES factors, runs `backward` (given the factors when GRAPES propagates) and
/// applies local GRAPES to its gradients.
fn with_grapes(
    net: &Network,
    grapes_mode: GrapesMode,
    backward: impl FnOnce(Option<&[Tensor]>) -> Result<(Tensor, Vec<Option<Tensor>>)>,
) -> Result<Gradients> {
    let factors = if grapes_mode.is_on() {
        Some(net.grapes_factors()?)
    } else {
        None
    };
    let propagating = match grapes_mode {
        GrapesMode::Propagating => factors.as_deref(),
        _ => None,
    };
    let (loss, mut grads) = backward(propagating)?;
    if grapes_mode == GrapesMode::Local {
        let f = factors
            .as_ref()
            .expect("factors are computed when GRAPES is on");
        for (layer, m) in net.hidden.iter().zip(f) {
            for idx in std::iter::once(layer.weight).chain(layer.bias) {
                if let Some(g) = &grads[idx] {
                    grads[idx] = Some(grapes::scale_rows(g, m)?);
                }
            }
        }
    }
    Ok((loss, grads, factors))
}

/// Candle autograd through [`Network::forward`] with the loss `objective(logits)`.
fn autograd(
    net: &Network,
    x: &Tensor,
    head: usize,
    propagating: Option<&[Tensor]>,
    objective: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Vec<Option<Tensor>>)> {
    let p = net.tracked();
    let logits = net.forward(&p, x, head, propagating)?;
    let loss = objective(&logits)?;
    let store = loss.backward()?;
    let grads = net
        .params
        .iter()
        .map(|v| store.get(v.as_tensor()).cloned())
        .collect();
    Ok((loss.detach(), grads))
}

/// Computes gradients and applies the optimizer update. A non-finite loss skips the update.
pub fn train_step(
    net: &Network,
    optimizer: &mut (dyn Optimizer + Send),
    input: StepInput,
    grapes_mode: GrapesMode,
    path: BackwardPath,
    device: &Device,
) -> Result<StepOutput> {
    let (loss, grads, factors) = gradients(net, &input, grapes_mode, path, device)?;
    let loss = loss.to_scalar::<f32>()?;
    if loss.is_finite() {
        optimizer.step(&net.params, &grads)?;
    }
    Ok(StepOutput { loss, factors })
}
