//! Test-set evaluation of a model on tasks of a stream, in each task's output space.

use candle_core::Result;

use crate::engine::Engine;
use crate::models::loss::score_row;
use crate::streams::{Batch, TaskStream};

/// Accuracy and mean loss per evaluated task.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Fraction correct over the whole test set, per task.
    pub accuracy: Vec<f64>,
    /// Mean cross-entropy, per task.
    pub loss: Vec<f64>,
}

/// Evaluates the current parameters of `model` on the test sets of `tasks` (0-based indices).
///
/// The logits come from the engine ([`Engine::logits`]: the portable kernels of the fused
/// path, or candle); prediction and loss are scored on the host by
/// [`crate::models::loss::score_row`], so that the fused path's accuracies are the same bits
/// on every machine. Prediction is the argmax over the task's output space: its own head
/// (multi-head), its range of a shared layer (masked task-incremental), or the whole shared
/// layer (domain- and class-incremental, i.e. all classes of the stream).
pub fn evaluate(
    model: &mut dyn Engine,
    stream: &TaskStream,
    tasks: &[usize],
    batch_size: usize,
) -> Result<Evaluation> {
    let mut out = Evaluation {
        accuracy: Vec::with_capacity(tasks.len()),
        loss: Vec::with_capacity(tasks.len()),
    };
    let mut batch = Batch::default();
    for &t in tasks {
        let task = &stream.tasks[t];
        let outputs = stream.outputs.head_size(task.head);
        let range = task.output_range.clone().unwrap_or(0..outputs);
        let (mut correct, mut loss_sum) = (0usize, 0f64);
        for chunk in task.test.chunks(batch_size.max(1)) {
            stream.test_batch(t, chunk, &mut batch);
            let logits = model.logits(None, &batch.pixels, task.head)?;
            for (z, &target) in logits.chunks_exact(outputs).zip(&batch.targets) {
                let (loss, predicted) = score_row(z, &range, target as usize);
                loss_sum += loss;
                correct += usize::from(predicted == target as usize);
            }
        }
        let n = task.test.len().max(1) as f64;
        out.accuracy.push(correct as f64 / n);
        out.loss.push(loss_sum / n);
    }
    Ok(out)
}
