//! Training from a labelled table: task inference, target encoding, a held-out
//! estimate of the metric, and the final fit on every row.
//!
//! The first model of a fresh daemon comes from here (`model.bootstrap_data`).
//! Plain synchronous code; callers on the async side run it in `spawn_blocking`.

pub mod sgd;

use std::collections::BTreeMap;

use ndarray::{Array2, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::{ColumnKind, DataError, Table};
use crate::model::network::NetworkError;
use crate::model::{Model, ModelMeta, Schema, Task};
use sgd::{SgdParams, Targets};

/// Labels with at most this many distinct integer values are classes.
pub const MAX_INTEGER_CLASSES: usize = 20;

/// Share of rows held out to estimate the metric before the final fit.
pub const HOLDOUT: f64 = 0.2;

/// Everything that can go wrong while training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
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

/// Fits a model to `table` with label column `label`.
pub fn fit_table(table: &Table, label: &str, params: &SgdParams) -> Result<Model, TrainError> {
    let li = table.label_index(label)?;
    for (row, line) in table.rows.iter().zip(&table.lines) {
        if row[li].is_empty() {
            return Err(table
                .error_at(*line, li, "the label is empty".into())
                .into());
        }
    }
    let task = infer_task(table, li)?;
    let schema = Schema::fit(table, li)?;
    let width = schema.width();
    let mut x = Array2::<f32>::zeros((table.rows.len(), width));
    for (i, row) in table.rows.iter().enumerate() {
        let cells: Vec<&str> = row
            .iter()
            .enumerate()
            .filter(|(c, _)| *c != li)
            .map(|(_, s)| s.as_str())
            .collect();
        if let Some(out) = x.row_mut(i).as_slice_mut() {
            schema.encode_cells(&cells, out);
        }
    }
    let (targets, classes) = match task {
        Task::Classification => {
            let mut classes: Vec<String> = table.rows.iter().map(|r| r[li].clone()).collect();
            classes.sort();
            classes.dedup();
            if classes.len() < 2 {
                return Err(TrainError::Invalid {
                    path: table.path.clone(),
                    message: format!(
                        "label `{label}` has a single class; classification needs at least two"
                    ),
                });
            }
            let index = table
                .rows
                .iter()
                .map(|r| classes.iter().position(|c| c == &r[li]).unwrap_or(0))
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
            let values = table
                .rows
                .iter()
                .map(|r| r[li].parse::<f64>().unwrap_or(0.0))
                .collect();
            (Targets::Values(values), Vec::new())
        }
    };

    // Held-out estimate: fit on a seeded 80% and score the other 20%.
    let mut order: Vec<usize> = (0..table.rows.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(params.seed));
    let cut = ((1.0 - HOLDOUT) * order.len() as f64).round() as usize;
    let (train_idx, test_idx) = order.split_at(cut);
    let mut metrics = BTreeMap::new();
    if !test_idx.is_empty() {
        let net = sgd::fit(
            x.select(Axis(0), train_idx).view(),
            &subset(&targets, train_idx),
            params,
        )?;
        let probe = Model {
            schema: schema.clone(),
            network: net,
            meta: meta(
                task,
                label,
                &classes,
                BTreeMap::new(),
                serde_json::Value::Null,
            ),
        };
        let (name, value) = score(&probe, &x, &targets, test_idx);
        metrics.insert(name.to_string(), value);
    }
    let network = sgd::fit(x.view(), &targets, params)?;
    let report = serde_json::json!({
        "rows": table.rows.len(),
        "features": schema.features.len(),
        "holdout_rows": test_idx.len(),
        "params": params,
        "source": table.path,
    });
    let model = Model {
        schema,
        network,
        meta: meta(task, label, &classes, metrics, report),
    };
    model.check().map_err(|message| TrainError::Invalid {
        path: table.path.clone(),
        message,
    })?;
    Ok(model)
}

fn meta(
    task: Task,
    label: &str,
    classes: &[String],
    metrics: BTreeMap<String, f64>,
    training: serde_json::Value,
) -> ModelMeta {
    ModelMeta {
        task,
        label: label.to_string(),
        classes: classes.to_vec(),
        metrics,
        training,
        created: crate::time::now_rfc3339(),
        parent: None,
    }
}

fn subset(t: &Targets, idx: &[usize]) -> Targets {
    match t {
        Targets::Classes { index, classes } => Targets::Classes {
            index: idx.iter().map(|&i| index[i]).collect(),
            classes: *classes,
        },
        Targets::Values(v) => Targets::Values(idx.iter().map(|&i| v[i]).collect()),
    }
}

/// Accuracy (classification) or R² (regression) of `model` on rows `idx`.
pub fn score(model: &Model, x: &Array2<f32>, t: &Targets, idx: &[usize]) -> (&'static str, f64) {
    let out = model.network.forward_batch(x.select(Axis(0), idx).view());
    match t {
        Targets::Classes { index, .. } => {
            let correct = idx
                .iter()
                .zip(out.rows())
                .filter(|(&i, row)| {
                    let predicted = if row.len() == 1 {
                        usize::from(row[0] >= 0.5)
                    } else {
                        row.iter()
                            .enumerate()
                            .fold(0, |b, (k, p)| if *p > row[b] { k } else { b })
                    };
                    predicted == index[i]
                })
                .count();
            ("accuracy", correct as f64 / idx.len().max(1) as f64)
        }
        Targets::Values(v) => {
            let truth: Vec<f64> = idx.iter().map(|&i| v[i]).collect();
            let mean = truth.iter().sum::<f64>() / truth.len().max(1) as f64;
            let ss_tot: f64 = truth.iter().map(|y| (y - mean).powi(2)).sum();
            let ss_res: f64 = truth
                .iter()
                .zip(out.column(0))
                .map(|(y, p)| (y - f64::from(*p)).powi(2))
                .sum();
            (
                "r2",
                if ss_tot > 0.0 {
                    1.0 - ss_res / ss_tot
                } else {
                    0.0
                },
            )
        }
    }
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
    fn the_bundled_data_trains_a_good_model() {
        let t = Table::parse("penguins.csv", crate::BUNDLED_PENGUINS.as_bytes()).unwrap();
        let m = fit_table(&t, "label", &SgdParams::default()).unwrap();
        assert_eq!(m.meta.classes, vec!["Adelie", "Chinstrap", "Gentoo"]);
        // Species are close to separable from bill and flipper sizes.
        assert!(m.meta.metrics["accuracy"] > 0.95, "{:?}", m.meta.metrics);
    }

    #[test]
    fn single_class_is_refused() {
        let t = Table::parse("t.csv", b"x,label\n1,a\n2,a\n").unwrap();
        let err = fit_table(&t, "label", &SgdParams::default()).unwrap_err();
        assert!(err.to_string().contains("single class"), "{err}");
    }
}
