//! Several replicas on one PostgreSQL database (issue 19, docs/CLUSTER.md):
//! real daemon processes on loopback sharing a throwaway PostgreSQL server
//! (`common::pg`), each with a directory of its own (no shared file system: a
//! replica loads versions made elsewhere from the registry's bytes).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::alerts::{config as alert_config, feature_mails, shifted, subject, wait_feature_mail};
use crate::common::pg::Postgres;
use crate::common::{client, metric, penguin, Api, Daemon, Stopped};
use crate::monitoring::rows;
use crate::smtp::{SmtpOptions, SmtpServer};

/// The sections of a replica on `url`: a 2 s lease and a 0.5 s poll, so that
/// the tests see a takeover and a fan-out in seconds.
fn replica(url: &str, extra: &str) -> String {
    format!(
        "[database]\nurl = \"{url}\"\n[cluster]\nlease_secs = 2\npoll_secs = 0.5\n\
         [training]\ndrift_retrain = false\n{extra}"
    )
}

/// Starts `n` replicas with config `sections`, one after another: the first
/// makes the first model from the shared artifact; the others are given no
/// model and serve the registry's active version, loaded from its bytes (their
/// directories have no file of it).
fn start_replicas(n: usize, sections: &str) -> Vec<Daemon> {
    (0..n)
        .map(|i| match i {
            0 => Daemon::start(sections),
            _ => Daemon::start(&format!("{sections}[model]\ninitial = \"\"\n")),
        })
        .collect()
}

/// `GET /v1/model`'s `cluster` object of `d`.
async fn cluster(c: &reqwest::Client, d: &Daemon) -> Value {
    d.get_json(c, "/v1/model").await["cluster"].clone()
}

/// The version `d` serves.
async fn serving(c: &reqwest::Client, d: &Daemon) -> String {
    d.get_json(c, "/v1/model").await["version"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits up to `limit` until exactly one of `replicas` says it leads and every
/// one names it; returns its index.
async fn one_leader(c: &reqwest::Client, replicas: &[&Daemon], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let mut views = Vec::new();
        for d in replicas {
            views.push(cluster(c, d).await);
        }
        let leaders: Vec<usize> = (0..views.len())
            .filter(|i| views[*i]["leader"] == true)
            .collect();
        if let [i] = leaders[..] {
            let name = &views[i]["replica"];
            if views.iter().all(|v| &v["leader_replica"] == name) {
                return i;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not exactly one agreed leader within {limit:?}: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Rows in `table` of the database at `url`.
async fn count(url: &str, table: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// Sends `n` predictions spread round-robin over `urls`, `parallel` at a time;
/// returns the 2xx answers.
async fn spread(c: &reqwest::Client, urls: &[String], n: usize, parallel: usize) -> usize {
    let body = serde_json::json!({ "features": penguin() });
    let mut ok = 0;
    let mut sent = 0;
    while sent < n {
        let batch = parallel.min(n - sent);
        let mut answers = tokio::task::JoinSet::new();
        for i in 0..batch {
            let req = c
                .post(format!("{}/v1/predict", urls[(sent + i) % urls.len()]))
                .json(&body)
                .send();
            answers
                .spawn(async move { req.await.map(|r| r.status().is_success()).unwrap_or(false) });
        }
        while let Some(answer) = answers.join_next().await {
            ok += usize::from(answer.unwrap_or(false));
        }
        sent += batch;
    }
    ok
}

/// Three replicas: one leads; predictions spread over all are each logged once
/// (rows = 2xx after a clean stop); the replicas that did not make the first
/// version load it from the registry; kill -9 of the leader hands the lead to
/// another within the lease, and nothing it acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_log_every_answer_and_a_killed_leader_is_replaced_within_the_lease() {
    let Some(pg) = Postgres::launch() else { return };
    let url = pg.url();
    let c = client();
    let mut all = start_replicas(3, &replica(&url, ""));
    for d in &all[1..] {
        assert_eq!(serving(&c, d).await, "1");
        assert!(
            d.dir().join("data/models/v1.safetensors").exists(),
            "v1 written from the registry into {}",
            d.dir().display()
        );
    }
    let refs: Vec<&Daemon> = all.iter().collect();
    let leader = one_leader(&c, &refs, Duration::from_secs(10)).await;

    let urls: Vec<String> = all.iter().map(|d| d.url.clone()).collect();
    let ok = spread(&c, &urls, 900, 12).await;
    assert_eq!(ok, 900);
    // Every replica answered its share and logs it: wait until all is written,
    // then kill the leader outright.
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&url, "predictions").await < ok as i64 {
        assert!(Instant::now() < deadline, "rows not written within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed = all.remove(leader);
    let killed_at = Instant::now();
    killed.signal("KILL");
    let refs: Vec<&Daemon> = all.iter().collect();
    let next = one_leader(&c, &refs, Duration::from_secs(5)).await;
    let takeover = killed_at.elapsed();
    // The old lease (2 s) runs out first; one tick (≤ 0.5 s) and a poll of
    // this loop later the successor is seen.
    assert!(
        takeover < Duration::from_millis(3_500),
        "takeover took {takeover:?}"
    );
    eprintln!("kill -9 of the leader: replica {next} of the rest led after {takeover:?}");

    let urls: Vec<String> = all.iter().map(|d| d.url.clone()).collect();
    let more = spread(&c, &urls, 300, 12).await;
    assert_eq!(more, 300);
    for d in all {
        let (status, _, log) = d.stop();
        assert!(status.success(), "{log}");
    }
    assert_eq!(count(&url, "predictions").await, (ok + more) as i64);
    let rolled: i64 = {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let n =
            sqlx::query_scalar("SELECT CAST(SUM(predictions) AS BIGINT) FROM prediction_rollups")
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        n
    };
    assert_eq!(
        rolled,
        (ok + more) as i64,
        "the rollups count every row once"
    );
}

/// Waits until every one of `all` serves `version`: within the poll (0.5 s)
/// plus a warm-up and this loop's own requests, else fails naming `what`.
async fn served_everywhere(c: &reqwest::Client, all: &[Daemon], version: &str, what: &str) {
    let start = Instant::now();
    loop {
        let mut versions = Vec::new();
        for d in all {
            versions.push(serving(c, d).await);
        }
        if versions.iter().all(|v| v == version) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_millis(1_500),
            "{what}: {versions:?} after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A retrain promoted on the leader, and then each version made active there,
/// is served by every replica within `cluster.poll_secs`, also just after
/// their LISTEN connections were cut, and
/// also when no notification comes at all (the poll alone). Prints the time
/// from the activation's answer to the version served everywhere, median and
/// worst of 20.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_on_the_leader_is_served_everywhere_within_the_poll() {
    let Some(pg) = Postgres::launch() else { return };
    let url = pg.url();
    let c = client();
    let sections = replica(&url, "[online]\nenabled = false\n").replace(
        "[training]\n",
        "[training]\nmin_rows = 100\nfolds = 3\nmax_regression = 0.05\n",
    );
    let all = start_replicas(3, &sections);
    let refs: Vec<&Daemon> = all.iter().collect();
    let leader = &all[one_leader(&c, &refs, Duration::from_secs(10)).await];
    // A retrain on the leader, on 400 labelled predictions, promoted through
    // the gate: version 2, served by every replica within the poll of the
    // run's end (seen by polling the run every 100 ms).
    let (inputs, labels) = crate::learning::labelled(400, |_| {});
    crate::learning::feed(leader, &c, &inputs, &labels).await;
    let id = crate::learning::retrain(leader, &c).await;
    let run = crate::learning::finished(leader, &c, id).await;
    assert_eq!(run["state"], "promoted", "{run}");
    assert_eq!(run["candidate_version"], "2", "{run}");
    let promoted = Instant::now();
    served_everywhere(&c, &all, "2", "the promoted retrain").await;
    let retrained = promoted.elapsed();

    let mut times = Vec::new();
    for round in 0..20 {
        if round == 0 {
            // Cut every replica's LISTEN connection just before this round's
            // activation: the change must still arrive within the poll, by the
            // poll or by the listener sqlx reconnects (which here was back in
            // time to hear it).
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let cut: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE query LIKE 'LISTEN%'",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            pool.close().await;
            assert_eq!(cut.len(), 3, "one listener per replica");
        }
        let version = if round % 2 == 0 { "1" } else { "2" };
        let r = c
            .post(format!("{}/v1/models/{version}/activate", leader.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
        let activated = Instant::now();
        served_everywhere(&c, &all, version, &format!("round {round}")).await;
        times.push(activated.elapsed());
    }
    // A change whose notification is lost altogether: the registry's active
    // version changed by SQL, with no pg_notify. Only the poll can bring it.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("UPDATE models SET status = 'inactive' WHERE status = 'active'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE models SET status = 'active', \
         activated = (SELECT MAX(activated) + 1 FROM models) WHERE version = '1'",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    pool.close().await;
    let changed = Instant::now();
    served_everywhere(&c, &all, "1", "unannounced change").await;
    let unannounced = changed.elapsed();
    let cut_round = times[0];
    times.sort();
    eprintln!(
        "activation to served everywhere (3 replicas, poll 0.5 s): median {:?}, worst {:?} of 20; \
         with the listeners cut {:?}; with no notification at all {:?}; \
         a promoted retrain {retrained:?} after its end was seen",
        times[10], times[19], cut_round, unannounced
    );
    for d in all {
        let (status, _, log) = d.stop();
        assert!(status.success(), "{log}");
    }
}

/// PostgreSQL stopped for 10 s under load, then started: replicas keep
/// answering from memory, readiness goes down and comes back, and after a clean
/// stop every acknowledged prediction is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_ten_seconds_under_load_loses_nothing_acknowledged() {
    let Some(mut pg) = Postgres::launch() else {
        return;
    };
    let url = pg.url();
    let c = client();
    let d = Daemon::start(&replica(&url, ""));
    let urls = vec![d.url.clone()];
    let mut ok = spread(&c, &urls, 200, 8).await;
    let (status, answer) = d
        .predict(&c, &serde_json::json!({ "features": penguin() }))
        .await;
    assert_eq!(status, 200);
    ok += 1;
    let label = serde_json::json!({ "id": answer["id"], "label": "Gentoo" });
    pg.stop();
    let down = Instant::now();
    let mut saw_not_ready = false;
    while down.elapsed() < Duration::from_secs(10) {
        ok += spread(&c, &urls, 50, 8).await;
        let ready = c
            .get(format!("{}/readyz", d.url))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        saw_not_ready |= ready == 503;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_not_ready, "readiness stayed up with the database down");
    // A label cannot be stored now: the client is told to retry.
    let (status, body) = d.feedback(&c, &label).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("database_unavailable")),
        "{body}"
    );
    pg.start();
    let back = Instant::now();
    loop {
        let ready = c
            .get(format!("{}/readyz", d.url))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if ready == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "not ready again 15 s after the restart; log:\n{}",
            d.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("ready again {:?} after PostgreSQL started", back.elapsed());
    ok += spread(&c, &urls, 100, 8).await;
    let (status, _, log) = d.stop();
    assert!(status.success(), "{log}");
    assert_eq!(count(&url, "predictions").await, ok as i64, "{log}");
}

/// A drift incident seen by three replicas gives one mail: the drift checks,
/// the alert rules and the mailer run on the leader alone, and the checks read
/// every replica's predictions from the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drift_incident_with_three_replicas_gives_one_mail() {
    let Some(pg) = Postgres::launch() else { return };
    let url = pg.url();
    let server = SmtpServer::start(SmtpOptions::default());
    let c = client();
    let alerts = alert_config(server.port(), "");
    let all = start_replicas(3, &format!("{}{alerts}", replica(&url, "")));
    let refs: Vec<&Daemon> = all.iter().collect();
    one_leader(&c, &refs, Duration::from_secs(10)).await;
    // The shifted burst, a third to each replica.
    let burst = rows(120, shifted);
    for (i, part) in burst.chunks(40).enumerate() {
        let (status, body) = all[i]
            .predict(&c, &serde_json::json!({ "instances": part }))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let mails = wait_feature_mail(&server, 1);
    // A mail that should not come cannot be awaited: with every replica running
    // its own checks, rules and mailer (checked by breaking the leader gating)
    // all three mails had come together with the first; 4 s more is ample.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mails = server.messages().len().max(mails.len());
    let all_mails = server.messages();
    let drift = feature_mails(&all_mails);
    assert_eq!(
        drift.len(),
        1,
        "{mails} mails: {:?}",
        all_mails.iter().map(subject).collect::<Vec<_>>()
    );
    for d in all {
        let (status, _, log) = d.stop();
        assert!(status.success(), "{log}");
    }
}

/// Online learning and the retrain schedule with three replicas: labels sent
/// to any replica are learned by the leader, read from the database; after
/// kill -9 of the leader the next one goes on from where it stopped, and no
/// label is learned twice: the learners' steps add up to the stored labels,
/// and the leaders' concept-drift detectors read each label once, the
/// followers' none. The schedule (every 2 s) starts one run per tick, on the leader alone, and
/// goes on under the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_sent_to_any_replica_are_learned_once_across_a_killed_leader() {
    let Some(pg) = Postgres::launch() else { return };
    let url = pg.url();
    let c = client();
    // Every run is skipped (too few rows): the schedule is what is tested.
    let scheduled = replica(&url, "").replace(
        "[training]\n",
        "[training]\nschedule = \"*/2 * * * * *\"\nmin_rows = 100000\n",
    );
    let mut all = start_replicas(3, &scheduled);
    let refs: Vec<&Daemon> = all.iter().collect();
    let leader = one_leader(&c, &refs, Duration::from_secs(10)).await;
    let burst = rows(300, |_| {});
    let (status, body) = all[0]
        .predict(&c, &serde_json::json!({ "instances": burst }))
        .await;
    assert_eq!(status, 200, "{body}");
    let labels: Vec<Value> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| serde_json::json!({ "id": p["id"], "label": p["prediction"] }))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&url, "predictions").await < 300 {
        assert!(Instant::now() < deadline, "predictions not written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Labels in batches of 10, each batch to the next replica.
    let send = |replicas: &[Daemon], part: &[Value]| {
        let requests: Vec<_> = part
            .chunks(10)
            .enumerate()
            .map(|(i, batch)| {
                c.post(format!("{}/v1/feedback", replicas[i % replicas.len()].url))
                    .json(&serde_json::json!({ "feedback": batch }))
                    .send()
            })
            .collect();
        async move {
            for r in requests {
                assert_eq!(r.await.unwrap().status(), 202);
            }
        }
    };
    let steps = |d: &Daemon| {
        let (c, url) = (c.clone(), d.url.clone());
        async move { metric(&c, &url, "steward_online_updates_total").await as i64 }
    };
    send(&all, &labels[..150]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while steps(&all[leader]).await < 150 {
        assert!(
            Instant::now() < deadline,
            "the leader did not learn 150 labels"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The cursor is stored after the labels are queued: wait for it too.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let behind = "SELECT COUNT(*) FROM feedback f, learner_cursor c \
                  WHERE f.time > c.time OR (f.time = c.time AND f.prediction_id > c.prediction_id)";
    while sqlx::query_scalar::<_, i64>(behind)
        .fetch_one(&pool)
        .await
        .unwrap()
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "the cursor did not reach the last label"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut learned = steps(&all[leader]).await;
    assert_eq!(learned, 150);
    // The concept-drift detectors read them on the leader too, once each.
    let detected = |d: &Daemon| {
        let (c, url) = (c.clone(), d.url.clone());
        async move { metric(&c, &url, "steward_concept_labels_total").await as i64 }
    };
    assert_eq!(detected(&all[leader]).await, 150);
    for (i, d) in all.iter().enumerate() {
        if i != leader {
            assert_eq!(steps(d).await, 0, "a follower learned");
            assert_eq!(detected(d).await, 0, "a follower's detectors read labels");
        }
    }
    // The first leader's schedule has started a run (ticks are 2 s apart).
    while sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM retrain_runs")
        .fetch_one(&pool)
        .await
        .unwrap()
        == 0
    {
        assert!(Instant::now() < deadline, "no scheduled run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let killed_at = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    all.remove(leader).signal("KILL");
    let refs: Vec<&Daemon> = all.iter().collect();
    let next = one_leader(&c, &refs, Duration::from_secs(5)).await;
    send(&all, &labels[150..]).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while steps(&all[next]).await < 150 {
        assert!(
            Instant::now() < deadline,
            "the new leader did not learn 150 labels"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the feed's settling time and poll: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    learned += steps(&all[next]).await;
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM feedback")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((learned, stored), (300, 300), "steps against stored labels");
    assert_eq!(
        detected(&all[next]).await,
        150,
        "the new leader's detectors"
    );
    // The schedule ran before the kill and runs after it, one run per tick
    // (two replicas running it would start two runs in one 2 s tick). The new
    // leader's first tick comes up to 2 s after it leads.
    let after_kill = format!("SELECT COUNT(*) FROM retrain_runs WHERE started > {killed_at}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sqlx::query_scalar::<_, i64>(&after_kill)
        .fetch_one(&pool)
        .await
        .unwrap()
        == 0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let runs: Vec<(i64,)> = sqlx::query_as("SELECT started FROM retrain_runs ORDER BY started")
        .fetch_all(&pool)
        .await
        .unwrap();
    let starts: Vec<i64> = runs.into_iter().map(|(t,)| t).collect();
    assert!(starts.iter().any(|t| *t < killed_at), "{starts:?}");
    let logs: String = all
        .iter()
        .flat_map(|d| {
            d.log_text()
                .lines()
                .filter(|l| l.contains("retrain") || l.contains("leading"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        starts.iter().any(|t| *t > killed_at),
        "{starts:?} (killed at {killed_at}); the replicas' lines:\n{logs}"
    );
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] > 1_000,
            "two runs in one tick: {starts:?}"
        );
    }
    pool.close().await;
    for d in all {
        let (status, _, log) = d.stop();
        assert!(status.success(), "{log}");
    }
}

/// Sends predictions from 16 clients to `d` until `n` are answered, then kills
/// it with -9; gives the ids of the answered ones.
async fn answered_until_killed(d: Daemon, n: usize) -> (Vec<String>, Stopped) {
    let c = client();
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (c, url, answered) = (c.clone(), d.url.clone(), answered.clone());
        load.spawn(async move {
            let body = serde_json::json!({ "features": penguin() });
            loop {
                match c.post(format!("{url}/v1/predict")).json(&body).send().await {
                    Ok(r) if r.status().is_success() => {
                        let Ok(v) = r.json::<Value>().await else {
                            return;
                        };
                        let id = v["id"].as_str().expect("an answer's id").to_string();
                        answered.lock().unwrap().push(id);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
    }
    while answered.lock().unwrap().len() < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = tokio::task::block_in_place(|| d.kill());
    while load.join_next().await.is_some() {}
    let ids = answered.lock().unwrap().clone();
    (ids, killed)
}

/// How many of `ids` are in `predictions`.
async fn stored(url: &str, ids: &[String]) -> usize {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM predictions WHERE id = ANY($1)")
        .bind(ids)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n as usize
}

/// With `database.answer_after_commit`, a replica killed with -9 under load has
/// lost no prediction it answered: every 2xx answer's row is in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_lost_nothing_it_answered_when_answers_wait_for_the_commit() {
    let Some(pg) = Postgres::launch() else { return };
    let url = pg.url();
    let sections = replica(&url, "").replace(
        "[database]\n",
        "[database]\nanswer_after_commit = true\nspool_dir = \"\"\n",
    );
    let (ids, _killed) = answered_until_killed(Daemon::start(&sections), 3_000).await;
    let rows = count(&url, "predictions").await as usize;
    assert_eq!(stored(&url, &ids).await, ids.len(), "answered rows missing");
    // Requests cut by the kill may have been committed without an answer.
    assert!(
        rows <= ids.len() + 16,
        "{} answered, {rows} stored",
        ids.len()
    );
}

/// On the default settings (a spool in `data/spool`), a replica killed with -9
/// under load has lost nothing it answered: restarted, it writes the rows that
/// were only in its spool, once each. Then, with PostgreSQL stopped, it still
/// answers (from memory, each batch synced to its spool), reports not ready,
/// is killed again, and once PostgreSQL and the replica are back those
/// answers are stored too. The rollups count every stored row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_lost_nothing_it_answered_through_its_spool() {
    let Some(mut pg) = Postgres::launch() else {
        return;
    };
    let url = pg.url();
    let sections = replica(&url, "");
    let (ids, killed) = answered_until_killed(Daemon::start(&sections), 3_000).await;
    let at_kill = stored(&url, &ids).await;
    let d = killed.start(&[]);
    let limit = Duration::from_secs(30);
    let t = Instant::now();
    while stored(&url, &ids).await < ids.len() {
        assert!(
            t.elapsed() < limit,
            "the spool was not written within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "kill -9 under load: {} answered, {at_kill} stored at the kill, all after the restart ({:?})",
        ids.len(),
        t.elapsed()
    );
    let rows = count(&url, "predictions").await as usize;
    assert!(
        rows <= ids.len() + 16,
        "{} answered, {rows} stored",
        ids.len()
    );
    assert!(
        d.log_text()
            .contains("writing prediction log rows the last run left in the spool"),
        "{}",
        d.log_text()
    );

    // PostgreSQL away: answered from memory, durable in the spool.
    tokio::task::block_in_place(|| pg.stop());
    let c = client();
    let body = serde_json::json!({ "features": penguin() });
    let mut away = Vec::new();
    for _ in 0..200 {
        let r = c
            .post(format!("{}/v1/predict", d.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let v: Value = r.json().await.unwrap();
        away.push(v["id"].as_str().unwrap().to_string());
    }
    let ready = c.get(format!("{}/readyz", d.url)).send().await.unwrap();
    assert_eq!(ready.status(), 503, "ready without its database");
    let killed = tokio::task::block_in_place(|| d.kill());
    tokio::task::block_in_place(|| pg.start());
    let d = killed.start(&[]);
    let t = Instant::now();
    while stored(&url, &away).await < away.len() {
        assert!(
            t.elapsed() < limit,
            "the spool was not written within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows = count(&url, "predictions").await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let counted: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(predictions), 0)::bigint FROM prediction_rollups")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    assert_eq!(counted, rows, "the rollups count {counted} of {rows} rows");
    // After a clean stop with everything stored, no segment is left.
    let (status, dir, log) = d.stop();
    assert!(status.success(), "{log}");
    let segments: Vec<_> = std::fs::read_dir(dir.path().join("data/spool"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
        .collect();
    assert!(segments.is_empty(), "segments left: {segments:?}");
}
