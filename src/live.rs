//! The live model: what a request is answered with, held in an `ArcSwap` so that
//! handlers load it once per request without locks and a swap never stalls them.
//!
//! Also the start-up rule for which model goes live: the registry's active version;
//! if the registry is empty, `model.initial` imported as version 1; else a model
//! trained from `model.bootstrap_data`. This module does not serve HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, BUNDLED_DATA};
use crate::data::Table;
use crate::model::{artifact, FormChoice, Model};
use crate::monitor::drift::Values;
use crate::monitor::window;
use crate::store::registry::{self, ModelRecord};
use crate::store::{Store, StoreError};
use crate::train::select::{self, TrainOptions};
use crate::train::TrainError;

/// Everything that can keep a model from going live.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(transparent)]
    Artifact(#[from] artifact::ArtifactError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("bootstrap training failed: {0}")]
    Train(#[from] TrainError),
    #[error("model.dir {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("the active version {version} in the registry points at {path}: {source}")]
    Active {
        version: String,
        path: String,
        source: artifact::ArtifactError,
    },
    #[error("bootstrap training panicked or was cancelled")]
    Join,
    #[error(
        "version {version}: its file {path} is missing and the registry holds no artifact for it"
    )]
    NoArtifact { version: String, path: String },
}

/// A model with the registry facts that go into every answer.
#[derive(Debug)]
pub struct LiveModel {
    pub version: Arc<str>,
    pub model: Model,
    pub record: ModelRecord,
    /// The model card, computed once.
    pub card: serde_json::Value,
    /// The form that answers requests (the compression issue's rule: the fastest
    /// within the accuracy budget, never slower than f32).
    pub form: FormChoice,
    /// The reference sample as the drift job reads it, computed once per model.
    pub drift_reference: Option<DriftReference>,
}

/// The model's reference sample as feature values, and the model's own outputs
/// on it (what prediction drift compares against).
#[derive(Debug)]
pub struct DriftReference {
    pub features: Vec<Values>,
    pub outputs: Values,
    pub rows: usize,
}

impl LiveModel {
    /// Makes a model live: times its forms on warm-up rows (its reference sample,
    /// encoded, or one all-missing row) and picks the one to serve.
    pub fn new(model: Model, record: ModelRecord, budget: f64) -> LiveModel {
        let rows = warm_up_rows(&model);
        Self::with_warm_up(model, record, budget, &rows)
    }

    /// [`LiveModel::new`] timed on the given encoded rows (recent logged inputs,
    /// when a model replaces another); the reference sample when `rows` is empty.
    pub fn with_warm_up(
        model: Model,
        record: ModelRecord,
        budget: f64,
        rows: &[Vec<f32>],
    ) -> LiveModel {
        let size = std::fs::metadata(&record.path).ok().map(|m| m.len());
        let own;
        let rows = if rows.is_empty() {
            own = warm_up_rows(&model);
            &own
        } else {
            rows
        };
        let form = model.choose_form(rows, budget);
        tracing::info!(
            version = %record.version,
            form = form.form.as_str(),
            f32_ns = form.f32_ns,
            int8_ns = form.int8_ns,
            reason = %form.reason,
            "serving form chosen"
        );
        let mut card = model.card(Some(&record.version), Some(&record.path), size);
        card["serving"] = serde_json::to_value(&form).unwrap_or_default();
        let drift_reference = model.meta.reference.as_ref().map(|r| DriftReference {
            features: window::reference_values(&model.schema, r),
            outputs: window::reference_outputs(&model, r),
            rows: r.rows.len(),
        });
        LiveModel {
            version: record.version.as_str().into(),
            model,
            record,
            card,
            form,
            drift_reference,
        }
    }

    /// The prediction for an encoded row, in the chosen form.
    pub fn predict_encoded(&self, x: &[f32]) -> crate::model::Prediction {
        self.model.predict_form(self.form.form, x)
    }
}

/// Rows of warm-up: up to 64 of the model's reference sample, encoded.
fn warm_up_rows(model: &Model) -> Vec<Vec<f32>> {
    let width = model.schema.width();
    let mut rows: Vec<Vec<f32>> = model
        .meta
        .reference
        .as_ref()
        .map(|r| {
            r.rows
                .iter()
                .take(64)
                .map(|cells| {
                    let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
                    let mut x = vec![0.0; width];
                    model.schema.encode_cells(&cells, &mut x);
                    x
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        let empty = vec![""; model.schema.features.len()];
        let mut x = vec![0.0; width];
        model.schema.encode_cells(&empty, &mut x);
        rows.push(x);
    }
    rows
}

/// The slot handlers read from.
pub type Slot = Arc<ArcSwap<LiveModel>>;

/// Loads the active version, or creates the first one.
pub async fn start(db: &Store, config: &Config) -> Result<LiveModel, LiveError> {
    if let Some(rec) = registry::active(db).await? {
        let path = local_artifact(db, Path::new(&config.model.dir), &rec).await?;
        let model = tokio::task::spawn_blocking(move || artifact::load(&path))
            .await
            .map_err(|_| LiveError::Join)?
            .map_err(|source| LiveError::Active {
                version: rec.version.clone(),
                path: rec.path.clone(),
                source,
            })?;
        tracing::info!(version = %rec.version, path = %rec.path, "loaded the active model");
        if !config.model.initial.is_empty() {
            tracing::warn!(
                initial = %config.model.initial,
                active = %rec.version,
                "model.initial is ignored: the registry already has versions (it seeds only the \
                 first start; activate a stored version, or import a model, to change the live one)"
            );
        }
        return Ok(LiveModel::new(
            model,
            rec,
            config.compression.max_metric_drop,
        ));
    }
    let dir = PathBuf::from(&config.model.dir);
    std::fs::create_dir_all(&dir).map_err(|source| LiveError::Dir {
        path: dir.display().to_string(),
        source,
    })?;
    let version = registry::next_version(db).await?;
    let (model, source) = if !config.model.initial.is_empty() {
        let initial = PathBuf::from(&config.model.initial);
        let model = tokio::task::spawn_blocking(move || artifact::load(&initial))
            .await
            .map_err(|_| LiveError::Join)??;
        tracing::info!(path = %config.model.initial, "importing model.initial as the first version");
        (model, "import")
    } else {
        let data = config.model.bootstrap_data.clone();
        let label = config.model.label.clone();
        let options = TrainOptions {
            max_metric_drop: Some(config.compression.max_metric_drop),
            anomaly_level: config.drift.anomaly_level,
            ..TrainOptions::new(&label, config.training.folds, config.training.seed)
        };
        tracing::info!(data = %data, "no model yet: training the first one from model.bootstrap_data");
        let model = tokio::task::spawn_blocking(move || bootstrap(&data, &options))
            .await
            .map_err(|_| LiveError::Join)??;
        (model, "bootstrap")
    };
    let path = dir.join(format!("v{version}.safetensors"));
    let to_save = model.clone();
    let save_path = path.clone();
    let bytes = tokio::task::spawn_blocking(move || {
        artifact::save(&to_save, &save_path)?;
        std::fs::read(&save_path).map_err(|source| LiveError::Dir {
            path: save_path.display().to_string(),
            source,
        })
    })
    .await
    .map_err(|_| LiveError::Join)??;
    let record = record_for(&model, &version, &path, source);
    if let Err(e) = registry::insert_active(db, &record, &bytes, None).await {
        // Another replica on the same database registered the first version
        // meanwhile: serve that one.
        if let Some(rec) = registry::active(db).await? {
            tracing::info!(version = %rec.version, "another replica registered the first version: loading it");
            let path = local_artifact(db, &dir, &rec).await?;
            let model = tokio::task::spawn_blocking(move || artifact::load(&path))
                .await
                .map_err(|_| LiveError::Join)??;
            return Ok(LiveModel::new(
                model,
                rec,
                config.compression.max_metric_drop,
            ));
        }
        return Err(e.into());
    }
    tracing::info!(version = %version, path = %record.path, metrics = %record.metrics, "first model registered and active");
    Ok(LiveModel::new(
        model,
        record,
        config.compression.max_metric_drop,
    ))
}

/// The file to load `record`'s version from: its recorded path when that file
/// is here, else `dir/v<version>.safetensors`, written first from the
/// registry's bytes when missing (another replica made the version), through
/// `artifact::write_atomically`: a crash never leaves half an artifact under
/// the real name.
pub async fn local_artifact(
    db: &Store,
    dir: &Path,
    record: &ModelRecord,
) -> Result<PathBuf, LiveError> {
    let recorded = PathBuf::from(&record.path);
    if recorded.exists() {
        return Ok(recorded);
    }
    let local = dir.join(format!("v{}.safetensors", record.version));
    if local.exists() {
        return Ok(local);
    }
    let bytes = registry::artifact(db, &record.version)
        .await?
        .ok_or_else(|| LiveError::NoArtifact {
            version: record.version.clone(),
            path: record.path.clone(),
        })?;
    let (to, dir) = (local.clone(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)
            .and_then(|()| artifact::write_atomically(&to, &bytes))
            .map_err(|source| LiveError::Dir {
                path: dir.display().to_string(),
                source,
            })
    })
    .await
    .map_err(|_| LiveError::Join)??;
    tracing::info!(version = %record.version, path = %local.display(), "artifact written from the registry");
    Ok(local)
}

/// The registry row of a new active version of `model`, stored at `path`.
pub fn record_for(model: &Model, version: &str, path: &Path, source: &str) -> ModelRecord {
    ModelRecord {
        version: version.to_string(),
        created: crate::time::now_millis(),
        path: path.display().to_string(),
        metrics: serde_json::to_value(&model.meta.metrics).unwrap_or_default(),
        sparsity: model.sparsity(),
        bits: if model.quant.is_some() { 8 } else { 32 },
        status: crate::store::registry::ModelStatus::Active,
        parent: model.meta.parent.clone(),
        source: source.into(),
        online_updates: i64::try_from(model.meta.online_updates).unwrap_or(i64::MAX),
        activated: None,
    }
}

/// Trains a model from `data` (a CSV path or the bundled data set).
pub fn bootstrap(data: &str, options: &TrainOptions) -> Result<Model, TrainError> {
    let table = if data == BUNDLED_DATA {
        Table::parse(BUNDLED_DATA, crate::BUNDLED_PENGUINS.as_bytes())?
    } else {
        Table::read(Path::new(data))?
    };
    let mut model = select::train(&table, options)?.model;
    model.meta.created = Some(crate::time::now_rfc3339());
    Ok(model)
}
