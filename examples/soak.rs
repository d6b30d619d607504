//! Soak test of steward: an hour (`--minutes`) of steady mixed load against one
//! daemon, with its memory, file descriptors and log counters sampled over time,
//! and at the end a check that every answered prediction is in SQLite.
//!
//! ```sh
//! cargo build --release --bin steward --example soak
//! target/release/examples/soak --start                      # 60 minutes
//! target/release/examples/soak --start --minutes 3 --json > soak.json
//! target/release/examples/soak --url http://127.0.0.1:8080 --pid 1234 --minutes 10
//! ```
//!
//! `--start` runs `target/release/steward serve` (or `--bin`) in a temporary
//! directory with a config written by this tool: loopback on a free port (read
//! from the daemon's `listening` log line), JSON logs, the first model trained
//! from the bundled data, online learning publishing a minor version every
//! `--republish-every` (300) labels, retraining on `--schedule` (every 3 minutes)
//! that promotes any candidate (`min_rows = 100`, `max_regression = 1.0`), a drift
//! check every 10 s and alert mails as files. It is stopped with SIGTERM at the
//! end. `--url` uses a running daemon instead (`--token` or `STEWARD_TOKEN` for
//! its write endpoints; `--pid` to sample its memory).
//!
//! The load, paced (not flat out) for `--minutes`, with the penguin rows of
//! datasets/penguins.csv (compiled in as `steward::BUNDLED_PENGUINS`; label left
//! out, empty cells as null):
//!
//! - `--rate` (300) single-instance `POST /v1/predict` per second, from
//!   `--predict-workers` (8) workers;
//! - `--batch-rate` (10) `POST /v1/predict` per second of `--batch-size` (50)
//!   instances;
//! - feedback with the true label for 30% of the answered ids: 27% in
//!   `POST /v1/feedback` batches of 20, 3% as single-label bodies;
//! - every `--poll-secs` (5): `GET /v1/drift`, `/v1/models`, `/metrics`, `/readyz`;
//! - every `--swap-every-secs` (120): `POST /v1/models/{v}/activate` of the
//!   second-newest stored version, `--swap-hold-ms` (1000) later of the newest
//!   (a swap by hand and back).
//!
//! Every `--sample-secs` (60), and at the start and the end, one sample goes to
//! stderr: the daemon's VmRSS and VmHWM (/proc/<pid>/status), threads, open fds
//! (/proc/<pid>/fd), and from `/metrics` the rows written and dropped, the log
//! queue depth, the live version and the swaps; with `--start` also the size of
//! the SQLite files. Every answer is counted by endpoint and status class; the
//! first 4xx, 5xx and request error (connection failure, timeout) of each
//! endpoint are kept with their message.
//!
//! At the end (after SIGTERM and a clean exit with `--start`) the tool opens the
//! daemon's SQLite file read-only (through sqlx, a dependency of the library)
//! and compares `SELECT COUNT(*) FROM predictions` with the predictions answered
//! 200 (single answers plus the instances of batch answers); `feedback` rows are
//! compared with the labels accepted (reported, not part of the exit status), and
//! the retraining runs are listed from `retrain_runs`. With `--url` the rows come
//! from the `steward_log_rows_written_total` delta instead, which counts other
//! clients too. The daemon's log (with `--start`) is scanned for ERROR and WARN
//! lines.
//!
//! The memory verdict compares the least-squares RSS slope (MB/min) of the
//! samples in the last third of the load with that of the first third (the start
//! sample, taken before any load, left out). A third needs 3 samples, so runs
//! shorter than about 9 sample intervals get no verdict. With a retrain every few
//! minutes that fit is aliased by the retrain cycle, so the lowest and highest
//! RSS in each 10 minutes are reported too, and are the better measure. Neither
//! is part of the exit status.
//!
//! Output: the sample table in markdown and the counts on stderr; with `--json`
//! one JSON document on stdout. Ctrl-C ends the load early and still reports.
//! Exit status: 0; 1 when any answer was 5xx, any request failed, the rows do not
//! match the answers or the daemon did not stop cleanly (the temporary directory
//! is then kept); 2 on bad usage.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use clap::Parser;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[path = "support/load.rs"]
mod load;
use load::{pct_ms, Daemon, Row};

/// Labels per batch feedback request.
const FEEDBACK_BATCH: usize = 20;

#[derive(Debug, Parser)]
#[command(
    about = "Soak test of steward: steady mixed load, memory over time, rows vs answers",
    after_help = "See the header of examples/soak.rs for the load and the checks."
)]
struct Args {
    /// Base URL of a running daemon.
    #[arg(long, required_unless_present = "start", conflicts_with = "start")]
    url: Option<String>,
    /// Pid of the --url daemon, to sample its memory and fds.
    #[arg(long, requires = "url")]
    pid: Option<u32>,
    #[command(flatten)]
    daemon: load::StartArgs,
    /// Minutes of load.
    #[arg(long, default_value_t = 60.0)]
    minutes: f64,
    /// Single-instance predictions per second.
    #[arg(long, default_value_t = 300.0)]
    rate: f64,
    /// Workers sending the single-instance predictions.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    predict_workers: u64,
    /// Batch predictions per second.
    #[arg(long, default_value_t = 10.0)]
    batch_rate: f64,
    /// Instances per batch prediction.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1024))]
    batch_size: u64,
    /// Seconds between the polls of drift, models, metrics and readiness.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    poll_secs: u64,
    /// Seconds between swaps by hand (0: none).
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    swap_every_secs: u64,
    /// Milliseconds between the two activations of a swap by hand (the online
    /// learner publishes about every republish_every / 240 s at the default
    /// rates, so a longer hold often finds the newest version already live).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    swap_hold_ms: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    sample_secs: u64,
    /// online.republish_every of the --start daemon.
    #[arg(long, default_value_t = 300, requires = "start")]
    republish_every: u64,
    /// training.schedule of the --start daemon (cron, seconds first, UTC).
    #[arg(long, default_value = "0 */3 * * * *", requires = "start")]
    schedule: String,
    #[command(flatten)]
    tool: load::ToolArgs,
}

fn main() -> ExitCode {
    // clap prints its message: usage errors exit 2, --help 0.
    let args = Args::parse();
    for (name, v) in [
        ("--minutes", args.minutes),
        ("--rate", args.rate),
        ("--batch-rate", args.batch_rate),
    ] {
        if !(v.is_finite() && (0.0..=100_000.0).contains(&v)) || (name == "--minutes" && v <= 0.0) {
            eprintln!("soak: error: {name} must be a number in (0, 100000], not {v}");
            return ExitCode::from(2);
        }
    }
    load::run_tool("soak", &args.tool, run(&args))
}

async fn run(args: &Args) -> anyhow::Result<Value> {
    let rows = load::penguin_rows()?;
    let daemon = if args.daemon.start {
        let build = "cargo build --release --bin steward";
        let bin = load::steward_binary(args.daemon.bin.as_deref(), build)?;
        Some(Daemon::start(&bin, "soak", &config(args)).await?)
    } else {
        None
    };
    let base = load::base_url(daemon.as_ref(), args.url.as_deref())?;
    let pid = daemon.as_ref().map(Daemon::pid).or(args.pid);
    // database.url keeps its default, relative to the working directory.
    let db = daemon.as_ref().and_then(|d| d.path("data/steward.db"));
    let stats = Arc::new(Stats::default());
    let http = Http {
        client: load::Client::new(base, args.tool.token.clone())?,
        stats: stats.clone(),
    };
    let ready = Duration::from_secs(if args.daemon.start { 60 } else { 5 });
    let load = match http.wait_ready(ready).await {
        Ok(()) => Load::run(&http, rows, args, pid, db.as_deref()).await,
        Err(e) => Err(e),
    };
    let load = match load {
        Ok(l) => l,
        Err(e) => {
            if let Some(d) = daemon {
                let (result, dir) = d.stop().await;
                if let Err(s) = result {
                    eprintln!("soak: daemon: {s}");
                }
                if let Some(dir) = dir {
                    eprintln!("soak: kept {}", dir.keep().display());
                }
            }
            return Err(e);
        }
    };

    // Stop the daemon (it writes every queued row on SIGTERM), then count.
    // The directory stays until the end of this function (or for good: below).
    let (stopped, log_scan, tempdir) = match daemon {
        Some(d) => {
            let log = d.path("steward.log");
            let (result, dir) = d.stop().await;
            let result = result
                .map(|t| format!("stopped cleanly in {:.1} s after SIGTERM", t.as_secs_f64()));
            (Some(result), log.map(|p| scan_log(&p)), dir)
        }
        None => (None, None, None),
    };
    let answered = load.answered();
    let rows_check = match (&db, &stopped) {
        (Some(path), Some(_)) => sqlite_counts(path).await.map(|c| RowsCheck {
            source: "sqlite",
            rows: c.predictions,
            feedback_rows: Some(c.feedback),
            models: Some(c.models),
            retrain_runs: c.retrain_runs,
            runs: c.runs,
        }),
        _ => Ok(RowsCheck {
            source: "metrics: steward_log_rows_written_total delta (counts other clients too)",
            rows: load.rows_written_delta(),
            feedback_rows: None,
            models: None,
            retrain_runs: BTreeMap::new(),
            runs: Vec::new(),
        }),
    };
    let rows_check = match rows_check {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("soak: cannot count the rows: {e:#}");
            None
        }
    };

    // The report.
    let counts = stats.snapshot();
    let server_errors: u64 = counts.values().map(|c| c.classes[5]).sum();
    let request_errors: u64 = counts.values().map(|c| c.errors).sum();
    let rows_match = rows_check.as_ref().is_some_and(|r| r.rows == answered);
    let feedback_match = rows_check
        .as_ref()
        .and_then(|r| r.feedback_rows)
        .map(|f| f == load.labels_accepted.load(Ordering::Relaxed));
    let (clean, stop_text) = match &stopped {
        Some(Ok(s)) => (true, Some(s.clone())),
        Some(Err(s)) => (false, Some(s.clone())),
        None => (true, None),
    };
    let memory = memory_verdict(&load.samples);
    let ok = server_errors == 0 && request_errors == 0 && rows_match && clean;
    let dir = match tempdir {
        Some(d) if args.daemon.keep || !ok => Some(d.keep()),
        _ => None,
    };

    eprintln!();
    eprintln!("## samples");
    eprintln!();
    eprint!("{}", sample_table(&load.samples));
    eprintln!();
    eprintln!("## answers by endpoint");
    eprintln!();
    eprint!("{}", count_table(&counts));
    for (name, c) in &counts {
        for (what, first) in [
            ("first 5xx", &c.first_5xx),
            ("first error", &c.first_error),
            ("first 4xx", &c.first_4xx),
        ] {
            if let Some(m) = first {
                eprintln!("- {name}: {what}: {m}");
            }
        }
    }
    eprintln!();
    let elapsed = load.elapsed.as_secs_f64();
    let single = load.single_answered.load(Ordering::Relaxed);
    let batch_instances = load.batch_instances.load(Ordering::Relaxed);
    eprintln!(
        "load: {:.1} min; single predictions {single} ({:.1}/s), batch instances {batch_instances} ({:.1}/s); labels sent {}, accepted {}, not queued {}",
        elapsed / 60.0,
        single as f64 / elapsed,
        batch_instances as f64 / elapsed,
        load.labels_sent.load(Ordering::Relaxed),
        load.labels_accepted.load(Ordering::Relaxed),
        load.labels_unqueued.load(Ordering::Relaxed),
    );
    eprintln!(
        "swaps by hand: {} activations answered 200 ({} changed the live version), {} skipped (fewer than 2 stored versions)",
        load.activations_ok.load(Ordering::Relaxed),
        load.activations_changed.load(Ordering::Relaxed),
        load.swaps_skipped.load(Ordering::Relaxed),
    );
    match &rows_check {
        Some(r) => {
            eprintln!(
                "rows: {} in predictions ({}) vs {answered} answered 200: {}",
                r.rows,
                r.source,
                if rows_match { "equal" } else { "MISMATCH" }
            );
            if let Some(f) = r.feedback_rows {
                eprintln!(
                    "feedback rows: {f} vs {} labels accepted: {}",
                    load.labels_accepted.load(Ordering::Relaxed),
                    if feedback_match == Some(true) {
                        "equal"
                    } else {
                        "MISMATCH"
                    }
                );
            }
            if let Some(m) = r.models {
                eprintln!("models registered: {m}; retrain runs {:?}", r.retrain_runs);
            }
            for run in &r.runs {
                eprintln!("  {}", run.line());
            }
        }
        None => eprintln!("rows: not counted (see the error above)"),
    }
    eprintln!(
        "memory: RSS slope {} MB/min over the first third, {} MB/min over the last third: {}",
        fmt_opt(memory.first_slope, 3),
        fmt_opt(memory.last_slope, 3),
        memory.verdict
    );
    eprintln!(
        "memory: lowest/highest RSS per 10 minutes (MB): {}",
        rss_windows(&load.samples)
            .iter()
            .map(|w| format!("{}–{} {:.1}/{:.1}", w.0, w.0 + 9, w.1, w.2))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(s) = &stop_text {
        eprintln!("daemon: {s}");
    }
    if let Some(scan) = &log_scan {
        eprintln!(
            "daemon log: {} lines, {} ERROR, {} WARN",
            scan.lines, scan.errors, scan.warnings
        );
        for m in &scan.first {
            eprintln!("  {m}");
        }
    }
    if let Some(d) = &dir {
        eprintln!("kept {}", d.display());
    }
    if !ok {
        let mut why = Vec::new();
        if server_errors > 0 {
            why.push(format!("{server_errors} answers were 5xx"));
        }
        if request_errors > 0 {
            why.push(format!("{request_errors} requests failed"));
        }
        if !rows_match {
            why.push("rows do not match the answers".into());
        }
        if !clean {
            why.push("the daemon did not stop cleanly".into());
        }
        eprintln!("FAIL: {}", why.join("; "));
    } else {
        eprintln!("OK");
    }

    Ok(json!({
        "settings": settings(args),
        "daemon": {
            "pid": pid,
            "stopped_cleanly": stopped.as_ref().map(|s| s.is_ok()),
            "status": stop_text,
            "kept_dir": dir.map(|d| d.display().to_string()),
            "log": log_scan.map(|s| json!({
                "lines": s.lines, "errors": s.errors, "warnings": s.warnings, "first": s.first,
            })),
        },
        "elapsed_s": elapsed,
        "samples": load.samples.iter().map(Sample::to_json).collect::<Vec<_>>(),
        "counts": counts.iter().map(|(k, c)| (k.to_string(), c.to_json())).collect::<Map<_, _>>(),
        "predictions": {
            "single_answered": single, "batch_instances_answered": batch_instances,
            "answered": answered,
            "single_per_s": single as f64 / elapsed,
            "batch_instances_per_s": batch_instances as f64 / elapsed,
        },
        "feedback": {
            "labels_sent": load.labels_sent.load(Ordering::Relaxed),
            "labels_accepted": load.labels_accepted.load(Ordering::Relaxed),
            "not_queued": load.labels_unqueued.load(Ordering::Relaxed),
        },
        "swaps_by_hand": {
            "activations_ok": load.activations_ok.load(Ordering::Relaxed),
            "changed": load.activations_changed.load(Ordering::Relaxed),
            "skipped": load.swaps_skipped.load(Ordering::Relaxed),
        },
        "rows": rows_check.as_ref().map(|r| json!({
            "source": r.source, "rows": r.rows, "answered": answered, "equal": rows_match,
            "feedback_rows": r.feedback_rows, "feedback_equal": feedback_match,
            "models": r.models, "retrain_runs": r.retrain_runs,
            "runs": r.runs.iter().map(RunRow::to_json).collect::<Vec<_>>(),
        })),
        "memory": {
            "first_third_rss_slope_mb_per_min": memory.first_slope,
            "last_third_rss_slope_mb_per_min": memory.last_slope,
            "rss_per_10_minutes": rss_windows(&load.samples)
                .iter()
                .map(|(m, lo, hi)| json!({"from_minute": m, "lowest_mb": lo, "highest_mb": hi}))
                .collect::<Vec<_>>(),
            "first_third_samples": memory.first_n,
            "last_third_samples": memory.last_n,
            "rss_start_mb": load.samples.first().and_then(|s| s.rss_mb),
            "rss_end_mb": load.samples.last().and_then(|s| s.rss_mb),
            "hwm_end_mb": load.samples.last().and_then(|s| s.hwm_mb),
            "fds_start": load.samples.first().and_then(|s| s.fds),
            "fds_end": load.samples.last().and_then(|s| s.fds),
            "verdict": memory.verdict,
        },
        "server_errors": server_errors,
        "request_errors": request_errors,
        "ok": ok,
    }))
}

fn settings(args: &Args) -> Value {
    json!({
        "url": args.url, "start": args.daemon.start, "pid": args.pid, "minutes": args.minutes,
        "rate": args.rate, "predict_workers": args.predict_workers,
        "batch_rate": args.batch_rate, "batch_size": args.batch_size,
        "feedback_share": 0.3, "feedback_batch": FEEDBACK_BATCH,
        "poll_secs": args.poll_secs, "swap_every_secs": args.swap_every_secs,
        "swap_hold_ms": args.swap_hold_ms,
        "sample_secs": args.sample_secs,
        "republish_every": args.daemon.start.then_some(args.republish_every),
        "schedule": args.daemon.start.then_some(&args.schedule),
        "client_threads": args.tool.client_threads,
    })
}

fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

// ---------------------------------------------------------------------------
// Requests and their counts

/// Answers of one endpoint by status class, request errors and latencies.
#[derive(Debug, Default, Clone)]
struct EndpointCounts {
    /// Index = status / 100 (1xx .. 5xx); 0 unused.
    classes: [u64; 6],
    errors: u64,
    first_4xx: Option<String>,
    first_5xx: Option<String>,
    first_error: Option<String>,
    /// Time to the whole answer, µs (answers only, not errors).
    latencies_us: Vec<u32>,
}

impl EndpointCounts {
    fn to_json(&self) -> Value {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        json!({
            "2xx": self.classes[2], "3xx": self.classes[3], "4xx": self.classes[4],
            "5xx": self.classes[5], "errors": self.errors,
            "first_4xx": self.first_4xx, "first_5xx": self.first_5xx,
            "first_error": self.first_error,
            "p50_ms": pct_ms(&sorted, 0.50), "p99_ms": pct_ms(&sorted, 0.99),
            "max_ms": pct_ms(&sorted, 1.0),
        })
    }
}

/// Every answer of the run, by endpoint.
#[derive(Default)]
struct Stats(Mutex<BTreeMap<&'static str, EndpointCounts>>);

impl Stats {
    fn answer(&self, endpoint: &'static str, status: u16, elapsed: Duration, body: &[u8]) {
        let Ok(mut map) = self.0.lock() else { return };
        let c = map.entry(endpoint).or_default();
        let class = usize::from(status / 100).min(5);
        c.classes[class] += 1;
        c.latencies_us
            .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
        let first = match class {
            4 => &mut c.first_4xx,
            5 => &mut c.first_5xx,
            _ => return,
        };
        if first.is_none() {
            let text: String = String::from_utf8_lossy(body).chars().take(300).collect();
            *first = Some(format!("{status} {text}"));
        }
    }

    fn error(&self, endpoint: &'static str, message: String) {
        let Ok(mut map) = self.0.lock() else { return };
        let c = map.entry(endpoint).or_default();
        c.errors += 1;
        if c.first_error.is_none() {
            c.first_error = Some(message);
        }
    }

    /// Answers (any status), 4xx, 5xx and request errors so far.
    fn totals(&self) -> (u64, u64, u64, u64) {
        let Ok(map) = self.0.lock() else {
            return (0, 0, 0, 0);
        };
        map.values().fold((0, 0, 0, 0), |(a, b, c, d), e| {
            (
                a + e.classes.iter().sum::<u64>(),
                b + e.classes[4],
                c + e.classes[5],
                d + e.errors,
            )
        })
    }

    fn snapshot(&self) -> BTreeMap<&'static str, EndpointCounts> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

fn count_table(counts: &BTreeMap<&'static str, EndpointCounts>) -> String {
    let mut out = String::from(
        "| endpoint | 2xx | 4xx | 5xx | errors | p50 ms | p99 ms | max ms |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (name, c) in counts {
        let mut sorted = c.latencies_us.clone();
        sorted.sort_unstable();
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |\n",
            c.classes[2] + c.classes[3] + c.classes[1],
            c.classes[4],
            c.classes[5],
            c.errors,
            fmt_opt(pct_ms(&sorted, 0.50), 2),
            fmt_opt(pct_ms(&sorted, 0.99), 2),
            fmt_opt(pct_ms(&sorted, 1.0), 1),
        ));
    }
    out
}

/// The shared client and the counts every request goes into.
#[derive(Clone)]
struct Http {
    client: load::Client,
    stats: Arc<Stats>,
}

impl Http {
    /// Sends `req`, counts the answer under `endpoint` and returns its status and
    /// body; `None` (counted as a request error) when there was no whole answer.
    async fn call(
        &self,
        endpoint: &'static str,
        req: reqwest::RequestBuilder,
    ) -> Option<(u16, Vec<u8>)> {
        let t = Instant::now();
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                self.stats.error(endpoint, error_text(&e));
                return None;
            }
        };
        let status = resp.status().as_u16();
        match resp.bytes().await {
            Ok(body) => {
                let body = body.to_vec();
                self.stats.answer(endpoint, status, t.elapsed(), &body);
                Some((status, body))
            }
            Err(e) => {
                self.stats.error(
                    endpoint,
                    format!("status {status}, body: {}", error_text(&e)),
                );
                None
            }
        }
    }

    /// A POST with a JSON body (and the bearer token, when there is one).
    async fn post(
        &self,
        endpoint: &'static str,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> Option<(u16, Vec<u8>)> {
        self.call(endpoint, self.client.post(path, body)).await
    }

    async fn get(&self, endpoint: &'static str, path: &str) -> Option<(u16, Vec<u8>)> {
        self.call(endpoint, self.client.get(path)).await
    }

    /// Waits for `/readyz` (not counted: the daemon may still be starting).
    async fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let probe = || async {
            match self.client.get("/readyz").send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{}", r.status())),
                Err(e) => Err(error_text(&e)),
            }
        };
        self.client.wait_ready(limit, probe).await
    }

    /// `GET /metrics` (counted) as series → value.
    async fn metrics(&self) -> Option<Metrics> {
        let (status, body) = self.get("GET /metrics", "/metrics").await?;
        if status != 200 {
            return None;
        }
        Some(Metrics::parse(&String::from_utf8_lossy(&body)))
    }
}

/// An error with its causes (reqwest's own text omits them: "error sending
/// request" says nothing of a refused connection or a timeout).
fn error_text(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_timeout() {
        text.push_str(" (timeout)");
    }
    text
}

/// The `/metrics` series this tool reads.
#[derive(Debug, Clone, Default)]
struct Metrics {
    values: BTreeMap<String, f64>,
    version: Option<String>,
}

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let values = load::parse_metrics(text);
        // The live version is a label of the one steward_model_info series.
        let version = values.keys().find_map(|name| {
            let rest = name.strip_prefix("steward_model_info{version=\"")?;
            rest.split('"').next().map(String::from)
        });
        Metrics { values, version }
    }

    fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    fn count(&self, name: &str) -> Option<u64> {
        self.get(name).map(|v| v as u64)
    }
}

// ---------------------------------------------------------------------------
// Samples

/// One look at the daemon.
#[derive(Debug, Clone, Default)]
struct Sample {
    label: String,
    t_s: f64,
    rss_mb: Option<f64>,
    hwm_mb: Option<f64>,
    threads: Option<u64>,
    fds: Option<u64>,
    rows_written: Option<u64>,
    rows_dropped: Option<u64>,
    queue_depth: Option<u64>,
    version: Option<String>,
    swaps: Option<u64>,
    published: Option<u64>,
    db_mb: Option<f64>,
}

impl Sample {
    async fn take(
        http: &Http,
        label: String,
        t_s: f64,
        pid: Option<u32>,
        db: Option<&Path>,
    ) -> Sample {
        let mut s = Sample {
            label,
            t_s,
            ..Sample::default()
        };
        if let Some(pid) = pid {
            if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                let kb = |key: &str| {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(key))
                        .and_then(|v| v.split_whitespace().next())
                        .and_then(|v| v.parse::<f64>().ok())
                };
                s.rss_mb = kb("VmRSS:").map(|k| k / 1024.0);
                s.hwm_mb = kb("VmHWM:").map(|k| k / 1024.0);
                s.threads = kb("Threads:").map(|n| n as u64);
            }
            s.fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .ok()
                .map(|d| d.count() as u64);
        }
        if let Some(m) = http.metrics().await {
            s.rows_written = m.count("steward_log_rows_written_total");
            s.rows_dropped = m.count("steward_log_rows_dropped_total");
            s.queue_depth = m.count("steward_log_queue_depth");
            s.swaps = m.count("steward_model_swaps_total");
            s.published = m.count("steward_online_published_total");
            s.version = m.version;
        }
        if let Some(db) = db {
            let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
            let mut wal = db.as_os_str().to_owned();
            wal.push("-wal");
            let bytes = size(db) + size(Path::new(&wal));
            s.db_mb = Some(bytes as f64 / 1_048_576.0);
        }
        s
    }

    /// What both the line and the table show: RSS and HWM in MB, threads, fds,
    /// rows written and dropped ("-" where unknown).
    fn common(&self) -> [String; 6] {
        [
            fmt_opt(self.rss_mb, 1),
            fmt_opt(self.hwm_mb, 1),
            opt(self.threads),
            opt(self.fds),
            opt(self.rows_written),
            opt(self.rows_dropped),
        ]
    }

    fn line(&self) -> String {
        let [rss, hwm, threads, fds, rows, dropped] = self.common();
        format!(
            "[{:>5}] t {:>7.1} s  rss {rss} MB  hwm {hwm} MB  threads {threads}  fds {fds}  rows {rows} (dropped {dropped}, queued {})  version {}  swaps {} (published {})  db {} MB",
            self.label,
            self.t_s,
            opt(self.queue_depth),
            self.version.as_deref().unwrap_or("-"),
            opt(self.swaps),
            opt(self.published),
            fmt_opt(self.db_mb, 1),
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "label": self.label, "t_s": self.t_s, "minute": self.t_s / 60.0,
            "rss_mb": self.rss_mb, "hwm_mb": self.hwm_mb, "threads": self.threads,
            "fds": self.fds, "rows_written": self.rows_written,
            "rows_dropped": self.rows_dropped, "queue_depth": self.queue_depth,
            "version": self.version, "swaps": self.swaps, "published": self.published,
            "db_mb": self.db_mb,
        })
    }
}

fn opt(x: Option<u64>) -> String {
    x.map_or_else(|| "-".into(), |v| v.to_string())
}

fn sample_table(samples: &[Sample]) -> String {
    let mut out = String::from(
        "| minute | RSS MB | HWM MB | threads | fds | rows written | rows dropped | version | swaps | db MB |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n",
    );
    for s in samples {
        let minute = if s.label == "start" || s.label == "end" {
            format!("{:.1} ({})", s.t_s / 60.0, s.label)
        } else {
            format!("{:.1}", s.t_s / 60.0)
        };
        let [rss, hwm, threads, fds, rows, dropped] = s.common();
        out.push_str(&format!(
            "| {minute} | {rss} | {hwm} | {threads} | {fds} | {rows} | {dropped} | {} | {} | {} |\n",
            s.version.as_deref().unwrap_or("-"),
            opt(s.swaps),
            fmt_opt(s.db_mb, 1),
        ));
    }
    out
}

struct MemoryVerdict {
    first_slope: Option<f64>,
    last_slope: Option<f64>,
    first_n: usize,
    last_n: usize,
    verdict: String,
}

/// Least-squares slope of RSS (MB per minute) over the samples of the first and
/// the last third of the load, and what they say. The start sample (taken
/// before any load) is left out: it would make the first third's slope the
/// warm-up. Growth below 0.1 MB/min in the last third (6 MB an hour) counts as
/// flat.
fn memory_verdict(samples: &[Sample]) -> MemoryVerdict {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.label != "start")
        .filter_map(|s| Some((s.t_s / 60.0, s.rss_mb?)))
        .collect();
    let span = points.last().map_or(0.0, |p| p.0) - points.first().map_or(0.0, |p| p.0);
    let t0 = points.first().map_or(0.0, |p| p.0);
    let first: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| p.0 - t0 <= span / 3.0 + 1e-9)
        .collect();
    let last: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|p| p.0 - t0 >= 2.0 * span / 3.0 - 1e-9)
        .collect();
    let first_slope = slope(&first);
    let last_slope = slope(&last);
    let verdict = if points.is_empty() {
        "no memory samples (no pid to read /proc from)".to_string()
    } else if first.len() < 3 || last.len() < 3 {
        format!(
            "too few samples to judge ({} in the first third, {} in the last; a third needs 3)",
            first.len(),
            last.len()
        )
    } else {
        match (first_slope, last_slope) {
            (Some(f), Some(l)) if l <= 0.1 => format!(
                "flat in the last third ({l:.3} MB/min, first third {f:.3} MB/min)"
            ),
            (Some(f), Some(l)) if f > 0.0 && l < f / 2.0 => format!(
                "still growing but slower: {l:.3} MB/min in the last third vs {f:.3} in the first ({:.1} MB an hour at that rate)",
                l * 60.0
            ),
            (Some(f), Some(l)) => format!(
                "NOT flattening: {l:.3} MB/min in the last third vs {f:.3} in the first ({:.1} MB an hour at that rate)",
                l * 60.0
            ),
            _ => "cannot fit a slope".to_string(),
        }
    };
    MemoryVerdict {
        first_slope,
        last_slope,
        first_n: first.len(),
        last_n: last.len(),
        verdict,
    }
}

/// The lowest and highest RSS in each 10 minutes of the run (start minute,
/// low, high). With a retrain every few minutes RSS swings between a low after
/// each run and a high during the next; a least-squares fit over samples taken
/// once a minute is aliased by that cycle (where the highs fall in a third moves
/// it more than any trend), so the lows and highs per window are the measure
/// to read.
fn rss_windows(samples: &[Sample]) -> Vec<(u64, f64, f64)> {
    let mut windows: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in samples {
        let Some(rss) = s.rss_mb else { continue };
        let w = windows
            .entry((s.t_s / 600.0) as u64 * 10)
            .or_insert((f64::INFINITY, f64::NEG_INFINITY));
        w.0 = w.0.min(rss);
        w.1 = w.1.max(rss);
    }
    windows
        .into_iter()
        .map(|(m, (lo, hi))| (m, lo, hi))
        .collect()
}

fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

// ---------------------------------------------------------------------------
// The load

/// What the load did.
#[derive(Default)]
struct Load {
    elapsed: Duration,
    samples: Vec<Sample>,
    single_answered: AtomicU64,
    batch_instances: AtomicU64,
    /// Answered ids so far (single and batch): which ones get feedback.
    ids_seen: AtomicU64,
    labels_sent: AtomicU64,
    labels_accepted: AtomicU64,
    labels_unqueued: AtomicU64,
    activations_ok: AtomicU64,
    activations_changed: AtomicU64,
    swaps_skipped: AtomicU64,
}

/// An answered id and its true label, for feedback.
type Label = (String, &'static str);

/// Where an answered id goes: 3% single feedback, 27% batch feedback, the rest none.
struct Feedback {
    single: mpsc::Sender<Label>,
    batch: mpsc::Sender<Label>,
}

impl Load {
    fn answered(&self) -> u64 {
        self.single_answered.load(Ordering::Relaxed) + self.batch_instances.load(Ordering::Relaxed)
    }

    fn rows_written_delta(&self) -> u64 {
        let first = self.samples.first().and_then(|s| s.rows_written);
        let last = self.samples.last().and_then(|s| s.rows_written);
        match (first, last) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        }
    }

    fn route(&self, fb: &Feedback, id: String, label: &'static str) {
        let n = self.ids_seen.fetch_add(1, Ordering::Relaxed);
        let tx = match n % 100 {
            0..=2 => &fb.single,
            3..=29 => &fb.batch,
            _ => return,
        };
        if tx.try_send((id, label)).is_err() {
            self.labels_unqueued.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn run(
        http: &Http,
        rows: &'static [Row],
        args: &Args,
        pid: Option<u32>,
        db: Option<&Path>,
    ) -> anyhow::Result<Load> {
        let duration = Duration::from_secs_f64(args.minutes * 60.0);
        eprintln!(
            "== soak against {} for {:.1} min: {}/s single predictions ({} workers), {}/s batches of {}, feedback for 30% of ids, polls every {} s, swaps by hand every {} s, samples every {} s",
            http.client.base,
            args.minutes,
            args.rate,
            args.predict_workers,
            args.batch_rate,
            args.batch_size,
            args.poll_secs,
            args.swap_every_secs,
            args.sample_secs
        );
        let load = Arc::new(Load::default());
        let mut samples = Vec::new();
        let start = Instant::now();
        let first = Sample::take(http, "start".into(), 0.0, pid, db).await;
        eprintln!("{}", first.line());
        samples.push(first);

        let stop = CancellationToken::new();
        let (single_tx, single_rx) = mpsc::channel::<Label>(1 << 16);
        let (batch_tx, batch_rx) = mpsc::channel::<Label>(1 << 18);
        let fb = Arc::new(Feedback {
            single: single_tx,
            batch: batch_tx,
        });
        let row_counter = Arc::new(AtomicU64::new(0));

        // Predictors: each worker paced at rate / workers; ticks missed while a
        // request is slow are skipped, not made up in a burst.
        let mut producers = Vec::new();
        if args.rate > 0.0 {
            let workers = args.predict_workers;
            let period = Duration::from_secs_f64(workers as f64 / args.rate);
            for w in 0..workers {
                let (http, load, fb, stop, counter) = (
                    http.clone(),
                    load.clone(),
                    fb.clone(),
                    stop.clone(),
                    row_counter.clone(),
                );
                let offset = period.mul_f64(w as f64 / workers as f64);
                producers.push(tokio::spawn(async move {
                    let mut tick =
                        tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tick.tick() => {}
                        }
                        let i = counter.fetch_add(1, Ordering::Relaxed) as usize;
                        let row = &rows[i % rows.len()];
                        let Some((status, body)) = http
                            .post("POST /v1/predict (single)", "/v1/predict", row.body)
                            .await
                        else {
                            continue;
                        };
                        if status != 200 {
                            continue;
                        }
                        load.single_answered.fetch_add(1, Ordering::Relaxed);
                        let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        match answer["id"].as_str() {
                            Some(id) => load.route(&fb, id.to_string(), row.label),
                            None => http.stats.error(
                                "POST /v1/predict (single)",
                                format!("200 without an id: {answer}"),
                            ),
                        }
                    }
                }));
            }
        }
        if args.batch_rate > 0.0 {
            let (http, load, fb, stop) = (http.clone(), load.clone(), fb.clone(), stop.clone());
            let period = Duration::from_secs_f64(1.0 / args.batch_rate);
            let size = usize::try_from(args.batch_size).unwrap_or(50);
            producers.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut at = 0usize;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    let picked: Vec<&'static Row> =
                        (0..size).map(|k| &rows[(at + k) % rows.len()]).collect();
                    at = (at + size) % rows.len();
                    let instances: Vec<&Value> = picked.iter().map(|r| &r.features).collect();
                    let body = json!({ "instances": instances }).to_string();
                    let endpoint = "POST /v1/predict (batch)";
                    let Some((status, body)) = http.post(endpoint, "/v1/predict", body).await
                    else {
                        continue;
                    };
                    if status != 200 {
                        continue;
                    }
                    // Every instance of a 200 answer is logged by the daemon.
                    load.batch_instances
                        .fetch_add(size as u64, Ordering::Relaxed);
                    let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let predictions = answer["predictions"].as_array();
                    if predictions.map_or(0, Vec::len) != size {
                        http.stats.error(
                            endpoint,
                            format!(
                                "200 with {} predictions for {size} instances",
                                predictions.map_or(0, Vec::len)
                            ),
                        );
                        continue;
                    }
                    for (p, row) in predictions.into_iter().flatten().zip(&picked) {
                        if let Some(id) = p["id"].as_str() {
                            load.route(&fb, id.to_string(), row.label);
                        }
                    }
                }
            }));
        }
        // Feedback: ends when the predictors are done and its queue is empty.
        drop(fb);
        let feeders = vec![
            tokio::spawn(feed_single(http.clone(), load.clone(), single_rx)),
            tokio::spawn(feed_batches(http.clone(), load.clone(), batch_rx)),
        ];
        let mut others = vec![tokio::spawn(poll(
            http.clone(),
            Duration::from_secs(args.poll_secs),
            stop.clone(),
        ))];
        if args.swap_every_secs > 0 {
            others.push(tokio::spawn(swap_by_hand(
                http.clone(),
                load.clone(),
                Duration::from_secs(args.swap_every_secs),
                Duration::from_millis(args.swap_hold_ms),
                stop.clone(),
            )));
        }

        // The sampler runs here, until the end or Ctrl-C.
        let deadline = tokio::time::Instant::from_std(start + duration);
        let every = Duration::from_secs(args.sample_secs);
        let mut next = tokio::time::Instant::from_std(start + every);
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        loop {
            let at = next.min(deadline);
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = &mut ctrl_c => {
                    eprintln!("== Ctrl-C: ending the load early");
                    break;
                }
            }
            if at >= deadline {
                break;
            }
            let t = start.elapsed().as_secs_f64();
            let label = if args.sample_secs.is_multiple_of(60) {
                format!("{:.0}m", t / 60.0)
            } else {
                format!("{t:.0}s")
            };
            let s = Sample::take(http, label, t, pid, db).await;
            let (answers, c4, c5, errors) = http.stats.totals();
            eprintln!(
                "{}  | client: {answers} answers, {c4} 4xx, {c5} 5xx, {errors} errors",
                s.line()
            );
            samples.push(s);
            next += every;
        }

        stop.cancel();
        for p in producers {
            p.await.context("a load task panicked")?;
        }
        for f in feeders {
            f.await.context("a feedback task panicked")?;
        }
        for o in others {
            o.await.context("a poll task panicked")?;
        }
        let elapsed = start.elapsed();
        // The end sample once the daemon's log queue is empty and its rows-written
        // counter has stopped moving (a batch taken off the queue is counted only
        // once committed), at most 10 s.
        let settle = Instant::now();
        let mut written = None;
        while settle.elapsed() < Duration::from_secs(10) {
            let Some(m) = http.metrics().await else { break };
            let now = m.count("steward_log_rows_written_total");
            if m.count("steward_log_queue_depth") == Some(0) && now == written {
                break;
            }
            written = now;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let t = start.elapsed().as_secs_f64();
        let last = Sample::take(http, "end".into(), t, pid, db).await;
        eprintln!("{}", last.line());
        samples.push(last);

        let mut load =
            Arc::try_unwrap(load).map_err(|_| anyhow!("a load task is still running"))?;
        load.elapsed = elapsed;
        load.samples = samples;
        Ok(load)
    }
}

/// Sends one feedback request of `labels` labels, counted under `endpoint`.
async fn send_feedback(http: &Http, load: &Load, endpoint: &'static str, body: Value, labels: u64) {
    load.labels_sent.fetch_add(labels, Ordering::Relaxed);
    if let Some((202, answer)) = http.post(endpoint, "/v1/feedback", body.to_string()).await {
        let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        let n = answer["accepted"].as_u64().unwrap_or(0);
        load.labels_accepted.fetch_add(n, Ordering::Relaxed);
    }
}

/// Sends the single-label feedback, one request per label.
async fn feed_single(http: Http, load: Arc<Load>, mut rx: mpsc::Receiver<Label>) {
    while let Some((id, label)) = rx.recv().await {
        let body = json!({"id": id, "label": label});
        send_feedback(&http, &load, "POST /v1/feedback (single)", body, 1).await;
    }
}

/// Sends feedback in batches of [`FEEDBACK_BATCH`] (the last one may be short).
async fn feed_batches(http: Http, load: Arc<Load>, mut rx: mpsc::Receiver<Label>) {
    loop {
        let mut items = Vec::with_capacity(FEEDBACK_BATCH);
        while items.len() < FEEDBACK_BATCH {
            let want = FEEDBACK_BATCH - items.len();
            if rx.recv_many(&mut items, want).await == 0 {
                break;
            }
        }
        if items.is_empty() {
            return;
        }
        let list: Vec<Value> = items
            .iter()
            .map(|(id, label)| json!({"id": id, "label": label}))
            .collect();
        let body = json!({ "feedback": list });
        let endpoint = "POST /v1/feedback (batch)";
        send_feedback(&http, &load, endpoint, body, items.len() as u64).await;
    }
}

/// The read endpoints, every `every`.
async fn poll(http: Http, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let _ = http.get("GET /v1/drift", "/v1/drift").await;
        let _ = http.get("GET /v1/models", "/v1/models").await;
        let _ = http.metrics().await;
        let _ = http.get("GET /readyz", "/readyz").await;
    }
}

/// Stored, not retired versions, newest first (the order of `/v1/models`).
async fn stored_versions(http: &Http) -> Option<Vec<String>> {
    let (status, body) = http.get("GET /v1/models", "/v1/models").await?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(&body).ok()?;
    Some(
        v["models"]
            .as_array()?
            .iter()
            .filter(|m| m["status"] != "retired")
            .filter_map(|m| m["version"].as_str().map(String::from))
            .collect(),
    )
}

/// Every `every`: activates the second-newest stored version, and `hold` later
/// the newest one (which may have been published meanwhile).
async fn swap_by_hand(
    http: Http,
    load: Arc<Load>,
    every: Duration,
    hold: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let activate = |version: String| {
        let (http, load) = (http.clone(), load.clone());
        async move {
            let path = format!("/v1/models/{version}/activate");
            if let Some((200, body)) = http.post("POST /v1/models/{v}/activate", &path, "{}").await
            {
                load.activations_ok.fetch_add(1, Ordering::Relaxed);
                let answer: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if answer["changed"] == true {
                    load.activations_changed.fetch_add(1, Ordering::Relaxed);
                }
                eprintln!(
                    "  swap by hand: activated {version} (previous {}, changed {})",
                    answer["previous"].as_str().unwrap_or("?"),
                    answer["changed"]
                );
            }
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let Some(versions) = stored_versions(&http).await else {
            continue;
        };
        let Some(previous) = versions.get(1).cloned() else {
            load.swaps_skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        activate(previous).await;
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(hold) => {}
        }
        // Back to the newest even when the load is ending.
        if let Some(newest) = stored_versions(&http)
            .await
            .and_then(|v| v.first().cloned())
        {
            activate(newest).await;
        }
    }
}

// ---------------------------------------------------------------------------
// The end: SQLite and the daemon's log

struct RowsCheck {
    source: &'static str,
    rows: u64,
    feedback_rows: Option<u64>,
    models: Option<u64>,
    retrain_runs: BTreeMap<String, u64>,
    runs: Vec<RunRow>,
}

struct DbCounts {
    predictions: u64,
    feedback: u64,
    models: u64,
    retrain_runs: BTreeMap<String, u64>,
    runs: Vec<RunRow>,
}

/// One retraining run as `retrain_runs` holds it.
#[derive(Debug, sqlx::FromRow)]
struct RunRow {
    id: i64,
    trigger: String,
    state: String,
    started: i64,
    finished: Option<i64>,
    rows: Option<i64>,
    candidate_version: Option<String>,
    decision: Option<String>,
    error: Option<String>,
}

impl RunRow {
    fn secs(&self) -> Option<f64> {
        self.finished.map(|f| (f - self.started) as f64 / 1e3)
    }

    fn line(&self) -> String {
        let why: String = self
            .error
            .as_deref()
            .or(self.decision.as_deref())
            .unwrap_or("")
            .chars()
            .take(160)
            .collect();
        format!(
            "run {} ({}): {} in {} s, {} rows{}; {why}",
            self.id,
            self.trigger,
            self.state,
            fmt_opt(self.secs(), 1),
            self.rows.map_or_else(|| "-".into(), |r| r.to_string()),
            self.candidate_version
                .as_deref()
                .map(|v| format!(", promoted {v}"))
                .unwrap_or_default(),
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id, "trigger": self.trigger, "state": self.state,
            "seconds": self.secs(), "rows": self.rows,
            "candidate_version": self.candidate_version, "decision": self.decision,
            "error": self.error,
        })
    }
}

/// Counts in the (stopped) daemon's SQLite file, opened read-only.
async fn sqlite_counts(path: &Path) -> anyhow::Result<DbCounts> {
    use sqlx::Connection as _;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let predictions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM predictions")
        .fetch_one(&mut conn)
        .await
        .context("counting predictions")?;
    let feedback: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM feedback")
        .fetch_one(&mut conn)
        .await
        .context("counting feedback")?;
    let models: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM models")
        .fetch_one(&mut conn)
        .await
        .context("counting models")?;
    let runs: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM retrain_runs GROUP BY state")
            .fetch_all(&mut conn)
            .await
            .context("counting retrain runs")?;
    let list: Vec<RunRow> = sqlx::query_as(
        "SELECT id, trigger, state, started, finished, rows, candidate_version, decision, error \
         FROM retrain_runs ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .context("reading retrain runs")?;
    let _ = conn.close().await;
    Ok(DbCounts {
        runs: list,
        predictions: count(predictions),
        feedback: count(feedback),
        models: count(models),
        retrain_runs: runs.into_iter().map(|(s, n)| (s, count(n))).collect(),
    })
}

struct LogScan {
    lines: u64,
    errors: u64,
    warnings: u64,
    /// The first few ERROR and WARN lines (level, target, message and fields).
    first: Vec<String>,
}

fn scan_log(path: &Path) -> LogScan {
    let mut scan = LogScan {
        lines: 0,
        errors: 0,
        warnings: 0,
        first: Vec::new(),
    };
    let Ok(file) = std::fs::File::open(path) else {
        return scan;
    };
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        scan.lines += 1;
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        match v["level"].as_str() {
            Some("ERROR") => scan.errors += 1,
            Some("WARN") => scan.warnings += 1,
            _ => continue,
        }
        if scan.first.len() < 8 {
            let text: String = format!("{} {} {}", v["level"], v["target"], v["fields"])
                .chars()
                .take(400)
                .collect();
            scan.first.push(text);
        }
    }
    scan
}

// ---------------------------------------------------------------------------
// The daemon of --start

/// Keys this tool sets after those of `load::Daemon::start`; every other key
/// keeps its default (files under `data/` of the temporary directory, which is
/// the daemon's working directory).
fn config(args: &Args) -> String {
    format!(
        r#"[training]
schedule = "{schedule}"
min_rows = 100
# Promote any candidate: more swaps.
max_regression = 1.0

[online]
enabled = true
republish_every = {republish}

[drift]
interval_secs = 10

[alerts]
transport = "file"
"#,
        schedule = args.schedule.replace(['"', '\\'], ""),
        republish = args.republish_every,
    )
}
