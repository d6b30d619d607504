//! ONNX in and out: `steward import` turns an MLP-shaped ONNX graph trained
//! elsewhere (PyTorch, scikit-learn through skl2onnx) into a steward model, and
//! `steward export` writes a steward model as an ONNX graph.
//!
//! The protobuf messages are declared in `proto` with prost's derive (no code
//! generator, no `protoc`); `graph` walks the nodes symbolically, `build` folds
//! the chain into steward's network and encoding, `export` writes one back. The
//! CSV given with the graph supplies the feature names, kinds and order, the
//! reference sample for drift, the anomaly model, and the rows on which the
//! converted network is checked against the graph, evaluated stage by stage.

mod build;
pub mod export;
mod graph;
pub mod proto;
mod tensor;

use std::collections::BTreeMap;

use prost::Message;
use serde::Serialize;

use crate::data::{DataError, Table};
use crate::model::network::Output;
use crate::model::quant::QuantNetwork;
use crate::model::schema::FeatureKind;
use crate::model::{Model, ModelMeta, Task};
use crate::train::{self, TrainError};
use build::Final;
use graph::{Stage, WalkError};

/// Everything that can be wrong with an import. All but [`OnnxError::Check`] are
/// the input's fault (exit code 2, HTTP 4xx).
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{file}: not a readable ONNX model (truncated or corrupt?): {reason}")]
    Decode { file: String, reason: String },
    #[error("{file}: node `{node}`: op {op} is not supported: {why}")]
    Unsupported {
        file: String,
        node: String,
        op: String,
        why: String,
    },
    #[error("{file}: node `{node}`: {reason}")]
    Node {
        file: String,
        node: String,
        reason: String,
    },
    #[error("{file}: {reason}")]
    Graph { file: String, reason: String },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The converted network does not compute what the graph does.
    #[error(
        "{file}: the converted network differs from the graph by {diff:.3e} on {csv} line {line} \
         (tolerance {tolerance:e}); raise --tolerance if the graph's own float32 rounding explains it"
    )]
    Check {
        file: String,
        csv: String,
        line: u64,
        diff: f64,
        tolerance: f64,
    },
}

impl OnnxError {
    /// A stable code for the HTTP API.
    pub fn code(&self) -> &'static str {
        match self {
            OnnxError::Decode { .. } => "invalid_onnx",
            OnnxError::Unsupported { .. } => "unsupported_onnx_op",
            OnnxError::Node { .. } | OnnxError::Graph { .. } => "unsupported_onnx_graph",
            OnnxError::Data(_) | OnnxError::Train(_) => "invalid_csv",
            OnnxError::Check { .. } => "onnx_check_failed",
        }
    }
}

/// What the import takes besides the two files.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub label: String,
    pub task: Option<Task>,
    /// Class labels in the graph's output order, when the graph does not name them.
    pub classes: Option<Vec<String>>,
    /// Largest difference allowed between the network and the graph, relative to
    /// `max(1, |value|)`.
    pub tolerance: f64,
    /// The metric the int8 form may lose on the CSV rows; `None`: no int8 form.
    pub max_metric_drop: Option<f64>,
    pub seed: u64,
    pub anomaly_level: f64,
}

impl ImportOptions {
    pub fn new(label: &str) -> ImportOptions {
        ImportOptions {
            label: label.to_string(),
            task: None,
            classes: None,
            tolerance: 1e-5,
            max_metric_drop: Some(0.01),
            seed: 42,
            anomaly_level: crate::stats::gaussian::DEFAULT_LEVEL,
        }
    }
}

/// What `steward import --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub source: String,
    pub data: String,
    pub producer: String,
    pub opsets: BTreeMap<String, i64>,
    pub input: String,
    pub output: String,
    pub task: Task,
    pub label: String,
    pub classes: Vec<String>,
    pub rows: usize,
    pub features: usize,
    pub inputs: usize,
    /// `[out, in]` per layer.
    pub layers: Vec<[usize; 2]>,
    pub activations: Vec<&'static str>,
    pub output_function: Output,
    /// Whether the graph ended in logits and steward added the output function.
    pub output_function_added: bool,
    /// `scaler`: the graph's leading scaler is the encoding; `csv`: the graph took
    /// raw values and the CSV's standardisation was folded into the first layer.
    pub encoding: &'static str,
    pub check: CheckReport,
    pub metric: &'static str,
    pub value: f64,
    /// The int8 form's metric on the same rows, when one was kept.
    pub value_int8: Option<f64>,
    pub bits: u32,
    pub model: Option<String>,
}

/// The comparison of the converted network with the graph.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub rows: usize,
    pub max_abs_diff: f64,
    pub tolerance: f64,
}

/// The rows checked at most.
const CHECK_ROWS: usize = 10_000;

/// A model made from an ONNX graph, and how.
#[derive(Debug, Clone)]
pub struct Imported {
    pub model: Model,
    pub report: ImportReport,
}

/// Decodes an ONNX file's bytes.
pub fn decode(file: &str, bytes: &[u8]) -> Result<proto::ModelProto, OnnxError> {
    let m = proto::ModelProto::decode(bytes).map_err(|e| OnnxError::Decode {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    if m.graph.is_none() || m.ir_version == 0 {
        return Err(OnnxError::Decode {
            file: file.to_string(),
            reason: "it has no graph or no IR version".into(),
        });
    }
    Ok(m)
}

/// Turns the ONNX model in `bytes` (named `file` in messages) into a steward
/// model, with `table` giving the features, the reference rows and the check.
pub fn import(
    file: &str,
    bytes: &[u8],
    table: &Table,
    options: &ImportOptions,
) -> Result<Imported, OnnxError> {
    let proto = decode(file, bytes)?;
    let graph = proto.graph.as_ref().ok_or_else(|| OnnxError::Decode {
        file: file.into(),
        reason: "it has no graph".into(),
    })?;
    let csv_schema = crate::model::Schema::fit(table, table.label_index(&options.label)?)?;
    let chain = graph::walk(graph, csv_schema.width()).map_err(|e| walk_error(file, e))?;
    let graph_error = |reason: String| OnnxError::Graph {
        file: file.into(),
        reason,
    };
    let shape = build::shape(&chain.flow.stages, csv_schema.width()).map_err(graph_error)?;
    let (task, output, added) =
        task_and_output(&shape, &chain, table, options).map_err(graph_error)?;
    let prepared = train::prepare(table, &options.label, Some(task))?;
    let classes = classes(
        task,
        output,
        shape.outputs(),
        &chain,
        &prepared,
        table,
        options,
    )
    .map_err(graph_error)?;
    let (network, schema) = shape.network(&csv_schema, output).map_err(graph_error)?;
    let meta = ModelMeta {
        task,
        label: options.label.clone(),
        classes: classes.clone(),
        metrics: BTreeMap::new(),
        training: serde_json::Value::Null,
        created: None,
        parent: None,
        target: train::select::target_scale(&prepared.targets),
        online_updates: 0,
        reference: Some(train::select::reference_sample(
            table,
            &prepared,
            options.seed,
        )),
        anomaly: None,
    };
    let mut model = Model {
        schema,
        network,
        meta,
        masks: None,
        quant: None,
    };
    let check = check(file, &chain.flow.stages, &model, table, options, added)?;
    let x = train::encode_table(&model.schema, table, table.label_index(&options.label).ok())?;
    model.meta.anomaly = train::select::fit_scorer(&model.schema, x.view(), options.anomaly_level);
    let eval = train::evaluate(&model, table, &options.label)?;
    let value_int8 = keep_int8(&mut model, x.view(), table, options, eval.value)?;
    model
        .meta
        .metrics
        .insert(eval.metric.to_string(), eval.value);
    let report = ImportReport {
        source: file.to_string(),
        data: table.path.clone(),
        producer: format!("{} {}", proto.producer_name, proto.producer_version)
            .trim()
            .to_string(),
        opsets: proto
            .opset_import
            .iter()
            .map(|o| {
                (
                    if o.domain.is_empty() {
                        "ai.onnx".to_string()
                    } else {
                        o.domain.clone()
                    },
                    o.version,
                )
            })
            .collect(),
        input: chain.input.clone(),
        output: chain.output.clone(),
        task,
        label: options.label.clone(),
        classes,
        rows: table.rows.len(),
        features: model.schema.features.len(),
        inputs: model.schema.width(),
        layers: model
            .network
            .layers()
            .iter()
            .map(|l| [l.outputs(), l.inputs()])
            .collect(),
        activations: model
            .network
            .activations()
            .iter()
            .map(|a| a.name())
            .collect(),
        output_function: output,
        output_function_added: added,
        encoding: if shape.scaled { "scaler" } else { "csv" },
        check,
        metric: eval.metric,
        value: eval.value,
        value_int8,
        bits: if model.quant.is_some() { 8 } else { 32 },
        model: None,
    };
    model.meta.training = serde_json::json!({ "source": "onnx", "import": &report });
    if let Some(after) = value_int8.filter(|_| model.quant.is_some()) {
        // What the daemon reads to decide whether int8 may serve (as after training).
        model.meta.training["compressed"] =
            serde_json::json!({ "metric_before": eval.value, "metric_after": after });
    }
    Ok(Imported { model, report })
}

fn walk_error(file: &str, e: WalkError) -> OnnxError {
    let file = file.to_string();
    match e {
        WalkError::Unsupported { op, node, why } => OnnxError::Unsupported {
            file,
            node,
            op,
            why,
        },
        WalkError::Node { node, reason } => OnnxError::Node { file, node, reason },
        WalkError::Graph(reason) => OnnxError::Graph { file, reason },
    }
}

/// The task and output function: the graph's own when it ends in softmax or a
/// sigmoid; for a graph ending in a layer, the task the CSV's label says (or
/// `--task`), with softmax (sigmoid for one unit) added to a classifier's logits.
fn task_and_output(
    shape: &build::Shape,
    chain: &graph::Chain,
    table: &Table,
    options: &ImportOptions,
) -> Result<(Task, Output, bool), String> {
    let graph_says = match shape.last {
        Final::Softmax => Some(Output::Softmax),
        Final::Sigmoid => Some(Output::Sigmoid),
        Final::None if chain.classes.is_some() => {
            return Err("the graph names classes but ends in a layer".into())
        }
        Final::None => None,
    };
    let task = match (graph_says, options.task) {
        (Some(_), Some(Task::Regression)) => {
            return Err(format!(
                "the graph ends in {:?}, a classifier's output, but --task regression was given",
                shape.last
            ))
        }
        (Some(_), _) => Task::Classification,
        (None, Some(t)) => t,
        (None, None) => {
            let li = table
                .label_index(&options.label)
                .map_err(|e| e.to_string())?;
            train::infer_task(table, li).map_err(|e| e.to_string())?
        }
    };
    Ok(match (graph_says, task) {
        (Some(o), _) => (task, o, false),
        (None, Task::Regression) => (task, Output::Identity, false),
        (None, Task::Classification) if shape.outputs() == 1 => (task, Output::Sigmoid, true),
        (None, Task::Classification) => (task, Output::Softmax, true),
    })
}

/// The class labels in output order: `--classes`, else the graph's, else the
/// CSV's labels (in numeric order when they are all integers, as scikit-learn
/// and a PyTorch class index order them). Every CSV label must be one of them.
fn classes(
    task: Task,
    output: Output,
    outputs: usize,
    chain: &graph::Chain,
    prepared: &train::Prepared,
    table: &Table,
    options: &ImportOptions,
) -> Result<Vec<String>, String> {
    if task == Task::Regression {
        if outputs != 1 {
            return Err(format!(
                "a regression graph must give one value per row; this one gives {outputs}"
            ));
        }
        return Ok(Vec::new());
    }
    let mut classes = match (&options.classes, &chain.classes) {
        (Some(c), _) | (None, Some(c)) => c.clone(),
        (None, None) => prepared.classes.clone(),
    };
    if options.classes.is_none()
        && chain.classes.is_none()
        && classes.iter().all(|c| c.parse::<i64>().is_ok())
    {
        classes.sort_by_key(|c| c.parse::<i64>().unwrap_or(0));
    }
    let want = if output == Output::Sigmoid {
        2
    } else {
        outputs
    };
    if classes.len() != want {
        return Err(format!(
            "the graph gives probabilities for {want} classes but {} are known ({}); pass --classes in the graph's output order",
            classes.len(),
            classes.join(", ")
        ));
    }
    let li = table
        .label_index(&options.label)
        .map_err(|e| e.to_string())?;
    if let Some((row, line)) = table
        .rows
        .iter()
        .zip(&table.lines)
        .find(|(r, _)| !classes.contains(&r[li]))
    {
        return Err(format!(
            "{}:{line}: label `{}` is not one of the graph's classes ({})",
            table.path,
            row[li],
            classes.join(", ")
        ));
    }
    Ok(classes)
}

/// Compares the network with the graph, evaluated stage by stage in f64, on up
/// to [`CHECK_ROWS`] CSV rows without missing cells.
fn check(
    file: &str,
    stages: &[Stage],
    model: &Model,
    table: &Table,
    options: &ImportOptions,
    added: bool,
) -> Result<CheckReport, OnnxError> {
    let columns: Vec<usize> = model
        .schema
        .features
        .iter()
        .map(|f| table.headers.iter().position(|h| h == &f.name).unwrap_or(0))
        .collect();
    let width = model.schema.width();
    let (mut rows, mut max) = (0, 0.0f64);
    let mut encoded = vec![0.0f32; width];
    for (row, line) in table.rows.iter().zip(&table.lines) {
        let cells: Vec<&str> = columns.iter().map(|&c| row[c].as_str()).collect();
        if cells.iter().any(|c| c.is_empty()) {
            continue;
        }
        model.schema.encode_cells(&cells, &mut encoded);
        let raw = graph_input(&cells, model, &encoded);
        let mut want = build::evaluate(stages, &raw);
        if added {
            want = finish(model.network.output(), want);
        }
        let got = model.network.forward_one(&encoded);
        let want_tail = &want[want.len().saturating_sub(got.len())..];
        for (g, w) in got.iter().zip(want_tail) {
            let diff = (f64::from(*g) - w).abs();
            max = max.max(diff);
            // A NaN difference fails the check too.
            let within = diff <= options.tolerance * w.abs().max(1.0);
            if !within {
                return Err(OnnxError::Check {
                    file: file.into(),
                    csv: table.path.clone(),
                    line: *line,
                    diff,
                    tolerance: options.tolerance,
                });
            }
        }
        rows += 1;
        if rows == CHECK_ROWS {
            break;
        }
    }
    Ok(CheckReport {
        rows,
        max_abs_diff: max,
        tolerance: options.tolerance,
    })
}

/// What the graph takes for one row: numeric cells as float32 values, categorical
/// ones as the schema's one-hot slots.
fn graph_input(cells: &[&str], model: &Model, encoded: &[f32]) -> Vec<f64> {
    let mut raw = Vec::with_capacity(encoded.len());
    let mut slot = 0;
    for (f, cell) in model.schema.features.iter().zip(cells) {
        match f.kind {
            FeatureKind::Numeric { .. } => raw.push(f64::from(cell.parse::<f32>().unwrap_or(0.0))),
            FeatureKind::Categorical { .. } => raw.extend(
                encoded[slot..slot + f.width()]
                    .iter()
                    .map(|v| f64::from(*v)),
            ),
        }
        slot += f.width();
    }
    raw
}

/// The output function steward adds to a graph's logits, in f64.
fn finish(output: Output, z: Vec<f64>) -> Vec<f64> {
    build::evaluate(
        &[match output {
            Output::Softmax => Stage::Softmax,
            Output::Sigmoid => Stage::Sigmoid,
            Output::Identity => return z,
        }],
        &z,
    )
}

/// Adds the int8 form when its metric on the CSV rows is within the budget of
/// the f32 one; returns that metric. The f32 weights are left as imported.
fn keep_int8(
    model: &mut Model,
    x: ndarray::ArrayView2<f32>,
    table: &Table,
    options: &ImportOptions,
    f32_value: f64,
) -> Result<Option<f64>, OnnxError> {
    let Some(budget) = options.max_metric_drop else {
        return Ok(None);
    };
    model.quant = Some(QuantNetwork::quantize_static(&model.network, x));
    let eval = train::evaluate(model, table, &options.label)?;
    match eval.value_int8 {
        Some(v) if v >= f32_value - budget => Ok(Some(v)),
        _ => {
            model.quant = None;
            Ok(None)
        }
    }
}
