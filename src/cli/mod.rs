//! The `clbench` command line, split as ripgrep splits its own: `args` holds the raw flags as
//! clap parses them, `settings` checks them once into the values the library takes, and one
//! module per group of subcommands does the work. [`main`] dispatches; clbench's `main.rs`
//! and a plugin crate's binary ([`crate::plugin`]) only call it.

#![warn(missing_docs)]

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::plugin::Registry;
use args::{Cli, Command, TasksCommand, Verbosity};

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
/// [`crate::error::InputError`]. A new error type that can reach a command is added here.
fn is_input_error(err: &(dyn std::error::Error + 'static)) -> bool {
    use crate::error::InputError;
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
        crate::data::DataError,
        crate::streams::StreamError,
        crate::experiment::ConfigError,
        crate::validate::KeyError,
        crate::metrics::MatrixCsvError,
        crate::report::ReportError,
        crate::experiment::ConfigurationConflict,
        crate::experiment::StoreError,
        crate::experiment::ExecuteError,
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

/// Runs the command line of a binary that knows clbench's methods and `registry`'s (see
/// [`crate::plugin`]) on the process's arguments: parses the flags, sets up logging, runs the
/// subcommand and returns its exit code (0 done, 1 failed, 2 the user's input was wrong).
/// clbench's own binary is `clbench::cli::main(Registry::builtin())`.
pub fn main(registry: Registry) -> ExitCode {
    // Output piped into a program that stops reading (`clbench tasks describe … | head`) ends
    // the process quietly, as for any Unix tool, instead of a panic on the failed print.
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    main_from(registry, std::env::args_os())
}

/// [`main`] on the given arguments (the first is the program's name), e.g. to run a command in
/// a test. Logging is set up by the first call in a process.
pub fn main_from<I, T>(registry: Registry, args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    if let Err(err) = registry.install() {
        let _ = writeln!(std::io::stderr(), "error: {err}");
        return ExitCode::from(2);
    }
    init_logging(&cli.verbosity);
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            // A standard error that cannot be written leaves only the exit code to tell.
            let _ = writeln!(std::io::stderr(), "error: {}", message(&err));
            ExitCode::from(exit_code(&err))
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let progress = !cli.verbosity.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    match cli.command {
        Command::Data(cmd) => data::data_command(cmd, progress),
        Command::Tasks(TasksCommand::Describe { file, seed }) => {
            tasks::describe_command(&file, seed)
        }
        Command::Run(args) => experiment::run_command(args, progress),
        Command::Report(args) => report::report_command(args),
        Command::Validate(args) => experiment::validate_command(args),
        Command::Slurm(args) => slurm::slurm_command(args),
        Command::Bench(args) => bench::bench_command(args),
        Command::Metrics(args) => report::metrics_command(args),
        Command::Platform(args) => bench::platform_command(args),
    }
}

/// Logs to standard error: info by default, `-v` debug, `-vv` trace, `-q` errors only;
/// `RUST_LOG` overrides.
fn init_logging(v: &Verbosity) {
    let default = match (v.quiet, v.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // A second call in one process (`main_from` in a test) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
