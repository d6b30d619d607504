//! The prediction log writer's CPU per row: rows pushed through the real writer
//! task (`store::writer::spawn`, the shipped settings) into a real SQLite file
//! opened with `store::open`, timed by the process's CPU clock
//! (`CLOCK_PROCESS_CPUTIME_ID`), not the wall clock. On a 2-core machine the
//! writer's CPU competes with the request handlers', so CPU is what a row costs the
//! daemon; the wall time of a burst hides the work done on the second core.
//!
//! One criterion iteration is one row: the reported "time" is CPU time per row,
//! summed over every thread of the process (the sender, the tokio workers, the
//! writer and whatever thread the database driver uses). Rows are built before the
//! clock starts; the table is emptied (untimed) when it grows past
//! [`MAX_TABLE_ROWS`].
//!
//! Two row shapes: the penguins' 6 features (about 120 bytes of JSON) and 30
//! numeric features (about 700 bytes), each with an output of a class and three
//! probabilities and a UUIDv7 id in time order. Two ways of sending:
//! - `burst`: every row as fast as `LogHandle::log` takes it, then `flush()`: the
//!   writer runs full batches (`database.batch_rows`);
//! - `paced`: 50 rows every millisecond (50,000 rows/s, about the daemon's rate
//!   under `scripts/load.sh`), then `flush()`: batches close on
//!   `database.flush_secs` with a few hundred rows each, as under real load.
//!
//! `cargo bench --bench writer` (about two minutes); `-- --test` runs each once.

// Benches build fixed data (seeded rows, a temp database): a failure there is a
// bug in the bench, and a panic with a message is the clearest way to report it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;

use steward::store::writer::{self, LogHandle, PredictionRow};

#[path = "common/support.rs"]
mod support;
use support::{process_cpu_time, runtime_and_db, shipped_writer_config, RowMaker};

/// The table is emptied (untimed) once it holds more rows than this, so that a
/// long run does not fill the disk. UUIDv7 keys and times are ascending, so an
/// insert appends at the right edge of both B-trees and its cost barely depends
/// on the table's size.
const MAX_TABLE_ROWS: i64 = 300_000;
/// Paced sending: rows per tick, and the tick.
const PACED_ROWS: usize = 50;
const PACED_TICK: Duration = Duration::from_millis(1);

/// Empties `predictions` when it has grown past [`MAX_TABLE_ROWS`] (untimed).
async fn trim(pool: &SqlitePool) {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM predictions")
        .fetch_one(pool)
        .await
        .expect("count");
    if n > MAX_TABLE_ROWS {
        empty(pool).await;
    }
}

/// Empties `predictions` and the WAL. Each bench starts with it: criterion's
/// warm-up plans the samples from the wall time of its calls, and one that
/// emptied a full table (a second or more) made it plan one-row samples.
async fn empty(pool: &SqlitePool) {
    sqlx::query("DELETE FROM predictions")
        .execute(pool)
        .await
        .expect("delete");
    // Until the checkpoint is complete: pages left in the WAL would be copied by
    // an automatic checkpoint inside a timed commit.
    loop {
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(pool)
            .await
            .expect("checkpoint");
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn send_burst(handle: &LogHandle, rows: Vec<PredictionRow>) {
    for row in rows {
        assert!(handle.log(row).await, "row dropped");
    }
    assert!(handle.flush().await, "writer gone");
}

async fn send_paced(handle: &LogHandle, rows: Vec<PredictionRow>) {
    let mut tick = tokio::time::interval(PACED_TICK);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        tick.tick().await;
        for row in rows.by_ref().take(PACED_ROWS) {
            assert!(handle.log(row).await, "row dropped");
        }
    }
    assert!(handle.flush().await, "writer gone");
}

fn bench_writer(c: &mut Criterion) {
    // The daemon's runtime (one worker per core) and database.
    let (rt, _dir, store, pool) = runtime_and_db();
    let cancel = CancellationToken::new();
    let (handle, task) = {
        let _guard = rt.enter();
        writer::spawn(store.clone(), shipped_writer_config(), None, cancel.clone())
    };

    let mut g = c.benchmark_group("writer_cpu_per_row");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    for (shape, mut maker) in [
        ("features6", RowMaker::new(support::penguins())),
        ("features30", RowMaker::new(support::numeric30())),
    ] {
        let sample = maker.row();
        eprintln!(
            "{shape}: id {} bytes, features {} bytes, output {} bytes",
            sample.id.len(),
            sample.features.len(),
            sample.output.len()
        );
        for paced in [false, true] {
            // Paced rows take 20 µs of wall time each: keep the planned CPU
            // time short so a run stays near 20 s.
            g.measurement_time(Duration::from_secs(if paced { 1 } else { 4 }));
            let name = format!("{shape}/{}", if paced { "paced" } else { "burst" });
            rt.block_on(empty(&pool));
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(trim(&pool));
                    let rows = maker.rows(iters as usize);
                    let start = process_cpu_time();
                    if paced {
                        rt.block_on(send_paced(&handle, rows));
                    } else {
                        rt.block_on(send_burst(&handle, rows));
                    }
                    let cpu = process_cpu_time() - start;
                    if std::env::var_os("WRITER_BENCH_TRACE").is_some() {
                        eprintln!("{iters} rows: {cpu:?} CPU");
                    }
                    cpu
                })
            });
        }
    }
    g.finish();

    let stats = handle.stats();
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 0, "rows dropped");
    assert_eq!(
        stats.failed_writes.load(Ordering::Relaxed),
        0,
        "writes failed"
    );
    cancel.cancel();
    rt.block_on(task).expect("writer task ends");
    rt.block_on(pool.close());
    rt.block_on(store.close());
}

criterion_group!(benches, bench_writer);
criterion_main!(benches);
