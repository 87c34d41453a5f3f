//! # clbench — a continual-learning benchmark suite with GRAPES
//!
//! The pipeline runs one way, one module per concept:
//!
//! ```text
//! config ─▶ plan of runs ─▶ training ─▶ run store ─▶ polars frames ─▶ exports
//! ```
//!
//! - [`data`]: the MNIST family, read from IDX files and verified by SHA-256;
//! - [`streams`]: task streams (permuted, split, rotated; task-, domain-, class-incremental);
//! - [`models`]: MLP and CNN in candle (the validated [`models::ModelSpec`] builds a
//!   [`models::Network`]), the explicit MLP backward on tensors and the losses;
//! - [`optim`]: SGD, Adam, AdamW, RMSprop and **GRAPES** (all of its maths in [`optim::grapes`]);
//! - [`engine`]: the gradient engine every step and strategy goes through — the fused CPU step
//!   of an MLP (the fast path), candle tensors (any model, any device), the matrix-product
//!   kernels and their threads;
//! - [`strategy`]: continual-learning strategies (EWC, SI, MAS, replay, A-GEM, LwF, …), each
//!   usable with every optimizer ± GRAPES;
//! - [`train`]: sequential training and evaluation into the accuracy matrix;
//! - [`metrics`]: ACC, BWT, FWT, forgetting and the rest, as `METRICS.md` defines them, and the
//!   one table of metric columns (labels, scale, direction) every table and figure uses;
//! - [`experiment`]: config files, the plan of runs, the run store and each run's summary;
//! - [`report`]: polars frames built from the run store, and their exports;
//! - [`mod@bench`]: the throughput measurements behind `clbench bench`;
//! - [`platform`]: where a run ran (machine, build, kernels), stored beside every run;
//! - [`plugin`]: methods from other crates (a strategy or an optimizer), registered by name;
//! - [`cli`]: the command line, which a plugin crate's binary runs with its registry.
//!
//! Beneath them: [`validate`] (the checked-settings shape every config block follows and its
//! [`validate::KeyError`]), [`error`] (which errors are the user's input), [`yaml`] (error
//! messages with "did you mean" hints) and [`rng`] (portable seeded randomness).

pub mod bench;
pub mod cli;
pub mod data;
pub mod engine;
pub mod error;
pub mod experiment;
pub mod metrics;
pub mod models;
pub mod optim;
pub mod platform;
pub mod plugin;
pub mod report;
pub mod rng;
pub mod strategy;
pub mod streams;
pub mod train;
pub mod validate;
pub mod yaml;
