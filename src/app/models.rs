//! Models: the live model's card, the registry, activation of a stored version
//! and retraining runs (start one, list them). Publishing and activation
//! themselves are `learning`'s; this service is what the outside may ask of it.

use std::sync::Arc;

use serde_json::Value;

use crate::learning::retrain::{self, RetrainSettings, Started};
use crate::learning::{Activation, Learning, LearningError};
use crate::live::Slot;
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
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Learning(LearningError),
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

    /// Every registered version, newest first.
    pub async fn list(&self) -> Result<Vec<ModelRecord>, StoreError> {
        registry::list(&self.db).await
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
