//! The database through sqlx: SQLite (the embedded default: one file, WAL,
//! foreign keys, a busy timeout) or PostgreSQL (`database.url = "postgres://..."`,
//! for several replicas), the embedded migrations of each (`migrations/` and
//! `migrations/postgres/`, kept in parity by tests/postgres.rs), and the queries
//! of the serving core. The prediction log writer is in `writer`, the model
//! registry in `registry`, the per-minute rollups the dashboard reads in
//! `rollups`.
//!
//! One query text serves both backends: placeholders are `$1`, `$2`, ... (sqlx's
//! SQLite driver takes them too), integers are 64-bit, flags are integers 0/1 on
//! both, and `on_pool!` runs the same statement code on whichever pool the
//! store holds. A transaction that must see no concurrent writer (SQLite's
//! `BEGIN IMMEDIATE`) begins through [`Pool::begin_write`], which on PostgreSQL
//! takes a transaction-scoped advisory lock instead.
//!
//! This module owns SQL; callers see typed rows and `StoreError`, and hold the
//! database as a [`Store`]: no type of the database driver appears in a signature
//! outside `store`.

/// Runs `$body` with `$pool` bound to the store's pool, whichever backend it is:
/// the body is compiled once per backend, so it may use any sqlx call both
/// drivers take. Inside, `DB` names the backend's `sqlx::Database` type.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store.backend() {
            $crate::store::Backend::Sqlite($pool) => {
                #[allow(dead_code)]
                type DB = sqlx::Sqlite;
                $body
            }
            $crate::store::Backend::Postgres($pool) => {
                #[allow(dead_code)]
                type DB = sqlx::Postgres;
                $body
            }
        }
    };
}

pub mod alerts;
pub mod drift;
pub mod feedback;
pub mod lock;
pub mod notify;
mod read;
pub mod registry;
pub mod retrain;
pub mod rollups;
pub mod writer;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

pub use crate::config::{redact, Location};

/// The database, as the rest of the daemon holds it: a cheap handle (clone it
/// freely) passed to the query functions of this module and its children.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

#[derive(Debug, Clone)]
enum Db {
    Sqlite {
        pool: SqlitePool,
        /// Read-only rusqlite connections for reads of many rows (`read`).
        readers: Arc<read::Readers>,
    },
    Postgres {
        pool: PgPool,
        /// The URL it was opened with (the log writer and the leader election
        /// open connections of their own).
        url: Arc<str>,
    },
}

/// The pool of a [`Store`], by backend (what `on_pool!` matches on).
pub(crate) enum Backend<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a PgPool),
}

impl Store {
    /// Closes every connection (after the ones in use are given back).
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite { pool, readers } => {
                readers.close();
                pool.close().await;
            }
            Db::Postgres { pool, .. } => pool.close().await,
        }
    }

    pub(crate) fn backend(&self) -> Backend<'_> {
        match &self.db {
            Db::Sqlite { pool, .. } => Backend::Sqlite(pool),
            Db::Postgres { pool, .. } => Backend::Postgres(pool),
        }
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Db::Postgres { .. })
    }

    /// The PostgreSQL URL it was opened with, if it is one.
    pub fn postgres_url(&self) -> Option<&str> {
        match &self.db {
            Db::Postgres { url, .. } => Some(url),
            Db::Sqlite { .. } => None,
        }
    }

    /// The PostgreSQL pool, if it is one (the cluster module's queries).
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match &self.db {
            Db::Postgres { pool, .. } => Some(pool),
            Db::Sqlite { .. } => None,
        }
    }

    /// The SQLite pool, if it is one.
    pub(crate) fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match &self.db {
            Db::Sqlite { pool, .. } => Some(pool),
            Db::Postgres { .. } => None,
        }
    }
}

/// The fence of docs/CLUSTER.md: refuses the write of `tx` (rolled back by the
/// caller's `?`) with [`StoreError::Deposed`] when the cluster has moved past
/// `epoch`, the epoch this replica leads in. The row is read `FOR KEY SHARE`,
/// which a takeover's `FOR UPDATE` waits for while a leader's renewal (a no-key
/// update) does not: until the write commits the epoch cannot change. The
/// registry's writes call it through [`Pool::fence`]; the election's own
/// writers through `cluster::fence`.
pub async fn fence(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    epoch: i64,
) -> Result<(), StoreError> {
    let current: Option<i64> = sqlx::query_scalar("SELECT epoch FROM cluster_leader FOR KEY SHARE")
        .fetch_optional(&mut **tx)
        .await?;
    match current {
        None => Err(StoreError::NoLeaderRow),
        Some(current) if current != epoch => Err(StoreError::Deposed {
            mine: epoch,
            current,
        }),
        Some(_) => Ok(()),
    }
}

/// A value a column of either backend decodes into.
pub(crate) trait Column:
    for<'r> sqlx::Decode<'r, sqlx::Sqlite>
    + sqlx::Type<sqlx::Sqlite>
    + for<'r> sqlx::Decode<'r, sqlx::Postgres>
    + sqlx::Type<sqlx::Postgres>
{
}

impl<T> Column for T where
    T: for<'r> sqlx::Decode<'r, sqlx::Sqlite>
        + sqlx::Type<sqlx::Sqlite>
        + for<'r> sqlx::Decode<'r, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
{
}

/// A row of either backend, read by column name: the code that turns a row into
/// a record is written once for both.
pub(crate) trait Get {
    fn get<T: Column>(&self, column: &str) -> Result<T, sqlx::Error>;
}

impl Get for sqlx::sqlite::SqliteRow {
    fn get<T: Column>(&self, column: &str) -> Result<T, sqlx::Error> {
        sqlx::Row::try_get(self, column)
    }
}

impl Get for sqlx::postgres::PgRow {
    fn get<T: Column>(&self, column: &str) -> Result<T, sqlx::Error> {
        sqlx::Row::try_get(self, column)
    }
}

/// The key of the transaction-scoped advisory lock that serialises
/// [`Pool::begin_write`] transactions on PostgreSQL ("stewardw" in ASCII).
const WRITE_LOCK: i64 = 0x7374_6577_6172_6477;

/// A pool's way to begin a transaction that no other such transaction runs
/// beside: a check-then-write (the registry's activation, a label's revision)
/// must see the rows it decides on unchanged until it commits. SQLite's
/// `BEGIN IMMEDIATE` takes the database's write lock at once; on PostgreSQL the
/// transaction takes one advisory lock (`pg_advisory_xact_lock`), released at
/// commit or rollback, so that a concurrent one waits rather than failing with a
/// unique violation or a serialization error.
pub(crate) trait Pool {
    type Db: sqlx::Database;

    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
           + Send;

    /// Refuses the write of `tx` when `epoch` is given and the cluster has
    /// moved past it ([`fence`]); nothing on SQLite, where one daemon owns the
    /// file and there is no election.
    fn fence(
        &self,
        tx: &mut sqlx::Transaction<'static, Self::Db>,
        epoch: Option<i64>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;

    /// Announces `version` made active to every replica, delivered when `tx`
    /// commits (`notify`); nothing on SQLite, where there are no replicas.
    fn announce(
        &self,
        tx: &mut sqlx::Transaction<'static, Self::Db>,
        version: &str,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
}

impl Pool for SqlitePool {
    type Db = sqlx::Sqlite;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }

    async fn fence(
        &self,
        _tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        _epoch: Option<i64>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn announce(
        &self,
        _tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        _version: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Pool for PgPool {
    type Db = sqlx::Postgres;

    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    async fn fence(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        epoch: Option<i64>,
    ) -> Result<(), StoreError> {
        match epoch {
            Some(epoch) => fence(tx, epoch).await,
            None => Ok(()),
        }
    }

    async fn announce(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        version: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(notify::CHANNEL)
            .bind(version)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// Everything that can go wrong with the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: cannot create its directory: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("database {path}: cannot open: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database {path}: not writable: {source}")]
    NotWritable { path: String, source: sqlx::Error },
    #[error("database {path}: migrations failed: {source}")]
    Migrate {
        path: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    /// From the prediction log writer's PostgreSQL connection
    /// (`writer::PostgresLog`). The pool's PostgreSQL errors come as `Sql`, and
    /// `sql_unavailable` tells their SQLSTATEs from SQLite's codes.
    #[error("database (PostgreSQL): {0}")]
    Postgres(sqlx::Error),
    /// From the prediction log writer's own connection (`writer::sqlite`).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the prediction log writer's thread cannot start: {0}")]
    Thread(std::io::Error),
    /// The prediction log's spool (`writer::spool`, `database.spool_dir`).
    #[error("prediction log spool {path}: {source}")]
    Spool {
        path: String,
        source: std::io::Error,
    },
    #[error("the prediction log writer's thread is gone")]
    WriterGone,
    #[error("a database read's thread panicked")]
    ReadPanicked,
    #[error("database: stored value is invalid: {0}")]
    Decode(String),
    /// A leader's write from epoch `mine` while the cluster is in epoch
    /// `current`: another replica has led since, so the write was refused.
    #[error("refused: this replica led in epoch {mine}, the cluster is in epoch {current}")]
    Deposed { mine: i64, current: i64 },
    /// The table `cluster_leader` has no row (migration 0008 inserts it).
    #[error("database: the table cluster_leader has no row")]
    NoLeaderRow,
    /// A failure of a write shared by several requests (group commit), with
    /// whether it was [`StoreError::is_unavailable`].
    #[error("database: {message}")]
    Committer { message: String, unavailable: bool },
}

impl StoreError {
    /// Whether the database cannot take this write right now but may later: the
    /// disk is full, the file is locked or read-only, an I/O error, or no
    /// connection came free in time. Callers answer such a failure with 503 and a
    /// retry, not as a bug.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Sql(e) => sql_unavailable(e),
            StoreError::Postgres(e) => writer::postgres_unavailable(e),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                code_unavailable(e.extended_code)
            }
            StoreError::Committer { unavailable, .. } => *unavailable,
            _ => false,
        }
    }
}

/// Whether a SQLite result code (extended or primary) says the database cannot
/// take the write now (busy, locked, read-only, I/O error, full, cannot
/// open) rather than that the statement is wrong.
fn code_unavailable(code: i32) -> bool {
    matches!(code & 0xff, 5 | 6 | 8 | 10 | 13 | 14)
}

/// [`StoreError::is_unavailable`] for a sqlx error: SQLITE_BUSY (5), LOCKED (6),
/// READONLY (8), IOERR (10), FULL (13) and CANTOPEN (14), by primary result code.
pub fn sql_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db)
            if db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some() =>
        {
            writer::postgres_unavailable(e)
        }
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(code_unavailable),
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => true,
        _ => false,
    }
}

/// How long a connection waits for another's write lock before it fails as busy
/// (the pool's connections and the log writer's own).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The page size of a database this daemon creates. The prediction log's rows
/// (a few hundred bytes of features and output each, in a `WITHOUT ROWID` table)
/// fill a 4 KiB page with five or six of them; with 16 KiB pages the log writer
/// splits and writes a quarter as many pages, which took its CPU per row from
/// 4.7 to 3.6 µs for 30-feature rows (`cargo bench --bench writer`). SQLite
/// fixes the page size when it creates the file, so an existing database keeps
/// its own (docs/OPERATIONS.md says how to convert one).
pub const PAGE_SIZE: u32 = 16_384;

/// Opens (creating if needed) the database at `path`, applies the migrations and
/// proves it writable.
pub async fn open(path: &Path) -> Result<Store, StoreError> {
    let name = path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: name.clone(),
            source,
        })?;
    }
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|source| StoreError::Open {
            path: name.clone(),
            source,
        })?
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        .page_size(PAGE_SIZE);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .after_release(|conn, _| Box::pin(released_outside_transaction(conn)))
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open {
            path: name.clone(),
            source,
        })?;
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .map_err(|source| StoreError::Migrate {
            path: name.clone(),
            source,
        })?;
    touch(&pool)
        .await
        .map_err(|source| StoreError::NotWritable { path: name, source })?;
    Ok(Store {
        db: Db::Sqlite {
            pool,
            readers: read::Readers::new(path.to_path_buf()),
        },
    })
}

/// Opens the database at `location`: [`open`] for a SQLite file, [`open_postgres`]
/// for a PostgreSQL URL.
pub async fn open_at(location: &Location) -> Result<Store, StoreError> {
    match location {
        Location::Sqlite(path) => open(path).await,
        Location::Postgres(url) => open_postgres(url).await,
    }
}

/// Connections the PostgreSQL pool keeps at most. The log writer and the leader
/// election hold one more each, of their own.
pub const POSTGRES_POOL: u32 = 8;

/// Connects to the PostgreSQL database at `url`, applies its migrations
/// (`migrations/postgres`) and proves it writable. Replicas starting together
/// run the migrations one at a time: sqlx's migrator holds an advisory lock
/// while it applies them.
pub async fn open_postgres(url: &str) -> Result<Store, StoreError> {
    let name = redact(url);
    let options = PgConnectOptions::from_str(url).map_err(|source| StoreError::Open {
        path: name.clone(),
        source,
    })?;
    let pool = PgPoolOptions::new()
        .max_connections(POSTGRES_POOL)
        .acquire_timeout(BUSY_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|source| StoreError::Open {
            path: name.clone(),
            source,
        })?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .map_err(|source| StoreError::Migrate {
            path: name.clone(),
            source,
        })?;
    let store = Store {
        db: Db::Postgres {
            pool,
            url: Arc::from(url),
        },
    };
    heartbeat(&store)
        .await
        .map_err(|e| StoreError::NotWritable {
            path: name,
            source: match e {
                StoreError::Sql(source) => source,
                other => sqlx::Error::Protocol(other.to_string()),
            },
        })?;
    Ok(store)
}

/// Whether a connection given back to the pool may be reused: only outside any
/// transaction. When a statement fails with SQLITE_FULL or SQLITE_IOERR, SQLite
/// may roll the whole transaction back by itself; sqlx's own ROLLBACK then fails
/// ("no transaction is active") and sqlx goes on counting the connection as inside
/// a transaction. Its next `begin` would be a SAVEPOINT, and after one more failed
/// statement the connection would sit inside a real transaction whose RELEASEs
/// commit nothing: writes on it would "succeed" and vanish when it closed, while
/// its write lock kept every other connection out. Such a connection is closed
/// (SQLite rolls back whatever it held) and the pool opens a fresh one.
async fn released_outside_transaction(
    conn: &mut sqlx::SqliteConnection,
) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // A dropped transaction's ROLLBACK may still be queued: let it run first.
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!("a database connection was left inside a failed transaction: closed");
        return Ok(false);
    }
    Ok(true)
}

/// Rewrites the heartbeat row: fails when the database cannot be written.
pub async fn heartbeat(store: &Store) -> Result<(), StoreError> {
    on_pool!(store, |pool| touch(pool).await)?;
    Ok(())
}

async fn touch<'e, E>(executor: E) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e>,
    i64: sqlx::Encode<'e, E::Database> + sqlx::Type<E::Database>,
    <E::Database as sqlx::Database>::Arguments<'e>: sqlx::IntoArguments<'e, E::Database>,
{
    sqlx::query("UPDATE heartbeat SET time = $1 WHERE id = 1")
        .bind(crate::time::now_millis())
        .execute(executor)
        .await
        .map(|_| ())
}

/// Deletes predictions (and their feedback) and their rollups, drift reports and
/// finished alert mail older than `days`; returns the predictions deleted. The
/// cutoff is a minute's start, so that the rollups left count exactly the rows
/// left.
pub async fn apply_retention(store: &Store, days: u32) -> Result<u64, StoreError> {
    let cutoff = rollups::minute_of(crate::time::now_millis() - i64::from(days) * 86_400_000);
    let done = on_pool!(store, |pool| {
        let done = sqlx::query("DELETE FROM predictions WHERE time < $1")
            .bind(cutoff)
            .execute(pool)
            .await?;
        sqlx::query("DELETE FROM drift_reports WHERE time < $1")
            .bind(cutoff)
            .execute(pool)
            .await?;
        // Delivered or given-up alert mail; pending and held rows stay until sent.
        sqlx::query(
            "DELETE FROM alerts WHERE created < $1 AND state IN ('sent', 'failed', 'summarized')",
        )
        .bind(cutoff)
        .execute(pool)
        .await?;
        sqlx::query("DELETE FROM retrain_runs WHERE started < $1 AND state != 'running'")
            .bind(cutoff)
            .execute(pool)
            .await?;
        done.rows_affected()
    });
    rollups::delete_before(store, cutoff).await?;
    Ok(done)
}

/// Row counts of the statements whose length grows with their rows (multi-row
/// INSERTs, `IN (...)` lists): every slice is cut into pieces of these sizes
/// only, by [`standard_chunks`]. sqlx keeps each distinct statement text prepared,
/// up to 100 per connection, and a prepared 250-row INSERT holds about half a
/// megabyte in SQLite; with one statement per batch size, an hour of varying
/// batches filled four connections' caches and SQLite's memory climbed with it
/// (batches of 21 to 400 rows took it from 0.7 to 58 MB). Five sizes keep at
/// most five such statements per kind and connection, all reused.
pub const CHUNK_SIZES: [usize; 5] = [256, 64, 16, 4, 1];

/// `items` cut into consecutive pieces whose lengths are all in
/// [`CHUNK_SIZES`], largest first (1,000 rows: 3 × 256, 3 × 64, 2 × 16, 2 × 4).
pub fn standard_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        let size = CHUNK_SIZES.into_iter().find(|s| *s <= rest.len())?;
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        Some(chunk)
    })
}

/// Bytes SQLite holds in memory now across every connection (page caches,
/// prepared statements, sorters), as `sqlite3_memory_used` counts them.
pub fn sqlite_memory_bytes() -> i64 {
    // SAFETY: sqlite3_memory_used reads SQLite's global memory counter; it takes
    // no arguments and is safe to call from any thread at any time.
    unsafe { libsqlite3_sys::sqlite3_memory_used() }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    #[tokio::test]
    async fn retention_drops_old_reports_and_finished_mail_but_keeps_pending_mail() {
        let dir = tempfile::tempdir().unwrap();
        let pool = open(&dir.path().join("r.db")).await.unwrap();
        let old = crate::time::now_millis() - 3 * 86_400_000;
        let mail = |state: alerts::MailState| alerts::NewMail {
            group_key: "g".into(),
            kind: "firing".into(),
            subject: state.as_str().into(),
            body_text: String::new(),
            body_html: String::new(),
            message_id: format!("{}@x", state.as_str()),
            thread: vec![],
            recipients: vec![],
            alerts: serde_json::json!([]),
            state,
            images: vec![alerts::MailImage {
                cid: "chart-1@x".into(),
                png: vec![0x89, b'P', b'N', b'G'],
            }],
        };
        let sent = alerts::insert(&pool, &mail(alerts::MailState::Pending), old)
            .await
            .unwrap();
        alerts::mark_sent(&pool, sent, old).await.unwrap();
        let pending = alerts::insert(&pool, &mail(alerts::MailState::Pending), old)
            .await
            .unwrap();
        assert_eq!(alerts::images(&pool, sent).await.unwrap().len(), 1);
        drift::insert(
            &pool,
            &drift::ReportRow {
                time: old,
                model_version: "1".into(),
                window_rows: 1,
                drift: false,
                dataset_drift: false,
                report: "{}".into(),
                features: vec![],
            },
        )
        .await
        .unwrap();
        apply_retention(&pool, 1).await.unwrap();
        let left: Vec<alerts::MailState> = alerts::recent(&pool, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.state)
            .collect();
        assert_eq!(left, vec![alerts::MailState::Pending]);
        assert_eq!(drift::latest(&pool).await.unwrap(), None);
        // A deleted mail's images go with it; a kept one keeps its own.
        assert!(alerts::images(&pool, sent).await.unwrap().is_empty());
        let kept = alerts::images(&pool, pending).await.unwrap();
        assert_eq!(kept[0].png, [0x89, b'P', b'N', b'G']);
    }
}

#[cfg(test)]
mod tests {
    /// Held by the tests that measure SQLite's process-wide memory, so that they
    /// do not count each other's statements.
    pub(crate) static SQLITE_MEMORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test]
    async fn a_new_database_has_large_pages_and_an_old_one_keeps_its_own() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = dir.path().join("fresh.db");
        let store = super::open(&fresh).await.expect("open");
        let size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(store.sqlite_pool().unwrap())
            .await
            .expect("page size");
        assert_eq!(size, i64::from(super::PAGE_SIZE));
        store.close().await;

        // A database created before: 4 KiB pages, WAL. Opening it changes nothing.
        let old = dir.path().join("old.db");
        let url = format!("sqlite://{}?mode=rwc", old.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("create");
        sqlx::query("PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE t (x)")
            .execute(&mut conn)
            .await
            .expect("old layout");
        conn.close().await.expect("close");
        let store = super::open(&old).await.expect("open the old database");
        let size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(store.sqlite_pool().unwrap())
            .await
            .expect("page size");
        assert_eq!(size, 4096);
        store.close().await;
    }

    #[test]
    fn standard_chunks_cover_every_item_in_order_with_five_sizes() {
        for n in 0..=1_100usize {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = super::standard_chunks(&items).collect();
            assert!(chunks.iter().all(|c| super::CHUNK_SIZES.contains(&c.len())));
            assert_eq!(chunks.concat(), items);
            assert!(chunks.len() <= n / 256 + 12, "{n}: {} pieces", chunks.len());
        }
        let sizes: Vec<usize> = super::standard_chunks(&[0u8; 1000])
            .map(<[u8]>::len)
            .collect();
        assert_eq!(sizes, [256, 256, 256, 64, 64, 64, 16, 16, 4, 4]);
    }
}
