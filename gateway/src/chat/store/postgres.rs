//! The PostgreSQL backend: shared state for several gateway instances.
//!
//! Commits use the server's `synchronous_commit` (on by default: the commit is flushed to the WAL on disk before
//! `COMMIT` returns). Read-modify-write updates lock the row with `SELECT … FOR UPDATE`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres};

use super::common::*;
use super::{StoreError, StoreResult, clamp_limit, object_or_empty, ttl_micros};
use crate::chat::domain::*;

/// Connections per gateway instance.
const MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The PostgreSQL store. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    const BEGIN_WRITE: &'static str = "BEGIN";
    /// Appends update the conversation row explicitly, first, so its lock orders concurrent appends.
    const COUNTS_BY_TRIGGER: bool = false;
    const CONVERSATION_FOR_UPDATE: &'static str = concat!(
        "SELECT ",
        conversation_columns!(),
        " FROM conversations WHERE id = $1 FOR UPDATE"
    );

    /// Connects to `url` (`postgres://user:pass@host:port/db`) and migrates the database.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        Ok(PgStore { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// PostgreSQL handles concurrent writers itself: writes share the pool.
    fn writer(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn push_metadata_eq(qb: &mut sqlx::QueryBuilder<Postgres>, key: &str, value: &str) {
        qb.push("metadata ->> ")
            .push_bind(key.to_owned())
            .push(" = ")
            .push_bind(value.to_owned());
    }
}

fn migrator() -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(vec![Migration::new(
        1,
        "chat domain".into(),
        MigrationType::Simple,
        include_str!("../../../migrations/postgres/0001_chat_domain.sql").into_sql_str(),
        false,
    )])
}

store_queries!(PgStore, Postgres);
