//! From the chain of stages the walk found to steward's network and encoding.
//!
//! Consecutive affine maps are multiplied into one layer, per-feature scalings
//! are folded into the layer next to them, and the leading scaler becomes the
//! schema's standardisation. A graph without a scaler takes raw values; its
//! numeric features are then standardised with the CSV's statistics and the
//! inverse is folded into the first layer, so that the network computes the same
//! function and the online learner sees inputs of unit scale, as it does for a
//! model steward trained. All folding is done in f64 and rounded to f32 once.

use ndarray::{Array1, Array2};

use super::graph::Stage;
use crate::model::network::{Activation, Dense, Network, Output};
use crate::model::schema::{FeatureKind, Schema};

/// The layers before rounding: `w` is `out × inputs`, row-major.
#[derive(Debug, Clone, PartialEq)]
struct Layer {
    out: usize,
    inputs: usize,
    w: Vec<f64>,
    b: Vec<f64>,
}

impl Layer {
    /// `self` after `first`: one layer computing both.
    fn after(&self, first: &Layer) -> Layer {
        let mut w = vec![0.0; self.out * first.inputs];
        let mut b = self.b.clone();
        for j in 0..self.out {
            for k in 0..self.inputs {
                let v = self.w[j * self.inputs + k];
                for i in 0..first.inputs {
                    w[j * first.inputs + i] += v * first.w[k * first.inputs + i];
                }
                b[j] += v * first.b[k];
            }
        }
        Layer {
            out: self.out,
            inputs: first.inputs,
            w,
            b,
        }
    }

    /// Folds `y = x * scale + shift` of the layer's inputs into the layer.
    fn absorb_input(&mut self, scale: &[f64], shift: &[f64]) {
        for j in 0..self.out {
            let row = &mut self.w[j * self.inputs..(j + 1) * self.inputs];
            for (i, w) in row.iter_mut().enumerate() {
                self.b[j] += *w * shift[i];
                *w *= scale[i];
            }
        }
    }

    /// Folds `y = z * scale + shift` of the layer's outputs into the layer.
    fn absorb_output(&mut self, scale: &[f64], shift: &[f64]) {
        for j in 0..self.out {
            self.w[j * self.inputs..(j + 1) * self.inputs]
                .iter_mut()
                .for_each(|w| *w *= scale[j]);
            self.b[j] = self.b[j] * scale[j] + shift[j];
        }
    }
}

/// The network's last function, when the graph has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    Softmax,
    Sigmoid,
    None,
}

/// The layers and activations of a chain, with its leading per-feature map.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    layers: Vec<Layer>,
    activations: Vec<Activation>,
    pub last: Final,
    /// `x * scale + shift` applied to the graph's input before the first layer.
    lead_scale: Vec<f64>,
    lead_shift: Vec<f64>,
    /// Whether the graph has a leading scaler at all.
    pub scaled: bool,
}

/// Composes `y = (x * s1 + t1) * s2 + t2`.
fn compose(acc: &mut (Vec<f64>, Vec<f64>), scale: &[f64], shift: &[f64]) {
    for i in 0..acc.0.len() {
        acc.0[i] *= scale[i];
        acc.1[i] = acc.1[i] * scale[i] + shift[i];
    }
}

/// Reads the stages as scaler, then layers with one activation between each two.
pub fn shape(stages: &[Stage], width: usize) -> Result<Shape, String> {
    let mut lead = (vec![1.0; width], vec![0.0; width]);
    let mut layers: Vec<Layer> = Vec::new();
    let mut activations = Vec::new();
    let mut pending: Option<(Vec<f64>, Vec<f64>)> = None;
    let mut open = false;
    let mut last = Final::None;
    let mut rest = stages.iter().peekable();
    while let Some(stage) = rest.next() {
        if last != Final::None {
            return Err(format!("{} after the output function", describe(stage)));
        }
        match stage {
            Stage::Elementwise { scale, shift } if layers.is_empty() => {
                compose(&mut lead, scale, shift)
            }
            Stage::Elementwise { scale, shift } if open => {
                if let Some(l) = layers.last_mut() {
                    l.absorb_output(scale, shift);
                }
            }
            Stage::Elementwise { scale, shift } => {
                let acc =
                    pending.get_or_insert_with(|| (vec![1.0; scale.len()], vec![0.0; scale.len()]));
                compose(acc, scale, shift);
            }
            Stage::Affine { out, inputs, w, b } => {
                let mut layer = Layer {
                    out: *out,
                    inputs: *inputs,
                    w: w.clone(),
                    b: b.clone(),
                };
                if let Some((s, t)) = pending.take() {
                    layer.absorb_input(&s, &t);
                }
                match layers.last_mut() {
                    Some(prev) if open => *prev = layer.after(prev),
                    _ => layers.push(layer),
                }
                open = true;
            }
            Stage::Sigmoid if rest.peek().is_none() || rest.peek() == Some(&&Stage::BinaryPair) => {
                if !open {
                    return Err("the output sigmoid follows no layer".into());
                }
                rest.next();
                last = Final::Sigmoid;
            }
            Stage::Softmax => {
                if !open {
                    return Err("the softmax follows no layer".into());
                }
                last = Final::Softmax;
            }
            Stage::Act(_) | Stage::Sigmoid => {
                if !open {
                    return Err(format!("{} follows no layer (two activations in a row, or one before the first layer)", describe(stage)));
                }
                activations.push(match stage {
                    Stage::Act(a) => *a,
                    _ => Activation::Sigmoid,
                });
                open = false;
            }
            Stage::BinaryPair => return Err("a [1 - p, p] pair without its sigmoid".into()),
        }
    }
    if layers.is_empty() {
        return Err(
            "the graph has no Gemm, MatMul or linear model: there is no layer to serve".into(),
        );
    }
    if !open && last == Final::None {
        return Err(format!(
            "the output passes through {}; steward's outputs are identity (regression), sigmoid or softmax (classes)",
            activations.last().map_or("an activation", |a| a.name())
        ));
    }
    let scaled = lead.0.iter().any(|s| *s != 1.0) || lead.1.iter().any(|t| *t != 0.0);
    Ok(Shape {
        layers,
        activations,
        last,
        lead_scale: lead.0,
        lead_shift: lead.1,
        scaled,
    })
}

fn describe(stage: &Stage) -> String {
    match stage {
        Stage::Affine { .. } => "a layer".into(),
        Stage::Elementwise { .. } => "a per-feature scaling".into(),
        Stage::Act(a) => a.name().into(),
        Stage::Sigmoid => "sigmoid".into(),
        Stage::Softmax => "softmax".into(),
        Stage::BinaryPair => "the [1 - p, p] pair".into(),
    }
}

impl Shape {
    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.out)
    }

    /// The network and the schema that feeds it. `schema` is the CSV's fit; a
    /// numeric feature the graph scales takes the scaler's mean and deviation,
    /// any other keeps the CSV's, folded into the first layer.
    pub fn network(&self, schema: &Schema, output: Output) -> Result<(Network, Schema), String> {
        let mut schema = schema.clone();
        let mut layers = self.layers.clone();
        let width = self.lead_scale.len();
        let (mut fold_scale, mut fold_shift) = (vec![1.0; width], vec![0.0; width]);
        let mut slot = 0;
        for f in &mut schema.features {
            let w = f.width();
            for o in slot..slot + w {
                let (s, t) = (self.lead_scale[o], self.lead_shift[o]);
                match &mut f.kind {
                    FeatureKind::Numeric { mean, std }
                        if self.scaled && s > 0.0 && s.is_finite() =>
                    {
                        *mean = -t / s;
                        *std = 1.0 / s;
                    }
                    FeatureKind::Numeric { mean, std } => {
                        fold_scale[o] = *std * s;
                        fold_shift[o] = *mean * s + t;
                    }
                    FeatureKind::Categorical { .. } => {
                        fold_scale[o] = s;
                        fold_shift[o] = t;
                    }
                }
            }
            slot += w;
        }
        if let Some(first) = layers.first_mut() {
            first.absorb_input(&fold_scale, &fold_shift);
        }
        let dense = layers
            .iter()
            .map(|l| Dense {
                weight: Array2::from_shape_fn((l.out, l.inputs), |(j, i)| {
                    l.w[j * l.inputs + i] as f32
                }),
                bias: Array1::from_iter(l.b.iter().map(|v| *v as f32)),
            })
            .collect();
        let net = Network::with_activations(dense, self.activations.clone(), output)
            .map_err(|e| e.to_string())?;
        Ok((net, schema))
    }
}

/// The graph's function evaluated stage by stage in f64 on one input row: the
/// yardstick the converted network is checked against.
pub fn evaluate(stages: &[Stage], x: &[f64]) -> Vec<f64> {
    let mut v = x.to_vec();
    for stage in stages {
        v = match stage {
            Stage::Affine { out, inputs, w, b } => (0..*out)
                .map(|j| b[j] + crate::stats::gaussian::dot(&w[j * inputs..(j + 1) * inputs], &v))
                .collect(),
            Stage::Elementwise { scale, shift } => v
                .iter()
                .enumerate()
                .map(|(i, x)| x * scale[i] + shift[i])
                .collect(),
            Stage::Act(a) => v.iter().map(|z| act64(*a, *z)).collect(),
            Stage::Sigmoid => v.iter().map(|z| 1.0 / (1.0 + (-z).exp())).collect(),
            Stage::Softmax => {
                let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = v.iter().map(|z| (z - m).exp()).collect();
                let s: f64 = e.iter().sum();
                e.iter().map(|z| z / s).collect()
            }
            Stage::BinaryPair => vec![1.0 - v[0], v[0]],
        };
    }
    v
}

fn act64(a: Activation, z: f64) -> f64 {
    match a {
        Activation::Relu => z.max(0.0),
        Activation::LeakyRelu { alpha } => {
            if z >= 0.0 {
                z
            } else {
                z * f64::from(alpha)
            }
        }
        Activation::Tanh => z.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
    }
}
