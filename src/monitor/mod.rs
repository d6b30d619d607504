//! Monitoring the live inputs: the statistics of the drift tests (`stats`). Plain
//! synchronous code; no tokio, axum or sqlx here.
//!
//! Built so far: the tests themselves (KS, chi-square, PSI, multiple-testing
//! corrections), checked against scipy. The drift job, anomaly scores and the
//! concept-drift detectors come next (see README, Status).

pub mod drift;
pub mod stats;
