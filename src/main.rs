//! The `clbench` binary: the command line ([`clbench::cli::main`]) with clbench's own methods.

fn main() -> std::process::ExitCode {
    clbench::cli::main(clbench::plugin::Registry::builtin())
}
