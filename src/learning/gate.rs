//! The gate a retrained candidate passes before it goes live, as TFX's Evaluator
//! blesses a model: on the same held-out rows (the newest labelled ones), the
//! candidate's metric must be at least the live model's minus
//! `training.max_regression`, and at least the absolute floor
//! `training.min_metric`. A metric that is not a number never passes.

use serde::Serialize;

/// The gate's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gate {
    pub max_regression: f64,
    pub min_metric: f64,
}

/// The gate's answer and the reason, in words an operator reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub promote: bool,
    pub reason: String,
}

impl Gate {
    /// Decides on the candidate's and the live model's metric (`name`: accuracy or r2).
    pub fn decide(&self, name: &str, candidate: f64, live: f64) -> Decision {
        let reject = |reason: String| Decision {
            promote: false,
            reason,
        };
        if !candidate.is_finite() {
            return reject(format!("the candidate's {name} is not a number"));
        }
        if candidate < self.min_metric {
            return reject(format!(
                "the candidate's {name} {candidate:.4} is below training.min_metric {}",
                self.min_metric
            ));
        }
        // A live model that cannot be scored does not block a valid candidate.
        if live.is_finite() {
            let bar = live - self.max_regression;
            if candidate < bar {
                return reject(format!(
                    "the candidate's {name} {candidate:.4} is below the live model's {live:.4} \
                     minus training.max_regression {}",
                    self.max_regression
                ));
            }
        }
        Decision {
            promote: true,
            reason: format!(
                "the candidate's {name} {candidate:.4} is at least the live model's {live:.4} minus {} \
                 and at least {}",
                self.max_regression, self.min_metric
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_regression_by_default_ties_pass_and_the_floor_holds() {
        let gate = Gate {
            max_regression: 0.0,
            min_metric: 0.5,
        };
        assert!(gate.decide("accuracy", 0.90, 0.90).promote);
        assert!(gate.decide("accuracy", 0.91, 0.90).promote);
        let worse = gate.decide("accuracy", 0.8999, 0.90);
        assert!(!worse.promote);
        assert!(
            worse.reason.contains("below the live model's 0.9000"),
            "{}",
            worse.reason
        );
        // Better than a collapsed live model, but under the floor.
        let floor = gate.decide("accuracy", 0.45, 0.30);
        assert!(!floor.promote);
        assert!(
            floor.reason.contains("training.min_metric 0.5"),
            "{}",
            floor.reason
        );
    }

    #[test]
    fn a_margin_allows_that_much_regression_and_nan_never_passes() {
        let gate = Gate {
            max_regression: 0.02,
            min_metric: 0.0,
        };
        assert!(gate.decide("r2", 0.785, 0.80).promote);
        assert!(!gate.decide("r2", 0.775, 0.80).promote);
        assert!(!gate.decide("r2", f64::NAN, 0.80).promote);
        assert!(gate.decide("r2", 0.1, f64::NAN).promote);
    }
}
