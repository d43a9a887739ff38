-- PostgreSQL's own cost of recording chat turns, without the gateway: one pgbench transaction is one group
-- commit of :batch turns on :batch distinct IntentLayer sessions, made of the statements the gateway's turn
-- writer sends (store/common.rs, record_turns_at_once): touch the sessions (RETURNING their rows), bump their
-- conversations' counts, insert two messages per turn (RETURNING id and seq), commit. pgbench is a C client with
-- prepared statements, so what it measures is a floor for the database's CPU per turn. Message ids are ordered by
-- time, as the gateway's UUID v7 ids are, so that they land on the last page of the id index.
-- Times are the transaction's start, in microseconds, like the writer's one `now` per batch.
-- Variables (pgbench -D): batch (turns per commit), sessions (rows of bench_turn_sessions).
\set first random(0, :sessions - :batch)
BEGIN;
WITH turns AS (SELECT session_id FROM bench_turn_sessions WHERE n BETWEEN (:first)::int AND (:first)::int + (:batch)::int - 1) UPDATE sessions SET last_activity = CASE WHEN last_activity > (extract(epoch FROM now()) * 1000000)::bigint THEN last_activity ELSE (extract(epoch FROM now()) * 1000000)::bigint END, interaction_count = interaction_count + 1, expires_at = COALESCE((extract(epoch FROM now()) * 1000000)::bigint + 86400000000, expires_at) FROM turns WHERE sessions.id = turns.session_id AND sessions.active = TRUE RETURNING sessions.*;
UPDATE conversations SET message_count = message_count + 2, updated_at = GREATEST(updated_at, (extract(epoch FROM now()) * 1000000)::bigint) FROM bench_turn_sessions AS t WHERE t.n BETWEEN (:first)::int AND (:first)::int + (:batch)::int - 1 AND conversations.id = t.conversation_id;
INSERT INTO messages (id, conversation_id, role, content, metadata, prompt_tokens, completion_tokens, created_at) SELECT lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000000)::bigint), 14, '0') || substr(gen_random_uuid()::text, 15), t.conversation_id, m.role, m.content, m.metadata::jsonb, 0, 0, (extract(epoch FROM now()) * 1000000)::bigint FROM bench_turn_sessions AS t, bench_turn_messages AS m WHERE t.n BETWEEN (:first)::int AND (:first)::int + (:batch)::int - 1 RETURNING id, seq;
COMMIT;
