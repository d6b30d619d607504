//! From what the daemon holds to what the drift tests read: the model's reference
//! sample (CSV cells) and the logged window (JSON objects as received) as feature
//! values in the schema's order, and the model's outputs on both.
//!
//! Missing values (an empty cell, `null`, a feature not in a logged row, a value
//! of the wrong type) become NaN or "", which the tests leave out: a window that
//! is all missing in a feature reports that feature as untested, never as NaN.

use serde_json::{Map, Value};

use super::drift::Values;
use crate::model::schema::{FeatureKind, Schema};
use crate::model::{Model, Prediction, Reference, Task};

/// The reference sample's features, in the schema's order. A feature the sample
/// lacks has no values (and is reported untested).
pub fn reference_values(schema: &Schema, reference: &Reference) -> Vec<Values> {
    schema
        .features
        .iter()
        .map(|f| {
            let column = reference.columns.iter().position(|c| c == &f.name);
            let cells = reference
                .rows
                .iter()
                .map(move |r| column.and_then(|c| r.get(c)).map_or("", String::as_str));
            match f.kind {
                FeatureKind::Numeric { .. } => Values::Numeric(
                    cells
                        .map(|s| s.parse::<f64>().ok().filter(|v| v.is_finite()))
                        .map(|v| v.unwrap_or(f64::NAN))
                        .collect(),
                ),
                FeatureKind::Categorical { .. } => {
                    Values::Categorical(cells.map(str::to_string).collect())
                }
            }
        })
        .collect()
}

/// Logged rows' features, in the schema's order.
pub fn logged_values(schema: &Schema, rows: &[Map<String, Value>]) -> Vec<Values> {
    schema
        .features
        .iter()
        .map(|f| {
            let cells = rows.iter().map(|r| r.get(&f.name));
            match f.kind {
                FeatureKind::Numeric { .. } => Values::Numeric(
                    cells
                        .map(|v| {
                            v.and_then(Value::as_f64)
                                .filter(|x| x.is_finite())
                                .unwrap_or(f64::NAN)
                        })
                        .collect(),
                ),
                FeatureKind::Categorical { .. } => Values::Categorical(
                    cells
                        .map(|v| v.and_then(Value::as_str).unwrap_or("").to_string())
                        .collect(),
                ),
            }
        })
        .collect()
}

/// The model's outputs on its own reference sample: class names for
/// classification, values for regression.
pub fn reference_outputs(model: &Model, reference: &Reference) -> Values {
    let schema = &model.schema;
    let positions: Vec<Option<usize>> = schema
        .features
        .iter()
        .map(|f| reference.columns.iter().position(|c| c == &f.name))
        .collect();
    let mut x = vec![0.0f32; schema.width()];
    let mut classes = Vec::new();
    let mut values = Vec::new();
    for row in &reference.rows {
        let cells: Vec<&str> = positions
            .iter()
            .map(|p| p.and_then(|c| row.get(c)).map_or("", String::as_str))
            .collect();
        schema.encode_cells(&cells, &mut x);
        match model.predict_encoded(&x) {
            Prediction::Class { label, .. } => classes.push(label),
            Prediction::Value(v) => values.push(v),
        }
    }
    match model.meta.task {
        Task::Classification => Values::Categorical(classes),
        Task::Regression => Values::Numeric(values),
    }
}

/// The logged outputs' predictions (the `output` column's `prediction`).
pub fn logged_outputs(task: Task, outputs: &[Value]) -> Values {
    let predictions = outputs.iter().map(|o| o.get("prediction"));
    match task {
        Task::Classification => Values::Categorical(
            predictions
                .map(|p| p.and_then(Value::as_str).unwrap_or("").to_string())
                .collect(),
        ),
        Task::Regression => Values::Numeric(
            predictions
                .map(|p| p.and_then(Value::as_f64).unwrap_or(f64::NAN))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::schema::Feature;

    fn schema() -> Schema {
        Schema {
            features: vec![
                Feature {
                    name: "x".into(),
                    kind: FeatureKind::Numeric {
                        mean: 0.0,
                        std: 1.0,
                    },
                },
                Feature {
                    name: "c".into(),
                    kind: FeatureKind::Categorical {
                        categories: vec!["a".into(), "b".into()],
                        mode: "a".into(),
                    },
                },
            ],
        }
    }

    #[test]
    fn reference_cells_become_values_with_missing_as_nan_or_empty() {
        let reference = Reference {
            columns: vec!["c".into(), "x".into()],
            rows: vec![
                vec!["a".into(), "1.5".into()],
                vec!["".into(), "".into()],
                vec!["b".into(), "nan".into()],
            ],
            population: 3,
        };
        let v = reference_values(&schema(), &reference);
        let Values::Numeric(x) = &v[0] else {
            panic!("{v:?}")
        };
        assert_eq!(x[0], 1.5);
        assert!(x[1].is_nan() && x[2].is_nan());
        assert_eq!(
            v[1],
            Values::Categorical(vec!["a".into(), "".into(), "b".into()])
        );
    }

    #[test]
    fn logged_rows_become_values_and_wrong_types_count_as_missing() {
        let rows: Vec<Map<String, Value>> = [
            serde_json::json!({"x": 2.0, "c": "b"}),
            serde_json::json!({"x": null, "c": null}),
            serde_json::json!({"x": "oops", "c": 3}),
            serde_json::json!({}),
        ]
        .into_iter()
        .filter_map(|v| v.as_object().cloned())
        .collect();
        let v = logged_values(&schema(), &rows);
        let Values::Numeric(x) = &v[0] else {
            panic!("{v:?}")
        };
        assert_eq!(x[0], 2.0);
        assert!(x[1..].iter().all(|v| v.is_nan()));
        assert_eq!(
            v[1],
            Values::Categorical(vec!["b".into(), "".into(), "".into(), "".into()])
        );
    }

    #[test]
    fn logged_outputs_read_the_prediction() {
        let outs = vec![
            serde_json::json!({"prediction": "a", "probabilities": {"a": 0.9}}),
            serde_json::json!({"prediction": 1.25}),
        ];
        assert_eq!(
            logged_outputs(Task::Classification, &outs),
            Values::Categorical(vec!["a".into(), "".into()])
        );
        let Values::Numeric(v) = logged_outputs(Task::Regression, &outs) else {
            panic!()
        };
        assert!(v[0].is_nan());
        assert_eq!(v[1], 1.25);
    }
}
