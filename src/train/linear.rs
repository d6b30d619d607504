//! The linear candidate, fitted by linfa and converted into our [`Network`] (zero
//! hidden layers): logistic regression with L-BFGS (linfa-logistic; binary or
//! multinomial) for classes, ridge regression for values (linfa-linear's
//! `TweedieRegressor` with power 0 and the identity link minimises
//! `½(Σ(y − ŷ)² + α‖w‖²)`, which is ridge). The penalty `alpha` means what
//! scikit-learn's does: `C = 1/alpha` for `LogisticRegression`, `alpha` for `Ridge`.
//!
//! Fitting runs in f64 on a copy of the encoded rows; the network keeps f32.

use linfa::prelude::*;
use linfa_linear::TweedieRegressor;
use linfa_logistic::{LogisticRegression, MultiLogisticRegression};
use ndarray::{Array1, Array2, ArrayView2};

use super::sgd::Targets;
use crate::model::network::{Dense, Network, NetworkError, Output};

/// L-BFGS iterations; scikit-learn's default is 100, which often stops short on
/// unscaled multinomial problems.
pub const MAX_ITERATIONS: u64 = 500;

/// Bias given to a class the training rows never showed: its probability is ~0.
const ABSENT_CLASS_BIAS: f32 = -30.0;

/// What can go wrong fitting the linear candidate.
#[derive(Debug, thiserror::Error)]
pub enum LinearError {
    #[error("logistic regression: {0}")]
    Logistic(#[from] linfa_logistic::error::Error),
    #[error("ridge regression: {0}")]
    Ridge(#[from] linfa_linear::LinearError<f64>),
    #[error(transparent)]
    Network(#[from] NetworkError),
}

/// Fits the linear model with L2 penalty `alpha`.
pub fn fit(x: ArrayView2<f32>, y: &Targets, alpha: f64) -> Result<Network, LinearError> {
    let x64 = x.mapv(f64::from);
    match y {
        Targets::Classes { index, classes: 2 } => {
            let ds = Dataset::new(x64, Array1::from(index.clone()));
            let fitted = LogisticRegression::default()
                .alpha(alpha)
                .max_iterations(MAX_ITERATIONS)
                .fit(&ds)?;
            // linfa models P(labels().pos); our sigmoid gives P(class 1).
            let sign = if fitted.labels().pos.class == 1 {
                1.0
            } else {
                -1.0
            };
            let weight = fitted.params().mapv(|w| (sign * w) as f32);
            let dense = Dense {
                weight: weight.insert_axis(ndarray::Axis(0)),
                bias: Array1::from_elem(1, (sign * fitted.intercept()) as f32),
            };
            Ok(Network::new(vec![dense], Output::Sigmoid)?)
        }
        Targets::Classes { index, classes } => {
            let ds = Dataset::new(x64, Array1::from(index.clone()));
            let fitted = MultiLogisticRegression::default()
                .alpha(alpha)
                .max_iterations(MAX_ITERATIONS)
                .fit(&ds)?;
            let mut weight = Array2::<f32>::zeros((*classes, x.ncols()));
            let mut bias = Array1::from_elem(*classes, ABSENT_CLASS_BIAS);
            // params() is features × present classes, in the order of classes().
            for (j, &class) in fitted.classes().iter().enumerate() {
                weight
                    .row_mut(class)
                    .assign(&fitted.params().column(j).mapv(|w| w as f32));
                bias[class] = fitted.intercept()[j] as f32;
            }
            Ok(Network::new(vec![Dense { weight, bias }], Output::Softmax)?)
        }
        Targets::Values(v) => {
            let (mean, std) = y.scale();
            let ys = Array1::from_iter(v.iter().map(|t| (t - mean) / std));
            let fitted = TweedieRegressor::params()
                .power(0.0)
                .alpha(alpha)
                .link(linfa_linear::Link::Identity)
                .max_iter(MAX_ITERATIONS as usize)
                .fit(&Dataset::new(x64, ys))?;
            let weight = fitted.coef.mapv(|w| (w * std) as f32);
            let dense = Dense {
                weight: weight.insert_axis(ndarray::Axis(0)),
                bias: Array1::from_elem(1, (fitted.intercept * std + mean) as f32),
            };
            Ok(Network::new(vec![dense], Output::Identity)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linfa::traits::Predict;

    fn blobs(n: usize, classes: usize) -> (Array2<f32>, Vec<usize>) {
        // Class k sits around (k, -k) with a deterministic wobble.
        let index: Vec<usize> = (0..n).map(|i| i % classes).collect();
        let x = Array2::from_shape_fn((n, 2), |(i, j)| {
            let c = index[i] as f32;
            let wobble = ((i * 37 + j * 11) % 13) as f32 / 13.0 - 0.5;
            if j == 0 {
                c + wobble
            } else {
                -c + 0.7 * wobble
            }
        });
        (x, index)
    }

    #[test]
    fn binary_network_reproduces_linfa_probabilities() {
        let (x, index) = blobs(60, 2);
        let y = Targets::Classes {
            index: index.clone(),
            classes: 2,
        };
        let net = fit(x.view(), &y, 1.0).unwrap();
        let fitted = LogisticRegression::default()
            .alpha(1.0)
            .max_iterations(MAX_ITERATIONS)
            .fit(&Dataset::new(
                x.mapv(f64::from),
                Array1::from(index.clone()),
            ))
            .unwrap();
        let theirs = fitted.predict_probabilities(&x.mapv(f64::from));
        let predicted = fitted.predict(&x.mapv(f64::from));
        let ours = net.forward_batch(x.view());
        for i in 0..x.nrows() {
            // theirs is P(pos); ours is P(class 1).
            let p1 = if fitted.labels().pos.class == 1 {
                theirs[i]
            } else {
                1.0 - theirs[i]
            };
            assert!((f64::from(ours[(i, 0)]) - p1).abs() < 1e-5, "row {i}");
            assert_eq!(usize::from(ours[(i, 0)] >= 0.5), predicted[i]);
        }
    }

    #[test]
    fn multinomial_network_puts_each_class_in_its_row() {
        let (x, index) = blobs(90, 3);
        let y = Targets::Classes {
            index: index.clone(),
            classes: 3,
        };
        let net = fit(x.view(), &y, 1.0).unwrap();
        let out = net.forward_batch(x.view());
        let correct = out
            .rows()
            .into_iter()
            .zip(&index)
            .filter(|(row, &c)| row.iter().all(|p| *p <= row[c]))
            .count();
        assert!(correct >= 85, "{correct}/90");
    }

    #[test]
    fn ridge_recovers_a_linear_truth_in_label_units() {
        let (x, v) = crate::train::sgd::tests::linear_truth(200);
        let net = fit(x.view(), &Targets::Values(v), 1e-9).unwrap();
        let l = &net.layers()[0];
        assert!((l.weight[(0, 0)] - 3.0).abs() < 1e-3, "{}", l.weight);
        assert!((l.weight[(0, 1)] + 2.0).abs() < 1e-3, "{}", l.weight);
        assert!((l.bias[0] - 100.0).abs() < 1e-3, "{}", l.bias);
    }
}
