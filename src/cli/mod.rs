//! The `clbench` command line, split as ripgrep splits its own: [`args`] holds the raw flags as
//! clap parses them, [`settings`] checks them once into the values the library takes, and one
//! module per group of subcommands does the work. `main.rs` only dispatches.

pub(crate) mod args;
pub(crate) mod bench;
pub(crate) mod data;
pub(crate) mod experiment;
pub(crate) mod report;
pub(crate) mod settings;
pub(crate) mod slurm;
pub(crate) mod tasks;

/// The exit code of a failed command: 2 when the error is in the user's input (a flag, a
/// config, a stream, a data file, a matrix), 1 for runtime failures.
pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    let input = err
        .chain()
        .any(|cause| cause.is::<settings::UsageError>() || clbench::error::is_input_error(cause));
    if input {
        2
    } else {
        1
    }
}

/// The message of a failed command: each cause of the chain once (library errors often show
/// their cause in their own message already).
pub(crate) fn message(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}
