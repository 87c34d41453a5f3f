//! A binary with two methods clbench does not have, written outside clbench's sources: the
//! RWalk strategy ([`rwalk`]) and the Lookahead optimizer ([`lookahead`]). Every subcommand
//! works with them:
//!
//! ```sh
//! cargo run --example own_methods -- run examples/own_methods/split-mnist-task-il.yaml
//! cargo run --example own_methods -- report results/own-methods-split-mnist-task-il
//! ```

mod lookahead;
mod rwalk;

use clbench::plugin::Registry;

fn main() -> std::process::ExitCode {
    clbench::cli::main(
        Registry::builtin()
            .strategy::<rwalk::RwalkSettings>("rwalk")
            .optimizer::<lookahead::LookaheadSgd>("lookahead-sgd"),
    )
}
