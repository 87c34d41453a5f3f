//! The tensor engine: gradients of candle tensors on any device, by the explicit MLP backward
//! ([`crate::models::mlp`]) or by candle's autograd (the reference path), with GRAPES applied
//! as [`crate::optim::grapes`] defines it.

use std::ops::Range;

use candle_core::{Device, Result, Tensor};

use crate::models::loss::{loss_tensor, Targets};
use crate::models::{cross_entropy, logit_mask, mlp, one_hot, Network};
use crate::optim::{grapes, GrapesMode, Optimizer, Pull};

use super::{BackwardPath, Engine, HostParams, Part};

/// What a backward pass returns: the loss, one gradient per parameter (`None` for parameters
/// the loss does not reach, such as other tasks' heads), and the GRAPES factors of the hidden
/// layers when GRAPES is on.
pub type Gradients = (Tensor, Vec<Option<Tensor>>, Option<Vec<Tensor>>);

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

/// Candle tensors on any device: gradients by the explicit MLP backward or autograd, copied to
/// host buffers; the optimizer runs on host copies of the parameters, which are written back
/// to the network's `Var`s after every update.
pub struct TensorEngine {
    net: Network,
    path: BackwardPath,
    device: Device,
    host: HostParams,
    factors: Vec<Vec<f32>>,
}

impl TensorEngine {
    /// An engine over `net`'s parameters (shared with `net`: updates are visible there).
    pub fn new(net: &Network, path: BackwardPath, device: &Device) -> Result<Self> {
        Ok(TensorEngine {
            net: net.clone(),
            path,
            device: device.clone(),
            host: HostParams::of(net)?,
            factors: Vec::new(),
        })
    }
}

impl Engine for TensorEngine {
    fn params(&self) -> &[Vec<f32>] {
        &self.host.params
    }

    fn zero_grad(&mut self) {
        self.host.zero_grad();
    }

    fn accumulate(&mut self, part: &Part, grapes: GrapesMode) -> Result<f32> {
        let width = self.net.spec.input_pixels();
        let rows = part.pixels.len() / width;
        let x = Tensor::from_slice(part.pixels, (rows, width), &self.device)?;
        let (loss, grads, factors) = objective_gradients(
            &self.net,
            &x,
            &part.targets,
            part.range.as_ref(),
            part.head,
            grapes,
            self.path,
            &self.device,
        )?;
        let loss = loss.to_scalar::<f32>()?;
        if !loss.is_finite() {
            return Ok(loss);
        }
        for (i, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            self.host
                .add(i, part.weight, &g.flatten_all()?.to_vec1::<f32>()?);
        }
        if let Some(f) = factors {
            self.factors = f
                .iter()
                .map(|t| t.flatten_all()?.to_vec1::<f32>())
                .collect::<Result<Vec<_>>>()?;
        }
        Ok(loss)
    }

    fn state_mut(&mut self) -> (&[Vec<f32>], &mut [Vec<f32>], &mut [bool]) {
        self.host.state_mut()
    }

    fn apply_pulled(
        &mut self,
        optimizer: &mut (dyn Optimizer + Send),
        pull: Option<&mut Pull>,
    ) -> Result<()> {
        self.host.step(optimizer, pull);
        self.host.write_back(&self.net, Some(&self.host.touched))
    }

    fn logits(
        &mut self,
        params: Option<&[Vec<f32>]>,
        pixels: &[f32],
        head: usize,
    ) -> Result<Vec<f32>> {
        let width = self.net.spec.input_pixels();
        let rows = pixels.len() / width;
        let x = Tensor::from_slice(pixels, (rows, width), &self.device)?;
        let p = match params {
            Some(p) => self
                .net
                .params
                .iter()
                .zip(p)
                .map(|(v, p)| Tensor::from_slice(p, v.shape(), &self.device))
                .collect::<Result<Vec<_>>>()?,
            None => self.net.detached(),
        };
        self.net
            .forward(&p, &x, head, None)?
            .flatten_all()?
            .to_vec1::<f32>()
    }

    fn factors(&self) -> &[Vec<f32>] {
        &self.factors
    }

    fn sync(&self, _net: &Network) -> Result<()> {
        // The `Var`s are shared with the network and written after every update.
        Ok(())
    }
}
