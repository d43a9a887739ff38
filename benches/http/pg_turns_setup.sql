-- Setup for pg_turns.sql: numbers the IntentLayer sessions that benches/http/setup.py created, so that a pgbench
-- transaction can pick a batch of them by a range of numbers. Run by `scripts/bench-http --pg-floor`.
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench_turn_sessions, bench_turn_messages;
CREATE TABLE bench_turn_sessions AS
    SELECT (row_number() OVER (ORDER BY id)) - 1 AS n, id AS session_id, conversation_id
    FROM sessions WHERE kind = 'intentlayer' AND active AND conversation_id IS NOT NULL;
ALTER TABLE bench_turn_sessions ADD PRIMARY KEY (n);
-- One turn's two messages as the gateway stores them: the metadata as text, parsed into jsonb on insert as the
-- gateway's bound parameters are.
CREATE TABLE bench_turn_messages (role TEXT NOT NULL, content TEXT NOT NULL, metadata TEXT NOT NULL);
INSERT INTO bench_turn_messages VALUES
    ('user', 'Je veux un formulaire de contact pour mon site', '{"context":{},"input_type":"text"}'),
    ('assistant', 'Voici un formulaire de contact avec les champs nom, email et message.',
     '{"confidence":0.95,"entities":[{"type":"form_type","value":"contact"}],"intent":"create_form","language":"fr","response_audio":"/audio/response_caeabf2e-cba6-44e2-81f1-6af834da9b67_10.wav","ui_components":[{"props":{"fields":[{"label":"Nom","name":"name","required":true,"type":"text"},{"label":"Email","name":"email","required":true,"type":"email"},{"label":"Message","name":"message","required":true,"type":"textarea"}],"submit_label":"Envoyer","title":"Formulaire de contact"},"type":"form"}]}');
ANALYZE bench_turn_sessions, bench_turn_messages;
SELECT count(*) FROM bench_turn_sessions;
