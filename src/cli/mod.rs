//! The implementations of the `clbench` subcommands; `main.rs` holds the argument definitions.

pub(crate) mod bench;
pub(crate) mod data;
pub(crate) mod experiment;
pub(crate) mod report;
