//! PostgreSQL, the second backend (issue 19): the throwaway server the tests
//! start (tests/common/pg.rs), the parity of PostgreSQL's migrations
//! (migrations/postgres) with SQLite's, the prediction log's batch write
//! (`store::writer::PostgresLog`) and the registry's fence. The API, dashboard
//! and learning suites run on both backends (`for_each_backend!`), and
//! tests/replicas.rs runs several replicas on one database.

use std::sync::Arc;

use sqlx::{Connection, PgConnection};
use steward::store::writer::{PostgresLog, PredictionRow};

use crate::common::pg::Postgres;
use crate::common::{write_config_on, Db};

async fn select_one(url: &str) -> Result<i32, sqlx::Error> {
    let mut conn = PgConnection::connect(url).await?;
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
    conn.close().await?;
    Ok(one)
}

/// The harness starts a server on loopback, creates a database, stops and starts
/// it again on the same port, and removes its directory on drop.
#[tokio::test]
async fn the_throwaway_server_starts_stops_and_is_removed() {
    let Some(mut pg) = Postgres::launch() else {
        return;
    };
    assert!(
        pg.url().starts_with("postgres://postgres@127.0.0.1:"),
        "{}",
        pg.url()
    );
    assert_eq!(select_one(&pg.url()).await.unwrap(), 1);
    let url = pg.database("harness");
    assert!(url.ends_with("/harness"), "{url}");
    assert_eq!(select_one(&url).await.unwrap(), 1);

    pg.stop();
    assert!(
        select_one(&url).await.is_err(),
        "connected to a stopped server"
    );
    pg.start();
    assert_eq!(select_one(&url).await.unwrap(), 1);

    let dir = pg.dir().to_path_buf();
    assert!(dir.join("data").is_dir());
    drop(pg);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        select_one(&url).await.is_err(),
        "the server outlived its drop"
    );
}

/// The harness's PostgreSQL backend (`common::Backend`): the daemon's config
/// names the server, inside the caller's own `[database]` section when it has
/// one, and `Db` reads the server with the query text SQLite's takes.
#[tokio::test]
async fn a_daemon_config_names_its_server_and_db_reads_it() {
    let Some(pg) = Postgres::launch() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for sections in [
        "[database]\nbatch_rows = 2\n[drift]\nmin_rows = 5",
        "[drift]\nmin_rows = 5",
    ] {
        let path = write_config_on(dir.path(), sections, Some(&pg));
        let text = std::fs::read_to_string(path).unwrap();
        let config: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            config["database"]["url"].as_str(),
            Some(pg.url().as_str()),
            "{text}"
        );
        assert_eq!(config["drift"]["min_rows"].as_integer(), Some(5), "{text}");
    }
    let db = Db::on(Arc::new(pg));
    let mut conn = db.connect().await;
    sqlx::query("CREATE TABLE t (n BIGINT NOT NULL, x DOUBLE PRECISION, s TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    for n in 1..=3_i64 {
        sqlx::query("INSERT INTO t (n, x, s) VALUES ($1, $2, $3)")
            .bind(n)
            .bind(n as f64 / 2.0)
            .bind(n.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(db.count("t").await, 3);
    assert_eq!(
        db.scalar::<i64>("SELECT CAST(SUM(n) AS BIGINT) FROM t")
            .await,
        6
    );
    let rows: Vec<(i64, f64, String)> = db.rows("SELECT n, x, s FROM t ORDER BY n").await;
    assert_eq!(rows[2], (3, 1.5, "3".to_string()));
}

/// A schema as lines that compare across backends: `table.N column class [not
/// null]` (N is the column's position), `table primary key (a, b)`, and `table
/// index name [unique] [partial] (a, b)`. Primary keys are not null on both
/// sides: SQLite lets a TEXT primary key of a rowid table hold NULL (a legacy
/// quirk steward never uses), PostgreSQL does not.
type Schema = std::collections::BTreeSet<String>;

/// SQLite's type affinity of a declared type (the rules of sqlite.org/datatype3).
fn sqlite_class(declared: &str) -> String {
    let t = declared.to_ascii_uppercase();
    let class = if t.contains("INT") {
        "integer"
    } else if ["CHAR", "CLOB", "TEXT"].iter().any(|s| t.contains(s)) {
        "text"
    } else if t.contains("BLOB") || t.is_empty() {
        "blob"
    } else if ["REAL", "FLOA", "DOUB"].iter().any(|s| t.contains(s)) {
        "real"
    } else {
        return format!("numeric ({declared})");
    };
    class.to_string()
}

/// PostgreSQL's type as one of SQLite's classes. Integers must be BIGINT: steward
/// reads SQLite's integers as i64, and sqlx decodes an i64 from BIGINT only, so a
/// narrower column would pass a class check and fail at the first read.
fn postgres_class(data_type: &str) -> String {
    match data_type {
        "bigint" => "integer",
        "double precision" => "real",
        "text" => "text",
        "bytea" => "blob",
        other => return format!("postgres {other}"),
    }
    .to_string()
}

fn column_line(table: &str, position: usize, name: &str, class: &str, not_null: bool) -> String {
    let null = if not_null { " not null" } else { "" };
    format!("{table}.{position} {name} {class}{null}")
}

fn index_line(table: &str, name: &str, unique: bool, partial: bool, columns: &[String]) -> String {
    let unique = if unique { " unique" } else { "" };
    let partial = if partial { " partial" } else { "" };
    format!(
        "{table} index {name}{unique}{partial} ({})",
        columns.join(", ")
    )
}

async fn sqlite_schema(pool: &sqlx::SqlitePool) -> Schema {
    let mut schema = Schema::new();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name != '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for table in tables {
        let columns: Vec<(String, String, bool, i64)> = sqlx::query_as(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?) ORDER BY cid",
        )
        .bind(&table)
        .fetch_all(pool)
        .await
        .unwrap();
        for (i, (name, declared, not_null, pk)) in columns.iter().enumerate() {
            schema.insert(column_line(
                &table,
                i + 1,
                name,
                &sqlite_class(declared),
                *not_null || *pk > 0,
            ));
        }
        let mut key: Vec<&(String, String, bool, i64)> =
            columns.iter().filter(|c| c.3 > 0).collect();
        key.sort_by_key(|c| c.3);
        let key: Vec<&str> = key.iter().map(|c| c.0.as_str()).collect();
        schema.insert(format!("{table} primary key ({})", key.join(", ")));
        // Indexes made by CREATE INDEX (origin `c`), not those behind a key.
        let indexes: Vec<(String, bool, bool)> = sqlx::query_as(
            "SELECT name, \"unique\", partial FROM pragma_index_list(?) WHERE origin = 'c'",
        )
        .bind(&table)
        .fetch_all(pool)
        .await
        .unwrap();
        for (name, unique, partial) in indexes {
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info(?) ORDER BY seqno")
                    .bind(&name)
                    .fetch_all(pool)
                    .await
                    .unwrap();
            schema.insert(index_line(&table, &name, unique, partial, &columns));
        }
    }
    schema
}

async fn postgres_schema(conn: &mut PgConnection) -> Schema {
    let mut schema = Schema::new();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' \
         AND table_name != '_sqlx_migrations'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for table in tables {
        let columns: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text, is_nullable::text \
             FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(&table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        for (i, (name, data_type, nullable)) in columns.iter().enumerate() {
            schema.insert(column_line(
                &table,
                i + 1,
                name,
                &postgres_class(data_type),
                nullable == "NO",
            ));
        }
        let key: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey) \
             WHERE i.indrelid = $1::regclass AND i.indisprimary \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
        )
        .bind(&table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        schema.insert(format!("{table} primary key ({})", key.join(", ")));
        let indexes: Vec<(String, bool, bool, Vec<String>)> = sqlx::query_as(
            "SELECT c.relname::text, i.indisunique, i.indpred IS NOT NULL, \
                    array_agg(a.attname::text ORDER BY k.position) \
             FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k (attnum, position) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1::regclass AND NOT i.indisprimary \
             GROUP BY 1, 2, 3",
        )
        .bind(&table)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        for (name, unique, partial, columns) in indexes {
            schema.insert(index_line(&table, &name, unique, partial, &columns));
        }
    }
    schema
}

/// The two backends' migrations, numbered and named alike, give the same schema:
/// tables, columns in order with their type class and NOT NULL, primary keys, and
/// indexes (name, columns, unique, partial). SQLite's comes from steward's own
/// `store::open`; PostgreSQL's from migrations/postgres. Not compared: CHECK
/// constraints, defaults and foreign keys.
#[tokio::test]
async fn postgres_migrations_give_the_same_schema_as_sqlites() {
    // `migrate!` skips subdirectories: SQLite's migrator holds its own seven
    // files only, and PostgreSQL's the same numbers and names.
    let sqlite_migrator = sqlx::migrate!("./migrations");
    let postgres_migrator = sqlx::migrate!("./migrations/postgres");
    let names = |m: &sqlx::migrate::Migrator| -> Vec<(i64, String)> {
        m.iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect()
    };
    assert_eq!(names(&sqlite_migrator), names(&postgres_migrator));
    assert!(sqlite_migrator.iter().count() >= 7);

    let Some(pg) = Postgres::launch() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.db");
    let store = steward::store::open(&path).await.unwrap();
    store.close().await;
    let pool = crate::common::open_db(&path).await;
    let sqlite = sqlite_schema(&pool).await;
    pool.close().await;

    let mut conn = PgConnection::connect(&pg.database("parity")).await.unwrap();
    postgres_migrator.run(&mut conn).await.unwrap();
    let postgres = postgres_schema(&mut conn).await;
    conn.close().await.unwrap();

    assert!(
        sqlite.iter().any(|l| l == "predictions.1 id text not null"),
        "{sqlite:#?}"
    );
    let only_sqlite: Vec<&String> = sqlite.difference(&postgres).collect();
    let only_postgres: Vec<&String> = postgres.difference(&sqlite).collect();
    assert!(
        only_sqlite.is_empty() && only_postgres.is_empty(),
        "the backends' schemas differ\nonly in SQLite: {only_sqlite:#?}\nonly in PostgreSQL: {only_postgres:#?}"
    );
}

fn logged(i: i64, anomaly_score: Option<f64>, features: &str) -> PredictionRow {
    PredictionRow {
        id: format!("0190a1b2-0000-7000-8000-{i:012}"),
        time: 1_700_000_000_000 + i,
        model_version: Arc::from(if i % 2 == 0 { "1" } else { "2-online" }),
        features: features.to_string(),
        output: format!(r#"{{"prediction":"Adelie","probabilities":{{"Adelie":0.{i}}}}}"#),
        latency_us: 40 + i,
        anomaly_score,
        anomaly: anomaly_score.is_some_and(|s| s > 3.0),
    }
}

/// What a stored row holds, to compare written rows with those read back.
type Stored = (String, i64, String, String, String, i64, Option<f64>, i64);

fn stored(r: &PredictionRow) -> Stored {
    (
        r.id.clone(),
        r.time,
        r.model_version.to_string(),
        r.features.clone(),
        r.output.clone(),
        r.latency_us,
        r.anomaly_score,
        i64::from(r.anomaly),
    )
}

async fn read_back(conn: &mut PgConnection) -> Vec<Stored> {
    sqlx::query_as(
        "SELECT id, time, model_version, features, output, latency_us, anomaly_score, anomaly \
         FROM predictions ORDER BY id",
    )
    .fetch_all(conn)
    .await
    .unwrap()
}

/// Rows written by `PostgresLog` (by COPY and by UNNEST) read back equal, with
/// NULL scores, awkward text and extreme numbers; a batch with a duplicate id
/// stores none of its rows and leaves the connection usable; a stopped server is
/// an unavailable database, and a new connection writes once it is back.
#[tokio::test]
async fn the_log_batch_write_reads_back_equal_and_is_all_or_nothing() {
    let Some(mut pg) = Postgres::launch() else {
        return;
    };
    let url = pg.database("log");
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::migrate!("./migrations/postgres")
        .run(&mut conn)
        .await
        .unwrap();

    let awkward =
        "{\"name\":\"tab\\t, newline\\n, backslash \\\\, quote \\\", é 企鹅 🐧\",\"x\":1e-300}";
    let mut rows: Vec<PredictionRow> = (0..300)
        .map(|i| {
            logged(
                i,
                (i % 3 != 0).then_some(i as f64 / 7.0),
                r#"{"bill_length_mm":39.1}"#,
            )
        })
        .collect();
    rows[1].features = awkward.to_string();
    rows[2].anomaly_score = Some(f64::INFINITY);
    rows[4].anomaly_score = Some(-0.0);
    rows[5].time = i64::MIN;
    rows[6].latency_us = i64::MAX;
    rows[7].anomaly_score = Some(f64::MIN_POSITIVE);

    let mut log = PostgresLog::connect(&url).await.unwrap();
    log.insert_copy(&rows[..150]).await.unwrap();
    log.insert_unnest(&rows[150..]).await.unwrap();
    log.insert_copy(&[]).await.unwrap();
    log.insert_unnest(&[]).await.unwrap();
    let expected: Vec<Stored> = rows.iter().map(stored).collect();
    assert_eq!(read_back(&mut conn).await, expected);

    // A duplicate id in the middle of a batch: the statement fails, no row of the
    // batch is stored, and the next batch on the same connection goes through.
    let fresh = |from: i64| {
        (from..from + 10)
            .map(|i| logged(i, None, "{}"))
            .collect::<Vec<_>>()
    };
    for (round, copy) in [(0, true), (1, false)] {
        let mut batch = fresh(1_000 + round * 100);
        batch[5] = rows[0].clone();
        let result = if copy {
            log.insert_copy(&batch).await
        } else {
            log.insert_unnest(&batch).await
        };
        let e = result.unwrap_err();
        assert!(e.to_string().contains("duplicate key"), "{e}");
        assert!(
            !e.is_unavailable(),
            "a duplicate is not an unavailable database: {e}"
        );
        assert_eq!(read_back(&mut conn).await.len(), rows.len());
    }
    let batch = fresh(2_000);
    log.insert_copy(&batch).await.unwrap();
    assert_eq!(read_back(&mut conn).await.len(), rows.len() + batch.len());
    drop(conn);

    // The server goes away: the write fails as unavailable (the writer would keep
    // the batch and retry); once it is back a new connection writes.
    pg.stop();
    let e = log.insert_copy(&fresh(3_000)).await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    pg.start();
    let mut log = PostgresLog::connect(&url).await.unwrap();
    log.insert_unnest(&fresh(3_000)).await.unwrap();
    log.close().await;
    let mut conn = PgConnection::connect(&url).await.unwrap();
    assert_eq!(read_back(&mut conn).await.len(), rows.len() + 20);
}

/// A registry write from an old epoch is refused on PostgreSQL (the fence of
/// docs/CLUSTER.md): neither the version, its artifact nor an activation is
/// written, and the write from the current epoch goes through.
#[tokio::test]
async fn a_registry_write_from_an_old_epoch_is_refused() {
    use steward::store::registry::{self, ModelRecord, ModelStatus, Reactivation};
    use steward::store::StoreError;
    let Some(pg) = Postgres::launch() else {
        return;
    };
    let store = steward::store::open_postgres(&pg.url()).await.unwrap();
    let rec = |version: &str| ModelRecord {
        version: version.into(),
        created: 1,
        path: format!("v{version}.safetensors"),
        metrics: serde_json::json!({}),
        sparsity: 0.0,
        bits: 32,
        status: ModelStatus::Active,
        parent: None,
        source: "test".into(),
        online_updates: 0,
        activated: None,
    };
    registry::insert_active(&store, &rec("1"), b"one", None)
        .await
        .unwrap();
    let mut conn = PgConnection::connect(&pg.url()).await.unwrap();
    sqlx::query("UPDATE cluster_leader SET epoch = 3")
        .execute(&mut conn)
        .await
        .unwrap();
    let stale = registry::insert_active(&store, &rec("2"), b"two", Some(2)).await;
    assert!(
        matches!(
            stale,
            Err(StoreError::Deposed {
                mine: 2,
                current: 3
            })
        ),
        "{stale:?}"
    );
    assert_eq!(
        registry::active(&store).await.unwrap().unwrap().version,
        "1"
    );
    assert_eq!(registry::artifact(&store, "2").await.unwrap(), None);
    registry::insert_active(&store, &rec("2"), b"two", Some(3))
        .await
        .unwrap();
    assert_eq!(
        registry::artifact(&store, "2").await.unwrap().as_deref(),
        Some(&b"two"[..])
    );
    let stale = registry::activate(&store, "1", Reactivation::Operator, Some(2)).await;
    assert!(
        matches!(stale, Err(StoreError::Deposed { .. })),
        "{stale:?}"
    );
    assert_eq!(
        registry::active(&store).await.unwrap().unwrap().version,
        "2"
    );
    assert!(
        registry::activate(&store, "1", Reactivation::Operator, Some(3))
            .await
            .unwrap()
    );
    store.close().await;
}
