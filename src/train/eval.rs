//! Test-set evaluation of a network on tasks of a stream, in each task's output space.

use candle_core::{Device, Result, Tensor, D};

use crate::data::IMAGE_PIXELS;
use crate::models::{cross_entropy, logit_mask, one_hot, Network};
use crate::streams::{Batch, TaskStream};

/// Accuracy and mean loss per evaluated task.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Fraction correct over the whole test set, per task.
    pub accuracy: Vec<f64>,
    /// Mean cross-entropy, per task.
    pub loss: Vec<f64>,
}

/// Evaluates `net` on the test sets of `tasks` (0-based indices).
///
/// Prediction is the argmax over the task's output space: its own head (multi-head), its masked
/// range of a shared layer (masked task-incremental), or the whole shared layer (domain- and
/// class-incremental, i.e. all classes of the stream).
pub fn evaluate(
    net: &Network,
    stream: &TaskStream,
    tasks: &[usize],
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation> {
    let p = net.detached();
    let mut out = Evaluation {
        accuracy: Vec::with_capacity(tasks.len()),
        loss: Vec::with_capacity(tasks.len()),
    };
    let mut batch = Batch::default();
    for &t in tasks {
        let task = &stream.tasks[t];
        let outputs = stream.outputs.head_size(task.head);
        let mask = task
            .output_range
            .as_ref()
            .map(|r| logit_mask(r, outputs, device))
            .transpose()?;
        let (mut correct, mut loss_sum) = (0usize, 0f64);
        for chunk in task.test.chunks(batch_size.max(1)) {
            stream.test_batch(t, chunk, &mut batch);
            let x = Tensor::from_slice(&batch.pixels, (batch.len(), IMAGE_PIXELS), device)?;
            let logits = net.forward(&p, &x, task.head, None)?;
            let onehot = one_hot(&batch.targets, outputs, device)?;
            let (loss, logp) = cross_entropy(&logits, &onehot, mask.as_ref())?;
            loss_sum += loss.to_scalar::<f32>()? as f64 * batch.len() as f64;
            let predicted = logp.argmax(D::Minus1)?.to_vec1::<u32>()?;
            correct += predicted
                .iter()
                .zip(&batch.targets)
                .filter(|(p, t)| p == t)
                .count();
        }
        let n = task.test.len().max(1) as f64;
        out.accuracy.push(correct as f64 / n);
        out.loss.push(loss_sum / n);
    }
    Ok(out)
}
