//! A model's anomaly scorer: which slots of the encoded input are numeric
//! features, and the [`Gaussian`] fitted over them on the training rows. Stored in
//! the model's metadata; the serving path scores each encoded row with it.
//!
//! Only numeric features take part: one-hot slots are not continuous, and a
//! category never seen in training already maps to the encoder's "other" slot.
//! A schema without numeric features has no scorer (answers carry
//! `anomaly_score: null`).

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::model::schema::{FeatureKind, Schema};
use crate::stats::gaussian::{AnomalyError, Gaussian};

/// The most numeric slots scored without a heap buffer.
const STACK: usize = 128;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scorer {
    /// Positions of the numeric features' slots in the encoded row.
    pub columns: Vec<usize>,
    pub gaussian: Gaussian,
}

impl Scorer {
    /// Fits on encoded rows `x` (rows × `schema.width()`); `Ok(None)` when the
    /// schema has no numeric feature.
    pub fn fit(
        schema: &Schema,
        x: ArrayView2<'_, f32>,
        level: f64,
    ) -> Result<Option<Scorer>, AnomalyError> {
        let mut columns = Vec::new();
        let mut offset = 0;
        for f in &schema.features {
            if matches!(f.kind, FeatureKind::Numeric { .. }) {
                columns.push(offset);
            }
            offset += f.width();
        }
        if columns.is_empty() {
            return Ok(None);
        }
        let picked = x.select(ndarray::Axis(1), &columns);
        let gaussian = Gaussian::fit(picked.view(), level)?;
        Ok(Some(Scorer { columns, gaussian }))
    }

    /// The squared Mahalanobis distance of an encoded row's numeric slots.
    pub fn score(&self, x: &[f32]) -> f64 {
        let pick = |buf: &mut [f32]| {
            for (b, &c) in buf.iter_mut().zip(&self.columns) {
                *b = x.get(c).copied().unwrap_or(f32::NAN);
            }
        };
        let p = self.columns.len();
        if p <= STACK {
            let mut buf = [0.0f32; STACK];
            pick(&mut buf[..p]);
            self.gaussian.score(&buf[..p])
        } else {
            let mut buf = vec![0.0f32; p];
            pick(&mut buf);
            self.gaussian.score(&buf)
        }
    }

    /// The scorer's layout must match the schema it is stored with.
    pub fn check(&self, schema: &Schema) -> Result<(), String> {
        let width = schema.width();
        if self.columns.len() != self.gaussian.dim() {
            return Err(format!(
                "anomaly scorer: {} columns but a {}-dimensional model",
                self.columns.len(),
                self.gaussian.dim()
            ));
        }
        if let Some(c) = self.columns.iter().find(|c| **c >= width) {
            return Err(format!(
                "anomaly scorer: column {c} is outside the encoded width {width}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::schema::Feature;
    use ndarray::Array2;

    #[test]
    fn scores_only_the_numeric_slots() {
        let schema = Schema {
            features: vec![
                Feature {
                    name: "c".into(),
                    kind: FeatureKind::Categorical {
                        categories: vec!["a".into()],
                        mode: "a".into(),
                    },
                },
                Feature {
                    name: "x".into(),
                    kind: FeatureKind::Numeric {
                        mean: 0.0,
                        std: 1.0,
                    },
                },
            ],
        };
        // Encoded rows: [one-hot a, other, x]; x takes -1, 0, 1 in turn.
        let rows: Vec<f32> = (0..300)
            .flat_map(|i| [1.0, 0.0, (i % 3) as f32 - 1.0])
            .collect();
        let x = Array2::from_shape_vec((300, 3), rows).unwrap();
        let s = Scorer::fit(&schema, x.view(), 0.999).unwrap().unwrap();
        assert_eq!(s.columns, vec![2]);
        s.check(&schema).unwrap();
        // Variance of x is 2/3 (maximum likelihood): score = x² · 3/2, whatever
        // the one-hot slots hold.
        assert!((s.score(&[0.0, 1.0, 2.0]) - 6.0).abs() < 1e-9);
        assert!((s.score(&[1.0, 0.0, 0.0])).abs() < 1e-9);
        let too_narrow = Schema {
            features: schema.features[1..].to_vec(),
        };
        assert!(s.check(&too_narrow).is_err());
    }

    #[test]
    fn no_numeric_feature_means_no_scorer() {
        let schema = Schema {
            features: vec![Feature {
                name: "c".into(),
                kind: FeatureKind::Categorical {
                    categories: vec!["a".into()],
                    mode: "a".into(),
                },
            }],
        };
        let x = Array2::<f32>::zeros((10, 2));
        assert!(Scorer::fit(&schema, x.view(), 0.999).unwrap().is_none());
    }
}
