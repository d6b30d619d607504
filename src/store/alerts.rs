//! Alert mail in the database: the outbox (`alerts`), the rules' state and silences.
//! A notification is a row before anything tries to send it; the mailer moves it
//! from `pending` to `sent` or `failed`, or keeps it pending with a later
//! `next_attempt`. Rows over the hourly cap are `held` until a summary mail names
//! them (`summarized`).

use super::{Store, StoreError};

/// Where a notification stands; stored and answered as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum MailState {
    /// Waiting for its first or next attempt.
    Pending,
    Sent,
    /// Refused for good (see `last_error`).
    Failed,
    /// Over `alerts.max_per_hour`: waits for a summary mail.
    Held,
    /// Named in a summary mail instead of being sent.
    Summarized,
}

impl MailState {
    /// Every state, in the order the API lists them.
    pub const ALL: [MailState; 5] = [
        MailState::Pending,
        MailState::Sent,
        MailState::Failed,
        MailState::Held,
        MailState::Summarized,
    ];

    /// The state named `name` (its lowercase name), if any.
    pub fn parse(name: &str) -> Option<MailState> {
        MailState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MailState::Pending => "pending",
            MailState::Sent => "sent",
            MailState::Failed => "failed",
            MailState::Held => "held",
            MailState::Summarized => "summarized",
        }
    }
}

/// A notification to store.
#[derive(Debug, Clone)]
pub struct NewMail {
    pub group_key: String,
    pub kind: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    pub message_id: String,
    /// Earlier Message-IDs of the thread, oldest first.
    pub thread: Vec<String>,
    pub recipients: Vec<String>,
    /// The alerts the mail is about (JSON array).
    pub alerts: serde_json::Value,
    /// `Pending` or `Held`.
    pub state: MailState,
    /// PNG images the HTML part shows inline.
    pub images: Vec<MailImage>,
}

/// An image of a mail, shown inline by its HTML part as `cid:<cid>`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MailImage {
    /// The Content-ID, without angle brackets.
    pub cid: String,
    pub png: Vec<u8>,
}

/// A stored notification.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Mail {
    pub id: i64,
    pub created: i64,
    pub group_key: String,
    pub kind: String,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    pub message_id: String,
    pub thread: String,
    pub recipients: String,
    pub state: MailState,
    pub attempts: i64,
    pub next_attempt: i64,
    pub last_error: Option<String>,
    pub sent_at: Option<i64>,
    /// Filled by [`due`]: what the message carries inline.
    #[sqlx(skip)]
    pub images: Vec<MailImage>,
}

impl Mail {
    pub fn thread(&self) -> Vec<String> {
        serde_json::from_str(&self.thread).unwrap_or_default()
    }

    pub fn recipients(&self) -> Vec<String> {
        serde_json::from_str(&self.recipients).unwrap_or_default()
    }
}

const COLUMNS: &str = "id, created, group_key, kind, subject, body_text, body_html, message_id, \
                       thread, recipients, state, attempts, next_attempt, last_error, sent_at";

/// Stores a notification and its images in one transaction; returns its id.
pub async fn insert(store: &Store, mail: &NewMail, now: i64) -> Result<i64, StoreError> {
    let id = on_pool!(store, |pool| {
        let mut tx = pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO alerts (created, group_key, kind, subject, body_text, body_html, \
             message_id, thread, recipients, alerts, state, next_attempt) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
        )
        .bind(now)
        .bind(&mail.group_key)
        .bind(&mail.kind)
        .bind(&mail.subject)
        .bind(&mail.body_text)
        .bind(&mail.body_html)
        .bind(&mail.message_id)
        .bind(serde_json::to_string(&mail.thread).unwrap_or_default())
        .bind(serde_json::to_string(&mail.recipients).unwrap_or_default())
        .bind(mail.alerts.to_string())
        .bind(mail.state)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        for (position, image) in mail.images.iter().enumerate() {
            sqlx::query(
                "INSERT INTO alert_images (alert_id, position, cid, png) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(position as i64)
            .bind(&image.cid)
            .bind(&image.png)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        id
    });
    Ok(id)
}

/// The images of the mail `id`, in order.
pub async fn images(store: &Store, id: i64) -> Result<Vec<MailImage>, StoreError> {
    Ok(on_pool!(store, |pool| sqlx::query_as::<_, MailImage>(
        "SELECT cid, png FROM alert_images WHERE alert_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(pool)
    .await)?)
}

/// How long a notification claimed by [`due`] on PostgreSQL stays away from
/// every other replica's mailer: longer than one attempt can take (connect and
/// send timeouts). A replica that dies while sending leaves it due again after
/// this.
pub const CLAIM_MS: i64 = 600_000;

/// Pending notifications whose next attempt is due, oldest first, with their
/// images. On PostgreSQL they are claimed as they are read: `FOR UPDATE SKIP
/// LOCKED` skips rows another replica is claiming, and their next attempt moves
/// [`CLAIM_MS`] ahead, so that however many replicas send, each notification is
/// handed to one of them; the attempt's outcome ([`mark_sent`],
/// [`mark_failed_attempt`]) then sets it. On SQLite one daemon owns the file
/// (`store::lock`) and reads them plainly.
pub async fn due(store: &Store, now: i64, limit: i64) -> Result<Vec<Mail>, StoreError> {
    let mut mails = match store.backend() {
        super::Backend::Sqlite(pool) => {
            sqlx::query_as::<_, Mail>(&format!(
                "SELECT {COLUMNS} FROM alerts WHERE state = 'pending' AND next_attempt <= $1 \
                 ORDER BY next_attempt, id LIMIT $2"
            ))
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
        super::Backend::Postgres(pool) => {
            let mut claimed = sqlx::query_as::<_, Mail>(&format!(
                "WITH due AS (SELECT {COLUMNS} FROM alerts \
                     WHERE state = 'pending' AND next_attempt <= $1 \
                     ORDER BY next_attempt, id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 UPDATE alerts SET next_attempt = $3 FROM due WHERE alerts.id = due.id \
                 RETURNING due.*"
            ))
            .bind(now)
            .bind(limit)
            .bind(now.saturating_add(CLAIM_MS))
            .fetch_all(pool)
            .await?;
            claimed.sort_by_key(|m| (m.next_attempt, m.id));
            claimed
        }
    };
    for mail in &mut mails {
        mail.images = images(store, mail.id).await?;
    }
    Ok(mails)
}

/// The earliest next attempt of a pending notification.
pub async fn next_attempt(store: &Store) -> Result<Option<i64>, StoreError> {
    let (t,): (Option<i64>,) = on_pool!(store, |pool| sqlx::query_as(
        "SELECT MIN(next_attempt) FROM alerts WHERE state = 'pending'"
    )
    .fetch_one(pool)
    .await)?;
    Ok(t)
}

pub async fn mark_sent(store: &Store, id: i64, now: i64) -> Result<(), StoreError> {
    on_pool!(store, |pool| {
        sqlx::query(
        "UPDATE alerts SET state = 'sent', attempts = attempts + 1, sent_at = $1, last_error = NULL \
         WHERE id = $2",
    )
    .bind(now)
    .bind(id)
    .execute(pool)
    .await
    .map(|done| done.rows_affected())
    })?;
    Ok(())
}

/// Records a failed attempt: `next` is the next attempt, or `None` for a
/// permanent failure.
pub async fn mark_failed_attempt(
    store: &Store,
    id: i64,
    error: &str,
    next: Option<i64>,
) -> Result<(), StoreError> {
    let (state, next) = match next {
        Some(t) => (MailState::Pending, t),
        None => (MailState::Failed, 0),
    };
    on_pool!(store, |pool| sqlx::query(
        "UPDATE alerts SET state = $1, attempts = attempts + 1, last_error = $2, \
         next_attempt = CASE WHEN $3 = 'failed' THEN next_attempt ELSE $4 END WHERE id = $5",
    )
    .bind(state)
    .bind(error)
    .bind(state)
    .bind(next)
    .bind(id)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}

/// Notifications counted against the hourly cap (not held, not tests) created
/// since `since`.
pub async fn counted_since(store: &Store, since: i64) -> Result<i64, StoreError> {
    let (n,): (i64,) = on_pool!(store, |pool| {
        sqlx::query_as(
        "SELECT COUNT(*) FROM alerts WHERE created >= $1 AND state NOT IN ('held', 'summarized') \
         AND kind != 'test'",
    )
    .bind(since)
    .fetch_one(pool)
    .await
    })?;
    Ok(n)
}

/// Held notifications: (id, subject), oldest first.
pub async fn held(store: &Store) -> Result<Vec<(i64, String)>, StoreError> {
    Ok(on_pool!(store, |pool| sqlx::query_as(
        "SELECT id, subject FROM alerts WHERE state = 'held' ORDER BY id"
    )
    .fetch_all(pool)
    .await)?)
}

pub async fn mark_summarized(store: &Store, ids: &[i64]) -> Result<(), StoreError> {
    for id in ids {
        on_pool!(store, |pool| sqlx::query(
            "UPDATE alerts SET state = 'summarized' WHERE id = $1 AND state = 'held'"
        )
        .bind(id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected()))?;
    }
    Ok(())
}

/// The newest `limit` notifications, newest first.
pub async fn recent(store: &Store, limit: i64) -> Result<Vec<Mail>, StoreError> {
    Ok(on_pool!(store, |pool| sqlx::query_as::<_, Mail>(
        &format!("SELECT {COLUMNS} FROM alerts ORDER BY id DESC LIMIT $1")
    )
    .bind(limit)
    .fetch_all(pool)
    .await)?)
}

/// The newest `limit` notifications in `state`, newest first.
pub async fn recent_in(
    store: &Store,
    state: MailState,
    limit: i64,
) -> Result<Vec<Mail>, StoreError> {
    Ok(on_pool!(store, |pool| sqlx::query_as::<_, Mail>(
        &format!("SELECT {COLUMNS} FROM alerts WHERE state = $1 ORDER BY id DESC LIMIT $2")
    )
    .bind(state)
    .bind(limit)
    .fetch_all(pool)
    .await)?)
}

/// Notifications by state.
pub async fn counts(store: &Store) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(on_pool!(store, |pool| sqlx::query_as(
        "SELECT state, COUNT(*) FROM alerts GROUP BY state ORDER BY state"
    )
    .fetch_all(pool)
    .await)?)
}

/// The rules' saved state (JSON), if any.
pub async fn load_rules(store: &Store) -> Result<Option<String>, StoreError> {
    let row: Option<(String,)> = on_pool!(store, |pool| sqlx::query_as(
        "SELECT state FROM alert_rules WHERE id = 1"
    )
    .fetch_optional(pool)
    .await)?;
    Ok(row.map(|(s,)| s))
}

pub async fn save_rules(store: &Store, state: &str) -> Result<(), StoreError> {
    on_pool!(store, |pool| sqlx::query(
        "INSERT INTO alert_rules (id, state) VALUES (1, $1) \
         ON CONFLICT (id) DO UPDATE SET state = excluded.state",
    )
    .bind(state)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}

/// A stored silence.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SilenceRow {
    pub id: String,
    pub matchers: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_by: String,
    pub comment: String,
}

pub async fn insert_silence(store: &Store, s: &SilenceRow) -> Result<(), StoreError> {
    on_pool!(store, |pool| sqlx::query(
        "INSERT INTO silences (id, matchers, starts_at, ends_at, created_by, comment) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&s.id)
    .bind(&s.matchers)
    .bind(s.starts_at)
    .bind(s.ends_at)
    .bind(&s.created_by)
    .bind(&s.comment)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(())
}

/// Silences that have not ended by `now`, oldest first.
pub async fn silences(store: &Store, now: i64) -> Result<Vec<SilenceRow>, StoreError> {
    Ok(on_pool!(store, |pool| sqlx::query_as::<_, SilenceRow>(
        "SELECT id, matchers, starts_at, ends_at, created_by, comment FROM silences \
         WHERE ends_at > $1 ORDER BY starts_at, id",
    )
    .bind(now)
    .fetch_all(pool)
    .await)?)
}

/// Deletes a silence; whether it existed.
pub async fn delete_silence(store: &Store, id: &str) -> Result<bool, StoreError> {
    let done = on_pool!(store, |pool| sqlx::query(
        "DELETE FROM silences WHERE id = $1"
    )
    .bind(id)
    .execute(pool)
    .await
    .map(|done| done.rows_affected()))?;
    Ok(done > 0)
}
