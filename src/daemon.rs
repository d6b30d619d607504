//! The composition root: start-up order, signals, systemd notification, shutdown.
//!
//! Start-up: open the database (migrations), make a model live, mark retrain runs
//! cut short by the last stop as failed, start the log writer, the drift job, the
//! concept-drift task, the two alerting tasks (rules into the outbox, the mailer),
//! the online learner, the retrain schedule and the drift trigger, bind the
//! listener, then tell systemd READY=1. SIGTERM/SIGINT: STOPPING=1,
//! stop accepting, let in-flight requests finish, flush the log queue, exit, all
//! within `server.shutdown_timeout_secs`. SIGHUP re-reads the config file and applies
//! the keys that can change at run time (`server.max_batch`, `log.level`,
//! `database.retention_days`); any other changed key is logged as needing a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{App, AppError, Parts, Settings};
use crate::config::{Config, ConfigError};
use crate::logging::LevelHandle;
use crate::server::{self, listen, AppState, Limits};
use crate::store;

/// Everything that can stop the daemon from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    App(#[from] AppError),
    #[error("cannot listen on {addr} (server.listen): {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Instance(#[from] store::lock::LockError),
    #[error(transparent)]
    Preflight(#[from] crate::preflight::PreflightError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs the daemon until SIGTERM or SIGINT: build, serve, drain.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    levels: LevelHandle,
) -> Result<(), DaemonError> {
    // What check-config checks, serve checks first; then, before anything touches
    // the database, one daemon per database.
    crate::preflight::check(&config)?;
    // One daemon per SQLite file; replicas share a PostgreSQL database.
    let _instance = match config.database_at.sqlite_path() {
        Some(path) => Some(store::lock::InstanceLock::acquire(path)?),
        None => None,
    };
    let signals = Signals::install()?;
    let serving = Serving::start(&config).await?;
    let stop = serving.stop.clone();
    serving.tracker.spawn(signals.handle(
        stop.clone(),
        config.clone(),
        config_path,
        serving.app.clone(),
        levels,
    ));
    serving.tracker.spawn(watchdog(stop.clone()));
    serving.tracker.spawn(memory_job(stop));
    let version = serving.app.live_version();
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!(
            "serving model version {version} on {}",
            serving.addr
        )),
    ]);
    serving.finish().await;
    Ok(())
}

/// The daemon serving in this process: the application built, the listener
/// bound and serving, the jobs started. [`run`] adds what belongs to the
/// process (preflight, the instance lock, signals, systemd, memory trimming);
/// tests start it directly, on a port of their own.
pub struct Serving {
    /// The address it listens on.
    pub addr: SocketAddr,
    app: App,
    parts: Parts,
    tracker: TaskTracker,
    stop: CancellationToken,
    serve: tokio::task::JoinHandle<()>,
    deadline: Duration,
}

impl Serving {
    /// Builds the application from `config`, binds `server.listen`, starts the
    /// jobs and serves.
    pub async fn start(config: &Config) -> Result<Serving, DaemonError> {
        let (app, mut parts) = App::build(config).await?;
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let state = AppState::new(app.clone());
        let connections = state.metrics.connections.clone();
        let limits = Limits {
            max_body_bytes: config.server.max_body_bytes,
            max_upload_bytes: config.server.max_upload_bytes,
            request_timeout: config.server.request_timeout_secs.get(),
            access_log: config.log.access,
        };
        let router = server::router(state, limits);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| DaemonError::Bind {
                addr: config.listen.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(DaemonError::Serve)?;
        let (conn_limits, open_file_limit) = connection_limits(config);
        // Links in mail default to the listening address: the one bound, when
        // the configured port was 0.
        let bound;
        let jobs_config = if config.listen.port() == 0 {
            bound = Config {
                listen: addr,
                ..config.clone()
            };
            &bound
        } else {
            config
        };
        app.start_jobs(jobs_config, &mut parts, &tracker, &stop);
        tracker.close();
        tracing::info!(%addr, model_version = %app.live_version(),
            database = %config.database_at.display(),
            max_connections = conn_limits.max_connections, open_file_limit, "listening");
        let serve = tokio::spawn(listen::serve(
            listener,
            router,
            conn_limits,
            connections,
            stop.clone(),
        ));
        Ok(Serving {
            addr,
            app,
            parts,
            tracker,
            stop,
            serve,
            deadline: config.server.shutdown_timeout_secs.get(),
        })
    }

    /// The token that stops it: [`Serving::finish`] returns once it is cancelled
    /// and everything is drained.
    pub fn stopper(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits for the stop, lets in-flight requests finish (up to
    /// `server.shutdown_timeout_secs`), then drains the application: every
    /// answered prediction is written when this returns.
    pub async fn finish(mut self) {
        self.stop.cancelled().await;
        if tokio::time::timeout(self.deadline, &mut self.serve)
            .await
            .is_err()
        {
            self.serve.abort();
            tracing::warn!(
                deadline_secs = self.deadline.as_secs_f64(),
                "in-flight requests did not finish before the shutdown deadline"
            );
        }
        self.app.drain(self.parts, &self.tracker).await;
    }
}

/// The connection layer's bounds, with `server.max_connections` lowered to what
/// the open-file limit allows (and a warning when it had to be), and that limit.
fn connection_limits(config: &Config) -> (listen::ConnLimits, u64) {
    let server_cfg = &config.server;
    let (max_connections, nofile) = listen::fit_to_file_limit(server_cfg.max_connections);
    if max_connections < server_cfg.max_connections {
        tracing::warn!(
            max_connections,
            configured = server_cfg.max_connections,
            open_file_limit = nofile,
            "server.max_connections lowered to fit the open-file limit (raise LimitNOFILE)"
        );
    }
    let limits = listen::ConnLimits {
        max_connections,
        header_timeout: server_cfg.header_timeout_secs.get(),
        max_header_bytes: server_cfg.max_header_bytes,
    };
    (limits, nofile)
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Pings the systemd watchdog at half its interval, when systemd asks for it.
async fn watchdog(stop: CancellationToken) {
    let Some(usec) = watchdog_usec() else { return };
    let mut tick = tokio::time::interval(Duration::from_micros(usec / 2));
    loop {
        tokio::select! {
            _ = tick.tick() => notify(&[NotifyState::Watchdog]),
            () = stop.cancelled() => return,
        }
    }
}

/// The watchdog interval systemd asks for, as `sd_watchdog_enabled(3)` reads it:
/// `WATCHDOG_USEC` set, and `WATCHDOG_PID` unset or ours. (sd-notify's helper
/// also requires `WATCHDOG_PID`, which systemd documents as optional.)
fn watchdog_usec() -> Option<u64> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    match std::env::var("WATCHDOG_PID").ok().map(|p| p.parse::<u32>()) {
        Some(Ok(pid)) if pid != std::process::id() => None,
        Some(Err(_)) => None,
        _ if usec == 0 => None,
        _ => Some(usec),
    }
}

/// Hands memory freed inside malloc's arenas back to the system (see `memory`).
async fn memory_job(stop: CancellationToken) {
    let mut tick = tokio::time::interval(crate::memory::TRIM_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let _ = tokio::task::spawn_blocking(crate::memory::trim).await;
    }
}

/// The signals the daemon handles, installed before it listens: a SIGTERM
/// sent as soon as the `listening` line appears must stop it cleanly, not kill
/// it with the default action.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, DaemonError> {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind| signal(kind).map_err(DaemonError::Signals);
        Ok(Signals {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            hup: install(SignalKind::hangup())?,
        })
    }

    /// Handles SIGTERM/SIGINT (stop) and SIGHUP (reload).
    async fn handle(
        mut self,
        stop: CancellationToken,
        mut config: Config,
        path: Option<PathBuf>,
        app: App,
        levels: LevelHandle,
    ) {
        loop {
            tokio::select! {
                _ = self.term.recv() => break,
                _ = self.int.recv() => break,
                () = stop.cancelled() => return,
                _ = self.hup.recv() => {
                    notify(&[NotifyState::Reloading]);
                    match Config::load(path.as_deref()) {
                        Ok(new) => {
                            apply_reload(&config, &new, &app, &levels);
                            config = new;
                        }
                        Err(e) => tracing::error!(error = %e, "SIGHUP: the new config is invalid; keeping the running one"),
                    }
                    notify(&[NotifyState::Ready]);
                }
            }
        }
        tracing::info!("stop signal received: draining in-flight requests and the log queue");
        notify(&[NotifyState::Stopping]);
        stop.cancel();
    }
}

/// Applies what can change at run time and names what cannot.
fn apply_reload(old: &Config, new: &Config, app: &App, levels: &LevelHandle) {
    app.set_settings(Settings::from_config(new));
    if let Err(e) = levels.set(&new.log.level) {
        tracing::error!(error = %e, "SIGHUP: cannot apply log.level");
    }
    let reloadable = ["server.max_batch", "database.retention_days", "log.level"];
    let changed = old.changed_keys(new);
    let (applied, ignored): (Vec<_>, Vec<_>) = changed
        .into_iter()
        .partition(|k| reloadable.contains(&k.as_str()));
    tracing::info!(applied = ?applied, "SIGHUP: config reloaded");
    if !ignored.is_empty() {
        tracing::warn!(keys = ?ignored, "SIGHUP: these keys changed but take effect only after a restart");
    }
}
