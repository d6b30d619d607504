//! The symbolic walk over an ONNX graph: every tensor is a constant, a function
//! of the graph's input (a [`Flow`]: the stages applied to it so far), or part of
//! a classifier's label branch, which is recognised and dropped. What comes out
//! is the chain of stages from the input to the one output, which `build` turns
//! into a network. Any node this walk does not know is refused with its op and
//! name.

use std::collections::HashMap;

use super::proto::{data_type, GraphProto, NodeProto};
use super::tensor::{self, Constant, Tensor};
use crate::model::network::Activation;

/// One step of the computation from the graph's input to its output.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `y = W x + b`, `W` is `out × in` (row-major).
    Affine {
        out: usize,
        inputs: usize,
        w: Vec<f64>,
        b: Vec<f64>,
    },
    /// `y = x * scale + shift`, per feature.
    Elementwise {
        scale: Vec<f64>,
        shift: Vec<f64>,
    },
    Act(Activation),
    /// The logistic function: a hidden activation, or the output when last.
    Sigmoid,
    Softmax,
    /// `[1 - p, p]` of the preceding one-unit sigmoid: a binary classifier's
    /// two probabilities as skl2onnx writes them.
    BinaryPair,
}

/// A value computed from the graph's input.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub stages: Vec<Stage>,
    /// The number of values per row.
    pub width: usize,
}

/// What a tensor name stands for during the walk.
#[derive(Debug, Clone, PartialEq)]
enum Sym {
    Const(Constant),
    Flow(Flow),
    /// A classifier's label branch (ArgMax, ArrayFeatureExtractor, ...).
    Label,
}

/// Why the walk stopped, with the node it stopped at.
#[derive(Debug, Clone, PartialEq)]
pub enum WalkError {
    /// An op this importer does not turn into a network.
    Unsupported {
        op: String,
        node: String,
        why: String,
    },
    /// A supported op used in a way that is not (bad attribute, shape, input).
    Node { node: String, reason: String },
    /// Something about the graph as a whole.
    Graph(String),
}

/// The result of the walk.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub input: String,
    /// The input's feature width when the graph fixes it.
    pub input_width: Option<usize>,
    pub output: String,
    pub flow: Flow,
    /// Class labels in output order, when the graph names them (ZipMap,
    /// LinearClassifier, a `classes` constant).
    pub classes: Option<Vec<String>>,
}

/// Walks `graph` whose single input has `width` features.
pub fn walk(graph: &GraphProto, width: usize) -> Result<Chain, WalkError> {
    let mut syms: HashMap<String, Sym> = HashMap::new();
    for t in &graph.initializer {
        let c = tensor::read(t)
            .map_err(|e| WalkError::Graph(format!("initializer `{}`: {e}", t.name)))?;
        syms.insert(t.name.clone(), Sym::Const(c));
    }
    let (input, input_width) = graph_input(graph, &syms)?;
    if let Some(w) = input_width {
        if w != width {
            return Err(WalkError::Graph(format!(
                "the graph's input `{input}` takes {w} features but the CSV's columns encode to {width}"
            )));
        }
    }
    syms.insert(
        input.clone(),
        Sym::Flow(Flow {
            stages: Vec::new(),
            width,
        }),
    );
    if let Some((i, node)) = graph.node.iter().enumerate().find(|(_, n)| !known(n)) {
        return Err(WalkError::Unsupported {
            op: op_name(node),
            node: node_name(i, node),
            why: SUPPORTED.into(),
        });
    }
    let mut classes = None;
    for (i, node) in graph.node.iter().enumerate() {
        let name = node_name(i, node);
        let step = Step {
            node,
            name: &name,
            syms: &syms,
        };
        let outputs = step.run(&mut classes)?;
        for (out, sym) in node.output.iter().zip(outputs) {
            if !out.is_empty() {
                syms.insert(out.clone(), sym);
            }
        }
    }
    let (output, flow) = graph_output(graph, &syms)?;
    Ok(Chain {
        input,
        input_width,
        output,
        flow,
        classes,
    })
}

/// The one input that is not an initializer: a float tensor of rank 2 (or rank 1
/// with a symbolic batch); returns its name and fixed width, if any.
fn graph_input(
    graph: &GraphProto,
    syms: &HashMap<String, Sym>,
) -> Result<(String, Option<usize>), WalkError> {
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !syms.contains_key(&i.name))
        .collect();
    let [input] = inputs.as_slice() else {
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(WalkError::Graph(format!(
            "the graph has {} inputs ({}); steward serves graphs with one float input of shape [batch, features]",
            names.len(),
            names.join(", ")
        )));
    };
    let tensor_type = input.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
    let Some(tt) = tensor_type else {
        return Err(WalkError::Graph(format!(
            "input `{}` is not a tensor (a sequence or map input is not supported)",
            input.name
        )));
    };
    if tt.elem_type != data_type::FLOAT && tt.elem_type != data_type::DOUBLE {
        return Err(WalkError::Graph(format!(
            "input `{}` has element type {} ; steward feeds float features (type 1)",
            input.name, tt.elem_type
        )));
    }
    let dims = tt.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or(&[]);
    let width = match dims {
        [] => None,
        [_batch, feature] => feature
            .dim_value
            .and_then(|v| usize::try_from(v).ok())
            .filter(|&v| v > 0),
        _ => {
            return Err(WalkError::Graph(format!(
                "input `{}` has rank {}; steward serves graphs whose input is [batch, features]",
                input.name,
                dims.len()
            )))
        }
    };
    Ok((input.name.clone(), width))
}

/// The one output computed from the input; label outputs are dropped.
fn graph_output(
    graph: &GraphProto,
    syms: &HashMap<String, Sym>,
) -> Result<(String, Flow), WalkError> {
    let mut flows = Vec::new();
    for o in &graph.output {
        match syms.get(&o.name) {
            Some(Sym::Flow(f)) => flows.push((o.name.clone(), f.clone())),
            Some(Sym::Label) => {}
            Some(Sym::Const(_)) => {
                return Err(WalkError::Graph(format!(
                    "output `{}` is a constant: it does not depend on the input",
                    o.name
                )))
            }
            None => {
                return Err(WalkError::Graph(format!(
                    "output `{}` is produced by no node",
                    o.name
                )))
            }
        }
    }
    match flows.len() {
        1 => Ok(flows.remove(0)),
        0 => Err(WalkError::Graph(
            "no output of the graph depends on its input".into(),
        )),
        _ => {
            let names: Vec<&str> = flows.iter().map(|(n, _)| n.as_str()).collect();
            Err(WalkError::Graph(format!(
                "the graph has {} outputs computed from the input ({}); steward serves one \
                 (besides a classifier's label output, which it recognises and drops)",
                names.len(),
                names.join(", ")
            )))
        }
    }
}

/// What the refusal of an unknown op says.
const SUPPORTED: &str = "steward turns MLP-shaped graphs into its network: Gemm, MatMul+Add, \
    Relu, LeakyRelu, Tanh, Sigmoid, Softmax, Identity, Flatten, batch Reshape, a leading \
    Scaler or Sub/Div, and a classifier's label branch";

/// The ops the walk knows, by domain. Any other is refused before the walk
/// starts, so that a CNN is named by its Conv, not by the reshape in front of it.
fn known(node: &NodeProto) -> bool {
    let standard = [
        "Constant",
        "Identity",
        "Dropout",
        "Cast",
        "Flatten",
        "Reshape",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "MatMul",
        "Gemm",
        "Relu",
        "LeakyRelu",
        "Tanh",
        "Sigmoid",
        "Softmax",
        "Concat",
        "ArgMax",
    ];
    let ml = [
        "Scaler",
        "LinearClassifier",
        "LinearRegressor",
        "ZipMap",
        "ArrayFeatureExtractor",
        "Normalizer",
    ];
    let op = node.op_type.as_str();
    match node.domain.as_str() {
        "" | "ai.onnx" => standard.contains(&op),
        "ai.onnx.ml" => ml.contains(&op),
        _ => false,
    }
}

/// The op with its domain when that is not the standard one.
fn op_name(node: &NodeProto) -> String {
    match node.domain.as_str() {
        "" | "ai.onnx" => node.op_type.clone(),
        d => format!("{d}.{}", node.op_type),
    }
}

/// The node's name, or its position and op when it has none.
fn node_name(i: usize, node: &NodeProto) -> String {
    if node.name.is_empty() {
        format!("#{i} ({})", node.op_type)
    } else {
        node.name.clone()
    }
}

/// One node of the walk.
struct Step<'a> {
    node: &'a NodeProto,
    name: &'a str,
    syms: &'a HashMap<String, Sym>,
}

impl Step<'_> {
    fn input(&self, i: usize) -> Result<&Sym, WalkError> {
        let name = self
            .node
            .input
            .get(i)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| self.error(format!("input {i} is missing")))?;
        self.syms
            .get(name)
            .ok_or_else(|| self.error(format!("input `{name}` is produced by no earlier node")))
    }

    fn optional_input(&self, i: usize) -> Result<Option<&Sym>, WalkError> {
        match self.node.input.get(i) {
            Some(n) if !n.is_empty() => self.input(i).map(Some),
            _ => Ok(None),
        }
    }

    fn error(&self, reason: String) -> WalkError {
        WalkError::Node {
            node: self.name.to_string(),
            reason,
        }
    }

    fn unsupported(&self, why: &str) -> WalkError {
        WalkError::Unsupported {
            op: self.op(),
            node: self.name.to_string(),
            why: why.to_string(),
        }
    }

    fn op(&self) -> String {
        op_name(self.node)
    }

    fn flow(&self, i: usize) -> Result<Flow, WalkError> {
        match self.input(i)? {
            Sym::Flow(f) => Ok(f.clone()),
            _ => Err(self.unsupported("its input is not computed from the model's input")),
        }
    }

    fn constant(&self, i: usize) -> Result<Tensor, WalkError> {
        match self.input(i)? {
            Sym::Const(Constant::Numbers(t)) => Ok(t.clone()),
            _ => Err(self.unsupported(&format!("input {i} must be a numeric constant"))),
        }
    }

    /// The node's outputs, in order.
    fn run(&self, classes: &mut Option<Vec<String>>) -> Result<Vec<Sym>, WalkError> {
        let op = self.node.op_type.as_str();
        let ml = self.node.domain == "ai.onnx.ml";
        let standard = matches!(self.node.domain.as_str(), "" | "ai.onnx");
        if !(ml || standard) {
            return Err(self.unsupported("its operator domain is not the standard one"));
        }
        let label_branch = self
            .node
            .input
            .iter()
            .any(|n| matches!(self.syms.get(n), Some(Sym::Label)));
        match (ml, op) {
            (false, "Constant") => {
                let c = tensor::constant_node(self.node).map_err(|e| self.error(e))?;
                Ok(vec![Sym::Const(c)])
            }
            (true, "ArrayFeatureExtractor") => {
                if let Sym::Const(Constant::Strings(s)) = self.input(0)? {
                    classes.get_or_insert_with(|| s.clone());
                } else if let Sym::Const(Constant::Numbers(t)) = self.input(0)? {
                    classes
                        .get_or_insert_with(|| t.data.iter().map(|v| number_label(*v)).collect());
                }
                Ok(vec![Sym::Label])
            }
            (_, "Identity" | "Cast" | "Reshape" | "ArrayFeatureExtractor") if label_branch => {
                Ok(vec![Sym::Label])
            }
            (false, "ArgMax") => {
                self.flow(0)?;
                Ok(vec![Sym::Label])
            }
            (true, "ZipMap") => {
                let f = self.flow(0)?;
                let labels = tensor::strings(self.node, "classlabels_strings")
                    .filter(|s| !s.is_empty())
                    .or_else(|| {
                        tensor::ints(self.node, "classlabels_int64s")
                            .map(|v| v.iter().map(|i| i.to_string()).collect())
                    });
                if let Some(l) = labels {
                    *classes = Some(l);
                }
                Ok(vec![Sym::Flow(f)])
            }
            (false, "Identity" | "Dropout") => self.pass().map(|s| vec![s]),
            (false, "Cast") => self.cast().map(|s| vec![s]),
            (false, "Flatten") => self.flatten().map(|s| vec![s]),
            (false, "Reshape") => self.reshape().map(|s| vec![s]),
            (false, "Add" | "Sub" | "Mul" | "Div") => self.arithmetic(op).map(|s| vec![s]),
            (false, "MatMul") => self.matmul().map(|s| vec![s]),
            (false, "Gemm") => self.gemm().map(|s| vec![s]),
            (false, "Relu") => self.then(Stage::Act(Activation::Relu)),
            (false, "LeakyRelu") => {
                let alpha = tensor::float(self.node, "alpha", 0.01);
                self.then(Stage::Act(Activation::LeakyRelu { alpha }))
            }
            (false, "Tanh") => self.then(Stage::Act(Activation::Tanh)),
            (false, "Sigmoid") => self.then(Stage::Sigmoid),
            (false, "Softmax") => {
                let axis = tensor::int(self.node, "axis", -1);
                if !(axis == 1 || axis == -1) {
                    return Err(self.unsupported(&format!(
                        "softmax over axis {axis}; steward's softmax is over the features (axis 1)"
                    )));
                }
                self.then(Stage::Softmax)
            }
            (false, "Concat") => self.concat().map(|s| vec![s]),
            (true, "Scaler") => self.scaler().map(|s| vec![s]),
            (true, "LinearClassifier") => self.linear_classifier(classes),
            (true, "Normalizer") => self.normalizer().map(|s| vec![s]),
            (true, "LinearRegressor") => self.linear_regressor().map(|s| vec![s]),
            _ => Err(self.unsupported(SUPPORTED)),
        }
    }

    fn then(&self, stage: Stage) -> Result<Vec<Sym>, WalkError> {
        let mut f = self.flow(0)?;
        f.stages.push(stage);
        Ok(vec![Sym::Flow(f)])
    }

    fn pass(&self) -> Result<Sym, WalkError> {
        self.input(0).cloned()
    }

    fn cast(&self) -> Result<Sym, WalkError> {
        let to = tensor::int(self.node, "to", 0) as i32;
        match self.input(0)? {
            Sym::Flow(f) if to == data_type::FLOAT || to == data_type::DOUBLE => {
                Ok(Sym::Flow(f.clone()))
            }
            Sym::Flow(_) => {
                Err(self.unsupported(&format!("a cast of the model's values to type {to}")))
            }
            other => Ok(other.clone()),
        }
    }

    fn flatten(&self) -> Result<Sym, WalkError> {
        let axis = tensor::int(self.node, "axis", 1);
        if axis != 1 {
            return Err(self.unsupported(&format!(
                "flatten at axis {axis} (only axis 1 keeps the batch)"
            )));
        }
        self.pass()
    }

    fn reshape(&self) -> Result<Sym, WalkError> {
        let Sym::Flow(f) = self.input(0)? else {
            return self.pass();
        };
        let shape = self.constant(1)?;
        let w = f.width as f64;
        let batch_kept = |d: f64| d == 0.0 || d == -1.0;
        let ok = match shape.data.as_slice() {
            [b, n] => batch_kept(*b) && (*n == w || (*n == -1.0 && *b == 0.0)),
            [n] => *n == -1.0 && f.width == 1,
            _ => false,
        };
        if !ok {
            return Err(self.unsupported(&format!(
                "a reshape to {:?} of [batch, {}] is not a batch reshape",
                shape.data, f.width
            )));
        }
        Ok(Sym::Flow(f.clone()))
    }

    /// Add, Sub, Mul, Div of the flow and a per-feature constant, or of two constants.
    fn arithmetic(&self, op: &str) -> Result<Sym, WalkError> {
        let (a, b) = (self.input(0)?, self.input(1)?);
        let per = |t: &Tensor, f: &Flow| {
            t.per_feature(f.width).ok_or_else(|| {
                self.unsupported(&format!(
                    "its constant of shape {:?} does not broadcast per feature over [batch, {}]",
                    t.dims, f.width
                ))
            })
        };
        let (scale, shift, f) = match (a, b) {
            (Sym::Flow(f), Sym::Const(Constant::Numbers(t))) => {
                let c = per(t, f)?;
                let ones = vec![1.0; f.width];
                let zeros = vec![0.0; f.width];
                match op {
                    "Add" => (ones, c, f),
                    "Sub" => (ones, c.iter().map(|v| -v).collect(), f),
                    "Mul" => (c, zeros, f),
                    _ => (c.iter().map(|v| 1.0 / v).collect(), zeros, f),
                }
            }
            (Sym::Const(Constant::Numbers(t)), Sym::Flow(f)) if op != "Div" => {
                let c = per(t, f)?;
                match op {
                    "Add" => (vec![1.0; f.width], c, f),
                    "Sub" => (vec![-1.0; f.width], c, f),
                    _ => (c, vec![0.0; f.width], f),
                }
            }
            (Sym::Const(Constant::Numbers(x)), Sym::Const(Constant::Numbers(y))) => {
                return self.fold_constants(op, x, y)
            }
            (Sym::Flow(_), Sym::Flow(_)) => {
                return Err(self.unsupported("both of its inputs are computed from the model's input (a residual or gating connection)"))
            }
            _ => return Err(self.unsupported("a constant divided by the model's values")),
        };
        if scale.iter().chain(&shift).any(|v| !v.is_finite()) {
            return Err(
                self.error("its constant gives a non-finite factor (a division by zero?)".into())
            );
        }
        let mut f = f.clone();
        f.stages.push(Stage::Elementwise { scale, shift });
        Ok(Sym::Flow(f))
    }

    fn fold_constants(&self, op: &str, x: &Tensor, y: &Tensor) -> Result<Sym, WalkError> {
        let f = |a: f64, b: f64| match op {
            "Add" => a + b,
            "Sub" => a - b,
            "Mul" => a * b,
            _ => a / b,
        };
        let t = if x.dims == y.dims {
            Tensor {
                dims: x.dims.clone(),
                data: x.data.iter().zip(&y.data).map(|(a, b)| f(*a, *b)).collect(),
            }
        } else if y.len() == 1 {
            Tensor {
                dims: x.dims.clone(),
                data: x.data.iter().map(|a| f(*a, y.data[0])).collect(),
            }
        } else if x.len() == 1 {
            Tensor {
                dims: y.dims.clone(),
                data: y.data.iter().map(|b| f(x.data[0], *b)).collect(),
            }
        } else {
            return Err(self.unsupported("constants of different shapes"));
        };
        Ok(Sym::Const(Constant::Numbers(t)))
    }

    fn matmul(&self) -> Result<Sym, WalkError> {
        let mut f = self.flow(0)?;
        let w = self.constant(1)?;
        let [inputs, out] = two_dims(&w).ok_or_else(|| {
            self.unsupported(&format!(
                "a weight of shape {:?} (a 2-D matrix is needed)",
                w.dims
            ))
        })?;
        if inputs != f.width {
            return Err(self.error(format!(
                "its weight is {inputs}×{out} but the values reaching it have width {}",
                f.width
            )));
        }
        f.stages.push(Stage::Affine {
            out,
            inputs,
            w: transpose(&w.data, inputs, out),
            b: vec![0.0; out],
        });
        f.width = out;
        Ok(Sym::Flow(f))
    }

    fn gemm(&self) -> Result<Sym, WalkError> {
        if tensor::int(self.node, "transA", 0) != 0 {
            return Err(self.unsupported("transA = 1 transposes the batch"));
        }
        let mut f = self.flow(0)?;
        let b = self.constant(1)?;
        let (alpha, beta) = (
            f64::from(tensor::float(self.node, "alpha", 1.0)),
            f64::from(tensor::float(self.node, "beta", 1.0)),
        );
        let [r, c] = two_dims(&b).ok_or_else(|| {
            self.unsupported(&format!(
                "a weight of shape {:?} (a 2-D matrix is needed)",
                b.dims
            ))
        })?;
        let (inputs, out, mut w) = if tensor::int(self.node, "transB", 0) != 0 {
            (c, r, b.data.clone())
        } else {
            (r, c, transpose(&b.data, r, c))
        };
        if inputs != f.width {
            return Err(self.error(format!(
                "its weight takes {inputs} inputs but the values reaching it have width {}",
                f.width
            )));
        }
        w.iter_mut().for_each(|v| *v *= alpha);
        let bias = match self.optional_input(2)? {
            None => vec![0.0; out],
            Some(Sym::Const(Constant::Numbers(t))) => t
                .per_feature(out)
                .ok_or_else(|| {
                    self.unsupported(&format!("a bias of shape {:?} for {out} outputs", t.dims))
                })?
                .iter()
                .map(|v| v * beta)
                .collect(),
            Some(_) => return Err(self.unsupported("its bias is computed from the model's input")),
        };
        f.stages.push(Stage::Affine {
            out,
            inputs,
            w,
            b: bias,
        });
        f.width = out;
        Ok(Sym::Flow(f))
    }

    /// `Concat([1 - p, p])` after a one-unit sigmoid: the binary pair.
    fn concat(&self) -> Result<Sym, WalkError> {
        let (a, b) = (self.flow(0)?, self.flow(1)?);
        let negated = Stage::Elementwise {
            scale: vec![-1.0],
            shift: vec![1.0],
        };
        let pair = self.node.input.len() == 2
            && b.width == 1
            && b.stages.last() == Some(&Stage::Sigmoid)
            && a.stages.len() == b.stages.len() + 1
            && a.stages[..b.stages.len()] == b.stages[..]
            && a.stages.last() == Some(&negated);
        if !pair {
            return Err(self.unsupported(
                "only the [1 - p, p] pair of a binary classifier's sigmoid is supported",
            ));
        }
        let mut f = b;
        f.stages.push(Stage::BinaryPair);
        f.width = 2;
        Ok(Sym::Flow(f))
    }

    fn scaler(&self) -> Result<Sym, WalkError> {
        let mut f = self.flow(0)?;
        let width = f.width;
        let spread = |v: Option<Vec<f64>>, default: f64| -> Result<Vec<f64>, WalkError> {
            match v {
                None => Ok(vec![default; width]),
                Some(v) if v.len() == 1 => Ok(vec![v[0]; width]),
                Some(v) if v.len() == width => Ok(v),
                Some(v) => {
                    Err(self.error(format!("it has {} values for {width} features", v.len())))
                }
            }
        };
        let offset = spread(tensor::floats(self.node, "offset"), 0.0)?;
        let scale = spread(tensor::floats(self.node, "scale"), 1.0)?;
        let shift = offset.iter().zip(&scale).map(|(o, s)| -o * s).collect();
        f.stages.push(Stage::Elementwise { scale, shift });
        Ok(Sym::Flow(f))
    }

    fn linear_classifier(&self, classes: &mut Option<Vec<String>>) -> Result<Vec<Sym>, WalkError> {
        let mut f = self.flow(0)?;
        let labels: Vec<String> =
            match tensor::strings(self.node, "classlabels_strings").filter(|s| !s.is_empty()) {
                Some(s) => s,
                None => tensor::ints(self.node, "classlabels_ints")
                    .unwrap_or_default()
                    .iter()
                    .map(|i| i.to_string())
                    .collect(),
            };
        let coef = tensor::floats(self.node, "coefficients").unwrap_or_default();
        let intercepts = tensor::floats(self.node, "intercepts").unwrap_or_default();
        let post = tensor::string(self.node, "post_transform").unwrap_or_else(|| "NONE".into());
        let rows = coef.len().checked_div(f.width).unwrap_or(0);
        if rows == 0 || rows * f.width != coef.len() || intercepts.len() != rows {
            return Err(self.error(format!(
                "{} coefficients and {} intercepts do not fit {} features",
                coef.len(),
                intercepts.len(),
                f.width
            )));
        }
        let k = labels.len();
        let inputs = f.width;
        let stages = match (k, rows, post.as_str()) {
            (2, 1, "LOGISTIC") => vec![Stage::Affine { out: 1, inputs, w: coef, b: intercepts }, Stage::Sigmoid, Stage::BinaryPair],
            (2, 2, "LOGISTIC") if negated_rows(&coef, &intercepts, inputs) => vec![
                Stage::Affine { out: 1, inputs, w: coef[inputs..].to_vec(), b: intercepts[1..].to_vec() },
                Stage::Sigmoid,
                Stage::BinaryPair,
            ],
            (k, r, "SOFTMAX") if k == r && k >= 2 => vec![Stage::Affine { out: k, inputs, w: coef, b: intercepts }, Stage::Softmax],
            _ => {
                return Err(self.unsupported(&format!(
                    "{k} classes, {rows} coefficient rows and post_transform {post}: only a binary logistic or a multinomial softmax classifier is a network"
                )))
            }
        };
        f.stages.extend(stages);
        f.width = k;
        *classes = Some(labels);
        Ok(vec![Sym::Label, Sym::Flow(f)])
    }

    /// An L1 normaliser after probabilities (skl2onnx writes one after a
    /// multinomial logistic regression) changes nothing.
    fn normalizer(&self) -> Result<Sym, WalkError> {
        let f = self.flow(0)?;
        let norm = tensor::string(self.node, "norm").unwrap_or_default();
        let probabilities = matches!(f.stages.last(), Some(Stage::Softmax | Stage::BinaryPair));
        if norm != "L1" || !probabilities {
            return Err(self.unsupported(&format!(
                "a {norm} normaliser is supported only after probabilities (softmax), where L1 changes nothing"
            )));
        }
        Ok(Sym::Flow(f))
    }

    fn linear_regressor(&self) -> Result<Sym, WalkError> {
        let mut f = self.flow(0)?;
        let coef = tensor::floats(self.node, "coefficients").unwrap_or_default();
        let intercepts = tensor::floats(self.node, "intercepts").unwrap_or_else(|| vec![0.0]);
        let post = tensor::string(self.node, "post_transform").unwrap_or_else(|| "NONE".into());
        if coef.len() != f.width || intercepts.len() != 1 || post != "NONE" {
            return Err(self.unsupported(&format!(
                "{} coefficients, {} intercepts, post_transform {post}: one target over {} features is supported",
                coef.len(),
                intercepts.len(),
                f.width
            )));
        }
        f.stages.push(Stage::Affine {
            out: 1,
            inputs: f.width,
            w: coef,
            b: intercepts,
        });
        f.width = 1;
        Ok(Sym::Flow(f))
    }
}

/// A class label given as a number: integers without a fraction.
fn number_label(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        v.to_string()
    }
}

fn two_dims(t: &Tensor) -> Option<[usize; 2]> {
    match t.dims.as_slice() {
        [r, c] => Some([*r, *c]),
        _ => None,
    }
}

/// `rows × cols` row-major into `cols × rows` row-major.
fn transpose(data: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = data[r * cols + c];
        }
    }
    t
}

/// Whether two coefficient rows (and intercepts) are each other's negation, as
/// skl2onnx writes a binary logistic regression.
fn negated_rows(coef: &[f64], intercepts: &[f64], width: usize) -> bool {
    coef[..width]
        .iter()
        .zip(&coef[width..])
        .all(|(a, b)| *a == -*b)
        && intercepts[0] == -intercepts[1]
}
