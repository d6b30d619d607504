//! One integration test binary (keeps link time low), organised by area. Every
//! test runs the real `steward` binary on loopback against a real SQLite file in
//! a temporary directory.

// Helpers outside #[test] functions unwrap too: in a test harness a panic is a
// test failure with its message, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod smtp;

mod alerts;
mod api;
mod browser;
mod change;
mod cli;
mod config;
mod daemon;
mod dashboard;
mod deploy;
mod detection;
mod drift;
mod faults;
mod leader;
mod learning;
mod monitoring;
mod onnx;
mod operator;
mod postgres;
mod reliability;
mod replicas;
mod report;
mod startup;
mod systemd;
mod train;
mod ui;
