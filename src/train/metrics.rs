//! How good a model's answers are: accuracy, per-class precision / recall / F1 and
//! the confusion matrix for classes; R², RMSE and MAE for values. The per-class
//! scores and the regression metrics come from linfa; the confusion matrix is
//! counted here because linfa's `ConfusionMatrix` does not expose its cells.
//!
//! Conventions follow scikit-learn, and the tests check them against its values:
//! the confusion matrix has a row per true class and a column per predicted class;
//! a score whose denominator is zero (a class never predicted) is 0, as
//! scikit-learn's `zero_division` default reports it.

use linfa::prelude::*;
use ndarray::{Array1, Array2, ArrayView2};
use serde::Serialize;

use crate::model::network::{Network, Output};

/// One class's scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScores {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Rows whose true class this is.
    pub support: u64,
}

/// A classification's scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassificationScores {
    pub accuracy: f64,
    pub per_class: Vec<ClassScores>,
    /// `confusion[true][predicted]`, classes in model order.
    pub confusion: Vec<Vec<u64>>,
}

/// A regression's scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegressionScores {
    pub r2: f64,
    pub rmse: f64,
    pub mae: f64,
}

/// Scores of either kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Scores {
    Classification(ClassificationScores),
    Regression(RegressionScores),
}

impl Scores {
    /// The headline metric's name: `accuracy` or `r2`.
    pub fn metric_name(&self) -> &'static str {
        match self {
            Scores::Classification(_) => "accuracy",
            Scores::Regression(_) => "r2",
        }
    }

    /// The headline metric.
    pub fn metric(&self) -> f64 {
        match self {
            Scores::Classification(c) => c.accuracy,
            Scores::Regression(r) => r.r2,
        }
    }
}

/// The class a network picks for each row.
pub fn predict_classes(net: &Network, x: ArrayView2<f32>) -> Vec<usize> {
    classes_from_outputs(&net.forward_batch(x), net.output())
}

/// The class picked by each row of outputs (probabilities).
pub fn classes_from_outputs(out: &Array2<f32>, output: Output) -> Vec<usize> {
    out.rows()
        .into_iter()
        .map(|row| match output {
            Output::Sigmoid => usize::from(row[0] >= 0.5),
            _ => crate::model::network::argmax(row),
        })
        .collect()
}

/// The value a network predicts for each row.
pub fn predict_values(net: &Network, x: ArrayView2<f32>) -> Vec<f64> {
    net.forward_batch(x)
        .column(0)
        .iter()
        .map(|v| f64::from(*v))
        .collect()
}

/// Scores predicted classes against the truth; both are indices into `classes`.
pub fn classification(
    classes: &[String],
    predicted: &[usize],
    truth: &[usize],
) -> ClassificationScores {
    let k = classes.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for (&p, &t) in predicted.iter().zip(truth) {
        if p < k && t < k {
            confusion[t][p] += 1;
        }
    }
    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    let total = truth.len().max(1) as f64;
    let mut per_class: Vec<ClassScores> = classes
        .iter()
        .enumerate()
        .map(|(c, name)| ClassScores {
            class: name.clone(),
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            support: confusion[c].iter().sum(),
        })
        .collect();
    // linfa builds its matrix as [self, argument]; called on the truth with the
    // predictions as argument, its one-vs-all precision and recall are the
    // textbook ones (a test checks them against scikit-learn's).
    let t = Array1::from(truth.to_vec());
    let p = Array1::from(predicted.to_vec());
    if let Ok(cm) = t.confusion_matrix(&p) {
        // linfa orders classes by value over both arrays, reversed when two.
        let mut present: Vec<usize> = truth.iter().chain(predicted).copied().collect();
        present.sort_unstable();
        present.dedup();
        if present.len() == 2 {
            present.reverse();
        }
        for (class, one) in present.iter().zip(cm.split_one_vs_all()) {
            if let Some(s) = per_class.get_mut(*class) {
                s.precision = finite(one.precision());
                s.recall = finite(one.recall());
                s.f1 = finite(one.f1_score());
            }
        }
    }
    ClassificationScores {
        accuracy: correct as f64 / total,
        per_class,
        confusion,
    }
}

fn finite(v: f32) -> f64 {
    if v.is_finite() {
        f64::from(v)
    } else {
        0.0
    }
}

/// Scores predicted values against the truth.
pub fn regression(predicted: &[f64], truth: &[f64]) -> RegressionScores {
    let p = Array1::from(predicted.to_vec());
    let t = Array1::from(truth.to_vec());
    let r2 = p.r2(&t).unwrap_or(f64::NAN);
    let mse = p.mean_squared_error(&t).unwrap_or(f64::NAN);
    let mae = p.mean_absolute_error(&t).unwrap_or(f64::NAN);
    RegressionScores {
        r2,
        rmse: mse.sqrt(),
        mae,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|c| c.to_string()).collect()
    }

    #[test]
    fn binary_scores_match_scikit_learn() {
        // sklearn.metrics.precision_recall_fscore_support(
        //     [0,0,0,1,1,1,1,1], [0,1,0,1,0,1,0,1]) gives
        // precision [0.5, 0.75], recall [0.66666667, 0.6], f1 [0.57142857, 0.66666667],
        // support [3, 5]; confusion_matrix gives [[2, 1], [2, 3]] (scikit-learn 1.9.1).
        let truth = [0, 0, 0, 1, 1, 1, 1, 1];
        let predicted = [0, 1, 0, 1, 0, 1, 0, 1];
        let s = classification(&names(2), &predicted, &truth);
        assert_eq!(s.confusion, vec![vec![2, 1], vec![2, 3]]);
        assert!((s.accuracy - 0.625).abs() < 1e-12);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-4;
        assert!(close(s.per_class[0].precision, 0.5), "{:?}", s.per_class);
        assert!(close(s.per_class[0].recall, 2.0 / 3.0), "{:?}", s.per_class);
        assert!(close(s.per_class[0].f1, 0.571_428_57), "{:?}", s.per_class);
        assert!(close(s.per_class[1].precision, 0.75), "{:?}", s.per_class);
        assert!(close(s.per_class[1].recall, 0.6), "{:?}", s.per_class);
        assert!(close(s.per_class[1].f1, 2.0 / 3.0), "{:?}", s.per_class);
        assert_eq!(s.per_class[1].support, 5);
    }

    #[test]
    fn multiclass_scores_match_scikit_learn_including_a_class_never_predicted() {
        // sklearn.metrics.precision_recall_fscore_support(
        //     [0,1,2,2,1,0,3], [0,2,2,2,1,0,1], zero_division=0) gives
        // precision [1, 0.5, 0.66666667, 0], recall [1, 0.5, 1, 0],
        // f1 [1, 0.5, 0.8, 0], support [2, 2, 2, 1] (scikit-learn 1.9.1).
        let truth = [0, 1, 2, 2, 1, 0, 3];
        let predicted = [0, 2, 2, 2, 1, 0, 1];
        let s = classification(&names(4), &predicted, &truth);
        let want = [
            (1.0, 1.0, 1.0, 2),
            (0.5, 0.5, 0.5, 2),
            (2.0 / 3.0, 1.0, 0.8, 2),
            (0.0, 0.0, 0.0, 1),
        ];
        for (got, (p, r, f, n)) in s.per_class.iter().zip(want) {
            assert!((got.precision - p).abs() < 1e-4, "{got:?}");
            assert!((got.recall - r).abs() < 1e-4, "{got:?}");
            assert!((got.f1 - f).abs() < 1e-4, "{got:?}");
            assert_eq!(got.support, n);
        }
    }

    #[test]
    fn regression_scores_match_scikit_learn() {
        // sklearn.metrics on y_true=[3, -0.5, 2, 7], y_pred=[2.5, 0.0, 2, 8]:
        // r2_score 0.9486081370449679, mean_squared_error 0.375,
        // mean_absolute_error 0.5 (scikit-learn 1.9.1).
        let s = regression(&[2.5, 0.0, 2.0, 8.0], &[3.0, -0.5, 2.0, 7.0]);
        assert!((s.r2 - 0.948_608_137_044_967_9).abs() < 1e-9, "{s:?}");
        assert!((s.rmse - 0.375f64.sqrt()).abs() < 1e-12, "{s:?}");
        assert!((s.mae - 0.5).abs() < 1e-12, "{s:?}");
    }
}
