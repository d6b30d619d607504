//! The command line (clap): `serve`, `check-config`, `inspect`. Each command
//! returns a [`Failure`] that says which exit code it deserves: 2 for usage or bad
//! input (a file missing or malformed, an invalid config), 1 for anything else.
//! With `--json`, exactly one JSON document goes to stdout; human text to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::daemon::{self, DaemonError};
use crate::model::artifact::{self, ArtifactError};

/// steward keeps one machine-learning model healthy in production.
#[derive(Debug, Parser)]
#[command(name = "steward", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// Config file (default: config/steward.toml if it exists, else the embedded defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load and validate the config, print the effective values (secrets masked).
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a model artifact's card: schema, layers, sparsity, bits, size, metrics.
    Inspect {
        #[arg(long)]
        model: PathBuf,
        /// One JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

/// A failed command and the exit code it maps to.
#[derive(Debug)]
pub enum Failure {
    /// Exit code 2: the user's input is wrong.
    Input(anyhow::Error),
    /// Exit code 1.
    Other(anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Input(_) => ExitCode::from(2),
            Failure::Other(_) => ExitCode::from(1),
        }
    }

    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Input(e) | Failure::Other(e) => e,
        }
    }
}

/// Runs one command.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::CheckConfig { config } => {
            let c = Config::load(config.as_deref()).map_err(|e| Failure::Input(e.into()))?;
            print!("{}", c.render_masked());
            eprintln!("config ok: {}", c.source);
            Ok(())
        }
        Command::Inspect { model, json } => {
            let m = artifact::load(&model).map_err(|e| match e {
                ArtifactError::Write { .. } => Failure::Other(e.into()),
                _ => Failure::Input(e.into()),
            })?;
            let size = std::fs::metadata(&model).ok().map(|m| m.len());
            let card = m.card(None, Some(&model.display().to_string()), size);
            if json {
                println!("{card}");
            } else {
                eprintln!("{}", human_card(&card));
            }
            Ok(())
        }
    }
}

fn serve(config: Option<PathBuf>) -> Result<(), Failure> {
    let c = Config::load(config.as_deref()).map_err(|e| Failure::Input(e.into()))?;
    let levels = crate::logging::init(c.log_format, &c.raw.log.level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(e.into()))?;
    runtime
        .block_on(daemon::run(c, config, levels))
        .map_err(|e| match e {
            DaemonError::Config(_) | DaemonError::Live(crate::live::LiveError::Artifact(_)) => {
                Failure::Input(e.into())
            }
            _ => Failure::Other(e.into()),
        })
}

fn human_card(card: &serde_json::Value) -> String {
    let get = |k: &str| card.get(k).cloned().unwrap_or_default();
    let layers: Vec<String> = get("layers")
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| format!("{}→{}", l["inputs"], l["outputs"]))
                .collect()
        })
        .unwrap_or_default();
    let features: Vec<String> = get("schema")
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    format!(
                        "  {} ({})",
                        f["name"].as_str().unwrap_or("?"),
                        f["kind"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "model: {}\ntask: {}  label: {}  classes: {}\noutput: {}  layers: {}\nparameters: {}  sparsity: {}  bits: {}  size: {} bytes\nmetrics: {}\ncreated: {}\nfeatures:\n{}",
        get("path"),
        get("task"),
        get("label"),
        get("classes"),
        get("output"),
        layers.join(", "),
        get("parameters"),
        get("sparsity"),
        get("bits"),
        get("size_bytes"),
        get("metrics"),
        get("created"),
        features.join("\n")
    )
}
