//! Model selection: the candidate grid, k-fold cross-validation of every
//! candidate (in parallel over the cores), the winner refitted on all rows, the
//! reference sample for the drift tests and the report `steward train` prints.
//!
//! The default grid (see [`default_grid`]) is a linear model fitted by linfa and
//! MLPs of two widths and two depths with two L2 and learning-rate settings, all
//! with early stopping. When the largest class has at least
//! [`IMBALANCE_RATIO`] times the rows of the smallest, the grid also has an MLP
//! with balanced class weights. The winner has the highest mean CV metric; a tie
//! (equal to 1e-9) goes to the candidate with fewer parameters, then to the
//! earlier one in the grid.
//!
//! Everything is a function of the data, the seed and the options: each fit has its
//! own seed, results are collected by index, never by finishing order, and the
//! report holds no times. The same inputs give bit-identical models and reports.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ndarray::{ArrayView2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::compress::{self, CompressOptions, Compression};
use super::cv::{self, CvReport};
use super::metrics::{self, Scores};
use super::sgd::{self, SgdParams, Targets};
use super::{linear, prepare, Prepared, TrainError};
use crate::data::Table;
use crate::model::scorer::Scorer;
use crate::model::{Model, ModelMeta, Reference, Schema, TargetScale, Task};

/// Largest over smallest class size at which balanced class weights join the grid.
pub const IMBALANCE_RATIO: f64 = 3.0;

/// One point of the grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "lowercase")]
pub enum Candidate {
    /// Logistic regression (classes) or ridge regression (values) by linfa, with
    /// L2 penalty `alpha` (scikit-learn's meaning: `C = 1/alpha`).
    Linear { alpha: f64 },
    /// A ReLU network trained by [`sgd`] with early stopping.
    /// (Rates are f64 here so that the report prints them as written.)
    Mlp {
        hidden: Vec<usize>,
        learning_rate: f64,
        l2: f64,
        batch_size: usize,
        class_weight: bool,
    },
}

impl Candidate {
    /// Fits the candidate; `seed` drives initialisation, shuffling and the
    /// early-stopping split.
    pub fn fit(
        &self,
        x: ArrayView2<f32>,
        y: &Targets,
        seed: u64,
    ) -> Result<crate::model::Network, TrainError> {
        let net = match self {
            Candidate::Linear { alpha } => linear::fit(x, y, *alpha)?,
            Candidate::Mlp {
                hidden,
                learning_rate,
                l2,
                batch_size,
                class_weight,
            } => sgd::fit(
                x,
                y,
                &SgdParams {
                    hidden: hidden.clone(),
                    learning_rate: *learning_rate as f32,
                    l2: *l2 as f32,
                    batch_size: *batch_size,
                    class_weight: *class_weight,
                    seed,
                    ..SgdParams::default()
                },
            )?,
        };
        let finite = net
            .layers()
            .iter()
            .all(|l| l.weight.iter().chain(l.bias.iter()).all(|w| w.is_finite()));
        if finite {
            Ok(net)
        } else {
            Err(TrainError::Diverged {
                candidate: self.name(),
            })
        }
    }

    /// Weights and biases of the network this candidate builds.
    pub fn parameters(&self, inputs: usize, outputs: usize) -> usize {
        let hidden: &[usize] = match self {
            Candidate::Linear { .. } => &[],
            Candidate::Mlp { hidden, .. } => hidden,
        };
        let mut widths = vec![inputs];
        widths.extend_from_slice(hidden);
        widths.push(outputs);
        widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
    }

    /// A short human name, e.g. `mlp[64,64] lr=0.001 l2=0.0001`.
    pub fn name(&self) -> String {
        match self {
            Candidate::Linear { alpha } => format!("linear alpha={alpha}"),
            Candidate::Mlp {
                hidden,
                learning_rate,
                l2,
                class_weight,
                ..
            } => {
                let widths: Vec<String> = hidden.iter().map(|h| h.to_string()).collect();
                let weighted = if *class_weight { " balanced" } else { "" };
                format!(
                    "mlp[{}] lr={learning_rate} l2={l2}{weighted}",
                    widths.join(",")
                )
            }
        }
    }
}

fn mlp(hidden: &[usize], learning_rate: f64, l2: f64) -> Candidate {
    Candidate::Mlp {
        hidden: hidden.to_vec(),
        learning_rate,
        l2,
        batch_size: 64,
        class_weight: false,
    }
}

/// The grid for a data set: see the module documentation.
pub fn default_grid(targets: &Targets) -> Vec<Candidate> {
    let mut grid = vec![
        Candidate::Linear { alpha: 1.0 },
        mlp(&[32], 3e-3, 1e-4),
        mlp(&[64], 3e-3, 1e-4),
        mlp(&[64], 3e-3, 1e-3),
        mlp(&[64, 64], 1e-3, 1e-4),
    ];
    let counts = targets.class_counts();
    if let (Some(max), Some(min)) = (counts.iter().max(), counts.iter().min()) {
        if *max as f64 >= IMBALANCE_RATIO * (*min).max(1) as f64 {
            grid.push(Candidate::Mlp {
                hidden: vec![64],
                learning_rate: 3e-3,
                l2: 1e-4,
                batch_size: 64,
                class_weight: true,
            });
        }
    }
    grid
}

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub label: String,
    /// The task, or `None` to infer it.
    pub task: Option<Task>,
    pub folds: usize,
    pub seed: u64,
    /// The grid, or `None` for [`default_grid`].
    pub grid: Option<Vec<Candidate>>,
    /// Worker threads for the fits (at least 1).
    pub threads: usize,
    /// The compression budget (`compression.max_metric_drop`), or `None` not to
    /// compress.
    pub max_metric_drop: Option<f64>,
    /// The level of the anomaly threshold (`drift.anomaly_level`).
    pub anomaly_level: f64,
}

impl TrainOptions {
    /// Label, folds and seed as given; task inferred, default grid, one thread per core.
    pub fn new(label: &str, folds: usize, seed: u64) -> TrainOptions {
        TrainOptions {
            label: label.to_string(),
            task: None,
            folds,
            seed,
            grid: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_metric_drop: Some(0.01),
            anomaly_level: crate::stats::gaussian::DEFAULT_LEVEL,
        }
    }
}

/// One candidate's line in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidateReport {
    #[serde(flatten)]
    pub candidate: Candidate,
    pub parameters: usize,
    pub cv_mean: Option<f64>,
    pub cv_std: Option<f64>,
    pub per_fold: Vec<f64>,
    /// Why the candidate could not be scored, if it could not.
    pub error: Option<String>,
}

/// The report of a training run (`steward train --json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    /// The data file (or `bundled:penguins`).
    pub source: String,
    pub task: Task,
    pub label: String,
    pub rows: usize,
    pub features: usize,
    pub classes: Vec<String>,
    pub seed: u64,
    pub cv: CvReport,
    pub selected: Candidate,
    pub candidates: Vec<CandidateReport>,
    pub compressed: Compression,
    /// Where the artifact was written, if it was.
    pub model: Option<String>,
}

/// A trained model and how it was chosen.
#[derive(Debug, Clone)]
pub struct Trained {
    pub model: Model,
    pub report: TrainReport,
}

/// Cross-validates every candidate, refits the winner on all rows and returns the
/// model (with its reference sample) and the report.
pub fn train(table: &Table, options: &TrainOptions) -> Result<Trained, TrainError> {
    let data = prepare(table, &options.label, options.task)?;
    let k = options.folds;
    let rows = data.x.nrows();
    let invalid = |message: String| TrainError::Invalid {
        path: table.path.clone(),
        message,
    };
    enough_for_folds(&data, k).map_err(invalid)?;
    let grid = options
        .grid
        .clone()
        .unwrap_or_else(|| default_grid(&data.targets));
    if grid.is_empty() {
        return Err(invalid("the candidate grid is empty".into()));
    }

    let (best, reports, cv_report) = select(&data, &grid, k, options, &table.path)?;
    let network = grid[best].fit(data.x.view(), &data.targets, options.seed)?;
    let compressed = compress_winner(&data, &grid[best], network, cv_report.mean, options)?;
    let mut metrics = BTreeMap::new();
    metrics.insert(cv_report.metric.to_string(), cv_report.mean);
    metrics.insert(format!("{}_std", cv_report.metric), cv_report.std);
    let report = TrainReport {
        source: table.path.clone(),
        task: data.task,
        label: data.label.clone(),
        rows,
        features: data.schema.features.len(),
        classes: data.classes.clone(),
        seed: options.seed,
        cv: cv_report.clone(),
        selected: grid[best].clone(),
        candidates: reports,
        compressed: compressed.report.clone(),
        model: None,
    };
    let meta = ModelMeta {
        task: data.task,
        label: data.label.clone(),
        classes: data.classes.clone(),
        metrics,
        training: serde_json::to_value(&report).unwrap_or_default(),
        created: None,
        parent: None,
        target: target_scale(&data.targets),
        online_updates: 0,
        reference: Some(reference_sample(table, &data, options.seed)),
        anomaly: anomaly_scorer(&data, options.anomaly_level),
    };
    let model = Model {
        schema: data.schema.clone(),
        network: compressed.network,
        meta,
        masks: compressed.masks,
        quant: compressed.quant,
    };
    model.check().map_err(invalid)?;
    Ok(Trained { model, report })
}

/// Cross-validates every candidate of `grid` and chooses one: its index, every
/// candidate's report, and the winner's CV report (with the pooled scores).
/// `path` names the data in the error when no candidate could be trained.
fn select(
    data: &Prepared,
    grid: &[Candidate],
    k: usize,
    options: &TrainOptions,
    path: &str,
) -> Result<(usize, Vec<CandidateReport>, CvReport), TrainError> {
    let (reports, pooled_predictions) = cross_validate(data, grid, k, options)?;
    let best = choose(&reports).ok_or_else(|| TrainError::Invalid {
        path: path.into(),
        message: format!(
            "no candidate could be trained: {}",
            reports
                .iter()
                .filter_map(|r| r.error.clone())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    })?;
    let winner = &reports[best];
    let pooled = pooled_predictions[best].scores(data);
    let cv = CvReport {
        folds: k,
        metric: pooled.metric_name(),
        mean: winner.cv_mean.unwrap_or(f64::NAN),
        std: winner.cv_std.unwrap_or(f64::NAN),
        per_fold: winner.per_fold.clone(),
        pooled,
    };
    Ok((best, reports, cv))
}

/// A regression model's target mean and standard deviation (it predicts in
/// standard units); `None` for a classifier.
pub(crate) fn target_scale(targets: &Targets) -> Option<TargetScale> {
    match targets {
        Targets::Values(_) => {
            let (mean, std) = targets.scale();
            Some(TargetScale { mean, std })
        }
        Targets::Classes { .. } => None,
    }
}

/// Every class needs a row in every fold, and there must be at least 2 folds.
fn enough_for_folds(data: &Prepared, k: usize) -> Result<(), String> {
    let rows = data.x.nrows();
    if k < 2 {
        return Err(format!("{k} folds: cross-validation needs at least 2"));
    }
    if rows < k {
        return Err(format!("{rows} rows, fewer than the {k} folds"));
    }
    for (class, count) in data.classes.iter().zip(data.targets.class_counts()) {
        if count < k {
            return Err(format!(
                "class `{class}` has {count} rows, fewer than the {k} folds: use fewer folds or more data"
            ));
        }
    }
    Ok(())
}

/// k-fold cross-validation of every candidate, (candidate, fold) jobs spread
/// over the threads: each candidate's report and its pooled out-of-fold
/// predictions.
fn cross_validate(
    data: &Prepared,
    grid: &[Candidate],
    k: usize,
    options: &TrainOptions,
) -> Result<(Vec<CandidateReport>, Vec<Pooled>), TrainError> {
    let assignment = cv::assign(&data.targets, k, options.seed);
    let splits: Vec<(Vec<usize>, Vec<usize>)> = (0..k).map(|f| cv::split(&assignment, f)).collect();
    // One job per (candidate, fold); the costliest first so that the cores finish
    // together.
    let jobs: Vec<(usize, usize)> = (0..grid.len())
        .flat_map(|c| (0..k).map(move |f| (c, f)))
        .collect();
    let outputs = data.classes.len().max(1);
    let inputs = data.x.ncols();
    let mut schedule: Vec<usize> = (0..jobs.len()).collect();
    schedule.sort_by_key(|&j| std::cmp::Reverse(grid[jobs[j].0].parameters(inputs, outputs)));
    let fold_results = run_parallel(&schedule, options.threads, |j| {
        let (c, f) = jobs[j];
        let (train_rows, valid_rows) = &splits[f];
        let x_train = data.x.select(Axis(0), train_rows);
        let y_train = data.targets.subset(train_rows);
        let net = grid[c].fit(x_train.view(), &y_train, options.seed)?;
        Ok::<_, TrainError>(predict(data, &net, valid_rows))
    })?;

    let mut reports = Vec::with_capacity(grid.len());
    let mut pooled_predictions = Vec::with_capacity(grid.len());
    for (c, candidate) in grid.iter().enumerate() {
        let mut per_fold = Vec::with_capacity(k);
        let mut pooled = Pooled::new(data);
        let mut error = None;
        for (f, (_, valid_rows)) in splits.iter().enumerate() {
            match &fold_results[c * k + f] {
                Ok(p) => {
                    per_fold.push(fold_metric(data, p, valid_rows));
                    pooled.add(p, valid_rows);
                }
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        let (mean, std) = cv::mean_std(&per_fold);
        let ok = error.is_none();
        reports.push(CandidateReport {
            candidate: candidate.clone(),
            parameters: candidate.parameters(inputs, outputs),
            cv_mean: ok.then_some(mean),
            cv_std: ok.then_some(std),
            per_fold: if ok { per_fold } else { Vec::new() },
            error,
        });
        pooled_predictions.push(pooled);
    }
    Ok((reports, pooled_predictions))
}

/// The winner pruned and quantised within `options.max_metric_drop` (tuned on
/// one part of the rows, checked on the rest), or as trained without it.
fn compress_winner(
    data: &Prepared,
    winner: &Candidate,
    network: crate::model::Network,
    cv_mean: f64,
    options: &TrainOptions,
) -> Result<compress::Compressed, TrainError> {
    let rows = data.x.nrows();
    Ok(match options.max_metric_drop {
        Some(max_drop) => {
            let (tune, held) = compress::split(rows, options.seed);
            let probe = if tune.len() == rows {
                network.clone()
            } else {
                let x_tune = data.x.select(Axis(0), &tune);
                winner.fit(x_tune.view(), &data.targets.subset(&tune), options.seed)?
            };
            compress::compress(
                &network,
                &probe,
                &tune,
                &held,
                data,
                &CompressOptions {
                    max_drop,
                    seed: options.seed,
                },
            )
        }
        None => compress::Compressed {
            report: compress::uncompressed(&network, cv_mean),
            network,
            masks: None,
            quant: None,
        },
    })
}

/// The index of the winner: highest mean, then fewest parameters, then first.
fn choose(reports: &[CandidateReport]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, r) in reports.iter().enumerate() {
        let Some(mean) = r.cv_mean.filter(|m| m.is_finite()) else {
            continue;
        };
        best = match best {
            None => Some(i),
            Some(b) => {
                let bm = reports[b].cv_mean.unwrap_or(f64::NEG_INFINITY);
                if mean > bm + 1e-9
                    || ((mean - bm).abs() <= 1e-9 && r.parameters < reports[b].parameters)
                {
                    Some(i)
                } else {
                    Some(b)
                }
            }
        };
    }
    best
}

/// Out-of-fold predictions of one fit.
#[derive(Debug, Clone)]
enum FoldPredictions {
    Classes(Vec<usize>),
    Values(Vec<f64>),
}

fn predict(data: &Prepared, net: &crate::model::Network, rows: &[usize]) -> FoldPredictions {
    let x = data.x.select(Axis(0), rows);
    match data.targets {
        Targets::Classes { .. } => {
            FoldPredictions::Classes(metrics::predict_classes(net, x.view()))
        }
        Targets::Values(_) => FoldPredictions::Values(metrics::predict_values(net, x.view())),
    }
}

fn fold_metric(data: &Prepared, p: &FoldPredictions, rows: &[usize]) -> f64 {
    match (p, &data.targets.subset(rows)) {
        (FoldPredictions::Classes(p), Targets::Classes { index, .. }) => {
            metrics::classification(&data.classes, p, index).accuracy
        }
        (FoldPredictions::Values(p), Targets::Values(v)) => metrics::regression(p, v).r2,
        _ => f64::NAN,
    }
}

/// Out-of-fold predictions of every fold, in row order.
struct Pooled {
    classes: Vec<usize>,
    values: Vec<f64>,
}

impl Pooled {
    fn new(data: &Prepared) -> Pooled {
        let n = data.x.nrows();
        Pooled {
            classes: vec![0; n],
            values: vec![0.0; n],
        }
    }

    fn add(&mut self, p: &FoldPredictions, rows: &[usize]) {
        match p {
            FoldPredictions::Classes(c) => {
                for (&r, &v) in rows.iter().zip(c) {
                    self.classes[r] = v;
                }
            }
            FoldPredictions::Values(vs) => {
                for (&r, &v) in rows.iter().zip(vs) {
                    self.values[r] = v;
                }
            }
        }
    }

    fn scores(&self, data: &Prepared) -> Scores {
        match &data.targets {
            Targets::Classes { index, .. } => {
                Scores::Classification(metrics::classification(&data.classes, &self.classes, index))
            }
            Targets::Values(v) => Scores::Regression(metrics::regression(&self.values, v)),
        }
    }
}

/// Runs `job(i)` for every `i` in `order` on up to `threads` threads and returns
/// the results indexed by `i`. A panicking job is an error, not a dead process.
fn run_parallel<T: Send>(
    order: &[usize],
    threads: usize,
    job: impl Fn(usize) -> T + Sync,
) -> Result<Vec<T>, TrainError> {
    let results: Mutex<Vec<Option<T>>> = Mutex::new((0..order.len()).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let workers = threads.clamp(1, order.len().max(1));
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = order.get(n) else { break };
                    let r = job(i);
                    if let Ok(mut slots) = results.lock() {
                        slots[i] = Some(r);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| TrainError::Panicked))
    })?;
    results
        .into_inner()
        .map_err(|_| TrainError::Panicked)?
        .into_iter()
        .map(|r| r.ok_or(TrainError::Panicked))
        .collect()
}

/// A seeded reservoir sample (algorithm R) of at most [`Reference::MAX_ROWS`]
/// training rows, raw cells of the feature columns, in file order.
/// The anomaly scorer over every training row's numeric inputs; `None` (and a log
/// line saying why) when the data cannot give one.
fn anomaly_scorer(data: &Prepared, level: f64) -> Option<Scorer> {
    fit_scorer(&data.schema, data.x.view(), level)
}

/// [`anomaly_scorer`] for rows encoded by `schema`.
pub(crate) fn fit_scorer(schema: &Schema, x: ArrayView2<f32>, level: f64) -> Option<Scorer> {
    match Scorer::fit(schema, x, level) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no anomaly scorer for this model");
            None
        }
    }
}

pub(crate) fn reference_sample(table: &Table, data: &Prepared, seed: u64) -> Reference {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005e_ed0f_d71f);
    let cap = Reference::MAX_ROWS;
    let mut picked: Vec<usize> = Vec::with_capacity(cap.min(table.rows.len()));
    for i in 0..table.rows.len() {
        if i < cap {
            picked.push(i);
        } else {
            let j = rng.gen_range(0..=i);
            if j < cap {
                picked[j] = i;
            }
        }
    }
    picked.sort_unstable();
    let columns: Vec<usize> = data
        .schema
        .features
        .iter()
        .filter_map(|f| table.headers.iter().position(|h| h == &f.name))
        .collect();
    Reference {
        columns: data
            .schema
            .features
            .iter()
            .map(|f| f.name.clone())
            .collect(),
        rows: picked
            .iter()
            .map(|&i| columns.iter().map(|&c| table.rows[i][c].clone()).collect())
            .collect(),
        population: table.rows.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(folds: usize) -> TrainOptions {
        TrainOptions {
            threads: 2,
            ..TrainOptions::new("label", folds, 42)
        }
    }

    #[test]
    fn the_bundled_data_trains_a_good_model_and_reports_every_candidate() {
        let t = Table::parse("penguins.csv", crate::BUNDLED_PENGUINS.as_bytes()).unwrap();
        let trained = train(&t, &options(5)).unwrap();
        let r = &trained.report;
        assert_eq!(
            trained.model.meta.classes,
            vec!["Adelie", "Chinstrap", "Gentoo"]
        );
        // Species are close to separable from bill and flipper sizes.
        assert!(r.cv.mean > 0.95, "{:?}", r.cv);
        assert_eq!(r.cv.per_fold.len(), 5);
        assert_eq!(
            r.candidates.len(),
            default_grid(&prepare(&t, "label", None).unwrap().targets).len()
        );
        let best = r
            .candidates
            .iter()
            .filter_map(|c| c.cv_mean)
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(r.cv.mean, best);
        let Scores::Classification(pooled) = &r.cv.pooled else {
            panic!("{:?}", r.cv.pooled)
        };
        let counted: u64 = pooled.confusion.iter().flatten().sum();
        assert_eq!(counted, 344, "every row is scored once out of fold");
        let reference = trained.model.meta.reference.as_ref().unwrap();
        assert_eq!(reference.rows.len(), 344);
        assert_eq!(reference.columns.len(), 6);
    }

    #[test]
    fn the_reference_sample_is_capped_seeded_and_in_file_order() {
        let mut csv = String::from("x,label\n");
        for i in 0..12_000 {
            csv.push_str(&format!("{i},{}\n", i % 2));
        }
        let t = Table::parse("r.csv", csv.as_bytes()).unwrap();
        let data = prepare(&t, "label", None).unwrap();
        let a = reference_sample(&t, &data, 1);
        assert_eq!(a.rows.len(), Reference::MAX_ROWS);
        assert_eq!(a.population, 12_000);
        let values: Vec<u32> = a.rows.iter().map(|r| r[0].parse().unwrap()).collect();
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "file order, no repeats"
        );
        assert!(
            *values.last().unwrap() > 10_000,
            "late rows get their chance"
        );
        assert_eq!(a, reference_sample(&t, &data, 1));
        assert_ne!(a, reference_sample(&t, &data, 2));
    }

    #[test]
    fn imbalanced_classes_add_a_class_weighted_candidate() {
        let balanced = Targets::Classes {
            index: (0..40).map(|i| i % 2).collect(),
            classes: 2,
        };
        assert!(!default_grid(&balanced).iter().any(|c| matches!(
            c,
            Candidate::Mlp {
                class_weight: true,
                ..
            }
        )));
        let skewed = Targets::Classes {
            index: (0..40).map(|i| usize::from(i % 10 == 0)).collect(),
            classes: 2,
        };
        assert!(default_grid(&skewed).iter().any(|c| matches!(
            c,
            Candidate::Mlp {
                class_weight: true,
                ..
            }
        )));
    }

    #[test]
    fn training_is_deterministic_whatever_the_threads() {
        let t = Table::parse("penguins.csv", crate::BUNDLED_PENGUINS.as_bytes()).unwrap();
        let a = train(&t, &options(3)).unwrap();
        let b = train(
            &t,
            &TrainOptions {
                threads: 1,
                ..options(3)
            },
        )
        .unwrap();
        assert_eq!(a.report, b.report);
        assert_eq!(
            crate::model::artifact::to_bytes(&a.model).unwrap(),
            crate::model::artifact::to_bytes(&b.model).unwrap()
        );
    }

    #[test]
    fn a_linearly_separable_problem_reaches_full_accuracy() {
        let mut csv = String::from("a,b,label\n");
        for i in 0..200 {
            let a = (i * 37 % 101) as f64 / 50.0 - 1.0;
            let b = (i * 53 % 97) as f64 / 48.0 - 1.0;
            // A margin of 0.1 around the line a + 2b = 0.3.
            let s = a + 2.0 * b - 0.3;
            if s.abs() < 0.1 {
                continue;
            }
            csv.push_str(&format!(
                "{a},{b},{}\n",
                if s > 0.0 { "up" } else { "down" }
            ));
        }
        let t = Table::parse("sep.csv", csv.as_bytes()).unwrap();
        let trained = train(&t, &options(5)).unwrap();
        assert_eq!(
            trained.report.cv.mean, 1.0,
            "{:?}",
            trained.report.candidates
        );
    }

    #[test]
    fn a_linear_truth_is_recovered_through_the_encoding() {
        // y = 5 + 2a - 3b, no noise; the winner's predictions must match it.
        let mut csv = String::from("a,b,label\n");
        for i in 0..300 {
            let a = (i * 37 % 101) as f64 / 10.0;
            let b = (i * 53 % 97) as f64 / 20.0;
            csv.push_str(&format!("{a},{b},{}\n", 5.0 + 2.0 * a - 3.0 * b));
        }
        let t = Table::parse("lin.csv", csv.as_bytes()).unwrap();
        let trained = train(
            &t,
            &TrainOptions {
                grid: Some(vec![Candidate::Linear { alpha: 1e-9 }]),
                ..options(5)
            },
        )
        .unwrap();
        assert!(
            trained.report.cv.mean > 0.999_999,
            "{:?}",
            trained.report.cv
        );
        let m = &trained.model;
        let mut x = vec![0.0; 2];
        m.schema.encode_cells(&["4.0", "1.5"], &mut x);
        let y = f64::from(m.network.forward_one(&x)[0]);
        assert!((y - (5.0 + 8.0 - 4.5)).abs() < 1e-3, "{y}");
    }

    #[test]
    fn too_few_rows_or_class_members_for_the_folds_are_input_errors() {
        let t = Table::parse("t.csv", b"x,label\n1,a\n2,b\n3,a\n").unwrap();
        let err = train(&t, &options(5)).unwrap_err();
        assert_eq!(err.to_string(), "t.csv: 3 rows, fewer than the 5 folds");
        assert!(err.is_input());
        let err = train(&t, &options(2)).unwrap_err();
        assert!(
            err.to_string()
                .contains("class `b` has 1 rows, fewer than the 2 folds"),
            "{err}"
        );
    }
}
