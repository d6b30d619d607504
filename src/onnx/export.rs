//! A steward model as an ONNX graph (opset 13): the f32 network as Gemm nodes
//! with their activations and output function, and the numeric features'
//! standardisation as Sub and Div nodes in front, so the graph takes raw values.
//!
//! What ONNX's single float input cannot express stays with the caller and is
//! written into the file's metadata (`steward.schema`): categorical features
//! arrive as their one-hot slots (the category's slot 1, "other" last), and a
//! missing numeric value is sent as the feature's mean. The int8 form and the
//! pruning masks are not exported: the f32 weights are the model (pruned
//! weights are zeros in them).

use prost::Message;
use serde::Serialize;

use super::proto::{
    attribute_type, data_type, AttributeProto, Dimension, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto,
    TypeProto, ValueInfoProto,
};
use crate::model::network::{Activation, Output};
use crate::model::schema::FeatureKind;
use crate::model::Model;

/// The opset the exported graph declares.
pub const OPSET: i64 = 13;
/// ONNX IR version 8 (onnx 1.10 and later, onnxruntime 1.10 and later).
const IR_VERSION: i64 = 8;
/// The graph's input name.
pub const INPUT: &str = "input";

/// One slot of the exported input.
#[derive(Debug, Clone, Serialize)]
pub struct Slot {
    pub feature: String,
    /// For a categorical feature's slot: the category (`null` for "other").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<Option<String>>,
}

/// What `steward export --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub opset: i64,
    pub input: &'static str,
    pub output: &'static str,
    pub slots: Vec<Slot>,
    pub bytes: usize,
}

/// The ONNX bytes of `model`, and what the graph's input and output are.
pub fn export(model: &Model, version: Option<&str>) -> Result<(Vec<u8>, ExportReport), String> {
    let width = model.schema.width();
    let (mut mean, mut std, mut slots) = (
        Vec::with_capacity(width),
        Vec::with_capacity(width),
        Vec::new(),
    );
    for f in &model.schema.features {
        match &f.kind {
            FeatureKind::Numeric { mean: m, std: s } => {
                mean.push(*m as f32);
                std.push(*s as f32);
                slots.push(Slot {
                    feature: f.name.clone(),
                    category: None,
                });
            }
            FeatureKind::Categorical { categories, .. } => {
                for c in categories.iter().map(|c| Some(c.clone())).chain([None]) {
                    mean.push(0.0);
                    std.push(1.0);
                    slots.push(Slot {
                        feature: f.name.clone(),
                        category: Some(c),
                    });
                }
            }
        }
    }
    let mut g = Graph::default();
    g.constant("mean", &[width], &mean);
    g.constant("std", &[width], &std);
    g.node("Sub", &[INPUT, "mean"], "centred", vec![]);
    let mut x = g.node("Div", &["centred", "std"], "encoded", vec![]);
    let net = &model.network;
    let last = net.layers().len() - 1;
    for (i, layer) in net.layers().iter().enumerate() {
        let (w, b) = (format!("layers.{i}.weight"), format!("layers.{i}.bias"));
        let values: Vec<f32> = layer.weight.iter().copied().collect();
        g.constant(&w, &[layer.outputs(), layer.inputs()], &values);
        g.constant(&b, &[layer.outputs()], &layer.bias.to_vec());
        let z = if i == last && net.output() == Output::Identity {
            "prediction".to_string()
        } else {
            format!("layers.{i}.z")
        };
        x = g.node("Gemm", &[&x, &w, &b], &z, vec![int_attribute("transB", 1)]);
        if i < last {
            x = activation(&mut g, net.activations()[i], &x, &format!("layers.{i}.a"));
        }
    }
    let output = match net.output() {
        Output::Identity => "prediction",
        Output::Softmax => {
            g.node(
                "Softmax",
                &[&x],
                "probabilities",
                vec![int_attribute("axis", -1)],
            );
            "probabilities"
        }
        Output::Sigmoid => {
            g.node("Sigmoid", &[&x], "p1", vec![]);
            g.constant("one", &[1], &[1.0]);
            g.node("Sub", &["one", "p1"], "p0", vec![]);
            g.node(
                "Concat",
                &["p0", "p1"],
                "probabilities",
                vec![int_attribute("axis", 1)],
            );
            "probabilities"
        }
    };
    let outputs = match net.output() {
        Output::Identity => 1,
        Output::Softmax => net.outputs(),
        Output::Sigmoid => 2,
    };
    let proto = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "steward".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        model_version: 0,
        graph: Some(GraphProto {
            node: g.nodes,
            name: "steward".into(),
            initializer: g.initializers,
            input: vec![value_info(INPUT, width)],
            output: vec![value_info(output, outputs)],
            ..Default::default()
        }),
        metadata_props: metadata(model, version)?,
        ..Default::default()
    };
    let bytes = proto.encode_to_vec();
    let report = ExportReport {
        opset: OPSET,
        input: INPUT,
        output,
        slots,
        bytes: bytes.len(),
    };
    Ok((bytes, report))
}

/// The activation node after hidden layer `x`.
fn activation(g: &mut Graph, a: Activation, x: &str, out: &str) -> String {
    match a {
        Activation::Relu => g.node("Relu", &[x], out, vec![]),
        Activation::LeakyRelu { alpha } => g.node(
            "LeakyRelu",
            &[x],
            out,
            vec![float_attribute("alpha", alpha)],
        ),
        Activation::Tanh => g.node("Tanh", &[x], out, vec![]),
        Activation::Sigmoid => g.node("Sigmoid", &[x], out, vec![]),
    }
}

fn metadata(model: &Model, version: Option<&str>) -> Result<Vec<StringStringEntryProto>, String> {
    let mut props = vec![
        ("steward.schema", json(&model.schema)?),
        ("steward.task", json(&model.meta.task)?),
        ("steward.label", model.meta.label.clone()),
        ("steward.classes", json(&model.meta.classes)?),
    ];
    if let Some(v) = version {
        props.push(("steward.version", v.to_string()));
    }
    Ok(props
        .into_iter()
        .map(|(k, v)| StringStringEntryProto {
            key: k.into(),
            value: v,
        })
        .collect())
}

fn json<T: Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| e.to_string())
}

/// Nodes and initializers being built.
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Graph {
    fn constant(&mut self, name: &str, dims: &[usize], values: &[f32]) {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type::FLOAT,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
    }

    /// Adds a node named after its output; returns the output's name.
    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        output: &str,
        attribute: Vec<AttributeProto>,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            name: output.into(),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        output.to_string()
    }
}

fn int_attribute(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i,
        ..Default::default()
    }
}

fn float_attribute(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f,
        ..Default::default()
    }
}

/// A float tensor `[batch, width]`.
fn value_info(name: &str, width: usize) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto {
                    dim: vec![
                        Dimension {
                            dim_value: None,
                            dim_param: Some("batch".into()),
                        },
                        Dimension {
                            dim_value: Some(width as i64),
                            dim_param: None,
                        },
                    ],
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
