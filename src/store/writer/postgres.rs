//! The prediction log's PostgreSQL insert: a batch of
//! [`PredictionRow`]s, the row the SQLite writer stores, written into
//! `predictions` (migrations/postgres) by one statement per batch, so a batch is
//! stored whole or not at all.
//!
//! Two ways, both one round of messages per batch whatever its size (no
//! per-size statements to keep prepared, unlike a multi-row `VALUES`):
//! - [`PostgresLog::insert_copy`]: `COPY ... FROM STDIN` in the binary format, the
//!   rows encoded here into one buffer;
//! - [`PostgresLog::insert_unnest`]: `INSERT ... SELECT FROM UNNEST($1::text[],
//!   ...)`, one array per column, one prepared statement for every batch.
//!
//! The daemon's writer uses [`PostgresLog::insert`]: the COPY and the batch's
//! `prediction_rollups` upserts in one transaction, as the SQLite writer does,
//! so that the rollups never count a row that is not stored. [`PostgresSink`]
//! holds the connection, opening it at the first batch and again after a
//! failure, so that a database that is down is a failed write, retried.

use sqlx::{Connection, PgConnection};

use super::PredictionRow;
use crate::store::rollups::{self, Tally};
use crate::store::StoreError;

/// The columns written, in the order both statements bind them.
const COLUMNS: &str =
    "id, time, model_version, features, output, latency_us, anomaly_score, anomaly";

/// A connection of its own that writes prediction rows into PostgreSQL.
pub struct PostgresLog {
    conn: PgConnection,
    /// The COPY data of the last batch, kept to reuse its allocation.
    buf: Vec<u8>,
}

impl PostgresLog {
    /// Connects to the database at `url` (`postgres://user@host:port/db`).
    pub async fn connect(url: &str) -> Result<PostgresLog, StoreError> {
        let conn = PgConnection::connect(url)
            .await
            .map_err(StoreError::Postgres)?;
        Ok(PostgresLog {
            conn,
            buf: Vec::new(),
        })
    }

    /// Writes `rows` by one `COPY predictions FROM STDIN (FORMAT binary)`.
    pub async fn insert_copy(&mut self, rows: &[PredictionRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        encode_binary(rows, &mut self.buf).map_err(StoreError::Postgres)?;
        let mut copy = self
            .conn
            .copy_in_raw(&format!(
                "COPY predictions ({COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .map_err(StoreError::Postgres)?;
        // A failed send drops `copy`, which ends the COPY (CopyFail): nothing of
        // the batch is stored.
        copy.send(self.buf.as_slice())
            .await
            .map_err(StoreError::Postgres)?;
        copy.finish().await.map_err(StoreError::Postgres)?;
        Ok(())
    }

    /// Writes `rows` by one `INSERT ... SELECT FROM UNNEST(...)` with one array
    /// parameter per column.
    pub async fn insert_unnest(&mut self, rows: &[PredictionRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let texts = |f: fn(&PredictionRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
        let ints = |f: fn(&PredictionRow) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
        let scores: Vec<Option<f64>> = rows.iter().map(|r| r.anomaly_score).collect();
        sqlx::query(&format!(
            "INSERT INTO predictions ({COLUMNS}) \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], \
                                  $5::text[], $6::int8[], $7::float8[], $8::int8[])"
        ))
        .bind(texts(|r| &r.id))
        .bind(ints(|r| r.time))
        .bind(texts(|r| &r.model_version))
        .bind(texts(|r| &r.features))
        .bind(texts(|r| &r.output))
        .bind(ints(|r| r.latency_us))
        .bind(scores)
        .bind(ints(|r| i64::from(r.anomaly)))
        .execute(&mut self.conn)
        .await
        .map_err(StoreError::Postgres)?;
        Ok(())
    }

    /// Writes `rows` by COPY and adds their per-minute counts to
    /// `prediction_rollups`, in one transaction: all of it or nothing.
    pub async fn insert(&mut self, rows: &[PredictionRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut tally = Tally::default();
        for r in rows {
            tally.add(r.time, &r.model_version, r.latency_us, r.anomaly);
        }
        encode_binary(rows, &mut self.buf).map_err(StoreError::Postgres)?;
        let pg = StoreError::Postgres;
        let mut tx = self.conn.begin().await.map_err(pg)?;
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY predictions ({COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .map_err(pg)?;
        copy.send(self.buf.as_slice()).await.map_err(pg)?;
        copy.finish().await.map_err(pg)?;
        for (minute, version, c) in tally.entries() {
            let mut q = sqlx::query(rollups::prediction_upsert_sql())
                .bind(minute)
                .bind(&**version)
                .bind(c.predictions)
                .bind(c.anomalies)
                .bind(c.latency_us_sum);
            for n in &c.latency {
                q = q.bind(*n);
            }
            q.execute(&mut *tx).await.map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}

/// `rows` as the data of a binary COPY into [`COLUMNS`] (the format of
/// postgresql.org/docs/current/sql-copy.html, "Binary Format"): a header, per
/// row its field count and each field as a length and its bytes (-1 for NULL),
/// then a trailer. TEXT is its UTF-8, BIGINT and DOUBLE PRECISION are 8 bytes in
/// network order.
fn encode_binary(rows: &[PredictionRow], buf: &mut Vec<u8>) -> Result<(), sqlx::Error> {
    buf.clear();
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
    buf.extend_from_slice(&0i32.to_be_bytes()); // header extension: none
    for r in rows {
        buf.extend_from_slice(&8i16.to_be_bytes());
        text(buf, &r.id)?;
        int8(buf, r.time);
        text(buf, &r.model_version)?;
        text(buf, &r.features)?;
        text(buf, &r.output)?;
        int8(buf, r.latency_us);
        match r.anomaly_score {
            Some(score) => {
                buf.extend_from_slice(&8i32.to_be_bytes());
                buf.extend_from_slice(&score.to_be_bytes());
            }
            None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        int8(buf, i64::from(r.anomaly));
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(())
}

fn text(buf: &mut Vec<u8>, s: &str) -> Result<(), sqlx::Error> {
    // The format's lengths are i32 (and PostgreSQL takes no value over 1 GB);
    // a request body is capped far below either.
    let len = i32::try_from(s.len())
        .map_err(|_| sqlx::Error::Encode(format!("a {} byte text field", s.len()).into()))?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
    Ok(())
}

fn int8(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&8i32.to_be_bytes());
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Whether a PostgreSQL error says the database cannot take the write now but
/// may later (SQLSTATE class 08 connection exception, 53 insufficient resources
/// such as a full disk, 57P operator intervention such as a shutdown, 40001 and
/// 40P01 serialization failure and deadlock), or the connection or pool failed,
/// rather than that the statement is wrong. SQLite's codes are numbers and are
/// read by `store::sql_unavailable`; these are SQLSTATEs.
pub fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            session_ended(&c) || c.starts_with("53") || c == "40001" || c == "40P01"
        }),
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => true,
        _ => false,
    }
}

/// SQLSTATE classes 08 (connection exception) and 57P (operator intervention:
/// a shutdown, `pg_terminate_backend`): the server ended or refused the session.
fn session_ended(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("57P")
}

/// Whether a PostgreSQL error means the session is gone or unreachable: an I/O
/// or protocol error, or the server ending or refusing it ([`session_ended`]).
/// The leader election steps down on these.
pub fn connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| session_ended(&c)),
        _ => false,
    }
}

/// The writer's PostgreSQL side: a connection of its own to `url`, opened at
/// the first batch and again after any failed one (a failed transaction is
/// rolled back by the server; a new connection costs little beside a failure).
pub(super) struct PostgresSink {
    url: String,
    log: Option<PostgresLog>,
}

impl PostgresSink {
    pub(super) fn new(url: &str) -> PostgresSink {
        PostgresSink {
            url: url.to_string(),
            log: None,
        }
    }

    pub(super) async fn write(&mut self, rows: &[PredictionRow]) -> Result<(), StoreError> {
        let log = self.connected().await?;
        let result = log.insert(rows).await;
        self.after(result).await
    }

    /// Writes those of `rows` that `predictions` does not hold yet (by id), as
    /// [`PostgresSink::write`] does; the number written. For rows that may have
    /// been stored before (the spool's leftovers).
    pub(super) async fn write_missing(
        &mut self,
        rows: &[PredictionRow],
    ) -> Result<u64, StoreError> {
        let log = self.connected().await?;
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let stored =
            sqlx::query_scalar::<_, String>("SELECT id FROM predictions WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut log.conn)
                .await
                .map_err(StoreError::Postgres);
        let result = match stored {
            Ok(stored) => {
                let stored: std::collections::HashSet<String> = stored.into_iter().collect();
                let missing: Vec<PredictionRow> = rows
                    .iter()
                    .filter(|r| !stored.contains(&r.id))
                    .cloned()
                    .collect();
                log.insert(&missing).await.map(|()| missing.len() as u64)
            }
            Err(e) => Err(e),
        };
        self.after(result).await
    }

    /// The connection, opened if there is none.
    async fn connected(&mut self) -> Result<&mut PostgresLog, StoreError> {
        if self.log.is_none() {
            self.log = Some(PostgresLog::connect(&self.url).await?);
        }
        self.log.as_mut().ok_or(StoreError::WriterGone)
    }

    /// `result`, after closing the connection if it failed.
    async fn after<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if result.is_err() {
            if let Some(log) = self.log.take() {
                log.close().await;
            }
        }
        result
    }

    pub(super) async fn close(self) {
        if let Some(log) = self.log {
            log.close().await;
        }
    }
}
