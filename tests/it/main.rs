//! The integration tests, one crate (one link of candle and polars) with a module per area.

mod common;

mod adversarial;
mod cli;
mod data;
mod experiment;
mod fused;
mod fused_cnn;
mod golden;
mod grapes;
mod integrity;
mod plugins;
mod report;
mod stats;
mod strategies;
mod streams;
mod training;
