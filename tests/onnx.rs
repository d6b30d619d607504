//! ONNX in and out with real files and real runtimes: fixtures written by
//! PyTorch and skl2onnx (`scripts/onnx_fixtures.py`, with onnxruntime's outputs
//! on fixed rows) imported by `steward import`; refusals with exit 2 and the node
//! named; `steward export` checked by onnxruntime (`scripts/ort_run.py`, Python,
//! installed by `.ci/run`) and by importing it back; and uploads to the running
//! daemon through `POST /v1/models`, also under load.
//!
//! The tests of the daemon (uploads go into its registry, in its database) run
//! on SQLite and on PostgreSQL (`for_each_backend!`); the command-line tests
//! (`import`, `export`, `inspect` on files) open no database and run once.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use steward::model::artifact;
use steward::model::network::Output;

use crate::common::{client, for_each_backend, run, Backend, Daemon};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/onnx");

/// The fixtures with onnxruntime's outputs.
const IMPORTABLE: [&str; 8] = [
    "torch_relu_opset13",
    "torch_tanh_opset17",
    "torch_regression_opset17",
    "skl_scaler_mlpclassifier_opset13",
    "skl_scaler_mlpclassifier_binary_opset17",
    "skl_mlpregressor_opset17",
    "skl_logreg_opset13",
    "skl_logreg_multiclass_opset17",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn expected(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(&format!("{name}.expected.json"))).unwrap())
        .unwrap()
}

/// `steward import` of fixture `name` into `dir`; returns the artifact's path
/// and the JSON report.
fn import(name: &str, dir: &Path) -> (PathBuf, Value) {
    let out = dir.join(format!("{name}.safetensors"));
    let onnx = fixture(&format!("{name}.onnx"));
    let csv = fixture(&format!("{name}.csv"));
    let (code, stdout, stderr) = run_import(&onnx, &csv, &out, &["--json"], dir);
    assert_eq!(code, 0, "{name}: {stderr}");
    (out, serde_json::from_str(&stdout).unwrap())
}

/// `steward import --onnx ONNX --data CSV --out OUT` and `extra`, run in `dir`.
fn run_import(
    onnx: &Path,
    csv: &Path,
    out: &Path,
    extra: &[&str],
    dir: &Path,
) -> (i32, String, String) {
    let mut args = vec![
        "import",
        "--onnx",
        onnx.to_str().unwrap(),
        "--data",
        csv.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args, dir)
}

/// A row of raw feature values (schema order) as the network's input.
fn encode(model: &steward::model::Model, row: &[f64]) -> Vec<f32> {
    let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
    let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
    let mut x = vec![0.0f32; model.schema.width()];
    model.schema.encode_cells(&cells, &mut x);
    x
}

/// The f32 network's answers on `rows` (raw feature values in schema order), as
/// the probabilities of every class or the value.
fn answers(model: &steward::model::Model, rows: &[Vec<f64>]) -> Vec<Vec<f64>> {
    rows.iter()
        .map(|r| {
            let out = model.network.forward_one(&encode(model, r));
            let out: Vec<f64> = out.iter().map(|v| f64::from(*v)).collect();
            match model.network.output() {
                Output::Sigmoid => vec![1.0 - out[0], out[0]],
                _ => out,
            }
        })
        .collect()
}

fn rows_of(e: &Value) -> Vec<Vec<f64>> {
    serde_json::from_value(e["rows"].clone()).unwrap()
}

/// The reference outputs: probabilities for a classifier (softmax of a graph's
/// logits), the value for a regressor.
fn reference_outputs(e: &Value) -> Vec<Vec<f64>> {
    let key = if e.get("probabilities").is_some() {
        "probabilities"
    } else {
        "outputs"
    };
    serde_json::from_value(e[key].clone()).unwrap()
}

fn assert_close(name: &str, got: &[Vec<f64>], want: &[Vec<f64>], tolerance: f64) {
    assert_eq!(got.len(), want.len(), "{name}");
    let mut max = 0.0f64;
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len(), "{name}: {g:?} vs {w:?}");
        for (a, b) in g.iter().zip(w) {
            max = max.max((a - b).abs());
        }
    }
    assert!(
        max <= tolerance,
        "{name}: largest difference {max:e} > {tolerance:e}"
    );
}

#[test]
fn every_fixture_imports_and_answers_as_onnxruntime_within_1e_5() {
    let dir = tempfile::tempdir().unwrap();
    for name in IMPORTABLE {
        let (path, report) = import(name, dir.path());
        let e = expected(name);
        let model = artifact::load(&path).unwrap();
        assert_close(
            name,
            &answers(&model, &rows_of(&e)),
            &reference_outputs(&e),
            1e-5,
        );
        assert_eq!(report["check"]["rows"], 300, "{name}: {report}");
        if let Some(classes) = e.get("classes") {
            assert_eq!(&report["classes"], classes, "{name}");
        }
        let opset = e["opset"].as_i64().unwrap();
        assert_eq!(report["opsets"]["ai.onnx"], opset, "{name}: {report}");
        // An int8 form kept at import may serve: the daemon reads its metric drop
        // from the artifact, as after training.
        if report["bits"] == 8 {
            let drop = model.int8_metric_drop().unwrap_or(f64::INFINITY);
            assert!(drop <= 0.01, "{name}: int8 drop {drop} with bits 8");
            let rows: Vec<Vec<f32>> = rows_of(&e).iter().map(|r| encode(&model, r)).collect();
            let choice = model.choose_form(&rows, 0.01);
            assert!(choice.int8_ns.is_some(), "{name}: {}", choice.reason);
        }
    }
}

#[test]
fn activations_and_encodings_come_from_the_graph() {
    let dir = tempfile::tempdir().unwrap();
    let (path, tanh) = import("torch_tanh_opset17", dir.path());
    assert_eq!(tanh["activations"], json!(["tanh", "leaky_relu"]));
    let (code, _, stderr) = run(&["inspect", "--model", path.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(r#"hidden activations: ["tanh","leaky_relu"]"#),
        "{stderr}"
    );
    assert_eq!(tanh["encoding"], "csv");
    let (path, scaler) = import("skl_scaler_mlpclassifier_opset13", dir.path());
    assert_eq!(scaler["encoding"], "scaler");
    // The Scaler's offset is the schema's mean (skl2onnx stores StandardScaler's mean_).
    let model = artifact::load(&path).unwrap();
    let bytes = std::fs::read(fixture("skl_scaler_mlpclassifier_opset13.onnx")).unwrap();
    let proto = steward::onnx::decode("f", &bytes).unwrap();
    let graph = proto.graph.unwrap();
    let scaler_node = graph.node.iter().find(|n| n.op_type == "Scaler").unwrap();
    let offset = &scaler_node
        .attribute
        .iter()
        .find(|a| a.name == "offset")
        .unwrap()
        .floats;
    for (f, o) in model.schema.features.iter().zip(offset) {
        let steward::model::schema::FeatureKind::Numeric { mean, .. } = f.kind else {
            panic!("numeric features expected")
        };
        let o = f64::from(*o);
        assert!(
            (mean - o).abs() <= 1e-12 * o.abs().max(1.0),
            "{}: {mean} vs {o}",
            f.name
        );
    }
    let (_, logits) = import("torch_relu_opset13", dir.path());
    assert_eq!(logits["output_function_added"], true);
    assert_eq!(logits["output_function"], "softmax");
}

/// (fixture, CSV, what stderr must name)
const REFUSED: [(&str, &str, &str); 4] = [
    (
        "refuse_conv.onnx",
        "torch_relu_opset13.csv",
        "node `/conv/Conv`: op Conv is not supported",
    ),
    (
        "refuse_unsupported_op.onnx",
        "torch_relu_opset13.csv",
        "node `/Sin`: op Sin is not supported",
    ),
    (
        "refuse_two_outputs.onnx",
        "torch_relu_opset13.csv",
        "2 outputs computed from the input (logits, hidden)",
    ),
    (
        "torch_relu_opset13.onnx",
        "torch_regression_opset17.csv",
        "takes 6 features but the CSV's columns encode to 5",
    ),
];

#[test]
fn unsupported_graphs_truncated_files_and_width_mismatches_exit_2_naming_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(fixture("torch_relu_opset13.onnx")).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let mut cases: Vec<(PathBuf, PathBuf, String)> = REFUSED
        .iter()
        .map(|(f, c, m)| (fixture(f), fixture(c), m.to_string()))
        .collect();
    cases.push((
        truncated.clone(),
        fixture("torch_relu_opset13.csv"),
        format!(
            "{}: not a readable ONNX model (truncated or corrupt?)",
            truncated.display()
        ),
    ));
    for (onnx, csv, message) in cases {
        let out = dir.path().join("out.safetensors");
        let (code, stdout, stderr) = run_import(&onnx, &csv, &out, &[], dir.path());
        assert_eq!(code, 2, "{}: {stderr}", onnx.display());
        assert!(stderr.contains(&message), "{}: {stderr}", onnx.display());
        assert!(
            stderr.contains(onnx.file_name().unwrap().to_str().unwrap()),
            "{stderr}"
        );
        assert!(stdout.is_empty());
        assert!(!out.exists(), "nothing is written for a refused import");
    }
}

/// Makes sure Python has onnxruntime and numpy, installing them from PyPI the
/// first time they are missing (`.ci/run` installs them beforehand), so that
/// `cargo test` runs from a clean clone.
fn ensure_onnxruntime() {
    static READY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    READY.get_or_init(|| {
        let python = |args: &[&str]| {
            std::process::Command::new("python3")
                .args(args)
                .output()
                .expect("python3 runs")
        };
        if python(&["-c", "import onnxruntime, numpy"])
            .status
            .success()
        {
            return;
        }
        eprintln!("installing onnxruntime and numpy from PyPI for the ONNX export tests");
        let out = python(&[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "onnxruntime",
            "numpy",
        ]);
        assert!(
            out.status.success(),
            "pip install onnxruntime numpy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// onnxruntime's answers (scripts/ort_run.py) for `model` on `rows`.
fn onnxruntime(model: &Path, rows: &[Vec<f64>], dir: &Path) -> Vec<Vec<f64>> {
    ensure_onnxruntime();
    let rows_path = dir.join("rows.json");
    std::fs::write(&rows_path, serde_json::to_vec(rows).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ort_run.py");
    let out = std::process::Command::new("python3")
        .args([script, model.to_str().unwrap(), rows_path.to_str().unwrap()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn exports_answer_in_onnxruntime_like_steward_and_import_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let mut models: Vec<(String, PathBuf, Vec<Vec<f64>>)> = [
        "torch_tanh_opset17",
        "skl_scaler_mlpclassifier_binary_opset17",
        "skl_mlpregressor_opset17",
    ]
    .iter()
    .map(|n| {
        let (path, _) = import(n, dir.path());
        (n.to_string(), path, rows_of(&expected(n)))
    })
    .collect();
    // And a model steward trained itself, with categorical features (one-hot
    // slots in the exported input).
    let penguin_rows: Vec<Vec<f64>> = Vec::new();
    models.push((
        "penguins".into(),
        crate::common::shared_model().to_path_buf(),
        penguin_rows,
    ));
    for (name, path, rows) in &models {
        let onnx = dir.path().join(format!("{name}.export.onnx"));
        let (code, stdout, stderr) = run(
            &[
                "export",
                "--model",
                path.to_str().unwrap(),
                "--onnx",
                onnx.to_str().unwrap(),
                "--json",
            ],
            dir.path(),
        );
        assert_eq!(code, 0, "{name}: {stderr}");
        let report: Value = serde_json::from_str(&stdout).unwrap();
        let model = artifact::load(path).unwrap();
        assert_eq!(
            report["slots"].as_array().unwrap().len(),
            model.schema.width()
        );
        if rows.is_empty() {
            // Categorical: check on the graph's own input slots instead.
            check_penguins_export(&model, &onnx, dir.path());
            continue;
        }
        let ours = answers(&model, rows);
        assert_close(name, &onnxruntime(&onnx, rows, dir.path()), &ours, 1e-5);
        // Import the export back: the same function.
        let csv = fixture(&format!("{name}.csv"));
        let back = dir.path().join(format!("{name}.back.safetensors"));
        let (code, _, stderr) = run_import(&onnx, &csv, &back, &[], dir.path());
        assert_eq!(code, 0, "{name}: {stderr}");
        let again = artifact::load(&back).unwrap();
        assert_close(name, &answers(&again, rows), &ours, 1e-6);
        assert_eq!(again.network.activations(), model.network.activations());
    }
}

/// The bundled penguins model has categorical features: the exported graph takes
/// their one-hot slots, and answers like steward on encoded rows.
fn check_penguins_export(model: &steward::model::Model, onnx: &Path, dir: &Path) {
    let table = steward::data::Table::parse("p", steward::BUNDLED_PENGUINS.as_bytes()).unwrap();
    let label = table.label_index("label").unwrap();
    let x = steward::train::encode_table(&model.schema, &table, Some(label)).unwrap();
    let mut graph_rows = Vec::new();
    let mut ours = Vec::new();
    for (i, row) in table.rows.iter().enumerate().step_by(7).take(40) {
        if row.iter().any(String::is_empty) {
            continue;
        }
        // The graph's input: raw numbers, one-hot categories.
        let mut raw = Vec::new();
        let mut slot = 0;
        for f in &model.schema.features {
            match &f.kind {
                steward::model::schema::FeatureKind::Numeric { mean, std } => {
                    raw.push(f64::from(x[[i, slot]]) * std + mean);
                }
                steward::model::schema::FeatureKind::Categorical { .. } => {
                    raw.extend((slot..slot + f.width()).map(|s| f64::from(x[[i, s]])));
                }
            }
            slot += f.width();
        }
        graph_rows.push(raw);
        let out = model.network.forward_one(x.row(i).as_slice().unwrap());
        ours.push(out.iter().map(|v| f64::from(*v)).collect());
    }
    assert!(graph_rows.len() > 20);
    assert_close(
        "penguins",
        &onnxruntime(onnx, &graph_rows, dir),
        &ours,
        1e-5,
    );
}

/// A multipart upload of fixture files to `url`/v1/models.
async fn upload(
    c: &reqwest::Client,
    url: &str,
    parts: &[(&str, &str)],
    query: &str,
) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new();
    for (part, file) in parts {
        let bytes = std::fs::read(fixture(file)).unwrap_or_else(|_| std::fs::read(file).unwrap());
        form = form.part(
            part.to_string(),
            reqwest::multipart::Part::bytes(bytes).file_name(file.to_string()),
        );
    }
    let r = c
        .post(format!("{url}/v1/models{query}"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn versions(c: &reqwest::Client, url: &str) -> usize {
    let v: Value = c
        .get(format!("{url}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["models"].as_array().unwrap().len()
}

for_each_backend!(
    #[tokio::test]
    bad_uploads_are_4xx_with_stable_codes_and_register_nothing
);
async fn bad_uploads_are_4xx_with_stable_codes_and_register_nothing(backend: Backend) {
    let d = Daemon::start_on(
        backend,
        &format!(
            "[model]\ninitial = \"{}\"\n",
            crate::common::shared_model().display()
        ),
        &[],
    );
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(fixture("torch_relu_opset13.onnx")).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let truncated = truncated.to_str().unwrap().to_string();
    let corrupt = dir.path().join("corrupt.safetensors");
    std::fs::write(&corrupt, b"not a model").unwrap();
    let corrupt = corrupt.to_str().unwrap().to_string();
    let before = versions(&c, &d.url).await;
    // (multipart file parts, status, error code, text the message names)
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![
                ("onnx", "refuse_conv.onnx"),
                ("data", "torch_relu_opset13.csv"),
            ],
            400,
            "unsupported_onnx_op",
            "/conv/Conv",
        ),
        (
            vec![
                ("onnx", "refuse_unsupported_op.onnx"),
                ("data", "torch_relu_opset13.csv"),
            ],
            400,
            "unsupported_onnx_op",
            "/Sin",
        ),
        (
            vec![
                ("onnx", "refuse_two_outputs.onnx"),
                ("data", "torch_relu_opset13.csv"),
            ],
            400,
            "unsupported_onnx_graph",
            "logits, hidden",
        ),
        (
            vec![
                ("onnx", "torch_relu_opset13.onnx"),
                ("data", "torch_regression_opset17.csv"),
            ],
            400,
            "unsupported_onnx_graph",
            "takes 6 features",
        ),
        (
            vec![("onnx", &truncated), ("data", "torch_relu_opset13.csv")],
            400,
            "invalid_onnx",
            "truncated",
        ),
        (
            vec![("onnx", "torch_relu_opset13.onnx")],
            400,
            "invalid_upload",
            "`data` part",
        ),
        (
            vec![("artifact", &corrupt)],
            400,
            "invalid_artifact",
            "corrupt.safetensors",
        ),
        (
            vec![("model", "torch_relu_opset13.onnx")],
            400,
            "invalid_upload",
            "unknown part `model`",
        ),
    ];
    for (parts, status, code, names) in cases {
        let (s, body) = upload(&c, &d.url, &parts, "?activate=true").await;
        assert_eq!(s, status, "{parts:?}: {body}");
        assert_eq!(body["error"]["code"], code, "{parts:?}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(names),
            "{body}"
        );
    }
    let (s, body) = upload(
        &c,
        &d.url,
        &[
            ("onnx", "torch_relu_opset13.onnx"),
            ("data", "torch_relu_opset13.csv"),
        ],
        "?activate=maybe",
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    assert_eq!(
        versions(&c, &d.url).await,
        before,
        "a refused upload registers nothing"
    );
    let live: Value = c
        .get(format!("{}/v1/model", d.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(live["version"], "1");
}

for_each_backend!(
    #[tokio::test]
    an_upload_over_max_upload_bytes_is_413
);
async fn an_upload_over_max_upload_bytes_is_413(backend: Backend) {
    let d = Daemon::start_on(
        backend,
        &format!(
            "[server]\nmax_upload_bytes = 2000\n[model]\ninitial = \"{}\"\n",
            crate::common::shared_model().display()
        ),
        &[],
    );
    let c = client();
    let (s, body) = upload(
        &c,
        &d.url,
        &[
            ("onnx", "torch_relu_opset13.onnx"),
            ("data", "torch_relu_opset13.csv"),
        ],
        "",
    )
    .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (413, Some("upload_too_large")),
        "{body}"
    );
    // A body far over the limit, sent without waiting for an answer: the client
    // still reads the 413 (the daemon discards what it refused rather than
    // resetting the connection under the client).
    let big = reqwest::multipart::Form::new().part(
        "artifact",
        reqwest::multipart::Part::bytes(vec![b'x'; 3 << 20]).file_name("big.safetensors"),
    );
    let r = c
        .post(format!("{}/v1/models", d.url))
        .multipart(big)
        .send()
        .await
        .expect("the 413 reaches the client");
    assert_eq!(r.status().as_u16(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upload_too_large", "{body}");
    assert_eq!(versions(&c, &d.url).await, 1);
}

/// Features of the torch_relu fixture's CSV row `i` as a request object.
fn torch_rows() -> Vec<(Value, String)> {
    let mut reader = csv::Reader::from_path(fixture("torch_relu_opset13.csv")).unwrap();
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let mut features = serde_json::Map::new();
            let mut label = String::new();
            for (h, v) in headers.iter().zip(r.iter()) {
                if h == "label" {
                    label = v.to_string();
                } else {
                    features.insert(h.clone(), json!(v.parse::<f64>().unwrap()));
                }
            }
            (Value::Object(features), label)
        })
        .collect()
}

for_each_backend!(
    #[tokio::test]
    an_imported_model_serves_under_load_while_another_version_is_uploaded_and_activated
);
async fn an_imported_model_serves_under_load_while_another_version_is_uploaded_and_activated(
    backend: Backend,
) {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = import("torch_relu_opset13", dir.path());
    let d = Daemon::start_on(
        backend,
        &format!(
            "[model]\ninitial = \"{}\"\n[online]\nenabled = false\n",
            path.display()
        ),
        &[],
    );
    let rows = std::sync::Arc::new(torch_rows());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (url, rows, stop) = (d.url.clone(), rows.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            let mut answered = Vec::new();
            let mut i = w;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = c
                    .post(format!("{url}/v1/predict"))
                    .json(&json!({"features": rows[i % rows.len()].0}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap();
                assert_eq!(status, 200, "{body}");
                answered.push((
                    body["id"].as_str().unwrap().to_string(),
                    body["model_version"].as_str().unwrap().to_string(),
                ));
                i += 8;
            }
            answered
        }));
    }
    let c = client();
    crate::common::eventually(
        "500 predictions",
        std::time::Duration::from_secs(10),
        || async { crate::common::metric(&c, &d.url, "steward_predictions_total").await > 500.0 },
    )
    .await;
    let (s, body) = upload(
        &c,
        &d.url,
        &[
            ("onnx", "torch_relu_opset13.onnx"),
            ("data", "torch_relu_opset13.csv"),
        ],
        "?activate=true",
    )
    .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(
        (body["version"].as_str(), body["active"].as_bool()),
        (Some("2"), Some(true))
    );
    assert_eq!(body["import"]["check"]["rows"], 300);
    crate::common::eventually(
        "2000 predictions",
        std::time::Duration::from_secs(10),
        || async { crate::common::metric(&c, &d.url, "steward_predictions_total").await > 2000.0 },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = Vec::new();
    for w in workers {
        answered.extend(w.await.unwrap());
    }
    let db = d.db();
    let (status, _dir, _) = d.stop();
    assert!(status.success());
    let logged: std::collections::HashMap<String, String> = db
        .rows::<(String, String)>("SELECT id, model_version FROM predictions")
        .await
        .into_iter()
        .collect();
    assert_eq!(logged.len(), answered.len(), "every answer is logged");
    let mut by_version = std::collections::BTreeMap::<&str, usize>::new();
    for (id, version) in &answered {
        assert_eq!(
            logged.get(id),
            Some(version),
            "the log row names the version that answered {id}"
        );
        *by_version.entry(version.as_str()).or_default() += 1;
    }
    assert!(
        by_version.get("1").is_some_and(|n| *n > 0) && by_version.get("2").is_some_and(|n| *n > 0),
        "{by_version:?}"
    );
}

for_each_backend!(
    #[tokio::test]
    an_imported_mlp_learns_online_and_is_retrained_behind_the_gate
);
async fn an_imported_mlp_learns_online_and_is_retrained_behind_the_gate(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = import("torch_tanh_opset17", dir.path());
    let d = Daemon::start_on(
        backend,
        &format!(
            "[model]\ninitial = \"{}\"\n[online]\nrepublish_every = 100\n[training]\nmin_rows = 100\nfolds = 3\ndrift_retrain = false\n",
            path.display()
        ),
        &[],
    );
    let c = client();
    let mut reader = csv::Reader::from_path(fixture("torch_tanh_opset17.csv")).unwrap();
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    for chunk in rows.chunks(100) {
        let instances: Vec<Value> = chunk
            .iter()
            .map(|r| {
                let mut m = serde_json::Map::new();
                for (h, v) in headers.iter().zip(r.iter()).filter(|(h, _)| *h != "label") {
                    m.insert(h.clone(), json!(v.parse::<f64>().unwrap()));
                }
                Value::Object(m)
            })
            .collect();
        let (s, body) = crate::common::post(
            &c,
            &format!("{}/v1/predict", d.url),
            &json!({"instances": instances}),
        )
        .await;
        assert_eq!(s, 200, "{body}");
        let feedback: Vec<Value> = body["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .zip(chunk)
            .map(|(p, r)| json!({"id": p["id"], "label": r.iter().next_back().unwrap()}))
            .collect();
        let (s, body) = crate::common::post(
            &c,
            &format!("{}/v1/feedback", d.url),
            &json!({"feedback": feedback}),
        )
        .await;
        assert_eq!(s, 202, "{body}");
    }
    // Online: the learner publishes a minor version of the imported one.
    crate::common::eventually(
        "an online version",
        std::time::Duration::from_secs(30),
        || async {
            crate::common::get_json(&c, &format!("{}/v1/model", d.url)).await["version"]
                .as_str()
                .is_some_and(|v| v.starts_with("1."))
        },
    )
    .await;
    let live = crate::common::get_json(&c, &format!("{}/v1/model", d.url)).await;
    assert!(live["online_updates"].as_u64().unwrap() >= 100, "{live}");
    assert_eq!(
        live["activations"],
        json!(["tanh", "leaky_relu"]),
        "online copies keep the imported activations"
    );
    // Retrain: the gate compares a candidate with the imported model.
    let (s, started) = crate::common::post(&c, &format!("{}/v1/retrain", d.url), &json!({})).await;
    assert_eq!(s, 202, "{started}");
    let run_url = format!("{}/v1/retrain/{}", d.url, started["id"]);
    crate::common::eventually(
        "the retrain run",
        std::time::Duration::from_secs(120),
        || async { crate::common::get_json(&c, &run_url).await["state"] != "running" },
    )
    .await;
    let run = crate::common::get_json(&c, &run_url).await;
    // The gate decided on held-out rows against the imported model's online copy
    // (this small, separable data set keeps the imported network ahead).
    assert!(
        matches!(run["state"].as_str(), Some("promoted" | "rejected")),
        "{run}"
    );
    assert!(
        run["live_version"].as_str().unwrap().starts_with("1."),
        "{run}"
    );
    assert!(
        run["live_metric"].is_number() && run["candidate_metric"].is_number(),
        "{run}"
    );
    assert!(run["holdout_rows"].as_u64().unwrap() > 0, "{run}");
}
