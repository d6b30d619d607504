//! Training from a labelled table: task inference, encoding the rows, and the
//! pieces of model selection (`cv`, `select`), the trainers (`linear`, `sgd`),
//! the metrics and the online learner.
//!
//! The first model of a fresh daemon comes from here (`model.bootstrap_data`), and
//! so does `steward train`. Plain synchronous code; callers on the async side run
//! it in `spawn_blocking`.

pub mod compress;
pub mod cv;
pub mod linear;
pub mod metrics;
pub mod online;
pub mod select;
pub mod sgd;

use ndarray::Array2;

use crate::data::{ColumnKind, DataError, Table};
use crate::model::network::NetworkError;
use crate::model::schema::FeatureKind;
use crate::model::{Model, Schema, Task};
use sgd::Targets;

/// Labels with at most this many distinct integer values are classes.
pub const MAX_INTEGER_CLASSES: usize = 20;

/// Everything that can go wrong while training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Linear(#[from] linear::LinearError),
    /// The data cannot train what was asked (one class, too few rows, ...).
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    /// A fit produced weights that are not finite numbers.
    #[error("{candidate}: training diverged (non-finite weights)")]
    Diverged { candidate: String },
    #[error("a training thread panicked")]
    Panicked,
}

impl TrainError {
    /// Whether the error is the input's fault (the command line exits with 2).
    pub fn is_input(&self) -> bool {
        matches!(self, TrainError::Data(_) | TrainError::Invalid { .. })
    }
}

/// A table turned into what the trainers take.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub task: Task,
    pub label: String,
    pub schema: Schema,
    /// Class names in index order (classification).
    pub classes: Vec<String>,
    /// Encoded rows.
    pub x: Array2<f32>,
    pub targets: Targets,
}

/// Checks the label column, decides the task (or takes `forced`), fits the schema
/// and encodes every row.
pub fn prepare(table: &Table, label: &str, forced: Option<Task>) -> Result<Prepared, TrainError> {
    let li = table.label_index(label)?;
    for (row, line) in table.rows.iter().zip(&table.lines) {
        if row[li].is_empty() {
            return Err(table
                .error_at(*line, li, "the label is empty".into())
                .into());
        }
    }
    let task = match forced {
        Some(t) => t,
        None => infer_task(table, li)?,
    };
    let schema = Schema::fit(table, li)?;
    let x = encode_table(&schema, table, Some(li))?;
    let (targets, classes) = match task {
        Task::Classification => {
            let mut classes: Vec<String> = table.rows.iter().map(|r| r[li].clone()).collect();
            classes.sort();
            classes.dedup();
            if classes.len() < 2 {
                return Err(TrainError::Invalid {
                    path: table.path.clone(),
                    message: format!(
                        "label `{label}` has a single class (`{}`); classification needs at least two",
                        classes.first().map_or("", |c| c.as_str())
                    ),
                });
            }
            let index = table
                .rows
                .iter()
                .map(|r| classes.binary_search(&r[li]).unwrap_or(0))
                .collect();
            (
                Targets::Classes {
                    index,
                    classes: classes.len(),
                },
                classes,
            )
        }
        Task::Regression => {
            let values = numeric_labels(table, li, ", and regression needs numeric labels")?;
            (Targets::Values(values), Vec::new())
        }
    };
    Ok(Prepared {
        task,
        label: label.to_string(),
        schema,
        classes,
        x,
        targets,
    })
}

/// The label column as numbers; a cell that is not a finite number is an error
/// naming it, with `why` appended to the message.
fn numeric_labels(table: &Table, li: usize, why: &str) -> Result<Vec<f64>, DataError> {
    table
        .rows
        .iter()
        .zip(&table.lines)
        .map(|(row, line)| match row[li].parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(table.error_at(
                *line,
                li,
                format!("`{}` is not a finite number{why}", row[li]),
            )),
        })
        .collect()
}

/// Encodes the rows of `table` with `schema`, finding each feature's column by
/// name (`label` is never a feature). A missing feature column, or a cell of a
/// numeric feature that is not a finite number, is an error that names it.
pub fn encode_table(
    schema: &Schema,
    table: &Table,
    label: Option<usize>,
) -> Result<Array2<f32>, DataError> {
    let mut columns = Vec::with_capacity(schema.features.len());
    for f in &schema.features {
        match table
            .headers
            .iter()
            .enumerate()
            .position(|(i, h)| h == &f.name && Some(i) != label)
        {
            Some(c) => columns.push(c),
            None => {
                return Err(DataError::At {
                    path: table.path.clone(),
                    line: 1,
                    column: 1,
                    message: format!(
                        "no column `{}`, which the model needs (columns: {})",
                        f.name,
                        table.headers.join(", ")
                    ),
                })
            }
        }
    }
    for (f, &c) in schema.features.iter().zip(&columns) {
        if matches!(f.kind, FeatureKind::Numeric { .. })
            && table.column_kind(c)? == ColumnKind::Categorical
        {
            let (row, line) = table
                .rows
                .iter()
                .zip(&table.lines)
                .find(|(r, _)| !r[c].is_empty() && r[c].parse::<f64>().is_err())
                .map_or((String::new(), 1), |(r, l)| (r[c].clone(), *l));
            return Err(table.error_at(
                line,
                c,
                format!(
                    "`{row}` is not a number, and feature `{}` is numeric",
                    f.name
                ),
            ));
        }
    }
    let mut x = Array2::<f32>::zeros((table.rows.len(), schema.width()));
    let mut cells: Vec<&str> = Vec::with_capacity(columns.len());
    for (i, row) in table.rows.iter().enumerate() {
        cells.clear();
        cells.extend(columns.iter().map(|&c| row[c].as_str()));
        if let Some(out) = x.row_mut(i).as_slice_mut() {
            schema.encode_cells(&cells, out);
        }
    }
    Ok(x)
}

/// Infers the task: a non-numeric label, or an integer label with at most
/// [`MAX_INTEGER_CLASSES`] distinct values, is classification; anything else
/// regression.
pub fn infer_task(table: &Table, label: usize) -> Result<Task, DataError> {
    if table.column_kind(label)? == ColumnKind::Categorical {
        return Ok(Task::Classification);
    }
    let mut distinct: Vec<f64> = Vec::new();
    for row in &table.rows {
        let Ok(v) = row[label].parse::<f64>() else {
            continue;
        };
        if v.fract() != 0.0 {
            return Ok(Task::Regression);
        }
        if !distinct.contains(&v) {
            distinct.push(v);
            if distinct.len() > MAX_INTEGER_CLASSES {
                return Ok(Task::Regression);
            }
        }
    }
    Ok(Task::Classification)
}

/// The result of scoring a model on labelled data (`steward eval`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EvalReport {
    pub data: String,
    pub task: Task,
    pub label: String,
    pub rows: usize,
    /// `accuracy` or `r2`.
    pub metric: &'static str,
    pub value: f64,
    pub scores: metrics::Scores,
    /// The metric of the int8 form, when the model has one.
    pub value_int8: Option<f64>,
    /// Rows whose label is none of the model's classes (they count as errors).
    pub unknown_labels: usize,
}

/// Scores `model` on `table`, whose label column is `label`.
pub fn evaluate(model: &Model, table: &Table, label: &str) -> Result<EvalReport, TrainError> {
    let li = table.label_index(label)?;
    let x = encode_table(&model.schema, table, Some(li))?;
    let mut unknown = 0;
    let int8_out = model.quant.as_ref().map(|q| q.forward_batch(x.view()));
    let mut value_int8 = None;
    let scores = match model.meta.task {
        Task::Classification => {
            let k = model.meta.classes.len();
            let mut truth = Vec::with_capacity(table.rows.len());
            for (row, line) in table.rows.iter().zip(&table.lines) {
                if row[li].is_empty() {
                    return Err(table
                        .error_at(*line, li, "the label is empty".into())
                        .into());
                }
                let t = model.meta.classes.iter().position(|c| c == &row[li]);
                unknown += usize::from(t.is_none());
                truth.push(t.unwrap_or(k));
            }
            let predicted = metrics::predict_classes(&model.network, x.view());
            if let Some(out) = &int8_out {
                let p = metrics::classes_from_outputs(out, model.network.output());
                value_int8 =
                    Some(metrics::classification(&model.meta.classes, &p, &truth).accuracy);
            }
            metrics::Scores::Classification(metrics::classification(
                &model.meta.classes,
                &predicted,
                &truth,
            ))
        }
        Task::Regression => {
            let truth = numeric_labels(table, li, "")?;
            let predicted = metrics::predict_values(&model.network, x.view());
            if let Some(out) = &int8_out {
                let p: Vec<f64> = out.column(0).iter().map(|v| f64::from(*v)).collect();
                value_int8 = Some(metrics::regression(&p, &truth).r2);
            }
            metrics::Scores::Regression(metrics::regression(&predicted, &truth))
        }
    };
    Ok(EvalReport {
        data: table.path.clone(),
        task: model.meta.task,
        label: label.to_string(),
        rows: table.rows.len(),
        metric: scores.metric_name(),
        value: scores.metric(),
        scores,
        value_int8,
        unknown_labels: unknown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_inference_rule() {
        let t = Table::parse("t", b"x,label\n1,a\n2,b\n").unwrap();
        assert_eq!(infer_task(&t, 1).unwrap(), Task::Classification);
        let t = Table::parse("t", b"x,label\n1,0\n2,1\n").unwrap();
        assert_eq!(infer_task(&t, 1).unwrap(), Task::Classification);
        let t = Table::parse("t", b"x,label\n1,0.5\n2,1\n").unwrap();
        assert_eq!(infer_task(&t, 1).unwrap(), Task::Regression);
    }

    #[test]
    fn forced_regression_needs_numeric_labels() {
        let t = Table::parse("t.csv", b"x,label\n1,2.5\n2,big\n").unwrap();
        let err = prepare(&t, "label", Some(Task::Regression)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.csv:3:2: `big` is not a finite number, and regression needs numeric labels (column `label`)"
        );
    }

    #[test]
    fn single_class_is_refused() {
        let t = Table::parse("t.csv", b"x,label\n1,a\n2,a\n").unwrap();
        let err = prepare(&t, "label", None).unwrap_err();
        assert!(err.to_string().contains("single class (`a`)"), "{err}");
        assert!(err.is_input());
    }

    #[test]
    fn encoding_finds_columns_by_name_and_names_a_missing_one() {
        let t = Table::parse("t.csv", b"x,c,label\n1,a,n\n2,b,y\n").unwrap();
        let p = prepare(&t, "label", None).unwrap();
        let shuffled = Table::parse("u.csv", b"label,c,x\nn,a,1\ny,b,2\n").unwrap();
        assert_eq!(encode_table(&p.schema, &shuffled, Some(0)).unwrap(), p.x);
        let missing = Table::parse("v.csv", b"label,x\nn,1\n").unwrap();
        let err = encode_table(&p.schema, &missing, Some(0)).unwrap_err();
        assert!(
            err.to_string().starts_with("v.csv:1:1: no column `c`"),
            "{err}"
        );
        let text = Table::parse("w.csv", b"x,c,label\n1,a,n\nten,b,y\n").unwrap();
        let err = encode_table(&p.schema, &text, Some(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "w.csv:3:1: `ten` is not a number, and feature `x` is numeric (column `x`)"
        );
    }
}
