//! Feature drift: every feature of a current sample tested against the reference
//! sample, with a multiple-testing correction and an effect-size floor.
//!
//! - Numeric features: two-sample KS on the non-missing values; PSI over ten bins
//!   cut at the reference's deciles (equal edges merged).
//! - Categorical features: chi-square of the current counts against the reference
//!   proportions over the reference's categories (scipy's `chisquare(observed,
//!   proportions × n)`). When the current sample has categories the reference never
//!   saw, they share one more bin and every bin's reference count is smoothed by ½,
//!   so that the statistic is large and finite instead of a division by zero. PSI
//!   over the same bins. A single category has no chi-square test (null p-value).
//! - A feature drifts when its corrected p-value is below `alpha` **and** its
//!   effect passes a floor: PSI ≥ [`DriftOptions::psi_floor`] (0.1), or for numeric
//!   features a KS statistic ≥ [`DriftOptions::ks_floor`] (0.05, about a shift of an
//!   eighth of a standard deviation for a normal feature). Large windows then do not
//!   alarm on shifts too small to matter.
//! - The report's `drift` is true when any feature drifts; `dataset_drift` when at
//!   least `dataset_share` of the tested features do.
//! - A feature with no values on one side is reported with `test: "none"`, null
//!   statistic and p-value and `drift: false`: never a NaN.

use serde::Serialize;

use crate::stats::{self, Correction};

/// Decision settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DriftOptions {
    pub alpha: f64,
    pub correction: Correction,
    pub psi_floor: f64,
    pub ks_floor: f64,
    pub dataset_share: f64,
}

impl DriftOptions {
    /// The settings of `[drift]`.
    pub fn from_config(c: &crate::config::DriftConfig) -> DriftOptions {
        DriftOptions {
            alpha: c.alpha,
            correction: c.correction,
            psi_floor: c.psi_floor,
            ks_floor: c.ks_floor,
            dataset_share: c.dataset_share,
        }
    }
}

impl Default for DriftOptions {
    fn default() -> Self {
        Self {
            alpha: 0.05,
            correction: Correction::Bonferroni,
            psi_floor: 0.1,
            ks_floor: 0.05,
            dataset_share: 0.5,
        }
    }
}

/// What can make a comparison impossible.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DriftError {
    #[error("the reference has {0} rows; at least 2 are needed")]
    SmallReference(usize),
    #[error("the current sample has no rows")]
    EmptyCurrent,
}

/// A feature's values: numbers (NaN = missing) or category names ("" = missing).
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Numeric(Vec<f64>),
    Categorical(Vec<String>),
}

impl Values {
    /// Values held, missing ones included.
    pub fn len(&self) -> usize {
        match self {
            Values::Numeric(x) => x.len(),
            Values::Categorical(x) => x.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Rows of a set of columns (the first column's length; 0 without columns).
pub fn rows(columns: &[Values]) -> usize {
    columns.first().map_or(0, Values::len)
}

/// One feature's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureDrift {
    pub name: String,
    /// `numeric` or `categorical`.
    pub kind: &'static str,
    /// `ks`, `chi2`, or `none` when a side has no values.
    pub test: &'static str,
    pub statistic: Option<f64>,
    /// The raw p-value.
    pub p_value: Option<f64>,
    /// The p-value after the correction across features.
    pub p_adjusted: Option<f64>,
    pub psi: Option<f64>,
    pub drift: bool,
    pub reference_values: usize,
    pub current_values: usize,
    /// Both samples' distributions over common bins, for plots (absent when a
    /// side has no values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Histogram>,
}

/// Both samples' counts over common bins ([`crate::plot::Histogram`]: numeric
/// features in [`crate::plot::NUMERIC_BINS`] equal-width bins, categorical ones
/// by category), so that a chart draws what the test compared.
pub use crate::plot::Histogram;

impl FeatureDrift {
    /// A feature no test could run on: null statistic and p-values, no drift.
    pub fn untested(
        name: &str,
        kind: &'static str,
        reference_values: usize,
        current_values: usize,
    ) -> FeatureDrift {
        FeatureDrift {
            name: name.to_string(),
            kind,
            test: "none",
            statistic: None,
            p_value: None,
            p_adjusted: None,
            psi: None,
            drift: false,
            reference_values,
            current_values,
            histogram: None,
        }
    }
}

/// The whole comparison (`steward drift --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    pub drift: bool,
    pub dataset_drift: bool,
    pub drifted: usize,
    pub features: Vec<FeatureDrift>,
    pub alpha: f64,
    pub correction: Correction,
    pub reference_rows: usize,
    pub current_rows: usize,
}

/// Compares `current` against `reference`, feature by feature (same order, same
/// kinds).
pub fn compare(
    names: &[String],
    reference: &[Values],
    current: &[Values],
    options: &DriftOptions,
) -> Result<DriftReport, DriftError> {
    let (reference_rows, current_rows) = (rows(reference), rows(current));
    if reference_rows < 2 {
        return Err(DriftError::SmallReference(reference_rows));
    }
    if current_rows == 0 {
        return Err(DriftError::EmptyCurrent);
    }
    let mut features: Vec<FeatureDrift> = names
        .iter()
        .zip(reference.iter().zip(current))
        .map(|(name, (r, c))| test_feature(name, r, c))
        .collect();
    let tested: Vec<usize> = (0..features.len())
        .filter(|&i| features[i].p_value.is_some())
        .collect();
    let raw: Vec<f64> = tested.iter().filter_map(|&i| features[i].p_value).collect();
    let adjusted = stats::adjust(&raw, options.correction);
    for (&i, p) in tested.iter().zip(adjusted) {
        let f = &mut features[i];
        f.p_adjusted = Some(p);
        let big = f.psi.is_some_and(|v| v >= options.psi_floor)
            || (f.test == "ks" && f.statistic.is_some_and(|d| d >= options.ks_floor));
        f.drift = p < options.alpha && big;
    }
    let drifted = features.iter().filter(|f| f.drift).count();
    Ok(DriftReport {
        drift: drifted > 0,
        dataset_drift: !tested.is_empty()
            && drifted as f64 >= options.dataset_share * tested.len() as f64,
        drifted,
        features,
        alpha: options.alpha,
        correction: options.correction,
        reference_rows,
        current_rows,
    })
}

fn test_feature(name: &str, reference: &Values, current: &Values) -> FeatureDrift {
    let untested = |kind, r: usize, c: usize| FeatureDrift::untested(name, kind, r, c);
    match (reference, current) {
        (Values::Numeric(r), Values::Numeric(c)) => {
            let r: Vec<f64> = r.iter().copied().filter(|v| v.is_finite()).collect();
            let c: Vec<f64> = c.iter().copied().filter(|v| v.is_finite()).collect();
            let Some(ks) = stats::ks_2samp(&r, &c) else {
                return untested("numeric", r.len(), c.len());
            };
            FeatureDrift {
                psi: Some(numeric_psi(&r, &c)),
                histogram: Some(Histogram::numeric(&r, &c, crate::plot::NUMERIC_BINS)),
                statistic: Some(ks.statistic),
                p_value: Some(ks.p_value),
                test: "ks",
                ..untested("numeric", r.len(), c.len())
            }
        }
        (Values::Categorical(r), Values::Categorical(c)) => {
            let r: Vec<&str> = r
                .iter()
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .collect();
            let c: Vec<&str> = c
                .iter()
                .map(String::as_str)
                .filter(|s| !s.is_empty())
                .collect();
            if r.is_empty() || c.is_empty() {
                return untested("categorical", r.len(), c.len());
            }
            let mut vocabulary: Vec<&str> = r.clone();
            vocabulary.sort_unstable();
            vocabulary.dedup();
            let bin = |v: &str| vocabulary.binary_search(&v).unwrap_or(vocabulary.len());
            let mut rc = vec![0.0; vocabulary.len() + 1];
            let mut cc = vec![0.0; vocabulary.len() + 1];
            for v in &r {
                rc[bin(v)] += 1.0;
            }
            for v in &c {
                cc[bin(v)] += 1.0;
            }
            // Expected counts are the reference proportions; only when the current
            // sample has categories the reference never saw is every bin smoothed
            // by ½ (the "other" bin has no reference count otherwise).
            let unseen = cc[vocabulary.len()] > 0.0;
            let (counts, observed) = if unseen {
                (rc.iter().map(|x| x + 0.5).collect::<Vec<_>>(), cc.clone())
            } else {
                (
                    rc[..vocabulary.len()].to_vec(),
                    cc[..vocabulary.len()].to_vec(),
                )
            };
            let total: f64 = counts.iter().sum();
            let expected: Vec<f64> = counts.iter().map(|x| x / total * c.len() as f64).collect();
            let test = stats::chisquare(&observed, &expected);
            FeatureDrift {
                histogram: Some(Histogram::categorical(&r, &c, crate::plot::MAX_CATEGORIES)),
                psi: Some(stats::psi(&rc, &cc)),
                statistic: test.map(|t| t.statistic),
                p_value: test.map(|t| t.p_value),
                test: "chi2",
                ..untested("categorical", r.len(), c.len())
            }
        }
        _ => untested("numeric", 0, 0),
    }
}

/// PSI over ten bins cut at the reference's deciles.
fn numeric_psi(reference: &[f64], current: &[f64]) -> f64 {
    let mut sorted = reference.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = (1..10)
        .map(|k| sorted[(k * sorted.len() / 10).min(sorted.len() - 1)])
        .collect();
    edges.dedup();
    let count = |values: &[f64]| {
        let mut bins = vec![0.0; edges.len() + 1];
        for v in values {
            bins[edges.partition_point(|e| e < v)] += 1.0;
        }
        bins
    };
    stats::psi(&count(reference), &count(current))
}

/// Feature values of a reference and a current sample, in the same order.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    pub names: Vec<String>,
    pub reference: Vec<Values>,
    pub current: Vec<Values>,
}

/// The columns of two CSV tables as feature values: every column of `reference`
/// except those in `exclude`, matched by name in `current`; a column's kind is
/// decided by the reference (numeric when every non-empty cell is a finite
/// number). A missing column, or text in a numeric column of `current`, is an
/// error naming the file, line and column.
pub fn table_values(
    reference: &crate::data::Table,
    current: &crate::data::Table,
    exclude: &[String],
) -> Result<Columns, crate::data::DataError> {
    use crate::data::{ColumnKind, DataError};
    let mut names = Vec::new();
    let mut ref_values = Vec::new();
    let mut cur_values = Vec::new();
    for (rc, name) in reference.headers.iter().enumerate() {
        if exclude.contains(name) {
            continue;
        }
        let Some(cc) = current.headers.iter().position(|h| h == name) else {
            return Err(DataError::At {
                path: current.path.clone(),
                line: 1,
                column: 1,
                message: format!("no column `{name}`, which the reference has"),
            });
        };
        let column = |t: &crate::data::Table, c: usize| -> Vec<String> {
            t.rows.iter().map(|r| r[c].clone()).collect()
        };
        match reference.column_kind(rc)? {
            ColumnKind::Numeric => {
                let parse = |t: &crate::data::Table, c: usize| -> Result<Vec<f64>, DataError> {
                    t.rows
                        .iter()
                        .zip(&t.lines)
                        .map(|(r, line)| match r[c].as_str() {
                            "" => Ok(f64::NAN),
                            s => match s.parse::<f64>() {
                                Ok(v) if v.is_finite() => Ok(v),
                                _ => Err(t.error_at(
                                    *line,
                                    c,
                                    format!("`{s}` is not a finite number, and the column is numeric in the reference"),
                                )),
                            },
                        })
                        .collect()
                };
                ref_values.push(Values::Numeric(parse(reference, rc)?));
                cur_values.push(Values::Numeric(parse(current, cc)?));
            }
            ColumnKind::Categorical => {
                ref_values.push(Values::Categorical(column(reference, rc)));
                cur_values.push(Values::Categorical(column(current, cc)));
            }
        }
        names.push(name.clone());
    }
    Ok(Columns {
        names,
        reference: ref_values,
        current: cur_values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_carry_both_samples_on_common_bins() {
        let r = normal(500, 1, 0.0);
        let mut c = normal(300, 2, 1.5);
        c.push(1e6); // one far outlier: in the last bin, not a wider range
        let num = |v: &[f64]| Values::Numeric(v.to_vec());
        let cat = |v: &[&str]| Values::Categorical(v.iter().map(|s| s.to_string()).collect());
        let report = compare(
            &["x".to_string(), "island".to_string()],
            &[num(&r), cat(&["b", "a", "b", "", "a", "b"])],
            &[num(&c[..]), cat(&["a", "c", "c", "b"])],
            &DriftOptions::default(),
        )
        .expect("compared");
        let h = report.features[0].histogram.clone().expect("histogram");
        let crate::plot::Bins::Edges(edges) = &h.bins else {
            panic!("{h:?}")
        };
        assert_eq!(edges.len(), crate::plot::NUMERIC_BINS + 1);
        assert!(edges[crate::plot::NUMERIC_BINS] < 100.0, "{edges:?}");
        assert_eq!(h.totals(), (500, 301));
        // The shift shows: the current sample's mass sits in higher bins.
        let mean_bin = |counts: &[u64]| {
            let n: u64 = counts.iter().sum();
            counts
                .iter()
                .enumerate()
                .map(|(k, &x)| k as f64 * x as f64)
                .sum::<f64>()
                / n as f64
        };
        assert!(mean_bin(&h.current) > mean_bin(&h.reference) + 3.0);
        // In JSON: the edges (or categories) beside the counts.
        let json = serde_json::to_value(&report.features[1]).expect("json");
        assert_eq!(
            json["histogram"],
            serde_json::json!({"categories": ["b", "a", "c"],
                               "reference": [3, 2, 0], "current": [1, 1, 2]})
        );
        assert!(
            serde_json::to_value(&report.features[0]).expect("json")["histogram"]["edges"]
                .is_array()
        );
    }

    /// Deterministic standard-normal-ish values (Box–Muller over a fixed LCG).
    fn normal(n: usize, seed: u64, shift: f64) -> Vec<f64> {
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (next(), next());
                (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos() + shift
            })
            .collect()
    }

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("f{i}")).collect()
    }

    #[test]
    fn a_quarter_sd_shift_on_one_of_ten_features_is_found_and_only_there() {
        let reference: Vec<Values> = (0..10)
            .map(|f| Values::Numeric(normal(1000, f, 0.0)))
            .collect();
        let current: Vec<Values> = (0..10)
            .map(|f| Values::Numeric(normal(1000, 100 + f, if f == 3 { 0.25 } else { 0.0 })))
            .collect();
        let r = compare(&names(10), &reference, &current, &DriftOptions::default()).unwrap();
        let drifted: Vec<&str> = r
            .features
            .iter()
            .filter(|f| f.drift)
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(drifted, vec!["f3"], "{r:#?}");
        assert!(r.drift && !r.dataset_drift);
    }

    #[test]
    fn the_same_distribution_does_not_drift() {
        let reference: Vec<Values> = (0..10)
            .map(|f| Values::Numeric(normal(1000, f, 0.0)))
            .collect();
        let current: Vec<Values> = (0..10)
            .map(|f| Values::Numeric(normal(1000, 50 + f, 0.0)))
            .collect();
        let r = compare(&names(10), &reference, &current, &DriftOptions::default()).unwrap();
        assert!(!r.drift, "{r:#?}");
    }

    #[test]
    fn a_new_category_at_ten_percent_drifts() {
        let cats = |n: usize, new: usize| -> Vec<String> {
            (0..n)
                .map(|i| {
                    if i % 10 < new {
                        "new".into()
                    } else {
                        ["a", "b", "c"][i % 3].to_string()
                    }
                })
                .collect()
        };
        let r = compare(
            &names(1),
            &[Values::Categorical(cats(1000, 0))],
            &[Values::Categorical(cats(1000, 1))],
            &DriftOptions::default(),
        )
        .unwrap();
        assert!(r.features[0].drift, "{r:#?}");
        assert_eq!(r.features[0].test, "chi2");
        let same = compare(
            &names(1),
            &[Values::Categorical(cats(1000, 0))],
            &[Values::Categorical(cats(999, 0))],
            &DriftOptions::default(),
        )
        .unwrap();
        assert!(!same.features[0].drift, "{same:#?}");
    }

    #[test]
    fn constant_missing_and_tiny_inputs_give_defined_answers() {
        let opts = DriftOptions::default();
        assert_eq!(
            compare(
                &names(1),
                &[Values::Numeric(vec![1.0])],
                &[Values::Numeric(vec![1.0])],
                &opts
            ),
            Err(DriftError::SmallReference(1))
        );
        let r = compare(
            &names(3),
            &[
                Values::Numeric(vec![5.0; 50]),
                Values::Numeric(vec![f64::NAN; 50]),
                Values::Categorical(vec![String::new(); 50]),
            ],
            &[
                Values::Numeric(vec![5.0; 40]),
                Values::Numeric(vec![1.0; 40]),
                Values::Categorical(vec!["x".into(); 40]),
            ],
            &opts,
        )
        .unwrap();
        assert_eq!(r.features[0].p_value, Some(1.0));
        assert_eq!(r.features[0].psi, Some(0.0));
        assert!(!r.features[0].drift);
        for f in &r.features[1..] {
            assert_eq!((f.test, f.p_value, f.drift), ("none", None, false), "{f:?}");
        }
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("NaN"), "{json}");
    }
}
