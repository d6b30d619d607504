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

use std::path::PathBuf;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{App, AppError, Settings};
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
    let _instance = store::lock::InstanceLock::acquire(&config.database_path)?;
    let (app, mut parts) = App::build(&config).await?;
    let version = app.live_version();

    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let state = AppState::new(app.clone());
    let connections = state.metrics.connections.clone();
    let limits = Limits {
        max_body_bytes: config.server.max_body_bytes,
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
    let conn_limits = listen::ConnLimits {
        max_connections,
        header_timeout: server_cfg.header_timeout_secs.get(),
        max_header_bytes: server_cfg.max_header_bytes,
    };

    tracker.spawn(signals(
        stop.clone(),
        config.clone(),
        config_path,
        app.clone(),
        levels,
    )?);
    tracker.spawn(watchdog(stop.clone()));
    tracker.spawn(memory_job(stop.clone()));
    app.start_jobs(&config, &mut parts, &tracker, &stop);
    tracker.close();

    tracing::info!(%addr, model_version = %version, database = %config.database_path.display(),
        max_connections, open_file_limit = nofile, "listening");
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("serving model version {version} on {addr}")),
    ]);

    let deadline = config.server.shutdown_timeout_secs.get();
    let serve = listen::serve(listener, router, conn_limits, connections, stop.clone());
    let drained = tokio::select! {
        () = serve => true,
        () = async { stop.cancelled().await; tokio::time::sleep(deadline).await } => false,
    };
    if !drained {
        tracing::warn!(
            deadline_secs = deadline.as_secs(),
            "in-flight requests did not finish before the shutdown deadline"
        );
    }
    app.drain(parts, &tracker).await;
    Ok(())
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

/// Handles SIGTERM/SIGINT (stop) and SIGHUP (reload).
fn signals(
    stop: CancellationToken,
    mut config: Config,
    path: Option<PathBuf>,
    app: App,
    levels: LevelHandle,
) -> Result<impl std::future::Future<Output = ()>, DaemonError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                () = stop.cancelled() => return,
                _ = hup.recv() => {
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
    })
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
