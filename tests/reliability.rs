//! Nothing lost on a clean stop; nothing corrupted by a crash (and the rollups
//! still count exactly the rows kept).

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
    // The rollups were committed with the rows they count: per minute, the
    // same numbers.
    let pool = crate::common::open_db(&db).await;
    let per_minute = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (i64, i64)>(sql)
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    };
    let rows = per_minute(
        "SELECT (time / 60000) * 60000, COUNT(*) FROM predictions GROUP BY 1 ORDER BY 1",
    )
    .await;
    let rollups =
        per_minute("SELECT minute, SUM(predictions) FROM prediction_rollups GROUP BY 1 ORDER BY 1")
            .await;
    assert_eq!(rollups, rows);
    pool.close().await;

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
    // And the overview counts the rows kept and the one answered since.
    crate::common::eventually(
        "the new row in the overview",
        Duration::from_secs(10),
        || {
            let d = &d;
            async move {
                let overview = d.get_json(&client(), "/v1/overview?minutes=10").await;
                overview["totals"]["predictions"] == logged + 1
            }
        },
    )
    .await;
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
