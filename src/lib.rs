//! steward: a daemon that keeps one machine-learning model healthy in production.
//!
//! Dependencies point one way, down [`LAYERS`]: each module uses only modules
//! listed before it, and a test (`layering` below) reads every `crate::` path in
//! src/ and fails on one that points up. From the bottom: plain helpers (`time`,
//! `memory`, `data`), the statistics (`stats`) and the charts (`plot`); the cron
//! parser (`scheduler`); the typed configuration (`config`) and `logging`; SQL
//! (`store`); the model (`model`: schema, network, artifact, anomaly scorer),
//! training (`train`), ONNX import and export (`onnx`), the drift and
//! concept detectors (`monitor`) and the HTML drift report (`report`), all
//! synchronous code with no async runtime; then the daemon's parts
//! (`live`, `monitoring`, `alert`, `learning`, `preflight`); the application
//! layer (`app`: the services the outside calls, built from the config); the
//! HTTP API (`server`, adapters over `app`), the composition root (`daemon`:
//! build, serve, drain) and the command line (`cli`).
//! Code used only to evaluate steward (the drift evaluation streams) lives in
//! examples/, outside the library.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod alert;
pub mod app;
pub mod cli;
pub mod cluster;
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
pub mod onnx;
pub mod plot;
pub mod preflight;
pub mod report;
pub mod scheduler;
pub mod server;
pub mod stats;
pub mod store;
pub mod time;
pub mod train;

/// The modules from the bottom up: each may use only the modules before it.
pub const LAYERS: &[&str] = &[
    "time",
    "memory",
    "data",
    "stats",
    "plot",
    "scheduler",
    "config",
    "logging",
    "store",
    "cluster",
    "model",
    "train",
    "onnx",
    "monitor",
    "report",
    "live",
    "monitoring",
    "alert",
    "learning",
    "preflight",
    "app",
    "server",
    "daemon",
    "cli",
];

/// The bundled data set: the Palmer penguins (Horst, Hill & Gorman, CC0), species
/// as `label`, rows with missing measurements kept (empty cells).
pub const BUNDLED_PENGUINS: &str = include_str!("../datasets/penguins.csv");

#[cfg(test)]
mod layering {
    use std::path::{Path, PathBuf};

    /// The top-level modules named by `crate::` paths in `text`, including
    /// those inside `crate::{a::b, c}` groups.
    fn crate_paths(text: &str) -> Vec<String> {
        let ident = |s: &str| -> String {
            s.trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        let mut found = Vec::new();
        for (at, _) in text.match_indices("crate::") {
            let rest = &text[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let (mut depth, mut start) = (0usize, 0usize);
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            found.push(ident(&group[start..i]));
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            found.push(ident(&group[start..i]));
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            } else {
                found.push(ident(rest));
            }
        }
        found.retain(|m| !m.is_empty());
        found
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The top-level module a file under src/ belongs to.
    fn module_of(src: &Path, file: &Path) -> Option<String> {
        let first = file.strip_prefix(src).ok()?.components().next()?;
        let name = first.as_os_str().to_str()?;
        Some(name.trim_end_matches(".rs").to_string())
    }

    /// Every `crate::` path in src/ points down the layers (or into the same
    /// module); every module of lib.rs has its place in them.
    #[test]
    fn dependencies_point_down_the_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let rank = |m: &str| super::LAYERS.iter().position(|l| *l == m);
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        for line in lib.lines() {
            if let Some(m) = line
                .strip_prefix("pub mod ")
                .and_then(|l| l.strip_suffix(';'))
            {
                assert!(rank(m).is_some(), "module `{m}` is not in LAYERS");
            }
        }
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut upward = Vec::new();
        for file in &files {
            let Some(from) = module_of(&src, file) else {
                continue;
            };
            let Some(from_rank) = rank(&from) else {
                continue; // lib.rs, main.rs
            };
            let text = std::fs::read_to_string(file).unwrap();
            for to in crate_paths(&text) {
                if let Some(to_rank) = rank(&to) {
                    if to_rank > from_rank {
                        upward.push(format!("{}: {from} uses {to}", file.display()));
                    }
                }
            }
        }
        upward.sort();
        upward.dedup();
        assert!(
            upward.is_empty(),
            "imports against LAYERS:\n{}",
            upward.join("\n")
        );
    }

    #[test]
    fn paths_in_groups_are_found() {
        let text = "use crate::{monitor::drift, stats::Correction};\nlet x = crate::time::now();";
        assert_eq!(crate_paths(text), ["monitor", "stats", "time"]);
    }
}
