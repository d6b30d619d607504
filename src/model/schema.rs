//! The schema: which features a model takes and how a row becomes its input vector.
//!
//! Numeric features are standardised with the training mean and standard deviation;
//! a missing value is imputed with the training mean (so it encodes to 0).
//! Categorical features are one-hot over the training vocabulary plus a final
//! "other" slot for values never seen; a missing value is imputed with the most
//! frequent training category. The schema is stored in the artifact so training and
//! serving encode identically. This module owns encoding only, not the network.
//!
//! A request value that cannot be encoded is refused, never guessed at: a number
//! whose standardised value does not fit a 32-bit float (`non_finite_feature`:
//! the network would answer NaN), and a categorical value longer than
//! [`MAX_VALUE_BYTES`] that the vocabulary does not hold (`value_too_long`: it
//! would only be stored in the log, in full).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::row::Given;
use crate::data::{ColumnKind, DataError, Table};

/// The longest categorical value a request may send, in bytes, unless the
/// model's vocabulary holds it (any unseen value encodes to the same "other" slot).
pub const MAX_VALUE_BYTES: usize = 1024;

/// How one feature is encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FeatureKind {
    /// `(x - mean) / std`; missing values take `mean`.
    Numeric { mean: f64, std: f64 },
    /// One slot per category, then one "other" slot; missing values take `mode`.
    Categorical {
        categories: Vec<String>,
        mode: String,
    },
}

/// One input feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    #[serde(flatten)]
    pub kind: FeatureKind,
}

impl Feature {
    /// How many input slots this feature takes.
    pub fn width(&self) -> usize {
        match &self.kind {
            FeatureKind::Numeric { .. } => 1,
            FeatureKind::Categorical { categories, .. } => categories.len() + 1,
        }
    }

    fn encode_number(&self, out: &mut [f32], v: Option<f64>) {
        if let FeatureKind::Numeric { mean, std } = &self.kind {
            out[0] = ((v.unwrap_or(*mean) - mean) / std) as f32;
        }
    }

    fn encode_category(&self, out: &mut [f32], v: Option<&str>) {
        if let FeatureKind::Categorical { categories, mode } = &self.kind {
            let v = v.unwrap_or(mode);
            let slot = categories
                .iter()
                .position(|c| c == v)
                .unwrap_or(categories.len());
            out.iter_mut().for_each(|o| *o = 0.0);
            out[slot] = 1.0;
        }
    }
}

/// A row that cannot be encoded; `code` is the stable API error code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct EncodeError {
    pub code: &'static str,
    pub message: String,
}

/// The features of a model, in input order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    pub features: Vec<Feature>,
}

impl Schema {
    /// Fits the encoding statistics on every column of `table` except `label`.
    pub fn fit(table: &Table, label: usize) -> Result<Schema, DataError> {
        let mut features = Vec::new();
        for (c, name) in table.headers.iter().enumerate() {
            if c == label {
                continue;
            }
            let cells = table
                .rows
                .iter()
                .map(|r| r[c].as_str())
                .filter(|s| !s.is_empty());
            let kind = match table.column_kind(c)? {
                ColumnKind::Numeric => {
                    let values: Vec<f64> = cells.filter_map(|s| s.parse().ok()).collect();
                    if values.is_empty() {
                        return Err(table.error_at(1, c, "the column is empty throughout".into()));
                    }
                    let n = values.len() as f64;
                    let mean = values.iter().sum::<f64>() / n;
                    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                    let std = if var > 0.0 { var.sqrt() } else { 1.0 };
                    FeatureKind::Numeric { mean, std }
                }
                ColumnKind::Categorical => {
                    let mut counts: Vec<(String, usize)> = Vec::new();
                    for s in cells {
                        match counts.iter_mut().find(|(c, _)| c == s) {
                            Some((_, n)) => *n += 1,
                            None => counts.push((s.to_string(), 1)),
                        }
                    }
                    counts.sort();
                    // The most frequent; ties go to the first in sorted order.
                    let mode = counts
                        .iter()
                        .fold(None::<&(String, usize)>, |best, c| match best {
                            Some(b) if b.1 >= c.1 => Some(b),
                            _ => Some(c),
                        })
                        .map(|(c, _)| c.clone())
                        .unwrap_or_default();
                    FeatureKind::Categorical {
                        categories: counts.into_iter().map(|(c, _)| c).collect(),
                        mode,
                    }
                }
            };
            features.push(Feature {
                name: name.clone(),
                kind,
            });
        }
        Ok(Schema { features })
    }

    /// Checks what a damaged or hand-made artifact could get wrong and the
    /// types allow: every name once, and encoding statistics that the network's
    /// 32-bit arithmetic can use (a finite mean, a positive finite standard
    /// deviation; with a std of 0 or 1e-300 every answer would be NaN), each
    /// category once.
    pub fn check(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for f in &self.features {
            let at = |m: String| format!("schema: feature `{}`: {m}", f.name);
            if f.name.is_empty() {
                return Err("schema: a feature has an empty name".into());
            }
            if !names.insert(f.name.as_str()) {
                return Err(at("named twice".into()));
            }
            match &f.kind {
                FeatureKind::Numeric { mean, std } => {
                    let f32_max = f64::from(f32::MAX);
                    if !(mean.is_finite() && mean.abs() <= f32_max) {
                        return Err(at(format!("mean {mean:e} is not a finite 32-bit number")));
                    }
                    if !(std.is_finite() && *std >= f64::from(f32::MIN_POSITIVE) && *std <= f32_max)
                    {
                        return Err(at(format!(
                            "standard deviation {std:e} is not a positive finite 32-bit number"
                        )));
                    }
                }
                FeatureKind::Categorical { categories, .. } => {
                    let mut seen = std::collections::HashSet::new();
                    if let Some(c) = categories.iter().find(|c| !seen.insert(c.as_str())) {
                        return Err(at(format!("category `{c}` is listed twice")));
                    }
                }
            }
        }
        Ok(())
    }

    /// The length of the encoded input vector.
    pub fn width(&self) -> usize {
        self.features.iter().map(Feature::width).sum()
    }
    /// Encodes a parsed JSON row into `out` (len `width()`); see
    /// [`Schema::encode_given`].
    pub fn encode_json(
        &self,
        row: &serde_json::Map<String, Value>,
        out: &mut [f32],
    ) -> Result<(), EncodeError> {
        self.encode_given(
            |i| row.get(&self.features[i].name).map(Given::from_value),
            || {
                // Every feature was found: a longer row names another.
                (row.len() > self.features.len())
                    .then(|| {
                        row.keys()
                            .find(|k| !self.features.iter().any(|f| &f.name == *k))
                            .cloned()
                    })
                    .flatten()
            },
            out,
        )
    }

    /// Encodes a row into `out` (len `width()`): `value(i)` is what the row
    /// gives for feature `i` (`None`: not named), `first_unknown` the first name
    /// the schema lacks. Every feature must be named (null for a missing value,
    /// which is imputed); numbers for numeric features, strings for categorical
    /// ones; no other names. The first problem in schema order is the error.
    pub fn encode_given<'a>(
        &self,
        value: impl Fn(usize) -> Option<Given<'a>>,
        first_unknown: impl FnOnce() -> Option<String>,
        out: &mut [f32],
    ) -> Result<(), EncodeError> {
        let mut offset = 0;
        for (i, f) in self.features.iter().enumerate() {
            let slot = &mut out[offset..offset + f.width()];
            offset += f.width();
            let value = value(i).ok_or_else(|| EncodeError {
                code: "missing_feature",
                message: format!(
                    "feature `{}` is missing (send null for a missing value)",
                    f.name
                ),
            })?;
            let wrong = |want: &str| EncodeError {
                code: "invalid_feature_type",
                message: format!(
                    "feature `{}` must be {want} or null, got {}",
                    f.name,
                    value.kind()
                ),
            };
            match (&f.kind, &value) {
                (_, Given::Null) => match f.kind {
                    FeatureKind::Numeric { .. } => f.encode_number(slot, None),
                    FeatureKind::Categorical { .. } => f.encode_category(slot, None),
                },
                (FeatureKind::Numeric { mean, std }, Given::Number(v)) => {
                    let v = *v;
                    f.encode_number(slot, Some(v));
                    if !slot[0].is_finite() {
                        return Err(EncodeError {
                            code: "non_finite_feature",
                            message: format!(
                                "feature `{}` = {v:e} is {:.1e} standard deviations from the \
                                 training mean {mean}: too far out for the model to compute with",
                                f.name,
                                (v - mean).abs() / std
                            ),
                        });
                    }
                }
                (FeatureKind::Numeric { .. }, _) => return Err(wrong("a number")),
                (FeatureKind::Categorical { categories, .. }, Given::Text(s)) => {
                    if s.len() > MAX_VALUE_BYTES && !categories.iter().any(|c| c == s) {
                        return Err(EncodeError {
                            code: "value_too_long",
                            message: format!(
                                "feature `{}`: a value of {} bytes, more than the {MAX_VALUE_BYTES} \
                                 allowed for a value the model has not seen",
                                f.name,
                                s.len()
                            ),
                        });
                    }
                    f.encode_category(slot, Some(s))
                }
                (FeatureKind::Categorical { .. }, _) => return Err(wrong("a string")),
            }
        }
        if let Some(name) = first_unknown() {
            return Err(EncodeError {
                code: "unknown_feature",
                message: format!("feature `{name}` is not in the model's schema"),
            });
        }
        Ok(())
    }

    /// The numeric feature whose encoded value in `x` lies farthest from the
    /// training mean, with that distance in standard deviations: what to name
    /// when a row is too far out for the network.
    pub fn most_extreme(&self, x: &[f32]) -> Option<(&str, f32)> {
        let mut offset = 0;
        let mut worst: Option<(&str, f32)> = None;
        for f in &self.features {
            if let (FeatureKind::Numeric { .. }, Some(z)) = (&f.kind, x.get(offset)) {
                if worst.is_none_or(|(_, w)| z.abs() > w) {
                    worst = Some((f.name.as_str(), z.abs()));
                }
            }
            offset += f.width();
        }
        worst
    }

    /// Encodes CSV cells (already typed by [`Schema::fit`]) for feature `columns`.
    pub fn encode_cells(&self, cells: &[&str], out: &mut [f32]) {
        let mut offset = 0;
        for (f, cell) in self.features.iter().zip(cells) {
            let slot = &mut out[offset..offset + f.width()];
            offset += f.width();
            let cell = Some(*cell).filter(|c| !c.is_empty());
            match f.kind {
                FeatureKind::Numeric { .. } => {
                    f.encode_number(slot, cell.and_then(|c| c.parse().ok()))
                }
                FeatureKind::Categorical { .. } => f.encode_category(slot, cell),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        let t = Table::parse("t.csv", b"x,colour,label\n1,red,a\n3,blue,b\n,red,a\n").unwrap();
        Schema::fit(&t, 2).unwrap()
    }

    fn encode(s: &Schema, v: Value) -> Result<Vec<f32>, EncodeError> {
        let mut out = vec![f32::NAN; s.width()];
        s.encode_json(v.as_object().unwrap(), &mut out).map(|_| out)
    }

    #[test]
    fn fit_records_mean_std_vocabulary_and_mode() {
        let s = schema();
        assert_eq!(
            s.features[0].kind,
            FeatureKind::Numeric {
                mean: 2.0,
                std: 1.0
            }
        );
        assert_eq!(
            s.features[1].kind,
            FeatureKind::Categorical {
                categories: vec!["blue".into(), "red".into()],
                mode: "red".into()
            }
        );
        assert_eq!(s.width(), 4);
    }

    #[test]
    fn encodes_standardised_one_hot_other_and_missing() {
        let s = schema();
        assert_eq!(
            encode(&s, json!({"x": 3, "colour": "blue"})).unwrap(),
            vec![1.0, 1.0, 0.0, 0.0]
        );
        assert_eq!(
            encode(&s, json!({"x": 0.0, "colour": "green"})).unwrap(),
            vec![-2.0, 0.0, 0.0, 1.0]
        );
        assert_eq!(
            encode(&s, json!({"x": null, "colour": null})).unwrap(),
            vec![0.0, 0.0, 1.0, 0.0]
        );
        let mut out = vec![9.0; 4];
        s.encode_cells(&["", "blue"], &mut out);
        assert_eq!(out, vec![0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn client_mistakes_have_stable_codes() {
        let s = schema();
        assert_eq!(
            encode(&s, json!({"x": 1})).unwrap_err().code,
            "missing_feature"
        );
        assert_eq!(
            encode(&s, json!({"x": 1, "colour": "red", "y": 2}))
                .unwrap_err()
                .code,
            "unknown_feature"
        );
        let e = encode(&s, json!({"x": 1e40, "colour": "red"})).unwrap_err();
        assert_eq!(e.code, "non_finite_feature");
        assert!(e.message.contains("`x` = 1e40"), "{}", e.message);
        // The largest value whose standardised form still fits a 32-bit float.
        assert!(encode(&s, json!({"x": 3.0e38, "colour": "red"})).is_ok());
        let long = "r".repeat(MAX_VALUE_BYTES + 1);
        let e = encode(&s, json!({"x": 1, "colour": long})).unwrap_err();
        assert_eq!(e.code, "value_too_long");
        assert!(encode(&s, json!({"x": 1, "colour": "r".repeat(MAX_VALUE_BYTES)})).is_ok());
        let e = encode(&s, json!({"x": "1", "colour": "red"})).unwrap_err();
        assert_eq!(e.code, "invalid_feature_type");
        assert!(e.message.contains("`x` must be a number"), "{}", e.message);
        assert_eq!(
            encode(&s, json!({"x": 1, "colour": 4})).unwrap_err().code,
            "invalid_feature_type"
        );
    }
}
