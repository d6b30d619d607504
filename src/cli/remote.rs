//! The operator's commands for a running daemon: `steward models`, `activate`,
//! `retrain [--wait]`, `upload`, and `import --url` (the ONNX import done by the
//! daemon). Each sends one request (a retrain's `--wait` then polls) through
//! [`Client`], prints the daemon's answer as it is with `--json` and a summary on
//! stderr, and maps what went wrong to an exit code: a 4xx answer is the user's
//! input (exit 2, with the daemon's code and message), no answer or a 5xx is
//! anything else (exit 1, naming the URL). The HTTP itself is in `client`; what
//! the endpoints do is the daemon's (src/server).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::client::{Answer, Client, ClientError, Form};
use super::onnx::ImportArgs;
use super::Failure;

/// The daemon's URL when neither `--url` nor `STEWARD_URL` gives one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// The variable holding the bearer token for admin endpoints.
pub const TOKEN_ENV: &str = "STEWARD_TOKEN";
/// Deadline for a request that only reads or flips state.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for an upload, which the daemon checks (and may convert) before answering.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How often `retrain --wait` asks about the run.
const POLL: Duration = Duration::from_secs(1);

/// Where the daemon is, and how to print its answer.
#[derive(Debug, clap::Args)]
pub struct RemoteArgs {
    /// The daemon's base URL (plain http).
    #[arg(long, env = "STEWARD_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Print the daemon's answer, one JSON document, on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `steward models`.
#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `steward activate`.
#[derive(Debug, clap::Args)]
pub struct ActivateArgs {
    /// A stored version, as `steward models` lists it (e.g. 3 or 3.2).
    pub version: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `steward retrain`.
#[derive(Debug, clap::Args)]
pub struct RetrainArgs {
    /// Wait for the run to end and report it: exit 0 when it ran to a decision
    /// (promoted, rejected or skipped), 1 when it failed.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `steward upload`.
#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// A steward model artifact (.safetensors), as `steward train` writes it.
    #[arg(long)]
    pub model: PathBuf,
    /// Make the new version live at once (else `steward activate` does it later).
    #[arg(long)]
    pub activate: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// The token from `STEWARD_TOKEN`; unset or empty means none, as the daemon reads it.
fn token() -> Option<String> {
    std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty())
}

fn connect(url: &str, timeout: Duration) -> Result<Client, Failure> {
    Client::new(url, token(), timeout).map_err(client_failure)
}

fn client_failure(e: ClientError) -> Failure {
    if e.is_input() {
        Failure::Input(e.into())
    } else {
        Failure::Other(e.into())
    }
}

/// The body of a 2xx answer; otherwise the failure it stands for, worded as
/// `POST /v1/models: 400 unsupported_onnx_op: <the daemon's message>`.
fn expect_ok(client: &Client, what: &str, a: Answer) -> Result<Value, Failure> {
    let code = a.body["error"]["code"].as_str();
    let message = a.body["error"]["message"].as_str();
    let detail = match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ if a.text.trim().is_empty() => reason(a.status).to_string(),
        _ => a.text.trim().chars().take(200).collect(),
    };
    match a.status {
        200..=299 if a.body.is_null() => Err(Failure::Other(anyhow::anyhow!(
            "{what}: the daemon at {} answered {} without a JSON body",
            client.url(),
            a.status
        ))),
        200..=299 => Ok(a.body),
        401 | 403 if token().is_none() => Err(Failure::Input(anyhow::anyhow!(
            "{what}: {} {detail} (set {TOKEN_ENV} to the daemon's token)",
            a.status
        ))),
        404 | 405 if code.is_none() => Err(Failure::Input(anyhow::anyhow!(
            "{what}: {} {detail}: the daemon at {} has no such endpoint (an older steward?)",
            a.status,
            client.url()
        ))),
        400..=499 => Err(Failure::Input(anyhow::anyhow!(
            "{what}: {} {detail}",
            a.status
        ))),
        _ => Err(Failure::Other(anyhow::anyhow!(
            "{what}: {} {detail} (the daemon at {})",
            a.status,
            client.url()
        ))),
    }
}

/// The reason phrase of the statuses an answer without a body may carry.
fn reason(status: u16) -> &'static str {
    hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// Sends `GET`/`POST path` and checks the answer.
fn call(client: &Client, post: bool, path: &str) -> Result<Value, Failure> {
    let (method, answer) = match post {
        true => ("POST", client.post_json(path, None)),
        false => ("GET", client.get(path)),
    };
    let what = format!("{method} {path}");
    expect_ok(client, &what, answer.map_err(client_failure)?)
}

/// Prints `doc` on stdout when `--json` asked for it.
fn print_json(json: bool, doc: &Value) {
    if json {
        println!("{doc}");
    }
}

/// `steward models`: every stored version, newest first.
pub fn models_command(args: ModelsArgs) -> Result<(), Failure> {
    let RemoteArgs { url, json } = args.remote;
    let client = connect(&url, TIMEOUT)?;
    let doc = call(&client, false, "/v1/models")?;
    print_json(json, &doc);
    let empty = Vec::new();
    let models = doc["models"].as_array().unwrap_or(&empty);
    let mut rows = vec![[
        "version", "status", "created", "source", "metrics", "bits", "sparsity", "parent",
    ]
    .map(String::from)
    .to_vec()];
    rows.extend(models.iter().map(model_row));
    eprintln!("{}", table(&rows));
    let plural = if models.len() == 1 { "" } else { "s" };
    eprintln!("{} version{plural} at {}", models.len(), client.url());
    Ok(())
}

/// One line of the `models` table.
fn model_row(m: &Value) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    let metrics = m["metrics"]
        .as_object()
        .map(|ms| {
            ms.iter()
                .map(|(k, v)| match v.as_f64() {
                    Some(x) => format!("{k} {x:.4}"),
                    None => format!("{k} {v}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    vec![
        text(&m["version"]),
        text(&m["status"]),
        m["created"]
            .as_i64()
            .map_or_else(|| text(&m["created"]), crate::time::rfc3339),
        text(&m["source"]),
        metrics,
        text(&m["bits"]),
        m["sparsity"]
            .as_f64()
            .map_or_else(|| text(&m["sparsity"]), |s| format!("{s:.2}")),
        text(&m["parent"]),
    ]
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `steward activate`: makes a stored version live.
pub fn activate_command(args: ActivateArgs) -> Result<(), Failure> {
    let RemoteArgs { url, json } = args.remote;
    let client = connect(&url, TIMEOUT)?;
    let path = format!("/v1/models/{}/activate", path_segment(&args.version));
    let doc = call(&client, true, &path)?;
    print_json(json, &doc);
    let live = doc["model_version"].as_str().unwrap_or(&args.version);
    match (doc["changed"].as_bool(), doc["previous"].as_str()) {
        (Some(false), _) => eprintln!("version {live} was already live at {}", client.url()),
        (_, Some(previous)) => eprintln!(
            "version {live} is live at {} (was {previous})",
            client.url()
        ),
        _ => eprintln!("version {live} is live at {}", client.url()),
    }
    Ok(())
}

/// A version as one path segment: characters outside the unreserved set
/// percent-encoded, so `../x` or `a/b` cannot reach another endpoint.
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `steward retrain`: starts a run; with `--wait`, follows it to the end.
pub fn retrain_command(args: RetrainArgs) -> Result<(), Failure> {
    let RemoteArgs { url, json } = args.remote;
    let client = connect(&url, TIMEOUT)?;
    let started = call(&client, true, "/v1/retrain")?;
    let id = started["id"].as_i64().ok_or_else(|| {
        Failure::Other(anyhow::anyhow!(
            "POST /v1/retrain: the daemon at {} answered without a run id: {started}",
            client.url()
        ))
    })?;
    if !args.wait {
        print_json(json, &started);
        eprintln!(
            "retrain run {id} started at {}; `steward retrain --wait` follows a run, \
             GET /v1/retrain/{id} shows it",
            client.url()
        );
        return Ok(());
    }
    eprintln!(
        "retrain run {id} started at {}; waiting for it to end",
        client.url()
    );
    let run = loop {
        std::thread::sleep(POLL);
        let run = call(&client, false, &format!("/v1/retrain/{id}"))?;
        if run["state"] != "running" {
            break run;
        }
    };
    print_json(json, &run);
    let outcome = run_outcome(&run);
    if run["state"] == "failed" {
        return Err(Failure::Other(anyhow::anyhow!("{outcome}")));
    }
    eprintln!("{outcome}");
    Ok(())
}

/// One paragraph on how a finished run ended: its state, the gate's numbers and
/// decision, and which version is live.
fn run_outcome(run: &Value) -> String {
    let id = &run["id"];
    let state = run["state"].as_str().unwrap_or("?");
    let metric = run["metric"].as_str().unwrap_or("metric");
    let number = |k: &str| run[k].as_f64().map_or("-".into(), |v| format!("{v:.4}"));
    let gate = format!(
        "candidate {metric} {} vs live {} (version {}) on {} held-out rows; trained on {} of {} rows",
        number("candidate_metric"),
        number("live_metric"),
        run["live_version"].as_str().unwrap_or("-"),
        run["holdout_rows"],
        run["train_rows"],
        run["rows"]
    );
    let why = run["decision"]
        .as_str()
        .or(run["error"].as_str())
        .unwrap_or("no reason given");
    match state {
        "promoted" => format!(
            "retrain run {id} promoted: version {} is live; {gate}. {why}",
            run["candidate_version"].as_str().unwrap_or("?")
        ),
        "rejected" => format!(
            "retrain run {id} rejected: version {} stays live; {gate}. {why}",
            run["live_version"].as_str().unwrap_or("?")
        ),
        "failed" => format!("retrain run {id} failed: {why}"),
        _ => format!("retrain run {id} {state}: {why}"),
    }
}

/// `steward upload`: registers a steward artifact with the daemon.
pub fn upload_command(args: UploadArgs) -> Result<(), Failure> {
    let RemoteArgs { url, json } = args.remote;
    let bytes = read(&args.model)?;
    let form = Form::new().file(
        "artifact",
        &file_name(&args.model),
        "application/octet-stream",
        bytes,
    );
    let client = connect(&url, UPLOAD_TIMEOUT)?;
    let doc = register(&client, args.activate, &form)?;
    print_json(json, &doc);
    eprintln!(
        "{}",
        registered(&client, &doc, &args.model.display().to_string())
    );
    Ok(())
}

/// `steward import --url`: the daemon imports the ONNX file, checked on the CSV.
pub fn import_command(args: &ImportArgs, url: &str) -> Result<(), Failure> {
    if args.out.is_some() || args.no_compress {
        return Err(Failure::Input(anyhow::anyhow!(
            "--out and --no-compress are for a local import; with --url the daemon \
             stores the model and compresses it as its config says"
        )));
    }
    // The same checks as a local import, before anything is sent.
    args.options()?;
    let onnx = read(&args.onnx)?;
    let data = read(&args.data)?;
    let mut form = Form::new()
        .file(
            "onnx",
            &file_name(&args.onnx),
            "application/octet-stream",
            onnx,
        )
        .file("data", &file_name(&args.data), "text/csv", data)
        .text("label", &args.label)
        .text("tolerance", &args.tolerance.to_string());
    if let Some(task) = args.task {
        let task = match task {
            super::TaskArg::Classification => "classification",
            super::TaskArg::Regression => "regression",
        };
        form = form.text("task", task);
    }
    if let Some(classes) = &args.classes {
        form = form.text("classes", &classes.join(","));
    }
    let client = connect(url, UPLOAD_TIMEOUT)?;
    let doc = register(&client, args.activate, &form)?;
    print_json(args.json, &doc);
    if let Some(line) = import_summary(args, &doc["import"]) {
        eprintln!("{line}");
    }
    eprintln!(
        "{}",
        registered(&client, &doc, &args.onnx.display().to_string())
    );
    Ok(())
}

/// What the daemon's import report says about the check, when there is one.
fn import_summary(args: &ImportArgs, report: &Value) -> Option<String> {
    let number = |v: &Value, f: fn(f64) -> String| v.as_f64().map_or("-".into(), f);
    report.is_object().then(|| {
        format!(
            "the daemon checked {} on {} rows of {}: largest difference {} (tolerance {}); {} = {}",
            args.onnx.display(),
            report["check"]["rows"],
            args.data.display(),
            number(&report["check"]["max_abs_diff"], |x| format!("{x:.2e}")),
            number(&report["check"]["tolerance"], |x| format!("{x:e}")),
            report["metric"].as_str().unwrap_or("metric"),
            number(&report["value"], |x| format!("{x:.4}")),
        )
    })
}

/// `POST /v1/models?activate=..` with `form`.
fn register(client: &Client, activate: bool, form: &Form) -> Result<Value, Failure> {
    let path = format!("/v1/models?activate={activate}");
    let answer = client.post_multipart(&path, form).map_err(client_failure)?;
    expect_ok(client, "POST /v1/models", answer)
}

/// "registered FILE as version 7 (source ...): live now" or how to make it live.
fn registered(client: &Client, doc: &Value, file: &str) -> String {
    let version = doc["version"].as_str().unwrap_or("?");
    let source = doc["source"]
        .as_str()
        .map_or(String::new(), |s| format!(" (source {s})"));
    if doc["active"].as_bool() == Some(true) {
        format!(
            "registered {file} as version {version}{source} at {}: live now",
            client.url()
        )
    } else {
        format!(
            "registered {file} as version {version}{source} at {}; `steward activate {version}` \
             makes it live",
            client.url()
        )
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path)
        .map_err(|e| Failure::Input(anyhow::anyhow!("{}: cannot read: {e}", path.display())))
}

/// The file name a part carries: the path's last component.
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_version_cannot_escape_its_path_segment() {
        assert_eq!(path_segment("3.2"), "3.2");
        assert_eq!(path_segment("../retrain"), "..%2Fretrain");
        assert_eq!(path_segment("a b?"), "a%20b%3F");
    }

    #[test]
    fn the_table_aligns_columns_and_trims_line_ends() {
        let rows = vec![
            vec!["version".into(), "status".into(), "parent".into()],
            vec!["10".into(), "active".into(), "-".into()],
        ];
        assert_eq!(table(&rows), "version  status  parent\n10       active  -");
    }

    #[test]
    fn a_run_outcome_names_the_state_the_numbers_and_the_live_version() {
        let run = serde_json::json!({
            "id": 3, "state": "rejected", "metric": "accuracy", "rows": 300,
            "train_rows": 240, "holdout_rows": 60, "live_version": "1",
            "live_metric": 0.95, "candidate_metric": 0.4,
            "decision": "candidate accuracy 0.4000 below the live model's 0.9500"
        });
        let text = run_outcome(&run);
        assert!(
            text.starts_with("retrain run 3 rejected: version 1 stays live"),
            "{text}"
        );
        assert!(
            text.contains("candidate accuracy 0.4000 vs live 0.9500"),
            "{text}"
        );
        assert!(
            text.contains("60 held-out rows; trained on 240 of 300 rows"),
            "{text}"
        );
    }
}
