//! Monitoring the live inputs and the model's errors. Plain synchronous code; no
//! tokio, axum or sqlx here.
//!
//! - `stats`: the tests (two-sample KS with scipy's exact p-values, chi-square,
//!   PSI, Bonferroni / Benjamini–Hochberg), checked against scipy.
//! - `drift`: every feature of a current sample against a reference sample, with
//!   the correction and effect-size floors; `steward drift` runs it on two CSVs.
//! - `detect`: DDM and Page-Hinkley over the error stream, checked row for row
//!   against River.
//! - `anomaly`: the squared Mahalanobis distance of an encoded input under the
//!   training distribution, its chi-square threshold and the anomaly-rate test.
//! - `scorer`: a model's anomaly scorer (the numeric slots of the encoded input
//!   and the Gaussian over them), stored in the artifact.
//! - `eval`: streams with known changes (feature shifts, a new category, SEA
//!   concept drift) and the replay of the detectors over them, for the detection
//!   tests and `examples/detection_eval.rs`.
//! - `window`: the reference sample and the logged window as feature values.
//! - `watch`: the state machines that turn checks and the error stream into
//!   `events` (drift detected / resolved, anomaly rate high / normal, concept
//!   drift), each raised once per change of state.

pub mod anomaly;
pub mod detect;
pub mod drift;
pub mod eval;
pub mod events;
pub mod scorer;
pub mod stats;
pub mod watch;
pub mod window;
