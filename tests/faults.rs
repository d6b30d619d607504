//! Faults and hostile input: a full disk, duplicate labels, slow and idle
//! connections, non-finite numbers, a second instance on the same database.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{
    assert_sound, client, count, eventually, metric, penguin, Api, Daemon, InProcess, Tmpfs,
};

/// The database on a 1,500 KB tmpfs: predictions and feedback fill it, the writer
/// and the feedback committer meet SQLITE_FULL, then the file system is grown.
/// Every answered prediction must be in the database after a clean stop (or be
/// counted as dropped), feedback for an answered id is never called unknown, and
/// readiness comes back once there is space again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_no_answered_prediction_and_readiness_returns() {
    // A new database's schema and its migrations' WAL take most of it (about
    // 840 KB before migration 0008; with 0008's table, 1,200 KB was full before
    // the first prediction; with 0009's artifact bytes, 1,300 KB was; with
    // 0010's table, 1,400 KB was); the rest fills up with the log.
    let disk = Tmpfs::mount("1500k");
    let d = Daemon::start(&format!(
        "[database]\nurl = \"sqlite://{}/steward.db\"\n",
        disk.path.display()
    ));
    let c = client();
    let mut answered = 0i64;
    let mut first_ids = Vec::new();
    let mut feedback_status = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..60 {
        let instances: Vec<Value> = (0..50).map(|_| penguin()).collect();
        let (status, body) = d.predict(&c, &json!({"instances": instances})).await;
        assert_eq!(status, 200, "{body}");
        let predictions = body["predictions"].as_array().unwrap();
        answered += predictions.len() as i64;
        let id = predictions[0]["id"].as_str().unwrap().to_string();
        let (status, body) = d.feedback(&c, &json!({"id": id, "label": "Gentoo"})).await;
        assert!(
            status == 202 || status == 503,
            "feedback for an answered id: {status} {body}"
        );
        *feedback_status.entry(status).or_default() += 1;
        first_ids.push(id);
    }
    assert!(
        feedback_status.contains_key(&503),
        "the disk never filled up: {feedback_status:?}"
    );
    let full = c.get(format!("{}/readyz", d.url)).send().await.unwrap();
    assert_eq!(
        full.status().as_u16(),
        503,
        "not ready while the disk is full"
    );

    disk.resize("64m");
    eventually(
        "readiness once space is back",
        Duration::from_secs(60),
        || async {
            c.get(format!("{}/readyz", d.url))
                .send()
                .await
                .map(|r| r.status().as_u16() == 200)
                .unwrap_or(false)
        },
    )
    .await;
    // Labels for every id answered while the disk was full are taken now.
    let items: Vec<Value> = first_ids
        .iter()
        .map(|id| json!({"id": id, "label": "Gentoo"}))
        .collect();
    let (status, body) = d.feedback(&c, &json!({"feedback": items})).await;
    assert_eq!(status, 202, "{body}");
    let written = metric(&c, &d.url, "steward_log_rows_written_total").await;
    let dropped = metric(&c, &d.url, "steward_log_rows_dropped_total").await;

    let db = disk.path.join("steward.db");
    let (status, _dir, log) = d.stop();
    assert!(status.success(), "{log}");
    assert_eq!(dropped, 0.0, "nothing had to be dropped: {log}");
    assert_eq!(written as i64, answered);
    assert_eq!(count(&db, "predictions").await, answered, "{log}");
    assert_eq!(count(&db, "feedback").await, first_ids.len() as i64);
    assert_sound(&db).await;
}

/// One prediction labelled 1,024 times in one request used to be stored once,
/// counted 1,024 times and learned from 1,024 times (enough to flip the model).
/// Now such a batch is refused whole, and the same label sent again in later
/// requests is a retry: stored and learned once, counted as unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_prediction_labelled_over_and_over_is_stored_and_learned_once() {
    let d = Daemon::start("");
    let c = client();
    let (_, one) = d.predict(&c, &json!({"features": penguin()})).await;
    let id = one["id"].as_str().unwrap().to_string();
    assert_eq!(one["prediction"], "Gentoo");

    let copies = vec![json!({"id": id, "label": "Adelie"}); 1024];
    let (status, body) = d.feedback(&c, &json!({"feedback": copies})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "duplicate_prediction");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("feedback[0] and feedback[1] both label prediction"),
        "{body}"
    );
    assert_eq!(metric(&c, &d.url, "steward_feedback_total").await, 0.0);

    for i in 0..300 {
        let (status, body) = d.feedback(&c, &json!({"id": id, "label": "Adelie"})).await;
        assert_eq!(status, 202, "{body}");
        let unchanged = i64::from(i > 0);
        assert_eq!(
            body,
            json!({"accepted": 1, "replaced": 0, "unchanged": unchanged})
        );
    }
    // A correction is stored and learned once more; the online learner takes
    // labels in order, so once a marker label is learned every earlier one is.
    let (status, body) = d
        .feedback(&c, &json!({"id": id, "label": "Chinstrap"}))
        .await;
    assert_eq!((status, body["replaced"].clone()), (202, json!(1)));
    let (_, marker) = d.predict(&c, &json!({"features": penguin()})).await;
    let (status, _) = d
        .feedback(&c, &json!({"id": marker["id"], "label": "Gentoo"}))
        .await;
    assert_eq!(status, 202);
    eventually(
        "the marker label to be learned",
        Duration::from_secs(30),
        || async {
            metric(&c, &d.url, "steward_online_updates_total").await
                + metric(&c, &d.url, "steward_online_labels_skipped_total").await
                >= 3.0
        },
    )
    .await;
    assert_eq!(
        metric(&c, &d.url, "steward_online_updates_total").await,
        3.0,
        "Adelie once, the correction once, the marker once"
    );
    assert_eq!(metric(&c, &d.url, "steward_feedback_total").await, 3.0);
    assert_eq!(
        metric(&c, &d.url, "steward_feedback_unchanged_total").await,
        299.0
    );
    let (status, dir, log) = d.stop();
    assert!(status.success(), "{log}");
    let pool = crate::common::open_db(&dir.path().join("data/steward.db")).await;
    let (label, revisions): (String, i64) =
        sqlx::query_as("SELECT label, revisions FROM feedback WHERE prediction_id = ?")
            .bind(&id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((label.as_str(), revisions), ("\"Chinstrap\"", 1));
    pool.close().await;
}

/// The daemon's address without the scheme.
fn addr(d: &impl Api) -> String {
    d.base().trim_start_matches("http://").to_string()
}

/// Reads what the server sends until it closes the connection (or resets it),
/// at most `limit`; `None` if it was still open then.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buf = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => None,
    }
}

/// Reads one HTTP response head and its body (by Content-Length).
async fn read_response(s: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n == 1, "closed after {:?}", String::from_utf8_lossy(&buf));
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).await.unwrap();
    (head, String::from_utf8(body).unwrap())
}

/// A connection that sends half a request head, and one that sends nothing, are
/// closed once `server.header_timeout_secs` passes (they were kept for as long as
/// the client liked), and counted; the daemon goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_not_sent_in_time_is_cut_off() {
    let d = Daemon::start("[server]\nlisten = \"127.0.0.1:0\"\nheader_timeout_secs = 0.5\n");
    let mut half = TcpStream::connect(addr(&d)).await.unwrap();
    half.write_all(b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: applica")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(addr(&d)).await.unwrap();
    for s in [&mut half, &mut silent] {
        assert!(
            read_until_closed(s, Duration::from_secs(20))
                .await
                .is_some(),
            "the connection was still open after 20 s"
        );
    }
    let c = client();
    let n = metric(
        &c,
        &d.url,
        "steward_connections_total{outcome=\"header_timeout\"}",
    )
    .await;
    assert!(n >= 2.0, "{n}");
    // On a new connection: the one /metrics came over is itself closed once it
    // has been idle for the 0.5 s header timeout (by design), and on a loaded
    // machine the next request may be sent just as that happens.
    let (status, _) = d.predict(&client(), &json!({"features": penguin()})).await;
    assert_eq!(status, 200);
}

/// At `server.max_connections`, idle connections (here: sockets that never sent
/// a byte, which once exhausted the file descriptors and starved everyone) make
/// room for a new one: the longest-idle is closed and counted. When every
/// connection is busy with a request, a new one is refused at once with 503
/// `too_many_connections` and counted, and served again once one frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_idle_sockets_make_room_and_busy_ones_refuse_fast() {
    let d = Daemon::start(
        "[server]\nlisten = \"127.0.0.1:0\"\nmax_connections = 8\nrequest_timeout_secs = 60\n",
    );
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(addr(&d)).await.unwrap());
    }
    // Accepted in the order they connected: all eight hold a slot by the time
    // this request's connection is accepted.
    let r = reqwest::Client::new()
        .get(format!("{}/readyz", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "a normal request still gets through"
    );
    assert!(
        read_until_closed(&mut idle[0], Duration::from_secs(10))
            .await
            .is_some(),
        "the longest-idle connection was closed to make room"
    );
    drop(idle);

    // Eight connections in the middle of a request: each has sent its head
    // with `Expect: 100-continue`, and the `100 Continue` it got back shows that
    // its request is being served (reading the body).
    let mut busy = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(addr(&d)).await.unwrap();
        s.write_all(
            b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\nexpect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
        let mut got = [0u8; 25];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got))
            .await
            .expect("100 Continue within 10 s")
            .unwrap();
        assert_eq!(&got, b"HTTP/1.1 100 Continue\r\n\r\n");
        busy.push(s);
    }
    let mut over = TcpStream::connect(addr(&d)).await.unwrap();
    over.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut over).await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections");

    // One busy client goes away: its request ends, its slot frees.
    drop(busy.pop());
    let c = client();
    eventually("a free slot", Duration::from_secs(20), || async {
        c.get(format!("{}/readyz", d.url))
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200)
    })
    .await;
    // Read back over a connection that is served: seven of the eight slots are
    // still busy, so a new connection can itself meet a full house for a moment
    // (refused, or reset if it sent its request before reading the 503).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        if let Ok(r) = c.get(format!("{}/metrics", d.url)).send().await {
            if r.status().as_u16() == 200 {
                if let Ok(t) = r.text().await {
                    break t;
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/metrics not answered in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for outcome in ["refused", "evicted"] {
        let series = format!("steward_connections_total{{outcome=\"{outcome}\"}} ");
        let n: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{text}"));
        assert!(n >= 1.0, "{series} {n}");
    }
}

/// Under an open-file limit of 128 (as systemd's 1,024 was, for 1,100 idle
/// sockets) the daemon lowers its connection cap to fit and says so; 400 idle
/// sockets then never exhaust its descriptors, and requests are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_beyond_the_open_file_limit_never_starve_requests() {
    let dir = tempfile::tempdir().unwrap();
    crate::common::write_config(dir.path(), "");
    let mut child = crate::common::ChildGuard::spawn(
        std::process::Command::new("prlimit")
            .args([
                "--nofile=128:128",
                crate::common::BIN,
                "serve",
                "--config",
                "steward.toml",
            ])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    let stderr = child.0.stderr.take().unwrap();
    let (log, addr) = crate::common::watch_log(stderr).unwrap();
    assert!(
        log.lock()
            .unwrap()
            .contains("lowered to fit the open-file limit"),
        "{}",
        log.lock().unwrap()
    );
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    let c = client();
    for path in ["/readyz", "/metrics"] {
        let r = c.get(format!("http://{addr}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let (status, body) = crate::common::post(
        &c,
        &format!("http://{addr}/v1/predict"),
        &json!({"features": penguin()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(!log.lock().unwrap().contains("cannot accept"));
}

/// A body declared over `server.max_body_bytes` with `Expect: 100-continue` is
/// refused before the client sends it (it used to be invited with
/// `100 Continue`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_before_it_is_sent() {
    let d = InProcess::start("").await;
    let mut s = TcpStream::connect(addr(&d)).await.unwrap();
    s.write_all(
        b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 100000000\r\nexpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "body_too_large");
}

/// A second `serve` on the same database stops before it changes anything,
/// naming the running daemon; it used to mark the running daemon's retrain as
/// interrupted before it failed to bind.
#[tokio::test]
async fn a_second_daemon_on_the_same_database_refuses_to_start() {
    let d = Daemon::start("");
    let pool = crate::common::open_db(&d.db_path()).await;
    sqlx::query("INSERT INTO retrain_runs (started, state, trigger) VALUES (?, 'running', 'api')")
        .bind(steward::time::now_millis())
        .execute(&pool)
        .await
        .unwrap();
    let (code, _, stderr) =
        crate::common::run(&["serve", "--config", "steward.toml"], d.dir.path());
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("is in use by another steward (pid {}", d.pid())),
        "{stderr}"
    );
    let state: String = sqlx::query_scalar("SELECT state FROM retrain_runs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(state, "running", "the running daemon's run is untouched");
    pool.close().await;
    let c = client();
    let (status, _) = d.predict(&c, &json!({"features": penguin()})).await;
    assert_eq!(status, 200);
}

/// Numbers far beyond anything the model was trained on, up to the largest a
/// JSON number can be: never an answer with null probabilities (as 1e40 once
/// got, with `anomaly: false`). Either a finite answer flagged as an anomaly
/// with a finite score, or 422 `non_finite_feature` naming the feature.
#[tokio::test]
async fn extreme_numbers_get_a_finite_flagged_answer_or_a_clear_refusal() {
    let d = Daemon::start("");
    let c = client();
    let numeric = [
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
    ];
    let mut refused = 0;
    for feature in numeric {
        for magnitude in [1e10, 1e20, 1e30, 1e36, 1e38, 1e40, 1e100, 1e300] {
            for sign in [1.0, -1.0] {
                let mut row = penguin();
                row[feature] = json!(sign * magnitude);
                let (status, body) = d.predict(&c, &json!({"features": row})).await;
                let case = format!("{feature} = {}: {body}", sign * magnitude);
                match status {
                    200 => {
                        let p = body["probabilities"].as_object().unwrap();
                        assert!(p.values().all(Value::is_number), "{case}");
                        assert_eq!(body["anomaly"], true, "{case}");
                        assert!(body["anomaly_score"].is_number(), "{case}");
                    }
                    422 => {
                        refused += 1;
                        assert_eq!(body["error"]["code"], "non_finite_feature", "{case}");
                        let message = body["error"]["message"].as_str().unwrap();
                        assert!(message.contains(&format!("`{feature}`")), "{case}");
                    }
                    other => panic!("{other}: {case}"),
                }
            }
        }
    }
    eprintln!("refused {refused} of 64");
    assert!(refused >= 8, "1e100 and 1e300 cannot be encoded: {refused}");
    // Nothing refused was logged.
    let db = d.db_path();
    let answered = metric(&c, &d.url, "steward_predictions_total").await as i64;
    let (status, _dir, _) = d.stop();
    assert!(status.success());
    assert_eq!(count(&db, "predictions").await, answered);
}

/// A retraining thread cannot be interrupted; a stop during one used to wait for
/// it (26 s in one run, past the shutdown deadline, and SIGKILL under a longer
/// one) and leave the run `running`. Now the daemon exits once its data is
/// written, and records the run as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_retrain_does_not_wait_for_it() {
    let d = Daemon::start("[training]\nmax_rows = 50000\nfolds = 10\n");
    let c = client();
    let labels = ["Adelie", "Gentoo", "Chinstrap"];
    for round in 0..6 {
        let (status, body) = d
            .predict(&c, &json!({"instances": vec![penguin(); 1000]}))
            .await;
        assert_eq!(status, 200, "{body}");
        let items: Vec<Value> = body["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, p)| json!({"id": p["id"], "label": labels[(i + round) % 3]}))
            .collect();
        for chunk in items.chunks(1000) {
            let (status, body) = d.feedback(&c, &json!({"feedback": chunk})).await;
            assert_eq!(status, 202, "{body}");
        }
    }
    let r = c
        .post(format!("{}/v1/retrain", d.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let run: Value = r.json().await.unwrap();
    // Training 6,000 rows over a 10-fold grid takes seconds; the stop comes
    // while it runs (checked, not assumed).
    let state = d.get_json(&c, &format!("/v1/retrain/{}", run["id"])).await;
    assert_eq!(state["state"], "running", "{state}");
    let db = d.db_path();
    let (status, _dir, log) = d.stop();
    assert!(status.success(), "{log}");
    let pool = crate::common::open_db(&db).await;
    let (state, error): (String, Option<String>) =
        sqlx::query_as("SELECT state, error FROM retrain_runs")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!(state, "failed", "{log}");
    assert_eq!(
        error.as_deref(),
        Some("the daemon stopped before the run finished")
    );
    assert!(
        log.contains("a retraining run was still going at the stop"),
        "{log}"
    );
}

/// What hyper's HTTP/1 parser refuses before a request exists gets its status
/// and an empty body (documented in docs/API.md), the connection is closed,
/// and the daemon goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_http_parser_refuses_get_a_json_error_and_the_daemon_serves_on() {
    let d = InProcess::start("").await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let long_target = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    for (request, status, code) in [
        (big.as_str(), "431", "header_too_large"),
        (long_target.as_str(), "431", "header_too_large"),
        (
            "POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n",
            "400",
            "malformed_request",
        ),
        ("NOT HTTP AT ALL\r\n\r\n", "400", "malformed_request"),
    ] {
        let mut s = TcpStream::connect(addr(&d)).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut s, Duration::from_secs(10))
            .await
            .expect("closed after the answer");
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{status}: {answer}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: Value = serde_json::from_str(body).expect("a JSON body");
        assert_eq!(v["error"]["code"], code, "{body}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    // After an answered request on the same connection, too.
    let mut s = TcpStream::connect(addr(&d)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nNOT HTTP\r\n\r\n")
        .await
        .unwrap();
    let answers = read_until_closed(&mut s, Duration::from_secs(10))
        .await
        .expect("closed after the answers");
    let (first, second) = answers.split_once("HTTP/1.1 400").expect("two answers");
    assert!(first.starts_with("HTTP/1.1 200") && first.ends_with(r#"{"status":"ok"}"#));
    assert!(second.contains(r#""code":"malformed_request""#), "{second}");
    let c = client();
    let (status, _) = d.predict(&c, &json!({"features": penguin()})).await;
    assert_eq!(status, 200);
    let series = "steward_connections_total{outcome=\"malformed\"}";
    assert_eq!(metric(&c, &d.url, series).await, 5.0);
}
