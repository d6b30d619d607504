//! The detection evaluation of the drift issue, on streams generated with fixed
//! seeds (`monitor::eval`): the daemon's periodic check (windows of 1,000 rows
//! every 1,000 rows against a 5,000-row reference, default floors and
//! correction, two checks to confirm) and its concept watch (DDM waiting for 5
//! errors, upward Page-Hinkley) over a model's SEA error stream.
//! `examples/detection_eval.rs` runs the same over more seeds for
//! docs/BENCHMARKS.md.

use steward::model::Reference;
use steward::monitor::drift::DriftOptions;
#[path = "../examples/support/eval.rs"]
mod eval;

use eval::{Change, Raised};
use steward::monitor::events::{Event, Subject};
use steward::monitor::watch::ConceptWatch;

const SEED: u64 = 0;
const WINDOW: usize = 1_000;

fn checks(change: Change, rows: usize) -> Vec<Raised> {
    let reference = eval::features(1_000 + SEED, Reference::MAX_ROWS, Change::None);
    let stream = eval::features(SEED, rows, change);
    eval::replay_checks(
        &reference,
        &stream,
        WINDOW,
        WINDOW,
        &DriftOptions::default(),
        2,
    )
}

/// The first `drift_detected` on an input feature: its row and feature.
fn first_detection(raised: &[Raised]) -> Option<(usize, String)> {
    raised.iter().find_map(|r| match &r.event {
        Event::DriftDetected(f) if f.subject == Subject::Input => {
            Some((r.row, f.feature.name.clone()))
        }
        _ => None,
    })
}

#[test]
fn fifty_thousand_stationary_rows_raise_no_drift_event() {
    let raised = checks(Change::None, 50_000);
    assert!(
        raised.is_empty(),
        "{:?}",
        raised
            .iter()
            .map(|r| (r.row, r.event.name()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_quarter_sd_shift_on_one_of_ten_features_is_found_within_two_windows() {
    let at = 20_000;
    let raised = checks(
        Change::Shift {
            feature: 3,
            sd: 0.25,
            at,
        },
        30_000,
    );
    let (row, feature) = first_detection(&raised).expect("the shift was not detected");
    assert_eq!(feature, "f3");
    assert!(
        (at..at + 2 * WINDOW).contains(&row),
        "detected at row {row}"
    );
    // Only the shifted feature.
    assert!(raised.iter().all(|r| match &r.event {
        Event::DriftDetected(f) => f.feature.name == "f3",
        _ => true,
    }));
}

#[test]
fn a_new_category_with_a_tenth_of_the_rows_is_found_within_two_windows() {
    let at = 20_000;
    let raised = checks(Change::NewCategory { share: 0.1, at }, 30_000);
    let (row, feature) = first_detection(&raised).expect("the new category was not detected");
    assert_eq!(feature, "c");
    assert!(
        (at..at + 2 * WINDOW).contains(&row),
        "detected at row {row}"
    );
}

/// Errors of a model fitted on 2,000 SEA variant-0 rows, on `rows` rows that
/// switch to variant 3 at `at`.
fn sea_errors(rows: usize, at: usize) -> Vec<bool> {
    let train = eval::sea(5_000 + SEED, 2_000, 0, 0, usize::MAX);
    let model = eval::fit_sea(&train, SEED).unwrap();
    eval::errors(&model, &eval::sea(SEED, rows, 0, 3, at))
}

#[test]
fn a_stationary_error_stream_gives_at_most_one_false_concept_alarm() {
    let errors = sea_errors(50_000, usize::MAX);
    let rate = errors.iter().filter(|e| **e).count() as f64 / errors.len() as f64;
    assert!(rate > 0.0 && rate < 0.05, "error rate {rate}");
    let alarms = eval::replay_concept(&errors, ConceptWatch::default());
    assert!(alarms.len() <= 1, "false alarms at {alarms:?}");
}

#[test]
fn sea_concept_drift_is_found_within_500_labelled_rows() {
    let at = 20_000;
    let errors = sea_errors(30_000, at);
    // Variant 3 moves the boundary from 8 to 9.5: about 13% of rows flip.
    let after = errors[at..].iter().filter(|e| **e).count() as f64 / (errors.len() - at) as f64;
    assert!(after > 0.1, "error rate after the change {after}");
    let alarms = eval::replay_concept(&errors, ConceptWatch::default());
    let first = alarms.iter().find(|r| **r >= at).copied();
    assert!(
        first.is_some_and(|r| r < at + 500),
        "alarms at {alarms:?} (change at {at})"
    );
    assert!(
        alarms.iter().filter(|r| **r < at).count() <= 1,
        "{alarms:?}"
    );
}
