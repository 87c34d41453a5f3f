//! The `clbench` command line: parse the flags, set up logging, dispatch to [`cli`].

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

mod cli;

use cli::args::{Cli, Command, TasksCommand, Verbosity};

fn main() -> ExitCode {
    // Output piped into a program that stops reading (`clbench tasks describe … | head`) ends
    // the process quietly, as for any Unix tool, instead of a panic on the failed print.
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    init_logging(&cli.verbosity);
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            // A standard error that cannot be written leaves only the exit code to tell.
            let _ = writeln!(std::io::stderr(), "error: {}", cli::message(&err));
            ExitCode::from(cli::exit_code(&err))
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let progress = !cli.verbosity.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    match cli.command {
        Command::Data(cmd) => cli::data::data_command(cmd, progress),
        Command::Tasks(TasksCommand::Describe { file, seed }) => {
            cli::tasks::describe_command(&file, seed)
        }
        Command::Run(args) => cli::experiment::run_command(args, progress),
        Command::Report(args) => cli::report::report_command(args),
        Command::Validate(args) => cli::experiment::validate_command(args),
        Command::Slurm(args) => cli::slurm::slurm_command(args),
        Command::Bench(args) => cli::bench::bench_command(args),
        Command::Metrics(args) => cli::report::metrics_command(args),
        Command::Platform(args) => cli::bench::platform_command(args),
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
