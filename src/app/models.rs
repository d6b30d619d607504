//! Models: the live model's card, the registry, activation of a stored version
//! and retraining runs (start one, list them). Publishing and activation
//! themselves are `learning`'s; this service is what the outside may ask of it.

use std::sync::Arc;

use serde_json::Value;

use crate::learning::retrain::{self, RetrainSettings, Started};
use crate::learning::{Activation, Kind, Learning, LearningError};
use crate::live::Slot;
use crate::model::Form;
use crate::store::registry::{self, ModelRecord};
use crate::store::retrain::{self as runs, Run, Trigger};
use crate::store::{Store, StoreError};

/// Why a version was not activated.
#[derive(Debug, thiserror::Error)]
pub enum ModelsError {
    #[error("no model version `{0}` in the registry; GET /v1/models lists them")]
    UnknownVersion(String),
    /// The version is registered but its artifact was deleted.
    #[error("{0}")]
    Retired(LearningError),
    #[error("version `{version}` cannot be loaded: {source}; the live model keeps serving")]
    ArtifactInvalid {
        version: String,
        source: crate::model::artifact::ArtifactError,
    },
    /// An uploaded artifact that does not load.
    #[error("{0}")]
    UploadedArtifact(crate::model::artifact::ArtifactError),
    /// An uploaded ONNX file (or its CSV) that does not import.
    #[error("{0}")]
    Import(crate::onnx::OnnxError),
    /// A model that loads but does not hold together (schema, network, classes).
    #[error("the model is not valid: {0}")]
    InvalidModel(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Learning(LearningError),
}

/// A new version sent to the running daemon (`POST /v1/models`).
#[derive(Debug)]
pub enum Upload {
    /// A steward artifact.
    Artifact { name: String, bytes: Vec<u8> },
    /// An ONNX file and the CSV that describes its features.
    Onnx {
        name: String,
        bytes: Vec<u8>,
        csv_name: String,
        csv: Vec<u8>,
        options: crate::onnx::ImportOptions,
    },
}

/// A registered upload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Registered {
    pub version: String,
    pub active: bool,
    pub source: &'static str,
    pub model: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import: Option<crate::onnx::ImportReport>,
}

/// The model in an upload, with the import's report for an ONNX file. An ONNX
/// import takes the anomaly level and the int8 budget from the config, as a
/// retrain does.
fn read_upload(
    upload: Upload,
    anomaly_level: f64,
    max_metric_drop: f64,
) -> Result<
    (
        crate::model::Model,
        Option<crate::onnx::ImportReport>,
        &'static str,
    ),
    ModelsError,
> {
    match upload {
        Upload::Artifact { name, bytes } => {
            let model = crate::model::artifact::from_bytes(&name, &bytes)
                .map_err(ModelsError::UploadedArtifact)?;
            Ok((model, None, "upload"))
        }
        Upload::Onnx {
            name,
            bytes,
            csv_name,
            csv,
            mut options,
        } => {
            options.anomaly_level = anomaly_level;
            options.max_metric_drop = Some(max_metric_drop);
            let table = crate::data::Table::parse(&csv_name, &csv)
                .map_err(|e| ModelsError::Import(crate::onnx::OnnxError::Data(e)))?;
            let imported = crate::onnx::import(&name, &bytes, &table, &options)
                .map_err(ModelsError::Import)?;
            Ok((imported.model, Some(imported.report), "onnx"))
        }
    }
}

/// How many runs [`Models::runs`] lists.
const RECENT_RUNS: i64 = 50;

/// The model service.
#[derive(Clone)]
pub struct Models {
    db: Store,
    slot: Slot,
    learning: Arc<Learning>,
    retrain: Arc<RetrainSettings>,
}

/// A registered version as `GET /v1/models` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionInfo {
    #[serde(flatten)]
    pub record: ModelRecord,
    /// The artifact file's size (null when retention deleted it).
    pub size_bytes: Option<u64>,
    /// `int8` for a quantized artifact, else `f32`.
    pub form: Form,
}

impl Models {
    pub(super) fn new(
        db: Store,
        slot: Slot,
        learning: Arc<Learning>,
        retrain: Arc<RetrainSettings>,
    ) -> Self {
        Models {
            db,
            slot,
            learning,
            retrain,
        }
    }

    /// The live model's card (`GET /v1/model`).
    pub fn card(&self) -> Value {
        self.slot.load().card.clone()
    }

    /// Every registered version, newest first, with its artifact's size and
    /// the form it serves in.
    pub async fn list(&self) -> Result<Vec<VersionInfo>, StoreError> {
        let records = registry::list(&self.db).await?;
        Ok(records
            .into_iter()
            .map(|record| VersionInfo {
                // A retired version's file is gone; a missing one says so by null.
                size_bytes: std::fs::metadata(&record.path).ok().map(|m| m.len()),
                form: if record.bits == 8 {
                    Form::Int8
                } else {
                    Form::F32
                },
                record,
            })
            .collect())
    }

    /// Makes a stored version live (a no-op when it already is).
    pub async fn activate(&self, version: &str) -> Result<Activation, ModelsError> {
        let a = match self.learning.activate(version).await {
            Ok(a) => a,
            Err(LearningError::Unknown(v)) => return Err(ModelsError::UnknownVersion(v)),
            Err(e @ LearningError::Retired(_)) => return Err(ModelsError::Retired(e)),
            Err(LearningError::Artifact(source)) => {
                tracing::error!(version, error = %source, "activation refused: the artifact does not load");
                return Err(ModelsError::ArtifactInvalid {
                    version: version.to_string(),
                    source,
                });
            }
            Err(LearningError::Store(e)) => return Err(ModelsError::Store(e)),
            Err(e) => return Err(ModelsError::Learning(e)),
        };
        if a.changed {
            tracing::info!(version = %a.model_version, previous = %a.previous, "model activated through the API");
        }
        Ok(a)
    }

    /// Validates an uploaded model as start-up validates `model.initial`,
    /// registers it as a new major version and, with `activate`, makes it live
    /// through the same warm-up and swap as a retrain. Nothing is registered
    /// when the upload is refused.
    pub async fn upload(&self, upload: Upload, activate: bool) -> Result<Registered, ModelsError> {
        let (level, budget) = (self.retrain.anomaly_level, self.retrain.max_metric_drop);
        let (model, report, source) =
            tokio::task::spawn_blocking(move || read_upload(upload, level, budget))
                .await
                .map_err(|_| ModelsError::Learning(LearningError::Join))??;
        model.check().map_err(ModelsError::InvalidModel)?;
        let (version, model_card) = if activate {
            let live = self
                .learning
                .publish(model, Kind::Major, source)
                .await
                .map_err(ModelsError::Learning)?;
            (live.version.to_string(), live.card.clone())
        } else {
            let card = model.card(None, None, None);
            let rec = self
                .learning
                .register(model, source)
                .await
                .map_err(ModelsError::Learning)?;
            let mut card = card;
            card["version"] = rec.version.clone().into();
            (rec.version, card)
        };
        tracing::info!(%version, source, activate, "model version registered from an upload");
        Ok(Registered {
            version,
            active: activate,
            source,
            model: model_card,
            import: report,
        })
    }

    /// Starts a retraining run in the background unless one is running.
    pub async fn retrain(&self, trigger: Trigger) -> Result<Started, StoreError> {
        retrain::start(self.learning.clone(), self.retrain.clone(), trigger).await
    }

    /// One run, if it exists.
    pub async fn run(&self, id: i64) -> Result<Option<Run>, StoreError> {
        runs::get(&self.db, id).await
    }

    /// The latest runs, newest first, and whether one is running now.
    pub async fn runs(&self) -> Result<(Vec<Run>, bool), StoreError> {
        let list = runs::recent(&self.db, RECENT_RUNS).await?;
        Ok((list, self.learning.flight.busy()))
    }
}
