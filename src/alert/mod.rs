//! Alert mail: monitoring events become Alertmanager-style alerts (`rules`), the
//! due notifications are composed (`compose`) and stored in the SQLite outbox
//! before any attempt to send them, and a mailer task delivers them with lettre
//! (`mail`) with back-off and jitter (`service`). docs/ALERTS.md describes the
//! behaviour for operators.

pub mod compose;
pub mod mail;
pub mod rules;
pub mod service;

use crate::store::alerts::SilenceRow;
use rules::{Matcher, Silence};

/// A stored silence as the rules use it; `None` if its matchers are unreadable
/// (never for a row the API wrote).
pub fn silence_from_row(row: &SilenceRow) -> Option<Silence> {
    let matchers: Vec<Matcher> = serde_json::from_str(&row.matchers).ok()?;
    Some(Silence {
        id: row.id.clone(),
        matchers,
        starts_at: row.starts_at,
        ends_at: row.ends_at,
        created_by: row.created_by.clone(),
        comment: row.comment.clone(),
    })
}
