//! Online learning: plain SGD steps on an f32 master copy of a model's network,
//! one labelled row ([`Learner::learn_one`]) or one averaged mini-batch
//! ([`Learner::learn_batch`]) at a time, with a step size, L2 weight decay and
//! clipping of the gradient's global norm.
//!
//! - **Pruned weights stay pruned.** The masks are the model's pruning masks (or,
//!   for a model without them, its weights that are exactly zero when the learner is
//!   made, unless masks are given); masked weights are zero after every step.
//! - **Regression errors are measured in label standard deviations** (the training
//!   labels' scale stored with the model), so one step size suits any label scale.
//! - **Progressive validation**: every row is predicted before the model learns
//!   from it; [`Learner::progress`] is the running accuracy or R² of those
//!   predictions.
//!
//! The hot loops run over contiguous row-major weights so that the compiler
//! vectorises them; a single-row step allocates nothing. Hidden layers use the
//! network's activations (ReLU, leaky ReLU, tanh, sigmoid); each layer picks its
//! function once, outside the loop over its units.

use ndarray::{Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::model::network::{dot, finish_one, Activation, Dense, Network, NetworkError, Output};
use crate::model::{Model, Task};

/// Step settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OnlineParams {
    /// The learning rate of each step.
    pub step_size: f32,
    /// L2 weight decay per step (weights, not biases).
    pub l2: f32,
    /// The largest global L2 norm of a step's gradient; larger ones are scaled down.
    pub clip: f32,
}

impl Default for OnlineParams {
    fn default() -> Self {
        Self {
            step_size: 0.01,
            l2: 1e-5,
            clip: 1.0,
        }
    }
}

/// One row's label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Label {
    /// A class index (into the model's classes).
    Class(usize),
    /// A value in label units.
    Value(f64),
}

/// What can be wrong with an online step's input.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OnlineError {
    #[error("the row has {got} encoded inputs, the network takes {want}")]
    Width { got: usize, want: usize },
    #[error("class index {0} is out of range")]
    Class(usize),
    #[error("a class label for a regression model, or a value for a classifier")]
    Kind,
    #[error("label value {0} is not finite")]
    Value(f64),
    #[error("{0} rows but {1} labels")]
    Lengths(usize, usize),
    /// An input, or the gradient it gives, is not finite: the row lies too far
    /// out for the network's arithmetic. Nothing is learned from it.
    #[error("the row or its gradient is not finite: not learned")]
    NonFinite,
}

/// One layer's weights, row-major `outputs × inputs`.
#[derive(Debug, Clone)]
struct Layer {
    inputs: usize,
    outputs: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// 1.0 where the weight may change, 0.0 where it is pruned.
    mask: Option<Vec<f32>>,
    grad_w: Vec<f32>,
    grad_b: Vec<f32>,
}

/// The running metric of predictions made before learning.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Progress {
    pub rows: u64,
    correct: u64,
    sse: f64,
    mean: f64,
    m2: f64,
}

impl Progress {
    /// Accuracy (classes) or R² (values) over the rows seen; `None` before any.
    pub fn metric(&self, task: Task) -> Option<f64> {
        if self.rows == 0 {
            return None;
        }
        Some(match task {
            Task::Classification => self.correct as f64 / self.rows as f64,
            Task::Regression if self.m2 > 0.0 => 1.0 - self.sse / self.m2,
            Task::Regression => 0.0,
        })
    }

    /// Right classes so far.
    pub fn correct(&self) -> u64 {
        self.correct
    }

    /// Sum of squared errors so far (label units).
    pub fn sse(&self) -> f64 {
        self.sse
    }

    fn record_class(&mut self, hit: bool) {
        self.rows += 1;
        self.correct += u64::from(hit);
    }

    fn record_value(&mut self, predicted: f64, truth: f64) {
        self.rows += 1;
        self.sse += (predicted - truth).powi(2);
        // Welford's update of the truth's mean and sum of squares.
        let d = truth - self.mean;
        self.mean += d / self.rows as f64;
        self.m2 += d * (truth - self.mean);
    }
}

/// An f32 master copy of a network that learns one step at a time.
#[derive(Debug, Clone)]
pub struct Learner {
    layers: Vec<Layer>,
    /// One per hidden layer, the network's.
    activations: Vec<Activation>,
    output: Output,
    task: Task,
    /// Label standard deviation (1 for classes).
    scale: f32,
    params: OnlineParams,
    updates: u64,
    /// acts[0] is the input; acts[l + 1] the output of layer l (after its
    /// activation, or the finished output for the last layer).
    acts: Vec<Vec<f32>>,
    /// deltas[l]: the loss's gradient at layer l's pre-activation.
    deltas: Vec<Vec<f32>>,
    progress: Progress,
}

impl Learner {
    /// A learner over `model`'s network; masks are the model's pruning masks, or
    /// else its exactly-zero weights.
    pub fn new(model: &Model, params: OnlineParams) -> Learner {
        if let Some(masks) = &model.masks {
            let masks = masks
                .iter()
                .map(|m| Some(m.iter().copied().collect()))
                .collect();
            return Self::with_masks(model, params, masks);
        }
        let masks = model
            .network
            .layers()
            .iter()
            .map(|l| {
                l.weight.iter().any(|w| *w == 0.0).then(|| {
                    l.weight
                        .iter()
                        .map(|w| f32::from(u8::from(*w != 0.0)))
                        .collect()
                })
            })
            .collect();
        Self::with_masks(model, params, masks)
    }

    /// A learner with explicit masks (`None`: the layer is dense). A mask of the
    /// wrong length is ignored.
    pub fn with_masks(
        model: &Model,
        params: OnlineParams,
        masks: Vec<Option<Vec<f32>>>,
    ) -> Learner {
        let net = &model.network;
        let mut masks = masks.into_iter();
        let layers: Vec<Layer> = net
            .layers()
            .iter()
            .map(|d| {
                let weight: Vec<f32> = d.weight.iter().copied().collect();
                let mask = masks.next().flatten().filter(|m| m.len() == weight.len());
                Layer {
                    inputs: d.inputs(),
                    outputs: d.outputs(),
                    grad_w: vec![0.0; weight.len()],
                    grad_b: vec![0.0; d.outputs()],
                    weight,
                    bias: d.bias.to_vec(),
                    mask,
                }
            })
            .collect();
        let mut acts = vec![vec![0.0; net.inputs()]];
        acts.extend(layers.iter().map(|l| vec![0.0; l.outputs]));
        let deltas = layers.iter().map(|l| vec![0.0; l.outputs]).collect();
        Learner {
            layers,
            activations: net.activations().to_vec(),
            output: net.output(),
            task: model.meta.task,
            scale: model.meta.target.map_or(1.0, |t| t.std as f32),
            params,
            updates: 0,
            acts,
            deltas,
            progress: Progress::default(),
        }
    }

    /// Changes the SGD step size from the next step on (the daemon raises it
    /// while a concept change is being learnt).
    pub fn set_step_size(&mut self, step_size: f32) {
        self.params.step_size = step_size;
    }

    /// Steps taken so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The progressive-validation record.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The running accuracy or R² of predictions made before each step.
    pub fn progressive_metric(&self) -> Option<f64> {
        self.progress.metric(self.task)
    }

    /// Predicts `x`, scores the prediction against `label`, then takes one step.
    /// Returns the loss before the step.
    pub fn learn_one(&mut self, x: &[f32], label: Label) -> Result<f64, OnlineError> {
        self.check(x, label)?;
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked on the line above.
            return unsafe { self.step_avx2(x, label) };
        }
        self.step(x, label)
    }

    /// [`Self::step`] compiled for AVX2, so that its loops use 256-bit registers.
    /// The arithmetic and its order are the same as the portable build's (no FMA
    /// contraction), so both give identical weights.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn step_avx2(&mut self, x: &[f32], label: Label) -> Result<f64, OnlineError> {
        self.step(x, label)
    }

    /// One gradient step; the weights are left as they were when the gradient is
    /// not finite (one such step would make every weight NaN).
    #[inline(always)]
    fn step(&mut self, x: &[f32], label: Label) -> Result<f64, OnlineError> {
        self.forward(x);
        let loss = self.output_delta(label);
        self.backward();
        let norm2: f32 = self
            .layers
            .iter()
            .zip(&self.deltas)
            .enumerate()
            .map(|(l, (_, d))| {
                let a2 = dot(&self.acts[l], &self.acts[l]);
                dot(d, d) * (a2 + 1.0)
            })
            .sum();
        let (factor, decay) = self.clip_and_decay(norm2)?;
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let step = self.params.step_size * factor * if l == last { self.scale } else { 1.0 };
            let a = &self.acts[l];
            for (j, &d) in self.deltas[l].iter().enumerate() {
                let g = step * d;
                let row = &mut layer.weight[j * layer.inputs..(j + 1) * layer.inputs];
                match &layer.mask {
                    Some(mask) => {
                        let m = &mask[j * layer.inputs..(j + 1) * layer.inputs];
                        for ((w, &ai), &mi) in row.iter_mut().zip(a).zip(m) {
                            *w = (*w * decay - g * ai) * mi;
                        }
                    }
                    None => {
                        for (w, &ai) in row.iter_mut().zip(a) {
                            *w = *w * decay - g * ai;
                        }
                    }
                }
                layer.bias[j] -= g;
            }
        }
        self.updates += 1;
        Ok(loss)
    }

    /// Predicts every row (scoring them against their labels), then takes one step
    /// along the batch's mean gradient. Returns the mean loss before the step.
    pub fn learn_batch(
        &mut self,
        x: ArrayView2<f32>,
        labels: &[Label],
    ) -> Result<f64, OnlineError> {
        if x.nrows() != labels.len() {
            return Err(OnlineError::Lengths(x.nrows(), labels.len()));
        }
        if labels.is_empty() {
            return Ok(0.0);
        }
        for layer in &mut self.layers {
            layer.grad_w.fill(0.0);
            layer.grad_b.fill(0.0);
        }
        let mut total = 0.0;
        let mut row = vec![0.0; x.ncols()];
        for (r, &label) in x.rows().into_iter().zip(labels) {
            row.iter_mut().zip(r.iter()).for_each(|(o, v)| *o = *v);
            self.check(&row, label)?;
            self.forward(&row);
            total += self.output_delta(label);
            self.backward();
            for (l, layer) in self.layers.iter_mut().enumerate() {
                let a = &self.acts[l];
                for (j, &d) in self.deltas[l].iter().enumerate() {
                    let g = &mut layer.grad_w[j * layer.inputs..(j + 1) * layer.inputs];
                    for (gi, &ai) in g.iter_mut().zip(a) {
                        *gi += d * ai;
                    }
                    layer.grad_b[j] += d;
                }
            }
        }
        let n = labels.len() as f32;
        let norm2: f32 = self
            .layers
            .iter()
            .map(|l| (dot(&l.grad_w, &l.grad_w) + dot(&l.grad_b, &l.grad_b)) / (n * n))
            .sum();
        let (factor, decay) = self.clip_and_decay(norm2)?;
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let step =
                self.params.step_size * factor / n * if l == last { self.scale } else { 1.0 };
            for (w, g) in layer.weight.iter_mut().zip(&layer.grad_w) {
                *w = *w * decay - step * g;
            }
            if let Some(mask) = &layer.mask {
                layer.weight.iter_mut().zip(mask).for_each(|(w, m)| *w *= m);
            }
            for (b, g) in layer.bias.iter_mut().zip(&layer.grad_b) {
                *b -= step * g;
            }
        }
        self.updates += 1;
        Ok(total / f64::from(n))
    }

    /// The network as it is now (with the activations it started with).
    pub fn network(&self) -> Result<Network, NetworkError> {
        let layers = self
            .layers
            .iter()
            .map(|l| Dense {
                weight: Array2::from_shape_vec((l.outputs, l.inputs), l.weight.clone())
                    .unwrap_or_else(|_| Array2::zeros((l.outputs, l.inputs))),
                bias: Array1::from(l.bias.clone()),
            })
            .collect();
        Network::with_activations(layers, self.activations.clone(), self.output)
    }

    /// A new model: `base` with the current weights, `parent` as its parent version
    /// and the online steps added to its count.
    pub fn to_model(&self, base: &Model, parent: &str) -> Result<Model, NetworkError> {
        let mut meta = base.meta.clone();
        meta.parent = Some(parent.to_string());
        meta.online_updates = base.meta.online_updates + self.updates;
        meta.created = None;
        if let Some(m) = self.progressive_metric() {
            meta.metrics.insert(
                format!(
                    "progressive_{}",
                    match self.task {
                        Task::Classification => "accuracy",
                        Task::Regression => "r2",
                    }
                ),
                m,
            );
        }
        Ok(Model {
            schema: base.schema.clone(),
            network: self.network()?,
            meta,
            masks: base.masks.clone(),
            quant: None,
        })
    }

    fn check(&self, x: &[f32], label: Label) -> Result<(), OnlineError> {
        let want = self.acts[0].len();
        if x.len() != want {
            return Err(OnlineError::Width { got: x.len(), want });
        }
        if !x.iter().all(|v| v.is_finite()) {
            return Err(OnlineError::NonFinite);
        }
        match (self.task, label) {
            (Task::Classification, Label::Class(c)) => {
                let classes = match self.output {
                    Output::Sigmoid => 2,
                    _ => self.acts[self.layers.len()].len(),
                };
                if c >= classes {
                    return Err(OnlineError::Class(c));
                }
            }
            (Task::Regression, Label::Value(v)) if !v.is_finite() => {
                return Err(OnlineError::Value(v))
            }
            (Task::Regression, Label::Value(_)) => {}
            _ => return Err(OnlineError::Kind),
        }
        Ok(())
    }

    #[inline(always)]
    fn forward(&mut self, x: &[f32]) {
        self.acts[0].copy_from_slice(x);
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            let (before, after) = self.acts.split_at_mut(l + 1);
            let a = &before[l];
            let out = &mut after[0];
            for (j, o) in out.iter_mut().enumerate() {
                *o =
                    dot(&layer.weight[j * layer.inputs..(j + 1) * layer.inputs], a) + layer.bias[j];
            }
            if l < last {
                self.activations[l].apply_in_place(out);
            } else {
                finish_one(self.output, out);
            }
        }
    }

    /// Fills the last delta, records the prediction and returns the loss.
    #[inline(always)]
    fn output_delta(&mut self, label: Label) -> f64 {
        let last = self.layers.len() - 1;
        let p = &self.acts[last + 1];
        let d = &mut self.deltas[last];
        match (self.output, label) {
            (Output::Sigmoid, Label::Class(c)) => {
                let y = c as f32;
                d[0] = p[0] - y;
                self.progress.record_class(usize::from(p[0] >= 0.5) == c);
                let q = f64::from(if c == 1 { p[0] } else { 1.0 - p[0] });
                -q.max(1e-12).ln()
            }
            (Output::Softmax, Label::Class(c)) => {
                for (k, (dk, pk)) in d.iter_mut().zip(p).enumerate() {
                    *dk = pk - f32::from(u8::from(k == c));
                }
                let best = crate::model::network::argmax(p);
                self.progress.record_class(best == c);
                -f64::from(p[c]).max(1e-12).ln()
            }
            (_, Label::Value(v)) => {
                let err = (f64::from(p[0]) - v) / f64::from(self.scale);
                d[0] = err as f32;
                self.progress.record_value(f64::from(p[0]), v);
                0.5 * err * err
            }
            (_, Label::Class(_)) => 0.0,
        }
    }

    /// Propagates the last delta back through the hidden layers.
    #[inline(always)]
    fn backward(&mut self) {
        let last = self.layers.len() - 1;
        for l in (1..=last).rev() {
            let layer = &self.layers[l];
            // The last layer's weights are in label units: divide the scale out.
            let k = if l == last { 1.0 / self.scale } else { 1.0 };
            let (below, here) = self.deltas.split_at_mut(l);
            let prev = &mut below[l - 1];
            prev.fill(0.0);
            for (j, &d) in here[0].iter().enumerate() {
                let g = d * k;
                let row = &layer.weight[j * layer.inputs..(j + 1) * layer.inputs];
                for (p, w) in prev.iter_mut().zip(row) {
                    *p += g * w;
                }
            }
            self.activations[l - 1].chain_in_place(prev, &self.acts[l]);
        }
    }

    /// The clip factor for a gradient of squared norm `norm2`, and the weight
    /// decay of one step; a gradient that is not finite is refused.
    fn clip_and_decay(&self, norm2: f32) -> Result<(f32, f32), OnlineError> {
        if !norm2.is_finite() {
            return Err(OnlineError::NonFinite);
        }
        let decay = 1.0 - self.params.step_size * self.params.l2;
        Ok((self.clip_factor(norm2), decay))
    }

    /// The factor that scales a gradient of squared norm `norm2` (finite) down
    /// to the clip norm.
    fn clip_factor(&self, norm2: f32) -> f32 {
        let norm = norm2.sqrt();
        if norm > self.params.clip {
            self.params.clip / norm
        } else {
            1.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::tiny_model;
    use crate::train::sgd::{self, Targets};
    use ndarray::Array2;

    /// One plain SGD step (no decay, no clipping) taken by the learner equals the
    /// batch trainer's analytic gradient (which a finite-difference test checks),
    /// for each hidden activation; the learner's network keeps the activation.
    #[test]
    fn a_step_follows_the_analytic_gradient() {
        let params = OnlineParams {
            step_size: 0.1,
            l2: 0.0,
            clip: f32::INFINITY,
        };
        let x = vec![0.3f32, -0.2, 1.0, 0.0];
        let xa = Array2::from_shape_vec((1, 4), x.clone()).unwrap();
        let ya = Targets::Classes {
            index: vec![1],
            classes: 2,
        }
        .matrix((0.0, 1.0));
        for activation in [
            Activation::Relu,
            Activation::Tanh,
            Activation::LeakyRelu { alpha: 0.1 },
            Activation::Sigmoid,
        ] {
            let mut model = tiny_model();
            model.network = Network::with_activations(
                model.network.layers().to_vec(),
                vec![activation],
                model.network.output(),
            )
            .unwrap();
            // No masks: tiny_model has weights that happen to be zero.
            let mut learner = Learner::with_masks(&model, params, Vec::new());
            learner.learn_one(&x, Label::Class(1)).unwrap();
            let after = learner.network().unwrap();
            assert_eq!(after.activations(), &[activation]);
            let grads = sgd::gradients(&model.network, xa.view(), ya.view(), None, 0.0);
            for (l, g) in grads.iter().enumerate() {
                let want = &model.network.layers()[l].weight - &(&g.weight * 0.1);
                let got = &after.layers()[l].weight;
                for (a, b) in want.iter().zip(got.iter()) {
                    assert!(
                        (a - b).abs() < 1e-6,
                        "{activation:?} layer {l}: {want} vs {got}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_avx2_and_portable_steps_give_identical_weights() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut next = || rng.gen_range(-0.5f32..0.5);
        for activation in [Activation::Relu, Activation::Tanh] {
            let mut model = tiny_model();
            model.network = Network::with_activations(
                model.network.layers().to_vec(),
                vec![activation],
                model.network.output(),
            )
            .unwrap();
            let mut dispatched = Learner::new(&model, OnlineParams::default());
            let mut portable = dispatched.clone();
            for i in 0..500 {
                let x = [next() * 4.0, next(), next(), next()];
                let label = Label::Class(i % 2);
                dispatched.learn_one(&x, label).unwrap();
                portable.step(&x, label).unwrap();
            }
            let (a, b) = (dispatched.network().unwrap(), portable.network().unwrap());
            assert_eq!(a, b, "{activation:?}: bit-identical whichever path ran");
        }
    }

    #[test]
    fn batch_of_one_equals_one_step() {
        let model = tiny_model();
        let x = [0.3f32, -0.2, 1.0, 0.0];
        let mut a = Learner::new(&model, OnlineParams::default());
        let mut b = a.clone();
        a.learn_one(&x, Label::Class(0)).unwrap();
        b.learn_batch(
            Array2::from_shape_vec((1, 4), x.to_vec()).unwrap().view(),
            &[Label::Class(0)],
        )
        .unwrap();
        let (na, nb) = (a.network().unwrap(), b.network().unwrap());
        for (la, lb) in na.layers().iter().zip(nb.layers()) {
            for (p, q) in la.weight.iter().zip(lb.weight.iter()) {
                assert!((p - q).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn pruned_weights_stay_zero() {
        let mut model = tiny_model();
        model.network.layers_mut()[0].weight[(0, 1)] = 0.0;
        model.network.layers_mut()[1].weight[(0, 2)] = 0.0;
        let mut learner = Learner::new(&model, OnlineParams::default());
        for i in 0..200 {
            let x = [i as f32 / 100.0, 1.0, 0.0, -0.5];
            learner.learn_one(&x, Label::Class(i % 2)).unwrap();
        }
        learner
            .learn_batch(Array2::ones((3, 4)).view(), &[Label::Class(1); 3])
            .unwrap();
        let net = learner.network().unwrap();
        assert_eq!(net.layers()[0].weight[(0, 1)], 0.0);
        assert_eq!(net.layers()[1].weight[(0, 2)], 0.0);
        assert_ne!(
            net.layers()[0].weight[(0, 2)],
            model.network.layers()[0].weight[(0, 2)]
        );
        assert_eq!(learner.updates(), 201);
    }

    #[test]
    fn the_models_pruning_masks_hold_through_online_steps() {
        let mut model = tiny_model();
        let t = crate::model::prune::thresholds(&model.network, 0.5, true);
        let masks = crate::model::prune::prune_magnitude(&mut model.network, &t);
        model.masks = Some(masks.clone());
        let mut learner = Learner::new(&model, OnlineParams::default());
        for i in 0..300 {
            learner
                .learn_one(&[i as f32 / 100.0, 1.0, -0.5, 0.3], Label::Class(i % 2))
                .unwrap();
        }
        let net = learner.network().unwrap();
        let mut moved = 0;
        for ((layer, mask), before) in net.layers().iter().zip(&masks).zip(model.network.layers()) {
            for ((w, m), b) in layer.weight.iter().zip(mask).zip(&before.weight) {
                if *m == 0.0 {
                    assert_eq!(*w, 0.0);
                } else if w != b {
                    moved += 1;
                }
            }
        }
        assert!(moved > 0, "the kept weights learn");
        assert_eq!(learner.to_model(&model, "1").unwrap().masks, Some(masks));
    }

    #[test]
    fn clipping_bounds_the_step() {
        let model = tiny_model();
        let params = OnlineParams {
            step_size: 1.0,
            l2: 0.0,
            clip: 1e-3,
        };
        let mut learner = Learner::new(&model, params);
        learner
            .learn_one(&[100.0, -100.0, 1.0, 0.0], Label::Class(0))
            .unwrap();
        let after = learner.network().unwrap();
        let moved: f32 = after
            .layers()
            .iter()
            .zip(model.network.layers())
            .map(|(a, b)| {
                let dw: f32 = (&a.weight - &b.weight).iter().map(|d| d * d).sum();
                let db: f32 = (&a.bias - &b.bias).iter().map(|d| d * d).sum();
                dw + db
            })
            .sum::<f32>()
            .sqrt();
        assert!(moved <= 1e-3 * 1.0001, "{moved}");
        assert!(moved > 1e-4, "{moved}");
    }

    #[test]
    fn progressive_r2_matches_scikit_learn() {
        // sklearn.metrics.r2_score([3, -0.5, 2, 7], [2.5, 0.0, 2, 8]) = 0.9486081370449679
        let mut p = Progress::default();
        for (pred, truth) in [(2.5, 3.0), (0.0, -0.5), (2.0, 2.0), (8.0, 7.0)] {
            p.record_value(pred, truth);
        }
        let r2 = p.metric(Task::Regression).unwrap();
        assert!((r2 - 0.948_608_137_044_967_9).abs() < 1e-12, "{r2}");
    }

    #[test]
    fn a_stream_from_a_linear_rule_is_learned() {
        // A logistic model that starts knowing nothing learns `a + b > 0` online;
        // the progressive accuracy counts each row before the step it causes.
        let mut model = tiny_model();
        model.network = Network::new(
            vec![Dense {
                weight: Array2::zeros((1, 4)),
                bias: Array1::zeros(1),
            }],
            Output::Sigmoid,
        )
        .unwrap();
        let params = OnlineParams {
            step_size: 0.1,
            ..OnlineParams::default()
        };
        let mut learner = Learner::with_masks(&model, params, Vec::new());
        let point = |i: usize| {
            let a = ((i * 37) % 101) as f32 / 50.0 - 1.0;
            let b = ((i * 53) % 97) as f32 / 48.0 - 1.0;
            ([a, b, 0.0, 0.0], usize::from(a + b > 0.0))
        };
        for i in 0..3000 {
            let (x, c) = point(i);
            learner.learn_one(&x, Label::Class(c)).unwrap();
        }
        let net = learner.network().unwrap();
        let correct = (5000..6000)
            .filter(|&i| {
                let (x, c) = point(i);
                usize::from(net.forward_one(&x)[0] >= 0.5) == c
            })
            .count();
        assert!(correct >= 970, "{correct}/1000");
        let progressive = learner.progressive_metric().unwrap();
        assert!(progressive > 0.9 && progressive < 1.0, "{progressive}");
    }

    #[test]
    fn bad_rows_and_labels_are_refused() {
        let model = tiny_model();
        let mut learner = Learner::new(&model, OnlineParams::default());
        assert_eq!(
            learner.learn_one(&[1.0], Label::Class(0)),
            Err(OnlineError::Width { got: 1, want: 4 })
        );
        assert_eq!(
            learner.learn_one(&[0.0; 4], Label::Class(2)),
            Err(OnlineError::Class(2))
        );
        assert_eq!(
            learner.learn_one(&[0.0; 4], Label::Value(1.0)),
            Err(OnlineError::Kind)
        );
        assert_eq!(
            learner.learn_one(&[f32::INFINITY, 0.0, 0.0, 0.0], Label::Class(0)),
            Err(OnlineError::NonFinite)
        );
        assert_eq!(learner.updates(), 0);
    }

    /// A row far out but finite (an input of 1e30 standard deviations) gives an
    /// infinite gradient: the step is refused and the weights stay as they were,
    /// where it once made every weight NaN.
    #[test]
    fn a_row_whose_gradient_overflows_leaves_the_weights_finite() {
        let model = tiny_model();
        let mut learner = Learner::new(&model, OnlineParams::default());
        let before = learner.network().unwrap();
        for _ in 0..3 {
            assert_eq!(
                learner.learn_one(&[1e30, -1e30, 1e30, 0.0], Label::Class(0)),
                Err(OnlineError::NonFinite)
            );
        }
        assert_eq!(learner.network().unwrap(), before);
        let rows = ndarray::array![[1e30f32, -1e30, 1e30, 0.0], [0.0, 0.0, 0.0, 0.0]];
        assert_eq!(
            learner.learn_batch(rows.view(), &[Label::Class(0), Label::Class(1)]),
            Err(OnlineError::NonFinite)
        );
        assert_eq!(learner.network().unwrap(), before);
        learner
            .learn_one(&[0.5, 0.1, 0.0, 0.0], Label::Class(1))
            .unwrap();
        assert_ne!(
            learner.network().unwrap(),
            before,
            "an ordinary row is learned"
        );
    }

    #[test]
    fn to_model_records_parent_and_updates() {
        let model = tiny_model();
        let mut learner = Learner::new(&model, OnlineParams::default());
        for i in 0..5 {
            learner
                .learn_one(&[0.1 * i as f32, 0.0, 1.0, 0.0], Label::Class(1))
                .unwrap();
        }
        let m = learner.to_model(&model, "7").unwrap();
        // Through the artifact and back: the metadata survives.
        let bytes = crate::model::artifact::to_bytes(&m).unwrap();
        let m = crate::model::artifact::from_bytes("m", &bytes).unwrap();
        assert_eq!(m.meta.parent.as_deref(), Some("7"));
        assert_eq!(m.meta.online_updates, 5);
        assert_eq!(m.network, learner.network().unwrap());
        assert!(m.meta.metrics.contains_key("progressive_accuracy"));
        assert_eq!(learner.progress().rows, 5);
    }
}
