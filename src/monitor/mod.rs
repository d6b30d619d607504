//! Monitoring the live inputs and the model's errors. Plain synchronous code; no
//! tokio, axum or sqlx here. The statistics themselves are in `crate::stats`;
//! the anomaly scorer a model carries is `crate::model::scorer`; the evaluation
//! streams the detection tests replay are in examples/support/eval.rs, outside
//! the daemon's library.
//!
//! - `drift`: every feature of a current sample against a reference sample, with
//!   the correction and effect-size floors; `steward drift` runs it on two CSVs.
//! - `detect`: DDM and Page-Hinkley over the error stream, checked row for row
//!   against River.
//! - `adwin`: ADWIN, the adaptive window over the error stream (or any
//!   real-valued stream), checked row for row against River.
//! - `window`: the reference sample and the logged window as feature values.
//! - `watch`: the state machines that turn checks and the error stream into
//!   `events` (drift detected / resolved, anomaly rate high / normal, concept
//!   drift), each raised once per change of state.

pub mod adwin;
pub mod detect;
pub mod drift;
pub mod events;
pub mod watch;
pub mod window;
