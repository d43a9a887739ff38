-- The chat domain on SQLite. Timestamps are INTEGER microseconds since the Unix epoch (UTC), the same
-- representation as the PostgreSQL schema, so both backends share their queries and their ordering.
-- JSON columns hold serialized JSON text.

CREATE TABLE users (
    id           TEXT PRIMARY KEY NOT NULL,
    display_name TEXT,
    metadata     TEXT NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);

CREATE TABLE conversations (
    id            TEXT PRIMARY KEY NOT NULL,
    owner         TEXT NOT NULL,
    kind          TEXT NOT NULL,
    scope         TEXT NOT NULL DEFAULT '',
    title         TEXT NOT NULL DEFAULT '',
    metadata      TEXT NOT NULL DEFAULT '{}',
    message_count INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX conversations_by_owner ON conversations (owner, kind, scope, created_at DESC, id DESC);

-- `seq` gives a total order of messages that does not depend on clock resolution; cursors are message ids
-- resolved to their seq.
CREATE TABLE messages (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT NOT NULL UNIQUE,
    conversation_id   TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role              TEXT NOT NULL,
    content           TEXT NOT NULL,
    metadata          TEXT NOT NULL DEFAULT '{}',
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created_at        INTEGER NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation_id, seq);

CREATE TABLE sessions (
    id                TEXT PRIMARY KEY NOT NULL,
    kind              TEXT NOT NULL,
    scope             TEXT NOT NULL DEFAULT '',
    user_id           TEXT NOT NULL,
    conversation_id   TEXT REFERENCES conversations (id) ON DELETE SET NULL,
    created_at        INTEGER NOT NULL,
    last_activity     INTEGER NOT NULL,
    expires_at        INTEGER,
    closed_at         INTEGER,
    active            BOOLEAN NOT NULL DEFAULT TRUE,
    interaction_count INTEGER NOT NULL DEFAULT 0,
    metadata          TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX sessions_by_user ON sessions (user_id, kind, scope, active, created_at);
CREATE INDEX sessions_by_expiry ON sessions (active, expires_at);

CREATE TABLE documents (
    id          TEXT PRIMARY KEY NOT NULL,
    owner       TEXT NOT NULL DEFAULT '',
    scope       TEXT NOT NULL DEFAULT '',
    title       TEXT NOT NULL,
    mime        TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    content     TEXT NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL
);
CREATE INDEX documents_by_scope ON documents (scope, owner, created_at);

CREATE TABLE document_chunks (
    document_id TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    text        TEXT NOT NULL,
    PRIMARY KEY (document_id, idx)
);

CREATE TABLE ratings (
    id         TEXT NOT NULL UNIQUE,
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL,
    score      INTEGER NOT NULL,
    comment    TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (message_id, user_id)
);

CREATE TABLE attachments (
    id              TEXT PRIMARY KEY NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    message_id      TEXT REFERENCES messages (id) ON DELETE CASCADE,
    owner           TEXT NOT NULL,
    filename        TEXT NOT NULL,
    mime            TEXT NOT NULL,
    size_bytes      INTEGER NOT NULL,
    data            BLOB NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX attachments_by_message ON attachments (message_id);
CREATE INDEX attachments_by_conversation ON attachments (conversation_id);

-- Small JSON records that a surface keeps beside the domain (e.g. named profiles), by namespace and key.
CREATE TABLE records (
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (namespace, key)
);
