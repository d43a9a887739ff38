-- Tell every gateway sharing this database which sessions changed, so each can evict them from its session read
-- cache. The payload is `<writer tag>:<session id>`: the tag is the writing connection's `voxgate.instance`
-- setting (empty for other clients, such as psql), so a gateway can skip the notifications of its own writes.
-- NOTIFY is delivered at commit (and not at all on rollback); identical payloads of one transaction are sent once.
CREATE FUNCTION voxgate_session_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'voxgate_sessions',
        COALESCE(current_setting('voxgate.instance', TRUE), '') || ':' || OLD.id
    );
    RETURN NULL;
END;
$$;

CREATE TRIGGER sessions_changed AFTER UPDATE OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION voxgate_session_changed();

-- A TRUNCATE names no rows: the payload `*` (no colon) makes every gateway forget all its sessions.
CREATE FUNCTION voxgate_sessions_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('voxgate_sessions', '*');
    RETURN NULL;
END;
$$;

CREATE TRIGGER sessions_truncated AFTER TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION voxgate_sessions_truncated();
