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
//! - [`models`]: MLP and CNN in candle, with the explicit MLP backward (the fast path);
//! - [`optim`]: SGD, Adam, AdamW, RMSprop and **GRAPES** (all of its maths in [`optim::grapes`]);
//! - [`train`]: sequential training and evaluation into the accuracy matrix;
//! - [`metrics`]: ACC, BWT, FWT, forgetting and the rest, as `METRICS.md` defines them;
//! - [`experiment`]: config files, the plan of runs and the run store;
//! - [`report`]: polars frames built from the run store, and their exports;
//! - [`rng`]: portable seeded randomness shared by everything above.

pub mod bench;
pub mod data;
pub mod experiment;
pub mod metrics;
pub mod models;
pub mod optim;
pub mod report;
pub mod rng;
pub mod strategy;
pub mod streams;
pub mod train;
pub mod yaml;
