//! Typed configuration: the TOML file, `STEWARD_<SECTION>__<KEY>` environment
//! overrides, and validation.
//!
//! Raw input (`RawConfig`, serde with `deny_unknown_fields` and a default for every
//! key) becomes a validated [`Config`] in one place, [`Config::load`]. Every error
//! names the file, the key and, for TOML syntax or type errors, the line and column.
//! This module does not read secrets itself beyond resolving the environment variable
//! names the config points at, and never prints them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Marker for the data set compiled into the binary (`model.bootstrap_data`).
pub const BUNDLED_DATA: &str = "bundled:penguins";

/// How a config read from no file names its source in messages.
const EMBEDDED: &str = "<embedded defaults>";

/// The default config location, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/steward.toml";

/// Everything that can be wrong with a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Value {
        path: String,
        key: String,
        message: String,
    },
}

macro_rules! section {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty = $default:expr),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty),* }
        impl Default for $name {
            fn default() -> Self { Self { $($field: $default),* } }
        }
    };
}

section!(
    /// `[server]`: the HTTP listener and request limits.
    ServerConfig {
        listen: String = "127.0.0.1:8080".into(),
        token_env: String = "STEWARD_TOKEN".into(),
        max_batch: usize = 1024,
        max_body_bytes: usize = 1_048_576,
        max_upload_bytes: usize = 67_108_864,
        request_timeout_secs: Seconds = Seconds::from_secs(10),
        shutdown_timeout_secs: Seconds = Seconds::from_secs(20),
        max_connections: usize = 1024,
        header_timeout_secs: Seconds = Seconds::from_secs(30),
        max_header_bytes: usize = 32_768,
        base_url: String = String::new(),
    }
);

section!(
    /// `[database]`: the database (a SQLite file, or PostgreSQL for several
    /// replicas) and the prediction log writer.
    DatabaseConfig {
        url: String = "sqlite://data/steward.db".into(),
        retention_days: u32 = 30,
        queue_capacity: usize = 65_536,
        queue_wait_secs: Seconds = Seconds::from_secs(1),
        batch_rows: usize = 1_000,
        flush_secs: Seconds = Seconds::from_millis(5),
        answer_after_commit: bool = false,
        spool_dir: String = "data/spool".into(),
        spool_sync_secs: Seconds = Seconds::from_secs(1),
    }
);

section!(
    /// `[model]`: where artifacts live and how the first model is made.
    ModelConfig {
        dir: String = "data/models".into(),
        initial: String = String::new(),
        bootstrap_data: String = BUNDLED_DATA.into(),
        label: String = "label".into(),
        keep_versions: usize = 20,
    }
);

section!(
    /// `[training]`: retraining (schedule, data window, gate, limits).
    TrainingConfig {
        schedule: String = "0 0 3 * * *".into(),
        folds: usize = 5,
        min_rows: usize = 200,
        seed: u64 = 42,
        window_days: u32 = 30,
        max_rows: usize = 50_000,
        holdout_share: f64 = 0.2,
        original_share: f64 = 0.0,
        max_regression: f64 = 0.0,
        min_metric: f64 = 0.0,
        time_limit_secs: Seconds = Seconds::from_secs(1_800),
        drift_retrain: bool = true,
        drift_cooldown_secs: Seconds = Seconds::from_secs(3_600),
        min_rows_after_change: usize = 500,
        change_wait_secs: Seconds = Seconds::from_secs(3_600),
        pre_change_share: f64 = 0.0,
        change_retries: u32 = 2,
    }
);

section!(
    /// `[online]`: learning from feedback labels.
    OnlineConfig {
        enabled: bool = true,
        republish_every: u64 = 1_000,
        republish_secs: Seconds = Seconds::from_secs(60),
        step_size: f32 = 0.01,
        l2: f32 = 1e-5,
        clip: f32 = 1.0,
        guard_window: usize = 500,
        guard_margin: f64 = 0.02,
        queue: usize = 65_536,
        change_labels: u64 = 2_000,
        change_republish_every: u64 = 100,
        change_step_boost: f32 = 4.0,
    }
);

section!(
    /// `[compression]`: the accuracy budget for pruning and quantization.
    CompressionConfig {
        max_metric_drop: f64 = 0.01,
    }
);

section!(
    /// `[drift]`: the drift job.
    DriftConfig {
        interval_secs: Seconds = Seconds::from_secs(60),
        window: usize = 5_000,
        alpha: f64 = 0.05,
        correction: crate::stats::Correction = crate::stats::Correction::Bonferroni,
        psi_floor: f64 = 0.1,
        ks_floor: f64 = 0.05,
        dataset_share: f64 = 0.5,
        confirm_checks: u32 = 2,
        min_rows: usize = 100,
        anomaly_level: f64 = 0.999,
    }
);

section!(
    /// `[alerts]`: the mail transport and notification timing.
    AlertsConfig {
        transport: Transport = Transport::File,
        dir: String = "data/outbox".into(),
        smtp_host: String = "localhost".into(),
        smtp_port: u16 = 587,
        tls: Tls = Tls::Starttls,
        username: String = String::new(),
        password_env: String = "STEWARD_SMTP_PASSWORD".into(),
        password_file: String = String::new(),
        from: String = "steward@localhost".into(),
        to: Vec<String> = Vec::new(),
        group_wait_secs: Seconds = Seconds::from_secs(30),
        group_interval_secs: Seconds = Seconds::from_secs(300),
        repeat_interval_secs: Seconds = Seconds::from_secs(14_400),
        send_resolved: bool = true,
        group_by: Vec<String> = vec!["model".into()],
        max_per_hour: u32 = 20,
        connect_timeout_secs: Seconds = Seconds::from_secs(10),
        send_timeout_secs: Seconds = Seconds::from_secs(30),
        retry_initial_secs: Seconds = Seconds::from_secs(5),
        retry_max_secs: Seconds = Seconds::from_secs(600),
        ca_file: String = String::new(),
        base_url: String = String::new(),
    }
);

section!(
    /// `[cluster]`: several replicas on one PostgreSQL database (docs/CLUSTER.md).
    /// Read only when `database.url` is a PostgreSQL URL.
    ClusterConfig {
        lease_secs: Seconds = Seconds::from_secs(10),
        poll_secs: Seconds = Seconds::from_secs(5),
        replica_id: String = String::new(),
    }
);

section!(
    /// `[log]`: the daemon's own log output.
    LogConfig {
        format: LogFormat = LogFormat::Auto,
        level: String = "info".into(),
        access: bool = false,
    }
);

/// The whole file as written, before validation; private, so that the rest of
/// the daemon sees only the validated [`Config`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: ServerConfig,
    database: DatabaseConfig,
    model: ModelConfig,
    training: TrainingConfig,
    online: OnlineConfig,
    compression: CompressionConfig,
    drift: DriftConfig,
    alerts: AlertsConfig,
    cluster: ClusterConfig,
    log: LogConfig,
}

/// A duration key: a number of seconds, fractions allowed (`30`, `0.005`). Every
/// duration in the file is one of these, named `*_secs`, except the spans of
/// days that DESIGN.md fixes (`database.retention_days`, `training.window_days`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(Duration);

impl Seconds {
    pub const fn from_secs(secs: u64) -> Seconds {
        Seconds(Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Seconds {
        Seconds(Duration::from_millis(millis))
    }

    pub fn get(self) -> Duration {
        self.0
    }

    /// Whole milliseconds (rounded down), saturating.
    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} s", self.0.as_secs_f64())
    }
}

impl Serialize for Seconds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.subsec_nanos() == 0 {
            s.serialize_u64(self.0.as_secs())
        } else {
            s.serialize_f64(self.0.as_secs_f64())
        }
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Seconds, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Seconds;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of seconds ≥ 0, e.g. 30 or 0.5")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds::from_secs(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(Seconds::from_secs)
                    .map_err(|_| E::custom(format!("{v} is negative: expected seconds ≥ 0")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Seconds, E> {
                Duration::try_from_secs_f64(v)
                    .map(Seconds)
                    .map_err(|_| E::custom(format!("{v} is not a number of seconds ≥ 0 that fits")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Duration keys named in milliseconds before every duration became `*_secs`:
/// the old name is refused with the new one in the message.
const RENAMED: [(&str, &str); 5] = [
    ("request_timeout_ms", "server.request_timeout_secs"),
    ("header_timeout_ms", "server.header_timeout_secs"),
    ("queue_wait_ms", "database.queue_wait_secs"),
    ("flush_ms", "database.flush_secs"),
    ("retry_initial_ms", "alerts.retry_initial_secs"),
];

/// `alerts.transport`: where alert mail goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// An `.eml` file per mail in `alerts.dir`.
    File,
    /// SMTP to `alerts.smtp_host`.
    Smtp,
}

/// The names `alerts.group_by` accepts (`alert::rules::GroupBy`).
pub const GROUP_BY_NAMES: [&str; 5] = ["model", "rule", "feature", "detector", "trigger"];

/// `alerts.tls`: how the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tls {
    /// Plain text (a relay on the same host).
    None,
    /// Plain text upgraded with STARTTLS (port 587), required.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

impl std::fmt::Display for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tls::None => "none",
            Tls::Starttls => "starttls",
            Tls::Tls => "tls",
        })
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human format on a terminal, JSON under systemd (`JOURNAL_STREAM` set).
    Auto,
    Human,
    Json,
}

/// A validated configuration: the sections as typed by the file (every value
/// checked), and the values that needed parsing in their parsed form.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub model: ModelConfig,
    pub training: TrainingConfig,
    pub online: OnlineConfig,
    pub compression: CompressionConfig,
    pub drift: DriftConfig,
    pub alerts: AlertsConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
    /// Where the config came from (`<embedded defaults>` when no file was read).
    pub source: String,
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    /// Where `database.url` points.
    pub database_at: Location,
}

impl Config {
    /// Reads `path` (or the embedded defaults when `path` is `None` and the default
    /// file does not exist), applies environment overrides and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let (source, text) = match path {
            Some(p) => (p.display().to_string(), read(p)?),
            None if Path::new(DEFAULT_PATH).exists() => {
                (DEFAULT_PATH.to_string(), read(Path::new(DEFAULT_PATH))?)
            }
            None => (EMBEDDED.to_string(), String::new()),
        };
        Self::from_parts(&source, &text, &env)
    }

    /// Parses `text` (named `source` in messages), applies the `STEWARD_*__*`
    /// overrides found in `env` and validates. Pure: tests call it directly.
    pub fn from_parts(
        source: &str,
        text: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = if env_overrides(env).next().is_none() {
            // Straight from the text, so that positions point into the user's file.
            serde_path_to_error::deserialize(toml::Deserializer::new(text))
                .map_err(|e| located(source, text, &e))?
        } else {
            let mut table: toml::Table = text.parse().map_err(|e| syntax(source, text, &e))?;
            apply_env(&mut table, env)?;
            match serde_path_to_error::deserialize(toml::Value::Table(table)) {
                Ok(raw) => raw,
                Err(e) => return Err(after_overrides(source, text, env, &e)),
            }
        };
        raw.validate(source)
    }

    /// The configuration compiled in: what `load` gives with no file, parsed and
    /// validated the same way (so the listen address and database path are
    /// derived, not repeated).
    pub fn defaults() -> Result<Config, ConfigError> {
        Config::from_parts(EMBEDDED, "", &[])
    }
    fn from_raw(raw: RawConfig, source: &str, listen: SocketAddr, database_at: Location) -> Config {
        Config {
            log_format: raw.log.format,
            server: raw.server,
            database: raw.database,
            model: raw.model,
            training: raw.training,
            online: raw.online,
            compression: raw.compression,
            drift: raw.drift,
            alerts: raw.alerts,
            cluster: raw.cluster,
            log: raw.log,
            source: source.to_string(),
            listen,
            database_at,
        }
    }

    /// `section.key` names whose values differ.
    pub fn changed_keys(&self, new: &Config) -> Vec<String> {
        let (Ok(toml::Value::Table(a)), Ok(toml::Value::Table(b))) = (
            toml::Value::try_from(self.to_raw()),
            toml::Value::try_from(new.to_raw()),
        ) else {
            return Vec::new();
        };
        let mut changed = Vec::new();
        for (section, av) in &a {
            let (Some(toml::Value::Table(at)), Some(toml::Value::Table(bt))) =
                (Some(av), b.get(section))
            else {
                continue;
            };
            for (key, v) in at {
                if bt.get(key) != Some(v) {
                    changed.push(format!("{section}.{key}"));
                }
            }
        }
        changed
    }

    /// The file's shape again, for rendering.
    fn to_raw(&self) -> RawConfig {
        RawConfig {
            server: self.server.clone(),
            database: self.database.clone(),
            model: self.model.clone(),
            training: self.training.clone(),
            online: self.online.clone(),
            compression: self.compression.clone(),
            drift: self.drift.clone(),
            alerts: self.alerts.clone(),
            cluster: self.cluster.clone(),
            log: self.log.clone(),
        }
    }

    /// The effective config as TOML with secrets masked, for `check-config`.
    pub fn render_masked(&self) -> String {
        let mut raw = self.to_raw();
        raw.database.url = redact(&raw.database.url);
        if !raw.alerts.password_file.is_empty() {
            raw.alerts.password_file = format!("{} (contents not shown)", raw.alerts.password_file);
        }
        let mut out = toml::to_string_pretty(&raw).unwrap_or_default();
        let token = match std::env::var(&raw.server.token_env) {
            Ok(_) => "set (value masked)",
            Err(_) => "unset: write endpoints need no token",
        };
        let password = match std::env::var(&raw.alerts.password_env) {
            Ok(_) => "set (value masked)",
            Err(_) => "unset",
        };
        out.push_str(&format!(
            "\n# source: {}\n# token ({}): {}\n# smtp password ({}): {}\n",
            self.source, raw.server.token_env, token, raw.alerts.password_env, password
        ));
        out
    }

    /// The bearer token for write endpoints, read from the variable `server.token_env`
    /// names. `None` (no auth) when the variable is unset or empty.
    pub fn token(&self) -> Option<String> {
        std::env::var(&self.server.token_env)
            .ok()
            .filter(|t| !t.is_empty())
    }

    /// The SMTP password: the file `alerts.password_file` names (trailing newline
    /// removed), else the variable `alerts.password_env` names; `None` when
    /// neither is set. An unreadable file is an error naming it.
    pub fn smtp_password(&self) -> Result<Option<String>, ConfigError> {
        let a = &self.alerts;
        if !a.password_file.is_empty() {
            let text = read(Path::new(&a.password_file))?;
            return Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()));
        }
        Ok(std::env::var(&a.password_env)
            .ok()
            .filter(|p| !p.is_empty()))
    }

    /// Where mails point people: `alerts.base_url`, else `server.base_url` (the
    /// daemon's public address), else the listen address.
    pub fn base_url(&self) -> String {
        let url = [&self.alerts.base_url, &self.server.base_url]
            .into_iter()
            .find(|u| !u.is_empty())
            .cloned()
            .unwrap_or_default();
        if url.is_empty() {
            format!("http://{}", self.listen)
        } else {
            url.trim_end_matches('/').to_string()
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A type error with the key it is at (`server.max_batch`) and its position.
fn located(
    source: &str,
    text: &str,
    e: &serde_path_to_error::Error<toml::de::Error>,
) -> ConfigError {
    let mut err = syntax(source, text, e.inner());
    let key = e.path().to_string();
    if let ConfigError::Syntax { message, .. } = &mut err {
        // An unknown key's message names it already, at its own position.
        if !key.is_empty() && key != "." && !message.starts_with("unknown field") {
            *message = format!("{key}: {message}");
        }
        *message = explain(message);
    }
    err
}

/// `message`, with the new name of a renamed key when it refuses an old one.
fn explain(message: &str) -> String {
    match RENAMED
        .iter()
        .find(|(old, _)| message.starts_with(&format!("unknown field `{old}`")))
    {
        Some((old, new)) => {
            format!("`{old}` was renamed: write `{new}`, in seconds (fractions allowed)")
        }
        None => message.to_string(),
    }
}

/// A type error found once the environment overrides were applied: blamed on
/// the variable that set the key, else on the file (with its position).
fn after_overrides(
    source: &str,
    text: &str,
    env: &[(String, String)],
    e: &serde_path_to_error::Error<toml::de::Error>,
) -> ConfigError {
    let key = e.path().to_string();
    let var = env_overrides(env).find(|(section, name, _)| {
        format!(
            "{}.{}",
            section.to_ascii_lowercase(),
            name.to_ascii_lowercase()
        ) == key
    });
    if let Some((section, name, _)) = var {
        return ConfigError::Env {
            var: format!("STEWARD_{section}__{name}"),
            message: format!("{key}: {}", explain(e.inner().message())),
        };
    }
    match serde_path_to_error::deserialize::<_, RawConfig>(toml::Deserializer::new(text)) {
        Err(file_error) => located(source, text, &file_error),
        Ok(_) => ConfigError::Invalid {
            path: source.to_string(),
            message: format!(
                "after environment overrides: {key}: {}",
                explain(e.inner().message())
            ),
        },
    }
}

fn syntax(source: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
    ConfigError::Syntax {
        path: source.to_string(),
        line,
        column,
        message: e.message().to_string(),
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn env_overrides(env: &[(String, String)]) -> impl Iterator<Item = (&str, &str, &str)> {
    env.iter().filter_map(|(k, v)| {
        let rest = k.strip_prefix("STEWARD_")?;
        let (section, key) = rest.split_once("__")?;
        Some((section, key, v.as_str()))
    })
}

/// Applies `STEWARD_<SECTION>__<KEY>=value`. The value is read as a TOML value
/// (`8080`, `true`, `["a@b"]`, `"text"`); if it does not parse as one, as a string.
fn apply_env(table: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (section, key, value) in env_overrides(env) {
        let var = format!("STEWARD_{section}__{key}");
        let section = section.to_ascii_lowercase();
        let key = key.to_ascii_lowercase();
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key, parsed);
            }
            _ => {
                return Err(ConfigError::Env {
                    var,
                    message: format!("`{section}` is not a section"),
                })
            }
        }
    }
    Ok(())
}

impl RawConfig {
    /// `[training]`, `[online]` and `model.keep_versions`.
    fn training_and_online(
        &self,
        bad: &impl Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let t = &self.training;
        if t.folds < 2 {
            return Err(bad("training.folds", format!("{} is below 2", t.folds)));
        }
        crate::scheduler::Cron::parse(&t.schedule)
            .map_err(|e| bad("training.schedule", e.to_string()))?;
        positive(bad, "training.min_rows", t.min_rows as u64)?;
        positive(bad, "training.window_days", t.window_days.into())?;
        positive(bad, "training.max_rows", t.max_rows as u64)?;
        positive(bad, "training.time_limit_secs", nanos(t.time_limit_secs))?;
        if !(t.holdout_share > 0.0 && t.holdout_share < 1.0) {
            return Err(bad(
                "training.holdout_share",
                format!("{} is outside (0, 1)", t.holdout_share),
            ));
        }
        if !(0.0..1.0).contains(&t.original_share) {
            return Err(bad(
                "training.original_share",
                format!("{} is outside [0, 1)", t.original_share),
            ));
        }
        positive(
            bad,
            "training.min_rows_after_change",
            t.min_rows_after_change as u64,
        )?;
        positive(bad, "training.change_wait_secs", nanos(t.change_wait_secs))?;
        if !(0.0..1.0).contains(&t.pre_change_share) {
            return Err(bad(
                "training.pre_change_share",
                format!("{} is outside [0, 1)", t.pre_change_share),
            ));
        }
        if !(t.max_regression.is_finite() && t.max_regression >= 0.0) {
            return Err(bad(
                "training.max_regression",
                format!("{} is not a number ≥ 0", t.max_regression),
            ));
        }
        if !t.min_metric.is_finite() || t.min_metric > 1.0 {
            return Err(bad(
                "training.min_metric",
                format!("{} is not a number ≤ 1", t.min_metric),
            ));
        }
        let o = &self.online;
        positive(bad, "online.republish_every", o.republish_every)?;
        positive(bad, "online.republish_secs", nanos(o.republish_secs))?;
        positive(bad, "online.guard_window", o.guard_window as u64)?;
        positive(bad, "online.queue", o.queue as u64)?;
        positive(
            bad,
            "online.change_republish_every",
            o.change_republish_every,
        )?;
        if !(o.change_step_boost.is_finite() && o.change_step_boost >= 1.0) {
            return Err(bad(
                "online.change_step_boost",
                format!("{} is not a number ≥ 1", o.change_step_boost),
            ));
        }
        for (key, v) in [("online.step_size", o.step_size), ("online.clip", o.clip)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(key, format!("{v} is not a number > 0")));
            }
        }
        if !(o.l2.is_finite() && o.l2 >= 0.0) {
            return Err(bad("online.l2", format!("{} is not a number ≥ 0", o.l2)));
        }
        if !(o.guard_margin.is_finite() && o.guard_margin >= 0.0) {
            return Err(bad(
                "online.guard_margin",
                format!("{} is not a number ≥ 0", o.guard_margin),
            ));
        }
        if self.model.keep_versions < 2 {
            return Err(bad(
                "model.keep_versions",
                format!(
                    "{} is below 2 (the active and the previous version are always kept)",
                    self.model.keep_versions
                ),
            ));
        }
        Ok(())
    }

    /// Checks every value that the types alone do not constrain, section by
    /// section; the first error names its key.
    fn validate(self, source: &str) -> Result<Config, ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Value {
            path: source.to_string(),
            key: key.to_string(),
            message,
        };
        let listen = self.check_server(&bad)?;
        let database_at = self.check_database(&bad)?;
        self.check_cluster(&bad)?;
        self.check_model(&bad)?;
        self.training_and_online(&bad)?;
        self.check_drift(&bad)?;
        if !(0.0..1.0).contains(&self.compression.max_metric_drop) {
            return Err(bad(
                "compression.max_metric_drop",
                format!("{} is outside [0, 1)", self.compression.max_metric_drop),
            ));
        }
        self.check_alerts(&bad)?;
        self.check_log(&bad)?;
        Ok(Config::from_raw(self, source, listen, database_at))
    }

    fn check_server<E>(&self, bad: &impl Fn(&str, String) -> E) -> Result<SocketAddr, E> {
        let s = &self.server;
        let listen: SocketAddr = s.listen.parse().map_err(|_| {
            bad(
                "server.listen",
                format!("`{}` is not an address like 127.0.0.1:8080", s.listen),
            )
        })?;
        for (key, v) in [
            ("server.max_batch", s.max_batch as u64),
            ("server.max_body_bytes", s.max_body_bytes as u64),
            ("server.max_upload_bytes", s.max_upload_bytes as u64),
            ("server.request_timeout_secs", nanos(s.request_timeout_secs)),
            (
                "server.shutdown_timeout_secs",
                nanos(s.shutdown_timeout_secs),
            ),
            ("server.max_connections", s.max_connections as u64),
            ("server.header_timeout_secs", nanos(s.header_timeout_secs)),
        ] {
            positive(bad, key, v)?;
        }
        if !(1024..=1 << 20).contains(&s.max_header_bytes) {
            return Err(bad(
                "server.max_header_bytes",
                format!("{} is outside 1024..=1048576", s.max_header_bytes),
            ));
        }
        Ok(listen)
    }

    fn check_database<E>(&self, bad: &impl Fn(&str, String) -> E) -> Result<Location, E> {
        let d = &self.database;
        let path = Location::parse(&d.url).ok_or_else(|| {
            bad(
                "database.url",
                format!(
                    "`{}` is neither a sqlite:// URL with a file path nor a valid \
                     postgres:// URL",
                    redact(&d.url)
                ),
            )
        })?;
        for (key, v) in [
            ("database.retention_days", u64::from(d.retention_days)),
            ("database.queue_capacity", d.queue_capacity as u64),
            ("database.flush_secs", nanos(d.flush_secs)),
        ] {
            positive(bad, key, v)?;
        }
        if !(1..=4_000).contains(&d.batch_rows) {
            return Err(bad(
                "database.batch_rows",
                format!("{} is outside 1..=4000", d.batch_rows),
            ));
        }
        Ok(path)
    }

    fn check_cluster<E>(&self, bad: &impl Fn(&str, String) -> E) -> Result<(), E> {
        let c = &self.cluster;
        let min = MIN_LEASE;
        if c.lease_secs.get() < min {
            return Err(bad(
                "cluster.lease_secs",
                format!("{} is shorter than {} s", c.lease_secs, min.as_secs_f64()),
            ));
        }
        positive(bad, "cluster.poll_secs", nanos(c.poll_secs))?;
        Ok(())
    }

    fn check_model<E>(&self, bad: &impl Fn(&str, String) -> E) -> Result<(), E> {
        let m = &self.model;
        for (key, v) in [("model.dir", &m.dir), ("model.label", &m.label)] {
            if v.is_empty() {
                return Err(bad(key, "must not be empty".into()));
            }
        }
        if m.initial.is_empty() && m.bootstrap_data.is_empty() {
            return Err(bad(
                "model.bootstrap_data",
                "must be set when model.initial is empty (the daemon needs a first model)".into(),
            ));
        }
        Ok(())
    }

    fn check_drift<E>(&self, bad: &impl Fn(&str, String) -> E) -> Result<(), E> {
        let d = &self.drift;
        for (key, v) in [
            ("drift.interval_secs", nanos(d.interval_secs)),
            ("drift.window", d.window as u64),
            ("drift.confirm_checks", u64::from(d.confirm_checks)),
        ] {
            positive(bad, key, v)?;
        }
        unit_open(bad, "drift.alpha", d.alpha)?;
        unit_open(bad, "drift.anomaly_level", d.anomaly_level)?;
        for (key, v) in [
            ("drift.psi_floor", d.psi_floor),
            ("drift.ks_floor", d.ks_floor),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(key, format!("{v} is not a number ≥ 0")));
            }
        }
        if !(d.dataset_share > 0.0 && d.dataset_share <= 1.0) {
            return Err(bad(
                "drift.dataset_share",
                format!("{} is outside (0, 1]", d.dataset_share),
            ));
        }
        if d.min_rows < 2 {
            return Err(bad("drift.min_rows", format!("{} is below 2", d.min_rows)));
        }
        Ok(())
    }

    fn check_alerts<E>(&self, bad: &impl Fn(&str, String) -> E) -> Result<(), E> {
        let a = &self.alerts;
        if a.transport == Transport::Smtp && a.to.is_empty() {
            return Err(bad(
                "alerts.to",
                "is empty: the smtp transport needs at least one recipient".into(),
            ));
        }
        let addresses = std::iter::once(("alerts.from".to_string(), &a.from)).chain(
            a.to.iter()
                .enumerate()
                .map(|(i, addr)| (format!("alerts.to[{i}]"), addr)),
        );
        for (key, addr) in addresses {
            if !looks_like_address(addr) || addr.parse::<lettre::message::Mailbox>().is_err() {
                return Err(bad(&key, format!("`{addr}` is not an email address")));
            }
        }
        for (i, name) in a.group_by.iter().enumerate() {
            if !GROUP_BY_NAMES.contains(&name.as_str()) {
                return Err(bad(
                    &format!("alerts.group_by[{i}]"),
                    format!("`{name}` is not one of {}", GROUP_BY_NAMES.join(", ")),
                ));
            }
        }
        for (key, v) in [
            ("alerts.group_interval_secs", nanos(a.group_interval_secs)),
            ("alerts.repeat_interval_secs", nanos(a.repeat_interval_secs)),
            ("alerts.max_per_hour", u64::from(a.max_per_hour)),
            ("alerts.connect_timeout_secs", nanos(a.connect_timeout_secs)),
            ("alerts.send_timeout_secs", nanos(a.send_timeout_secs)),
            ("alerts.retry_initial_secs", nanos(a.retry_initial_secs)),
            ("alerts.retry_max_secs", nanos(a.retry_max_secs)),
        ] {
            positive(bad, key, v)?;
        }
        Ok(())
    }

    fn check_log<E>(&self, bad: &impl Fn(&str, String) -> E) -> Result<(), E> {
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(bad(
                "log.level",
                format!(
                    "`{}` is not a level or filter such as \"info\" or \"steward=debug\"",
                    self.log.level
                ),
            ));
        }
        Ok(())
    }
}

fn positive<E>(bad: &impl Fn(&str, String) -> E, key: &str, v: u64) -> Result<(), E> {
    if v == 0 {
        Err(bad(key, "must be greater than 0".into()))
    } else {
        Ok(())
    }
}

/// A duration in nanoseconds (saturating), for [`positive`].
fn nanos(s: Seconds) -> u64 {
    u64::try_from(s.get().as_nanos()).unwrap_or(u64::MAX)
}

fn unit_open<E>(bad: &impl Fn(&str, String) -> E, key: &str, v: f64) -> Result<(), E> {
    if v > 0.0 && v < 1.0 {
        Ok(())
    } else {
        Err(bad(key, format!("{v} is outside (0, 1)")))
    }
}

fn looks_like_address(s: &str) -> bool {
    match s.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !s.chars().any(|c| c.is_whitespace() || c == '<' || c == '>')
        }
        None => false,
    }
}

/// Where the database is: `database.url` parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file (`sqlite://PATH`).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://...` or `postgresql://...`, as given).
    Postgres(String),
}

impl Location {
    /// `url` parsed: a `sqlite://PATH` (or `sqlite:PATH`) with a file path, or a
    /// `postgres://` / `postgresql://` URL. `None` for anything else.
    pub fn parse(url: &str) -> Option<Location> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(url)
                .ok()
                .map(|_| Location::Postgres(url.to_string()));
        }
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or("");
        if path.is_empty() || path == ":memory:" {
            return None;
        }
        Some(Location::Sqlite(PathBuf::from(path)))
    }

    /// The SQLite file, if it is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(p) => Some(p),
            Location::Postgres(_) => None,
        }
    }

    /// For logs: the file, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(url) => redact(url),
        }
    }
}

/// `url` with any password replaced by `***`: the one in the user part
/// (`postgres://user:secret@host/db`) and a `password` parameter
/// (`?password=secret`), which libpq and sqlx both take.
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match base.split_once("://").and_then(|(scheme, rest)| {
        let (auth, host) = rest.split_once('@')?;
        let (user, _) = auth.split_once(':')?;
        Some(format!("{scheme}://{user}:***@{host}"))
    }) {
        Some(redacted) => redacted,
        None => base.to_string(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => param.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// The shortest `cluster.lease_secs` accepted: the lease is kept in
/// milliseconds and renewed three times per lease.
pub const MIN_LEASE: Duration = Duration::from_millis(300);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_user_part_or_a_parameter_is_hidden() {
        let cases = [
            (
                "postgres://steward:s3cret@db:5432/steward",
                "postgres://steward:***@db:5432/steward",
            ),
            (
                "postgres://steward@db/steward?sslmode=require&password=s3cret",
                "postgres://steward@db/steward?sslmode=require&password=***",
            ),
            (
                "postgresql://u:p@db/x?PASSWORD=p&application_name=a@b",
                "postgresql://u:***@db/x?PASSWORD=***&application_name=a@b",
            ),
            ("postgres://db/steward", "postgres://db/steward"),
            ("sqlite://data/steward.db", "sqlite://data/steward.db"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn empty_text_gives_the_documented_defaults() {
        let c = Config::from_parts("t", "", &[]).unwrap();
        assert_eq!(c.server, ServerConfig::default());
        assert_eq!(c.alerts, AlertsConfig::default());
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(
            c.database_at,
            Location::Sqlite(std::path::PathBuf::from("data/steward.db"))
        );
    }

    #[test]
    fn durations_are_seconds_with_fractions_allowed() {
        let c = Config::from_parts(
            "t",
            "[server]\nrequest_timeout_secs = 2.5\n[database]\nflush_secs = 0.005\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.server.request_timeout_secs.get(),
            Duration::from_millis(2_500)
        );
        assert_eq!(c.database.flush_secs.get(), Duration::from_millis(5));
        let env = [(
            "STEWARD_DRIFT__INTERVAL_SECS".to_string(),
            "0.25".to_string(),
        )];
        let c = Config::from_parts("t", "", &env).unwrap();
        assert_eq!(c.drift.interval_secs.get(), Duration::from_millis(250));
        assert!(c.render_masked().contains("interval_secs = 0.25"));
        assert!(c.render_masked().contains("flush_secs = 0.005"));
        let err = Config::from_parts("f.toml", "[drift]\ninterval_secs = -1\n", &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("f.toml:2:17: drift.interval_secs: -1 is negative"),
            "{err}"
        );
    }

    #[test]
    fn a_duration_key_named_in_milliseconds_gets_its_new_name() {
        let err =
            Config::from_parts("f.toml", "[server]\nrequest_timeout_ms = 500\n", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "f.toml:2:1: `request_timeout_ms` was renamed: write `server.request_timeout_secs`, \
             in seconds (fractions allowed)"
        );
        let env = [("STEWARD_DATABASE__FLUSH_MS".to_string(), "5".to_string())];
        let err = Config::from_parts("f.toml", "", &env).unwrap_err();
        assert!(
            err.to_string().contains("write `database.flush_secs`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_line_and_column() {
        let err = Config::from_parts(
            "f.toml",
            "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n",
            &[],
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("f.toml:3:1:"), "{msg}");
        assert!(msg.contains("lisen"), "{msg}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Config::from_parts("f.toml", "[drift]\nalpha = 1.5\n", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "f.toml: key `drift.alpha`: 1.5 is outside (0, 1)"
        );
        let err =
            Config::from_parts("f.toml", "[server]\nmax_batch = \"many\"\n", &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("f.toml:2:13: server.max_batch: invalid type"),
            "{err}"
        );
    }

    /// Each check of `validate`, one bad value at a time: the error names the
    /// key and says what is wrong with the value.
    #[test]
    fn every_bad_value_names_its_key_and_the_problem() {
        let cases = [
            (
                "[server]\nlisten = \"localhost\"",
                "server.listen",
                "not an address",
            ),
            (
                "[server]\nmax_batch = 0",
                "server.max_batch",
                "greater than 0",
            ),
            (
                "[server]\nmax_connections = 0",
                "server.max_connections",
                "greater than 0",
            ),
            (
                "[server]\nheader_timeout_secs = 0",
                "server.header_timeout_secs",
                "greater than 0",
            ),
            (
                "[server]\nmax_header_bytes = 100",
                "server.max_header_bytes",
                "outside 1024..=1048576",
            ),
            (
                "[database]\nurl = \"mysql://x\"",
                "database.url",
                "neither a sqlite:// URL",
            ),
            (
                "[database]\nurl = \"postgres://u:secret@h:notaport/db\"",
                "database.url",
                "postgres://u:***@h:notaport/db",
            ),
            (
                "[cluster]\nlease_secs = 0.1",
                "cluster.lease_secs",
                "shorter than 0.3 s",
            ),
            ("[cluster]\npoll_secs = 0", "cluster.poll_secs", ""),
            (
                "[database]\nretention_days = 0",
                "database.retention_days",
                "greater than 0",
            ),
            (
                "[database]\nbatch_rows = 5000",
                "database.batch_rows",
                "outside 1..=4000",
            ),
            (
                "[database]\nflush_secs = 0",
                "database.flush_secs",
                "greater than 0",
            ),
            ("[model]\ndir = \"\"", "model.dir", "must not be empty"),
            ("[model]\nlabel = \"\"", "model.label", "must not be empty"),
            (
                "[model]\nbootstrap_data = \"\"",
                "model.bootstrap_data",
                "must be set",
            ),
            ("[training]\nfolds = 1", "training.folds", "below 2"),
            ("[drift]\nwindow = 0", "drift.window", "greater than 0"),
            (
                "[drift]\nconfirm_checks = 0",
                "drift.confirm_checks",
                "greater than 0",
            ),
            (
                "[drift]\nanomaly_level = 1.0",
                "drift.anomaly_level",
                "outside (0, 1)",
            ),
            (
                "[drift]\npsi_floor = -1.0",
                "drift.psi_floor",
                "not a number ≥ 0",
            ),
            (
                "[drift]\ndataset_share = 0.0",
                "drift.dataset_share",
                "outside (0, 1]",
            ),
            ("[drift]\nmin_rows = 1", "drift.min_rows", "below 2"),
            (
                "[compression]\nmax_metric_drop = 1.0",
                "compression.max_metric_drop",
                "outside [0, 1)",
            ),
            (
                "[alerts]\nfrom = \"steward\"",
                "alerts.from",
                "not an email address",
            ),
            (
                "[alerts]\nto = [\"a@b.c\", \"x y@z\"]",
                "alerts.to[1]",
                "not an email address",
            ),
            (
                "[alerts]\ngroup_by = [\"rule\", \"model_version\"]",
                "alerts.group_by[1]",
                "`model_version` is not one of model, rule, feature, detector, trigger",
            ),
            (
                "[alerts]\nmax_per_hour = 0",
                "alerts.max_per_hour",
                "greater than 0",
            ),
            (
                "[alerts]\nretry_max_secs = 0",
                "alerts.retry_max_secs",
                "greater than 0",
            ),
            (
                "[log]\nlevel = \"steward=loudest\"",
                "log.level",
                "not a level or filter",
            ),
        ];
        for (text, key, problem) in cases {
            let err = Config::from_parts("f.toml", &format!("{text}\n"), &[])
                .expect_err(text)
                .to_string();
            assert!(
                err.starts_with(&format!("f.toml: key `{key}`: ")),
                "{text}: {err}"
            );
            assert!(err.contains(problem), "{text}: {err}");
        }
    }

    /// The settings with a fixed set of names are enums: a wrong name is a
    /// type error with its line, column and the names allowed.
    #[test]
    fn a_name_outside_a_fixed_set_is_refused_where_it_stands() {
        let cases = [
            ("[drift]\ncorrection = \"holm\"", "f.toml:2:14: drift.correction: unknown variant `holm`, expected one of `bonferroni`, `bh`, `none`"),
            ("[alerts]\ntransport = \"pigeon\"", "f.toml:2:13: alerts.transport: unknown variant `pigeon`, expected `file` or `smtp`"),
            ("[alerts]\ntls = \"ssl\"", "f.toml:2:7: alerts.tls: unknown variant `ssl`, expected one of `none`, `starttls`, `tls`"),
            ("[log]\nformat = \"xml\"", "f.toml:2:10: log.format: unknown variant `xml`, expected one of `auto`, `human`, `json`"),
        ];
        for (text, expected) in cases {
            let err = Config::from_parts("f.toml", &format!("{text}\n"), &[])
                .expect_err(text)
                .to_string();
            assert!(err.starts_with(expected), "{text}: {err}");
        }
        let c = Config::from_parts(
            "f.toml",
            "[alerts]\ntransport = \"smtp\"\ntls = \"tls\"\nto = [\"a@b.c\"]\n[drift]\ncorrection = \"bh\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            (c.alerts.transport, c.alerts.tls, c.drift.correction),
            (
                Transport::Smtp,
                Tls::Tls,
                crate::stats::Correction::BenjaminiHochberg
            )
        );
    }

    /// A type error keeps its key and position when environment overrides are
    /// in play too, and an override's own type error names the variable.
    #[test]
    fn type_errors_name_the_key_with_overrides_present() {
        let env = vec![("STEWARD_MODEL__DIR".to_string(), "/tmp/m".to_string())];
        let err = Config::from_parts("f.toml", "[drift]\nwindow = \"big\"\n", &env).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("f.toml:2:10: drift.window: invalid type"),
            "{err}"
        );
        let env = vec![("STEWARD_SERVER__MAX_BATCH".to_string(), "many".to_string())];
        let err = Config::from_parts("f.toml", "", &env).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "environment variable STEWARD_SERVER__MAX_BATCH: server.max_batch: invalid type"
            ),
            "{err}"
        );
    }

    #[test]
    fn env_overrides_win_over_the_file() {
        let env = vec![
            ("STEWARD_SERVER__MAX_BATCH".to_string(), "7".to_string()),
            ("STEWARD_MODEL__DIR".to_string(), "/tmp/m".to_string()),
            ("STEWARD_ALERTS__TO".to_string(), "[\"a@b.c\"]".to_string()),
            (
                "STEWARD_TOKEN".to_string(),
                "ignored: no section".to_string(),
            ),
        ];
        let c = Config::from_parts("f", "[server]\nmax_batch = 3\n", &env).unwrap();
        assert_eq!(c.server.max_batch, 7);
        assert_eq!(c.model.dir, "/tmp/m");
        assert_eq!(c.alerts.to, vec!["a@b.c".to_string()]);
    }

    #[test]
    fn env_override_of_an_unknown_key_is_an_error() {
        let env = vec![("STEWARD_SERVER__LISTN".to_string(), "x".to_string())];
        let err = Config::from_parts("f", "", &env).unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
    }

    #[test]
    fn smtp_without_recipients_is_rejected() {
        let err = Config::from_parts("f", "[alerts]\ntransport = \"smtp\"\n", &[]).unwrap_err();
        assert!(err.to_string().contains("alerts.to"), "{err}");
    }

    #[test]
    fn links_use_the_alerts_url_then_the_servers_then_the_listen_address() {
        let c = |text: &str| Config::from_parts("t", text, &[]).unwrap().base_url();
        assert_eq!(c(""), "http://127.0.0.1:8080");
        assert_eq!(
            c("[server]\nbase_url = \"https://models.example.com/\"\n"),
            "https://models.example.com"
        );
        assert_eq!(
            c("[server]\nbase_url = \"https://a\"\n[alerts]\nbase_url = \"https://b\"\n"),
            "https://b"
        );
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
    }
}
