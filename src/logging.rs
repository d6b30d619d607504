//! Log output: human-readable on a terminal; under systemd (`JOURNAL_STREAM` set,
//! `log.format = "auto"`) straight to journald through its native protocol
//! (`tracing-journald`), so that levels become journal priorities (`journalctl -u
//! steward -p warning` shows the warnings and errors) and fields stay fields
//! (`journalctl -o verbose` shows `F_VERSION=...`, `TARGET=...`); JSON on stderr
//! with `log.format = "json"`, or under systemd when the journal socket cannot be
//! opened. The level filter can be changed at run time (SIGHUP re-reads
//! `log.level`).

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::LogFormat;

/// Changes the level filter of the installed subscriber.
pub struct LevelHandle(reload::Handle<EnvFilter, Registry>);

impl LevelHandle {
    /// Installs `filter` (e.g. `"info"` or `"steward=debug"`).
    pub fn set(&self, filter: &str) -> Result<(), String> {
        let f = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
        self.0.reload(f).map_err(|e| e.to_string())
    }
}

/// Whether `Auto` means the journal here: stderr is connected to it.
fn under_systemd() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Where log lines go.
enum Output {
    /// journald's native socket.
    Journal(tracing_journald::Layer),
    /// JSON lines on stderr.
    Json,
    /// Text on stderr, coloured on a terminal.
    Human,
}

/// The `SYSLOG_IDENTIFIER` of the daemon's journal entries.
pub const IDENTIFIER: &str = "steward";

/// Installs the global subscriber writing to stderr. `RUST_LOG`, when set, takes
/// precedence over `level`.
pub fn init(format: LogFormat, level: &str) -> LevelHandle {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let output = match format {
        LogFormat::Json => Output::Json,
        LogFormat::Human => Output::Human,
        LogFormat::Auto if !under_systemd() => Output::Human,
        LogFormat::Auto => match tracing_journald::layer() {
            Ok(layer) => Output::Journal(layer.with_syslog_identifier(IDENTIFIER.to_string())),
            Err(e) => {
                eprintln!("steward: cannot open the journal socket ({e}); logging JSON to stderr");
                Output::Json
            }
        },
    };
    // One of the three layers is Some; `Option<Layer>` is a layer that does
    // nothing when None.
    let (journal, json, human) = match output {
        Output::Journal(layer) => (Some(layer), None, None),
        Output::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        Output::Human => (
            None,
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    let result = tracing_subscriber::registry()
        .with(filter)
        .with(journal)
        .with(json)
        .with(human)
        .try_init();
    // A subscriber already installed (tests) is fine: keep it.
    let _ = result;
    LevelHandle(handle)
}
