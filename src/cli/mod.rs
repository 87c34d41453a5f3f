//! The `clbench` command line, split as ripgrep splits its own: [`args`] holds the raw flags as
//! clap parses them, [`settings`] checks them once into the values the library takes, and one
//! module per group of subcommands does the work. `main.rs` only dispatches.

/// `println!` that fails instead of panicking: the line goes to standard output, and a write
/// that fails (a full disk, a closed file) returns a [`StdoutError`] from the enclosing
/// function through `?`. (A reader that stops early, `| head`, ends the process quietly by
/// SIGPIPE, see `main`.)
macro_rules! say {
    () => {
        $crate::cli::write_stdout(format_args!("\n"))?
    };
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

/// `eprintln!` that never panics: a line for standard error (warnings, files that differ),
/// dropped if standard error cannot be written (nothing else could tell the user either).
macro_rules! tell {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

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
        .any(|cause| cause.is::<settings::UsageError>() || is_input_error(cause));
    if input {
        2
    } else {
        1
    }
}

/// Whether `err` (one link of an error chain) is an input error of one of the library's types:
/// every library error type that can reach the command line, asked through
/// [`clbench::error::InputError`]. A new error type that can reach a command is added here.
fn is_input_error(err: &(dyn std::error::Error + 'static)) -> bool {
    use clbench::error::InputError;
    macro_rules! ask {
        ($($t:ty),* $(,)?) => {
            $(
                if let Some(e) = err.downcast_ref::<$t>() {
                    return InputError::is_input_error(e);
                }
            )*
        };
    }
    ask!(
        clbench::data::DataError,
        clbench::streams::StreamError,
        clbench::experiment::ConfigError,
        clbench::validate::KeyError,
        clbench::metrics::MatrixCsvError,
        clbench::report::ReportError,
        clbench::experiment::ConfigurationConflict,
        clbench::experiment::StoreError,
        clbench::experiment::ExecuteError,
    );
    false
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

/// Standard output could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to standard output: {0}")]
pub(crate) struct StdoutError(#[from] std::io::Error);

/// Writes to standard output and flushes, so that a failure is seen here, not at exit.
pub(crate) fn write_stdout(args: std::fmt::Arguments) -> Result<(), StdoutError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.flush()?;
    Ok(())
}

/// A fresh scratch folder under the system's temporary directory, created exclusively (never
/// one that somebody else made) and removed when dropped.
pub(crate) struct Scratch(std::path::PathBuf);

impl Scratch {
    /// A new folder `<temp>/<prefix>-<pid>-<nanos>-<n>`.
    pub(crate) fn new(prefix: &str) -> anyhow::Result<Scratch> {
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for attempt in 0..100u32 {
            let dir = base.join(format!(
                "{prefix}-{}-{nanos:08x}-{attempt}",
                std::process::id()
            ));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(Scratch(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => anyhow::bail!("{}: cannot create a scratch folder: {e}", dir.display()),
            }
        }
        anyhow::bail!("{}: no free scratch folder name", base.display())
    }

    /// The folder.
    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
