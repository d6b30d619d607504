//! The operator's CLI against a running daemon: `steward models`, `activate`,
//! `retrain --wait`, `import --url` and `upload`, run as the real binary against
//! a real daemon process. Checks what they print (the daemon's answer with
//! `--json`, compared with the API's own), what they change (the live version),
//! and their exit codes: 2 with the daemon's error code for a refused request, 1
//! naming the URL when no daemon answers.
//!
//! Every test against a daemon (the registry and retrain runs are in its
//! database) runs on SQLite and on PostgreSQL (`for_each_backend!`); the one
//! with no daemon listening runs once.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::common::{client, for_each_backend, run, shared_model, Api, Backend, Daemon, BIN};
use crate::monitoring::rows;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/onnx");

/// Runs the binary with `env` set (and STEWARD_TOKEN/STEWARD_URL only as `env`
/// gives them): (exit code, stdout, stderr).
fn run_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("STEWARD_TOKEN")
        .env_remove("STEWARD_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one JSON document a `--json` command printed.
fn document(stdout: &str) -> Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The live model's version, as `GET /v1/model` shows it.
async fn live(d: &Daemon, c: &reqwest::Client) -> String {
    let card = d.get_json(c, "/v1/model").await;
    card["version"]
        .as_str()
        .unwrap_or_else(|| panic!("{card}"))
        .to_string()
}

/// Predicts 200 bundled rows and sends their labels, so a retrain has data.
async fn labelled_traffic(d: &Daemon, c: &reqwest::Client) {
    let inputs = rows(200, |_| {});
    let mut reader = csv::Reader::from_reader(steward::BUNDLED_PENGUINS.as_bytes());
    let all: Vec<String> = reader
        .records()
        .map(|r| r.unwrap().iter().next_back().unwrap().to_string())
        .collect();
    let (status, body) = d.predict(c, &json!({"instances": inputs})).await;
    assert_eq!(status, 200, "{body}");
    let items: Vec<Value> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"id": p["id"], "label": all[(i * 7) % all.len()]}))
        .collect();
    let (status, body) = d.feedback(c, &json!({"feedback": items})).await;
    assert_eq!(status, 202, "{body}");
}

for_each_backend!(
    #[tokio::test]
    models_prints_the_daemons_list_and_a_table
);
async fn models_prints_the_daemons_list_and_a_table(backend: Backend) {
    let d = Daemon::start_on(backend, "[training]\ndrift_retrain = false\n", &[]);
    let c = client();
    let api = d.get_json(&c, "/v1/models").await;
    let (code, stdout, stderr) = run(&["models", "--url", &d.url, "--json"], d.dir());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(document(&stdout), api);
    assert_eq!(api["models"][0]["version"], "1", "{api}");
    // STEWARD_URL stands in for --url; without --json, stdout stays empty.
    let (code, stdout, stderr) = run_env(&["models"], d.dir(), &[("STEWARD_URL", &d.url)]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "");
    let mut lines = stderr.lines();
    let header = lines.next().unwrap();
    for column in [
        "version", "status", "created", "source", "metrics", "bits", "sparsity", "parent",
    ] {
        assert!(header.contains(column), "{stderr}");
    }
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("1 ") && row.contains("active") && row.contains("accuracy"),
        "{stderr}"
    );
}

for_each_backend!(
    #[tokio::test]
    retrain_wait_reports_the_run_and_activate_rolls_back
);
async fn retrain_wait_reports_the_run_and_activate_rolls_back(backend: Backend) {
    let d = Daemon::start_on(
        backend,
        "[training]\nmin_rows = 100\nfolds = 3\nmax_regression = 1.0\ndrift_retrain = false\n\
         [online]\nenabled = false\n",
        &[],
    );
    let c = client();
    labelled_traffic(&d, &c).await;
    let (code, stdout, stderr) = run(&["retrain", "--wait", "--url", &d.url, "--json"], d.dir());
    assert_eq!(code, 0, "{stderr}");
    let run_doc = document(&stdout);
    assert_eq!(run_doc["state"], "promoted", "{run_doc}");
    let id = run_doc["id"].as_i64().unwrap();
    assert_eq!(d.get_json(&c, &format!("/v1/retrain/{id}")).await, run_doc);
    assert!(
        stderr.contains(&format!("retrain run {id} promoted: version 2 is live")),
        "{stderr}"
    );
    assert!(stderr.contains("held-out rows"), "{stderr}");
    assert_eq!(live(&d, &c).await, "2");

    let (code, stdout, stderr) = run(&["activate", "1", "--url", &d.url, "--json"], d.dir());
    assert_eq!(code, 0, "{stderr}");
    let doc = document(&stdout);
    assert_eq!(
        (doc["model_version"].as_str(), doc["previous"].as_str()),
        (Some("1"), Some("2"))
    );
    assert!(stderr.contains("version 1 is live"), "{stderr}");
    assert_eq!(live(&d, &c).await, "1");

    let (code, stdout, stderr) = run(&["activate", "9", "--url", &d.url], d.dir());
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("error: POST /v1/models/9/activate: 404 unknown_version"),
        "{stderr}"
    );
    assert_eq!(live(&d, &c).await, "1");
}

for_each_backend!(
    #[tokio::test]
    a_retrain_without_labelled_rows_ends_skipped_and_exits_zero
);
async fn a_retrain_without_labelled_rows_ends_skipped_and_exits_zero(backend: Backend) {
    let d = Daemon::start_on(backend, "[training]\ndrift_retrain = false\n", &[]);
    let (code, stdout, stderr) = run(&["retrain", "--url", &d.url, "--json"], d.dir());
    assert_eq!(code, 0, "{stderr}");
    let started = document(&stdout);
    assert_eq!(started["state"], "running", "{started}");
    let id = started["id"].as_i64().unwrap();
    // The next run waits for that one to end (a run in flight is refused).
    let (code, stdout, stderr) = loop {
        let out = run(&["retrain", "--wait", "--url", &d.url], d.dir());
        if !out.2.contains("retrain_running") {
            break out;
        }
        assert_eq!(out.0, 2, "{}", out.2);
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "");
    assert!(
        stderr.contains(&format!("retrain run {} skipped", id + 1)),
        "{stderr}"
    );
}

for_each_backend!(
    #[tokio::test]
    without_the_daemons_token_admin_commands_exit_2_and_say_unauthorized
);
async fn without_the_daemons_token_admin_commands_exit_2_and_say_unauthorized(backend: Backend) {
    let d = Daemon::start_on(
        backend,
        "[training]\ndrift_retrain = false\n",
        &[("STEWARD_TOKEN", "s3cret")],
    );
    let c = client();
    let (code, _, stderr) = run(&["activate", "1", "--url", &d.url], d.dir());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("401 unauthorized"), "{stderr}");
    assert!(stderr.contains("set STEWARD_TOKEN"), "{stderr}");
    let (code, _, stderr) = run_env(
        &["retrain", "--url", &d.url],
        d.dir(),
        &[("STEWARD_TOKEN", "wrong")],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("401 unauthorized: the bearer token is not valid"),
        "{stderr}"
    );
    // Reading needs no token; with the right one, admin commands pass.
    let (code, _, stderr) = run(&["models", "--url", &d.url], d.dir());
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run_env(
        &["activate", "1", "--url", &d.url],
        d.dir(),
        &[("STEWARD_TOKEN", "s3cret")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("version 1 was already live"), "{stderr}");
    assert_eq!(live(&d, &c).await, "1");
}

#[test]
fn with_no_daemon_listening_commands_exit_1_naming_the_url() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: bound, then freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["models", "--url", &url],
        vec!["activate", "1", "--url", &url, "--json"],
        vec!["retrain", "--wait", "--url", &url],
    ] {
        let (code, stdout, stderr) = run(&args, dir.path());
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert_eq!(stdout, "", "{args:?}");
        assert!(
            stderr.contains(&format!(
                "cannot reach the daemon at {url}: connection refused"
            )),
            "{args:?}: {stderr}"
        );
    }
    let (code, _, stderr) = run(&["models", "--url", "https://127.0.0.1:8443"], dir.path());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("plain http only"), "{stderr}");
}

for_each_backend!(
    #[tokio::test]
    import_url_registers_an_onnx_graph_and_activates_it
);
async fn import_url_registers_an_onnx_graph_and_activates_it(backend: Backend) {
    let d = Daemon::start_on(backend, "[training]\ndrift_retrain = false\n", &[]);
    let c = client();
    let onnx = format!("{FIXTURES}/torch_relu_opset13.onnx");
    let csv = format!("{FIXTURES}/torch_relu_opset13.csv");
    let args = [
        "import",
        "--onnx",
        &onnx,
        "--data",
        &csv,
        "--url",
        &d.url,
        "--activate",
        "--json",
    ];
    let (code, stdout, stderr) = run(&args, d.dir());
    assert_eq!(code, 0, "{stderr}");
    let doc = document(&stdout);
    assert_eq!(
        (doc["version"].as_str(), doc["active"].as_bool()),
        (Some("2"), Some(true)),
        "{doc}"
    );
    assert!(doc["import"].is_object(), "{doc}");
    assert!(
        stderr.contains("as version 2") && stderr.contains("live now"),
        "{stderr}"
    );
    assert_eq!(live(&d, &c).await, "2");
    // Nothing was written beside the files.
    assert!(!d.dir().join("torch_relu_opset13.safetensors").exists());

    let refused = format!("{FIXTURES}/refuse_conv.onnx");
    let args = [
        "import", "--onnx", &refused, "--data", &csv, "--url", &d.url, "--json",
    ];
    let (code, stdout, stderr) = run(&args, d.dir());
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stdout, "");
    assert!(stderr.contains("error: POST /v1/models: 4"), "{stderr}");
    assert!(stderr.contains("unsupported_onnx_op"), "{stderr}");
    let models = d.get_json(&c, "/v1/models").await;
    assert_eq!(models["models"].as_array().unwrap().len(), 2, "{models}");
}

for_each_backend!(
    #[tokio::test]
    upload_registers_an_artifact_that_activate_then_makes_live
);
async fn upload_registers_an_artifact_that_activate_then_makes_live(backend: Backend) {
    let d = Daemon::start_on(backend, "[training]\ndrift_retrain = false\n", &[]);
    let c = client();
    let model = shared_model().display().to_string();
    let (code, stdout, stderr) = run(
        &["upload", "--model", &model, "--url", &d.url, "--json"],
        d.dir(),
    );
    assert_eq!(code, 0, "{stderr}");
    let doc = document(&stdout);
    assert_eq!(
        (doc["version"].as_str(), doc["active"].as_bool()),
        (Some("2"), Some(false)),
        "{doc}"
    );
    // Like every major version, its parent is the version live when it came.
    let models = d.get_json(&c, "/v1/models").await;
    let uploaded = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["version"] == "2");
    assert_eq!(
        uploaded.map(|m| &m["parent"]),
        Some(&json!("1")),
        "{models}"
    );
    assert!(
        stderr.contains("`steward activate 2` makes it live"),
        "{stderr}"
    );
    assert_eq!(live(&d, &c).await, "1");
    let (code, _, stderr) = run(&["activate", "2", "--url", &d.url], d.dir());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(live(&d, &c).await, "2");

    // Not an artifact: the daemon says why, the CLI exits 2.
    let csv = format!("{FIXTURES}/torch_relu_opset13.csv");
    let (code, _, stderr) = run(&["upload", "--model", &csv, "--url", &d.url], d.dir());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid_artifact"), "{stderr}");
    // A file that is not there never leaves the machine.
    let (code, _, stderr) = run(
        &["upload", "--model", "missing.safetensors", "--url", &d.url],
        d.dir(),
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("missing.safetensors: cannot read"),
        "{stderr}"
    );
}
