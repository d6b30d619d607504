//! Common bins for a reference and a current sample: what a distribution chart
//! draws. Pure counting, no drawing.
//!
//! - Numeric: `n` equal-width bins over the span of both samples, where each
//!   sample's span is its range cut at Tukey's far fences (`q1 - 3·IQR`,
//!   `q3 + 3·IQR`), so that one wild value does not squeeze everything else into a
//!   bin or two. Values beyond the span count in the first or last bin: every
//!   finite value is in exactly one bin. Non-finite values (missing) are left out.
//! - Categorical: the reference's categories, most frequent first, then the ones
//!   only the current sample has; past `max` categories the rest share one bin,
//!   "other (k)". Empty strings (missing) are left out.

use std::collections::HashMap;

/// How the bins are cut. In JSON, `"edges": [..]` or `"categories": [..]` beside
/// the counts.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bins {
    /// `n + 1` increasing edges of `n` equal-width bins; the first and last bins
    /// also hold the values beyond the outer edges.
    Edges(Vec<f64>),
    /// One name per bin.
    Categories(Vec<String>),
}

/// Counts of both samples over the same bins.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Histogram {
    #[serde(flatten)]
    pub bins: Bins,
    pub reference: Vec<u64>,
    pub current: Vec<u64>,
}

/// The bins of a numeric chart when the caller has no reason to pick another
/// number: about 30 px a bin at mail size.
pub const NUMERIC_BINS: usize = 20;

/// The categories a categorical chart shows before it lumps the rest together.
pub const MAX_CATEGORIES: usize = 12;

impl Histogram {
    /// `bins` equal-width bins (at least 1) over both samples' spans.
    pub fn numeric(reference: &[f64], current: &[f64], bins: usize) -> Histogram {
        let bins = bins.max(1);
        let sorted = |values: &[f64]| {
            let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (r, c) = (sorted(reference), sorted(current));
        let spans: Vec<(f64, f64)> = [&r, &c].into_iter().filter_map(|v| span(v)).collect();
        let (mut lo, mut hi) = spans
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(a, b)| {
                (lo.min(a), hi.max(b))
            });
        if spans.is_empty() {
            (lo, hi) = (0.0, 1.0);
        } else if hi <= lo {
            (lo, hi) = (lo - 0.5, hi + 0.5);
        }
        let width = (hi - lo) / bins as f64;
        let edges: Vec<f64> = (0..=bins)
            .map(|i| if i == bins { hi } else { lo + width * i as f64 })
            .collect();
        let count = |values: &[f64]| {
            let mut counts = vec![0u64; bins];
            for v in values {
                let i = ((v - lo) / width).floor();
                // NaN cannot occur (finite values, width > 0); the cast saturates.
                let i = if i < 0.0 {
                    0
                } else {
                    (i as usize).min(bins - 1)
                };
                counts[i] += 1;
            }
            counts
        };
        Histogram {
            reference: count(&r),
            current: count(&c),
            bins: Bins::Edges(edges),
        }
    }

    /// One bin per category (at most `max`, at least 2), missing values left out.
    pub fn categorical<S: AsRef<str>>(reference: &[S], current: &[S], max: usize) -> Histogram {
        let max = max.max(2);
        let (r, c) = (tally(reference), tally(current));
        let mut names = by_count(&r, &HashMap::new());
        names.extend(by_count(&c, &r));
        let get = |counts: &HashMap<&str, u64>, name: &str| counts.get(name).copied().unwrap_or(0);
        let (shown, rest) = if names.len() > max {
            names.split_at(max - 1)
        } else {
            (names.as_slice(), &[][..])
        };
        let mut categories: Vec<String> = shown.iter().map(|s| s.to_string()).collect();
        let mut reference: Vec<u64> = shown.iter().map(|n| get(&r, n)).collect();
        let mut current: Vec<u64> = shown.iter().map(|n| get(&c, n)).collect();
        if !rest.is_empty() {
            categories.push(format!("other ({})", rest.len()));
            reference.push(rest.iter().map(|n| get(&r, n)).sum());
            current.push(rest.iter().map(|n| get(&c, n)).sum());
        }
        Histogram {
            bins: Bins::Categories(categories),
            reference,
            current,
        }
    }

    /// The number of bins.
    pub fn len(&self) -> usize {
        self.reference.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reference.is_empty()
    }

    /// Values counted on each side: (reference, current).
    pub fn totals(&self) -> (u64, u64) {
        (self.reference.iter().sum(), self.current.iter().sum())
    }

    /// Each bin's share of its side's values (0 for a side with none).
    pub fn shares(counts: &[u64]) -> Vec<f64> {
        let total: u64 = counts.iter().sum();
        counts
            .iter()
            .map(|&n| {
                if total == 0 {
                    0.0
                } else {
                    n as f64 / total as f64
                }
            })
            .collect()
    }
}

/// Each non-empty value's count.
fn tally<S: AsRef<str>>(values: &[S]) -> HashMap<&str, u64> {
    let mut counts: HashMap<&str, u64> = HashMap::new();
    for v in values.iter().map(AsRef::as_ref).filter(|v| !v.is_empty()) {
        *counts.entry(v).or_default() += 1;
    }
    counts
}

/// The names of `counts` not in `skip`, most frequent first (ties by name).
fn by_count<'a>(counts: &HashMap<&'a str, u64>, skip: &HashMap<&str, u64>) -> Vec<&'a str> {
    let mut names: Vec<(&str, u64)> = counts
        .iter()
        .filter(|(name, _)| !skip.contains_key(*name))
        .map(|(name, n)| (*name, *n))
        .collect();
    names.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    names.into_iter().map(|(name, _)| name).collect()
}

/// A sorted sample's range cut at Tukey's far fences; `None` when it is empty.
fn span(sorted: &[f64]) -> Option<(f64, f64)> {
    let (&min, &max) = (sorted.first()?, sorted.last()?);
    let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    let (q1, q3) = (q(0.25), q(0.75));
    let iqr = q3 - q1;
    let (lo, hi) = ((q1 - 3.0 * iqr).max(min), (q3 + 3.0 * iqr).min(max));
    // A sample whose middle half is one value has IQR 0: use its whole range.
    Some(if hi > lo { (lo, hi) } else { (min, max) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_bins_cover_every_finite_value_once() {
        let reference: Vec<f64> = (0..500).map(|i| (i as f64 * 0.37).sin() * 3.0).collect();
        let mut current: Vec<f64> = (0..300).map(|i| (i as f64 * 0.11).cos() + 2.0).collect();
        current.extend([f64::NAN, 1e9, -1e9]);
        let h = Histogram::numeric(&reference, &current, 20);
        assert_eq!(h.len(), 20);
        assert_eq!(h.totals(), (500, 302), "two outliers in, NaN out");
        let Bins::Edges(edges) = &h.bins else {
            panic!("numeric bins have edges")
        };
        assert_eq!(edges.len(), 21);
        assert!(edges.windows(2).all(|w| w[0] < w[1]), "{edges:?}");
        // The outliers are fenced off: the bins span the bulk of both samples.
        assert!(edges[0] > -10.0 && edges[20] < 10.0, "{edges:?}");
        assert!(h.current[0] >= 1 && h.current[19] >= 1);
    }

    #[test]
    fn numeric_bins_survive_constant_and_empty_samples() {
        let h = Histogram::numeric(&[2.0; 5], &[2.0; 3], 10);
        assert_eq!(h.totals(), (5, 3));
        let h = Histogram::numeric(&[], &[f64::NAN], 10);
        assert_eq!((h.len(), h.totals()), (10, (0, 0)));
        assert_eq!(Histogram::shares(&h.reference), vec![0.0; 10]);
        let h = Histogram::numeric(&[1.0, 2.0], &[], 0);
        assert_eq!((h.len(), h.totals()), (1, (2, 0)));
    }

    #[test]
    fn categories_come_by_reference_frequency_then_new_ones_and_the_rest_is_lumped() {
        let reference = ["b", "a", "b", "c", "", "b", "a"];
        let current = ["z", "a", "a", "c", "y", "z"];
        let h = Histogram::categorical(&reference, &current, 12);
        assert_eq!(
            h.bins,
            Bins::Categories(["b", "a", "c", "z", "y"].map(String::from).to_vec())
        );
        assert_eq!(h.reference, vec![3, 2, 1, 0, 0]);
        assert_eq!(h.current, vec![0, 2, 1, 2, 1]);
        let h = Histogram::categorical(&reference, &current, 3);
        assert_eq!(
            h.bins,
            Bins::Categories(["b", "a", "other (3)"].map(String::from).to_vec())
        );
        assert_eq!(h.totals(), (6, 6));
        assert_eq!(h.current, vec![0, 2, 4]);
    }
}
