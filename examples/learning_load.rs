//! Load tool for steward's continuous learning (issue 7): feedback labels over
//! HTTP while predictions are served, and model swaps under prediction load.
//!
//! ```sh
//! cargo build --release --examples
//! target/release/examples/learning_load --start                 # both phases
//! target/release/examples/learning_load --start --phase feedback --batch 1
//! target/release/examples/learning_load --url http://127.0.0.1:8080 --json
//! ```
//!
//! `--start` runs `target/release/steward serve` (or `--bin`) in a temporary
//! directory: a fresh SQLite file, the first model trained from the bundled data,
//! loopback on a free port (read from the daemon's `listening` log line), online
//! learning on with `republish_every = 5000`, retraining that promotes any
//! candidate (`min_rows = 100`, `max_regression = 1.0`) and no drift retraining.
//! Each phase gets a fresh daemon, stopped with SIGTERM afterwards. `--url` uses a
//! running daemon instead (both phases on it; `--token` or `STEWARD_TOKEN` for its
//! write endpoints).
//!
//! - **feedback** (`--feedback-secs`, 20): `--predictors` workers (4) send
//!   single-instance `POST /v1/predict` requests as fast as they can, with the
//!   penguin rows of datasets/penguins.csv (label left out, empty cells as null),
//!   and queue each answered id with its true label; `--feedbackers` workers (2)
//!   send them back as `POST /v1/feedback` in batches of `--batch` (100; with 1,
//!   the single-label body `{"id", "label"}`). Reported: labels accepted per
//!   second, predictions per second, non-2xx answers, and from `/metrics` the
//!   online learner's steps per second, its dropped labels and published versions.
//! - **swap**: feeds `--retrain-labels` (300) labelled predictions, runs
//!   `POST /v1/retrain` and waits for it to be promoted; then `--swap-workers` (8)
//!   send single predictions for `--swap-secs` (20) while a swapper activates the
//!   old and the new version in turn every `--swap-every-ms` (250). Requests in
//!   flight within `--window-ms` (25) of the instant an activation returned are
//!   "around" a swap, the rest "away"; both latency distributions are reported,
//!   and the same split with the whole activation call (sent to returned) in
//!   place of its return.
//!
//! The client shares the machine with a `--start` daemon; `--client-threads` (1)
//! sets its tokio workers. A human summary goes to stderr, one JSON document to
//! stdout with `--json`. Exit status: 0; 1 when any answer was not 2xx, a request
//! failed, or the daemon failed; 2 on bad usage.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::{Parser, ValueEnum};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Mutex};

#[path = "support/load.rs"]
mod load;
use load::{pct_ms, Row};

/// The issue's goals.
const GOAL_LABELS_PER_S: f64 = 5_000.0;
const GOAL_P99_DIFF_MS: f64 = 1.0;
/// Requests that start this soon after a phase starts are not measured
/// (connections being opened).
const WARM_UP: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Phase {
    Feedback,
    Swap,
    All,
}

#[derive(Debug, Parser)]
#[command(
    about = "Load test of steward's online learning and model swaps",
    after_help = "See the header of examples/learning_load.rs for what each phase measures.",
    // A fresh daemon per phase.
    mut_arg("start", |a| a.help("Start `steward serve` in a temporary directory (a fresh one per phase)")),
    mut_arg("keep", |a| a.help("Keep the temporary directories of --start (database, config, log)")),
)]
struct Args {
    /// Base URL of a running daemon.
    #[arg(long, required_unless_present = "start", conflicts_with = "start")]
    url: Option<String>,
    #[command(flatten)]
    daemon: load::StartArgs,
    #[arg(long, value_enum, default_value = "all")]
    phase: Phase,
    /// Seconds of the feedback phase.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    feedback_secs: u64,
    /// Prediction workers of the feedback phase (P).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1024))]
    predictors: u64,
    /// Feedback workers (F).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1024))]
    feedbackers: u64,
    /// Labels per feedback request (B; the daemon's server.max_batch is 1024).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1024))]
    batch: u64,
    /// Seconds of the swap phase.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=3600))]
    swap_secs: u64,
    /// Prediction workers of the swap phase (C).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    swap_workers: u64,
    /// Milliseconds between activations.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    swap_every_ms: u64,
    /// A request is "around" a swap when it was in flight within this many
    /// milliseconds of an activation's return.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    window_ms: u64,
    /// Labelled predictions fed before the retrain that makes the second version.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=1024))]
    retrain_labels: u64,
    #[command(flatten)]
    tool: load::ToolArgs,
}

fn main() -> ExitCode {
    // clap prints its message: usage errors exit 2, --help 0.
    let args = Args::parse();
    load::run_tool("learning_load", &args.tool, run(&args))
}

async fn run(args: &Args) -> anyhow::Result<Value> {
    let rows = load::penguin_rows()?;
    let mut report = Map::new();
    report.insert("settings".into(), settings(args));
    let mut ok = true;
    let phases: &[Phase] = match args.phase {
        Phase::All => &[Phase::Feedback, Phase::Swap],
        Phase::Feedback => &[Phase::Feedback],
        Phase::Swap => &[Phase::Swap],
    };
    for &phase in phases {
        let daemon = if args.daemon.start {
            let bin = load::steward_binary(args.daemon.bin.as_deref(), "cargo build --release")?;
            Some(load::Daemon::start(&bin, "learning_load", CONFIG).await?)
        } else {
            None
        };
        let base = load::base_url(daemon.as_ref(), args.url.as_deref())?;
        let http = Http {
            client: load::Client::new(base, args.tool.token.clone())?,
        };
        http.wait_ready(Duration::from_secs(if args.daemon.start { 60 } else { 5 }))
            .await?;
        let result = match phase {
            Phase::Feedback => feedback_phase(&http, rows, args).await,
            Phase::Swap | Phase::All => swap_phase(&http, rows, args).await,
        };
        let stopped = match daemon {
            Some(d) => Some(stop(d, args.daemon.keep).await),
            None => None,
        };
        let (name, mut value) = match result {
            Ok(v) => v,
            Err(e) => {
                if let Some(Ok(s)) | Some(Err(s)) = &stopped {
                    eprintln!("learning_load: daemon: {s}");
                }
                return Err(e);
            }
        };
        ok &= value["ok"] == true;
        if let Some(stopped) = stopped {
            let (clean, text) = match stopped {
                Ok(s) => (true, s),
                Err(s) => (false, s),
            };
            eprintln!("  daemon: {text}");
            value["daemon"] = json!({"stopped_cleanly": clean, "status": text});
            ok &= clean;
        }
        report.insert(name.into(), value);
    }
    report.insert("ok".into(), Value::Bool(ok));
    Ok(Value::Object(report))
}

fn settings(args: &Args) -> Value {
    json!({
        "url": args.url, "start": args.daemon.start, "phase": format!("{:?}", args.phase).to_lowercase(),
        "feedback_secs": args.feedback_secs, "predictors": args.predictors,
        "feedbackers": args.feedbackers, "batch": args.batch,
        "swap_secs": args.swap_secs, "swap_workers": args.swap_workers,
        "swap_every_ms": args.swap_every_ms, "window_ms": args.window_ms,
        "retrain_labels": args.retrain_labels, "client_threads": args.tool.client_threads,
    })
}

// ---------------------------------------------------------------------------
// Requests

/// The shared client with this tool's calls, their answers read as JSON.
#[derive(Clone)]
struct Http {
    client: load::Client,
}

impl Http {
    /// POSTs `body`; the status and the answer as JSON (Null if it is not JSON).
    async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .client
            .post(path, body.to_string())
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.with_context(|| format!("POST {path}"))?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    async fn get_json(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .client
            .get(path)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.with_context(|| format!("GET {path}"))?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    async fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let probe = || async {
            match self.get_json("/readyz").await {
                Ok((200, _)) => Ok(()),
                Ok((status, body)) => Err(format!("{status} {body}")),
                Err(e) => Err(format!("{e:#}")),
            }
        };
        self.client.wait_ready(limit, probe).await
    }

    /// The daemon's `/metrics` as a map from series (name and labels) to value.
    async fn metrics(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let resp = self
            .client
            .get("/metrics")
            .send()
            .await
            .context("GET /metrics")?;
        if !resp.status().is_success() {
            bail!("GET /metrics answered {}", resp.status());
        }
        let text = resp.text().await.context("GET /metrics")?;
        Ok(load::parse_metrics(&text))
    }
}

/// `after - before` of one series (absent counts as 0).
fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, name: &str) -> f64 {
    after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
}

/// Counts shared by the workers of a phase.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    non_2xx: AtomicU64,
    failed: AtomicU64,
}

impl Counts {
    fn get(&self) -> (u64, u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.non_2xx.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// The first problem seen (a non-2xx answer or a failed request), for the summary.
#[derive(Default)]
struct FirstError(std::sync::Mutex<Option<String>>);

impl FirstError {
    fn note(&self, what: impl FnOnce() -> String) {
        if let Ok(mut first) = self.0.lock() {
            if first.is_none() {
                *first = Some(what());
            }
        }
    }

    fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut f| f.take())
    }
}

/// One single-instance prediction: its status, the answer's id and version, or
/// the transport error.
async fn predict(http: &Http, row: &Row) -> Result<(u16, Option<Answer>), reqwest::Error> {
    let resp = http.client.post("/v1/predict", row.body).send().await?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    let answer = if (200..300).contains(&status) {
        serde_json::from_slice::<Answer>(&bytes).ok()
    } else {
        None
    };
    Ok((status, answer))
}

#[derive(serde::Deserialize)]
struct Answer {
    id: String,
    model_version: String,
}

fn ms(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.3} ms"))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------
// Feedback phase

async fn feedback_phase(
    http: &Http,
    rows: &'static [Row],
    args: &Args,
) -> anyhow::Result<(&'static str, Value)> {
    let batch = usize::try_from(args.batch).context("--batch")?;
    let duration = Duration::from_secs(args.feedback_secs);
    eprintln!(
        "== feedback phase: {} predict workers, {} feedback workers, batches of {batch}, {} s against {}",
        args.predictors, args.feedbackers, args.feedback_secs, http.client.base
    );
    let before = http.metrics().await?;
    let predictions = Arc::new(Counts::default());
    let feedback = Arc::new(Counts::default());
    let labels_accepted = Arc::new(AtomicU64::new(0));
    let unqueued = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(FirstError::default());
    // Answered ids with their true labels, waiting to be sent back. When the
    // feedback side falls this far behind, new ids are left unlabelled (counted)
    // rather than slowing the predictions down.
    let (tx, rx) = mpsc::channel::<(String, &'static str)>(1 << 20);
    let rx = Arc::new(Mutex::new(rx));

    let start = Instant::now();
    let deadline = start + duration;
    let mut predictors = Vec::new();
    for w in 0..args.predictors {
        let (http, tx) = (http.clone(), tx.clone());
        let (counts, unqueued, first_error) =
            (predictions.clone(), unqueued.clone(), first_error.clone());
        predictors.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = usize::try_from(w).unwrap_or(0) * 37;
            while Instant::now() < deadline {
                let row = &rows[i % rows.len()];
                i += 1;
                let t = Instant::now();
                match predict(&http, row).await {
                    Ok((status, Some(answer))) if (200..300).contains(&status) => {
                        counts.ok.fetch_add(1, Ordering::Relaxed);
                        latencies.push(micros(t.elapsed()));
                        if tx.try_send((answer.id, row.label)).is_err() {
                            unqueued.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok((status, _)) => {
                        counts.non_2xx.fetch_add(1, Ordering::Relaxed);
                        first_error.note(|| format!("POST /v1/predict answered {status}"));
                    }
                    Err(e) => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        first_error.note(|| format!("POST /v1/predict: {e}"));
                    }
                }
            }
            latencies
        }));
    }
    drop(tx);
    let mut feeders = Vec::new();
    for _ in 0..args.feedbackers {
        let (http, rx) = (http.clone(), rx.clone());
        let (counts, accepted, first_error) = (
            feedback.clone(),
            labels_accepted.clone(),
            first_error.clone(),
        );
        feeders.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let until = tokio::time::Instant::from_std(deadline);
            loop {
                let mut items = Vec::with_capacity(batch);
                {
                    let mut rx = rx.lock().await;
                    while items.len() < batch {
                        let want = batch - items.len();
                        match tokio::time::timeout_at(until, rx.recv_many(&mut items, want)).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                }
                // A partial batch means the phase is over: it is not sent.
                if items.len() < batch || Instant::now() >= deadline {
                    break;
                }
                let body = if batch == 1 {
                    json!({"id": items[0].0, "label": items[0].1})
                } else {
                    let list: Vec<Value> = items
                        .iter()
                        .map(|(id, label)| json!({"id": id, "label": label}))
                        .collect();
                    json!({ "feedback": list })
                };
                let t = Instant::now();
                match http.post_json("/v1/feedback", &body).await {
                    Ok((202, answer)) => {
                        latencies.push(micros(t.elapsed()));
                        counts.ok.fetch_add(1, Ordering::Relaxed);
                        let n = answer["accepted"].as_u64().unwrap_or(0);
                        accepted.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok((status, answer)) => {
                        counts.non_2xx.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .note(|| format!("POST /v1/feedback answered {status}: {answer}"));
                    }
                    Err(e) => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        first_error.note(|| format!("{e:#}"));
                    }
                }
            }
            latencies
        }));
    }
    let mut predict_lat = Vec::new();
    for p in predictors {
        predict_lat.extend(p.await.context("a predict worker panicked")?);
    }
    let mut feedback_lat = Vec::new();
    for f in feeders {
        feedback_lat.extend(f.await.context("a feedback worker panicked")?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let at_end = http.metrics().await?;
    // Then give the learner time to drain its queue: wait until its step count
    // stops moving (at most 30 s), so that a learner that falls behind shows up as
    // a lag instead of as missing steps.
    let settle_start = Instant::now();
    let mut settled = at_end.clone();
    let steps = |m: &BTreeMap<String, f64>| {
        m.get("steward_online_updates_total")
            .copied()
            .unwrap_or(0.0)
            + m.get("steward_online_labels_skipped_total")
                .copied()
                .unwrap_or(0.0)
    };
    while settle_start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = http.metrics().await?;
        let moved = steps(&now) > steps(&settled);
        settled = now;
        if !moved {
            break;
        }
    }
    let settle_secs = settle_start.elapsed().as_secs_f64();

    predict_lat.sort_unstable();
    feedback_lat.sort_unstable();
    let (p_ok, p_non2xx, p_failed) = predictions.get();
    let (f_ok, f_non2xx, f_failed) = feedback.get();
    let accepted = labels_accepted.load(Ordering::Relaxed);
    let d = |m: &BTreeMap<String, f64>, name: &str| delta(&before, m, name);
    let updates_end = d(&at_end, "steward_online_updates_total");
    let updates = d(&settled, "steward_online_updates_total");
    let skipped = d(&settled, "steward_online_labels_skipped_total");
    let dropped = d(&settled, "steward_online_labels_dropped_total");
    let published = d(&settled, "steward_online_published_total");
    let reverts = d(&settled, "steward_online_reverts_total");
    let swaps = d(&settled, "steward_model_swaps_total");
    let labels_per_s = accepted as f64 / elapsed;
    // The daemon's CPU time (user + system) during the load, per label accepted:
    // what a label costs on the daemon's side with the prediction it labels,
    // which depends much less than labels/s on what else the machine runs.
    let daemon_cpu_s = d(&at_end, "process_cpu_seconds_total");
    let cpu_us_per_label =
        (accepted > 0 && daemon_cpu_s > 0.0).then(|| daemon_cpu_s * 1e6 / accepted as f64);
    // Predictions outnumber labels (not every answered id is sent back), so the
    // cost per request-borne item (a prediction or a label) too.
    let cpu_us_per_item =
        (daemon_cpu_s > 0.0).then(|| daemon_cpu_s * 1e6 / (accepted + p_ok).max(1) as f64);
    let updates_per_s = updates_end / elapsed;
    // Steps still to take when the load stopped, as seconds of the learner's rate.
    let backlog = accepted as f64 - updates_end - d(&at_end, "steward_online_labels_skipped_total");
    let kept_up = dropped == 0.0 && updates + skipped >= accepted as f64;
    let met = kept_up && labels_per_s >= GOAL_LABELS_PER_S;
    let ok = p_non2xx + p_failed + f_non2xx + f_failed == 0;

    eprintln!("  elapsed:            {elapsed:.2} s");
    eprintln!(
        "  predictions:        {:.0}/s ({p_ok} answered, {p_non2xx} non-2xx, {p_failed} failed; p50 {}, p99 {})",
        p_ok as f64 / elapsed,
        ms(pct_ms(&predict_lat, 0.50)),
        ms(pct_ms(&predict_lat, 0.99)),
    );
    eprintln!(
        "  labels accepted:    {labels_per_s:.0}/s ({accepted} in {f_ok} requests of {batch}; {f_non2xx} non-2xx, {f_failed} failed; p50 {}, p99 {})",
        ms(pct_ms(&feedback_lat, 0.50)),
        ms(pct_ms(&feedback_lat, 0.99)),
    );
    eprintln!(
        "  daemon CPU:         {daemon_cpu_s:.2} s ({:.0}% of a core); {} per label accepted, {} per item (a prediction or a label)",
        100.0 * daemon_cpu_s / elapsed,
        cpu_us_per_label.map_or_else(|| "-".into(), |v| format!("{v:.1} µs")),
        cpu_us_per_item.map_or_else(|| "-".into(), |v| format!("{v:.1} µs")),
    );
    eprintln!(
        "  answered, not sent: {} (left in the queue at the end or not queued)",
        p_ok.saturating_sub(accepted)
    );
    eprintln!(
        "  online steps:       {updates_per_s:.0}/s during the load ({updates_end:.0}); {updates:.0} after {settle_secs:.1} s to settle; backlog at the end {backlog:.0}"
    );
    eprintln!(
        "  labels dropped:     {dropped:.0}, skipped {skipped:.0}; versions published {published:.0}, swaps {swaps:.0}, guard reverts {reverts:.0}"
    );
    if let Some(e) = first_error.take() {
        eprintln!("  first error:        {e}");
    }
    eprintln!(
        "  goal (≥ {GOAL_LABELS_PER_S:.0} labels/s learned while serving): {}",
        if met { "met" } else { "NOT met" }
    );
    Ok((
        "feedback",
        json!({
            "elapsed_s": elapsed,
            "batch": batch,
            "predictions": {
                "answered": p_ok, "per_s": p_ok as f64 / elapsed,
                "non_2xx": p_non2xx, "failed": p_failed,
                "p50_ms": pct_ms(&predict_lat, 0.50), "p99_ms": pct_ms(&predict_lat, 0.99),
            },
            "feedback": {
                "requests": f_ok, "labels_accepted": accepted, "labels_per_s": labels_per_s,
                "non_2xx": f_non2xx, "failed": f_failed,
                "p50_ms": pct_ms(&feedback_lat, 0.50), "p99_ms": pct_ms(&feedback_lat, 0.99),
                "not_queued": unqueued.load(Ordering::Relaxed),
            },
            "daemon_cpu": {"seconds": daemon_cpu_s, "us_per_label": cpu_us_per_label, "us_per_item": cpu_us_per_item},
            "online": {
                "updates_during_load": updates_end, "updates_per_s": updates_per_s,
                "updates_settled": updates, "settle_s": settle_secs, "backlog_at_end": backlog,
                "skipped": skipped, "dropped": dropped, "published": published,
                "reverts": reverts, "swaps": swaps,
            },
            "goal": {"labels_per_s": GOAL_LABELS_PER_S, "kept_up": kept_up, "met": met},
            "ok": ok,
        }),
    ))
}

// ---------------------------------------------------------------------------
// Swap phase

/// A request of the swap phase: start and end in µs since the phase started.
struct Timed {
    start: u64,
    end: u64,
    version: Option<String>,
}

async fn swap_phase(
    http: &Http,
    rows: &'static [Row],
    args: &Args,
) -> anyhow::Result<(&'static str, Value)> {
    eprintln!("== swap phase against {}", http.client.base);
    let (old, new) = second_version(http, rows, args).await?;
    let before = http.metrics().await?;
    let duration = Duration::from_secs(args.swap_secs);
    let every = Duration::from_millis(args.swap_every_ms);
    let window = micros(Duration::from_millis(args.window_ms));
    eprintln!(
        "  {} predict workers for {} s; activating {old} and {new} in turn every {} ms; window ±{} ms",
        args.swap_workers, args.swap_secs, args.swap_every_ms, args.window_ms
    );
    let counts = Arc::new(Counts::default());
    let first_error = Arc::new(FirstError::default());
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = Vec::new();
    for w in 0..args.swap_workers {
        let http = http.clone();
        let (counts, first_error) = (counts.clone(), first_error.clone());
        workers.push(tokio::spawn(async move {
            let mut timed = Vec::new();
            let mut i = usize::try_from(w).unwrap_or(0) * 37;
            while Instant::now() < deadline {
                let row = &rows[i % rows.len()];
                i += 1;
                let t = Instant::now();
                let result = predict(&http, row).await;
                let (s, e) = (micros(t - start), micros(start.elapsed()));
                match result {
                    Ok((status, answer)) if (200..300).contains(&status) => {
                        counts.ok.fetch_add(1, Ordering::Relaxed);
                        timed.push(Timed {
                            start: s,
                            end: e,
                            version: answer.map(|a| a.model_version),
                        });
                    }
                    Ok((status, _)) => {
                        counts.non_2xx.fetch_add(1, Ordering::Relaxed);
                        first_error.note(|| format!("POST /v1/predict answered {status}"));
                    }
                    Err(e) => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                        first_error.note(|| format!("POST /v1/predict: {e}"));
                    }
                }
            }
            timed
        }));
    }

    // The swapper: the first activation after the warm-up, the last one a swap
    // interval before the end so that requests after it are measured too.
    let mut activations: Vec<(u64, u64)> = Vec::new(); // (sent, returned) in µs
    let mut activation_errors = 0u64;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::from_std(start + WARM_UP), every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut target = old.clone();
    loop {
        tick.tick().await;
        if Instant::now() + every > deadline {
            break;
        }
        let sent = Instant::now();
        let path = format!("/v1/models/{target}/activate");
        match http.post_json(&path, &json!({})).await {
            Ok((status, answer)) if (200..300).contains(&status) => {
                if answer["changed"] == false {
                    first_error
                        .note(|| format!("activation of {target} changed nothing: {answer}"));
                }
                activations.push((micros(sent - start), micros(start.elapsed())));
            }
            Ok((status, answer)) => {
                activation_errors += 1;
                first_error.note(|| format!("POST {path} answered {status}: {answer}"));
            }
            Err(e) => {
                activation_errors += 1;
                first_error.note(|| format!("{e:#}"));
            }
        }
        target = if target == old {
            new.clone()
        } else {
            old.clone()
        };
    }
    let mut timed = Vec::new();
    for w in workers {
        timed.extend(w.await.context("a predict worker panicked")?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = http.metrics().await?;

    // Around a swap: in flight at some moment within ±window of an activation's
    // return (the swap itself is the last step before the answer), i.e. the
    // return lies in [start - window, end + window]. A stricter split counts the
    // whole activation call (loading and timing the model happen before the
    // swap): in flight within [sent - window, returned + window].
    let warm = micros(WARM_UP);
    let (mut around, mut away) = (Vec::new(), Vec::new());
    let (mut around_call, mut away_call) = (Vec::new(), Vec::new());
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for t in timed.iter().filter(|t| t.start >= warm) {
        let lo = t.start.saturating_sub(window);
        // Activations are sequential, so both ends are sorted.
        let i = activations.partition_point(|&(_, r)| r < lo);
        let latency = t.end - t.start;
        let near = activations
            .get(i)
            .is_some_and(|&(_, r)| r <= t.end + window);
        let near_call = activations
            .get(i)
            .is_some_and(|&(s, _)| s <= t.end + window);
        if near {
            around.push(latency);
        } else {
            away.push(latency);
        }
        if near_call {
            around_call.push(latency);
        } else {
            away_call.push(latency);
        }
        *versions
            .entry(t.version.clone().unwrap_or_else(|| "?".into()))
            .or_default() += 1;
    }
    for v in [&mut around, &mut away, &mut around_call, &mut away_call] {
        v.sort_unstable();
    }
    let mut calls: Vec<u64> = activations.iter().map(|&(s, r)| r - s).collect();
    calls.sort_unstable();
    let (ok_n, non2xx, failed) = counts.get();
    let p99_diff = match (pct_ms(&around, 0.99), pct_ms(&away, 0.99)) {
        (Some(a), Some(b)) => Some(((a - b) * 1e3).round() / 1e3),
        _ => None,
    };
    let met = p99_diff.is_some_and(|d| d <= GOAL_P99_DIFF_MS);
    let p99_diff_call = match (pct_ms(&around_call, 0.99), pct_ms(&away_call, 0.99)) {
        (Some(a), Some(b)) => Some(((a - b) * 1e3).round() / 1e3),
        _ => None,
    };
    let swaps = delta(&before, &after, "steward_model_swaps_total");
    let ok = non2xx + failed + activation_errors == 0;

    eprintln!(
        "  predictions:        {:.0}/s ({ok_n} answered, {non2xx} non-2xx, {failed} failed); by version {versions:?}",
        ok_n as f64 / elapsed
    );
    eprintln!(
        "  activations:        {} ({activation_errors} failed; call p50 {}, max {}); daemon swaps {swaps:.0}",
        activations.len(),
        ms(pct_ms(&calls, 0.50)),
        ms(pct_ms(&calls, 1.0)),
    );
    eprintln!(
        "  around swaps:       {} requests, p50 {}, p99 {}",
        around.len(),
        ms(pct_ms(&around, 0.50)),
        ms(pct_ms(&around, 0.99))
    );
    eprintln!(
        "  away from swaps:    {} requests, p50 {}, p99 {}",
        away.len(),
        ms(pct_ms(&away, 0.50)),
        ms(pct_ms(&away, 0.99))
    );
    eprintln!("  p99 difference:     {}", ms(p99_diff));
    eprintln!(
        "  whole call ±{} ms:   {} around (p50 {}, p99 {}), {} away (p99 {}); p99 difference {}",
        args.window_ms,
        around_call.len(),
        ms(pct_ms(&around_call, 0.50)),
        ms(pct_ms(&around_call, 0.99)),
        away_call.len(),
        ms(pct_ms(&away_call, 0.99)),
        ms(p99_diff_call),
    );
    if let Some(e) = first_error.take() {
        eprintln!("  first error:        {e}");
    }
    eprintln!(
        "  goal (a swap adds ≤ {GOAL_P99_DIFF_MS} ms to p99): {}",
        if met { "met" } else { "NOT met" }
    );
    if !ok {
        eprintln!(
            "  FAIL: {} answers were not 2xx",
            non2xx + failed + activation_errors
        );
    }
    Ok((
        "swap",
        json!({
            "elapsed_s": elapsed,
            "versions": [old, new],
            "predictions": {
                "answered": ok_n, "per_s": ok_n as f64 / elapsed, "non_2xx": non2xx,
                "failed": failed, "by_version": versions,
            },
            "activations": {
                "count": activations.len(), "failed": activation_errors,
                "call_p50_ms": pct_ms(&calls, 0.50), "call_max_ms": pct_ms(&calls, 1.0),
                "daemon_swaps": swaps,
            },
            "around": {"count": around.len(), "p50_ms": pct_ms(&around, 0.50), "p99_ms": pct_ms(&around, 0.99)},
            "away": {"count": away.len(), "p50_ms": pct_ms(&away, 0.50), "p99_ms": pct_ms(&away, 0.99)},
            "p99_diff_ms": p99_diff,
            "whole_call": {
                "around": {"count": around_call.len(), "p50_ms": pct_ms(&around_call, 0.50), "p99_ms": pct_ms(&around_call, 0.99)},
                "away": {"count": away_call.len(), "p50_ms": pct_ms(&away_call, 0.50), "p99_ms": pct_ms(&away_call, 0.99)},
                "p99_diff_ms": p99_diff_call,
            },
            "goal": {"p99_diff_ms": GOAL_P99_DIFF_MS, "met": met},
            "ok": ok,
        }),
    ))
}

/// Feeds labelled predictions, retrains and waits for the promotion; returns the
/// version live before and the promoted one (live now).
async fn second_version(
    http: &Http,
    rows: &'static [Row],
    args: &Args,
) -> anyhow::Result<(String, String)> {
    let n = usize::try_from(args.retrain_labels).context("--retrain-labels")?;
    let picked: Vec<&Row> = (0..n).map(|i| &rows[(i * 7) % rows.len()]).collect();
    let instances: Vec<&Value> = picked.iter().map(|r| &r.features).collect();
    let (status, answer) = http
        .post_json("/v1/predict", &json!({ "instances": instances }))
        .await?;
    if status != 200 {
        bail!("POST /v1/predict of {n} instances answered {status}: {answer}");
    }
    let old = answer["model_version"]
        .as_str()
        .ok_or_else(|| anyhow!("no model_version in {answer}"))?
        .to_string();
    let predictions = answer["predictions"]
        .as_array()
        .ok_or_else(|| anyhow!("no predictions in the answer"))?;
    let labels: Vec<Value> = predictions
        .iter()
        .zip(&picked)
        .map(|(p, r)| json!({"id": p["id"], "label": r.label}))
        .collect();
    let (status, answer) = http
        .post_json("/v1/feedback", &json!({ "feedback": labels }))
        .await?;
    if status != 202 {
        bail!("POST /v1/feedback answered {status}: {answer}");
    }
    let t = Instant::now();
    let (status, answer) = http.post_json("/v1/retrain", &json!({})).await?;
    if status != 202 {
        bail!("POST /v1/retrain answered {status}: {answer}");
    }
    let id = answer["id"]
        .as_i64()
        .ok_or_else(|| anyhow!("no run id in {answer}"))?;
    let deadline = Instant::now() + Duration::from_secs(900);
    let run = loop {
        let (status, run) = http.get_json(&format!("/v1/retrain/{id}")).await?;
        if status != 200 {
            bail!("GET /v1/retrain/{id} answered {status}: {run}");
        }
        if run["state"] != "running" {
            break run;
        }
        if Instant::now() >= deadline {
            bail!("retrain run {id} still running after 900 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if run["state"] != "promoted" {
        bail!(
            "retrain run {id} ended `{}`, not promoted: {} (a --start daemon promotes any candidate; a --url daemon needs training.max_regression to allow it)",
            run["state"],
            run["error"].as_str().or(run["decision"].as_str()).unwrap_or("")
        );
    }
    let new = run["candidate_version"]
        .as_str()
        .ok_or_else(|| anyhow!("no candidate_version in {run}"))?
        .to_string();
    eprintln!(
        "  second version: {n} labelled predictions, retrain run {id} promoted {new} (from {old}) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok((old, new))
}

// ---------------------------------------------------------------------------
// The daemon of --start

/// Keys this tool sets after those of `load::Daemon::start`; every other key
/// keeps its default (files under `data/` of the temporary directory, which is
/// the daemon's working directory).
const CONFIG: &str = r#"[training]
min_rows = 100
# Promote any candidate: the swap phase needs a second version.
max_regression = 1.0
drift_retrain = false

[online]
enabled = true
republish_every = 5000
# No timed publish: in the swap phase it would swap models the tool did not ask for.
republish_secs = 3600
"#;

/// Stops a --start daemon (its directory kept with --keep): Ok, a clean exit;
/// Err, what went wrong. Either way a description of the end.
async fn stop(daemon: load::Daemon, keep: bool) -> Result<String, String> {
    let (result, dir) = daemon.stop().await;
    if keep {
        if let Some(dir) = dir {
            eprintln!("  kept {}", dir.keep().display());
        }
    }
    result.map(|t| format!("stopped cleanly in {:.1} s", t.as_secs_f64()))
}
