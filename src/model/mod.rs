//! A servable model: the schema (how inputs are encoded), the network (the f32
//! arithmetic) and the metadata that travels with them in the artifact (task,
//! label, classes, metrics, training report, parent version).
//!
//! Plain synchronous code over ndarray; no I/O except in `artifact`.

pub mod artifact;
pub mod network;
pub mod packed;
pub mod prune;
pub mod quant;
pub mod row;
pub mod schema;
pub mod scorer;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use network::{Network, Output};
pub use schema::{EncodeError, Schema};

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Classification,
    Regression,
}

/// Which arithmetic answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    F32,
    Int8,
}

impl Form {
    pub fn as_str(self) -> &'static str {
        match self {
            Form::F32 => "f32",
            Form::Int8 => "int8",
        }
    }
}

/// The serving form a model was given at load, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FormChoice {
    pub form: Form,
    /// Nanoseconds per row of the f32 form on the warm-up rows.
    pub f32_ns: f64,
    /// The same for int8, when it was timed.
    pub int8_ns: Option<f64>,
    pub reason: String,
}

/// Passes over the warm-up rows per timing round.
const FORM_TIMING_REPEATS: usize = 20;

thread_local! {
    /// Per-thread scratch space for int8 forward passes (no allocation per row).
    static SCRATCH: std::cell::RefCell<quant::Scratch> = std::cell::RefCell::new(quant::Scratch::default());
}

/// The metadata stored with a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    pub task: Task,
    /// The label column the model was trained on.
    pub label: String,
    /// Class names in output order (classification); for a sigmoid output the
    /// probability is that of `classes[1]`.
    #[serde(default)]
    pub classes: Vec<String>,
    /// Held-out metrics, e.g. `{"accuracy": 0.97}` or `{"r2": 0.8}`.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// How the model was made (rows, hyper-parameters, ...).
    #[serde(default)]
    pub training: Value,
    /// RFC 3339 time of creation. `steward train` leaves it out so that the same
    /// data, seed and config give a bit-identical artifact; the daemon's registry
    /// records when each version was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The registry version this model was derived from, if any.
    #[serde(default)]
    pub parent: Option<String>,
    /// Regression only: the mean and standard deviation of the training labels.
    /// Online learning measures errors in these units so that its step size does
    /// not depend on the label's scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetScale>,
    /// Online gradient steps applied since the model was last trained in batch.
    #[serde(default)]
    pub online_updates: u64,
    /// A seeded sample of the training rows (raw cells) for the drift tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    /// The anomaly scorer fitted on the training rows' numeric inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<scorer::Scorer>,
}

/// The location and scale of a regression label.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetScale {
    pub mean: f64,
    pub std: f64,
}

/// Training rows kept for the drift tests: the feature columns in schema order and
/// up to [`Reference::MAX_ROWS`] rows of raw cells ("" is a missing value), drawn
/// with a seeded reservoir so that the same data and seed give the same sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// How many rows the sample was drawn from.
    pub population: u64,
}

impl Reference {
    /// The cap on the sample's size.
    pub const MAX_ROWS: usize = 5000;
}

/// A model ready to serve.
#[derive(Debug, Clone)]
pub struct Model {
    pub schema: Schema,
    /// The f32 master weights (pruned weights are zero).
    pub network: Network,
    pub meta: ModelMeta,
    /// Pruning masks of `network` (1 kept, 0 pruned), if it was magnitude-pruned.
    pub masks: Option<prune::Masks>,
    /// The int8 form, if the model was quantized.
    pub quant: Option<quant::QuantNetwork>,
}

/// One answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    Class {
        label: String,
        probabilities: Vec<f32>,
    },
    Value(f64),
}

impl Prediction {
    /// Whether every number of the answer is finite.
    pub fn is_finite(&self) -> bool {
        match self {
            Prediction::Class { probabilities, .. } => probabilities.iter().all(|p| p.is_finite()),
            Prediction::Value(v) => v.is_finite(),
        }
    }
}

impl Model {
    /// Checks that schema, network, task and classes agree.
    pub fn check(&self) -> Result<(), String> {
        self.schema.check()?;
        let mut classes = std::collections::HashSet::new();
        if let Some(c) = self
            .meta
            .classes
            .iter()
            .find(|c| !classes.insert(c.as_str()))
        {
            return Err(format!("class `{c}` is listed twice"));
        }
        if let Some(t) = &self.meta.target {
            if !(t.mean.is_finite() && t.std.is_finite() && t.std > 0.0) {
                return Err(format!(
                    "target scale: mean {:e} and standard deviation {:e} must be finite, the std positive",
                    t.mean, t.std
                ));
            }
        }
        if self.schema.width() != self.network.inputs() {
            return Err(format!(
                "the schema encodes {} inputs, the network takes {}",
                self.schema.width(),
                self.network.inputs()
            ));
        }
        if let Some(scorer) = &self.meta.anomaly {
            scorer.check(&self.schema)?;
        }
        if let Some(masks) = &self.masks {
            if masks.len() != self.network.layers().len() {
                return Err(format!(
                    "{} masks for {} layers",
                    masks.len(),
                    self.network.layers().len()
                ));
            }
            for (i, (m, l)) in masks.iter().zip(self.network.layers()).enumerate() {
                if m.dim() != l.weight.dim() {
                    return Err(format!(
                        "mask {i} is {:?}, the layer {:?}",
                        m.dim(),
                        l.weight.dim()
                    ));
                }
            }
        }
        if let Some(q) = &self.quant {
            self.check_int8(q)?;
        }
        let outputs = self.network.outputs();
        match (self.meta.task, self.network.output()) {
            (Task::Regression, Output::Identity) => Ok(()),
            (Task::Classification, Output::Sigmoid) if self.meta.classes.len() == 2 => Ok(()),
            (Task::Classification, Output::Softmax) if self.meta.classes.len() == outputs => Ok(()),
            (task, output) => Err(format!(
                "{task:?} with {output:?} output over {outputs} units and {} classes is not a valid combination",
                self.meta.classes.len()
            )),
        }
    }

    /// Checks that the int8 form has the f32 network's shapes, output and hidden
    /// activations.
    fn check_int8(&self, q: &quant::QuantNetwork) -> Result<(), String> {
        let shapes = |ls: Vec<(usize, usize)>| ls;
        let int8 = shapes(q.layers().iter().map(|l| (l.outputs, l.inputs)).collect());
        let f32s = shapes(
            self.network
                .layers()
                .iter()
                .map(|l| l.weight.dim())
                .collect(),
        );
        if int8 != f32s || q.output() != self.network.output() {
            return Err(format!(
                "the int8 layers {int8:?} do not match the f32 layers {f32s:?}"
            ));
        }
        if q.activations() != self.network.activations() {
            return Err(format!(
                "the int8 activations {:?} do not match the f32 ones {:?}",
                q.activations(),
                self.network.activations()
            ));
        }
        Ok(())
    }

    /// The prediction for an encoded input row, by the f32 network.
    pub fn predict_encoded(&self, x: &[f32]) -> Prediction {
        self.predict_form(Form::F32, x)
    }

    /// The outputs of one encoded row in the given form (f32 when the model has no
    /// int8 form).
    pub fn forward_form(&self, form: Form, x: &[f32]) -> Vec<f32> {
        match (form, &self.quant) {
            (Form::Int8, Some(q)) => SCRATCH.with(|s| match s.try_borrow_mut() {
                Ok(mut scratch) => q.forward_one(x, &mut scratch),
                Err(_) => q.forward_one(x, &mut quant::Scratch::default()),
            }),
            _ => self.network.forward_one(x),
        }
    }

    /// The prediction for an encoded input row in the given form.
    pub fn predict_form(&self, form: Form, x: &[f32]) -> Prediction {
        let out = self.forward_form(form, x);
        self.interpret(&out)
    }

    /// How much metric the int8 form lost against the uncompressed model on the
    /// held-out rows, as the training report recorded it.
    pub fn int8_metric_drop(&self) -> Option<f64> {
        let c = self.meta.training.get("compressed")?;
        Some(c.get("metric_before")?.as_f64()? - c.get("metric_after")?.as_f64()?)
    }

    /// Times the f32 and int8 forms on `rows` (encoded) and picks the faster one
    /// whose metric drop is within `budget`; never a form slower than f32.
    pub fn choose_form(&self, rows: &[Vec<f32>], budget: f64) -> FormChoice {
        let time = |form: Form| -> f64 {
            // Warm up, then the best of three rounds (the least disturbed).
            for r in rows {
                std::hint::black_box(self.forward_form(form, r));
            }
            (0..3)
                .map(|_| {
                    let start = std::time::Instant::now();
                    for _ in 0..FORM_TIMING_REPEATS {
                        for r in rows {
                            std::hint::black_box(self.forward_form(form, r));
                        }
                    }
                    start.elapsed().as_nanos() as f64
                        / (FORM_TIMING_REPEATS * rows.len().max(1)) as f64
                })
                .fold(f64::INFINITY, f64::min)
        };
        let f32_ns = time(Form::F32);
        let Some(_) = &self.quant else {
            return FormChoice {
                form: Form::F32,
                f32_ns,
                int8_ns: None,
                reason: "the model has no int8 form".into(),
            };
        };
        let drop = self.int8_metric_drop().unwrap_or(f64::INFINITY);
        if drop > budget {
            return FormChoice {
                form: Form::F32,
                f32_ns,
                int8_ns: None,
                reason: format!("int8 loses {drop:.4}, over the budget of {budget}"),
            };
        }
        let int8_ns = time(Form::Int8);
        let (form, reason) = if int8_ns < f32_ns {
            (
                Form::Int8,
                "int8 is faster and within the budget".to_string(),
            )
        } else {
            (Form::F32, "f32 is as fast or faster".to_string())
        };
        FormChoice {
            form,
            f32_ns,
            int8_ns: Some(int8_ns),
            reason,
        }
    }

    /// Turns network outputs into a prediction.
    pub fn interpret(&self, out: &[f32]) -> Prediction {
        match self.network.output() {
            Output::Identity => Prediction::Value(f64::from(out[0])),
            Output::Sigmoid => {
                let p = out[0];
                let label = &self.meta.classes[usize::from(p >= 0.5)];
                Prediction::Class {
                    label: label.clone(),
                    probabilities: vec![1.0 - p, p],
                }
            }
            Output::Softmax => {
                let best = network::argmax(out);
                Prediction::Class {
                    label: self.meta.classes[best].clone(),
                    probabilities: out.to_vec(),
                }
            }
        }
    }

    /// The share of weights (not biases) that are exactly zero.
    pub fn sparsity(&self) -> f64 {
        prune::sparsity(&self.network)
    }

    /// The model card: what `inspect --json` and `GET /v1/model` show.
    pub fn card(
        &self,
        version: Option<&str>,
        path: Option<&str>,
        file_bytes: Option<u64>,
    ) -> Value {
        let layers: Vec<Value> = self
            .network
            .layers()
            .iter()
            .map(|l| serde_json::json!({"inputs": l.inputs(), "outputs": l.outputs()}))
            .collect();
        let activations: Vec<&str> = self
            .network
            .activations()
            .iter()
            .map(|a| a.name())
            .collect();
        serde_json::json!({
            "version": version,
            "path": path,
            "task": self.meta.task,
            "label": self.meta.label,
            "classes": self.meta.classes,
            "output": self.network.output(),
            "schema": self.schema.features,
            "inputs": self.network.inputs(),
            "layers": layers,
            "activations": activations,
            "parameters": self.network.parameters(),
            "sparsity": self.sparsity(),
            "bits": if self.quant.is_some() { 8 } else { 32 },
            "masked": self.masks.is_some(),
            "serving_bytes": {
                "f32": 4 * self.network.parameters(),
                "int8": self.quant.as_ref().map(|q| q.serving_bytes()),
            },
            "size_bytes": file_bytes,
            "metrics": self.meta.metrics,
            "training": self.meta.training,
            "created": self.meta.created,
            "parent": self.meta.parent,
            "online_updates": self.meta.online_updates,
            "reference_rows": self.meta.reference.as_ref().map_or(0, |r| r.rows.len()),
            "anomaly": self.meta.anomaly.as_ref().map(|s| serde_json::json!({
                "features": s.columns.len(),
                "level": s.gaussian.level(),
                "threshold": s.gaussian.threshold(),
                "shrinkage": s.gaussian.shrinkage(),
                "expected_rate": s.gaussian.expected_rate(),
            })),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::Table;
    use ndarray::{Array1, Array2};
    use network::Dense;

    /// A 2-class model over one numeric and one categorical feature.
    pub(crate) fn tiny_model() -> Model {
        let t = Table::parse("t.csv", b"x,c,label\n1,a,n\n2,b,y\n3,a,y\n").unwrap();
        let schema = Schema::fit(&t, 2).unwrap();
        let l1 = Dense {
            weight: Array2::from_shape_fn((3, schema.width()), |(i, j)| {
                (i as f32 - j as f32) * 0.25
            }),
            bias: Array1::from_vec(vec![0.1, -0.2, 0.3]),
        };
        let l2 = Dense {
            weight: Array2::from_shape_vec((1, 3), vec![0.5, -1.0, 2.0]).unwrap(),
            bias: Array1::from_vec(vec![0.05]),
        };
        let network = Network::new(vec![l1, l2], Output::Sigmoid).unwrap();
        let meta = ModelMeta {
            task: Task::Classification,
            label: "label".into(),
            classes: vec!["n".into(), "y".into()],
            metrics: BTreeMap::from([("accuracy".into(), 1.0)]),
            training: Value::Null,
            created: Some("2026-01-01T00:00:00Z".into()),
            parent: None,
            target: None,
            online_updates: 0,
            reference: None,
            anomaly: None,
        };
        Model {
            schema,
            network,
            meta,
            masks: None,
            quant: None,
        }
    }

    #[test]
    fn sigmoid_prediction_picks_the_second_class_above_one_half() {
        let m = tiny_model();
        let mut x = vec![0.0; m.schema.width()];
        m.schema.encode_cells(&["3", "a"], &mut x);
        let p = m.network.forward_one(&x)[0];
        match m.predict_encoded(&x) {
            Prediction::Class {
                label,
                probabilities,
            } => {
                assert_eq!(label, if p >= 0.5 { "y" } else { "n" });
                assert_eq!(probabilities, vec![1.0 - p, p]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_serving_form_is_int8_only_when_within_budget_and_faster() {
        let mut m = tiny_model();
        let rows = vec![vec![0.5, -1.0, 1.0, 0.0]; 8];
        let choice = m.choose_form(&rows, 0.01);
        assert_eq!(choice.form, Form::F32);
        assert_eq!(choice.reason, "the model has no int8 form");

        m.quant = Some(quant::QuantNetwork::quantize(&m.network));
        m.meta.training =
            serde_json::json!({"compressed": {"metric_before": 0.9, "metric_after": 0.85}});
        let choice = m.choose_form(&rows, 0.01);
        assert_eq!(choice.form, Form::F32);
        assert!(
            choice.reason.contains("over the budget"),
            "{}",
            choice.reason
        );
        assert_eq!(choice.int8_ns, None);

        m.meta.training =
            serde_json::json!({"compressed": {"metric_before": 0.9, "metric_after": 0.895}});
        let choice = m.choose_form(&rows, 0.01);
        let int8 = choice.int8_ns.unwrap();
        assert_eq!(
            choice.form == Form::Int8,
            int8 < choice.f32_ns,
            "{choice:?}"
        );
        // Whatever form serves, the answer is the same kind and close.
        let (a, b) = (
            m.forward_form(Form::F32, &rows[0]),
            m.forward_form(Form::Int8, &rows[0]),
        );
        assert!((a[0] - b[0]).abs() < 0.02, "{a:?} {b:?}");
    }

    #[test]
    fn the_card_shows_the_hidden_activations() {
        let mut m = tiny_model();
        assert_eq!(
            m.card(None, None, None)["activations"],
            serde_json::json!(["relu"])
        );
        m.network = Network::with_activations(
            m.network.layers().to_vec(),
            vec![network::Activation::LeakyRelu { alpha: 0.01 }],
            m.network.output(),
        )
        .unwrap();
        assert_eq!(
            m.card(Some("3"), None, None)["activations"],
            serde_json::json!(["leaky_relu"])
        );
    }

    #[test]
    fn check_rejects_int8_activations_that_differ() {
        let mut m = tiny_model();
        m.quant = Some(quant::QuantNetwork::quantize(&m.network));
        assert_eq!(m.check(), Ok(()));
        m.network = Network::with_activations(
            m.network.layers().to_vec(),
            vec![network::Activation::Tanh],
            m.network.output(),
        )
        .unwrap();
        assert_eq!(
            m.check().unwrap_err(),
            "the int8 activations [Relu] do not match the f32 ones [Tanh]"
        );
    }

    #[test]
    fn check_rejects_a_schema_network_mismatch() {
        let mut m = tiny_model();
        m.schema.features.pop();
        assert!(m
            .check()
            .unwrap_err()
            .contains("the schema encodes 1 inputs, the network takes 4"));
    }
}
