//! Alerts: the outbox of notifications (what was sent, what waits, what failed)
//! and silences, which hold back alerts that match every one of their matchers
//! until they end. A matcher named `rule` matches the alert's rule
//! (`feature_drift`, ...), any other name the label of that name (`feature`,
//! `detector`).

use std::sync::Arc;

use serde::Deserialize;

use crate::alert::rules::Matcher;
pub use crate::alert::service::MailCounters;
use crate::store::alerts::{self as outbox, Mail, MailState, SilenceRow};
use crate::store::{Store, StoreError};

/// Why a silence was not created or deleted.
#[derive(Debug, thiserror::Error)]
pub enum AlertsError {
    #[error("{0}")]
    InvalidSilence(String),
    #[error("no silence with id `{0}`")]
    UnknownSilence(String),
    /// A query parameter the outbox listing does not take.
    #[error("{0}")]
    InvalidParameter(String),
    #[error("cannot encode the matchers: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

const MAX_MATCHERS: usize = 32;
/// At most this many bytes in a matcher's name or value (`created_by` and
/// `comment`: four times as many).
const MAX_TEXT: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    matchers: Vec<Matcher>,
    ends_at: String,
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
}

/// How many notifications [`Alerts::recent`] lists.
const RECENT: i64 = 100;

/// The alert service.
#[derive(Clone)]
pub struct Alerts {
    db: Store,
    counters: Arc<MailCounters>,
}

impl Alerts {
    pub(super) fn new(db: Store) -> Self {
        Alerts {
            db,
            counters: Arc::default(),
        }
    }

    /// What the alerting tasks count as they store and send mail.
    pub fn counters(&self) -> Arc<MailCounters> {
        self.counters.clone()
    }

    /// The latest notifications, newest first, only those in `state` (its
    /// lowercase name) when given.
    pub async fn list(&self, state: Option<&str>) -> Result<Vec<Mail>, AlertsError> {
        match state {
            None => Ok(outbox::recent(&self.db, RECENT).await?),
            Some(name) => {
                let state = MailState::parse(name).ok_or_else(|| {
                    let names: Vec<&str> = MailState::ALL.iter().map(|s| s.as_str()).collect();
                    AlertsError::InvalidParameter(format!(
                        "state=`{name}`: must be one of {}",
                        names.join(", ")
                    ))
                })?;
                Ok(outbox::recent_in(&self.db, state, RECENT).await?)
            }
        }
    }

    /// Notifications by delivery state (`sent`, `pending`, `failed`, `held`, ...)
    /// in the outbox now.
    pub async fn counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        outbox::counts(&self.db).await
    }

    /// The silences that have not ended.
    pub async fn silences(&self) -> Result<Vec<SilenceRow>, StoreError> {
        outbox::silences(&self.db, crate::time::now_millis()).await
    }

    /// Validates and stores a silence; returns its id.
    pub async fn create_silence(&self, s: NewSilence) -> Result<String, AlertsError> {
        let invalid = AlertsError::InvalidSilence;
        if s.matchers.is_empty() {
            return Err(invalid(
                "`matchers` is empty: a silence must say which alerts it silences".into(),
            ));
        }
        if s.matchers.len() > MAX_MATCHERS {
            return Err(invalid(format!(
                "{} matchers, at most {MAX_MATCHERS} are allowed",
                s.matchers.len()
            )));
        }
        if let Some((i, m)) = s
            .matchers
            .iter()
            .enumerate()
            .find(|(_, m)| m.name.is_empty() || m.value.is_empty())
        {
            return Err(invalid(format!(
            "matchers[{i}] {{\"name\": {:?}, \"value\": {:?}}} needs a non-empty name and value",
            m.name, m.value
        )));
        }
        if let Some(i) = s
            .matchers
            .iter()
            .position(|m| m.name.len() > MAX_TEXT || m.value.len() > MAX_TEXT)
        {
            return Err(invalid(format!(
                "matchers[{i}]: a name or value longer than {MAX_TEXT} bytes"
            )));
        }
        for (field, text) in [("created_by", &s.created_by), ("comment", &s.comment)] {
            if text.len() > MAX_TEXT * 4 {
                return Err(invalid(format!(
                    "`{field}` is longer than {} bytes",
                    MAX_TEXT * 4
                )));
            }
        }
        let now = crate::time::now_millis();
        let parse = |field: &str, v: &str| {
            crate::time::parse_rfc3339(v).ok_or_else(|| {
                invalid(format!(
                    "`{field}` is not an RFC 3339 time like 2026-11-29T18:00:00Z: {v:?}"
                ))
            })
        };
        let ends_at = parse("ends_at", &s.ends_at)?;
        let starts_at = match &s.starts_at {
            Some(t) => parse("starts_at", t)?,
            None => now,
        };
        if ends_at <= now || ends_at <= starts_at {
            return Err(invalid(format!(
                "`ends_at` ({}) must be in the future and after `starts_at`",
                s.ends_at
            )));
        }
        let row = SilenceRow {
            id: uuid::Uuid::now_v7().to_string(),
            matchers: serde_json::to_string(&s.matchers)?,
            starts_at,
            ends_at,
            created_by: s.created_by,
            comment: s.comment,
        };
        outbox::insert_silence(&self.db, &row).await?;
        tracing::info!(id = %row.id, matchers = %row.matchers, ends_at = %s.ends_at, created_by = %row.created_by, "silence created");
        Ok(row.id)
    }

    /// Deletes a silence.
    pub async fn delete_silence(&self, id: &str) -> Result<(), AlertsError> {
        if outbox::delete_silence(&self.db, id).await? {
            tracing::info!(%id, "silence deleted");
            Ok(())
        } else {
            Err(AlertsError::UnknownSilence(id.to_string()))
        }
    }
}
