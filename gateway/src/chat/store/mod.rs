//! Storage of the chat domain: one [`Store`] with two backends that pass one test suite.
//!
//! - [`SqliteStore`]: the embedded default, a file `voxgate.db` in the data directory (WAL mode).
//! - [`PgStore`]: PostgreSQL, for several gateway instances that share state.
//!
//! Both run their embedded migrations on connect. They share their SQL text: it is written once in
//! [`common`] (a macro expanded for each backend) in the dialect both accept (`$n` parameters, `RETURNING`,
//! `ON CONFLICT`), with timestamps as integer microseconds. The few statements that differ live in each backend.
//!
//! # Durability contract
//! Every write method returns only after its transaction has committed: a message returned by
//! [`Store::append_message`] survives the process being killed right after.
//!
//! [`Store::record_turn`] (every IntentLayer chat POST) goes through a group commit: see [`turns`].
//!
//! # Session read cache
//! [`Store::get_session`] is served from a bounded in-memory cache that every session-mutating method keeps
//! coherent (see [`cache`] for how, including reads that race writes). Other processes writing the same database
//! are seen within a bound: on PostgreSQL through a trigger's `NOTIFY` (as soon as it arrives; everything is
//! forgotten when the listening connection is lost), on SQLite by polling `PRAGMA data_version` (within about
//! [`sqlite::DATA_VERSION_POLL`], 250 ms). Writes made through [`Store::backend`] directly bypass the cache.
//!
//! `Store` wraps an enum of the backends rather than a trait object: both are known at compile time, dispatch
//! is a match, and the methods stay plain `async fn`s.

mod cache;
mod common;
pub mod postgres;
pub mod sqlite;
mod turns;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use cache::SessionCache;
pub use turns::TurnBatches;
use turns::{TurnBatchCounters, TurnJob, TurnQueue};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use super::domain::*;

/// Errors of store operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Embedded migrations could not be applied.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A referenced object does not exist (the conversation of a new message, for example).
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// A pagination cursor does not name an item of the listing.
    #[error("invalid cursor: {cursor}")]
    InvalidCursor { cursor: String },
    /// The caller passed a value the store cannot keep (for example a role not in [`Role`]).
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A stored value could not be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The transaction a group of chat turns shared failed; every turn of it gets this (nothing of it is stored).
    #[error("database error in a group commit: {0}")]
    GroupCommit(Arc<sqlx::Error>),
}

impl StoreError {
    /// Whether the error is the database being unavailable or failing, as opposed to a caller mistake.
    pub fn is_backend_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Database(_)
                | StoreError::Migrate(_)
                | StoreError::Corrupt(_)
                | StoreError::GroupCommit(_)
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The chat store: SQLite or PostgreSQL behind one set of methods. Cloning shares the connection pool, the
/// session cache and the turn writer.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// Counts operations that failed in the database (`voxgate_store_errors_total`), when attached.
    errors: Option<prometheus::IntCounter>,
    shared: Arc<Shared>,
}

/// What the clones of one store share besides the pools.
#[derive(Debug)]
struct Shared {
    cache: Arc<SessionCache>,
    /// The group-commit writers of [`Store::record_turn`], started by the first turn (they need a runtime).
    turns: OnceLock<TurnQueue>,
    /// How many writers to start; 0 for the backend's default ([`Store::with_turn_writers`]).
    turn_writers: AtomicUsize,
    /// How the turn writers' batches were recorded ([`Store::turn_batches`]).
    turn_batches: Arc<TurnBatchCounters>,
    /// Set once the backend's background tasks have been spawned (by the first session read or turn).
    background: OnceLock<()>,
    /// Stops the background tasks: cancelled by [`Store::close`], and when the last clone is dropped.
    stop: CancellationToken,
    /// The background tasks, awaited by [`Store::close`].
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn new() -> Arc<Shared> {
        Arc::new(Shared {
            cache: Arc::new(SessionCache::new(cache::DEFAULT_CAPACITY)),
            turns: OnceLock::new(),
            turn_writers: AtomicUsize::new(0),
            turn_batches: Arc::default(),
            background: OnceLock::new(),
            stop: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        })
    }

    fn keep(&self, task: JoinHandle<()>) {
        self.tasks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(task);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The two backends.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Dispatches a method call to the backend and counts database failures.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {{
        let result = match &$self.backend {
            Backend::Sqlite(s) => s.$method($($arg),*).await,
            Backend::Postgres(s) => s.$method($($arg),*).await,
        };
        if let Err(e) = &result {
            $self.record_error(e);
        }
        result
    }};
}

impl From<SqliteStore> for Store {
    fn from(store: SqliteStore) -> Self {
        Store {
            backend: Backend::Sqlite(store),
            errors: None,
            shared: Shared::new(),
        }
    }
}

impl From<PgStore> for Store {
    fn from(store: PgStore) -> Self {
        Store {
            backend: Backend::Postgres(store),
            errors: None,
            shared: Shared::new(),
        }
    }
}

impl Store {
    /// Opens the store named by `url` (`postgres://…`, `postgresql://…` or `sqlite:…`) and runs migrations.
    pub async fn connect(url: &str) -> StoreResult<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(PgStore::connect(url).await?.into())
        } else if url.starts_with("sqlite:") {
            Ok(SqliteStore::connect_url(url).await?.into())
        } else {
            Err(StoreError::Invalid {
                field: "database_url",
                reason: format!(
                    "unsupported scheme {:?}: expected postgres:// or sqlite:",
                    url.split(':').next().unwrap_or_default()
                ),
            })
        }
    }

    /// Opens (creating) the SQLite database file at `path` and runs migrations.
    pub async fn open_sqlite(path: &std::path::Path) -> StoreResult<Store> {
        Ok(SqliteStore::open(path).await?.into())
    }

    /// Counts database failures of every later operation in `counter` (`voxgate_store_errors_total`).
    pub fn with_error_counter(mut self, counter: prometheus::IntCounter) -> Self {
        self.errors = Some(counter);
        self
    }

    /// Records chat turns with `writers` group-commit writer tasks instead of the backend's default (SQLite: 1,
    /// its only choice; PostgreSQL: [`PgStore::TURN_WRITERS`]). Fewer writers make larger batches; one writer
    /// puts every concurrent turn in the same transaction. Takes effect only before the first turn.
    pub fn with_turn_writers(self, writers: usize) -> Self {
        self.shared
            .turn_writers
            .store(writers.max(1), Ordering::Relaxed);
        self
    }

    /// How this store's group commits of chat turns ([`Store::record_turn`]) were recorded so far.
    pub fn turn_batches(&self) -> TurnBatches {
        self.shared.turn_batches.get()
    }

    fn record_error(&self, error: &StoreError) {
        if error.is_backend_failure() {
            if let Some(counter) = &self.errors {
                counter.inc();
            }
            tracing::warn!(backend = self.backend_name(), error = %error, "store operation failed");
        }
    }

    /// The backend, for backend-specific needs (tests, tools). Session writes made through it directly bypass the
    /// session cache of this store (it sees them as it sees another process's).
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// "sqlite" or "postgres".
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> StoreResult<()> {
        dispatch!(self.ping())
    }

    /// Stops the background tasks (the turn writer first records the turns already queued; later turns fail),
    /// then closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.shared.stop.cancel();
        let tasks = std::mem::take(
            &mut *self
                .shared
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for task in tasks {
            if let Err(error) = task.await {
                tracing::error!(%error, "a store task ended abnormally");
            }
        }
        match &self.backend {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(s) => s.close().await,
        }
    }

    // ---- users ----

    /// Creates the user or refreshes `last_seen_at`; `display_name`/`metadata` replace the stored ones when given.
    pub async fn upsert_user(
        &self,
        id: &str,
        display_name: Option<&str>,
        metadata: Option<&Value>,
    ) -> StoreResult<User> {
        dispatch!(self.upsert_user(id, display_name, metadata))
    }

    pub async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        dispatch!(self.get_user(id))
    }

    // ---- conversations ----

    pub async fn create_conversation(&self, new: &NewConversation) -> StoreResult<Conversation> {
        dispatch!(self.create_conversation(new))
    }

    pub async fn get_conversation(&self, id: &str) -> StoreResult<Option<Conversation>> {
        dispatch!(self.get_conversation(id))
    }

    /// One user's conversations, newest first, filtered and paged as `query` says.
    pub async fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> StoreResult<ConversationPage> {
        dispatch!(self.list_conversations(query))
    }

    /// Applies `update`; `None` if the conversation does not exist.
    pub async fn update_conversation(
        &self,
        id: &str,
        update: &ConversationUpdate,
    ) -> StoreResult<Option<Conversation>> {
        dispatch!(self.update_conversation(id, update))
    }

    /// Deletes the conversation with its messages, ratings and attachments; sessions keep existing without it.
    /// Returns whether it existed.
    pub async fn delete_conversation(&self, id: &str) -> StoreResult<bool> {
        let (store, id) = (self.clone(), id.to_owned());
        self.session_write(async move {
            let deleted = dispatch!(store.delete_conversation(&id));
            if !matches!(deleted, Ok(false)) {
                // Its sessions lost their `conversation_id` (ON DELETE SET NULL); which ones is not known here.
                store.shared.cache.clear();
            }
            deleted
        })
        .await
    }

    // ---- messages ----

    /// Appends a message and bumps the conversation's `updated_at` and `message_count`, in one transaction that
    /// has committed when this returns. `NotFound` if the conversation does not exist.
    pub async fn append_message(
        &self,
        conversation_id: &str,
        new: &NewMessage,
    ) -> StoreResult<Message> {
        dispatch!(self.append_message(conversation_id, new))
    }

    /// Appends several messages in order, in one transaction (one commit: a question and its answer recorded
    /// together). All or none are stored.
    pub async fn append_messages(
        &self,
        conversation_id: &str,
        new: &[NewMessage],
    ) -> StoreResult<Vec<Message>> {
        dispatch!(self.append_messages(conversation_id, new))
    }

    /// Records one turn on an active session atomically: touches the session like [`Store::touch_session`],
    /// then appends the messages `messages(&touched_session)` returns (it sees the new `interaction_count`) to the
    /// session's conversation, in order. Returns the touched session and the stored messages; `None` (and nothing
    /// written) if the session does not exist or is no longer active; `NotFound { what: "conversation" }` (nothing
    /// written) if it has no conversation.
    ///
    /// Concurrent turns share one transaction and one commit (group commit, see [`turns`]); this returns once
    /// that commit has. `messages` runs on the store's writer task, inside that transaction: keep it quick.
    pub async fn record_turn<F>(
        &self,
        session_id: &str,
        ttl: Option<Duration>,
        messages: F,
    ) -> StoreResult<Option<(Session, Vec<Message>)>>
    where
        F: FnOnce(&Session) -> Vec<NewMessage> + Send + 'static,
    {
        if self.shared.stop.is_cancelled() {
            return Err(StoreError::Database(sqlx::Error::PoolClosed));
        }
        self.start_background();
        let queue = self.shared.turns.get_or_init(|| {
            let writers = match (
                &self.backend,
                self.shared.turn_writers.load(Ordering::Relaxed),
            ) {
                // One writer connection: more writers would only queue for it.
                (Backend::Sqlite(_), _) => 1,
                (backend, 0) => backend.default_turn_writers(),
                (_, writers) => writers,
            };
            let (queue, tasks) = TurnQueue::start(
                &self.backend,
                writers,
                &self.shared.cache,
                &self.shared.turn_batches,
                &self.shared.stop,
            );
            tasks.into_iter().for_each(|task| self.shared.keep(task));
            queue
        });
        let result = queue
            .submit(TurnJob::new(session_id.to_owned(), ttl, Box::new(messages)))
            .await;
        if let Err(e) = &result {
            self.record_error(e);
        }
        result
    }

    pub async fn get_message(&self, id: &str) -> StoreResult<Option<Message>> {
        dispatch!(self.get_message(id))
    }

    /// A page of a conversation's messages. `InvalidCursor` if `before`/`after` is not a message of it.
    pub async fn list_messages(
        &self,
        conversation_id: &str,
        query: &MessageQuery,
    ) -> StoreResult<Page<Message>> {
        dispatch!(self.list_messages(conversation_id, query))
    }

    /// The last `limit` messages in chronological order (the prompt history of a reply).
    pub async fn recent_messages(
        &self,
        conversation_id: &str,
        limit: u32,
    ) -> StoreResult<Vec<Message>> {
        let page = self
            .list_messages(
                conversation_id,
                &MessageQuery {
                    limit,
                    order: Order::Desc,
                    ..Default::default()
                },
            )
            .await?;
        let mut items = page.items;
        items.reverse();
        Ok(items)
    }

    pub async fn count_messages(&self, conversation_id: &str) -> StoreResult<i64> {
        dispatch!(self.count_messages(conversation_id))
    }

    // ---- sessions ----

    /// Creates an active session (closing the user's others of the same kind and scope first when asked, in the
    /// same transaction).
    pub async fn create_session(&self, new: &NewSession) -> StoreResult<Session> {
        let (store, new) = (self.clone(), new.clone());
        self.session_write(async move {
            match dispatch!(store.create_session(&new)) {
                Ok((session, closed)) => {
                    for id in &closed {
                        store.shared.cache.evict(id);
                    }
                    Ok(session)
                }
                Err(e) => {
                    if new.close_others_in_scope {
                        // Whether (and which) other sessions were closed is not known.
                        store.shared.cache.clear();
                    }
                    Err(e)
                }
            }
        })
        .await
    }

    /// The session, from the session cache when it holds it.
    pub async fn get_session(&self, id: &str) -> StoreResult<Option<Session>> {
        self.start_background();
        let cache = &self.shared.cache;
        if let Some(session) = cache.get(id) {
            return Ok(Some(session));
        }
        let ticket = cache.ticket(id);
        let session = dispatch!(self.get_session(id))?;
        if let Some(session) = &session {
            cache.fill(ticket, session);
        }
        Ok(session)
    }

    /// Runs a write that changes sessions, and its session cache update, to the end even if the caller stops
    /// waiting: a query whose future is dropped may still commit (the database connection works on), and the
    /// cache must then hear of it, after the commit.
    async fn session_write<T: Send + 'static>(
        &self,
        write: impl Future<Output = StoreResult<T>> + Send + 'static,
    ) -> StoreResult<T> {
        tokio::spawn(write).await.map_err(|error| {
            tracing::error!(%error, "a session write ended abnormally");
            self.shared.cache.clear();
            StoreError::Database(sqlx::Error::WorkerCrashed)
        })?
    }

    /// Starts the backend's background tasks, once (they need a runtime): the watcher of other processes'
    /// session writes (the cache serves reads only while it runs) and, on SQLite, the WAL checkpointer.
    fn start_background(&self) {
        self.shared.background.get_or_init(|| {
            if self.shared.stop.is_cancelled() {
                return;
            }
            let cache = self.shared.cache.clone();
            let stop = self.shared.stop.clone();
            match &self.backend {
                Backend::Sqlite(s) => {
                    self.shared
                        .keep(tokio::spawn(s.clone().checkpoint_wal(stop.clone())));
                    self.shared
                        .keep(tokio::spawn(s.clone().watch_other_writers(cache, stop)));
                }
                Backend::Postgres(s) => {
                    self.shared
                        .keep(tokio::spawn(s.clone().watch_other_writers(cache, stop)));
                }
            }
        });
    }

    /// Whether session reads are being served from the cache (the watcher of other writers runs).
    pub fn session_cache_enabled(&self) -> bool {
        self.shared.cache.is_enabled()
    }

    /// Records one interaction on an active session: `last_activity = now`, `interaction_count += 1`, and when
    /// `ttl` is given `expires_at = now + ttl`. `None` if the session does not exist or is no longer active.
    pub async fn touch_session(
        &self,
        id: &str,
        ttl: Option<Duration>,
    ) -> StoreResult<Option<Session>> {
        let (store, id) = (self.clone(), id.to_owned());
        self.session_write(async move {
            let ticket = store.shared.cache.ticket(&id);
            let touched = dispatch!(store.touch_session(&id, ttl));
            let row = touched.as_ref().ok().and_then(Option::as_ref);
            store.shared.cache.written(&id, ticket, row);
            touched
        })
        .await
    }

    /// Replaces a session's metadata; `None` if it does not exist.
    pub async fn set_session_metadata(
        &self,
        id: &str,
        metadata: &Value,
    ) -> StoreResult<Option<Session>> {
        let (store, id, metadata) = (self.clone(), id.to_owned(), metadata.clone());
        self.session_write(async move {
            let ticket = store.shared.cache.ticket(&id);
            let updated = dispatch!(store.set_session_metadata(&id, &metadata));
            let row = updated.as_ref().ok().and_then(Option::as_ref);
            store.shared.cache.written(&id, ticket, row);
            updated
        })
        .await
    }

    /// Marks the session inactive. Returns whether it was active.
    pub async fn close_session(&self, id: &str) -> StoreResult<bool> {
        let (store, id) = (self.clone(), id.to_owned());
        self.session_write(async move {
            let closed = dispatch!(store.close_session(&id));
            store.shared.cache.evict(&id);
            closed
        })
        .await
    }

    /// A user's sessions, newest first, optionally of one kind, optionally only the active ones.
    pub async fn list_sessions(
        &self,
        user_id: &str,
        kind: Option<&str>,
        active_only: bool,
    ) -> StoreResult<Vec<Session>> {
        dispatch!(self.list_sessions(user_id, kind, active_only))
    }

    /// Closes the user's oldest active sessions of `kind` so that at most `max` remain; returns the closed ids.
    pub async fn close_oldest_over_limit(
        &self,
        user_id: &str,
        kind: &str,
        max: u32,
    ) -> StoreResult<Vec<String>> {
        let (store, user_id, kind) = (self.clone(), user_id.to_owned(), kind.to_owned());
        self.session_write(async move {
            let closed = dispatch!(store.close_oldest_over_limit(&user_id, &kind, max));
            match &closed {
                Ok(ids) => ids.iter().for_each(|id| store.shared.cache.evict(id)),
                Err(_) => store.shared.cache.clear(),
            }
            closed
        })
        .await
    }

    /// Closes every active session whose `expires_at` is at or before `now`; returns them (now inactive).
    pub async fn expire_idle_sessions(&self, now: DateTime<Utc>) -> StoreResult<Vec<Session>> {
        let store = self.clone();
        self.session_write(async move {
            let expired = dispatch!(store.expire_idle_sessions(now));
            match &expired {
                Ok(sessions) => sessions
                    .iter()
                    .for_each(|s| store.shared.cache.evict(&s.id)),
                Err(_) => store.shared.cache.clear(),
            }
            expired
        })
        .await
    }

    /// Active sessions of every user and kind (for `/health`).
    pub async fn count_active_sessions(&self) -> StoreResult<i64> {
        dispatch!(self.count_active_sessions())
    }

    /// Deletes the session row. Returns whether it existed.
    pub async fn delete_session(&self, id: &str) -> StoreResult<bool> {
        let (store, id) = (self.clone(), id.to_owned());
        self.session_write(async move {
            let deleted = dispatch!(store.delete_session(&id));
            store.shared.cache.evict(&id);
            deleted
        })
        .await
    }

    // ---- documents ----

    /// Stores the document and its chunks (see [`crate::chat::model::retrieval::chunk_text`]) in one transaction.
    pub async fn add_document(&self, new: &NewDocument) -> StoreResult<Document> {
        dispatch!(self.add_document(new))
    }

    pub async fn get_document(&self, id: &str) -> StoreResult<Option<Document>> {
        dispatch!(self.get_document(id))
    }

    /// Documents visible through `filter`, oldest first.
    pub async fn list_documents(&self, filter: &DocumentFilter) -> StoreResult<Vec<Document>> {
        dispatch!(self.list_documents(filter))
    }

    pub async fn delete_document(&self, id: &str) -> StoreResult<bool> {
        dispatch!(self.delete_document(id))
    }

    /// Every chunk visible through `filter`, in document then chunk order: the candidates of a retrieval.
    pub async fn document_chunks(
        &self,
        filter: &DocumentFilter,
    ) -> StoreResult<Vec<DocumentChunk>> {
        dispatch!(self.document_chunks(filter))
    }

    /// A cheap value that changes whenever the documents visible through `filter` change (count, newest
    /// creation time, total chunks), so a cached retrieval index can be reused until then.
    pub async fn documents_fingerprint(
        &self,
        filter: &DocumentFilter,
    ) -> StoreResult<(i64, i64, i64)> {
        dispatch!(self.documents_fingerprint(filter))
    }

    // ---- ratings ----

    /// Creates or replaces `user_id`'s rating of the message. `NotFound` if the message does not exist.
    pub async fn upsert_rating(
        &self,
        message_id: &str,
        user_id: &str,
        score: i32,
        comment: Option<&str>,
    ) -> StoreResult<Rating> {
        dispatch!(self.upsert_rating(message_id, user_id, score, comment))
    }

    pub async fn get_rating(&self, message_id: &str, user_id: &str) -> StoreResult<Option<Rating>> {
        dispatch!(self.get_rating(message_id, user_id))
    }

    /// All ratings of a message, oldest first.
    pub async fn list_ratings(&self, message_id: &str) -> StoreResult<Vec<Rating>> {
        dispatch!(self.list_ratings(message_id))
    }

    // ---- attachments ----

    /// `NotFound` if the conversation (or the message, when given) does not exist.
    pub async fn add_attachment(&self, new: &NewAttachment) -> StoreResult<Attachment> {
        dispatch!(self.add_attachment(new))
    }

    pub async fn get_attachment(&self, id: &str) -> StoreResult<Option<Attachment>> {
        dispatch!(self.get_attachment(id))
    }

    /// The attachment with its bytes.
    pub async fn get_attachment_data(
        &self,
        id: &str,
    ) -> StoreResult<Option<(Attachment, Vec<u8>)>> {
        dispatch!(self.get_attachment_data(id))
    }

    pub async fn list_attachments(&self, message_id: &str) -> StoreResult<Vec<Attachment>> {
        dispatch!(self.list_attachments(message_id))
    }

    pub async fn delete_attachment(&self, id: &str) -> StoreResult<bool> {
        dispatch!(self.delete_attachment(id))
    }

    // ---- records ----

    /// Stores a small JSON value under (namespace, key), replacing any previous one.
    pub async fn put_record(&self, namespace: &str, key: &str, value: &Value) -> StoreResult<()> {
        dispatch!(self.put_record(namespace, key, value))
    }

    pub async fn get_record(&self, namespace: &str, key: &str) -> StoreResult<Option<Value>> {
        dispatch!(self.get_record(namespace, key))
    }

    /// Every (key, value) of a namespace, by key.
    pub async fn list_records(&self, namespace: &str) -> StoreResult<Vec<(String, Value)>> {
        dispatch!(self.list_records(namespace))
    }

    pub async fn delete_record(&self, namespace: &str, key: &str) -> StoreResult<bool> {
        dispatch!(self.delete_record(namespace, key))
    }
}

impl Backend {
    /// Group-commit writer tasks unless [`Store::with_turn_writers`] says otherwise (see each backend).
    fn default_turn_writers(&self) -> usize {
        match self {
            Backend::Sqlite(_) => 1,
            Backend::Postgres(_) => PgStore::TURN_WRITERS,
        }
    }

    /// Turns one group commit takes at most (see each backend).
    fn max_turns_per_commit(&self) -> usize {
        match self {
            Backend::Sqlite(_) => SqliteStore::MAX_TURNS_PER_COMMIT,
            Backend::Postgres(_) => PgStore::MAX_TURNS_PER_COMMIT,
        }
    }
}

/// Clamps a page size to the supported range.
pub(crate) fn clamp_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, 1000))
}

/// Empty JSON object when the caller gave `null`, so stored metadata is always an object.
pub(crate) fn object_or_empty(value: Value) -> Value {
    if value.is_null() {
        Value::Object(Default::default())
    } else {
        value
    }
}

/// A JSON metadata column's value, serialized straight from the caller's: `null` is stored as `{}`, as
/// [`object_or_empty`] makes it, without copying the value first.
pub(crate) struct MetadataColumn<'a>(pub(crate) &'a Value);

impl serde::Serialize for MetadataColumn<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.is_null() {
            serde::ser::SerializeMap::end(serializer.serialize_map(Some(0))?)
        } else {
            self.0.serialize(serializer)
        }
    }
}

pub(crate) fn ttl_micros(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX / 2)
}
