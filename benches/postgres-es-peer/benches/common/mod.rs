//! Setup shared by the benchmarks of this project: the server, the pools and
//! postgres-es's tables.

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Connections in each store's pool (palisade's default).
pub const POOL: u32 = 16;

/// `PALISADE_POSTGRES_URL`, or `None` (after saying so) when it is not set.
pub fn url(bench: &str) -> Option<String> {
    match std::env::var("PALISADE_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("PALISADE_POSTGRES_URL is not set: skipping {bench}");
            None
        }
    }
}

/// A sqlx pool of `size` connections, no TLS.
pub async fn pool(url: &str, size: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(size)
        .connect(url)
        .await
        .expect("PostgreSQL at PALISADE_POSTGRES_URL is reachable")
}

async fn run(pool: &PgPool, statement: &str) {
    sqlx::query(statement)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("`{statement}`: {e}"));
}

/// Drops `schema` with everything in it.
pub async fn drop_schema(pool: &PgPool, schema: &str) {
    run(pool, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
}

/// Recreates `schema` holding postgres-es's `db/init.sql` tables (`events`
/// and `snapshots`, `json` payloads).
pub async fn es_schema(pool: &PgPool, schema: &str) {
    drop_schema(pool, schema).await;
    run(pool, &format!("CREATE SCHEMA {schema}")).await;
    run(
        pool,
        &format!(
            "CREATE TABLE {schema}.events (
                aggregate_type text                         NOT NULL,
                aggregate_id   text                         NOT NULL,
                sequence       bigint CHECK (sequence >= 0) NOT NULL,
                event_type     text                         NOT NULL,
                event_version  text                         NOT NULL,
                payload        json                         NOT NULL,
                metadata       json                         NOT NULL,
                PRIMARY KEY (aggregate_type, aggregate_id, sequence))"
        ),
    )
    .await;
    run(
        pool,
        &format!(
            "CREATE TABLE {schema}.snapshots (
                aggregate_type   text                                 NOT NULL,
                aggregate_id     text                                 NOT NULL,
                last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
                current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
                payload          json                                 NOT NULL,
                PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))"
        ),
    )
    .await;
}

/// Analyzes `tables` (the server may run without autovacuum) and takes a
/// `CHECKPOINT`, so that neither happens during a timed run.
pub async fn settle(pool: &PgPool, tables: &str) {
    run(pool, &format!("ANALYZE {tables}")).await;
    if let Err(e) = sqlx::query("CHECKPOINT").execute(pool).await {
        println!("CHECKPOINT after the fill failed ({e}); timing without it");
    }
}
