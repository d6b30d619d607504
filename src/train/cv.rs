//! k-fold cross-validation: which rows validate in which fold, and the scores of
//! one candidate over all folds.
//!
//! Folds are assigned here rather than with linfa's `Dataset::fold`, which (in
//! linfa 0.8) cuts `rows / k`-sized chunks and so leaves the `rows mod k` last rows
//! out of every validation fold, and does not stratify. The rule: shuffle the row
//! indices with the seed; for classification, stable-sort the shuffled rows by
//! class; then deal them to folds 0, 1, …, k−1, 0, 1, … in that order. Every row
//! validates in exactly one fold, fold sizes differ by at most one, and each
//! class's rows are spread over the folds as evenly as they can be.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::metrics::Scores;
use super::sgd::Targets;

/// The fold in which each row is a validation row.
pub fn assign(targets: &Targets, k: usize, seed: u64) -> Vec<usize> {
    let n = targets.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    if let Targets::Classes { index, .. } = targets {
        order.sort_by_key(|&i| index[i]);
    }
    let mut fold = vec![0; n];
    for (position, &row) in order.iter().enumerate() {
        fold[row] = position % k.max(1);
    }
    fold
}

/// The training and validation rows of fold `f`, each in ascending order.
pub fn split(assignment: &[usize], f: usize) -> (Vec<usize>, Vec<usize>) {
    (0..assignment.len()).partition(|&i| assignment[i] != f)
}

/// A candidate's cross-validated performance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CvReport {
    pub folds: usize,
    /// `accuracy` or `r2`.
    pub metric: &'static str,
    pub mean: f64,
    /// Population standard deviation over folds (numpy's default, as in
    /// scikit-learn's `cv_results_`).
    pub std: f64,
    pub per_fold: Vec<f64>,
    /// Scores of the out-of-fold predictions of all folds pooled: per-class
    /// precision, recall, F1 and the confusion matrix, or R², RMSE and MAE.
    pub pooled: Scores,
}

/// Mean and population standard deviation.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_validates_in_exactly_one_fold_and_classes_are_stratified() {
        // 103 rows (not a multiple of 5) in classes of 60, 30 and 13 rows.
        let index: Vec<usize> = (0..103)
            .map(|i| match i % 103 {
                i if i < 60 => 0,
                i if i < 90 => 1,
                _ => 2,
            })
            .collect();
        let t = Targets::Classes {
            index: index.clone(),
            classes: 3,
        };
        let a = assign(&t, 5, 42);
        let mut seen = vec![0; 103];
        let mut sizes = Vec::new();
        for f in 0..5 {
            let (train, valid) = split(&a, f);
            assert_eq!(train.len() + valid.len(), 103);
            for &i in &valid {
                seen[i] += 1;
            }
            sizes.push(valid.len());
            for (class, total) in [(0, 60), (1, 30), (2, 13)] {
                let in_fold = valid.iter().filter(|&&i| index[i] == class).count();
                let floor = total / 5;
                assert!(
                    in_fold == floor || in_fold == floor + 1,
                    "{class}: {in_fold}"
                );
            }
        }
        assert!(seen.iter().all(|&s| s == 1));
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        // The seed decides the assignment, and only the seed.
        assert_eq!(a, assign(&t, 5, 42));
        assert_ne!(a, assign(&t, 5, 43));
    }

    #[test]
    fn regression_folds_cover_all_rows() {
        let t = Targets::Values((0..11).map(f64::from).collect());
        let a = assign(&t, 3, 7);
        let counts: Vec<usize> = (0..3).map(|f| split(&a, f).1.len()).collect();
        assert_eq!(counts.iter().sum::<usize>(), 11);
        assert!(counts.iter().all(|&c| c == 3 || c == 4), "{counts:?}");
    }

    #[test]
    fn std_is_the_population_one() {
        // numpy.std([0.9, 1.0, 0.8]) = 0.0816496580927726
        let (m, s) = mean_std(&[0.9, 1.0, 0.8]);
        assert!((m - 0.9).abs() < 1e-12);
        assert!((s - 0.081_649_658_092_772_6).abs() < 1e-12);
    }
}
