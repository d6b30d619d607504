//! Anomaly scores for single encoded inputs: a multivariate Gaussian fitted to the
//! training rows (after the schema's encoding), the squared Mahalanobis distance of
//! a live row from it, the chi-square threshold that flags a row, and the one-sided
//! binomial test of whether too many rows are being flagged. Plain synchronous code;
//! it does not decide what to do about anomalies (that is for the monitor's jobs).
//!
//! - [`Gaussian::fit`]: the mean and the maximum-likelihood covariance (divided by
//!   n, as scikit-learn's `EmpiricalCovariance`). Only the mean and the inverse of
//!   the Cholesky factor `L` (Σ = L·Lᵀ) are stored, with the threshold and the
//!   fitting facts, so the model serialises into an artifact's JSON metadata.
//! - **Conditioning rule.** The covariance is ill-conditioned when its Cholesky
//!   factorisation meets a pivot `dᵢ = Lᵢᵢ²` with `dᵢ ≤ 1e-10 · Σᵢᵢ` (or a
//!   non-finite one): column i is, to within 1e-10 of its own variance, a linear
//!   combination of the columns before it (`dᵢ/Σᵢᵢ = 1 − R²` of that regression). A
//!   constant column (Σᵢᵢ = 0) and a duplicated or one-hot-complete group of columns
//!   both meet it. The ratio is taken per column rather than against the largest
//!   pivot so that a column with a small but honest variance (a rare category's
//!   slot) is not mistaken for a degenerate one; Cholesky's accuracy does not depend
//!   on column scales. An ill-conditioned covariance is replaced by the Ledoit–Wolf
//!   shrunk one, `(1 − s)·Σ + s·μ·I` with `μ = tr Σ / p` and `s` as scikit-learn's
//!   `ledoit_wolf` computes it; `shrinkage` records `s` (0 when not applied). If the
//!   shrunk covariance still meets the rule (two rows, say) fitting fails with
//!   [`AnomalyError::Singular`].
//! - **Degenerate data is an error, not a model that scores 0**: fewer than two rows
//!   ([`AnomalyError::TooFewRows`]) or every column constant
//!   ([`AnomalyError::Constant`]). A column that is constant among others is fine:
//!   shrinkage gives it a small variance, so a live value that differs scores high.
//! - [`Gaussian::score`]: `(x − mean)ᵀ Σ⁻¹ (x − mean) = ‖L⁻¹(x − mean)‖²`, a packed
//!   triangular product on the stack, no allocation. **NaN rule:** a NaN input value
//!   is taken as the mean (it contributes nothing), as the serving encoder imputes
//!   missing values with the training mean anyway. An infinite value scores +∞.
//! - The threshold is the chi-square quantile at `level` with p degrees of freedom;
//!   `expected_rate` is the share of fitting rows above it, floored at `1 − level`,
//!   the rate [`rate_test`] should test live counts against.

use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};
use statrs::distribution::{Binomial, ChiSquared, ContinuousCDF, DiscreteCDF};

/// The level of the threshold unless the configuration says otherwise.
pub const DEFAULT_LEVEL: f64 = 0.999;

/// A Cholesky pivot at or below this share of its column's variance marks the
/// covariance ill-conditioned (see the module documentation).
pub const PIVOT_TOLERANCE: f64 = 1e-10;

/// Rows and columns handled per stack block in [`Gaussian::score`].
const BLOCK: usize = 64;

/// Why a Gaussian cannot be fitted or loaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnomalyError {
    #[error("the anomaly model needs at least 2 rows, got {0}")]
    TooFewRows(usize),
    #[error("the anomaly model needs at least one feature")]
    NoFeatures,
    #[error("the level must lie strictly between 0 and 1, got {0}")]
    Level(f64),
    #[error("the value at row {row}, column {column} is not finite")]
    NonFinite { row: usize, column: usize },
    #[error("every column is constant: there is no spread to score against")]
    Constant,
    #[error("the covariance is singular even after Ledoit–Wolf shrinkage")]
    Singular,
    #[error("the chi-square threshold cannot be computed: {0}")]
    Threshold(String),
    #[error("invalid stored anomaly model: {0}")]
    Invalid(&'static str),
}

/// A multivariate Gaussian over encoded inputs, ready to score them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredGaussian")]
pub struct Gaussian {
    mean: Vec<f64>,
    /// `L⁻¹`, lower-triangular, packed by rows: row i holds `i + 1` values from
    /// offset `i(i+1)/2`.
    inv_chol: Vec<f64>,
    threshold: f64,
    level: f64,
    shrinkage: f64,
    rows: usize,
    expected_rate: f64,
}

/// The serialised form, checked before it becomes a [`Gaussian`] (so a damaged
/// artifact cannot make `score` index out of bounds).
#[derive(Deserialize)]
struct StoredGaussian {
    mean: Vec<f64>,
    inv_chol: Vec<f64>,
    threshold: f64,
    level: f64,
    shrinkage: f64,
    rows: usize,
    expected_rate: f64,
}

impl TryFrom<StoredGaussian> for Gaussian {
    type Error = AnomalyError;

    fn try_from(s: StoredGaussian) -> Result<Self, Self::Error> {
        let p = s.mean.len();
        if p == 0 {
            return Err(AnomalyError::NoFeatures);
        }
        if s.inv_chol.len() != packed_len(p) {
            return Err(AnomalyError::Invalid("inv_chol does not match the mean"));
        }
        if !s.mean.iter().chain(&s.inv_chol).all(|v| v.is_finite()) {
            return Err(AnomalyError::Invalid("non-finite mean or factor"));
        }
        if (0..p).any(|i| s.inv_chol[diag(i)] <= 0.0) {
            return Err(AnomalyError::Invalid("factor diagonal not positive"));
        }
        if !(s.level > 0.0 && s.level < 1.0) {
            return Err(AnomalyError::Level(s.level));
        }
        let unit = |v: f64| (0.0..=1.0).contains(&v);
        let in_range = s.threshold.is_finite()
            && s.threshold > 0.0
            && unit(s.shrinkage)
            && unit(s.expected_rate);
        if !in_range {
            return Err(AnomalyError::Invalid(
                "threshold, shrinkage or expected rate out of range",
            ));
        }
        Ok(Gaussian {
            mean: s.mean,
            inv_chol: s.inv_chol,
            threshold: s.threshold,
            level: s.level,
            shrinkage: s.shrinkage,
            rows: s.rows,
            expected_rate: s.expected_rate,
        })
    }
}

impl Gaussian {
    /// Fits the Gaussian to `rows` (one encoded input per row) with the threshold
    /// at `level` (usually [`DEFAULT_LEVEL`]).
    pub fn fit<T: Copy + Into<f64>>(
        rows: ArrayView2<'_, T>,
        level: f64,
    ) -> Result<Gaussian, AnomalyError> {
        if !(level > 0.0 && level < 1.0) {
            return Err(AnomalyError::Level(level));
        }
        let (n, p) = rows.dim();
        if p == 0 {
            return Err(AnomalyError::NoFeatures);
        }
        if n < 2 {
            return Err(AnomalyError::TooFewRows(n));
        }
        let x: Array2<f64> = rows.mapv(Into::into);
        if let Some(((row, column), _)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(AnomalyError::NonFinite { row, column });
        }
        let mut mean: Vec<f64> = x.sum_axis(Axis(0)).iter().map(|s| s / n as f64).collect();
        // A constant column gets its value as the mean exactly, so that its
        // variance is exactly 0 rather than a rounding residue.
        let mut constant = 0;
        for (j, col) in x.axis_iter(Axis(1)).enumerate() {
            let first = col[0];
            if col.iter().all(|v| *v == first) {
                mean[j] = first;
                constant += 1;
            }
        }
        if constant == p {
            return Err(AnomalyError::Constant);
        }
        let mut xc = x;
        for mut row in xc.axis_iter_mut(Axis(0)) {
            row.iter_mut().zip(&mean).for_each(|(v, m)| *v -= m);
        }
        let empirical = xc.t().dot(&xc) / n as f64;
        let (chol, shrinkage) = match cholesky(&empirical) {
            Some(l) => (l, 0.0),
            None => {
                let (shrunk, s) = ledoit_wolf(&xc, &empirical);
                (cholesky(&shrunk).ok_or(AnomalyError::Singular)?, s)
            }
        };
        let threshold = ChiSquared::new(p as f64)
            .map_err(|e| AnomalyError::Threshold(e.to_string()))?
            .inverse_cdf(level);
        let mut model = Gaussian {
            mean,
            inv_chol: invert_lower(&chol, p),
            threshold,
            level,
            shrinkage,
            rows: n,
            expected_rate: 1.0 - level,
        };
        let flagged = rows
            .axis_iter(Axis(0))
            .filter(|r| {
                r.as_slice()
                    .map(|s| model.score(s))
                    .unwrap_or_else(|| model.score(&r.to_vec()))
                    > threshold
            })
            .count();
        model.expected_rate = (flagged as f64 / n as f64).max(1.0 - level);
        Ok(model)
    }

    /// The squared Mahalanobis distance of `x` from the mean. NaN values count as
    /// the mean; an infinite value gives +∞. `x` must have [`Gaussian::dim`]
    /// values: any other length is a caller's bug and gives NaN (which is never an
    /// anomaly).
    pub fn score<T: Copy + Into<f64>>(&self, x: &[T]) -> f64 {
        let p = self.mean.len();
        debug_assert_eq!(x.len(), p, "anomaly score of a wrongly sized input");
        if x.len() != p {
            return f64::NAN;
        }
        // z = L⁻¹ d by blocks of rows; each row's dot product walks the blocks of
        // d = x − mean it needs, filled on the stack.
        let mut d = [0.0f64; BLOCK];
        let mut total = 0.0;
        for r0 in (0..p).step_by(BLOCK) {
            let r1 = (r0 + BLOCK).min(p);
            let mut z = [0.0f64; BLOCK];
            for c0 in (0..r1).step_by(BLOCK) {
                let c1 = (c0 + BLOCK).min(r1);
                for (dj, (xj, mj)) in d.iter_mut().zip(x[c0..c1].iter().zip(&self.mean[c0..c1])) {
                    let v = (*xj).into() - mj;
                    *dj = if v.is_nan() { 0.0 } else { v };
                }
                for i in r0..r1 {
                    let hi = c1.min(i + 1);
                    if hi <= c0 {
                        continue;
                    }
                    let start = i * (i + 1) / 2;
                    z[i - r0] += dot(&self.inv_chol[start + c0..start + hi], &d[..hi - c0]);
                }
            }
            total += z[..r1 - r0].iter().map(|v| v * v).sum::<f64>();
        }
        // Only an infinite input makes NaN here (∞ − ∞ or 0·∞).
        if total.is_nan() {
            f64::INFINITY
        } else {
            total
        }
    }

    /// Whether a score is above the threshold.
    pub fn is_anomaly(&self, score: f64) -> bool {
        score > self.threshold
    }

    /// The number of features.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The chi-square quantile at `level` with `dim()` degrees of freedom.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    pub fn level(&self) -> f64 {
        self.level
    }

    /// The Ledoit–Wolf shrinkage applied, 0 when the covariance was well
    /// conditioned.
    pub fn shrinkage(&self) -> f64 {
        self.shrinkage
    }

    /// The number of rows fitted.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The share of fitting rows above the threshold, at least `1 − level`.
    pub fn expected_rate(&self) -> f64 {
        self.expected_rate
    }

    /// The covariance used (empirical or shrunk), rebuilt from the stored factor.
    pub fn covariance(&self) -> Array2<f64> {
        let p = self.dim();
        let l = invert_lower(&self.inv_chol, p);
        Array2::from_shape_fn((p, p), |(i, j)| {
            let k = i.min(j) + 1;
            dot(
                &l[i * (i + 1) / 2..i * (i + 1) / 2 + k],
                &l[j * (j + 1) / 2..j * (j + 1) / 2 + k],
            )
        })
    }
}

/// The one-sided binomial p-value `P(X ≥ anomalies)` for `X ~ Binomial(n,
/// expected)`, as scipy's `binomtest(k, n, p, alternative='greater')`. 1 when
/// `anomalies` is 0; NaN when `expected` is outside [0, 1] or `anomalies > n`.
pub fn rate_test(anomalies: u64, n: u64, expected: f64) -> f64 {
    if anomalies > n {
        return f64::NAN;
    }
    if anomalies == 0 {
        return 1.0;
    }
    match Binomial::new(expected, n) {
        Ok(b) => b.sf(anomalies - 1).clamp(0.0, 1.0),
        Err(_) => f64::NAN,
    }
}

fn packed_len(p: usize) -> usize {
    p * (p + 1) / 2
}

fn diag(i: usize) -> usize {
    i * (i + 1) / 2 + i
}

/// A dot product with four accumulators, so that the additions do not wait on
/// each other (and the compiler can vectorise them). Also the f64 reference of
/// the ONNX import's check.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let (ac, bc) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0.0f64; 4];
    for (x, y) in ac.zip(bc) {
        acc[0] += x[0] * y[0];
        acc[1] += x[1] * y[1];
        acc[2] += x[2] * y[2];
        acc[3] += x[3] * y[3];
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// The packed lower Cholesky factor of `s`, or `None` when a pivot is at or below
/// [`PIVOT_TOLERANCE`] times its diagonal entry (or not finite).
fn cholesky(s: &Array2<f64>) -> Option<Vec<f64>> {
    let p = s.nrows();
    let mut l = vec![0.0; packed_len(p)];
    for i in 0..p {
        let ri = i * (i + 1) / 2;
        for j in 0..i {
            let rj = j * (j + 1) / 2;
            let v = s[(i, j)] - dot(&l[ri..ri + j], &l[rj..rj + j]);
            l[ri + j] = v / l[rj + j];
        }
        let pivot = s[(i, i)] - dot(&l[ri..ri + i], &l[ri..ri + i]);
        if !pivot.is_finite() || pivot <= PIVOT_TOLERANCE * s[(i, i)] || pivot <= 0.0 {
            return None;
        }
        l[ri + i] = pivot.sqrt();
    }
    Some(l)
}

/// The inverse of a packed lower-triangular matrix with a positive diagonal, packed
/// the same way.
fn invert_lower(l: &[f64], p: usize) -> Vec<f64> {
    let mut w = vec![0.0; packed_len(p)];
    for i in 0..p {
        let ri = i * (i + 1) / 2;
        let lii = l[ri + i];
        w[ri + i] = 1.0 / lii;
        // W_ij = −(Σ_{k=j}^{i−1} L_ik W_kj) / L_ii
        for j in 0..i {
            let sum: f64 = (j..i).map(|k| l[ri + k] * w[k * (k + 1) / 2 + j]).sum();
            w[ri + j] = -sum / lii;
        }
    }
    w
}

/// The Ledoit–Wolf shrunk covariance and its shrinkage, from the centred rows
/// `xc` and their empirical covariance, following scikit-learn's `ledoit_wolf`
/// (which gives one feature no shrinkage).
fn ledoit_wolf(xc: &Array2<f64>, empirical: &Array2<f64>) -> (Array2<f64>, f64) {
    let (n, p) = xc.dim();
    if p == 1 {
        return (empirical.clone(), 0.0);
    }
    let (nf, pf) = (n as f64, p as f64);
    let trace = empirical.diag().sum();
    let mu = trace / pf;
    // delta_ = ‖S‖²_F; beta_ = Σ_k ‖x_k‖⁴ (the sum of the entries of X2ᵀX2).
    let delta_sum = empirical.iter().map(|v| v * v).sum::<f64>();
    let beta_sum: f64 = xc
        .axis_iter(Axis(0))
        .map(|r| r.iter().map(|v| v * v).sum::<f64>().powi(2))
        .sum();
    let beta = (beta_sum / nf - delta_sum) / (pf * nf);
    let delta = (delta_sum - 2.0 * mu * trace + pf * mu * mu) / pf;
    let beta = beta.min(delta);
    // Rounding can leave beta a hair below 0 where it is 0 in exact arithmetic.
    let shrinkage = if beta <= 0.0 { 0.0 } else { beta / delta };
    let mut shrunk = empirical * (1.0 - shrinkage);
    shrunk
        .diag_mut()
        .iter_mut()
        .for_each(|v| *v += shrinkage * mu);
    (shrunk, shrinkage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, s, Array1};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn close(got: f64, want: f64, rel: f64) -> bool {
        (got - want).abs() <= rel * want.abs().max(1e-300)
    }

    fn assert_all_close(got: &[f64], want: &[f64], rel: f64) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= rel * w.abs().max(1.0), "[{i}]: {g} != {w}");
        }
    }

    /// The reference data: `np.round(rng.randn(12, 3) @ A.T + [1, -2, 0.5], 2)` with
    /// `np.random.RandomState(7)` and A = [[1,0,0],[0.6,0.8,0],[-0.3,0.4,0.9]].
    fn base() -> Array2<f64> {
        array![
            [2.69, -1.36, -0.16],
            [1.41, -2.39, 0.06],
            [1.0, -3.4, 0.71],
            [1.6, -2.14, -0.08],
            [1.51, -1.91, 0.03],
            [-0.45, -2.43, 1.27],
            [1.27, -3.06, 1.29],
            [1.15, -2.22, 2.13],
            [0.95, -3.19, -0.43],
            [-1.29, -2.53, 1.23],
            [0.26, -1.59, -0.33],
            [1.54, -3.33, -1.08],
        ]
    }

    fn queries() -> Array2<f64> {
        array![
            [1.0, -2.0, 0.5],
            [2.5, -1.0, 0.0],
            [-1.0, 0.3, 2.2],
            [0.0, 0.0, 0.0]
        ]
    }

    /// `x` with `col` appended as its last column.
    fn with_column(x: &Array2<f64>, col: Array1<f64>) -> Array2<f64> {
        ndarray::concatenate![Axis(1), x.view(), col.insert_axis(Axis(1))]
    }

    fn scores(g: &Gaussian, y: &Array2<f64>) -> Vec<f64> {
        y.rows().into_iter().map(|r| g.score(&r.to_vec())).collect()
    }

    /// Expected values from scikit-learn 1.9.1:
    /// `e = EmpiricalCovariance().fit(X); e.covariance_, e.mahalanobis(Y)`.
    #[test]
    fn well_conditioned_scores_match_sklearn_empirical_covariance() {
        let g = Gaussian::fit(base().view(), DEFAULT_LEVEL).unwrap();
        assert_eq!(g.shrinkage(), 0.0);
        assert_eq!((g.rows(), g.dim()), (12, 3));
        let cov = [
            0.993_099_999_999_999_9,
            0.106_083_333_333_333_31,
            -0.370_600_000_000_000_04,
            0.106_083_333_333_333_31,
            0.414_452_083_333_333_3,
            -0.015_091_666_666_666_677,
            -0.370_600_000_000_000_04,
            -0.015_091_666_666_666_677,
            0.794_455_555_555_555_6,
        ];
        assert_all_close(g.covariance().as_slice().unwrap(), &cov, 1e-12);
        let want = [
            0.538_464_371_938_327_3,
            6.560_386_320_485_447,
            27.063_185_668_509_89,
            18.532_279_913_877_49,
        ];
        for (got, want) in scores(&g, &queries()).iter().zip(want) {
            assert!(close(*got, want, 1e-10), "{got} != {want}");
        }
    }

    /// scikit-learn 1.9.1 with X = base() plus a copy of column 0, Y = queries()
    /// plus a copy of column 0 except Y[1, 3] = 2.0:
    /// `lw = LedoitWolf().fit(X); lw.covariance_, lw.shrinkage_, lw.mahalanobis(Y)`.
    #[test]
    fn duplicated_column_is_shrunk_like_sklearn_ledoit_wolf() {
        let x = base();
        let xd = with_column(&x, x.column(0).to_owned());
        let g = Gaussian::fit(xd.view(), DEFAULT_LEVEL).unwrap();
        assert!(
            close(g.shrinkage(), 0.419_000_190_794_493_7, 1e-10),
            "{}",
            g.shrinkage()
        );
        let cov = [
            0.911_678_588_097_835_4,
            0.061_634_396_426_550_78,
            -0.215_318_529_291_560_67,
            0.576_990_910_521_988_3,
            0.061_634_396_426_550_78,
            0.575_484_258_917_338_5,
            -0.008_768_255_453_926_439,
            0.061_634_396_426_550_78,
            -0.215_318_529_291_560_67,
            -0.008_768_255_453_926_439,
            0.796_266_203_775_879_4,
            -0.215_318_529_291_560_67,
            0.576_990_910_521_988_3,
            0.061_634_396_426_550_78,
            -0.215_318_529_291_560_67,
            0.911_678_588_097_835_4,
        ];
        assert_all_close(g.covariance().as_slice().unwrap(), &cov, 1e-12);
        let y = queries();
        let mut yd = with_column(&y, y.column(0).to_owned());
        yd[(1, 3)] = 2.0;
        let want = [
            0.390_144_066_616_119_1,
            5.802_729_786_927_444,
            22.172_616_098_208_273,
            13.282_678_069_433_56,
        ];
        for (got, want) in scores(&g, &yd).iter().zip(want) {
            assert!(close(*got, want, 1e-10), "{got} != {want}");
        }
    }

    /// scikit-learn 1.9.1 with X = base() plus a constant column of 3.0, Y =
    /// queries() plus 3.0 except Y[2, 3] = 3.5, as above.
    #[test]
    fn constant_column_is_shrunk_like_sklearn_ledoit_wolf() {
        let xc = with_column(&base(), Array1::from_elem(12, 3.0));
        let g = Gaussian::fit(xc.view(), DEFAULT_LEVEL).unwrap();
        assert!(
            close(g.shrinkage(), 0.517_848_091_690_363_4, 1e-10),
            "{}",
            g.shrinkage()
        );
        let cov = g.covariance();
        let want_cov = [
            0.763_901_423_563_853_6,
            0.051_148_281_606_513_94,
            -0.178_685_497_219_551_35,
            0.0,
            0.051_148_281_606_513_94,
            0.484_905_226_303_624_76,
            -0.007_276_475_882_906_271,
            0.0,
            -0.178_685_497_219_551_35,
            -0.007_276_475_882_906_271,
            0.668_124_625_599_857_2,
            0.0,
            0.0,
            0.0,
            0.0,
            0.285_076_363_421_553_5,
        ];
        assert_all_close(cov.as_slice().unwrap(), &want_cov, 1e-12);
        let mut y = with_column(&queries(), Array1::from_elem(4, 3.0));
        y[(2, 3)] = 3.5;
        let want = [
            0.463_031_637_031_832_6,
            6.909_023_241_619_353,
            26.157_432_862_080_64,
            15.149_380_520_934_736,
        ];
        let got = scores(&g, &y);
        for (got, want) in got.iter().zip(want) {
            assert!(close(*got, want, 1e-10), "{got} != {want}");
        }
        assert!(got.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn degenerate_data_is_an_error() {
        let one = array![[1.0, 2.0, 3.0]];
        assert_eq!(
            Gaussian::fit(one.view(), DEFAULT_LEVEL),
            Err(AnomalyError::TooFewRows(1))
        );
        let flat = Array2::from_elem((50, 3), 0.7);
        assert_eq!(
            Gaussian::fit(flat.view(), DEFAULT_LEVEL),
            Err(AnomalyError::Constant)
        );
        // Two rows span one direction and Ledoit–Wolf has nothing to shrink with.
        let two = array![[0.0, 0.0], [1.0, 2.0]];
        assert_eq!(
            Gaussian::fit(two.view(), DEFAULT_LEVEL),
            Err(AnomalyError::Singular)
        );
        let x = base();
        assert_eq!(
            Gaussian::fit(x.slice(s![.., 0..0]), DEFAULT_LEVEL),
            Err(AnomalyError::NoFeatures)
        );
        assert_eq!(Gaussian::fit(x.view(), 1.0), Err(AnomalyError::Level(1.0)));
        let mut bad = x.clone();
        bad[(4, 2)] = f64::NAN;
        assert_eq!(
            Gaussian::fit(bad.view(), DEFAULT_LEVEL),
            Err(AnomalyError::NonFinite { row: 4, column: 2 })
        );
    }

    #[test]
    fn nan_counts_as_the_mean_and_infinity_as_an_anomaly() {
        let g = Gaussian::fit(base().view(), DEFAULT_LEVEL).unwrap();
        let x = [2.5, f64::NAN, 0.0];
        let imputed = [2.5, g.mean()[1], 0.0];
        assert_eq!(g.score(&x), g.score(&imputed));
        assert_eq!(g.score(&[f64::NAN; 3]), 0.0);
        assert_eq!(g.score(g.mean()), 0.0);
        assert_eq!(g.score(&[f64::INFINITY, 0.0, 0.0]), f64::INFINITY);
        assert!(g.is_anomaly(g.score(&[0.0, f64::NEG_INFINITY, 0.0])));
        // f32 inputs, as the serving encoder produces them.
        let x32 = [2.5f32, -1.0, 0.0];
        let x64 = [2.5f64, -1.0, 0.0];
        assert!(close(g.score(&x32), g.score(&x64), 1e-12));
    }

    /// scipy 1.17.1: `chi2.ppf(0.999, df)` and `chi2.ppf(0.99, df)`.
    #[test]
    fn threshold_is_scipy_chi2_ppf() {
        let cases = [
            (1, 10.827_566_170_662_733, 6.634_896_601_021_214_5),
            (2, 13.815_510_557_964_274, 9.210_340_371_976_18),
            (5, 20.515_005_652_432_873, 15.086_272_469_388_99),
            (30, 59.703_064_304_429_94, 50.892_181_311_517_07),
            (100, 149.449_252_779_038_86, 135.806_723_171_026_76),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (df, q999, q99) in cases {
            let x = Array2::from_shape_fn((df + 20, df), |_| rng.gen_range(-1.0..1.0));
            for (level, want) in [(0.999, q999), (0.99, q99)] {
                let g = Gaussian::fit(x.view(), level).unwrap();
                assert!(
                    close(g.threshold(), want, 1e-6),
                    "df {df}: {}",
                    g.threshold()
                );
                assert!(g.is_anomaly(want * 1.001) && !g.is_anomaly(want * 0.999));
            }
        }
    }

    /// scipy 1.17.1: `binomtest(k, n, p, alternative='greater').pvalue`.
    #[test]
    fn rate_test_is_scipy_binomtest_greater() {
        let cases = [
            (0, 1000, 0.001, 1.0),
            (1, 1000, 0.001, 0.632_304_575_229_035_9),
            (3, 1000, 0.001, 0.080_209_342_840_201),
            (5, 1000, 0.001, 0.003_636_878_029_521_792),
            (12, 5000, 0.001, 0.005_428_387_381_805_3),
            (40, 20_000, 0.001, 5.267_621_868_530_425e-5),
            (7, 50, 0.05, 0.011_786_447_797_264_277),
            (50, 50, 0.9, 0.005_153_775_207_320_118),
            (2, 10, 0.5, 0.989_257_812_5),
        ];
        for (k, n, p, want) in cases {
            let got = rate_test(k, n, p);
            assert!(close(got, want, 1e-9), "({k}, {n}, {p}): {got} != {want}");
        }
        assert_eq!(rate_test(0, 0, 0.001), 1.0);
        assert!(rate_test(3, 2, 0.001).is_nan());
        assert!(rate_test(1, 10, 1.5).is_nan());
    }

    /// Rows `mean + L·z` with z standard normal (Box–Muller).
    fn draw(g: &Gaussian, n: usize, rng: &mut ChaCha8Rng) -> Array2<f64> {
        let p = g.dim();
        let l = invert_lower(&g.inv_chol, p);
        let mut out = Array2::zeros((n, p));
        let mut z = vec![0.0; p];
        for mut row in out.rows_mut() {
            for v in z.iter_mut() {
                let (u1, u2): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
                *v = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            }
            for i in 0..p {
                let ri = i * (i + 1) / 2;
                row[i] = g.mean()[i] + dot(&l[ri..ri + i + 1], &z[..i + 1]);
            }
        }
        out
    }

    /// Correlated rows: `A·u` with u a sum of uniforms per coordinate.
    fn correlated(n: usize, p: usize, seed: u64) -> Array2<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a = Array2::from_shape_fn((p, p), |_| rng.gen_range(-1.0..1.0));
        let u = Array2::from_shape_fn((n, p), |_| {
            (0..4).map(|_| rng.gen_range(-1.0..1.0)).sum::<f64>()
        });
        u.dot(&a.t())
    }

    #[test]
    fn flags_about_one_in_a_thousand_gaussian_rows() {
        let g = Gaussian::fit(correlated(2000, 8, 11).view(), DEFAULT_LEVEL).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let n = 100_000u64;
        let sample = draw(&g, n as usize, &mut rng);
        let flagged = sample
            .rows()
            .into_iter()
            .filter(|r| g.is_anomaly(g.score(r.as_slice().unwrap())))
            .count() as u64;
        // Neither tail of Binomial(100000, 0.001) beyond 1e-4.
        let b = Binomial::new(0.001, n).unwrap();
        assert!(rate_test(flagged, n, 0.001) > 1e-4, "{flagged} flagged");
        assert!(b.cdf(flagged) > 1e-4, "{flagged} flagged");
        // The fitting rows are light-tailed: the floor applies.
        assert!(close(g.expected_rate(), 1.0 - DEFAULT_LEVEL, 1e-12));
    }

    #[test]
    fn heavy_tailed_training_rows_raise_the_expected_rate() {
        // One row in 50 scaled by 8: far more than 0.1% of rows exceed the
        // threshold, and the expected rate says so.
        let mut x = correlated(5000, 5, 21);
        for (i, mut row) in x.rows_mut().into_iter().enumerate() {
            if i % 50 == 0 {
                row.mapv_inplace(|v| v * 8.0);
            }
        }
        let g = Gaussian::fit(x.view(), DEFAULT_LEVEL).unwrap();
        let flagged = x
            .rows()
            .into_iter()
            .filter(|r| g.is_anomaly(g.score(r.as_slice().unwrap())))
            .count();
        assert_eq!(g.expected_rate(), flagged as f64 / 5000.0);
        assert!(g.expected_rate() > 0.005, "{}", g.expected_rate());
    }

    #[test]
    fn scores_beyond_one_stack_block_match_the_covariance() {
        // 70 features: two blocks of rows and columns in `score`.
        let x = correlated(400, 70, 5);
        let g = Gaussian::fit(x.view(), DEFAULT_LEVEL).unwrap();
        assert_eq!(g.shrinkage(), 0.0);
        let row = x.row(7).mapv(|v| v + 0.3);
        let d = &row - &Array1::from(g.mean().to_vec());
        // dᵀ Σ⁻¹ d by solving Σ y = d with the factor: y = Wᵀ W d.
        let w = &g.inv_chol;
        let wd: Vec<f64> = (0..70)
            .map(|i| (0..=i).map(|j| w[i * (i + 1) / 2 + j] * d[j]).sum())
            .collect();
        let want: f64 = wd.iter().map(|v| v * v).sum();
        assert!(close(g.score(row.as_slice().unwrap()), want, 1e-10));
        // And Σ·(Wᵀ W) is the identity.
        let cov = g.covariance();
        let wm = Array2::from_shape_fn(
            (70, 70),
            |(i, j)| {
                if j <= i {
                    w[i * (i + 1) / 2 + j]
                } else {
                    0.0
                }
            },
        );
        let prod = cov.dot(&wm.t().dot(&wm));
        for ((i, j), v) in prod.indexed_iter() {
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((v - want).abs() < 1e-8, "({i}, {j}): {v}");
        }
    }

    #[test]
    fn serde_round_trip_keeps_the_scores_and_rejects_damage() {
        let xd = with_column(&base(), base().column(0).to_owned());
        let g = Gaussian::fit(xd.view(), DEFAULT_LEVEL).unwrap();
        let json = serde_json::to_string(&g).unwrap();
        let back: Gaussian = serde_json::from_str(&json).unwrap();
        // serde_json (without its `float_roundtrip` feature) may parse a float one
        // ulp off, so the numbers are compared to 1e-15.
        assert_eq!((back.rows(), back.level()), (g.rows(), g.level()));
        assert_all_close(back.mean(), g.mean(), 1e-15);
        assert_all_close(&back.inv_chol, &g.inv_chol, 1e-15);
        for (a, b) in [
            (back.threshold(), g.threshold()),
            (back.shrinkage(), g.shrinkage()),
            (back.expected_rate(), g.expected_rate()),
        ] {
            assert!(close(a, b, 1e-15), "{a} != {b}");
        }
        let x = [1.0, -2.0, 0.3, 1.1];
        assert!(close(back.score(&x), g.score(&x), 1e-13));
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["inv_chol"].as_array_mut().unwrap().pop();
        assert!(serde_json::from_value::<Gaussian>(v).is_err());
    }
}
