//! The test harness: a daemon process in a temporary directory, its log, and
//! helpers to talk to it; the backend it keeps its data in (SQLite, or a
//! throwaway PostgreSQL server), a look into that database whichever it is, and
//! [`for_each_backend!`] to run one test on both.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Connection;

use pg::Postgres;

pub mod browser;
pub mod pg;

/// Where a daemon keeps its data (issue 19): the SQLite file under its directory
/// (`data/steward.db`, the default), or a throwaway PostgreSQL server of its own
/// ([`pg::Postgres`]) named by `[database] url`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Whether a test can run on it: PostgreSQL's binaries are installed. Where
    /// they are not, this says so and a test skips; under CI it fails instead
    /// (as [`pg::Postgres::launch`]).
    pub fn available(self) -> bool {
        match self {
            Backend::Sqlite => true,
            Backend::Postgres => pg::installed(),
        }
    }

    /// A server for a daemon on this backend, if it needs one.
    fn launch(self) -> Option<Arc<Postgres>> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some(Arc::new(
                Postgres::launch().expect("PostgreSQL is installed (Backend::available)"),
            )),
        }
    }
}

/// Runs one test on both backends. Given a test's attribute and the name of an
/// `async fn name(backend: Backend)` beside it, it makes a module `name` with
/// the tests `name::sqlite` and `name::postgres`, each under that attribute (so
/// with the test's tokio flavour), each calling the function once:
///
/// ```ignore
/// for_each_backend!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] logs_answers);
/// async fn logs_answers(backend: Backend) {
///     let d = InProcess::start_on(backend, "").await;
///     // ...
/// }
/// ```
///
/// The PostgreSQL test skips where PostgreSQL is not installed, outside CI
/// ([`Backend::available`]). A function left out of every `for_each_backend!`
/// is dead code, which clippy refuses.
macro_rules! for_each_backend {
    ($(#[$attr:meta])* $name:ident) => {
        mod $name {
            use $crate::common::Backend;

            $(#[$attr])*
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }

            $(#[$attr])*
            async fn postgres() {
                if Backend::Postgres.available() {
                    super::$name(Backend::Postgres).await
                }
            }
        }
    };
}
pub(crate) use for_each_backend;

/// Where tests leave screenshots to look at: `target/screenshots/` (under
/// `CARGO_TARGET_DIR` when that is set).
pub fn screenshots_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("screenshots")
}

pub const BIN: &str = env!("CARGO_BIN_EXE_steward");

/// A penguin the bundled model knows.
pub fn penguin() -> Value {
    json!({
        "island": "Biscoe", "bill_length_mm": 48.6, "bill_depth_mm": 16.0,
        "flipper_length_mm": 230, "body_mass_g": 5800, "sex": "male"
    })
}

/// An artifact trained once per test run from the bundled data, so that daemons
/// started with `model.initial` skip training.
pub fn shared_model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("steward-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("penguins.safetensors");
        let model = steward::live::bootstrap(
            steward::config::BUNDLED_DATA,
            &steward::train::select::TrainOptions::new("label", 5, 42),
        )
        .unwrap();
        steward::model::artifact::save(&model, &path).unwrap();
        path
    })
}

/// A daemon process and the directory it runs in.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Child,
    pub url: String,
    pub log: Arc<Mutex<String>>,
    /// Its PostgreSQL server, if it runs on one: a field, so dropped (the server
    /// stopped) after `Drop` has killed the daemon or `stop` has seen it exit,
    /// unless a [`Db`] still holds it.
    server: Option<Arc<Postgres>>,
}

/// Writes `steward.toml` into `dir`: loopback on a free port, files inside `dir`,
/// the shared model, plus `extra` TOML appended (later keys in a section win only
/// if the section is not repeated: pass whole sections).
pub fn write_config(dir: &Path, sections: &str) -> PathBuf {
    let model = shared_model().display().to_string();
    let mut text = String::new();
    if !sections.contains("[server]") {
        text.push_str("[server]\nlisten = \"127.0.0.1:0\"\n");
    }
    if !sections.contains("[model]") {
        text.push_str(&format!("[model]\ninitial = \"{model}\"\n"));
    }
    text.push_str("[log]\nformat = \"json\"\nlevel = \"info\"\n");
    text.push_str(sections);
    let path = dir.join("steward.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// [`write_config`] with the database on `server` when there is one: its URL
/// goes into the caller's own `[database]` section (a section named twice is a
/// TOML error), or into one of its own.
pub fn write_config_on(dir: &Path, sections: &str, server: Option<&Postgres>) -> PathBuf {
    let Some(server) = server else {
        return write_config(dir, sections);
    };
    let url = format!("url = \"{}\"\n", server.url());
    let mut text = String::new();
    let (mut found, mut inside) = (false, false);
    for line in sections.lines() {
        let header = line.trim_start().starts_with('[');
        if header {
            inside = line.trim() == "[database]";
        }
        assert!(
            !(inside && !header && line.trim_start().starts_with("url")),
            "a test that sets database.url itself runs on SQLite only: {line}"
        );
        text.push_str(line);
        text.push('\n');
        if header && inside {
            text.push_str(&url);
            found = true;
        }
    }
    if !found {
        text.push_str("[database]\n");
        text.push_str(&url);
    }
    write_config(dir, &text)
}

impl Daemon {
    /// Starts a daemon on SQLite in a fresh directory and waits until it listens.
    pub fn start(sections: &str) -> Daemon {
        Self::start_with_env(sections, &[])
    }

    pub fn start_with_env(sections: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_on(Backend::Sqlite, sections, env)
    }

    /// Starts a daemon on `backend` (a PostgreSQL server of its own, launched
    /// here) in a fresh directory.
    pub fn start_on(backend: Backend, sections: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_on_in(backend, tempfile::tempdir().unwrap(), sections, env)
    }

    /// [`Daemon::start_on`] in `dir`, which may hold files the config names
    /// (a CSV to bootstrap from); `steward.toml` is written here.
    pub fn start_on_in(
        backend: Backend,
        dir: tempfile::TempDir,
        sections: &str,
        env: &[(&str, &str)],
    ) -> Daemon {
        let server = backend.launch();
        write_config_on(dir.path(), sections, server.as_deref());
        Self::spawn(dir, env, server)
    }

    /// Starts a daemon in `dir` (which holds `steward.toml`).
    pub fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Daemon {
        Self::spawn(dir, env, None)
    }

    /// Stops the daemon (as [`Daemon::stop`]) and starts another in its directory,
    /// on the same database; gives the first's exit status and log.
    pub fn restart(self, env: &[(&str, &str)]) -> (ExitStatus, String, Daemon) {
        let (status, log, stopped) = self.halt();
        (status, log, stopped.start(env))
    }

    /// Stops the daemon (as [`Daemon::stop`]) and keeps its directory and
    /// database (its PostgreSQL server up) for another, which
    /// [`Stopped::start`] starts once the test has done what it does between
    /// (looked into the database, started a mail server); gives the first's
    /// exit status and log.
    pub fn halt(mut self) -> (ExitStatus, String, Stopped) {
        let server = self.server.take();
        let (status, dir, log) = self.stop();
        (status, log, Stopped { dir, server })
    }

    fn spawn(
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
        server: Option<Arc<Postgres>>,
    ) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", "steward.toml"])
            .current_dir(dir.path())
            .env_remove("STEWARD_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (log, addr) = match watch_log(stderr) {
            Ok(found) => found,
            Err(log) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                panic!("daemon did not start ({status}); its log:\n{log}");
            }
        };
        Daemon {
            dir,
            child,
            url: format!("http://{addr}"),
            log,
            server,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Kills the daemon with SIGKILL (no clean stop) and waits for the exit;
    /// as [`Daemon::halt`], keeps its directory and database for the next.
    pub fn kill(mut self) -> Stopped {
        self.signal("KILL");
        wait(&mut self.child, Duration::from_secs(60));
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        Stopped {
            dir,
            server: self.server.take(),
        }
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(mut self) -> (ExitStatus, tempfile::TempDir, String) {
        self.signal("TERM");
        let status = wait(&mut self.child, Duration::from_secs(60));
        let log = self.log.lock().unwrap().clone();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status, dir, log)
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data/steward.db")
    }

    /// Its database: `data/steward.db` or its PostgreSQL server.
    pub fn db(&self) -> Db {
        Db::of(self.dir.path(), &self.server)
    }
}

/// A daemon stopped by [`Daemon::halt`]: its directory and its database, kept
/// for the next daemon.
pub struct Stopped {
    pub dir: tempfile::TempDir,
    server: Option<Arc<Postgres>>,
}

impl Stopped {
    /// Starts a daemon in the directory, on the same database.
    pub fn start(self, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(self.dir, env, self.server)
    }

    /// The database: `data/steward.db` or the PostgreSQL server.
    pub fn db(&self) -> Db {
        Db::of(self.dir.path(), &self.server)
    }
}

/// A daemon's database as a test looks into it, whichever the backend: queries
/// go through sqlx's `Any` driver, so one text runs on both. Write `$1`
/// placeholders (sqlx's SQLite takes them too) and decode i64, f64, String,
/// `Vec<u8>` or bool. On PostgreSQL every integer column is BIGINT and every
/// real DOUBLE PRECISION; flags are 0/1 integers on both; `SUM` of a BIGINT is
/// NUMERIC there, so write `CAST(SUM(x) AS BIGINT)`.
///
/// Each query opens a connection of its own. A `Db` keeps its PostgreSQL server
/// up after the daemon stops (take it before stopping, to look afterwards); on
/// SQLite the file lives as long as the daemon's directory.
#[derive(Clone)]
pub struct Db {
    url: String,
    _server: Option<Arc<Postgres>>,
}

impl Db {
    /// The database of PostgreSQL server `server` (its `postgres` database).
    pub fn on(server: Arc<Postgres>) -> Db {
        Db::of(Path::new(""), &Some(server))
    }

    /// The database of a daemon in `dir`: its PostgreSQL server's, or
    /// `data/steward.db` (where [`write_config`] puts it).
    fn of(dir: &Path, server: &Option<Arc<Postgres>>) -> Db {
        let url = match server {
            Some(server) => server.url(),
            None => format!("sqlite://{}", dir.join("data/steward.db").display()),
        };
        Db {
            url,
            _server: server.clone(),
        }
    }

    /// A connection, for queries with bound values.
    pub async fn connect(&self) -> sqlx::AnyConnection {
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url))
    }

    /// Rows in `table`.
    pub async fn count(&self, table: &str) -> i64 {
        self.scalar(&format!("SELECT COUNT(*) FROM {table}")).await
    }

    /// The one value `sql` selects.
    pub async fn scalar<T>(&self, sql: &str) -> T
    where
        (T,): for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let mut rows = self.rows::<(T,)>(sql).await;
        assert_eq!(rows.len(), 1, "{sql}: not one row");
        rows.remove(0).0
    }

    /// Every row `sql` selects, as tuples (or any `FromRow`).
    pub async fn rows<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let mut conn = self.connect().await;
        let rows = sqlx::query_as(sql)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.close().await;
        rows
    }
}

/// Requests to a daemon, in a process of its own ([`Daemon`]) or in this one
/// ([`InProcess`]).
#[allow(async_fn_in_trait)]
pub trait Api {
    fn base(&self) -> &str;

    /// The directory it runs in (its files are under `data/`).
    fn dir(&self) -> &Path;

    /// Its log so far (nothing in process: the test process has no subscriber).
    fn log_text(&self) -> String;

    /// Waits up to 10 s for `needle` in the log: a line reaches it a moment after
    /// the effect it reports (a row updated, an answer sent) can be seen.
    async fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within 10 s in\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs to /v1/predict.
    async fn predict(&self, c: &reqwest::Client, body: &Value) -> (u16, Value) {
        post(c, &format!("{}/v1/predict", self.base()), body).await
    }

    /// POSTs to /v1/feedback (no token).
    async fn feedback(&self, c: &reqwest::Client, body: &Value) -> (u16, Value) {
        post(c, &format!("{}/v1/feedback", self.base()), body).await
    }

    /// GETs `path` and parses the JSON answer.
    async fn get_json(&self, c: &reqwest::Client, path: &str) -> Value {
        get_json(c, &format!("{}{path}", self.base())).await
    }
}

impl Api for Daemon {
    fn base(&self) -> &str {
        &self.url
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// The daemon serving inside the test process (`steward::daemon::Serving`),
/// for tests that need no process boundary: no signals, no log, no environment.
/// Its files are in `dir`, as a [`Daemon`]'s are. It runs on the test's runtime:
/// a test that blocks its thread (waits on the SMTP server) needs
/// `flavor = "multi_thread"`.
pub struct InProcess {
    pub dir: tempfile::TempDir,
    pub url: String,
    stopper: tokio_util::sync::CancellationToken,
    finished: tokio::task::JoinHandle<()>,
    /// Its PostgreSQL server, if it serves from one (as [`Daemon`]'s).
    server: Option<Arc<Postgres>>,
}

impl InProcess {
    /// Starts serving on SQLite with the config `sections` (as [`Daemon::start`]
    /// takes them), its files under a fresh directory.
    pub async fn start(sections: &str) -> InProcess {
        Self::start_on(Backend::Sqlite, sections).await
    }

    /// [`InProcess::start`] on `backend` (a PostgreSQL server of its own,
    /// launched here).
    pub async fn start_on(backend: Backend, sections: &str) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let server = backend.launch();
        let path = write_config_on(dir.path(), sections, server.as_deref());
        let text = std::fs::read_to_string(&path).unwrap();
        // The daemon's relative paths are relative to its working directory,
        // which the tests share: point them into `dir` instead.
        let data = dir.path().join("data");
        let sqlite = (
            "DATABASE__URL",
            format!("sqlite://{}/steward.db", data.display()),
        );
        let env: Vec<(String, String)> = server
            .is_none()
            .then_some(sqlite)
            .into_iter()
            .chain([
                ("MODEL__DIR", format!("\"{}/models\"", data.display())),
                ("ALERTS__DIR", format!("\"{}/outbox\"", data.display())),
                (
                    "DATABASE__SPOOL_DIR",
                    format!("\"{}/spool\"", data.display()),
                ),
            ])
            .map(|(k, v)| (format!("STEWARD_{k}"), v))
            .collect();
        let config =
            steward::config::Config::from_parts(&path.display().to_string(), &text, &env).unwrap();
        let serving = steward::daemon::Serving::start(&config)
            .await
            .expect("serving in process");
        let url = format!("http://{}", serving.addr);
        let stopper = serving.stopper();
        let finished = tokio::spawn(serving.finish());
        InProcess {
            dir,
            url,
            stopper,
            finished,
            server,
        }
    }

    /// Stops serving as SIGTERM would (in-flight requests finish, every answered
    /// prediction is written) and gives back the directory.
    pub async fn stop(self) -> tempfile::TempDir {
        self.stopper.cancel();
        self.finished.await.expect("the daemon stopped cleanly");
        self.dir
    }

    /// Its database: `data/steward.db` or its PostgreSQL server.
    pub fn db(&self) -> Db {
        Db::of(self.dir.path(), &self.server)
    }
}

impl Api for InProcess {
    fn base(&self) -> &str {
        &self.url
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_text(&self) -> String {
        String::from("(serving in process: no log captured)")
    }
}

/// Collects a daemon's JSON log lines and waits for its `listening` line.
/// Returns the log so far and the address, or the log if it never listened.
pub fn watch_log(stderr: ChildStderr) -> Result<(Arc<Mutex<String>>, String), String> {
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["fields"]["message"] == "listening" {
                    let _ = tx.send(v["fields"]["addr"].as_str().unwrap_or("").to_string());
                }
            }
            let mut sink = sink.lock().unwrap();
            sink.push_str(&line);
            sink.push('\n');
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => Ok((log, addr)),
        Err(_) => Err(log.lock().unwrap().clone()),
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when dropped, so that a failing test leaves no daemon
/// behind (one would hold the test's output pipe open).
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        ChildGuard(cmd.spawn().unwrap())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for a child to exit, killing it after `limit`.
pub fn wait(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the binary to completion: (exit code, stdout, stderr).
pub fn run(args: &[&str], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env_remove("STEWARD_TOKEN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Rows in a table of the SQLite file at `path`.
pub async fn count(path: &Path, table: &str) -> i64 {
    let pool = open_db(path).await;
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// The value of an unlabelled metric (or one series, `name{label="x"}`).
pub async fn metric(c: &reqwest::Client, url: &str, name: &str) -> f64 {
    let text = metrics_text(c, url).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

/// Polls `f` until it returns true (a condition on the daemon's state), at most
/// `limit`.
pub async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `PRAGMA integrity_check` of the SQLite file at `path` says `ok`.
pub async fn assert_sound(path: &Path) {
    let pool = open_db(path).await;
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    pool.close().await;
}

/// GETs `url` and parses the JSON answer.
pub async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

/// The Prometheus text of `{url}/metrics`.
pub async fn metrics_text(c: &reqwest::Client, url: &str) -> String {
    c.get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A pool on the SQLite file at `path` (the daemon's, opened beside it).
pub async fn open_db(path: &Path) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// POSTs JSON; returns (status, body as JSON or Null).
pub async fn post(c: &reqwest::Client, url: &str, body: &Value) -> (u16, Value) {
    let r = c.post(url).json(body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A tmpfs of a given size mounted on a fresh directory (a disk that can fill
/// up and be grown again), unmounted when dropped. Mounting needs root, as CI
/// runs the tests.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI runs the tests as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path, _dir: dir }
    }

    /// Grows (or shrinks) the file system in place.
    pub fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
