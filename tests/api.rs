//! The HTTP API against a real daemon (in this process where no process
//! boundary is needed): answers, bad input, auth, metrics. Every test runs on
//! SQLite and on PostgreSQL (`for_each_backend!`).

use serde_json::{json, Value};

use crate::common::{client, for_each_backend, penguin, Api, Backend, Daemon, InProcess};

for_each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    predicts_one_row_and_a_batch_and_logs_every_answer
);
async fn predicts_one_row_and_a_batch_and_logs_every_answer(backend: Backend) {
    let d = InProcess::start_on(backend, "").await;
    let c = client();
    let (status, one) = d.predict(&c, &json!({"features": penguin()})).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["model_version"], "1");
    assert_eq!(one["prediction"], "Gentoo");
    let probs = one["probabilities"].as_object().unwrap();
    assert_eq!(probs.len(), 3);
    let total: f64 = probs.values().map(|p| p.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-5, "{one}");
    assert_eq!(one["id"].as_str().unwrap().len(), 36);

    let mut missing = penguin();
    missing["sex"] = Value::Null;
    missing["bill_length_mm"] = Value::Null;
    let (status, batch) = d
        .predict(&c, &json!({"instances": [penguin(), missing]}))
        .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["model_version"], "1");
    let preds = batch["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 2);
    assert_ne!(preds[0]["id"], preds[1]["id"]);

    let db = d.db();
    let _dir = d.stop().await;
    assert_eq!(db.count("predictions").await, 3);
    // The log row holds what was sent and exactly what was answered.
    let (version, features, output): (String, String, String) =
        sqlx::query_as("SELECT model_version, features, output FROM predictions WHERE id = $1")
            .bind(one["id"].as_str().unwrap())
            .fetch_one(&mut db.connect().await)
            .await
            .unwrap();
    assert_eq!(version, "1");
    assert_eq!(serde_json::from_str::<Value>(&features).unwrap(), penguin());
    let output: Value = serde_json::from_str(&output).unwrap();
    assert_eq!(
        output,
        json!({"prediction": one["prediction"], "probabilities": one["probabilities"]})
    );
}

for_each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    feedback_is_joined_by_id_and_a_second_label_replaces_the_first
);
async fn feedback_is_joined_by_id_and_a_second_label_replaces_the_first(backend: Backend) {
    let d = InProcess::start_on(backend, "").await;
    let c = client();
    let (_, one) = d.predict(&c, &json!({"features": penguin()})).await;
    let id = one["id"].as_str().unwrap().to_string();
    // Sent at once: the prediction may still be in the log queue.
    let (status, body) = d.feedback(&c, &json!({"id": id, "label": "Gentoo"})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"accepted": 1, "replaced": 0, "unchanged": 0}));
    let (status, body) = d
        .feedback(&c, &json!({"feedback": [{"id": id, "label": "Adelie"}]}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"accepted": 1, "replaced": 1, "unchanged": 0}));

    let db = d.db();
    let _dir = d.stop().await;
    let (label, revisions): (String, i64) =
        sqlx::query_as("SELECT label, revisions FROM feedback WHERE prediction_id = $1")
            .bind(&id)
            .fetch_one(&mut db.connect().await)
            .await
            .unwrap();
    assert_eq!((label.as_str(), revisions), ("\"Adelie\"", 1));
}

/// Each case: a request a client can get wrong, the status and code it must get.
fn bad_requests(
    url: &str,
    max_batch: usize,
) -> Vec<(&'static str, reqwest::RequestBuilder, u16, &'static str)> {
    let c = client();
    let predict = format!("{url}/v1/predict");
    let json_post = |body: String| {
        c.post(&predict)
            .header("content-type", "application/json")
            .body(body)
    };
    let with = |k: &str, v: Value| {
        let mut p = penguin();
        p[k] = v;
        json!({"features": p}).to_string()
    };
    let mut missing = penguin();
    missing.as_object_mut().unwrap().remove("sex");
    let feedback = |token: Option<&str>, body: Value| {
        let r = c.post(format!("{url}/v1/feedback")).json(&body);
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    };
    let mut unknown = penguin();
    unknown["wingspan"] = json!(3);
    let silence = |body: Value| {
        c.post(format!("{url}/v1/silences"))
            .bearer_auth("s3cret")
            .json(&body)
    };
    let in_a_day = "2099-01-01T00:00:00Z";
    // GET query parameters out of range, misspelt or repeated.
    let bad_parameters = [
        ("an overview of no minutes", "/v1/overview?minutes=0"),
        (
            "an overview longer than a week",
            "/v1/overview?minutes=10081",
        ),
        (
            "an overview of a fraction of minutes",
            "/v1/overview?minutes=1.5",
        ),
        ("an overview of words", "/v1/overview?minutes=sixty"),
        (
            "an overview with a misspelt parameter",
            "/v1/overview?minute=5",
        ),
        (
            "an overview with minutes twice",
            "/v1/overview?minutes=5&minutes=6",
        ),
        (
            "a drift history of more than 500 checks",
            "/v1/drift/history?checks=501",
        ),
        (
            "a drift history of negative checks",
            "/v1/drift/history?checks=-1",
        ),
        ("alerts in an unknown state", "/v1/alerts?state=lost"),
    ]
    .map(|(name, path)| {
        (
            name,
            c.get(format!("{url}{path}")),
            422,
            "invalid_parameter",
        )
    });
    let mut cases = vec![
        (
            "malformed JSON",
            json_post("{\"features\": {".into()),
            400,
            "malformed_json",
        ),
        (
            "wrong content type",
            c.post(&predict)
                .header("content-type", "text/plain")
                .body(json!({"features": penguin()}).to_string()),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            c.post(&predict)
                .body(json!({"features": penguin()}).to_string()),
            415,
            "unsupported_media_type",
        ),
        ("empty body", json_post(String::new()), 400, "empty_body"),
        (
            "body over the limit",
            json_post(format!(
                "{{\"features\": {{\"island\": \"{}\"}}}}",
                "x".repeat(5000)
            )),
            413,
            "body_too_large",
        ),
        (
            "missing feature",
            json_post(json!({"features": missing}).to_string()),
            422,
            "missing_feature",
        ),
        (
            "unknown feature",
            json_post(json!({"features": unknown}).to_string()),
            422,
            "unknown_feature",
        ),
        (
            "string for a number",
            json_post(with("body_mass_g", json!("heavy"))),
            422,
            "invalid_feature_type",
        ),
        (
            "number for a category",
            json_post(with("island", json!(3))),
            422,
            "invalid_feature_type",
        ),
        (
            "number too large for f64",
            json_post(
                with("body_mass_g", json!(0)).replace("\"body_mass_g\":0", "\"body_mass_g\":1e999"),
            ),
            400,
            "number_out_of_range",
        ),
        (
            "deeply nested JSON",
            json_post(format!(
                "{{\"features\": {{\"island\": {}{}}}}}",
                "[".repeat(300),
                "]".repeat(300)
            )),
            400,
            "nesting_too_deep",
        ),
        (
            "features not an object",
            json_post("{\"features\": [1, 2]}".into()),
            422,
            "invalid_request",
        ),
        (
            "neither features nor instances",
            json_post("{}".into()),
            422,
            "invalid_request",
        ),
        (
            "unknown top-level field",
            json_post(json!({"features": penguin(), "extra": 1}).to_string()),
            422,
            "invalid_request",
        ),
        (
            "empty batch",
            json_post(json!({"instances": []}).to_string()),
            422,
            "empty_batch",
        ),
        (
            "batch over max_batch",
            json_post(json!({"instances": vec![penguin(); max_batch + 1]}).to_string()),
            422,
            "batch_too_large",
        ),
        (
            "one bad instance in a batch",
            json_post(json!({"instances": [penguin(), {"island": "Biscoe"}]}).to_string()),
            422,
            "missing_feature",
        ),
        (
            "unknown route",
            c.get(format!("{url}/v1/nothing")),
            404,
            "not_found",
        ),
        ("wrong method", c.get(&predict), 405, "method_not_allowed"),
        (
            "feedback for an unknown id",
            feedback(Some("s3cret"), json!({"id": "nope", "label": "Adelie"})),
            404,
            "unknown_prediction",
        ),
        (
            "feedback with a bad label",
            feedback(Some("s3cret"), json!({"id": "nope", "label": ["x"]})),
            422,
            "invalid_label",
        ),
        (
            "a feature named twice",
            json_post(
                with("island", json!("Biscoe"))
                    .replacen("\"island\":\"Biscoe\"", "\"island\":\"Dream\",\"island\":\"Biscoe\"", 1),
            ),
            422,
            "duplicate_feature",
        ),
        (
            "a number too far out for the model",
            json_post(with("body_mass_g", json!(1e300))),
            422,
            "non_finite_feature",
        ),
        (
            "a number too far out, in a batch",
            json_post(
                json!({"instances": [penguin(), serde_json::from_str::<Value>(&with("bill_depth_mm", json!(-1e300))).unwrap()["features"]]})
                    .to_string(),
            ),
            422,
            "non_finite_feature",
        ),
        (
            "a category value far too long",
            json_post(with("island", json!("B".repeat(2000)))),
            422,
            "value_too_long",
        ),
        (
            "a path parameter that is not UTF-8",
            c.get(format!("{url}/v1/retrain/%FF%FE")),
            400,
            "invalid_path",
        ),
        (
            "feedback labelling one prediction twice",
            feedback(
                Some("s3cret"),
                json!({"feedback": [{"id": "a", "label": "Adelie"}, {"id": "b", "label": "Adelie"}, {"id": "a", "label": "Adelie"}]}),
            ),
            422,
            "duplicate_prediction",
        ),
        (
            "a silence matcher with an unknown field",
            silence(json!({"matchers": [{"name": "rule", "value": "x", "regex": true}], "ends_at": in_a_day})),
            422,
            "invalid_request",
        ),
        (
            "a silence ending at an impossible offset",
            silence(json!({"matchers": [{"name": "rule", "value": "x"}], "ends_at": "2099-01-01T00:00:00+99:00"})),
            422,
            "invalid_silence",
        ),
        (
            "a silence with too many matchers",
            silence(json!({"matchers": vec![json!({"name": "rule", "value": "x"}); 33], "ends_at": in_a_day})),
            422,
            "invalid_silence",
        ),
        (
            "feedback without the token",
            feedback(None, json!({"id": "x", "label": "Adelie"})),
            401,
            "unauthorized",
        ),
        (
            "feedback with a wrong token",
            feedback(Some("guess"), json!({"id": "x", "label": "Adelie"})),
            401,
            "unauthorized",
        ),
    ];
    cases.extend(bad_parameters);
    cases
}

for_each_backend!(
    #[tokio::test]
    bad_requests_get_a_stable_code_log_nothing_and_the_daemon_keeps_serving
);
async fn bad_requests_get_a_stable_code_log_nothing_and_the_daemon_keeps_serving(backend: Backend) {
    let max_batch = 8;
    let d = Daemon::start_on(
        backend,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmax_batch = {max_batch}\nmax_body_bytes = 4096\n"
        ),
        &[("STEWARD_TOKEN", "s3cret")],
    );
    let c = client();
    let mut good = 0;
    for (name, request, status, code) in bad_requests(&d.url, max_batch) {
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{name}");
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
        assert!(
            !body["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{name}: {body}"
        );
        // Still serving.
        let (ok, _) = d.predict(&c, &json!({"features": penguin()})).await;
        assert_eq!(ok, 200, "after {name}");
        good += 1;
    }
    let metrics = crate::common::metrics_text(&c, &d.url).await;
    assert!(
        metrics.contains("steward_http_requests_total{route=\"/v1/predict\",status=\"422\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "steward_http_requests_total{{route=\"/v1/predict\",status=\"200\"}} {good}\n"
        )),
        "{metrics}"
    );
    let (status, _, _) = d.stop_and_count_check(good).await;
    assert!(status.success());
}

impl Daemon {
    /// Stops the daemon and asserts the predictions table holds `expected` rows.
    pub async fn stop_and_count_check(
        self,
        expected: i64,
    ) -> (std::process::ExitStatus, tempfile::TempDir, String) {
        let db = self.db();
        let (status, dir, log) = self.stop();
        assert_eq!(db.count("predictions").await, expected, "{log}");
        (status, dir, log)
    }
}

for_each_backend!(
    #[tokio::test]
    feedback_with_the_token_is_accepted
);
async fn feedback_with_the_token_is_accepted(backend: Backend) {
    let d = Daemon::start_on(backend, "", &[("STEWARD_TOKEN", "s3cret")]);
    let c = client();
    let (_, one) = d.predict(&c, &json!({"features": penguin()})).await;
    let r = c
        .post(format!("{}/v1/feedback", d.url))
        .bearer_auth("s3cret")
        .json(&json!({"id": one["id"], "label": "Gentoo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // Read endpoints need no token.
    assert_eq!(
        c.get(format!("{}/v1/model", d.url))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

for_each_backend!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    model_card_registry_health_and_metrics
);
async fn model_card_registry_health_and_metrics(backend: Backend) {
    let d = InProcess::start_on(backend, "").await;
    let c = client();
    let card: Value = d.get_json(&c, "/v1/model").await;
    assert_eq!(card["version"], "1");
    assert_eq!(card["task"], "classification");
    assert_eq!(card["classes"], json!(["Adelie", "Chinstrap", "Gentoo"]));
    assert_eq!(card["schema"].as_array().unwrap().len(), 6);
    // The bundled model is trained with the default budget: pruned and int8.
    assert_eq!(card["bits"], 8, "{card}");
    assert!(
        card["metrics"]["accuracy"].as_f64().unwrap() > 0.9,
        "{card}"
    );
    let form = card["serving"]["form"].as_str().unwrap().to_string();
    assert!(form == "f32" || form == "int8", "{card}");
    assert!(card["serving"]["f32_ns"].as_f64().unwrap() > 0.0, "{card}");
    if form == "int8" {
        assert!(
            card["serving"]["int8_ns"].as_f64() < card["serving"]["f32_ns"].as_f64(),
            "never a form slower than f32: {card}"
        );
    }

    let models: Value = d.get_json(&c, "/v1/models").await;
    let list = models["models"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["status"], "active");
    assert_eq!(list[0]["source"], "import");

    assert_eq!(
        c.get(format!("{}/healthz", d.url))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let ready: Value = d.get_json(&c, "/readyz").await;
    assert_eq!(ready, json!({"status": "ready", "model_version": "1"}));

    for _ in 0..3 {
        d.predict(&c, &json!({"features": penguin()})).await;
    }
    let m = crate::common::metrics_text(&c, &d.url).await;
    for needle in [
        "steward_http_requests_total{route=\"/v1/predict\",status=\"200\"} 3\n",
        "steward_http_request_duration_seconds_count{route=\"/v1/predict\",status=\"200\"} 3\n",
        "steward_http_request_duration_seconds_bucket{route=\"/v1/predict\",status=\"200\",le=\"+Inf\"} 3\n",
        "steward_predictions_total 3\n",
        "steward_log_queue_depth ",
        "steward_log_rows_dropped_total 0\n",
        "steward_inference_duration_seconds_count 3\n",
        "# TYPE steward_inference_duration_seconds histogram\n",
        "steward_build_info{version=\"",
        "# TYPE process_cpu_seconds_total counter\n",
    ] {
        assert!(m.contains(needle), "missing {needle:?} in\n{m}");
    }
    // The version is a label, never a number: as a float "1.10" would read 1.1.
    assert!(!m.contains("steward_model_version"), "{m}");
    let needle = format!("steward_model_info{{version=\"1\",form=\"{form}\"}} 1\n");
    assert!(m.contains(&needle), "missing {needle:?} in\n{m}");
    // Every family is announced once, with its type, before its samples.
    let types: Vec<&str> = m.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let mut names: Vec<&str> = types.iter().filter_map(|l| l.split(' ').nth(2)).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "a family announced twice in\n{m}");
    // The process series describe the daemon's process (here, the test's own).
    let pid_rss = rss_bytes(std::process::id());
    let rss = crate::common::metric(&c, &d.url, "process_resident_memory_bytes").await;
    assert!(
        (rss - pid_rss).abs() < 0.5 * pid_rss,
        "process_resident_memory_bytes {rss} vs /proc VmRSS {pid_rss}"
    );
    // SQLite's and malloc's own accounts: the database has pages cached, and
    // the heap holds at least the model. (PostgreSQL's cache is in its server,
    // not the daemon.)
    if backend == Backend::Sqlite {
        let sqlite = crate::common::metric(&c, &d.url, "steward_database_memory_bytes").await;
        assert!(sqlite > 10_000.0, "steward_database_memory_bytes {sqlite}");
    }
    let heap = crate::common::metric(&c, &d.url, "steward_heap_in_use_bytes").await;
    assert!(
        heap > 100_000.0 && heap < pid_rss * 4.0,
        "steward_heap_in_use_bytes {heap}"
    );
    let start = crate::common::metric(&c, &d.url, "process_start_time_seconds").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= now && start > now - 600.0,
        "start {start}, now {now}"
    );
}

/// The resident memory of process `pid` from /proc, in bytes.
fn rss_bytes(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024.0
}

for_each_backend!(
    #[tokio::test]
    every_answer_has_a_request_id_and_the_access_log_names_it
);
/// Every answer carries `x-request-id`: the client's when it is usable, else a
/// new UUID; with `log.access` the request's log line has the same id, its
/// route and its status.
async fn every_answer_has_a_request_id_and_the_access_log_names_it(backend: Backend) {
    let d = Daemon::start_on(backend, "", &[("STEWARD_LOG__ACCESS", "true")]);
    let c = client();
    let predict = |id: Option<&str>| {
        let mut r = c
            .post(format!("{}/v1/predict", d.url))
            .json(&json!({"features": penguin()}));
        if let Some(id) = id {
            r = r.header("x-request-id", id);
        }
        r.send()
    };
    let given = predict(Some("order-4711/attempt-2")).await.unwrap();
    assert_eq!(given.status().as_u16(), 200);
    assert_eq!(given.headers()["x-request-id"], "order-4711/attempt-2");
    let made = predict(None).await.unwrap();
    let made_id = made.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&made_id).is_ok(), "{made_id}");
    for unusable in ["has space", &"x".repeat(129)] {
        let r = predict(Some(unusable)).await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "{unusable:?} became {id}"
        );
    }
    // Errors have one too.
    let r = c.get(format!("{}/v1/nothing", d.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.headers().contains_key("x-request-id"));

    let (status, _, log) = d.stop();
    assert!(status.success());
    let access: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "steward::access")
        .collect();
    let line = |id: &str| {
        access
            .iter()
            .find(|v| v["fields"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no access line for {id}: {access:?}"))
            .clone()
    };
    let given = line("order-4711/attempt-2");
    assert_eq!(given["fields"]["route"], "/v1/predict");
    assert_eq!(given["fields"]["method"], "POST");
    assert_eq!(given["fields"]["status"], 200);
    assert!(given["fields"]["duration_us"].is_u64());
    assert_eq!(line(&made_id)["fields"]["status"], 200);
    assert!(access
        .iter()
        .any(|v| v["fields"]["route"] == "unmatched" && v["fields"]["status"] == 404));
}
