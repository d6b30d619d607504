//! Streams with known changes, and the replay of the daemon's detectors over
//! them: what the detection tests assert and `examples/detection_eval.rs` exports
//! for a comparison with River.
//!
//! - Feature streams: ten independent standard normal features (values rounded
//!   to 3 decimals, so there are ties) and one categorical feature with
//!   categories a/b/c at 50/30/20%. A change can shift one feature's mean or
//!   give a new category a share of the categorical one. The reference is an
//!   independent draw of [`Reference::MAX_ROWS`] rows, as a model's reference
//!   sample is.
//! - [`replay_checks`] runs the daemon's check (the drift tests, the correction
//!   and floors, then [`DriftWatch`] with its confirmation) every `every` rows over
//!   the last `window` rows, and returns the events with the last row each check
//!   saw.
//! - Concept streams: SEA (Street & Kim 2001, as River's `synth.SEA`): three
//!   uniform features on [0, 10], label `x0 + x1 > θ` with θ = 8, 9, 7, 9.5 for
//!   variants 0–3. A model is fitted on 2,000 rows of variant 0 with steward's
//!   own training; its mistakes on the stream are the error stream that
//!   [`replay_concept`] feeds to a [`ConceptWatch`].
//!
//! [`Reference::MAX_ROWS`]: steward::model::Reference::MAX_ROWS

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use steward::data::Table;
use steward::model::{Model, Prediction};
use steward::monitor::drift::{self, compare, DriftOptions, Values};
use steward::monitor::events::{Event, Window};
use steward::monitor::watch::{Check, ConceptWatch, DriftWatch, Outcome};
use steward::train::select::{self, Candidate, TrainOptions};
use steward::train::TrainError;

/// Numeric features in a feature stream.
pub const NUMERIC: usize = 10;

/// A change in a feature stream, from row `at` on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    None,
    /// Numeric feature `feature` moves by `sd` standard deviations.
    Shift {
        feature: usize,
        sd: f64,
        at: usize,
    },
    /// A category never seen before takes `share` of the categorical feature.
    NewCategory {
        share: f64,
        at: usize,
    },
}

/// Feature names: `f0`..`f9`, then `c`.
pub fn names() -> Vec<String> {
    (0..NUMERIC)
        .map(|i| format!("f{i}"))
        .chain(std::iter::once("c".to_string()))
        .collect()
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// `rows` rows of the feature stream, as columns (the numeric ones, then `c`).
pub fn features(seed: u64, rows: usize, change: Change) -> Vec<Values> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut numeric: Vec<Vec<f64>> = (0..NUMERIC).map(|_| Vec::with_capacity(rows)).collect();
    let mut categorical = Vec::with_capacity(rows);
    for r in 0..rows {
        for (f, column) in numeric.iter_mut().enumerate() {
            let shift = match change {
                Change::Shift { feature, sd, at } if feature == f && r >= at => sd,
                _ => 0.0,
            };
            column.push(((normal(&mut rng) + shift) * 1000.0).round() / 1000.0);
        }
        let u: f64 = rng.gen();
        let new = match change {
            Change::NewCategory { share, at } if r >= at => share,
            _ => 0.0,
        };
        let category = if u < new {
            "d"
        } else {
            // The known categories keep their proportions among the rest.
            let v = (u - new) / (1.0 - new);
            if v < 0.5 {
                "a"
            } else if v < 0.8 {
                "b"
            } else {
                "c"
            }
        };
        categorical.push(category.to_string());
    }
    numeric
        .into_iter()
        .map(Values::Numeric)
        .chain(std::iter::once(Values::Categorical(categorical)))
        .collect()
}

/// Rows `from..to` of every column.
pub fn rows_of(columns: &[Values], from: usize, to: usize) -> Vec<Values> {
    columns
        .iter()
        .map(|c| match c {
            Values::Numeric(v) => Values::Numeric(v[from..to].to_vec()),
            Values::Categorical(v) => Values::Categorical(v[from..to].to_vec()),
        })
        .collect()
}

/// An event with the last stream row the check that raised it saw.
#[derive(Debug, Clone)]
pub struct Raised {
    pub row: usize,
    pub event: Event,
}

/// Replays the daemon's periodic check over `stream`.
pub fn replay_checks(
    reference: &[Values],
    stream: &[Values],
    every: usize,
    window: usize,
    options: &DriftOptions,
    confirm: u32,
) -> Vec<Raised> {
    let names = names();
    let rows = drift::rows(stream);
    let reference_rows = drift::rows(reference);
    let mut watch = DriftWatch::new(confirm, options.alpha);
    let mut raised = Vec::new();
    let mut end = every;
    while end <= rows {
        let current = rows_of(stream, end.saturating_sub(window), end);
        if let Ok(report) = compare(&names, reference, &current, options) {
            let check = Check {
                window: Window {
                    model_version: "eval".into(),
                    rows: report.current_rows,
                    reference_rows,
                    time: 0,
                },
                report,
                prediction: None,
                anomaly: None,
            };
            for event in watch.observe(&check) {
                raised.push(Raised {
                    row: end - 1,
                    event,
                });
            }
        }
        end += every;
    }
    raised
}

/// The SEA threshold of `variant` (0–3).
fn sea_threshold(variant: u8) -> f64 {
    match variant {
        0 => 8.0,
        1 => 9.0,
        2 => 7.0,
        _ => 9.5,
    }
}

/// `rows` SEA rows: features and labels; the variant changes from `before` to
/// `after` at row `at` (none when `at` ≥ `rows`).
pub fn sea(seed: u64, rows: usize, before: u8, after: u8, at: usize) -> Vec<([f64; 3], bool)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows)
        .map(|r| {
            let x = [
                rng.gen_range(0.0..10.0),
                rng.gen_range(0.0..10.0),
                rng.gen_range(0.0..10.0),
            ];
            let variant = if r < at { before } else { after };
            (x, x[0] + x[1] > sea_threshold(variant))
        })
        .collect()
}

/// A model fitted on `rows` with steward's training (the linear candidate, 5
/// folds, no compression: the evaluation is about the detectors, not the model).
pub fn fit_sea(rows: &[([f64; 3], bool)], seed: u64) -> Result<Model, TrainError> {
    let mut csv = String::from("x0,x1,x2,label\n");
    for (x, y) in rows {
        csv.push_str(&format!("{},{},{},{}\n", x[0], x[1], x[2], u8::from(*y)));
    }
    let table = Table::parse("sea.csv", csv.as_bytes())?;
    let options = TrainOptions {
        grid: Some(vec![Candidate::Linear { alpha: 1e-4 }]),
        max_metric_drop: None,
        ..TrainOptions::new("label", 5, seed)
    };
    Ok(select::train(&table, &options)?.model)
}

/// Whether `model` gets each row wrong.
pub fn errors(model: &Model, rows: &[([f64; 3], bool)]) -> Vec<bool> {
    let mut x = vec![0.0f32; model.schema.width()];
    rows.iter()
        .map(|(features, y)| {
            let cells: Vec<String> = features.iter().map(|v| v.to_string()).collect();
            let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
            model.schema.encode_cells(&cells, &mut x);
            let predicted = match model.predict_encoded(&x) {
                Prediction::Class { label, .. } => label == "1",
                Prediction::Value(v) => v > 0.5,
            };
            predicted != *y
        })
        .collect()
}

/// The rows at which a concept watch raises drift over an error stream.
pub fn replay_concept(errors: &[bool], mut watch: ConceptWatch) -> Vec<usize> {
    errors
        .iter()
        .enumerate()
        .filter_map(|(i, wrong)| {
            watch
                .observe("eval", Outcome::Class { wrong: *wrong }, i as i64, 0)
                .map(|_| i)
        })
        .collect()
}
