//! The prediction log's batch write into PostgreSQL (issue 19, groundwork):
//! rows/s of `store::writer::PostgresLog` for batches of 64, 256 and 1,024 rows
//! of 6 and 30 features, written by binary COPY and by INSERT ... UNNEST, into a
//! throwaway local server that the bench starts itself (tests/common/pg.rs) and
//! removes at the end. Issue 19 asks for at least 100,000 rows/s.
//!
//! One criterion iteration is one batch, timed by the wall clock from the start
//! of the statement to the server's answer (the server's work is in its own
//! processes, so the process CPU clock of `benches/writer.rs` would miss it); the
//! throughput is rows/s. Rows are built (and the table emptied, when it has grown
//! past [`MAX_TABLE_ROWS`]) outside the timing. Each is run twice: on a server
//! with `fsync=on` (PostgreSQL's default: each batch's commit waits for its WAL
//! to reach the disk) and with `fsync=off` (what the tests use; the disk's flush
//! time left out).
//!
//! `cargo bench --bench pg_log` (about four minutes); `-- --test` runs each once.
//! Without PostgreSQL's binaries it says so and measures nothing.

// Benches build fixed data (seeded rows, a temp cluster): a failure there is a
// bug in the bench, and a panic with a message is the clearest way to report it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use sqlx::{Connection, PgConnection};

use steward::store::writer::PostgresLog;

#[allow(dead_code)]
#[path = "../tests/common/pg.rs"]
mod pg;
#[path = "common/support.rs"]
mod support;
use support::RowMaker;

/// The table is emptied (untimed) once it holds more rows than this.
const MAX_TABLE_ROWS: usize = 300_000;

const BATCHES: [usize; 3] = [64, 256, 1024];

fn bench_pg_log(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (durability, settings) in [("fsync_on", &["fsync=on"][..]), ("fsync_off", &[][..])] {
        let Some(server) = pg::Postgres::launch_with(settings) else {
            return;
        };
        let url = server.database("bench");
        let mut admin = rt.block_on(PgConnection::connect(&url)).unwrap();
        rt.block_on(sqlx::migrate!("./migrations/postgres").run(&mut admin))
            .unwrap();
        let mut log = rt.block_on(PostgresLog::connect(&url)).unwrap();

        let mut g = c.benchmark_group(format!("pg_log_{durability}"));
        g.sample_size(10);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(3));
        for copy in [true, false] {
            for (shape, features) in [
                ("features6", support::penguins()),
                ("features30", support::numeric30()),
            ] {
                let mut maker = RowMaker::new(features);
                for batch in BATCHES {
                    let method = if copy { "copy" } else { "unnest" };
                    let in_table = Cell::new(MAX_TABLE_ROWS + 1);
                    g.throughput(Throughput::Elements(batch as u64));
                    let id = BenchmarkId::new(format!("{method}/{shape}"), batch);
                    g.bench_function(id, |b| {
                        b.iter_batched(
                            || {
                                if in_table.get() > MAX_TABLE_ROWS {
                                    rt.block_on(
                                        sqlx::query("TRUNCATE predictions, feedback")
                                            .execute(&mut admin),
                                    )
                                    .unwrap();
                                    in_table.set(0);
                                }
                                in_table.set(in_table.get() + batch);
                                maker.rows(batch)
                            },
                            |rows| {
                                if copy {
                                    rt.block_on(log.insert_copy(&rows)).unwrap();
                                } else {
                                    rt.block_on(log.insert_unnest(&rows)).unwrap();
                                }
                                rows
                            },
                            BatchSize::SmallInput,
                        )
                    });
                }
            }
        }
        g.finish();
        rt.block_on(log.close());
        drop(server);
    }
}

criterion_group!(benches, bench_pg_log);
criterion_main!(benches);
