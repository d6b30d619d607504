//! Nothing lost on a clean stop; nothing corrupted by a crash.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::common::{client, count, penguin, Api, Daemon};

/// Runs `clients` loops of single predictions until `stop`; returns the 2xx count.
fn load(
    url: &str,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicU64>, Vec<tokio::task::JoinHandle<()>>) {
    let ok = Arc::new(AtomicU64::new(0));
    let tasks = (0..clients)
        .map(|_| {
            let (ok, stop, url) = (ok.clone(), stop.clone(), format!("{url}/v1/predict"));
            tokio::spawn(async move {
                let c = client();
                let body = json!({"features": penguin()});
                while !stop.load(Ordering::Relaxed) {
                    match c.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            // Count only answers fully received.
                            if r.bytes().await.is_ok() {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            })
        })
        .collect();
    (ok, tasks)
}

/// Waits until `n` answers are in, at most 60 s.
async fn until_answered(ok: &AtomicU64, n: u64) {
    crate::common::eventually(
        &format!("{n} answers under load"),
        Duration::from_secs(60),
        || async { ok.load(Ordering::Relaxed) >= n },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_logs_every_answered_prediction() {
    let d = Daemon::start("");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, tasks) = load(&d.url, 16, stop.clone());
    // Let the load run until a good number of answers are in.
    until_answered(&ok, 2_000).await;
    let db = d.db_path();
    let (status, _dir, log) = tokio::task::spawn_blocking(move || d.stop()).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(status.success(), "{status:?}\n{log}");
    let answered = ok.load(Ordering::Relaxed) as i64;
    assert_eq!(count(&db, "predictions").await, answered, "{log}");
    assert!(log.contains("\"dropped\":0"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_leaves_a_sound_database_and_serving_resumes() {
    let d = Daemon::start("");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, tasks) = load(&d.url, 16, stop.clone());
    until_answered(&ok, 2_000).await;
    d.signal("KILL");
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let mut d = d;
    crate::common::wait(&mut d.child, Duration::from_secs(10));
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().unwrap());
    drop(d);

    let db = dir.path().join("data/steward.db");
    crate::common::assert_sound(&db).await;
    let logged = count(&db, "predictions").await;
    assert!(logged > 0 && logged <= ok.load(Ordering::Relaxed) as i64);

    // Restart on the same files: the registered model loads and serving resumes.
    let d = Daemon::start_in(dir, &[]);
    let r = client()
        .post(format!("{}/v1/predict", d.url))
        .json(&json!({"features": penguin()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["model_version"], "1");
    assert!(
        d.log_text().contains("loaded the active model"),
        "{}",
        d.log_text()
    );
    // The config still names model.initial, which only seeds a first start.
    assert!(
        d.log_text().contains("model.initial is ignored"),
        "{}",
        d.log_text()
    );
}
