//! steward: a daemon that keeps one machine-learning model healthy in production.
//!
//! Dependencies point one way: `cli → daemon → server → {live, store} → {train,
//! model, config}`. `model`, `train` and `data` are synchronous code over ndarray
//! with no async runtime, so they are easy to test and to benchmark.

pub mod alert;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod data;
pub mod learning;
pub mod live;
pub mod logging;
pub mod memory;
pub mod model;
pub mod monitor;
pub mod monitoring;
pub mod preflight;
pub mod scheduler;
pub mod server;
pub mod store;
pub mod time;
pub mod train;

/// The bundled data set: the Palmer penguins (Horst, Hill & Gorman, CC0), species
/// as `label`, rows with missing measurements kept (empty cells).
pub const BUNDLED_PENGUINS: &str = include_str!("../datasets/penguins.csv");
