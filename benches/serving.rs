//! Serving benches: the f32 forward pass (the bundled penguins model and a
//! 64-64-64 network), the per-request CPU path without HTTP, the prediction
//! log (one batch's transaction into a real SQLite file; the writer task end to end),
//! and the whole `POST /v1/predict` through the axum app without a socket: wall
//! time, and the process's CPU time per request (one row, a batch of 64) with
//! the log rows committed.
//!
//! Every input is built from seeded RNGs or the bundled data, outside the timed
//! closures. `cargo bench --bench serving` runs everything in about two minutes on
//! a 2-core machine; `cargo bench --bench serving -- --test` runs each bench once.
//! For the HTTP path under load see `scripts/load.sh`.

// Benches build fixed data (the bundled CSV, seeded weights, a temp database): a
// failure there is a bug in the bench, and a panic with a message is the clearest
// way to report it. The crate denies unwrap/expect outside tests, so allow it here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;

use steward::model::network::{Dense, Network, Output};
use steward::model::Model;
use steward::store::writer;

#[path = "common/support.rs"]
mod support;
use support::{penguin_rows, process_cpu_time, runtime_and_db, shipped_writer_config, RowMaker};

const SEED: u64 = 42;
const BATCH: usize = 64;
/// Rows per multi-row INSERT, as `database.batch_rows` ships.
const INSERT_ROWS: usize = 1000;
/// Rows pushed through the writer task per iteration.
const WRITER_ROWS: usize = 10_000;
/// The log benches empty the table (untimed) once it holds more rows than this, so
/// that a long run does not fill the disk. UUIDv7 keys are time-ordered, so an
/// insert appends at the right edge of the B-tree and its cost barely depends on
/// the table's size.
const MAX_TABLE_ROWS: u64 = 200_000;

/// The model a fresh daemon trains at start-up (same data, label and seed).
fn bundled_model() -> Model {
    steward::live::bootstrap(
        steward::config::BUNDLED_DATA,
        &steward::train::select::TrainOptions::new("label", 5, SEED),
    )
    .expect("bootstrap training on the bundled data")
}

fn encode(model: &Model, row: &Map<String, Value>) -> Vec<f32> {
    let mut x = vec![0.0f32; model.schema.width()];
    model
        .schema
        .encode_json(row, &mut x)
        .expect("a complete penguins row encodes");
    x
}

fn bench_bundled(c: &mut Criterion) {
    let model = bundled_model();
    let rows = penguin_rows();
    let x = encode(&model, &rows[0]);
    let width = model.schema.width();
    let x64 = Array2::from_shape_fn((BATCH, width), |(i, j)| {
        encode(&model, &rows[(i * 5) % rows.len()])[j]
    });
    let layers: Vec<String> = model
        .network
        .layers()
        .iter()
        .map(|l| format!("{}→{}", l.inputs(), l.outputs()))
        .collect();
    eprintln!(
        "bundled model: {} inputs, layers [{}], {:?} output, {} parameters",
        width,
        layers.join(", "),
        model.network.output(),
        model.network.parameters()
    );

    let mut g = c.benchmark_group("bundled");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));

    g.throughput(Throughput::Elements(1));
    g.bench_function("forward_one", |b| {
        b.iter(|| model.network.forward_one(black_box(&x)))
    });

    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("forward_batch_64", |b| {
        b.iter(|| model.network.forward_batch(black_box(x64.view())))
    });

    // What a `{"features": {..}}` request costs once its body is parsed: encode the
    // named features with the schema, then the forward pass and interpretation.
    let map = rows[0].clone();
    let mut buf = vec![0.0f32; width];
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_json+predict", |b| {
        b.iter(|| {
            model
                .schema
                .encode_json(black_box(&map), &mut buf)
                .expect("encodes");
            model.predict_encoded(black_box(&buf))
        })
    });

    g.finish();
}

/// A 64-64-64 network, read as: 64 inputs → dense 64 → ReLU → dense 64 → ReLU →
/// dense 2 with softmax. That is two 64×64 hidden layers plus a small output layer
/// (8,450 parameters), the size DESIGN.md quotes for the int8-vs-f32 comparison.
/// Weights are He-uniform from a seeded ChaCha8 RNG, biases small.
fn net_64_64_64(rng: &mut ChaCha8Rng) -> Network {
    let mut dense = |inputs: usize, outputs: usize| {
        let limit = (6.0 / inputs as f32).sqrt();
        Dense {
            weight: Array2::from_shape_fn((outputs, inputs), |_| rng.gen_range(-limit..limit)),
            bias: Array1::from_shape_fn(outputs, |_| rng.gen_range(-0.1..0.1)),
        }
    };
    let layers = vec![dense(64, 64), dense(64, 64), dense(64, 2)];
    Network::new(layers, Output::Softmax).expect("the layers chain")
}

fn bench_64(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let net = net_64_64_64(&mut rng);
    let x: Vec<f32> = (0..64).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let x64 = Array2::from_shape_fn((BATCH, 64), |_| rng.gen_range(-2.0f32..2.0));

    let mut g = c.benchmark_group("net_64_64_64");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    g.bench_function("forward_one", |b| b.iter(|| net.forward_one(black_box(&x))));
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("forward_batch_64", |b| {
        b.iter(|| net.forward_batch(black_box(x64.view())))
    });
    g.finish();
}

/// Empties `predictions` when it has grown past [`MAX_TABLE_ROWS`] (call untimed).
async fn trim(pool: &SqlitePool) {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM predictions")
        .fetch_one(pool)
        .await
        .expect("count");
    if n as u64 > MAX_TABLE_ROWS {
        sqlx::query("DELETE FROM predictions")
            .execute(pool)
            .await
            .expect("delete");
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(pool)
            .await
            .expect("checkpoint");
    }
}

fn bench_log(c: &mut Criterion) {
    let (rt, _dir, store, pool) = runtime_and_db();
    let mut maker = RowMaker::new(support::penguins());
    let sample = maker.row();
    eprintln!(
        "log row: id {} bytes, features {} bytes, output {} bytes",
        sample.id.len(),
        sample.features.len(),
        sample.output.len()
    );

    let mut g = c.benchmark_group("log");
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(8));

    // One transaction of 1000 rows (what the writer does per batch), through the
    // writer's own connection, into a WAL-mode file with synchronous=NORMAL as the
    // daemon opens it.
    let mut log = writer::SqliteLog::open(&store).expect("the writer's connection");
    g.throughput(Throughput::Elements(INSERT_ROWS as u64));
    g.bench_function("insert_1000", |b| {
        b.iter_batched(
            || {
                rt.block_on(trim(&pool));
                maker.rows(INSERT_ROWS)
            },
            |rows| {
                log.insert(&rows).expect("insert");
                rows
            },
            BatchSize::PerIteration,
        )
    });

    // The writer task end to end: push rows through `LogHandle::log` (the bounded
    // queue), then `flush()` waits until all of them are committed. The writer
    // runs with the shipped settings (65536 queue, 1000-row batches, 5 ms flush).
    let cancel = CancellationToken::new();
    let cfg = shipped_writer_config();
    let (handle, task) = {
        let _guard = rt.enter();
        writer::spawn(store.clone(), cfg, None, cancel.clone())
    };
    g.throughput(Throughput::Elements(WRITER_ROWS as u64));
    g.bench_function("writer_task_10k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(trim(&pool));
                let rows = maker.rows(WRITER_ROWS);
                total += rt.block_on(async {
                    let start = Instant::now();
                    for row in rows {
                        assert!(handle.log(row).await, "row dropped");
                    }
                    assert!(handle.flush().await, "writer gone");
                    start.elapsed()
                });
            }
            total
        })
    });
    g.finish();

    let stats = handle.stats();
    assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(
        stats
            .failed_writes
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    cancel.cancel();
    rt.block_on(task).expect("writer task ends");
    rt.block_on(pool.close());
}

/// The real `POST /v1/predict` handler through the whole axum app (routing,
/// metrics, timeout, body limit, JSON parse, encode, predict, id, log row queued
/// to a real writer and SQLite file, response body), without a socket.
fn bench_router(c: &mut Criterion) {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[database]\nurl = \"sqlite://{db}\"\n[model]\ndir = \"{models}\"\n\
         [alerts]\ndir = \"{outbox}\"\n[online]\nenabled = false\n",
        db = dir.path().join("bench.db").display(),
        models = dir.path().join("models").display(),
        outbox = dir.path().join("outbox").display(),
    );
    let config = steward::config::Config::from_parts("bench", &text, &[]).expect("bench config");
    // The daemon's own services: the bundled model trained as on a first start,
    // the real log writer on a SQLite file (no background jobs are started).
    let (app, parts) = rt
        .block_on(steward::app::App::build(&config))
        .expect("build the app");
    let app_router = steward::server::router(
        steward::server::AppState::new(app.clone()),
        steward::server::Limits {
            max_body_bytes: 1 << 20,
            max_upload_bytes: 1 << 26,
            request_timeout: Duration::from_secs(10),
            access_log: false,
        },
    );
    let app_for_drain = app;
    let rows = penguin_rows();
    let body = serde_json::to_vec(&serde_json::json!({ "features": rows[0] })).expect("json");
    let batch: Vec<&Map<String, Value>> = rows.iter().cycle().take(BATCH).collect();
    let batch_body = serde_json::to_vec(&serde_json::json!({ "instances": batch })).expect("json");
    let call = |body: &[u8]| {
        let req = Request::post("/v1/predict")
            .header("content-type", "application/json")
            .body(Body::from(body.to_vec()))
            .expect("request");
        let router = app_router.clone();
        async move {
            let resp = router.oneshot(req).await.expect("infallible");
            assert!(resp.status().is_success());
            axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .expect("body")
        }
    };
    let predictions = app_for_drain.predictions().clone();

    let mut g = c.benchmark_group("http");
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    g.bench_function("predict_handler", |b| b.iter(|| rt.block_on(call(&body))));
    // The CPU time of the whole process per request (every thread: the
    // handler, the runtime, the log writer and SQLite), the rows committed
    // before the clock stops: what a request costs the machine, which on 2
    // cores is what limits the rate, whatever the wall time.
    let cpu_per_call = |body: &[u8], iters: u64| {
        let start = process_cpu_time();
        for _ in 0..iters {
            rt.block_on(call(body));
        }
        assert!(rt.block_on(predictions.flush_log()));
        process_cpu_time().saturating_sub(start)
    };
    g.bench_function("predict_handler_cpu", |b| {
        b.iter_custom(|iters| cpu_per_call(&body, iters))
    });
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("predict_batch_64_cpu", |b| {
        b.iter_custom(|iters| cpu_per_call(&batch_body, iters))
    });
    g.finish();
    drop(app_router);
    let tracker = tokio_util::task::TaskTracker::new();
    tracker.close();
    rt.block_on(app_for_drain.drain(parts, &tracker));
}

criterion_group!(benches, bench_bundled, bench_64, bench_log, bench_router);
criterion_main!(benches);
