-- The expiry sweep and the active-session count find the active sessions through an index of them keyed by
-- what a chat turn never changes. The index it replaces was keyed by `expires_at`, which every turn moves: each
-- turn deleted and re-inserted its session's entry, a write to two index pages more per turn. The sweep now
-- reads each active session's `expires_at` from its row: a cost in the number of ACTIVE sessions (bounded by
-- users times their session limit), once per sweep, instead of one on every turn.
DROP INDEX sessions_by_expiry;
CREATE INDEX sessions_active ON sessions (id) WHERE active = TRUE;
