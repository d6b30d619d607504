//! What the benches `serving` and `writer` share: the process's CPU clock;
//! prediction log rows shaped like the daemon's (UUIDv7 ids in time order,
//! `features` as a request's feature map serialised, `output` a class and its
//! probabilities, an anomaly score); the database they go to and the writer's
//! shipped settings. Included by each bench with `#[path]`; each uses part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value};

use sqlx::SqlitePool;
use tokio::runtime::Runtime;

use steward::store::writer::{PredictionRow, WriterConfig};
use steward::store::Store;

const SEED: u64 = 42;

pub const FEATURES: [&str; 6] = [
    "island",
    "bill_length_mm",
    "bill_depth_mm",
    "flipper_length_mm",
    "body_mass_g",
    "sex",
];

/// The bundled penguins rows (without the label) as `/v1/predict` feature maps:
/// numbers as JSON numbers, empty cells as `null`. Rows with a missing cell are
/// skipped so every row is a complete, realistic request.
pub fn penguin_rows() -> Vec<Map<String, Value>> {
    let mut lines = steward::BUNDLED_PENGUINS.lines();
    let header: Vec<&str> = lines
        .next()
        .expect("penguins.csv has a header")
        .split(',')
        .collect();
    assert_eq!(&header[..6], &FEATURES, "penguins.csv columns changed");
    let mut rows = Vec::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        if cells[..6].iter().any(|c| c.is_empty()) {
            continue;
        }
        let mut m = Map::new();
        for (name, cell) in FEATURES.iter().zip(&cells) {
            let v = match cell.parse::<f64>() {
                Ok(x) => serde_json::json!(x),
                Err(_) => Value::String((*cell).to_string()),
            };
            m.insert((*name).to_string(), v);
        }
        rows.push(m);
    }
    assert!(rows.len() > 300, "expected the bundled penguins rows");
    rows
}

/// 512 distinct feature maps of 30 numeric features (`f00` .. `f29`) as JSON text.
pub fn numeric30() -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED + 1);
    (0..512)
        .map(|_| {
            let m: Map<String, Value> = (0..30)
                .map(|j| {
                    (
                        format!("f{j:02}"),
                        serde_json::json!(rng.gen_range(-3.0..3.0)),
                    )
                })
                .collect();
            Value::Object(m).to_string()
        })
        .collect()
}

/// The penguins rows' feature maps as JSON text (6 features, about 120 bytes).
pub fn penguins() -> Vec<String> {
    penguin_rows()
        .into_iter()
        .map(|m| Value::Object(m).to_string())
        .collect()
}

/// Makes log rows whose features cycle through a given list.
pub struct RowMaker {
    features: Vec<String>,
    rng: ChaCha8Rng,
    version: Arc<str>,
    next: usize,
}

impl RowMaker {
    pub fn new(features: Vec<String>) -> RowMaker {
        RowMaker {
            features,
            rng: ChaCha8Rng::seed_from_u64(SEED),
            version: "1".into(),
            next: 0,
        }
    }

    pub fn row(&mut self) -> PredictionRow {
        let features = self.features[self.next % self.features.len()].clone();
        self.next += 1;
        let a: f32 = self.rng.gen_range(0.0..1.0);
        let b: f32 = self.rng.gen_range(0.0..(1.0 - a));
        let (p, label) = ([a, b, 1.0 - a - b], ["Adelie", "Chinstrap", "Gentoo"]);
        let best = (0..3).fold(0, |best, i| if p[i] > p[best] { i } else { best });
        let output = serde_json::json!({
            "prediction": label[best],
            "probabilities": {"Adelie": p[0], "Chinstrap": p[1], "Gentoo": p[2]},
        })
        .to_string();
        let score = self.rng.gen_range(0.0..40.0);
        PredictionRow {
            id: uuid::Uuid::now_v7().to_string(),
            time: steward::time::now_millis(),
            model_version: self.version.clone(),
            features,
            output,
            latency_us: self.rng.gen_range(20..200),
            anomaly_score: Some(score),
            anomaly: score > 30.0,
        }
    }

    pub fn rows(&mut self, n: usize) -> Vec<PredictionRow> {
        (0..n).map(|_| self.row()).collect()
    }
}

/// A tokio runtime and a fresh bench database in a temporary directory (kept
/// alive by the returned guard), opened as the daemon opens it, with a second
/// plain connection pool for [`trim`].
pub fn runtime_and_db() -> (Runtime, tempfile::TempDir, Store, SqlitePool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.db");
    let store = rt
        .block_on(steward::store::open(&path))
        .expect("open the bench database");
    let pool = rt
        .block_on(SqlitePool::connect(&format!("sqlite://{}", path.display())))
        .expect("a second connection to the bench database");
    (rt, dir, store, pool)
}

/// The writer settings config/steward.toml ships.
pub fn shipped_writer_config() -> WriterConfig {
    WriterConfig {
        capacity: 65_536,
        batch_rows: 1000,
        flush: Duration::from_millis(5),
        queue_wait: Duration::from_secs(1),
    }
}

/// CPU time used by every thread of this process so far.
pub fn process_cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
