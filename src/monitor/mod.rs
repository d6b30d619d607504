//! Monitoring the live inputs and the model's errors. Plain synchronous code; no
//! tokio, axum or sqlx here.
//!
//! - `stats`: the tests (two-sample KS with scipy's exact p-values, chi-square,
//!   PSI, Bonferroni / Benjamini–Hochberg), checked against scipy.
//! - `drift`: every feature of a current sample against a reference sample, with
//!   the correction and effect-size floors; `steward drift` runs it on two CSVs.
//! - `detect`: DDM and Page-Hinkley over the error stream, checked row for row
//!   against River.
//!
//! Not built yet: the daemon's drift job and report table, anomaly scores, ADWIN
//! and the events that alerting and retraining consume (README, Status).

pub mod detect;
pub mod drift;
pub mod stats;
