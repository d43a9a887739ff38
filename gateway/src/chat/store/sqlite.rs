//! The SQLite backend: the embedded default, one file in the data directory.
//!
//! Settings, and why:
//! - WAL journal: readers never block the writer, and a commit is one append to the WAL.
//! - `synchronous = NORMAL`: in WAL mode a commit is written to the WAL file (in the OS page cache) before
//!   `COMMIT` returns, and the WAL is fsynced at checkpoints. That makes every committed transaction survive the
//!   *process* being killed (SIGKILL, panic, OOM kill), which is the gateway's durability contract ("a message is
//!   committed before it is acknowledged", tested by killing the server mid-stream). Only a power loss or kernel
//!   crash can roll back the last few commits. `FULL` adds one fsync per commit: measured on the 2-core
//!   reference machine (one-row WAL transactions), NORMAL did about 22,000 commits/s and FULL about 170–250, a
//!   factor of ~100 that would serialise every chat turn behind the disk. So NORMAL; a deployment that needs
//!   power-loss durability uses the PostgreSQL backend (synchronous_commit = on).
//! - One writer connection: SQLite admits one writer at a time anyway, and writers that contend for the file
//!   lock wait in SQLite's busy handler, which sleeps in steps of up to 100 ms. Queueing them on a one-connection
//!   pool instead (a fair in-process queue) took 64 concurrent appenders on the loaded 2-core machine from ~1,700
//!   appends/s, p99 122 ms, worst 966 ms to ~2,700–3,100 appends/s, worst 60–170 ms. Reads use their own pool
//!   and run in parallel (WAL).
//! - `busy_timeout`: still set, for another process (a second gateway, the ops CLI) writing the same file.
//! - `BEGIN IMMEDIATE` for read-then-write transactions, so they take the write lock before reading and cannot
//!   fail to upgrade.
//! - foreign keys on (cascading deletes of a conversation's messages, ratings and attachments).
//! - Checkpoints off the write path: a task checkpoints the WAL into the database file from a read connection
//!   every [`CHECKPOINT_EVERY`] (PASSIVE: it never blocks the writer). Left to SQLite, the commit that crosses
//!   1,000 WAL pages copies them and fsyncs on the writer's own thread, and every chat turn queued behind that
//!   commit waits for it. The writer's automatic checkpoint stays on, at [`WRITER_AUTOCHECKPOINT_PAGES`], as the
//!   bound on the WAL when that task is not running.
//! - `temp_store = MEMORY`: a multi-row statement inside a transaction keeps a statement journal, which SQLite
//!   otherwise spills to a temporary file past 64 KiB.
//!
//! Other processes' writes and the session cache: the writer connection's `PRAGMA data_version` changes exactly
//! when ANOTHER connection (another process, or another store on the same file) has committed. A task reads it
//! every [`DATA_VERSION_POLL`] and clears the session cache when it changed, so a session changed by another
//! process is served stale for at most that long plus the wait for the writer connection (a group commit takes
//! milliseconds). The counter only compares within one connection, so the writer connection is kept for the
//! store's lifetime (no idle timeout or maximum lifetime), and each poll also counts itself in a TEMP table of
//! that connection: a count restarting at 1 means the pool had to open a new connection, and is taken as a
//! change.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{Sqlite, SqlitePool};
use tokio_util::sync::CancellationToken;

use super::cache::SessionCache;
use super::common::*;
use super::{MetadataColumn, StoreError, StoreResult, clamp_limit, ttl_micros};
use crate::chat::domain::*;

/// How long a writer waits for the write lock before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections of the read pool: reads run in parallel in WAL mode.
const MAX_READERS: u32 = 8;
/// How often the WAL is checkpointed into the database file, off the writer's thread.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// The writer's own automatic checkpoint, in WAL pages (4 KiB each): only reached when [`CHECKPOINT_EVERY`]'s
/// task is not running or cannot keep up.
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_384;
/// How often the writer connection's `PRAGMA data_version` is read: the bound on how long the session cache may
/// serve a row another process has changed.
pub const DATA_VERSION_POLL: Duration = Duration::from_millis(250);

/// Turns SQLite's memory statistics off for the process. With them on (SQLite's default), every allocation
/// SQLite makes takes one process-wide mutex, and the read pool's connections, each on a thread of its own, queue
/// on it: a history read of 20 messages (`scripts/bench-http --endpoints history`, two interleaved pairs) went
/// from 8,131 / 7,825 to 8,770 / 8,747 req/s without them. voxgate reads none of those statistics.
///
/// SQLite accepts this only before it initializes, that is before the process opens its first connection, and
/// `sqlite3_config` must not run alongside any other SQLite call: the binary calls it first thing in `main`.
/// Called later it changes nothing, and says so at debug level.
pub fn configure_process() {
    // SAFETY: `sqlite3_config` is sound to call at any time with a valid option and argument types; it is not
    // thread-safe against other SQLite calls, which the caller rules out (see above). SQLITE_CONFIG_MEMSTATUS
    // takes one `int`.
    #[allow(unsafe_code)]
    let code = unsafe {
        libsqlite3_sys::sqlite3_config(
            libsqlite3_sys::SQLITE_CONFIG_MEMSTATUS,
            std::ffi::c_int::from(0_u8),
        )
    };
    if code != libsqlite3_sys::SQLITE_OK {
        tracing::debug!(
            code,
            "SQLite memory statistics left on: it was already initialized"
        );
    }
}

/// The SQLite store. Cloning shares the pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads.
    pool: SqlitePool,
    /// Writes: one connection, so writers queue in-process rather than in SQLite's busy handler.
    writer: SqlitePool,
}

impl SqliteStore {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    /// Turns per group commit: one writer, so a larger batch only makes the commit rarer (64 concurrent HTTP
    /// connections never fill it).
    pub(super) const MAX_TURNS_PER_COMMIT: usize = 128;
    /// A trigger (migration 0002) maintains `message_count`/`updated_at` on insert.
    const COUNTS_BY_TRIGGER: bool = true;
    const CONVERSATION_FOR_UPDATE: &'static str = concat!(
        "SELECT ",
        conversation_columns!(),
        " FROM conversations WHERE id = $1"
    );

    /// Opens (creating if needed) the database file at `path`, creating its parent directory, and migrates it.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Invalid {
                field: "data_dir",
                reason: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        Self::with_options(SqliteConnectOptions::new().filename(path)).await
    }

    /// Opens a `sqlite:` URL (for example `sqlite:///var/lib/voxgate/chat.db`) and migrates it.
    pub async fn connect_url(url: &str) -> StoreResult<Self> {
        Self::with_options(SqliteConnectOptions::from_str(url)?).await
    }

    async fn with_options(options: SqliteConnectOptions) -> StoreResult<Self> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .pragma("temp_store", "MEMORY")
            .pragma(
                "wal_autocheckpoint",
                WRITER_AUTOCHECKPOINT_PAGES.to_string(),
            );
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // No ping before each use: it is a round trip to the connection's thread on every write (two of the
            // seven a chatbot session opening makes), for a file handle in this process, where a query on a
            // broken connection fails all the same.
            .test_before_acquire(false)
            // One connection for the store's lifetime: `PRAGMA data_version` only compares within a connection.
            .idle_timeout(None)
            .max_lifetime(None)
            // A writer that waits this long for its turn is reported rather than queued forever.
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        migrator().run(&writer).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_READERS)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(SqliteStore { pool, writer })
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Closes both pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    /// Clears `cache` whenever another connection has committed to the database, until `stop`. See the module
    /// documentation for the bound.
    pub(super) async fn watch_other_writers(
        self,
        cache: Arc<SessionCache>,
        stop: CancellationToken,
    ) {
        // One round trip on the writer connection: this connection's poll count and its data_version.
        const POLL: &str = "CREATE TEMP TABLE IF NOT EXISTS voxgate_watch (polls INTEGER NOT NULL); \
             INSERT INTO voxgate_watch SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM voxgate_watch); \
             UPDATE voxgate_watch SET polls = polls + 1 \
             RETURNING (SELECT data_version FROM pragma_data_version()), polls";
        let mut seen: Option<i64> = None;
        loop {
            let version = tokio::select! {
                polled = sqlx::query_as::<_, (i64, i64)>(POLL).fetch_one(&self.writer) => polled,
                () = stop.cancelled() => break,
            };
            match version {
                Ok((version, polls)) if seen.is_none() || polls == 1 => {
                    // A baseline (the first poll, or a new connection): rows cached from now on are compared
                    // against it; what was cached before cannot be.
                    seen = Some(version);
                    cache.set_enabled(true);
                }
                Ok((version, _)) => {
                    if seen != Some(version) {
                        seen = Some(version);
                        cache.clear();
                    }
                }
                Err(error) => {
                    if seen.take().is_some() {
                        tracing::warn!(%error, "cannot read PRAGMA data_version: session cache off until it works");
                    }
                    cache.set_enabled(false);
                }
            }
            tokio::select! {
                () = tokio::time::sleep(DATA_VERSION_POLL) => {}
                () = stop.cancelled() => break,
            }
        }
        cache.set_enabled(false);
    }

    /// Runs `insert`, a multi-row `INSERT INTO messages` of the rows `ids` names, and returns their `seq`s in
    /// order. `seq` is an AUTOINCREMENT rowid: the rows of one statement on the one writer get consecutive
    /// values ending at the last inserted rowid (the count trigger inserts nothing). Asking for them with
    /// `RETURNING` instead would send each row from the connection's thread on its own, one wake-up apiece.
    async fn inserted_seqs(
        mut insert: sqlx::QueryBuilder<Sqlite>,
        tx: &mut sqlx::Transaction<'_, Sqlite>,
        ids: &[String],
    ) -> StoreResult<Vec<i64>> {
        let done = insert
            .build()
            .execute(&mut **tx)
            .await
            .map_err(Self::missing_conversation)?;
        let count = ids.len() as i64;
        if done.rows_affected() != ids.len() as u64 {
            return Err(StoreError::Corrupt(format!(
                "inserted {} of {count} messages",
                done.rows_affected()
            )));
        }
        let last = done.last_insert_rowid();
        Ok((last - count + 1..=last).collect())
    }

    /// Runs `update`, the set-based touch of the sessions `ids` names (an `UPDATE … FROM turns` without its
    /// `RETURNING`), and returns the rows it touched, read back as ONE row: each row of a result is its own
    /// hand-off from sqlx's connection thread, which wakes this task once per row (with `RETURNING`, once per
    /// session of the batch). The writer holds the write lock, so the active sessions among `ids` are exactly
    /// the ones it touched.
    async fn touched_sessions(
        mut update: sqlx::QueryBuilder<Sqlite>,
        tx: &mut sqlx::Transaction<'_, Sqlite>,
        ids: &[&str],
    ) -> StoreResult<Vec<SessionRow>> {
        const TOUCHED: &str = "SELECT json_group_array(json_array(id, kind, scope, user_id, conversation_id, \
             created_at, last_activity, expires_at, closed_at, json(iif(active, 'true', 'false')), \
             interaction_count, json(metadata))) \
             FROM sessions WHERE id IN (SELECT value FROM json_each($1)) AND active = TRUE";
        update.build().execute(&mut **tx).await?;
        let touched: Json<Vec<SessionRow>> = sqlx::query_scalar(TOUCHED)
            .bind(Json(ids))
            .fetch_one(&mut **tx)
            .await?;
        Ok(touched.0)
    }

    /// Up to `limit` messages of a conversation strictly between the seqs `bounds` (before, after), skipping
    /// `offset`, in `order` of seq: read back as ONE row, like [`Self::touched_sessions`] and for the same
    /// reason (each row is a hand-off from the connection's thread). Pages of 20 messages, `scripts/bench-http
    /// --endpoints history`, two interleaved pairs: 6,957 / 7,336 req/s against 6,417 / 5,775 row by row.
    async fn message_page(
        pool: &SqlitePool,
        conversation_id: &str,
        (before, after): (i64, i64),
        limit: i64,
        offset: i64,
        order: Order,
    ) -> StoreResult<Vec<MessageRow>> {
        macro_rules! as_one_row {
            ($order:literal) => {
                concat!(
                    "SELECT json_group_array(json_array(seq, id, conversation_id, role, content, json(metadata), ",
                    "prompt_tokens, completion_tokens, created_at) ORDER BY seq ",
                    $order,
                    ") FROM (",
                    message_page_sql!($order),
                    ")"
                )
            };
        }
        let sql = match order {
            Order::Asc => as_one_row!("ASC"),
            Order::Desc => as_one_row!("DESC"),
        };
        let rows: Json<Vec<MessageRow>> = sqlx::query_scalar(sql)
            .bind(conversation_id.to_owned())
            .bind(before)
            .bind(after)
            .bind(limit)
            .bind(offset)
            .fetch_one(pool)
            .await?;
        Ok(rows.0)
    }

    /// Checkpoints the WAL from a read connection every [`CHECKPOINT_EVERY`] until `stop` (module
    /// documentation). A failure is logged once per run of failures; the writer's automatic checkpoint is the
    /// backstop meanwhile.
    pub(super) async fn checkpoint_wal(self, stop: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(CHECKPOINT_EVERY) => {}
                () = stop.cancelled() => break,
            }
            match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&self.pool)
                .await
            {
                Ok(_) => failing = false,
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "WAL checkpoint failed: left to the writer until it works");
                }
                Err(_) => {}
            }
        }
    }

    /// The read pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn push_metadata_eq(qb: &mut sqlx::QueryBuilder<Sqlite>, key: &str, value: &str) {
        // json_extract returns numbers as numbers; compare their text form like PostgreSQL's `->>` does.
        let path = format!("$.\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""));
        qb.push("CAST(json_extract(metadata, ")
            .push_bind(path)
            .push(") AS TEXT) = ")
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
            include_str!("../../../migrations/sqlite/0001_chat_domain.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "message count trigger".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0002_message_count_trigger.sql")
                .into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "sessions active index".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0003_sessions_active_index.sql")
                .into_sql_str(),
            false,
        ),
    ])
}

store_queries!(SqliteStore, Sqlite);
