-- SQLite only: keep a conversation's message_count and updated_at in step with its messages inside the INSERT
-- itself, so appending a message is one autocommitted statement (one round trip to the connection's worker
-- thread instead of BEGIN, UPDATE, INSERT, COMMIT). PostgreSQL keeps the explicit transaction, where the row
-- lock taken first also makes `seq` order equal commit order between concurrent writers of one conversation;
-- SQLite gets that from its single writer.
CREATE TRIGGER messages_bump_conversation AFTER INSERT ON messages
BEGIN
    UPDATE conversations
    SET message_count = message_count + 1,
        updated_at = MAX(updated_at, NEW.created_at)
    WHERE id = NEW.conversation_id;
END;
