//! The explicit forward and backward pass of an MLP on candle tensors: what the tensor engine
//! ([`crate::engine::tensor`]) runs for MLPs off the CPU, and the reference that the fused CPU
//! step ([`crate::engine::fused`]) is checked against.
//!
//! Written out layer by layer, without autograd bookkeeping. Propagating GRAPES is one line: the
//! hidden layer's error is multiplied by its factors ([`grapes::modulate`]) before it is used and
//! passed down. The tests check that this path and candle's autograd give the same gradients.

use candle_core::{Result, Tensor};

use super::{cross_entropy, linear, Network};
use crate::optim::grapes;

/// Loss and gradients of one batch.
#[derive(Debug, Clone)]
pub struct Gradients {
    /// Mean cross-entropy of the batch (a scalar tensor).
    pub loss: Tensor,
    /// One entry per parameter of the network; `None` for parameters the batch does not reach
    /// (the heads of other tasks).
    pub grads: Vec<Option<Tensor>>,
}

/// Loss and gradients of an MLP on one batch.
///
/// `p` are the network's parameters (detached), `x: [batch, in]`, `onehot: [batch, outputs]`,
/// `mask` an optional additive logit mask, `head` the output head. With `factors` (one tensor per
/// hidden layer), the errors are modulated as in propagating GRAPES.
pub fn backward(
    net: &Network,
    p: &[Tensor],
    x: &Tensor,
    onehot: &Tensor,
    mask: Option<&Tensor>,
    head: usize,
    factors: Option<&[Tensor]>,
) -> Result<Gradients> {
    debug_assert!(net.is_mlp());
    let batch = x.dim(0)?;
    // Forward, keeping every layer's output (its input to the next layer).
    let mut outputs = Vec::with_capacity(net.hidden.len() + 1);
    outputs.push(x.clone());
    for layer in &net.hidden {
        let a = linear(
            outputs.last().expect("non-empty"),
            &p[layer.weight],
            layer.bias.map(|b| &p[b]),
        )?;
        outputs.push(net.activation.apply(&a)?);
    }
    let out = &net.heads[head];
    let h_last = outputs.last().expect("non-empty");
    let logits = linear(h_last, &p[out.weight], out.bias.map(|b| &p[b]))?;
    let (loss, logp) = cross_entropy(&logits, onehot, mask)?;

    let mut grads: Vec<Option<Tensor>> = vec![None; p.len()];
    // Output error of mean cross-entropy: (softmax − one-hot) / batch. Never modulated.
    let mut delta = ((logp.exp()? - onehot)? / batch as f64)?;
    grads[out.weight] = Some(delta.t()?.matmul(h_last)?);
    if let Some(b) = out.bias {
        grads[b] = Some(delta.sum(0)?);
    }
    let mut w_above = &p[out.weight];
    for (l, layer) in net.hidden.iter().enumerate().rev() {
        let upstream = delta.matmul(w_above)?;
        delta = upstream.mul(&net.activation.derivative_from_output(&outputs[l + 1])?)?;
        if let Some(f) = factors {
            delta = grapes::modulate(&delta, &f[l])?;
        }
        grads[layer.weight] = Some(delta.t()?.matmul(&outputs[l])?);
        if let Some(b) = layer.bias {
            grads[b] = Some(delta.sum(0)?);
        }
        w_above = &p[layer.weight];
    }
    Ok(Gradients { loss, grads })
}
