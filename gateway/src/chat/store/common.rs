//! The SQL shared by both backends, written once and expanded for each by [`store_queries!`].
//!
//! The statements use the dialect SQLite and PostgreSQL both accept: `$n` parameters, `RETURNING`,
//! `ON CONFLICT … DO UPDATE`, `TRUE`/`FALSE`. Each backend provides the rest as associated items:
//! - `BEGIN_WRITE`: the statement opening a write transaction (SQLite takes the write lock up front with
//!   `BEGIN IMMEDIATE`, so a transaction that reads first cannot fail to upgrade later);
//! - `CONVERSATION_FOR_UPDATE`: reads a conversation row inside that transaction (PostgreSQL adds `FOR UPDATE`);
//! - `push_metadata_eq(builder, key, value)`: a condition "metadata's top-level `key` as text equals `value`";
//! - `writer()`: the pool write statements run on (SQLite keeps a one-connection writer pool, see there);
//! - `COUNTS_BY_TRIGGER`: whether a database trigger maintains a conversation's `message_count`/`updated_at`;
//! - `inserted_seqs` and `touched_sessions`: how a multi-row write's results come back, and `message_page`: how a
//!   page of messages does (each backend reads them the way that costs it least).
//!
//! A `LIMIT` or `OFFSET` parameter is written `CAST($n AS BIGINT)`, never bare: SQLite plans a bare parameter
//! there as the integer bound to it, so binding it again (sqlx binds every execution anew) makes the next step
//! prepare the statement again. That was 16% of a history read's CPU; the cast is an expression SQLite leaves
//! to run time (the `history` read of `scripts/bench-http`: 5.0k → 6.6k req/s).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use super::StoreError;
use crate::chat::domain::*;

/// Column lists, kept as macros so `concat!` can build whole statements as `&'static str`.
macro_rules! user_columns {
    () => {
        "id, display_name, metadata, created_at, last_seen_at"
    };
}
macro_rules! conversation_columns {
    () => {
        "id, owner, kind, scope, title, metadata, message_count, created_at, updated_at"
    };
}
macro_rules! message_columns {
    () => {
        "seq, id, conversation_id, role, content, metadata, prompt_tokens, completion_tokens, created_at"
    };
}
macro_rules! session_columns {
    () => {
        "id, kind, scope, user_id, conversation_id, created_at, last_activity, expires_at, closed_at, active, \
         interaction_count, metadata"
    };
}
macro_rules! document_columns {
    () => {
        "id, owner, scope, title, mime, size_bytes, chunk_count, metadata, created_at"
    };
}
macro_rules! rating_columns {
    () => {
        "id, message_id, user_id, score, comment, created_at, updated_at"
    };
}
macro_rules! attachment_columns {
    () => {
        "id, conversation_id, message_id, owner, filename, mime, size_bytes, created_at"
    };
}
/// Records one interaction on an active session ($1 id, $2 now, $3 new expiry or NULL) and returns it.
macro_rules! touch_session_sql {
    () => {
        concat!(
            "UPDATE sessions SET last_activity = CASE WHEN last_activity > $2 THEN last_activity ELSE $2 END, ",
            "interaction_count = interaction_count + 1, expires_at = COALESCE($3, expires_at) ",
            "WHERE id = $1 AND active = TRUE RETURNING ",
            session_columns!()
        )
    };
}
/// A page of a conversation's messages ($1 conversation, strictly between the seqs $2 before and $3 after, at most
/// $4 of them after skipping $5) in `$order` ("ASC" or "DESC") of seq: what each backend's `message_page` runs.
macro_rules! message_page_sql {
    ($order:literal) => {
        concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages WHERE conversation_id = $1 AND seq < $2 AND seq > $3 ORDER BY seq ",
            $order,
            " LIMIT CAST($4 AS BIGINT) OFFSET CAST($5 AS BIGINT)"
        )
    };
}
pub(super) use {
    attachment_columns, conversation_columns, document_columns, message_columns, message_page_sql,
    rating_columns, session_columns, touch_session_sql, user_columns,
};

#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    id: String,
    display_name: Option<String>,
    metadata: Json<Value>,
    created_at: i64,
    last_seen_at: i64,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User {
            id: r.id,
            display_name: r.display_name,
            metadata: r.metadata.0,
            created_at: from_micros(r.created_at),
            last_seen_at: from_micros(r.last_seen_at),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ConversationRow {
    id: String,
    owner: String,
    kind: String,
    scope: String,
    title: String,
    metadata: Json<Value>,
    message_count: i64,
    created_at: i64,
    updated_at: i64,
}

impl From<ConversationRow> for Conversation {
    fn from(r: ConversationRow) -> Self {
        Conversation {
            id: r.id,
            owner: r.owner,
            kind: r.kind,
            scope: r.scope,
            title: r.title,
            metadata: r.metadata.0,
            message_count: r.message_count,
            created_at: from_micros(r.created_at),
            updated_at: from_micros(r.updated_at),
        }
    }
}

/// Also deserializable from a JSON array of the columns in `message_columns!()` order (SQLite's `message_page`).
#[derive(sqlx::FromRow, serde::Deserialize)]
pub(super) struct MessageRow {
    seq: i64,
    id: String,
    conversation_id: String,
    role: String,
    content: String,
    metadata: Json<Value>,
    prompt_tokens: i64,
    completion_tokens: i64,
    created_at: i64,
}

impl TryFrom<MessageRow> for Message {
    type Error = StoreError;
    fn try_from(r: MessageRow) -> Result<Self, StoreError> {
        let role = Role::parse(&r.role)
            .ok_or_else(|| StoreError::Corrupt(format!("message {}: role {:?}", r.id, r.role)))?;
        Ok(Message {
            id: r.id,
            conversation_id: r.conversation_id,
            seq: r.seq,
            role,
            content: r.content,
            metadata: r.metadata.0,
            prompt_tokens: u32::try_from(r.prompt_tokens).unwrap_or(0),
            completion_tokens: u32::try_from(r.completion_tokens).unwrap_or(0),
            created_at: from_micros(r.created_at),
        })
    }
}

pub(super) fn messages(rows: Vec<MessageRow>) -> Result<Vec<Message>, StoreError> {
    rows.into_iter().map(Message::try_from).collect()
}

/// Also deserializable from a JSON array of the columns in `session_columns!()` order (SQLite's
/// `touched_sessions`), with `active` as a JSON boolean.
#[derive(sqlx::FromRow, serde::Deserialize)]
pub(super) struct SessionRow {
    id: String,
    kind: String,
    scope: String,
    user_id: String,
    conversation_id: Option<String>,
    created_at: i64,
    last_activity: i64,
    expires_at: Option<i64>,
    closed_at: Option<i64>,
    active: bool,
    interaction_count: i64,
    metadata: Json<Value>,
}

impl From<SessionRow> for Session {
    fn from(r: SessionRow) -> Self {
        Session {
            id: r.id,
            kind: r.kind,
            scope: r.scope,
            user_id: r.user_id,
            conversation_id: r.conversation_id,
            created_at: from_micros(r.created_at),
            last_activity: from_micros(r.last_activity),
            expires_at: r.expires_at.map(from_micros),
            closed_at: r.closed_at.map(from_micros),
            active: r.active,
            interaction_count: r.interaction_count,
            metadata: r.metadata.0,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct DocumentRow {
    id: String,
    owner: String,
    scope: String,
    title: String,
    mime: String,
    size_bytes: i64,
    chunk_count: i64,
    metadata: Json<Value>,
    created_at: i64,
}

impl From<DocumentRow> for Document {
    fn from(r: DocumentRow) -> Self {
        Document {
            id: r.id,
            owner: r.owner,
            scope: r.scope,
            title: r.title,
            mime: r.mime,
            size_bytes: r.size_bytes,
            chunk_count: r.chunk_count,
            metadata: r.metadata.0,
            created_at: from_micros(r.created_at),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct ChunkRow {
    document_id: String,
    title: String,
    idx: i64,
    text: String,
}

impl From<ChunkRow> for DocumentChunk {
    fn from(r: ChunkRow) -> Self {
        DocumentChunk {
            document_id: r.document_id,
            document_title: r.title,
            index: r.idx,
            text: r.text,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RatingRow {
    id: String,
    message_id: String,
    user_id: String,
    score: i32,
    comment: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<RatingRow> for Rating {
    fn from(r: RatingRow) -> Self {
        Rating {
            id: r.id,
            message_id: r.message_id,
            user_id: r.user_id,
            score: r.score,
            comment: r.comment,
            created_at: from_micros(r.created_at),
            updated_at: from_micros(r.updated_at),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct AttachmentRow {
    id: String,
    conversation_id: String,
    message_id: Option<String>,
    owner: String,
    filename: String,
    mime: String,
    size_bytes: i64,
    created_at: i64,
}

impl From<AttachmentRow> for Attachment {
    fn from(r: AttachmentRow) -> Self {
        Attachment {
            id: r.id,
            conversation_id: r.conversation_id,
            message_id: r.message_id,
            owner: r.owner,
            filename: r.filename,
            mime: r.mime,
            size_bytes: r.size_bytes,
            created_at: from_micros(r.created_at),
        }
    }
}

/// Applies a metadata update to the stored object.
pub(super) fn apply_metadata_update(current: Value, update: &MetadataUpdate) -> Value {
    match update {
        MetadataUpdate::Replace(value) => super::object_or_empty(value.clone()),
        MetadataUpdate::Merge(patch) => {
            let mut map = match current {
                Value::Object(map) => map,
                _ => serde_json::Map::new(),
            };
            for (key, value) in patch {
                if value.is_null() {
                    map.remove(key);
                } else {
                    map.insert(key.clone(), value.clone());
                }
            }
            Value::Object(map)
        }
    }
}

/// The stored form of `new`, inserted into `conversation_id` as `(id, seq)` at `created_at`.
pub(super) fn stored_message(
    conversation_id: &str,
    new: NewMessage,
    (id, seq): (String, i64),
    created_at: DateTime<Utc>,
) -> Message {
    Message {
        id,
        conversation_id: conversation_id.to_owned(),
        seq,
        role: new.role,
        content: new.content,
        metadata: super::object_or_empty(new.metadata),
        prompt_tokens: new.prompt_tokens,
        completion_tokens: new.completion_tokens,
        created_at,
    }
}

/// Whether a database error is a foreign-key violation (the referenced row does not exist).
pub(super) fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db.is_foreign_key_violation(),
        _ => false,
    }
}

/// Rows per multi-row `INSERT`: far below PostgreSQL's 65,535 bind parameters (8 per message row).
pub(super) const MAX_ROWS_PER_INSERT: usize = 1000;

pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    to_micros(t)
}

/// Expands the shared implementation for one backend. `$store` has a `pool: sqlx::Pool<$db>` field and the
/// associated items the module documentation lists.
macro_rules! store_queries {
    ($store:ident, $db:ty) => {
        #[allow(clippy::too_many_lines)]
        impl $store {
            pub async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            // ---- users ----

            pub async fn upsert_user(
                &self,
                id: &str,
                display_name: Option<&str>,
                metadata: Option<&Value>,
            ) -> StoreResult<User> {
                let now = micros(now());
                let row: UserRow = sqlx::query_as(concat!(
                    "INSERT INTO users (id, display_name, metadata, created_at, last_seen_at) ",
                    "VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO UPDATE SET ",
                    "display_name = COALESCE($2, users.display_name), ",
                    "metadata = CASE WHEN $5 THEN excluded.metadata ELSE users.metadata END, ",
                    "last_seen_at = excluded.last_seen_at RETURNING ",
                    user_columns!()
                ))
                .bind(id.to_owned())
                .bind(display_name.map(str::to_owned))
                .bind(Json(MetadataColumn(metadata.unwrap_or(&Value::Null))))
                .bind(now)
                .bind(metadata.is_some())
                .fetch_one(self.writer())
                .await?;
                Ok(row.into())
            }

            pub async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
                let row: Option<UserRow> =
                    sqlx::query_as(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
                        .bind(id.to_owned())
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(Into::into))
            }

            // ---- conversations ----

            pub async fn create_conversation(&self, new: &NewConversation) -> StoreResult<Conversation> {
                let now = micros(now());
                let row: ConversationRow = sqlx::query_as(concat!(
                    "INSERT INTO conversations (id, owner, kind, scope, title, metadata, message_count, created_at, ",
                    "updated_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $7) RETURNING ",
                    conversation_columns!()
                ))
                .bind(new_id())
                .bind(new.owner.clone())
                .bind(new.kind.clone())
                .bind(new.scope.clone())
                .bind(new.title.clone())
                .bind(Json(MetadataColumn(&new.metadata)))
                .bind(now)
                .fetch_one(self.writer())
                .await?;
                Ok(row.into())
            }

            pub async fn get_conversation(&self, id: &str) -> StoreResult<Option<Conversation>> {
                let row: Option<ConversationRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    conversation_columns!(),
                    " FROM conversations WHERE id = $1"
                ))
                .bind(id.to_owned())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            fn push_conversation_filters(qb: &mut sqlx::QueryBuilder<$db>, query: &ConversationQuery) {
                qb.push(" WHERE owner = ").push_bind(query.owner.clone());
                if let Some(kind) = &query.kind {
                    qb.push(" AND kind = ").push_bind(kind.clone());
                }
                if let Some(scope) = &query.scope {
                    qb.push(" AND scope = ").push_bind(scope.clone());
                }
                if let Some(search) = query.search.as_deref().filter(|s| !s.is_empty()) {
                    // LIKE wildcards in the user's text are matched literally.
                    let escaped = search.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                    qb.push(" AND LOWER(title) LIKE ").push_bind(format!("%{escaped}%")).push(" ESCAPE '\\'");
                }
                for (key, value) in &query.metadata_eq {
                    qb.push(" AND ");
                    Self::push_metadata_eq(qb, key, value);
                }
            }

            pub async fn list_conversations(&self, query: &ConversationQuery) -> StoreResult<ConversationPage> {
                let limit = clamp_limit(query.limit);
                let mut count = sqlx::QueryBuilder::<$db>::new("SELECT COUNT(*) FROM conversations");
                Self::push_conversation_filters(&mut count, query);
                let total: i64 = count.build_query_scalar().fetch_one(&self.pool).await?;

                let mut qb = sqlx::QueryBuilder::<$db>::new(concat!(
                    "SELECT ",
                    conversation_columns!(),
                    " FROM conversations"
                ));
                Self::push_conversation_filters(&mut qb, query);
                if let Some(cursor) = &query.before {
                    let anchor: Option<(i64,)> =
                        sqlx::query_as("SELECT created_at FROM conversations WHERE id = $1 AND owner = $2")
                            .bind(cursor.clone())
                            .bind(query.owner.clone())
                            .fetch_optional(&self.pool)
                            .await?;
                    let Some((created_at,)) = anchor else {
                        return Err(StoreError::InvalidCursor { cursor: cursor.clone() });
                    };
                    qb.push(" AND (created_at < ")
                        .push_bind(created_at)
                        .push(" OR (created_at = ")
                        .push_bind(created_at)
                        .push(" AND id < ")
                        .push_bind(cursor.clone())
                        .push("))");
                }
                qb.push(" ORDER BY created_at DESC, id DESC LIMIT CAST(")
                    .push_bind(limit + 1)
                    .push(" AS BIGINT) OFFSET CAST(")
                    .push_bind(i64::from(query.offset))
                    .push(" AS BIGINT)");
                let rows: Vec<ConversationRow> = qb.build_query_as().fetch_all(&self.pool).await?;
                let mut items: Vec<Conversation> = rows.into_iter().map(Into::into).collect();
                let has_more = items.len() as i64 > limit;
                items.truncate(limit as usize);
                let next_cursor = if has_more { items.last().map(|c| c.id.clone()) } else { None };
                Ok(ConversationPage { items, total, has_more, next_cursor })
            }

            pub async fn update_conversation(
                &self,
                id: &str,
                update: &ConversationUpdate,
            ) -> StoreResult<Option<Conversation>> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let current: Option<ConversationRow> =
                    sqlx::query_as(Self::CONVERSATION_FOR_UPDATE).bind(id.to_owned()).fetch_optional(&mut *tx).await?;
                let Some(current) = current else {
                    return Ok(None);
                };
                let current = Conversation::from(current);
                let title = update.title.clone().unwrap_or(current.title);
                let metadata = match &update.metadata {
                    Some(m) => apply_metadata_update(current.metadata, m),
                    None => current.metadata,
                };
                let row: ConversationRow = sqlx::query_as(concat!(
                    "UPDATE conversations SET title = $2, metadata = $3, updated_at = $4 WHERE id = $1 RETURNING ",
                    conversation_columns!()
                ))
                .bind(id.to_owned())
                .bind(title)
                .bind(Json(metadata))
                .bind(micros(now()).max(micros(current.updated_at)))
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Some(row.into()))
            }

            pub async fn delete_conversation(&self, id: &str) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM conversations WHERE id = $1")
                    .bind(id.to_owned())
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            // ---- messages ----

            pub async fn append_message(&self, conversation_id: &str, new: &NewMessage) -> StoreResult<Message> {
                let mut stored = self.append_messages(conversation_id, std::slice::from_ref(new)).await?;
                stored.pop().ok_or_else(|| StoreError::Corrupt("append returned no message".to_owned()))
            }

            pub async fn append_messages(
                &self,
                conversation_id: &str,
                new: &[NewMessage],
            ) -> StoreResult<Vec<Message>> {
                if new.is_empty() {
                    return Ok(Vec::new());
                }
                let now = micros(now());
                if Self::COUNTS_BY_TRIGGER && new.len() == 1 {
                    // One autocommitted statement: the trigger bumps the conversation atomically with it.
                    let row = Self::insert_message(conversation_id, &new[0], now)
                        .fetch_one(self.writer())
                        .await
                        .map_err(Self::missing_conversation)?;
                    return Ok(vec![Message::try_from(row)?]);
                }
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let stored = Self::insert_messages(&mut tx, conversation_id, new, now).await?;
                tx.commit().await?;
                Ok(stored)
            }

            /// Records `jobs` (see [`super::turns`]) in ONE transaction and returns each turn's outcome in order
            /// once it has committed, and whether the set-based way did it; `Err` (nothing stored) if the
            /// transaction as a whole failed.
            ///
            /// First set-based ([`Self::record_turns_at_once`]: a few statements for the whole batch). If that
            /// fails in any way (a turn's session without a conversation, a panicking builder, a database error
            /// in one turn's rows), the transaction is rolled back and the batch recorded turn by turn
            /// ([`Self::record_turns_one_by_one`]), where a failing turn rolls back alone. The fallback rolls the
            /// whole transaction back rather than to a savepoint: that costs one more round trip, but only when
            /// falling back, where a savepoint around the set-based statements would cost one on every batch, and
            /// in SQLite a sub-journal copy of every page they change.
            pub(super) async fn record_turns(
                &self,
                jobs: &mut [super::turns::TurnJob],
            ) -> Result<(Vec<super::turns::TurnOutcome>, bool), sqlx::Error> {
                let now = micros(now());
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                match Self::record_turns_at_once(&mut tx, jobs, now).await {
                    Ok(outcomes) => {
                        tx.commit().await?;
                        return Ok((outcomes, true));
                    }
                    Err(error) => {
                        tracing::debug!(%error, turns = jobs.len(), "set-based batch failed: recording turn by turn");
                        tx.rollback().await?;
                    }
                }
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let outcomes = Self::record_turns_one_by_one(&mut tx, jobs, now).await?;
                tx.commit().await?;
                Ok((outcomes, false))
            }

            /// Records `jobs` set-based inside `tx`: ONE `UPDATE … FROM` touches every session of the batch (a
            /// session with k turns gets +k, under the same condition as [`touch_session_sql!`]; the backend's
            /// `touched_sessions` reads the rows back), the builders run in submission order, each on a snapshot
            /// carrying its turn's own count (final − k + 1 … final, what the per-turn way gives them), and ONE
            /// multi-row `INSERT` (per [`MAX_ROWS_PER_INSERT`]) stores every turn's messages, after ONE `UPDATE … FROM` bumping the
            /// conversations' counts where no trigger does. Any error means "roll back and go turn by turn";
            /// success gives exactly the outcomes the per-turn way would.
            async fn record_turns_at_once(
                tx: &mut sqlx::Transaction<'_, $db>,
                jobs: &mut [super::turns::TurnJob],
                now: i64,
            ) -> StoreResult<Vec<super::turns::TurnOutcome>> {
                use std::collections::HashMap;
                // Each session once: its number of turns and the expiry they set. Turns of one session with
                // different TTLs would each see another expiry, which only the per-turn way gives them.
                let mut turns_of: HashMap<&str, (i64, Option<i64>)> = HashMap::with_capacity(jobs.len());
                for job in jobs.iter() {
                    let expires = job.ttl.map(|ttl| now.saturating_add(ttl_micros(ttl)));
                    let (turns, first_expires) = turns_of.entry(&job.session_id).or_insert((0, expires));
                    if *first_expires != expires {
                        return Err(StoreError::Invalid {
                            field: "ttl",
                            reason: "turns of one session with different TTLs in one batch".to_owned(),
                        });
                    }
                    *turns += 1;
                }
                let mut qb =
                    sqlx::QueryBuilder::<$db>::new("WITH turns (turn_session, turn_count, turn_expires) AS (");
                qb.push_values(&turns_of, |mut row, (id, (turns, expires))| {
                    row.push_bind((*id).to_owned()).push_bind(*turns).push_bind(*expires);
                });
                qb.push(") UPDATE sessions SET last_activity = CASE WHEN last_activity > ")
                    .push_bind(now)
                    .push(" THEN last_activity ELSE ")
                    .push_bind(now)
                    .push(concat!(
                        " END, interaction_count = interaction_count + turns.turn_count, ",
                        "expires_at = COALESCE(turns.turn_expires, expires_at) FROM turns ",
                        "WHERE sessions.id = turns.turn_session AND sessions.active = TRUE"
                    ));
                let ids: Vec<&str> = turns_of.keys().copied().collect();
                let rows = Self::touched_sessions(qb, tx, &ids).await?;
                // Each touched session, with the count its next turn sees.
                let mut touched = HashMap::with_capacity(rows.len());
                for row in rows {
                    let session = Session::from(row);
                    let Some((turns, _)) = turns_of.get(session.id.as_str()) else {
                        return Err(StoreError::Corrupt(format!("touched session {} of no turn", session.id)));
                    };
                    let first = session.interaction_count - turns + 1;
                    touched.insert(session.id.clone(), (session, first));
                }

                // The turns' snapshots (`None`: the session is unknown or closed) and every message to store, as
                // (turn, message) in submission order.
                let turn_count = jobs.len();
                let mut snapshots: Vec<Option<Session>> = Vec::with_capacity(turn_count);
                let mut rows = Vec::with_capacity(turn_count * 2);
                for job in jobs.iter_mut() {
                    let Some((session, next)) = touched.get_mut(&job.session_id) else {
                        snapshots.push(None);
                        continue;
                    };
                    if session.conversation_id.is_none() {
                        return Err(StoreError::NotFound { what: "conversation" });
                    }
                    let mut snapshot = session.clone();
                    snapshot.interaction_count = *next;
                    *next += 1;
                    let turn = snapshots.len();
                    rows.extend(job.messages_for(&snapshot)?.iter().map(|message| (turn, message)));
                    snapshots.push(Some(snapshot));
                }

                let mut inserted = Vec::new().into_iter();
                if !rows.is_empty() {
                    let mut by_conversation: Vec<(&str, &NewMessage)> = Vec::with_capacity(rows.len());
                    for (turn, message) in &rows {
                        let Some(Some(conversation)) = snapshots[*turn].as_ref().map(|s| s.conversation_id.as_deref())
                        else {
                            return Err(StoreError::Corrupt("a message of a turn without conversation".to_owned()));
                        };
                        by_conversation.push((conversation, *message));
                    }
                    if !Self::COUNTS_BY_TRIGGER {
                        let mut added: HashMap<&str, i64> = HashMap::new();
                        for (conversation, _) in &by_conversation {
                            *added.entry(*conversation).or_default() += 1;
                        }
                        Self::bump_conversations(tx, &added, now).await?;
                    }
                    inserted = Self::insert_rows(tx, &by_conversation, now).await?.into_iter();
                }
                // Stored: nothing retries these turns any more, so their messages move into the answers.
                let created_at = from_micros(now);
                Ok(jobs
                    .iter_mut()
                    .zip(snapshots)
                    .map(|(job, snapshot)| {
                        Ok(snapshot.map(|session| {
                            let conversation = session.conversation_id.as_deref().unwrap_or_default();
                            let messages = job
                                .take_messages()
                                .into_iter()
                                .zip(&mut inserted)
                                .map(|(new, row)| stored_message(conversation, new, row, created_at))
                                .collect();
                            (session, messages)
                        }))
                    })
                    .collect())
            }

            /// Records `jobs` turn by turn inside `tx`, each turn inside its own savepoint: a turn that fails rolls
            /// back to its savepoint alone and answers its error. `Err` if the transaction itself failed.
            ///
            /// Each turn's savepoint is released when the next one opens, in the same round trip: nested
            /// savepoints would make SQLite copy every page a turn changes into a sub-journal that grows with the
            /// batch (and spills to a temporary file past 64 KiB), and each would stay an open subtransaction in
            /// PostgreSQL. The COMMIT releases the last one. A database error while touching fails the whole batch:
            /// it is the transaction failing (the disk, a lock), not the turn.
            async fn record_turns_one_by_one(
                tx: &mut sqlx::Transaction<'_, $db>,
                jobs: &mut [super::turns::TurnJob],
                now: i64,
            ) -> Result<Vec<super::turns::TurnOutcome>, sqlx::Error> {
                let mut outcomes = Vec::with_capacity(jobs.len());
                for (i, job) in jobs.iter_mut().enumerate() {
                    let savepoint = if i == 0 { "SAVEPOINT turn" } else { "RELEASE SAVEPOINT turn; SAVEPOINT turn" };
                    sqlx::raw_sql(savepoint).execute(&mut **tx).await?;
                    let touched =
                        Self::touch_session_query(&job.session_id, job.ttl, now).fetch_optional(&mut **tx).await?;
                    let outcome = match touched {
                        // Unknown or closed: nothing was written, and the messages are never built.
                        None => Ok(None),
                        Some(row) => Self::finish_turn(tx, job, Session::from(row), now).await,
                    };
                    if outcome.is_err() {
                        sqlx::query("ROLLBACK TO SAVEPOINT turn").execute(&mut **tx).await?;
                    }
                    outcomes.push(outcome);
                }
                Ok(outcomes)
            }

            /// The rest of one turn inside the batch transaction, once its session is touched: the messages built
            /// from the touched session.
            async fn finish_turn(
                tx: &mut sqlx::Transaction<'_, $db>,
                job: &mut super::turns::TurnJob,
                session: Session,
                now: i64,
            ) -> super::turns::TurnOutcome {
                let Some(conversation_id) = session.conversation_id.clone() else {
                    return Err(StoreError::NotFound { what: "conversation" });
                };
                let new = job.messages_for(&session)?;
                let stored = if new.is_empty() {
                    Vec::new()
                } else {
                    Self::insert_messages(tx, &conversation_id, new, now).await?
                };
                Ok(Some((session, stored)))
            }

            /// Inserts `new` into a conversation inside `tx`, bumping its counts first where no trigger does.
            async fn insert_messages(
                tx: &mut sqlx::Transaction<'_, $db>,
                conversation_id: &str,
                new: &[NewMessage],
                now: i64,
            ) -> StoreResult<Vec<Message>> {
                if !Self::COUNTS_BY_TRIGGER {
                    let added = std::collections::HashMap::from([(conversation_id, new.len() as i64)]);
                    Self::bump_conversations(tx, &added, now).await?;
                }
                let rows: Vec<(&str, &NewMessage)> = new.iter().map(|message| (conversation_id, message)).collect();
                let inserted = Self::insert_rows(tx, &rows, now).await?;
                let created_at = from_micros(now);
                Ok(new
                    .iter()
                    .cloned()
                    .zip(inserted)
                    .map(|(message, row)| stored_message(conversation_id, message, row, created_at))
                    .collect())
            }

            /// Adds `added[conversation]` to each conversation's `message_count` and moves its `updated_at` to
            /// `now`, in one statement; `NotFound` if one of them does not exist. Done before inserting the
            /// messages, so the row locks it takes order concurrent appends to a conversation.
            async fn bump_conversations(
                tx: &mut sqlx::Transaction<'_, $db>,
                added: &std::collections::HashMap<&str, i64>,
                now: i64,
            ) -> StoreResult<()> {
                let mut qb =
                    sqlx::QueryBuilder::<$db>::new("WITH bumps (bump_conversation, bump_count) AS (");
                qb.push_values(added, |mut row, (conversation, count)| {
                    row.push_bind((*conversation).to_owned()).push_bind(*count);
                });
                qb.push(concat!(
                    ") UPDATE conversations SET message_count = message_count + bumps.bump_count, ",
                    "updated_at = CASE WHEN updated_at > "
                ))
                .push_bind(now)
                .push(" THEN updated_at ELSE ")
                .push_bind(now)
                .push(" END FROM bumps WHERE conversations.id = bumps.bump_conversation");
                let bumped = qb.build().execute(&mut **tx).await?;
                if bumped.rows_affected() != added.len() as u64 {
                    return Err(StoreError::NotFound { what: "conversation" });
                }
                Ok(())
            }

            /// Inserts `(conversation, message)` rows in order inside `tx` with multi-row `INSERT`s (per
            /// [`MAX_ROWS_PER_INSERT`]) and returns each row's `(id, seq)` in the same order. Every column but
            /// `seq` is decided here, so the database only tells each row's `seq` ([`Self::inserted_seqs`]).
            /// The values are bound by reference: a turn's messages are copied once, into the statement.
            async fn insert_rows(
                tx: &mut sqlx::Transaction<'_, $db>,
                rows: &[(&str, &NewMessage)],
                now: i64,
            ) -> StoreResult<Vec<(String, i64)>> {
                let mut inserted = Vec::with_capacity(rows.len());
                for chunk in rows.chunks(MAX_ROWS_PER_INSERT) {
                    let ids: Vec<String> = chunk.iter().map(|_| new_message_id()).collect();
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO messages (id, conversation_id, role, content, metadata, prompt_tokens, \
                         completion_tokens, created_at) ",
                    );
                    qb.push_values(chunk.iter().zip(&ids), |mut row, ((conversation_id, message), id)| {
                        row.push_bind(id.as_str())
                            .push_bind(*conversation_id)
                            .push_bind(message.role.as_str())
                            .push_bind(message.content.as_str())
                            .push_bind(Json(MetadataColumn(&message.metadata)))
                            .push_bind(i64::from(message.prompt_tokens))
                            .push_bind(i64::from(message.completion_tokens))
                            .push_bind(now);
                    });
                    let seqs = Self::inserted_seqs(qb, tx, &ids).await?;
                    inserted.extend(ids.into_iter().zip(seqs));
                }
                Ok(inserted)
            }

            fn insert_message<'q>(
                conversation_id: &str,
                message: &'q NewMessage,
                now: i64,
            ) -> sqlx::query::QueryAs<'q, $db, MessageRow, <$db as sqlx::Database>::Arguments> {
                sqlx::query_as::<_, MessageRow>(concat!(
                    "INSERT INTO messages (id, conversation_id, role, content, metadata, prompt_tokens, ",
                    "completion_tokens, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
                    message_columns!()
                ))
                .bind(new_message_id())
                .bind(conversation_id.to_owned())
                .bind(message.role.as_str())
                .bind(message.content.as_str())
                .bind(Json(MetadataColumn(&message.metadata)))
                .bind(i64::from(message.prompt_tokens))
                .bind(i64::from(message.completion_tokens))
                .bind(now)
            }

            fn missing_conversation(e: sqlx::Error) -> StoreError {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound { what: "conversation" }
                } else {
                    StoreError::Database(e)
                }
            }

            pub async fn get_message(&self, id: &str) -> StoreResult<Option<Message>> {
                let row: Option<MessageRow> =
                    sqlx::query_as(concat!("SELECT ", message_columns!(), " FROM messages WHERE id = $1"))
                        .bind(id.to_owned())
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(Message::try_from).transpose()
            }

            async fn message_seq(&self, conversation_id: &str, message_id: &str) -> StoreResult<i64> {
                let seq: Option<i64> =
                    sqlx::query_scalar("SELECT seq FROM messages WHERE id = $1 AND conversation_id = $2")
                        .bind(message_id.to_owned())
                        .bind(conversation_id.to_owned())
                        .fetch_optional(&self.pool)
                        .await?;
                seq.ok_or_else(|| StoreError::InvalidCursor { cursor: message_id.to_owned() })
            }

            pub async fn list_messages(
                &self,
                conversation_id: &str,
                query: &MessageQuery,
            ) -> StoreResult<Page<Message>> {
                let limit = clamp_limit(query.limit);
                let before = match &query.before {
                    Some(id) => self.message_seq(conversation_id, id).await?,
                    None => i64::MAX,
                };
                let after = match &query.after {
                    Some(id) => self.message_seq(conversation_id, id).await?,
                    None => i64::MIN,
                };
                let rows = Self::message_page(
                    &self.pool,
                    conversation_id,
                    (before, after),
                    limit + 1,
                    i64::from(query.offset),
                    query.order,
                )
                .await?;
                let mut items = messages(rows)?;
                let has_more = items.len() as i64 > limit;
                items.truncate(limit as usize);
                let next_cursor = if has_more { items.last().map(|m| m.id.clone()) } else { None };
                Ok(Page { items, has_more, next_cursor })
            }

            pub async fn count_messages(&self, conversation_id: &str) -> StoreResult<i64> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE conversation_id = $1")
                    .bind(conversation_id.to_owned())
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            // ---- sessions ----

            /// Returns the new session and the ids of the sessions it closed.
            pub async fn create_session(&self, new: &NewSession) -> StoreResult<(Session, Vec<String>)> {
                let now_us = micros(now());
                let expires = new.ttl.map(|ttl| now_us.saturating_add(ttl_micros(ttl)));
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                if new.record_user_seen {
                    sqlx::query(
                        "INSERT INTO users (id, created_at, last_seen_at) VALUES ($1, $2, $2) \
                         ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at",
                    )
                    .bind(new.user_id.clone())
                    .bind(now_us)
                    .execute(&mut *tx)
                    .await?;
                }
                let closed: Vec<String> = if new.close_others_in_scope {
                    sqlx::query_scalar(
                        "UPDATE sessions SET active = FALSE, closed_at = $4 \
                         WHERE user_id = $1 AND kind = $2 AND scope = $3 AND active = TRUE RETURNING id",
                    )
                    .bind(new.user_id.clone())
                    .bind(new.kind.clone())
                    .bind(new.scope.clone())
                    .bind(now_us)
                    .fetch_all(&mut *tx)
                    .await?
                } else {
                    Vec::new()
                };
                let row: Result<SessionRow, sqlx::Error> = sqlx::query_as(concat!(
                    "INSERT INTO sessions (id, kind, scope, user_id, conversation_id, created_at, last_activity, ",
                    "expires_at, closed_at, active, interaction_count, metadata) ",
                    "VALUES ($1, $2, $3, $4, $5, $6, $6, $7, NULL, TRUE, 0, $8) RETURNING ",
                    session_columns!()
                ))
                .bind(new_id())
                .bind(new.kind.clone())
                .bind(new.scope.clone())
                .bind(new.user_id.clone())
                .bind(new.conversation_id.clone())
                .bind(now_us)
                .bind(expires)
                .bind(Json(MetadataColumn(&new.metadata)))
                .fetch_one(&mut *tx)
                .await;
                let row = match row {
                    Ok(row) => row,
                    Err(e) if is_foreign_key_violation(&e) => {
                        return Err(StoreError::NotFound { what: "conversation" });
                    }
                    Err(e) => return Err(e.into()),
                };
                tx.commit().await?;
                Ok((row.into(), closed))
            }

            pub async fn get_session(&self, id: &str) -> StoreResult<Option<Session>> {
                let row: Option<SessionRow> =
                    sqlx::query_as(concat!("SELECT ", session_columns!(), " FROM sessions WHERE id = $1"))
                        .bind(id.to_owned())
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(Into::into))
            }

            pub async fn touch_session(&self, id: &str, ttl: Option<Duration>) -> StoreResult<Option<Session>> {
                let row = Self::touch_session_query(id, ttl, micros(now()))
                    .fetch_optional(self.writer())
                    .await?;
                Ok(row.map(Into::into))
            }

            /// [`touch_session_sql!`] bound for one session.
            fn touch_session_query<'q>(
                id: &str,
                ttl: Option<Duration>,
                now_us: i64,
            ) -> sqlx::query::QueryAs<'q, $db, SessionRow, <$db as sqlx::Database>::Arguments> {
                let expires = ttl.map(|ttl| now_us.saturating_add(ttl_micros(ttl)));
                sqlx::query_as(touch_session_sql!())
                .bind(id.to_owned())
                .bind(now_us)
                .bind(expires)
            }

            pub async fn set_session_metadata(&self, id: &str, metadata: &Value) -> StoreResult<Option<Session>> {
                let row: Option<SessionRow> = sqlx::query_as(concat!(
                    "UPDATE sessions SET metadata = $2 WHERE id = $1 RETURNING ",
                    session_columns!()
                ))
                .bind(id.to_owned())
                .bind(Json(MetadataColumn(metadata)))
                .fetch_optional(self.writer())
                .await?;
                Ok(row.map(Into::into))
            }

            pub async fn close_session(&self, id: &str) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE sessions SET active = FALSE, closed_at = $2 WHERE id = $1 AND active = TRUE",
                )
                .bind(id.to_owned())
                .bind(micros(now()))
                .execute(self.writer())
                .await?;
                Ok(done.rows_affected() > 0)
            }

            pub async fn list_sessions(
                &self,
                user_id: &str,
                kind: Option<&str>,
                active_only: bool,
            ) -> StoreResult<Vec<Session>> {
                let rows: Vec<SessionRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM sessions WHERE user_id = $1 AND ($2 IS NULL OR kind = $2) ",
                    "AND (active = TRUE OR $3 = FALSE) ORDER BY created_at DESC, id DESC"
                ))
                .bind(user_id.to_owned())
                .bind(kind.map(str::to_owned))
                .bind(active_only)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            pub async fn close_oldest_over_limit(
                &self,
                user_id: &str,
                kind: &str,
                max: u32,
            ) -> StoreResult<Vec<String>> {
                let closed: Vec<String> = sqlx::query_scalar(
                    "UPDATE sessions SET active = FALSE, closed_at = $4 \
                     WHERE user_id = $1 AND kind = $2 AND active = TRUE AND id NOT IN ( \
                       SELECT id FROM sessions WHERE user_id = $1 AND kind = $2 AND active = TRUE \
                       ORDER BY created_at DESC, id DESC LIMIT CAST($3 AS BIGINT)) \
                     RETURNING id",
                )
                .bind(user_id.to_owned())
                .bind(kind.to_owned())
                .bind(i64::from(max))
                .bind(micros(now()))
                .fetch_all(self.writer())
                .await?;
                Ok(closed)
            }

            pub async fn expire_idle_sessions(&self, now: DateTime<Utc>) -> StoreResult<Vec<Session>> {
                let now_us = micros(now);
                let rows: Vec<SessionRow> = sqlx::query_as(concat!(
                    "UPDATE sessions SET active = FALSE, closed_at = $1 ",
                    "WHERE active = TRUE AND expires_at IS NOT NULL AND expires_at <= $1 RETURNING ",
                    session_columns!()
                ))
                .bind(now_us)
                .fetch_all(self.writer())
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            pub async fn count_active_sessions(&self) -> StoreResult<i64> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE active = TRUE")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            pub async fn delete_session(&self, id: &str) -> StoreResult<bool> {
                let done =
                    sqlx::query("DELETE FROM sessions WHERE id = $1").bind(id.to_owned()).execute(self.writer()).await?;
                Ok(done.rows_affected() > 0)
            }

            // ---- documents ----

            pub async fn add_document(&self, new: &NewDocument) -> StoreResult<Document> {
                let chunks = crate::chat::model::retrieval::chunk_text(&new.content);
                let id = new_id();
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let row: DocumentRow = sqlx::query_as(concat!(
                    "INSERT INTO documents (id, owner, scope, title, mime, size_bytes, chunk_count, content, ",
                    "metadata, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING ",
                    document_columns!()
                ))
                .bind(id.clone())
                .bind(new.owner.clone())
                .bind(new.scope.clone())
                .bind(new.title.clone())
                .bind(new.mime.clone())
                .bind(new.size_bytes)
                .bind(chunks.len() as i64)
                .bind(new.content.clone())
                .bind(Json(MetadataColumn(&new.metadata)))
                .bind(micros(now()))
                .fetch_one(&mut *tx)
                .await?;
                for (index, text) in chunks.into_iter().enumerate() {
                    sqlx::query("INSERT INTO document_chunks (document_id, idx, text) VALUES ($1, $2, $3)")
                        .bind(id.clone())
                        .bind(index as i64)
                        .bind(text)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(row.into())
            }

            pub async fn get_document(&self, id: &str) -> StoreResult<Option<Document>> {
                let row: Option<DocumentRow> =
                    sqlx::query_as(concat!("SELECT ", document_columns!(), " FROM documents WHERE id = $1"))
                        .bind(id.to_owned())
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(Into::into))
            }

            pub async fn list_documents(&self, filter: &DocumentFilter) -> StoreResult<Vec<Document>> {
                let rows: Vec<DocumentRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    document_columns!(),
                    " FROM documents WHERE scope = $1 AND ($2 IS NULL OR owner = $2 OR owner = '') ",
                    "ORDER BY created_at, id"
                ))
                .bind(filter.scope.clone())
                .bind(filter.owner.clone())
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            pub async fn delete_document(&self, id: &str) -> StoreResult<bool> {
                let done =
                    sqlx::query("DELETE FROM documents WHERE id = $1").bind(id.to_owned()).execute(self.writer()).await?;
                Ok(done.rows_affected() > 0)
            }

            pub async fn document_chunks(&self, filter: &DocumentFilter) -> StoreResult<Vec<DocumentChunk>> {
                let rows: Vec<ChunkRow> = sqlx::query_as(
                    "SELECT c.document_id, d.title, c.idx, c.text FROM document_chunks c \
                     JOIN documents d ON d.id = c.document_id \
                     WHERE d.scope = $1 AND ($2 IS NULL OR d.owner = $2 OR d.owner = '') \
                     ORDER BY d.created_at, d.id, c.idx",
                )
                .bind(filter.scope.clone())
                .bind(filter.owner.clone())
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            pub async fn documents_fingerprint(&self, filter: &DocumentFilter) -> StoreResult<(i64, i64, i64)> {
                let row: (i64, Option<i64>, Option<i64>) = sqlx::query_as(
                    "SELECT COUNT(*), MAX(created_at), CAST(SUM(chunk_count) AS BIGINT) FROM documents \
                     WHERE scope = $1 AND ($2 IS NULL OR owner = $2 OR owner = '')",
                )
                .bind(filter.scope.clone())
                .bind(filter.owner.clone())
                .fetch_one(&self.pool)
                .await?;
                Ok((row.0, row.1.unwrap_or(0), row.2.unwrap_or(0)))
            }

            // ---- ratings ----

            pub async fn upsert_rating(
                &self,
                message_id: &str,
                user_id: &str,
                score: i32,
                comment: Option<&str>,
            ) -> StoreResult<Rating> {
                let now_us = micros(now());
                let row: Result<RatingRow, sqlx::Error> = sqlx::query_as(concat!(
                    "INSERT INTO ratings (id, message_id, user_id, score, comment, created_at, updated_at) ",
                    "VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (message_id, user_id) DO UPDATE SET ",
                    "score = excluded.score, comment = excluded.comment, updated_at = excluded.updated_at ",
                    "RETURNING ",
                    rating_columns!()
                ))
                .bind(new_id())
                .bind(message_id.to_owned())
                .bind(user_id.to_owned())
                .bind(score)
                .bind(comment.map(str::to_owned))
                .bind(now_us)
                .fetch_one(self.writer())
                .await;
                match row {
                    Ok(row) => Ok(row.into()),
                    Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound { what: "message" }),
                    Err(e) => Err(e.into()),
                }
            }

            pub async fn get_rating(&self, message_id: &str, user_id: &str) -> StoreResult<Option<Rating>> {
                let row: Option<RatingRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    rating_columns!(),
                    " FROM ratings WHERE message_id = $1 AND user_id = $2"
                ))
                .bind(message_id.to_owned())
                .bind(user_id.to_owned())
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            pub async fn list_ratings(&self, message_id: &str) -> StoreResult<Vec<Rating>> {
                let rows: Vec<RatingRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    rating_columns!(),
                    " FROM ratings WHERE message_id = $1 ORDER BY created_at, id"
                ))
                .bind(message_id.to_owned())
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            // ---- attachments ----

            pub async fn add_attachment(&self, new: &NewAttachment) -> StoreResult<Attachment> {
                if let Some(message_id) = &new.message_id {
                    // A message of another conversation would be a silent mix-up: refuse it like a missing one.
                    let found: Option<i64> =
                        sqlx::query_scalar("SELECT seq FROM messages WHERE id = $1 AND conversation_id = $2")
                            .bind(message_id.clone())
                            .bind(new.conversation_id.clone())
                            .fetch_optional(self.writer())
                            .await?;
                    if found.is_none() {
                        return Err(StoreError::NotFound { what: "message" });
                    }
                }
                let row: Result<AttachmentRow, sqlx::Error> = sqlx::query_as(concat!(
                    "INSERT INTO attachments (id, conversation_id, message_id, owner, filename, mime, size_bytes, ",
                    "data, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ",
                    attachment_columns!()
                ))
                .bind(new_id())
                .bind(new.conversation_id.clone())
                .bind(new.message_id.clone())
                .bind(new.owner.clone())
                .bind(new.filename.clone())
                .bind(new.mime.clone())
                .bind(new.data.len() as i64)
                .bind(new.data.clone())
                .bind(micros(now()))
                .fetch_one(self.writer())
                .await;
                match row {
                    Ok(row) => Ok(row.into()),
                    Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound { what: "conversation" }),
                    Err(e) => Err(e.into()),
                }
            }

            pub async fn get_attachment(&self, id: &str) -> StoreResult<Option<Attachment>> {
                let row: Option<AttachmentRow> =
                    sqlx::query_as(concat!("SELECT ", attachment_columns!(), " FROM attachments WHERE id = $1"))
                        .bind(id.to_owned())
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(Into::into))
            }

            pub async fn get_attachment_data(&self, id: &str) -> StoreResult<Option<(Attachment, Vec<u8>)>> {
                let Some(attachment) = self.get_attachment(id).await? else {
                    return Ok(None);
                };
                let data: Option<Vec<u8>> = sqlx::query_scalar("SELECT data FROM attachments WHERE id = $1")
                    .bind(id.to_owned())
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(data.map(|data| (attachment, data)))
            }

            pub async fn list_attachments(&self, message_id: &str) -> StoreResult<Vec<Attachment>> {
                let rows: Vec<AttachmentRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    attachment_columns!(),
                    " FROM attachments WHERE message_id = $1 ORDER BY created_at, id"
                ))
                .bind(message_id.to_owned())
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            pub async fn delete_attachment(&self, id: &str) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM attachments WHERE id = $1")
                    .bind(id.to_owned())
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            // ---- records ----

            pub async fn put_record(&self, namespace: &str, key: &str, value: &Value) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO records (namespace, key, value, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, \
                     updated_at = excluded.updated_at",
                )
                .bind(namespace.to_owned())
                .bind(key.to_owned())
                .bind(Json(value.clone()))
                .bind(micros(now()))
                .execute(self.writer())
                .await?;
                Ok(())
            }

            pub async fn get_record(&self, namespace: &str, key: &str) -> StoreResult<Option<Value>> {
                let value: Option<Json<Value>> =
                    sqlx::query_scalar("SELECT value FROM records WHERE namespace = $1 AND key = $2")
                        .bind(namespace.to_owned())
                        .bind(key.to_owned())
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(value.map(|v| v.0))
            }

            pub async fn list_records(&self, namespace: &str) -> StoreResult<Vec<(String, Value)>> {
                let rows: Vec<(String, Json<Value>)> =
                    sqlx::query_as("SELECT key, value FROM records WHERE namespace = $1 ORDER BY key")
                        .bind(namespace.to_owned())
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|(k, v)| (k, v.0)).collect())
            }

            pub async fn delete_record(&self, namespace: &str, key: &str) -> StoreResult<bool> {
                let done = sqlx::query("DELETE FROM records WHERE namespace = $1 AND key = $2")
                    .bind(namespace.to_owned())
                    .bind(key.to_owned())
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() > 0)
            }
        }
    };
}
pub(super) use store_queries;
