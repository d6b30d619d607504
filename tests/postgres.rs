//! PostgreSQL, the second backend of issue 19 (groundwork): the throwaway server
//! the tests start (tests/common/pg.rs).

use sqlx::{Connection, PgConnection};

use crate::common::pg::Postgres;

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
