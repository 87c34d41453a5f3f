//! `clbench tasks describe`: a stream, one line per task.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::streams::{OutputLayout, StreamSpec, TaskStream};

/// A serializable value as its YAML word (`permuted`, `class-incremental`).
fn yaml_word<T: serde::Serialize>(v: &T) -> String {
    serde_yaml::to_string(v)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Prints the stream of `file` built with `seed`: its layout, its pixel scaling, then each task.
pub(crate) fn describe_command(file: &Path, seed: u64) -> Result<ExitCode> {
    let stream_file = StreamSpec::load(file)?;
    let stream = TaskStream::build(&stream_file, seed)?;
    let outputs = match &stream.outputs {
        OutputLayout::Shared { outputs } => format!("one shared output layer of {outputs}"),
        OutputLayout::MultiHead { sizes } => format!("{} heads of sizes {sizes:?}", sizes.len()),
    };
    say!(
        "{}: {} tasks, {} {} on {} ({outputs}), seed {}",
        file.display(),
        stream.len(),
        yaml_word(&stream.spec.kind),
        yaml_word(&stream.spec.scenario),
        stream.dataset.name,
        stream.seed
    );
    let side = stream.image_side();
    say!(
        "images: {side}×{side} ({} inputs){}",
        side * side,
        match stream.pad() {
            0 => String::new(),
            p => format!(
                ", 28×28 padded with {p} pixels of zeros on every side before the transforms"
            ),
        }
    );
    let (scale, shift) = stream.pixel_scale_shift;
    say!(
        "pixels: byte × {scale:.6} {} {:.6}{}",
        if shift < 0.0 { "−" } else { "+" },
        shift.abs(),
        match stream.spec.normalize {
            Some(crate::streams::Normalize::Stats(_)) =>
                " (standardized with the stream's mean and sd)",
            Some(crate::streams::Normalize::Dataset(true)) =>
                " (standardized with the dataset's mean and sd)",
            _ => " (scaled to [0, 1])",
        }
    );
    if let Some(f) = stream.spec.validation {
        say!(
            "validation: {:.0}% of every class's training images held out and scored as `test`; the test set is not used",
            f * 100.0
        );
    }
    for line in stream.describe() {
        say!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
