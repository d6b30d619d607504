//! Daemon behaviour: the log queue under a locked database, SIGHUP reload, and
//! systemd notifications.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{client, count, metric, penguin, post, Api, Daemon};

/// Polls `f` until it returns true, at most 30 s.
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, f: impl FnMut() -> F) {
    crate::common::eventually(what, Duration::from_secs(30), f).await
}

/// The queue-full policy: with the database locked by another process the writer
/// cannot commit; requests are still answered, rows beyond the queue are dropped
/// and counted, readiness fails, and everything recovers when the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_keeps_serving_counts_dropped_rows_and_recovers() {
    let d =
        Daemon::start("[database]\nqueue_capacity = 4\nqueue_wait_secs = 0.02\nbatch_rows = 2\n");
    let c = client();
    let url = d.url.clone();
    let locker = crate::common::open_db(&d.db_path()).await;
    let mut lock = locker.acquire().await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut *lock)
        .await
        .unwrap();

    let sent = 30;
    for _ in 0..sent {
        let (status, _) = post(
            &c,
            &format!("{url}/v1/predict"),
            &json!({"features": penguin()}),
        )
        .await;
        assert_eq!(status, 200);
    }
    let dropped = metric(&c, &url, "steward_log_rows_dropped_total").await;
    assert!(dropped > 0.0, "a full queue must drop and count");
    assert!(dropped < f64::from(sent), "the queue holds some rows");
    // The heartbeat write waits out the 5 s busy timeout, then readiness fails.
    let r = c.get(format!("{url}/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "database_unwritable");
    assert!(
        d.log_text().contains("cannot write the prediction log"),
        "{}",
        d.log_text()
    );

    sqlx::query("ROLLBACK").execute(&mut *lock).await.unwrap();
    drop(lock);
    locker.close().await;
    eventually("readiness after the lock is released", || async {
        c.get(format!("{url}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
            == 200
    })
    .await;
    eventually("the queue to drain", || async {
        metric(&c, &url, "steward_log_queue_depth").await == 0.0
    })
    .await;

    let db = d.db_path();
    let (status, _dir, log) = d.stop();
    assert!(status.success(), "{log}");
    assert_eq!(
        count(&db, "predictions").await,
        i64::from(sent) - dropped as i64,
        "every row not counted as dropped is stored"
    );
}

#[tokio::test]
async fn sighup_applies_max_batch_and_names_keys_that_need_a_restart() {
    let d = Daemon::start("[server]\nlisten = \"127.0.0.1:0\"\nmax_batch = 2\n");
    let c = client();
    let three = json!({"instances": [penguin(), penguin(), penguin()]});
    let (status, body) = d.predict(&c, &three).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("batch_too_large"))
    );

    let config = d.dir.path().join("steward.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "max_batch = 2",
        "max_batch = 5\nrequest_timeout_secs = 7.77",
    );
    std::fs::write(&config, text).unwrap();
    d.signal("HUP");
    let url = d.url.clone();
    eventually("max_batch = 5 to apply", || async {
        post(&c, &format!("{url}/v1/predict"), &three).await.0 == 200
    })
    .await;
    // The new settings apply before the reload's log lines are written: wait for
    // those too.
    eventually("the reload to be logged", || async {
        let log = d.log_text();
        log.contains("SIGHUP: config reloaded") && log.contains("take effect only after a restart")
    })
    .await;
    let log = d.log_text();
    assert!(log.contains("server.request_timeout_secs"), "{log}");

    // An invalid file is refused and the running config kept.
    std::fs::write(&config, "[server]\nmax_batch = 0\n").unwrap();
    d.signal("HUP");
    eventually("the invalid reload to be logged", || async {
        d.log_text().contains("keeping the running one")
    })
    .await;
    assert_eq!(post(&c, &format!("{url}/v1/predict"), &three).await.0, 200);
}

#[tokio::test]
async fn systemd_hears_ready_watchdog_status_and_stopping() {
    let sock_dir = tempfile::tempdir().unwrap();
    let path = sock_dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let d = Daemon::start_with_env(
        "",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut heard = String::new();
    let mut buf = [0u8; 4096];
    while !(heard.contains("READY=1") && heard.contains("WATCHDOG=1")) {
        let n = sock.recv(&mut buf).expect("a notification");
        heard.push_str(&String::from_utf8_lossy(&buf[..n]));
        heard.push('\n');
    }
    assert!(
        heard.contains("STATUS=serving model version 1 on 127.0.0.1:"),
        "{heard}"
    );
    let (status, _, _) = d.stop();
    assert!(status.success());
    loop {
        let n = sock.recv(&mut buf).expect("STOPPING=1 before exit");
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
}
