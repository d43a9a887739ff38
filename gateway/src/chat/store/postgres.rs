//! The PostgreSQL backend: shared state for several gateway instances.
//!
//! Commits use the server's `synchronous_commit` (on by default: the commit is flushed to the WAL on disk before
//! `COMMIT` returns). Read-modify-write updates lock the row with `SELECT … FOR UPDATE`.
//!
//! Other gateways' writes and the session cache: a trigger (migration 0002) sends `NOTIFY voxgate_sessions` with
//! `<writer tag>:<session id>` for every updated or deleted session, and `*` on TRUNCATE. Each store's
//! connections carry a tag of their own in the custom setting `voxgate.instance`, so a store skips the
//! notifications of its own writes (which it has already applied to its cache) and evicts the others' ids when
//! they arrive, a few milliseconds after their commit. When the listening connection is lost, notifications
//! may have been missed: the cache is off and empty until it listens again.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres};
use tokio_util::sync::CancellationToken;

use super::cache::SessionCache;
use super::common::*;
use super::{MetadataColumn, StoreError, StoreResult, clamp_limit, ttl_micros};
use crate::chat::domain::*;

/// Connections per gateway instance.
const MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The channel of the session trigger (migration 0002).
const SESSIONS_CHANNEL: &str = "voxgate_sessions";
/// The custom setting that tags a store's connections, read by the session trigger.
const INSTANCE_SETTING: &str = "voxgate.instance";
/// Pause before listening again after the listening connection failed.
const RELISTEN_DELAY: Duration = Duration::from_secs(1);

/// The PostgreSQL store. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// How the pool connects, for the listening connection (boxed behind an `Arc`: it is large and rarely used).
    options: Arc<PgConnectOptions>,
    /// This store's tag in the session trigger's notifications (`voxgate.instance` on its connections).
    instance: Arc<str>,
}

impl PgStore {
    const BEGIN_WRITE: &'static str = "BEGIN";
    /// Turns per group commit. When a batch falls back to turn by turn, each turn's savepoint is a
    /// subtransaction with an id of its own (released or not), and beyond 64 in one transaction PostgreSQL's
    /// per-backend subtransaction cache overflows, which slows every other session's snapshots while the
    /// transaction runs.
    pub(super) const MAX_TURNS_PER_COMMIT: usize = 64;
    /// Group-commit writer tasks, each with its own connection when busy. A batch here waits on its round
    /// trips (five set-based: BEGIN, sessions, conversations, messages, COMMIT) and its WAL flush, so a few
    /// batches in parallel keep more of the server busy; a
    /// session's turns all go to one writer, so they stay ordered and batches never share a session row.
    pub const TURN_WRITERS: usize = 4;
    /// Appends update the conversation row explicitly, first, so its lock orders concurrent appends.
    const COUNTS_BY_TRIGGER: bool = false;
    const CONVERSATION_FOR_UPDATE: &'static str = concat!(
        "SELECT ",
        conversation_columns!(),
        " FROM conversations WHERE id = $1 FOR UPDATE"
    );

    /// Connects to `url` (`postgres://user:pass@host:port/db`) and migrates the database.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let instance: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let options: PgConnectOptions = url.parse()?;
        let options = options.options([(INSTANCE_SETTING, &*instance)]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        migrator().run(&pool).await?;
        Ok(PgStore {
            pool,
            options: Arc::new(options),
            instance,
        })
    }

    /// Evicts from `cache` the sessions other writers change, as their notifications arrive, until `stop`. The
    /// cache is on only while the listening connection is up.
    pub(super) async fn watch_other_writers(
        self,
        cache: Arc<SessionCache>,
        stop: CancellationToken,
    ) {
        loop {
            let listening = tokio::select! {
                listening = self.listen() => listening,
                () = stop.cancelled() => break,
            };
            match listening {
                Ok(mut listener) => {
                    // Changes made before LISTEN took effect were never notified.
                    cache.set_enabled(true);
                    loop {
                        let next = tokio::select! {
                            next = listener.try_recv() => next,
                            () = stop.cancelled() => {
                                cache.set_enabled(false);
                                return;
                            }
                        };
                        match next {
                            Ok(Some(notification)) => self.apply(&cache, notification.payload()),
                            // The connection was lost and has been re-established (listening again): what
                            // happened in between is unknown.
                            Ok(None) => cache.clear(),
                            Err(error) => {
                                tracing::warn!(%error, "session notifications lost: session cache off until they resume");
                                break;
                            }
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for session notifications: session cache off");
                }
            }
            cache.set_enabled(false);
            tokio::select! {
                () = tokio::time::sleep(RELISTEN_DELAY) => {}
                () = stop.cancelled() => break,
            }
        }
        cache.set_enabled(false);
    }

    /// A listening connection of its own (not one of the pool's, which `close` waits for).
    async fn listen(&self) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_with((*self.options).clone())
            .await?;
        let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
        listener.listen(SESSIONS_CHANNEL).await?;
        Ok(listener)
    }

    /// Applies one notification of the session trigger.
    fn apply(&self, cache: &SessionCache, payload: &str) {
        match payload.split_once(':') {
            Some((writer, _)) if writer == &*self.instance => {}
            Some((_, id)) => cache.evict(id),
            // TRUNCATE, or a payload this version does not know.
            None => cache.clear(),
        }
    }

    /// Runs `insert`, a multi-row `INSERT INTO messages` of the rows `ids` names, and returns their `seq`s in
    /// order (concurrent writers may interleave sequence values, so each row says its own).
    async fn inserted_seqs(
        mut insert: sqlx::QueryBuilder<Postgres>,
        tx: &mut sqlx::Transaction<'_, Postgres>,
        ids: &[String],
    ) -> StoreResult<Vec<i64>> {
        insert.push(" RETURNING id, seq");
        let rows: Vec<(String, i64)> = insert
            .build_query_as()
            .fetch_all(&mut **tx)
            .await
            .map_err(Self::missing_conversation)?;
        let seq_of: std::collections::HashMap<String, i64> = rows.into_iter().collect();
        ids.iter()
            .map(|id| {
                seq_of.get(id).copied().ok_or_else(|| {
                    StoreError::Corrupt(format!("inserted message {id} was not returned"))
                })
            })
            .collect()
    }

    /// Runs `update`, the set-based touch of the sessions `ids` names (an `UPDATE … FROM turns` without its
    /// `RETURNING`), and returns the rows it touched.
    async fn touched_sessions(
        mut update: sqlx::QueryBuilder<Postgres>,
        tx: &mut sqlx::Transaction<'_, Postgres>,
        _ids: &[&str],
    ) -> StoreResult<Vec<SessionRow>> {
        update.push(concat!(" RETURNING ", session_columns!()));
        Ok(update.build_query_as().fetch_all(&mut **tx).await?)
    }

    /// Up to `limit` messages of a conversation strictly between the seqs `bounds` (before, after), skipping
    /// `offset`, in `order` of seq.
    async fn message_page(
        pool: &PgPool,
        conversation_id: &str,
        (before, after): (i64, i64),
        limit: i64,
        offset: i64,
        order: Order,
    ) -> StoreResult<Vec<MessageRow>> {
        let sql = match order {
            Order::Asc => message_page_sql!("ASC"),
            Order::Desc => message_page_sql!("DESC"),
        };
        Ok(sqlx::query_as(sql)
            .bind(conversation_id.to_owned())
            .bind(before)
            .bind(after)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?)
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
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "chat domain".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0001_chat_domain.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "session change notifications".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0002_session_notify.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "sessions active index".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0003_sessions_active_index.sql")
                .into_sql_str(),
            false,
        ),
    ])
}

store_queries!(PgStore, Postgres);
