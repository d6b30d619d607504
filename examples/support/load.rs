//! What the load tools `learning_load` and `soak` share: their common flags and
//! the `main` around a run, the penguin rows they send, the HTTP client and the
//! daemon it sends to, `steward serve` started in a temporary directory for
//! `--start`, the `/metrics` parser and the percentile helper.
//!
//! Included by each tool (examples are separate crates) with
//! `#[path = "support/load.rs"] mod load;`; a file in a subdirectory of
//! `examples/` is not built as an example of its own.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Map, Value};

/// The flags of `--start`, after the tool's `--url` (and `--pid`). learning_load
/// words the help of `--start` and `--keep` per phase.
#[derive(Debug, clap::Args)]
#[group(skip)]
pub struct StartArgs {
    /// Start `steward serve` in a temporary directory.
    #[arg(long)]
    pub start: bool,
    /// The steward binary for --start [default: target/release/steward].
    #[arg(long, requires = "start")]
    pub bin: Option<PathBuf>,
    /// Keep the temporary directory of --start (database, config, log).
    #[arg(long, requires = "start")]
    pub keep: bool,
}

/// The flags every load tool ends with.
#[derive(Debug, clap::Args)]
#[group(skip)]
pub struct ToolArgs {
    /// Tokio worker threads of this client.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub client_threads: u64,
    /// Bearer token for the write endpoints of a --url daemon.
    #[arg(long, env = "STEWARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print one JSON document with every figure on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs a tool's `run` on a tokio runtime of `--client-threads` workers and
/// turns its report into the exit status: the report on stdout with `--json`;
/// 0 when its `ok` is true, 1 when it is not or `run` failed (`{tool}: error: …`).
pub fn run_tool(
    tool: &str,
    args: &ToolArgs,
    run: impl Future<Output = anyhow::Result<Value>>,
) -> ExitCode {
    let threads = usize::try_from(args.client_threads).unwrap_or(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{tool}: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run) {
        Ok(report) => {
            if args.json {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{report:#}");
            }
            if report["ok"] == true {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("{tool}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Requests

/// One penguin: its `/v1/predict` body, its feature object and its true label.
pub struct Row {
    pub body: &'static str,
    pub features: Value,
    pub label: &'static str,
}

/// The rows of datasets/penguins.csv (compiled into the library as
/// `steward::BUNDLED_PENGUINS`; label left out, empty cells as null), each body
/// built once and kept for the whole run.
pub fn penguin_rows() -> anyhow::Result<&'static [Row]> {
    let mut reader = csv::Reader::from_reader(steward::BUNDLED_PENGUINS.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .context("penguins.csv header")?
        .iter()
        .map(String::from)
        .collect();
    let label_at = header
        .iter()
        .position(|h| h == "label")
        .ok_or_else(|| anyhow!("penguins.csv has no `label` column"))?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.context("penguins.csv")?;
        let mut features = Map::new();
        let mut label = "";
        for (i, (name, cell)) in header.iter().zip(record.iter()).enumerate() {
            if i == label_at {
                label = Box::leak(cell.to_string().into_boxed_str());
                continue;
            }
            let value = if cell.is_empty() {
                Value::Null
            } else if let Ok(n) = cell.parse::<i64>() {
                json!(n)
            } else if let Ok(x) = cell.parse::<f64>() {
                json!(x)
            } else {
                json!(cell)
            };
            features.insert(name.clone(), value);
        }
        let features = Value::Object(features);
        let body = json!({ "features": features }).to_string();
        rows.push(Row {
            body: Box::leak(body.into_boxed_str()),
            features,
            label,
        });
    }
    if rows.is_empty() {
        bail!("penguins.csv has no rows");
    }
    Ok(Box::leak(rows.into_boxed_slice()))
}

/// The HTTP client and the daemon it sends to.
#[derive(Clone)]
pub struct Client {
    client: reqwest::Client,
    pub base: String,
    token: Option<String>,
}

impl Client {
    /// A client with a 30 s timeout for `base` (no trailing slash); an empty
    /// token counts as none. Idle pooled connections are dropped after 20 s,
    /// before the daemon closes them at `server.header_timeout_secs` (30 s): a
    /// request sent on a connection the server is closing at that moment is
    /// reset (the keep-alive race OPERATIONS.md describes for load balancers;
    /// reqwest keeps idle connections 90 s by default). An hour's soak saw one
    /// such reset in 1.08 million requests.
    pub fn new(base: String, token: Option<String>) -> anyhow::Result<Client> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(20))
            .tcp_nodelay(true)
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            client,
            base,
            token: token.filter(|t| !t.is_empty()),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A POST with a JSON body (and the bearer token, when there is one).
    pub fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
        let req = self
            .client
            .post(self.url(path))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    /// Calls `probe` (a look at `/readyz`: `Err` says why it is not ready) every
    /// 200 ms until it is ready; an error once `limit` has passed.
    pub async fn wait_ready<F, Fut>(&self, limit: Duration, mut probe: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let deadline = Instant::now() + limit;
        loop {
            let last = match probe().await {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                bail!("{}/readyz is not ready: {last}", self.base);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The base URL: the `--start` daemon's, else `--url` without a trailing slash.
pub fn base_url(daemon: Option<&Daemon>, url: Option<&str>) -> anyhow::Result<String> {
    match (daemon, url) {
        (Some(d), _) => Ok(d.url.clone()),
        (None, Some(url)) => Ok(url.trim_end_matches('/').to_string()),
        (None, None) => bail!("give --url or --start"),
    }
}

/// A `/metrics` text as a map from series (name and labels) to value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Nearest-rank percentile of sorted values, in milliseconds (from µs).
pub fn pct_ms<T: Copy + Into<u64>>(sorted_us: &[T], q: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = (q * sorted_us.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted_us.len()) - 1;
    Some(sorted_us[i].into() as f64 / 1e3)
}

// ---------------------------------------------------------------------------
// The daemon of --start

/// `--bin`, else target/release/steward; an error naming `build` (the command
/// that builds it) when there is no such file.
pub fn steward_binary(bin: Option<&Path>, build: &str) -> anyhow::Result<PathBuf> {
    let bin = bin.map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/steward"),
        Path::to_path_buf,
    );
    if !bin.is_file() {
        bail!(
            "no steward binary at {} (run `{build}`, or give --bin)",
            bin.display()
        );
    }
    Ok(bin)
}

/// The keys [`Daemon::start`] relies on: a free loopback port, announced in a
/// JSON `listening` log line.
const DAEMON_CONFIG: &str = r#"[server]
listen = "127.0.0.1:0"

[log]
format = "json"
level = "info"

"#;

/// `steward serve` in a temporary directory, killed if still running when
/// dropped.
pub struct Daemon {
    child: Child,
    dir: Option<tempfile::TempDir>,
    pub url: String,
}

impl Daemon {
    /// Starts `bin serve` in a fresh temporary directory (`steward-{tool}.…`,
    /// `_` as `-`; the daemon's working directory, its log in steward.log) and
    /// waits for its `listening` line (a first start trains the bundled model).
    /// Its steward.toml: [`DAEMON_CONFIG`], then the tool's `config`.
    pub async fn start(bin: &Path, tool: &str, config: &str) -> anyhow::Result<Daemon> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("steward-{}.", tool.replace('_', "-")))
            .tempdir()
            .context("creating a temporary directory")?;
        let config = format!("# Written by examples/{tool}.rs --start.\n{DAEMON_CONFIG}{config}");
        std::fs::write(dir.path().join("steward.toml"), config).context("writing steward.toml")?;
        let log_path = dir.path().join("steward.log");
        let mut log = std::fs::File::create(&log_path).context("creating steward.log")?;
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--config", "steward.toml"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Only this tool's config counts: no STEWARD_* overrides from the caller.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STEWARD_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe"))?;
        // The daemon's log goes to steward.log; its `listening` line gives the address.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["fields"]["message"] == "listening" {
                        if let Some(addr) = v["fields"]["addr"].as_str() {
                            let _ = tx.send(addr.to_string());
                        }
                    }
                }
                let _ = writeln!(log, "{line}");
            }
        });
        let mut daemon = Daemon {
            child,
            dir: Some(dir),
            url: String::new(),
        };
        let started = Instant::now();
        let addr = loop {
            match rx.try_recv() {
                Ok(addr) => break addr,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    bail!(
                        "the daemon exited before listening; see {}",
                        log_path.display()
                    )
                }
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                bail!(
                    "the daemon exited ({status}) before listening; see {}",
                    log_path.display()
                );
            }
            if started.elapsed() > Duration::from_secs(180) {
                bail!(
                    "the daemon did not listen within 180 s; see {}",
                    log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        daemon.url = format!("http://{addr}");
        eprintln!(
            "== started steward serve (pid {}) on {} in {:.1} s; log {}",
            daemon.pid(),
            daemon.url,
            started.elapsed().as_secs_f64(),
            log_path.display()
        );
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A path in the temporary directory.
    #[allow(dead_code)] // soak only: the SQLite file and the log it reads at the end.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join(name))
    }

    /// SIGTERM, then waits up to 60 s for a clean exit (killed after that).
    /// Ok: the time to the clean exit; Err: what went wrong. Hands over the
    /// temporary directory, deleted when the caller drops it.
    pub async fn stop(mut self) -> (Result<Duration, String>, Option<tempfile::TempDir>) {
        let result = self.terminate().await;
        (result, self.dir.take())
    }

    async fn terminate(&mut self) -> Result<Duration, String> {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if !sent.is_ok_and(|s| s.success()) {
            return Err(format!("could not send SIGTERM to {pid}"));
        }
        let started = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => break Ok(started.elapsed()),
                Ok(Some(status)) => break Err(format!("exited with {status}")),
                Ok(None) if started.elapsed() > Duration::from_secs(60) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break Err("did not stop within 60 s of SIGTERM (killed)".into());
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => break Err(format!("cannot wait for it: {e}")),
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
