//! The statistics steward computes, each checked against scipy: plain math over
//! slices, the bottom layer of the crate (it imports nothing of steward's).
//!
//! - [`gaussian`]: the anomaly model: a multivariate Gaussian of the training
//!   rows, the squared Mahalanobis distance, its chi-square threshold and the
//!   anomaly-rate test.
//!
//! - [`ks_2samp`]: the two-sided two-sample Kolmogorov–Smirnov test as scipy's
//!   `ks_2samp(method='auto')` computes it: the statistic over the pooled sample
//!   (ties handled by evaluating both ECDFs at every pooled value), and, when both
//!   samples have at most 10,000 values, the exact p-value of the lattice-path
//!   method (Hodges 1958; the 1 − p recursion of Viehmann 2021, arXiv:2102.08037,
//!   walked along anti-diagonals so that it vectorises, AVX2 chosen at run time;
//!   for equal sizes the closed form of the square), except when the samples are
//!   large (nm/(n+m) ≥ 100) and the asymptotic p-value is below 1e-9, where both are
//!   within 1e-6 of each other and the exact sum is skipped. Larger samples use the
//!   asymptotic Kolmogorov distribution with `√(nm/(n+m))·D` (scipy uses the exact
//!   one-sample distribution at that size; the two agree to about 1e-3).
//! - [`chisquare`]: Pearson's statistic of observed counts against expected ones,
//!   with `k − 1` degrees of freedom (statrs' chi-square distribution).
//! - [`psi`]: the population stability index over given bins.
//! - [`adjust`]: Bonferroni or Benjamini–Hochberg adjusted p-values.
//! - [`welch_greater`]: Welch's one-sided t-test that one sample's mean is above
//!   another's, from their summaries (scipy's `ttest_ind(equal_var=False,
//!   alternative='greater')`).

pub mod gaussian;

use statrs::distribution::{ChiSquared, ContinuousCDF, StudentsT};

/// Samples up to this size get the exact KS p-value (scipy's `MAX_AUTO_N`).
pub const KS_EXACT_MAX: usize = 10_000;

/// Below this asymptotic p-value (with large samples) the exact one is not computed.
pub const TINY_P: f64 = 1e-9;

/// A test's statistic and p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    pub statistic: f64,
    pub p_value: f64,
}

/// Two-sided two-sample KS test of `a` against `b` (neither may be empty, and both
/// must be free of NaN: the caller drops missing values).
pub fn ks_2samp(a: &[f64], b: &[f64]) -> Option<TestResult> {
    if a.is_empty() || b.is_empty() || a.iter().chain(b).any(|v| v.is_nan()) {
        return None;
    }
    let (n1, n2) = (a.len(), b.len());
    let d = ks_statistic(a, b);
    let en = (n1 * n2) as f64 / (n1 + n2) as f64;
    let approx = asymptotic(n1, n2, d);
    // The exact recursion costs about max(n)·D·lcm/max(n) steps; when the samples
    // are large and the p-value is below 1e-9 either way, the asymptotic value is
    // within 1e-6 of the exact one and costs nothing.
    let p = if n1.max(n2) <= KS_EXACT_MAX && !(en >= 100.0 && approx < TINY_P) {
        exact_two_sided(n1, n2, d).unwrap_or(approx)
    } else {
        approx
    };
    Some(TestResult {
        statistic: d,
        p_value: p.clamp(0.0, 1.0),
    })
}

/// The largest distance between the samples' ECDFs over the pooled values, where
/// both ECDFs count every value ≤ the pooled one (searchsorted side='right').
fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let (a, b) = (sorted_keys(a), sorted_keys(b));
    let (n1, n2) = (a.len(), b.len());
    // Walk the pooled values in order. (A walk without branches, one value per
    // step, is slower: its steps form one chain of loads and compares.)
    let (mut i, mut j) = (0, 0);
    let mut d: f64 = 0.0;
    while i < n1 || j < n2 {
        let v = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => *x.min(y),
            (Some(x), None) => *x,
            (None, Some(y)) => *y,
            (None, None) => break,
        };
        while i < n1 && a[i] <= v {
            i += 1;
        }
        while j < n2 && b[j] <= v {
            j += 1;
        }
        let diff = (i as f64 / n1 as f64 - j as f64 / n2 as f64).abs();
        d = d.max(diff);
    }
    d
}

/// The values as sort keys, in ascending order. Keys compare as the values do
/// (−0.0 equal to 0.0), and sorting integers is more than twice as fast as sorting
/// floats with `total_cmp`. No value may be NaN.
fn sorted_keys(values: &[f64]) -> Vec<u64> {
    let mut keys: Vec<u64> = values.iter().map(|&v| order_key(v)).collect();
    keys.sort_unstable();
    keys
}

/// Flip the sign bit of a non-negative value and every bit of a negative one: the
/// unsigned order of the results is the numeric order of the values.
fn order_key(v: f64) -> u64 {
    // Adding 0.0 turns −0.0 into 0.0 and leaves every other value as it is.
    let bits = (v + 0.0).to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    }
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The exact two-sided p-value, or `None` when the floating-point recursion
/// fails (then the asymptotic value is used, as scipy does).
fn exact_two_sided(n1: usize, n2: usize, d: f64) -> Option<f64> {
    let g = gcd(n1, n2);
    let lcm = (n1 / g) * n2;
    // D is a multiple of 1/lcm; recover the integer exactly.
    let h = (d * lcm as f64).round_ties_even() as usize;
    if h == 0 {
        return Some(1.0);
    }
    let p = if n1 == n2 {
        outside_square(n1, h)
    } else {
        outside_lines(n1, n2, g, h)
    };
    (p.is_finite() && (0.0..=1.0).contains(&p)).then_some(p)
}

/// Equal sizes: the share of lattice paths from (0,0) to (n,n) that leave the band
/// |x − y| < h, by the alternating sum over reflections.
fn outside_square(n: usize, h: usize) -> f64 {
    let mut total = 0.0;
    let mut k = n / h;
    loop {
        let mut term = 1.0;
        for j in 0..h {
            // term ∏ (n − kh − j) / (n + kh + j + 1); a factor can reach zero.
            let num = n as f64 - (k * h + j) as f64;
            term = num * term / (n + k * h + j + 1) as f64;
        }
        total = term * (1.0 - total);
        if k == 0 {
            break;
        }
        k -= 1;
    }
    2.0 * total
}

/// Unequal sizes: 1 − (share of paths from (0,0) to (m,n) that stay strictly
/// inside |x/m − y/n| < h/lcm), by the recursion for the complement, which keeps
/// the values in [0, 1]: a lattice point outside the band has the value 1, and a
/// point (i, j) inside has (i·V(i−1, j) + j·V(i, j−1)) / (i + j), the share of the
/// paths to it that have left the band.
///
/// scipy walks the points row by row, one serial chain of multiplications and
/// additions per row. Both neighbours of (i, j) lie on the anti-diagonal before
/// it, so this walks the anti-diagonals i + j = s instead: the points of one are
/// independent of each other and the compiler vectorises the loop over them, four
/// at a time on x86-64 CPUs with AVX2 (a copy chosen at run time). Every point gets
/// the same operations in the same order as in the row walk, so the result is bit
/// for bit the row walk's on either path (except that a band no path gets through
/// gives exactly 1, where the row walk can round to 1 − 1e-14).
fn outside_lines(m: usize, n: usize, g: usize, h: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked on the line above.
        return unsafe { outside_lines_avx2(m, n, g, h) };
    }
    outside_lines_portable(m, n, g, h)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn outside_lines_avx2(m: usize, n: usize, g: usize, h: usize) -> f64 {
    outside_lines_portable(m, n, g, h)
}

/// Slots per step of the compiled diagonal loop (two AVX2 registers of four).
const STEP: usize = 8;

/// [`outside_lines`] for the build's baseline instruction set.
#[inline(always)]
fn outside_lines_portable(m: usize, n: usize, g: usize, h: usize) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = (m / g, n / g);
    // Point (i, s − i) of diagonal s is inside the band when
    // |i·ng − (s − i)·mg| = |i·k − s·mg| < h: at most ⌈2h/k⌉ points. Every
    // diagonal computes the same number of slots, a whole number of loop steps: a
    // loop count that never changes is one the CPU predicts, and no diagonal ends
    // in the loop's one-at-a-time remainder.
    let k = mg + ng;
    let slots = (2 * h).div_ceil(k).min(m + 1).div_ceil(STEP) * STEP;
    // Point i of a diagonal is kept in slot i + 1. The previous diagonal, each
    // slot's i and the current diagonal share one allocation, 1 KiB apart modulo
    // 4 KiB: a load whose address agrees with a pending store's in the low 12 bits
    // can wait for it, which separate allocations made happen at random.
    let stride = (m + 2 + slots).div_ceil(512) * 512 + 128;
    let mut buf = vec![1.0; 3 * stride];
    let (prev, rest) = buf.split_at_mut(stride);
    let (row, cur) = rest.split_at_mut(stride);
    for (q, i) in row.iter_mut().enumerate() {
        *i = q as f64 - 1.0;
    }
    let row: &[f64] = row;
    let (mut prev, mut cur) = (prev, cur);
    // (0, 0), the only point of diagonal 0.
    prev[1] = 0.0;
    // The band's ends on diagonal s: the least i ≥ 0 with i·k > s·mg − h and the
    // greatest i with i·k < s·mg + h. Each moves by at most one per diagonal
    // (mg < k), so a comparison updates it, without a division or a branch.
    let (mut lo_band, mut hi_band) = (0, (h - 1) / k);
    for s in 1..=m + n {
        lo_band += usize::from(lo_band * k + h <= s * mg);
        hi_band += usize::from((hi_band + 1) * k < s * mg + h);
        let lo = lo_band.max(s.saturating_sub(n));
        let hi = hi_band.min(s).min(m);
        if hi < lo {
            // No path stays inside the band.
            return 1.0;
        }
        let (sf, r) = (s as f64, 1.0 / s as f64);
        let (up, left) = (&prev[lo..lo + slots], &prev[lo + 1..]);
        let points = cur[lo + 1..lo + 1 + slots].iter_mut().zip(&row[lo + 1..]);
        for (((v, i), up), left) in points.zip(up).zip(left) {
            // The row walk's `(col[jj + offset] * fi + val * j) * r`.
            *v = (up * i + left * (sf - i)) * r;
        }
        // Slots past hi + 1 hold values no point inside reads. The slots next to
        // lo..=hi are outside the band, or past the grid's edge where their weight
        // i or s − i is zero.
        cur[lo] = 1.0;
        cur[hi + 2] = 1.0;
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[m + 1]
}

/// The asymptotic two-sided p-value: Kolmogorov's limiting distribution at
/// `√(nm/(n+m))·D`.
fn asymptotic(n1: usize, n2: usize, d: f64) -> f64 {
    let en = (n1 * n2) as f64 / (n1 + n2) as f64;
    let z = en.sqrt() * d;
    if z < 0.2 {
        return 1.0;
    }
    // Q(z) = 2 Σ (−1)^(k−1) exp(−2k²z²)
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let term = (-2.0 * k * k * z * z).exp();
        sum += if k as u32 % 2 == 1 { term } else { -term };
        if term < 1e-17 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Pearson's chi-square test of `observed` counts against `expected` counts (same
/// total). Categories with an expected count of 0 must have been merged away by the
/// caller; `None` with fewer than two categories.
pub fn chisquare(observed: &[f64], expected: &[f64]) -> Option<TestResult> {
    if observed.len() != expected.len() || observed.len() < 2 {
        return None;
    }
    if expected.iter().any(|e| e.is_nan() || *e <= 0.0) {
        return None;
    }
    let statistic: f64 = observed
        .iter()
        .zip(expected)
        .map(|(o, e)| (o - e).powi(2) / e)
        .sum();
    let dist = ChiSquared::new((observed.len() - 1) as f64).ok()?;
    Some(TestResult {
        statistic,
        p_value: dist.sf(statistic).clamp(0.0, 1.0),
    })
}

/// A sample's size, mean and sum of squared deviations from that mean.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub n: f64,
    pub mean: f64,
    pub sum_sq: f64,
}

impl Summary {
    /// The summary of `values`.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Summary {
        let mut s = Summary::default();
        for v in values {
            s.push(v);
        }
        s
    }

    /// Adds one value (Welford's update).
    pub fn push(&mut self, v: f64) {
        self.n += 1.0;
        let d = v - self.mean;
        self.mean += d / self.n;
        self.sum_sq += d * (v - self.mean);
    }

    /// The sample variance (ddof 1).
    pub fn variance(&self) -> f64 {
        self.sum_sq / (self.n - 1.0)
    }
}

/// Welch's t-test of "the mean of `after` is above the mean of `before`": the
/// statistic and one-sided p-value of scipy's `ttest_ind(after, before,
/// equal_var=False, alternative='greater')`, with Welch–Satterthwaite degrees of
/// freedom. `None` unless both samples have at least two values. Two constant
/// samples give p = 0 when `after` is higher and 1 otherwise.
pub fn welch_greater(before: Summary, after: Summary) -> Option<TestResult> {
    if before.n < 2.0 || after.n < 2.0 {
        return None;
    }
    let (vb, va) = (before.variance() / before.n, after.variance() / after.n);
    let diff = after.mean - before.mean;
    if vb + va <= 0.0 {
        let p_value = if diff > 0.0 { 0.0 } else { 1.0 };
        let statistic = if diff > 0.0 { f64::INFINITY } else { 0.0 };
        return Some(TestResult { statistic, p_value });
    }
    let t = diff / (vb + va).sqrt();
    let df = (vb + va).powi(2) / (vb * vb / (before.n - 1.0) + va * va / (after.n - 1.0));
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    Some(TestResult {
        statistic: t,
        p_value: dist.sf(t).clamp(0.0, 1.0),
    })
}

/// The population stability index `Σ (c − r)·ln(c / r)` of the current shares `c`
/// against the reference shares `r` per bin. Empty bins get a share of
/// `PSI_FLOOR` so that the index stays finite.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    let total = |v: &[f64]| v.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let (rt, ct) = (total(reference), total(current));
    reference
        .iter()
        .zip(current)
        .map(|(r, c)| {
            let (r, c) = ((r / rt).max(PSI_FLOOR), (c / ct).max(PSI_FLOOR));
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// The share an empty PSI bin is given.
pub const PSI_FLOOR: f64 = 1e-4;

/// How p-values are corrected for testing several features at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Correction {
    /// `min(1, p·k)`: controls the family-wise error rate.
    Bonferroni,
    /// Benjamini–Hochberg step-up adjusted p-values: controls the false discovery
    /// rate (scipy's `false_discovery_control(method='bh')`).
    #[serde(rename = "bh")]
    BenjaminiHochberg,
    None,
}

/// Adjusted p-values, in the input's order.
pub fn adjust(p: &[f64], correction: Correction) -> Vec<f64> {
    let k = p.len() as f64;
    match correction {
        Correction::None => p.to_vec(),
        Correction::Bonferroni => p.iter().map(|v| (v * k).min(1.0)).collect(),
        Correction::BenjaminiHochberg => {
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
            let mut out = vec![0.0; p.len()];
            let mut running = 1.0f64;
            for (rank, &i) in order.iter().enumerate().rev() {
                running = running.min(p[i] * k / (rank + 1) as f64);
                out[i] = running.min(1.0);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6
    }

    /// Expected values from scipy 1.17.1:
    /// `scipy.stats.ttest_ind(after, before, equal_var=False, alternative='greater')`.
    #[test]
    fn welch_greater_matches_scipy() {
        let ones = |k: usize, n: usize| (0..n).map(move |i| f64::from(u8::from(i < k)));
        let cases = [
            (
                Summary::of([0.1, 0.5, 0.9, 1.3, 2.0]),
                Summary::of([0.3, 0.4, 1.1, 1.8, 2.5, 3.0, 3.3]),
                1.436_905_249_799_614,
                0.090_885_850_640_031_88,
            ),
            (
                Summary::of(ones(5, 1000)),
                Summary::of(ones(8, 300)),
                2.261_515_059_939_08,
                0.012_185_046_758_974_964,
            ),
            (
                Summary::of(ones(150, 3000)),
                Summary::of(ones(20, 60)),
                4.607_005_292_678_589,
                1.102_624_537_552_281_4e-5,
            ),
            (
                Summary::of(ones(20, 60)),
                Summary::of(ones(150, 3000)),
                -4.607_005_292_678_589,
                0.999_988_973_754_624_5,
            ),
        ];
        for (before, after, t, p) in cases {
            let r = welch_greater(before, after).unwrap();
            assert!(close(r.statistic, t), "{r:?} against t = {t}");
            assert!(
                (r.p_value - p).abs() <= 1e-9 * p.max(1e-3),
                "{r:?} against p = {p}"
            );
        }
        let zeros = Summary::of([0.0; 10]);
        assert_eq!(
            welch_greater(zeros, Summary::of([1.0; 3])).unwrap().p_value,
            0.0
        );
        assert_eq!(welch_greater(zeros, zeros).unwrap().p_value, 1.0);
        assert!(welch_greater(Summary::of([1.0]), zeros).is_none());
    }

    /// Every expected value below was computed with scipy 1.17.1
    /// (`scipy.stats.ks_2samp(a, b)`, default method='auto') and copied here.
    #[test]
    fn ks_matches_scipy_on_small_tied_equal_and_large_samples() {
        let cases: Vec<(Vec<f64>, Vec<f64>, f64, f64)> = vec![
            (
                vec![0.1, 0.5, 0.9, 1.3, 2.0],
                vec![0.3, 0.4, 1.1, 1.8, 2.5, 3.0, 3.3],
                0.428_571_428_571_428_55,
                0.545_454_545_454_545_4,
            ),
            (
                vec![1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0],
                vec![2.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0, 6.0, 6.0],
                0.416_666_666_666_666_7,
                0.351_707_116_412_998_84,
            ),
            (
                vec![0.5, 1.5, 2.5, 3.5],
                vec![0.6, 1.6, 2.6, 3.6],
                0.25,
                1.0,
            ),
            (
                spread(40, 31, 97, 10.0, 1.0, 0.0),
                spread(40, 37, 89, 10.0, 1.0, 0.0),
                0.1,
                0.990_019_328_883_308_9,
            ),
            (
                spread(2000, 7919, 1009, 100.0, 1.0, 0.0),
                spread(3000, 104_729, 1013, 100.0, 1.0, 0.4),
                0.0445,
                0.016_891_467_737_378_933,
            ),
            (
                spread(1000, 7919, 100_003, 1000.0, 1.0, 0.0),
                spread(1500, 104_729, 100_019, 1000.0, 1.05, 0.0),
                0.049_333_333_333_333_33,
                0.105_325_998_094_922_71,
            ),
            (
                spread(5000, 7919, 100_003, 1000.0, 1.0, 0.0),
                spread(1000, 104_729, 100_019, 1000.0, 1.0, 1.0),
                0.0128,
                0.999_046_083_307_428_2,
            ),
            // A large shift: scipy's exact p is 5.9e-89; the shortcut's value is
            // within 1e-6 of it.
            (
                spread(5000, 7919, 100_003, 1000.0, 1.0, 0.0),
                spread(3000, 104_729, 100_019, 1000.0, 1.3, 0.0),
                0.232,
                5.921_697_217_746_18e-89,
            ),
        ];
        check_ks(cases);
    }

    /// `n` values spread over [0, modulus / div) by a multiplicative step, then
    /// `· mul + add`: the samples of the scipy cases (scipy computed them alike).
    fn spread(n: usize, step: usize, modulus: usize, div: f64, mul: f64, add: f64) -> Vec<f64> {
        (0..n)
            .map(|i| ((i * step) % modulus) as f64 / div * mul + add)
            .collect()
    }

    /// Each case's statistic and p-value against the recorded scipy values.
    fn check_ks(cases: Vec<(Vec<f64>, Vec<f64>, f64, f64)>) {
        for (a, b, d, p) in cases {
            let r = ks_2samp(&a, &b).unwrap();
            assert!(
                close(r.statistic, d),
                "{} vs {}: {r:?} (D {d})",
                a.len(),
                b.len()
            );
            assert!(
                close(r.p_value, p),
                "{} vs {}: {r:?} (p {p})",
                a.len(),
                b.len()
            );
        }
    }

    /// Sizes up to the exact method's limit, where the diagonal walk does the work.
    /// Expected values from scipy 1.17.1 `ks_2samp(a, b)` (method='auto', which is
    /// the exact method at these sizes), copied here.
    #[test]
    fn ks_matches_scipy_on_large_unequal_samples() {
        let cases: Vec<(Vec<f64>, Vec<f64>, f64, f64)> = vec![
            (
                spread(10_000, 7919, 10_007, 1000.0, 1.0, 0.0),
                spread(5000, 104_729, 10_009, 1000.0, 1.0, 0.25),
                0.0267,
                0.017_152_333_850_853_65,
            ),
            (
                spread(9973, 7919, 100_003, 10_000.0, 1.0, 0.0),
                spread(6007, 104_729, 100_019, 10_000.0, 1.03, 0.0),
                0.029_830_701_041_638_794,
                0.002_466_560_400_647_459_7,
            ),
            (
                spread(10_000, 7919, 1009, 100.0, 1.0, 0.0),
                spread(8000, 104_729, 1013, 100.0, 1.0, 0.15),
                0.0195,
                0.067_229_962_374_986_82,
            ),
        ];
        check_ks(cases);
    }

    /// The statistic as this module computed it before it sorted integer keys:
    /// floats sorted with `total_cmp`.
    fn ks_statistic_by_floats(a: &[f64], b: &[f64]) -> f64 {
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        let (n1, n2) = (a.len(), b.len());
        let (mut i, mut j, mut d) = (0, 0, 0.0f64);
        while i < n1 || j < n2 {
            let v = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.min(*y),
                (Some(x), None) => *x,
                (None, Some(y)) => *y,
                (None, None) => break,
            };
            while i < n1 && a[i] <= v {
                i += 1;
            }
            while j < n2 && b[j] <= v {
                j += 1;
            }
            d = d.max((i as f64 / n1 as f64 - j as f64 / n2 as f64).abs());
        }
        d
    }

    #[test]
    fn statistic_matches_the_float_walk_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        // Coarse values (many ties across and within the samples), both zeros and
        // both infinities.
        let special = [0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY];
        for (n1, n2, shift) in [
            (1, 1, 0.0),
            (3, 5, 0.0),
            (40, 25, 0.1),
            (1000, 700, 0.05),
            (5000, 2000, 0.0),
        ] {
            let mut draw = |n: usize, shift: f64| -> Vec<f64> {
                (0..n)
                    .map(|_| match rng.gen_range(0..20) {
                        0 => special[rng.gen_range(0..4)],
                        _ => (rng.gen_range(-2.0..2.0f64) * 20.0).round() / 20.0 + shift,
                    })
                    .collect()
            };
            let (a, b) = (draw(n1, 0.0), draw(n2, shift));
            let (new, old) = (ks_statistic(&a, &b), ks_statistic_by_floats(&a, &b));
            assert_eq!(new.to_bits(), old.to_bits(), "{n1} vs {n2}: {new} vs {old}");
        }
    }

    /// (m, n, h) with unequal sizes: the bench's shape at a typical and a large D,
    /// coprime sizes, small ones, and a band narrower than a step.
    const LINE_CASES: [(usize, usize, usize); 9] = [
        (10_000, 5000, 150),
        (10_000, 5000, 400),
        (997, 1009, 50_300),
        (50, 30, 40),
        (2000, 3000, 200),
        (9973, 6007, 1_786_970),
        (5000, 1000, 300),
        (3, 7, 6),
        (1, 2, 1),
    ];

    /// scipy's row-by-row walk, as this module computed it before the diagonal
    /// walk: the reference the diagonal walk must match bit for bit.
    fn outside_lines_by_rows(m: usize, n: usize, g: usize, h: usize) -> f64 {
        let (m, n) = if m < n { (n, m) } else { (m, n) };
        let (mg, ng) = ((m / g) as i64, (n / g) as i64);
        let (h, n_i, m_i) = (h as i64, n as i64, m as i64);
        let mut minj: i64 = 0;
        let mut maxj: i64 = (h + mg - 1).div_euclid(mg).min(n_i + 1);
        let mut curlen = maxj - minj;
        let len = ((2 * maxj + 2).min(n_i + 1)) as usize;
        let mut col = vec![1.0f64; len.max(1)];
        for v in col.iter_mut().take(maxj as usize) {
            *v = 0.0;
        }
        for i in 1..=m_i {
            let (last_minj, last_len) = (minj, curlen);
            minj = ((ng * i - h).div_euclid(mg) + 1).clamp(0, n_i);
            maxj = (ng * i + h + mg - 1).div_euclid(mg).min(n_i + 1);
            if maxj <= minj {
                return 1.0;
            }
            let mut val = if minj == 0 { 0.0 } else { 1.0 };
            let (fi, offset) = (i as f64, (minj - last_minj) as usize);
            for jj in 0..(maxj - minj) as usize {
                let j = (jj as i64 + minj) as f64;
                val = (col[jj + offset] * fi + val * j) * (1.0 / (i as f64 + j));
                col[jj] = val;
            }
            curlen = maxj - minj;
            if last_len > curlen {
                let to =
                    (maxj as usize - minj as usize + (last_len - curlen) as usize).min(col.len());
                for v in &mut col[(maxj - minj) as usize..to] {
                    *v = 1.0;
                }
            }
        }
        col[(maxj - minj - 1) as usize]
    }

    #[test]
    fn diagonal_walk_matches_the_row_walk_bit_for_bit() {
        for (m, n, h) in LINE_CASES {
            let g = gcd(m, n);
            let (rows, diagonals) = (outside_lines_by_rows(m, n, g, h), outside_lines(m, n, g, h));
            assert_eq!(
                rows.to_bits(),
                diagonals.to_bits(),
                "({m}, {n}, {h}): {rows} vs {diagonals}"
            );
        }
        // No path gets through this band (from (i, 0), 2i < 5000, up to (i, 1),
        // 2i > 4999): exactly 1, where the row walk rounds to 1 − 9e-15.
        let rows = outside_lines_by_rows(9999, 2, 1, 5000);
        assert!((rows - 1.0).abs() < 1e-13, "{rows}");
        assert_eq!(outside_lines(9999, 2, 1, 5000), 1.0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_and_portable_walks_agree() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        for (m, n, h) in LINE_CASES {
            let g = gcd(m, n);
            let portable = outside_lines_portable(m, n, g, h);
            // SAFETY: AVX2 is present, checked above.
            let avx2 = unsafe { outside_lines_avx2(m, n, g, h) };
            // The same operations in the same order: in fact identical.
            assert!(
                (avx2 - portable).abs() <= 1e-12,
                "({m}, {n}, {h}): {avx2} vs {portable}"
            );
        }
    }

    #[test]
    fn chisquare_matches_scipy() {
        // scipy.stats.chisquare([16,18,16,14,12,12], [16,16,16,16,16,8])
        //   = (3.5, 0.6233876277495822)
        // scipy.stats.chisquare([43,52,54,40], [47.25]*4) = (2.9365079365079363, 0.4015183527259283)
        let r = chisquare(
            &[16.0, 18.0, 16.0, 14.0, 12.0, 12.0],
            &[16.0, 16.0, 16.0, 16.0, 16.0, 8.0],
        )
        .unwrap();
        assert!(
            close(r.statistic, 3.5) && close(r.p_value, 0.623_387_627_749_582_2),
            "{r:?}"
        );
        let r = chisquare(&[43.0, 52.0, 54.0, 40.0], &[47.25; 4]).unwrap();
        assert!(close(r.statistic, 2.936_507_936_507_936_3), "{r:?}");
        assert!(close(r.p_value, 0.401_518_352_725_928_3), "{r:?}");
        assert!(chisquare(&[1.0], &[1.0]).is_none());
        assert!(chisquare(&[1.0, 2.0], &[3.0, 0.0]).is_none());
    }

    #[test]
    fn degenerate_samples_have_defined_answers() {
        assert!(ks_2samp(&[], &[1.0]).is_none());
        assert!(ks_2samp(&[f64::NAN], &[1.0]).is_none());
        let same = ks_2samp(&[2.0; 10], &[2.0; 7]).unwrap();
        assert_eq!((same.statistic, same.p_value), (0.0, 1.0));
        let apart = ks_2samp(&[1.0; 10], &[2.0; 10]).unwrap();
        assert_eq!(apart.statistic, 1.0);
        assert!(apart.p_value < 1e-4 && apart.p_value >= 0.0);
    }

    #[test]
    fn corrections_match_scipy() {
        // scipy.stats.false_discovery_control([0.01, 0.04, 0.03, 0.2], method='bh')
        //   = [0.04, 0.05333333, 0.05333333, 0.2]
        let p = [0.01, 0.04, 0.03, 0.2];
        let bh = adjust(&p, Correction::BenjaminiHochberg);
        for (got, want) in bh.iter().zip([0.04, 0.053_333_333, 0.053_333_333, 0.2]) {
            assert!((got - want).abs() < 1e-8, "{bh:?}");
        }
        assert_eq!(
            adjust(&p, Correction::Bonferroni),
            vec![0.04, 0.16, 0.12, 0.8]
        );
    }

    #[test]
    fn psi_of_identical_shares_is_zero_and_grows_with_shift() {
        assert_eq!(psi(&[10.0, 20.0, 30.0], &[1.0, 2.0, 3.0]), 0.0);
        // (0.5−0.25)·ln(2) + (0.5−0.75)·ln(2/3) = 0.2747…
        let v = psi(&[1.0, 3.0], &[1.0, 1.0]);
        assert!((v - (0.25 * 2f64.ln() - 0.25 * (2.0f64 / 3.0).ln())).abs() < 1e-12);
    }
}
