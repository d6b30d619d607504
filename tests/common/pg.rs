//! A throwaway PostgreSQL server for tests and benches: `initdb` into a fresh
//! temporary directory, `pg_ctl start` listening on 127.0.0.1 only, on a free
//! port, with its Unix socket in that directory. Dropping a [`Postgres`] stops the
//! server at once (`pg_ctl stop -m immediate`) and removes the directory.
//!
//! The server refuses to run as root, and tests run as root in CI: then every
//! server command runs as the `postgres` user (`runuser -u postgres --`), and the
//! directory is handed to that user. As any other user they run as that user.
//! Settings are for tests: trust authentication on loopback, `fsync=off` (a
//! bench that wants durable commits passes `fsync=on` to [`Postgres::launch_with`]).
//!
//! The binaries are Debian's `postgresql` package (.ci/run installs it):
//! `STEWARD_PG_BIN`, else `/usr/lib/postgresql/<newest>/bin`, else `initdb` on
//! PATH. Where they are missing, [`Postgres::launch`] says so on stderr and
//! returns `None`, and the test skips; under CI (`CI` set) a missing PostgreSQL
//! fails the test instead, as a missing Chromium does (`browser.rs`).
//!
//! Self-contained (std, tempfile), so that a bench can include it with `#[path]`.
//! If the test process is killed outright (SIGKILL), Drop does not run and the
//! server outlives it; `pg_ctl -D <dir>/data stop` ends it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The superuser the cluster is created with.
const USER: &str = "postgres";

/// A running (or stopped) throwaway PostgreSQL; stopped and removed on drop.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// `-c name=value` settings given to every start.
    settings: Vec<String>,
    /// Whether server commands run through `runuser -u postgres` (we are root).
    as_postgres: bool,
    running: bool,
}

/// The directory holding `initdb` and `pg_ctl`, if PostgreSQL is installed.
fn binaries() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STEWARD_PG_BIN") {
        return Some(PathBuf::from(p));
    }
    // Debian's layout: /usr/lib/postgresql/15/bin; the newest version wins.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

/// Whether this process runs as root (then the server must run as `postgres`).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Panics with `what`, the command's output and the server's log.
fn check(output: Output, what: &str, log: &Path) {
    if output.status.success() {
        return;
    }
    panic!(
        "{what} failed ({}):\n{}{}\nserver log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// The binaries, or `None` after a note where PostgreSQL is not installed
/// (outside CI: under CI that fails the test).
fn required_binaries() -> Option<PathBuf> {
    let bin = binaries();
    if bin.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "PostgreSQL is not installed (apt-get install postgresql); CI must run the PostgreSQL tests"
        );
        eprintln!("PostgreSQL (initdb, pg_ctl) not installed: test skipped");
    }
    bin
}

/// Whether [`Postgres::launch`] can start a server: false (after the same note)
/// where PostgreSQL is not installed, outside CI; under CI a missing PostgreSQL
/// fails the test.
pub fn installed() -> bool {
    required_binaries().is_some()
}

impl Postgres {
    /// Creates and starts a cluster; `None` (after a note) where PostgreSQL is not
    /// installed, outside CI.
    pub fn launch() -> Option<Postgres> {
        Postgres::launch_with(&[])
    }

    /// [`Postgres::launch`] with more server settings (`"fsync=on"`), which
    /// override the harness's own.
    pub fn launch_with(settings: &[&str]) -> Option<Postgres> {
        let bin = required_binaries()?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("steward-pg-")
            .tempdir()
            .unwrap();
        if as_postgres {
            let status = Command::new("chown")
                .args([&format!("{USER}:"), dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success(), "chown {USER}: {}", dir.path().display());
        }
        let mut pg = Postgres {
            bin,
            dir,
            port: 0,
            settings: ["fsync=off", "listen_addresses=127.0.0.1"]
                .iter()
                .chain(settings)
                .map(|s| s.to_string())
                .collect(),
            as_postgres,
            running: false,
        };
        let data = pg.data();
        let output = pg
            .command("initdb")
            .args([
                "-D",
                &data,
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .unwrap();
        check(output, "initdb", &pg.log());
        // A port free when picked may be taken before the server binds it: retry.
        for attempt in 1..=3 {
            pg.port = free_port();
            if pg.try_start() {
                return Some(pg);
            }
            eprintln!(
                "pg_ctl start on port {} failed (attempt {attempt})",
                pg.port
            );
        }
        panic!(
            "PostgreSQL did not start; server log:\n{}",
            std::fs::read_to_string(pg.log()).unwrap_or_default()
        );
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `name` on this server.
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` and returns its URL: one per test keeps tests on
    /// one server apart.
    pub fn database(&self, name: &str) -> String {
        let output = self
            .command("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                name,
            ])
            .output()
            .unwrap();
        check(output, &format!("createdb {name}"), &self.log());
        self.url_of(name)
    }

    /// The cluster's directory (its data, socket and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server (fast shutdown: open sessions are ended); it keeps its
    /// data and port for [`Postgres::start`].
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
    }

    /// Starts the server again after [`Postgres::stop`], on the same port.
    pub fn start(&mut self) {
        assert!(
            self.try_start(),
            "pg_ctl start failed; server log:\n{}",
            self.server_log()
        );
    }

    /// The server's log so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn try_start(&mut self) -> bool {
        let mut options = format!(
            "-p {} -c unix_socket_directories={}",
            self.port,
            self.dir.path().display()
        );
        for s in &self.settings {
            options.push_str(" -c ");
            options.push_str(s);
        }
        let output = self
            .command("pg_ctl")
            .args([
                "-D",
                &self.data(),
                "-l",
                &self.log_path(),
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ])
            .output()
            .unwrap();
        self.running = output.status.success();
        self.running
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let output = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", mode, "-w", "stop"])
            .output();
        self.running = false;
        if let Ok(output) = output {
            check(output, "pg_ctl stop", &self.log());
        }
    }

    /// A command of the server's binaries, as the `postgres` user when we are root,
    /// run from the cluster's directory (the user may not read ours).
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", USER, "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.current_dir(self.dir.path()).stdin(Stdio::null());
        command
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn log_path(&self) -> String {
        self.log().display().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Not `pg_ctl_stop`: a panic inside drop (while a failed test unwinds)
        // would abort the process.
        if self.running {
            let _ = self
                .command("pg_ctl")
                .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
                .output();
        }
        // The TempDir removes the directory (we own it, or are root).
    }
}
