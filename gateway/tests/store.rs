//! The shared store suite: every case runs against SQLite (a file in a temporary directory) and PostgreSQL.
//!
//! PostgreSQL: `VOXGATE_TEST_DATABASE_URL` names a server to use (a role that may `CREATE DATABASE`); when it is
//! unset, the suite starts a throwaway server with `scripts/pg-test-server` (stopped when this process exits).
//! Each test creates its own database, so tests run in parallel. If no server can be had, the PostgreSQL tests
//! FAIL: a skipped backend would be an untested backend.

use std::sync::OnceLock;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use sqlx::Connection;
use voxgate::chat::store::StoreError;
use voxgate::chat::*;

/// A store and what keeps it alive (the temporary directory, or the database to drop).
struct Fixture {
    store: Store,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl Fixture {
    async fn sqlite() -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = Store::open_sqlite(&dir.path().join("voxgate.db"))
            .await
            .expect("open SQLite store");
        cache_on(&store).await;
        Fixture {
            store,
            _dir: Some(dir),
            pg: None,
        }
    }

    async fn postgres() -> Fixture {
        let admin_url = match pg_admin_url() {
            Ok(url) => url.clone(),
            Err(e) => panic!("PostgreSQL backend unavailable, so its store tests fail: {e}"),
        };
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to the PostgreSQL server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let mut url = url::Url::parse(&admin_url).expect("PostgreSQL URL");
        url.set_path(&format!("/{name}"));
        let store = Store::connect(url.as_str())
            .await
            .expect("open PostgreSQL store");
        assert_eq!(store.backend_name(), "postgres");
        cache_on(&store).await;
        Fixture {
            store,
            _dir: None,
            pg: Some((admin_url, name)),
        }
    }

    /// A second, independent store (its own pools, cache and watcher) on the same database: another process.
    async fn second_store(&self) -> Store {
        let store = match (&self._dir, &self.pg) {
            (Some(dir), _) => Store::open_sqlite(&dir.path().join("voxgate.db")).await,
            (None, Some((admin_url, name))) => {
                let mut url = url::Url::parse(admin_url).expect("PostgreSQL URL");
                url.set_path(&format!("/{name}"));
                Store::connect(url.as_str()).await
            }
            (None, None) => unreachable!("a fixture has a directory or a database"),
        };
        let store = store.expect("open a second store");
        cache_on(&store).await;
        store
    }

    /// Drops a PostgreSQL test database (a throwaway server would be removed anyway; a shared one would not).
    async fn finish(self) {
        self.store.close().await;
        if let Some((admin_url, name)) = self.pg
            && let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await
        {
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&mut admin)
                .await;
        }
    }
}

/// Starts the store's session cache (its first session read starts the watcher of other writers) and waits
/// until it serves reads, so that the whole suite runs with the cache in the way.
async fn cache_on(store: &Store) {
    store.get_session("no-such-session").await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !store.session_cache_enabled() {
        assert!(
            std::time::Instant::now() < deadline,
            "the session cache never turned on"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The URL of a PostgreSQL server for this test process: from the environment, or a throwaway one.
fn pg_admin_url() -> Result<&'static String, &'static String> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("VOXGATE_TEST_DATABASE_URL") {
            return Ok(url);
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg-test-server");
        let output = std::process::Command::new(script)
            .args(["start", "--watch-pid", &std::process::id().to_string()])
            .output()
            .map_err(|e| format!("cannot run {script}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{script} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("DATABASE_URL=").map(str::to_owned))
            .ok_or_else(|| format!("{script} printed no DATABASE_URL"))
    })
    .as_ref()
}

/// Runs each case against both backends: `sqlite::<case>` and `postgres::<case>`.
macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = super::Fixture::sqlite().await;
                    super::cases::$case(&fixture.store).await;
                    fixture.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = super::Fixture::postgres().await;
                    super::cases::$case(&fixture.store).await;
                    fixture.finish().await;
                }
            )*
        }
    };
}

both_backends!(
    ping_and_users,
    conversations_crud,
    conversation_listing_filters_and_pages,
    messages_append_and_count,
    message_pages_with_cursors,
    sessions_lifecycle,
    opening_a_session_can_record_the_user_seen,
    sessions_limits_and_expiry,
    documents_and_chunks,
    ratings,
    attachments,
    records,
    concurrent_appends_lose_nothing,
    record_turn_is_one_atomic_write,
    concurrent_turns_are_all_kept_with_exact_counts,
    one_group_commit_isolates_failed_turns,
    a_failed_group_commit_fails_every_turn_of_it,
    a_batch_is_recorded_set_based_in_submission_order,
    a_failing_turn_sends_its_batch_turn_by_turn,
    a_dropped_session_write_still_updates_the_cache,
);

/// Runs a case that needs a second store on the same database: `sqlite::<case>` and `postgres::<case>`.
macro_rules! two_stores {
    ($($case:ident),* $(,)?) => {
        mod sqlite_two_stores {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = super::Fixture::sqlite().await;
                    let second = fixture.second_store().await;
                    super::cases::$case(&fixture.store, &second).await;
                    second.close().await;
                    fixture.finish().await;
                }
            )*
        }
        mod postgres_two_stores {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = super::Fixture::postgres().await;
                    let second = fixture.second_store().await;
                    super::cases::$case(&fixture.store, &second).await;
                    second.close().await;
                    fixture.finish().await;
                }
            )*
        }
    };
}

two_stores!(session_cache_sees_another_writer);

fn conversation(owner: &str, kind: &str, scope: &str, title: &str) -> NewConversation {
    NewConversation {
        owner: owner.into(),
        kind: kind.into(),
        scope: scope.into(),
        title: title.into(),
        metadata: json!({}),
    }
}

mod cases {
    use super::*;

    pub async fn ping_and_users(store: &Store) {
        store.ping().await.unwrap();
        assert!(store.get_user("u1").await.unwrap().is_none());
        let created = store
            .upsert_user("u1", Some("Ada"), Some(&json!({"lang": "fr"})))
            .await
            .unwrap();
        assert_eq!(created.display_name.as_deref(), Some("Ada"));
        assert_eq!(created.metadata, json!({"lang": "fr"}));
        // Neither name nor metadata given: both kept, last_seen refreshed.
        let seen = store.upsert_user("u1", None, None).await.unwrap();
        assert_eq!(seen.display_name.as_deref(), Some("Ada"));
        assert_eq!(seen.metadata, json!({"lang": "fr"}));
        assert_eq!(seen.created_at, created.created_at);
        assert!(seen.last_seen_at >= created.last_seen_at);
        let replaced = store
            .upsert_user("u1", Some("Ada L."), Some(&json!({"lang": "en"})))
            .await
            .unwrap();
        assert_eq!(replaced.metadata, json!({"lang": "en"}));
        assert_eq!(store.get_user("u1").await.unwrap(), Some(replaced));
    }

    pub async fn conversations_crud(store: &Store) {
        let mut new = conversation("alice", "portfolio", "", "Analyse du portefeuille PME");
        new.metadata = json!({"portfolioId": "port456", "companyId": "comp789", "n": 3});
        let created = store.create_conversation(&new).await.unwrap();
        assert_eq!(created.owner, "alice");
        assert_eq!(created.message_count, 0);
        assert_eq!(created.created_at, created.updated_at);
        assert_eq!(
            uuid::Uuid::parse_str(&created.id)
                .unwrap()
                .get_version_num(),
            4
        );
        assert_eq!(
            store.get_conversation(&created.id).await.unwrap(),
            Some(created.clone())
        );
        assert!(store.get_conversation("missing").await.unwrap().is_none());

        // Merge: keys set, null removes, others kept.
        let mut patch = serde_json::Map::new();
        patch.insert("priority".into(), json!("high"));
        patch.insert("companyId".into(), json!(null));
        let update = ConversationUpdate {
            title: Some("Analyse approfondie".into()),
            metadata: Some(MetadataUpdate::Merge(patch)),
        };
        let updated = store
            .update_conversation(&created.id, &update)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(updated.title, "Analyse approfondie");
        assert_eq!(
            updated.metadata,
            json!({"portfolioId": "port456", "n": 3, "priority": "high"})
        );
        assert!(updated.updated_at >= created.updated_at);
        assert_eq!(updated.created_at, created.created_at);
        // Title alone leaves metadata; Replace replaces.
        let renamed = store
            .update_conversation(
                &created.id,
                &ConversationUpdate {
                    title: Some("T".into()),
                    metadata: None,
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(renamed.metadata, updated.metadata);
        let replaced = store
            .update_conversation(
                &created.id,
                &ConversationUpdate {
                    title: None,
                    metadata: Some(MetadataUpdate::Replace(json!({"a": 1}))),
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (replaced.title.as_str(), &replaced.metadata),
            ("T", &json!({"a": 1}))
        );
        assert!(
            store
                .update_conversation("missing", &update)
                .await
                .unwrap()
                .is_none()
        );

        // Delete cascades to messages.
        let message = store
            .append_message(&created.id, &NewMessage::new(Role::User, "hi"))
            .await
            .unwrap();
        assert!(store.delete_conversation(&created.id).await.unwrap());
        assert!(!store.delete_conversation(&created.id).await.unwrap());
        assert!(store.get_conversation(&created.id).await.unwrap().is_none());
        assert!(store.get_message(&message.id).await.unwrap().is_none());
        assert_eq!(store.count_messages(&created.id).await.unwrap(), 0);
    }

    pub async fn conversation_listing_filters_and_pages(store: &Store) {
        let mut ids = Vec::new();
        for i in 0..7 {
            let scope = if i % 2 == 0 { "bot-a" } else { "bot-b" };
            let mut new = conversation(
                "alice",
                "chatbot",
                scope,
                &format!("Chat {i} about 100%_sure things"),
            );
            new.metadata = json!({"portfolioId": format!("p{}", i % 3), "rank": i});
            ids.push(store.create_conversation(&new).await.unwrap().id);
            // Distinct creation times make the expected order unambiguous.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        store
            .create_conversation(&conversation("bob", "chatbot", "bot-a", "Bob's"))
            .await
            .unwrap();
        store
            .create_conversation(&conversation("alice", "lyra", "", "Other surface"))
            .await
            .unwrap();

        let mut query = ConversationQuery::by_owner("alice");
        query.kind = Some("chatbot".into());
        let all = store.list_conversations(&query).await.unwrap();
        assert_eq!(all.total, 7);
        assert!(!all.has_more);
        let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
        assert_eq!(
            all.items.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
            newest_first
        );

        // Keyset pages of 3 walk the whole list exactly once.
        let mut walked = Vec::new();
        let mut page_query = query.clone();
        page_query.limit = 3;
        loop {
            let page = store.list_conversations(&page_query).await.unwrap();
            assert_eq!(page.total, 7);
            walked.extend(page.items.iter().map(|c| c.id.clone()));
            match page.next_cursor {
                Some(cursor) => {
                    assert!(page.has_more);
                    page_query.before = Some(cursor);
                }
                None => break,
            }
        }
        assert_eq!(walked, newest_first);

        // Offset paging.
        let mut offset_query = query.clone();
        offset_query.offset = 5;
        offset_query.limit = 10;
        let tail = store.list_conversations(&offset_query).await.unwrap();
        assert_eq!(
            tail.items.iter().map(|c| c.id.clone()).collect::<Vec<_>>(),
            newest_first[5..]
        );

        // Scope, metadata (string and number) and search filters.
        let mut scoped = query.clone();
        scoped.scope = Some("bot-b".into());
        assert_eq!(store.list_conversations(&scoped).await.unwrap().total, 3);
        let mut by_meta = query.clone();
        by_meta.metadata_eq = vec![("portfolioId".into(), "p1".into())];
        let found = store.list_conversations(&by_meta).await.unwrap();
        assert_eq!(found.total, 2, "{found:?}");
        by_meta.metadata_eq.push(("rank".into(), "4".into()));
        let found = store.list_conversations(&by_meta).await.unwrap();
        assert_eq!(found.items.len(), 1);
        assert_eq!(found.items[0].id, ids[4]);
        let mut search = ConversationQuery::by_owner("alice");
        search.search = Some("CHAT 3".into());
        assert_eq!(store.list_conversations(&search).await.unwrap().total, 1);
        search.search = Some("100%_sure".into());
        assert_eq!(store.list_conversations(&search).await.unwrap().total, 7);
        search.search = Some("100%%".into());
        assert_eq!(
            store.list_conversations(&search).await.unwrap().total,
            0,
            "% must match literally"
        );

        // A cursor of someone else's conversation is refused.
        let mut bad = query.clone();
        bad.before = Some("not-a-conversation".into());
        assert!(matches!(
            store.list_conversations(&bad).await,
            Err(StoreError::InvalidCursor { .. })
        ));
    }

    pub async fn messages_append_and_count(store: &Store) {
        let conv = store
            .create_conversation(&conversation("alice", "chatbot", "a", ""))
            .await
            .unwrap();
        let mut new = NewMessage::new(Role::Assistant, "Bonjour ! ✓");
        new.metadata = json!({"model": "voxgate-local"});
        new.prompt_tokens = 12;
        new.completion_tokens = 5;
        let stored = store.append_message(&conv.id, &new).await.unwrap();
        assert_eq!(stored.conversation_id, conv.id);
        assert_eq!(stored.role, Role::Assistant);
        assert_eq!(stored.content, "Bonjour ! ✓");
        assert_eq!(stored.metadata, json!({"model": "voxgate-local"}));
        assert_eq!((stored.prompt_tokens, stored.completion_tokens), (12, 5));
        assert_eq!(
            store.get_message(&stored.id).await.unwrap(),
            Some(stored.clone())
        );

        for (i, role) in [Role::User, Role::System, Role::Tool]
            .into_iter()
            .enumerate()
        {
            let m = store
                .append_message(&conv.id, &NewMessage::new(role, format!("m{i}")))
                .await
                .unwrap();
            assert!(m.seq > stored.seq);
            assert_eq!(m.role, role);
            assert!(m.metadata.is_object());
        }
        assert_eq!(store.count_messages(&conv.id).await.unwrap(), 4);
        let after = store.get_conversation(&conv.id).await.unwrap().unwrap();
        assert_eq!(after.message_count, 4);
        assert!(after.updated_at >= stored.created_at);

        let recent = store.recent_messages(&conv.id, 2).await.unwrap();
        assert_eq!(
            recent
                .iter()
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>(),
            ["m1", "m2"]
        );

        // A question and its answer in one transaction.
        let pair = store
            .append_messages(
                &conv.id,
                &[
                    NewMessage::new(Role::User, "q"),
                    NewMessage::new(Role::Assistant, "a"),
                ],
            )
            .await
            .unwrap();
        assert_eq!(pair.len(), 2);
        assert!(pair[0].seq < pair[1].seq);
        assert_eq!((pair[0].role, pair[1].role), (Role::User, Role::Assistant));
        for message in &pair {
            // What the store answers is what it stored, `seq` included.
            assert_eq!(
                store.get_message(&message.id).await.unwrap().as_ref(),
                Some(message)
            );
        }
        assert_eq!(
            store
                .get_conversation(&conv.id)
                .await
                .unwrap()
                .unwrap()
                .message_count,
            6
        );
        assert!(
            store
                .append_messages(&conv.id, &[])
                .await
                .unwrap()
                .is_empty()
        );
        let none = store
            .append_messages("no-such-conversation", &[NewMessage::new(Role::User, "x")])
            .await;
        assert!(matches!(none, Err(StoreError::NotFound { .. })), "{none:?}");

        let missing = store
            .append_message("no-such-conversation", &NewMessage::new(Role::User, "x"))
            .await;
        assert!(
            matches!(
                missing,
                Err(StoreError::NotFound {
                    what: "conversation"
                })
            ),
            "{missing:?}"
        );
    }

    pub async fn message_pages_with_cursors(store: &Store) {
        let conv = store
            .create_conversation(&conversation("alice", "portfolio", "", ""))
            .await
            .unwrap();
        let other = store
            .create_conversation(&conversation("alice", "portfolio", "", ""))
            .await
            .unwrap();
        let foreign = store
            .append_message(&other.id, &NewMessage::new(Role::User, "elsewhere"))
            .await
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..7 {
            ids.push(
                store
                    .append_message(&conv.id, &NewMessage::new(Role::User, format!("m{i}")))
                    .await
                    .unwrap()
                    .id,
            );
        }
        let ids_of =
            |page: &Page<Message>| page.items.iter().map(|m| m.id.clone()).collect::<Vec<_>>();

        // Oldest first, following `after` cursors.
        let mut query = MessageQuery {
            limit: 3,
            ..Default::default()
        };
        let first = store.list_messages(&conv.id, &query).await.unwrap();
        assert_eq!(ids_of(&first), ids[0..3]);
        assert!(first.has_more);
        assert_eq!(first.next_cursor.as_deref(), Some(ids[2].as_str()));
        query.after = first.next_cursor.clone();
        let second = store.list_messages(&conv.id, &query).await.unwrap();
        assert_eq!(ids_of(&second), ids[3..6]);
        query.after = second.next_cursor.clone();
        let third = store.list_messages(&conv.id, &query).await.unwrap();
        assert_eq!(ids_of(&third), ids[6..7]);
        assert!(!third.has_more);
        assert_eq!(third.next_cursor, None);

        // Newest first, following `before` cursors.
        let mut query = MessageQuery {
            limit: 4,
            order: Order::Desc,
            ..Default::default()
        };
        let page = store.list_messages(&conv.id, &query).await.unwrap();
        assert_eq!(
            ids_of(&page),
            ["6", "5", "4", "3"].map(|i| ids[i.parse::<usize>().unwrap()].clone())
        );
        query.before = page.next_cursor.clone();
        let page = store.list_messages(&conv.id, &query).await.unwrap();
        assert_eq!(
            ids_of(&page),
            [ids[2].clone(), ids[1].clone(), ids[0].clone()]
        );
        assert!(!page.has_more);

        // Both bounds, and offset paging.
        let window = MessageQuery {
            after: Some(ids[1].clone()),
            before: Some(ids[5].clone()),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            ids_of(&store.list_messages(&conv.id, &window).await.unwrap()),
            ids[2..5]
        );
        let offset = MessageQuery {
            offset: 5,
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            ids_of(&store.list_messages(&conv.id, &offset).await.unwrap()),
            ids[5..7]
        );

        // A cursor from another conversation, or unknown, is refused rather than silently ignored.
        for cursor in [foreign.id.clone(), "nope".to_owned()] {
            let bad = MessageQuery {
                before: Some(cursor),
                ..Default::default()
            };
            assert!(matches!(
                store.list_messages(&conv.id, &bad).await,
                Err(StoreError::InvalidCursor { .. })
            ));
        }
        // Limits are clamped, not rejected.
        let zero = MessageQuery {
            limit: 0,
            ..Default::default()
        };
        assert_eq!(
            store
                .list_messages(&conv.id, &zero)
                .await
                .unwrap()
                .items
                .len(),
            1
        );
    }

    pub async fn opening_a_session_can_record_the_user_seen(store: &Store) {
        let conv = store
            .create_conversation(&conversation("bob", "chatbot", "bot", ""))
            .await
            .unwrap();
        let new = NewSession {
            kind: "chatbot".into(),
            scope: "bot".into(),
            user_id: "bob".into(),
            conversation_id: Some(conv.id.clone()),
            ttl: None,
            metadata: json!({}),
            close_others_in_scope: true,
            record_user_seen: true,
        };
        // A new user is inserted, seen when the session opened.
        let first = store.create_session(&new).await.unwrap();
        let bob = store.get_user("bob").await.unwrap().unwrap();
        assert_eq!(
            (bob.created_at, bob.last_seen_at),
            (first.created_at, first.created_at)
        );
        assert_eq!((bob.display_name, bob.metadata), (None, json!({})));

        // A known user keeps their name and data; only last_seen_at moves.
        store
            .upsert_user("bob", Some("Bob"), Some(&json!({"plan": "pro"})))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let second = store.create_session(&new).await.unwrap();
        let bob = store.get_user("bob").await.unwrap().unwrap();
        assert_eq!(bob.last_seen_at, second.created_at);
        assert!(bob.last_seen_at > first.created_at);
        assert_eq!(bob.created_at, first.created_at);
        assert_eq!(bob.display_name.as_deref(), Some("Bob"));
        assert_eq!(bob.metadata, json!({"plan": "pro"}));

        // Without it, nothing is written to the user.
        let carol = store
            .create_session(&NewSession {
                user_id: "carol".into(),
                record_user_seen: false,
                ..new.clone()
            })
            .await
            .unwrap();
        assert!(carol.active);
        assert_eq!(store.get_user("carol").await.unwrap(), None);

        // A refused session (its conversation is gone) records nothing either: one transaction.
        let refused = store
            .create_session(&NewSession {
                user_id: "dave".into(),
                conversation_id: Some("missing".into()),
                ..new.clone()
            })
            .await;
        assert!(
            matches!(refused, Err(StoreError::NotFound { .. })),
            "{refused:?}"
        );
        assert_eq!(store.get_user("dave").await.unwrap(), None);
    }

    pub async fn sessions_lifecycle(store: &Store) {
        let conv = store
            .create_conversation(&conversation("alice", "chatbot", "bot", ""))
            .await
            .unwrap();
        let new = NewSession {
            kind: "chatbot".into(),
            scope: "bot".into(),
            user_id: "alice".into(),
            conversation_id: Some(conv.id.clone()),
            ttl: Some(Duration::from_secs(600)),
            metadata: json!({"chatbot_id": "bot"}),
            close_others_in_scope: true,
            record_user_seen: false,
        };
        let first = store.create_session(&new).await.unwrap();
        assert!(first.active);
        assert_eq!(first.interaction_count, 0);
        assert_eq!(first.created_at, first.last_activity);
        assert_eq!(
            first.expires_at,
            Some(first.created_at + chrono::Duration::seconds(600))
        );
        assert_eq!(first.metadata, json!({"chatbot_id": "bot"}));
        assert_eq!(
            store.get_session(&first.id).await.unwrap(),
            Some(first.clone())
        );

        let touched = store
            .touch_session(&first.id, Some(Duration::from_secs(60)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(touched.interaction_count, 1);
        assert!(touched.last_activity >= first.last_activity);
        assert_eq!(
            touched.expires_at,
            Some(touched.last_activity + chrono::Duration::seconds(60))
        );
        let touched = store.touch_session(&first.id, None).await.unwrap().unwrap();
        assert_eq!(touched.interaction_count, 2);
        assert!(touched.expires_at.is_some(), "no ttl keeps the expiry");

        let with_meta = store
            .set_session_metadata(&first.id, &json!({"k": 1}))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(with_meta.metadata, json!({"k": 1}));

        // A second session in the same scope closes the first; another scope does not.
        let second = store.create_session(&new).await.unwrap();
        let first_now = store.get_session(&first.id).await.unwrap().unwrap();
        assert!(!first_now.active);
        assert!(first_now.closed_at.is_some());
        let other_scope = store
            .create_session(&NewSession {
                scope: "bot-2".into(),
                ..new.clone()
            })
            .await
            .unwrap();
        assert!(store.get_session(&second.id).await.unwrap().unwrap().active);

        // Closed sessions cannot be touched; closing twice reports it.
        assert!(
            store
                .touch_session(&first.id, None)
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.close_session(&second.id).await.unwrap());
        assert!(!store.close_session(&second.id).await.unwrap());

        assert_eq!(store.count_active_sessions().await.unwrap(), 1);
        let active = store
            .list_sessions("alice", Some("chatbot"), true)
            .await
            .unwrap();
        assert_eq!(
            active.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            [other_scope.id.as_str()]
        );
        let all = store.list_sessions("alice", None, false).await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].id, other_scope.id, "newest first");
        assert!(
            store
                .list_sessions("alice", Some("lyra"), false)
                .await
                .unwrap()
                .is_empty()
        );

        // A session's conversation may be deleted; the session stays, detached.
        store.delete_conversation(&conv.id).await.unwrap();
        assert_eq!(
            store
                .get_session(&other_scope.id)
                .await
                .unwrap()
                .unwrap()
                .conversation_id,
            None
        );
        let dangling = store
            .create_session(&NewSession {
                conversation_id: Some("missing".into()),
                ..new.clone()
            })
            .await;
        assert!(
            matches!(dangling, Err(StoreError::NotFound { .. })),
            "{dangling:?}"
        );

        assert!(store.delete_session(&first.id).await.unwrap());
        assert!(!store.delete_session(&first.id).await.unwrap());
        assert!(store.get_session(&first.id).await.unwrap().is_none());
    }

    pub async fn sessions_limits_and_expiry(store: &Store) {
        let base = NewSession {
            kind: "intentlayer".into(),
            user_id: "u".into(),
            ttl: Some(Duration::from_secs(1800)),
            metadata: json!({}),
            ..Default::default()
        };
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(store.create_session(&base).await.unwrap().id);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let no_ttl = store
            .create_session(&NewSession {
                kind: "lyra".into(),
                ttl: None,
                ..base.clone()
            })
            .await
            .unwrap();

        let mut closed = store
            .close_oldest_over_limit("u", "intentlayer", 3)
            .await
            .unwrap();
        closed.sort();
        let mut oldest = ids[0..2].to_vec();
        oldest.sort();
        assert_eq!(closed, oldest);
        assert!(
            store
                .close_oldest_over_limit("u", "intentlayer", 3)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store
                .list_sessions("u", Some("intentlayer"), true)
                .await
                .unwrap()
                .len(),
            3
        );
        assert!(
            store.get_session(&no_ttl.id).await.unwrap().unwrap().active,
            "other kinds untouched"
        );

        // Nothing is idle yet; an hour later the three live TTL sessions expire, the TTL-less one does not.
        assert!(
            store
                .expire_idle_sessions(Utc::now())
                .await
                .unwrap()
                .is_empty()
        );
        let expired = store
            .expire_idle_sessions(Utc::now() + chrono::Duration::hours(1))
            .await
            .unwrap();
        let mut expired_ids: Vec<String> = expired.iter().map(|s| s.id.clone()).collect();
        expired_ids.sort();
        let mut live = ids[2..5].to_vec();
        live.sort();
        assert_eq!(expired_ids, live);
        assert!(expired.iter().all(|s| !s.active && s.closed_at.is_some()));
        assert!(store.get_session(&no_ttl.id).await.unwrap().unwrap().active);
    }

    pub async fn documents_and_chunks(store: &Store) {
        let long: String = (0..300)
            .map(|i| format!("sentence {i} about invoices. "))
            .collect();
        let filter = DocumentFilter {
            scope: "bot".into(),
            owner: Some("alice".into()),
        };
        let empty = store.documents_fingerprint(&filter).await.unwrap();
        assert_eq!(empty.0, 0);
        let doc = store
            .add_document(&NewDocument {
                owner: "alice".into(),
                scope: "bot".into(),
                title: "Invoices".into(),
                mime: "text/plain".into(),
                content: long.clone(),
                size_bytes: long.len() as i64,
                metadata: json!({"source": "upload"}),
            })
            .await
            .unwrap();
        assert!(doc.chunk_count > 1);
        let shared = store
            .add_document(&NewDocument {
                owner: String::new(),
                scope: "bot".into(),
                title: "Opening hours".into(),
                mime: "text/plain".into(),
                content: "We open at nine.".into(),
                size_bytes: 16,
                metadata: json!({}),
            })
            .await
            .unwrap();
        let bobs = store
            .add_document(&NewDocument {
                owner: "bob".into(),
                scope: "bot".into(),
                title: "Bob's notes".into(),
                mime: "text/plain".into(),
                content: "private".into(),
                size_bytes: 7,
                metadata: json!({}),
            })
            .await
            .unwrap();
        assert_eq!(
            store.get_document(&doc.id).await.unwrap(),
            Some(doc.clone())
        );

        let visible = store.list_documents(&filter).await.unwrap();
        assert_eq!(
            visible.iter().map(|d| d.id.clone()).collect::<Vec<_>>(),
            [doc.id.clone(), shared.id.clone()]
        );
        let everything = DocumentFilter {
            scope: "bot".into(),
            owner: None,
        };
        assert_eq!(store.list_documents(&everything).await.unwrap().len(), 3);
        assert!(
            store
                .list_documents(&DocumentFilter {
                    scope: "x".into(),
                    owner: None
                })
                .await
                .unwrap()
                .is_empty()
        );

        let chunks = store.document_chunks(&filter).await.unwrap();
        assert_eq!(chunks.len() as i64, doc.chunk_count + 1);
        assert!(
            chunks[..doc.chunk_count as usize]
                .iter()
                .enumerate()
                .all(|(i, c)| c.index == i as i64
                    && c.document_id == doc.id
                    && c.document_title == "Invoices")
        );
        assert_eq!(chunks.last().unwrap().text, "We open at nine.");

        let before = store.documents_fingerprint(&filter).await.unwrap();
        assert_eq!(before.0, 2);
        assert!(store.delete_document(&shared.id).await.unwrap());
        assert!(!store.delete_document(&shared.id).await.unwrap());
        assert_ne!(store.documents_fingerprint(&filter).await.unwrap(), before);
        assert_eq!(
            store.document_chunks(&filter).await.unwrap().len() as i64,
            doc.chunk_count
        );
        assert!(store.delete_document(&bobs.id).await.unwrap());
    }

    pub async fn ratings(store: &Store) {
        let conv = store
            .create_conversation(&conversation("alice", "portfolio", "", ""))
            .await
            .unwrap();
        let msg = store
            .append_message(&conv.id, &NewMessage::new(Role::Assistant, "answer"))
            .await
            .unwrap();
        let first = store
            .upsert_rating(&msg.id, "alice", 4, Some("utile"))
            .await
            .unwrap();
        assert_eq!((first.score, first.comment.as_deref()), (4, Some("utile")));
        let again = store
            .upsert_rating(&msg.id, "alice", 2, None)
            .await
            .unwrap();
        assert_eq!(again.id, first.id, "one rating per user and message");
        assert_eq!((again.score, again.comment.as_deref()), (2, None));
        assert_eq!(again.created_at, first.created_at);
        store.upsert_rating(&msg.id, "bob", 5, None).await.unwrap();
        assert_eq!(
            store.get_rating(&msg.id, "alice").await.unwrap(),
            Some(again)
        );
        assert_eq!(store.list_ratings(&msg.id).await.unwrap().len(), 2);
        assert!(store.get_rating(&msg.id, "carol").await.unwrap().is_none());
        let missing = store.upsert_rating("no-message", "alice", 1, None).await;
        assert!(
            matches!(missing, Err(StoreError::NotFound { what: "message" })),
            "{missing:?}"
        );
    }

    pub async fn attachments(store: &Store) {
        let conv = store
            .create_conversation(&conversation("alice", "portfolio", "", ""))
            .await
            .unwrap();
        let other = store
            .create_conversation(&conversation("alice", "portfolio", "", ""))
            .await
            .unwrap();
        let msg = store
            .append_message(&conv.id, &NewMessage::new(Role::User, "see attached"))
            .await
            .unwrap();
        let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let new = NewAttachment {
            conversation_id: conv.id.clone(),
            message_id: Some(msg.id.clone()),
            owner: "alice".into(),
            filename: "rapport_analyse.pdf".into(),
            mime: "application/pdf".into(),
            data: bytes.clone(),
        };
        let att = store.add_attachment(&new).await.unwrap();
        assert_eq!(att.size_bytes, 70_000);
        assert_eq!(
            store.get_attachment(&att.id).await.unwrap(),
            Some(att.clone())
        );
        let (meta, data) = store.get_attachment_data(&att.id).await.unwrap().unwrap();
        assert_eq!(meta, att);
        assert_eq!(data, bytes);
        assert_eq!(
            store.list_attachments(&msg.id).await.unwrap(),
            vec![att.clone()]
        );

        let wrong_conversation = NewAttachment {
            conversation_id: other.id.clone(),
            ..new.clone()
        };
        assert!(matches!(
            store.add_attachment(&wrong_conversation).await,
            Err(StoreError::NotFound { .. })
        ));
        let no_conversation = NewAttachment {
            conversation_id: "missing".into(),
            message_id: None,
            ..new.clone()
        };
        assert!(matches!(
            store.add_attachment(&no_conversation).await,
            Err(StoreError::NotFound { .. })
        ));

        let loose = store
            .add_attachment(&NewAttachment {
                message_id: None,
                ..new.clone()
            })
            .await
            .unwrap();
        assert!(store.delete_attachment(&att.id).await.unwrap());
        assert!(!store.delete_attachment(&att.id).await.unwrap());
        assert!(store.get_attachment_data(&att.id).await.unwrap().is_none());
        store.delete_conversation(&conv.id).await.unwrap();
        assert!(
            store.get_attachment(&loose.id).await.unwrap().is_none(),
            "deleted with the conversation"
        );
    }

    pub async fn records(store: &Store) {
        assert!(
            store
                .get_record("profiles", "balanced")
                .await
                .unwrap()
                .is_none()
        );
        store
            .put_record("profiles", "balanced", &json!({"p1": [0.3, 0.1]}))
            .await
            .unwrap();
        store
            .put_record("profiles", "aggressive", &json!({"p1": [0.6, 0.2]}))
            .await
            .unwrap();
        store
            .put_record("profiles", "balanced", &json!({"p1": [0.4, 0.1]}))
            .await
            .unwrap();
        store
            .put_record("other", "balanced", &json!(1))
            .await
            .unwrap();
        assert_eq!(
            store.get_record("profiles", "balanced").await.unwrap(),
            Some(json!({"p1": [0.4, 0.1]}))
        );
        let keys: Vec<String> = store
            .list_records("profiles")
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["aggressive", "balanced"]);
        assert!(store.delete_record("profiles", "balanced").await.unwrap());
        assert!(!store.delete_record("profiles", "balanced").await.unwrap());
        assert_eq!(
            store.get_record("other", "balanced").await.unwrap(),
            Some(json!(1))
        );
    }

    /// Writers on several pool connections at once: every append is kept, with distinct, ordered positions.
    /// A chat turn (session touch + question + answer) is one transaction: all of it or nothing.
    pub async fn record_turn_is_one_atomic_write(store: &Store) {
        let conv = store
            .create_conversation(&conversation("alice", "intentlayer", "", ""))
            .await
            .unwrap();
        let new = NewSession {
            kind: "intentlayer".into(),
            scope: String::new(),
            user_id: "alice".into(),
            conversation_id: Some(conv.id.clone()),
            ttl: Some(Duration::from_secs(600)),
            metadata: json!({}),
            close_others_in_scope: false,
            record_user_seen: false,
        };
        let session = store.create_session(&new).await.unwrap();
        let turn = |text: &'static str| {
            move |touched: &Session| {
                let mut answer = NewMessage::new(Role::Assistant, format!("re: {text}"));
                answer.metadata = json!({"interaction": touched.interaction_count});
                vec![NewMessage::new(Role::User, text), answer]
            }
        };

        let (touched, stored) = store
            .record_turn(&session.id, Some(Duration::from_secs(60)), turn("q1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(touched.interaction_count, 1);
        assert_eq!(
            touched.expires_at,
            Some(touched.last_activity + chrono::Duration::seconds(60))
        );
        assert_eq!(
            store.get_session(&session.id).await.unwrap(),
            Some(touched.clone())
        );
        assert_eq!(stored.len(), 2);
        assert_eq!(
            (stored[0].role, stored[0].content.as_str()),
            (Role::User, "q1")
        );
        assert_eq!(
            (stored[1].role, stored[1].content.as_str()),
            (Role::Assistant, "re: q1")
        );
        assert!(stored[1].seq > stored[0].seq);
        assert_eq!(
            stored[1].metadata,
            json!({"interaction": 1}),
            "built from the touched session"
        );
        assert_eq!(
            store.get_message(&stored[1].id).await.unwrap(),
            Some(stored[1].clone())
        );
        let after = store.get_conversation(&conv.id).await.unwrap().unwrap();
        assert_eq!(after.message_count, 2);

        // Concurrent turns on one session are serialised: distinct counts, every message kept.
        let turns: Vec<_> = (0..12)
            .map(|_| {
                let store = store.clone();
                let id = session.id.clone();
                tokio::spawn(async move {
                    store
                        .record_turn(&id, None, turn("q"))
                        .await
                        .unwrap()
                        .unwrap()
                })
            })
            .collect();
        let mut counts = Vec::new();
        for handle in turns {
            let (touched, stored) = handle.await.unwrap();
            assert_eq!(
                stored[1].metadata,
                json!({"interaction": touched.interaction_count})
            );
            counts.push(touched.interaction_count);
        }
        counts.sort_unstable();
        assert_eq!(counts, (2..=13).collect::<Vec<i64>>());
        assert_eq!(store.count_messages(&conv.id).await.unwrap(), 26);

        // A session without a conversation: an error, and the touch is rolled back.
        let bare = store
            .create_session(&NewSession {
                conversation_id: None,
                ..new.clone()
            })
            .await
            .unwrap();
        let err = store
            .record_turn(&bare.id, None, turn("lost"))
            .await
            .unwrap_err();
        assert_missing_conversation(&err);
        assert_eq!(interactions(store, &bare.id).await, 0);

        // A closed or unknown session: `None`, the messages are never built, nothing is written.
        assert!(store.close_session(&session.id).await.unwrap());
        let never =
            |_: &Session| -> Vec<NewMessage> { panic!("messages built for a closed session") };
        assert!(
            store
                .record_turn(&session.id, None, never)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .record_turn("no-such-session", None, never)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.count_messages(&conv.id).await.unwrap(), 26);
        assert_eq!(interactions(store, &session.id).await, 13);
    }

    /// A session for turns: intentlayer kind, with its own conversation unless `conversation` is false.
    async fn turn_session(
        store: &Store,
        user: &str,
        conversation: bool,
    ) -> (Session, Option<String>) {
        let conv = if conversation {
            Some(
                store
                    .create_conversation(&super::conversation(user, "intentlayer", "", ""))
                    .await
                    .unwrap()
                    .id,
            )
        } else {
            None
        };
        let session = store
            .create_session(&NewSession {
                kind: "intentlayer".into(),
                scope: String::new(),
                user_id: user.into(),
                conversation_id: conv.clone(),
                ttl: None,
                metadata: json!({}),
                close_others_in_scope: false,
                record_user_seen: false,
            })
            .await
            .unwrap();
        (session, conv)
    }

    /// A turn whose answer records the interaction count it was built from.
    fn echo_turn(text: String) -> impl FnOnce(&Session) -> Vec<NewMessage> + Send + 'static {
        move |touched: &Session| {
            let mut answer = NewMessage::new(Role::Assistant, format!("re: {text}"));
            answer.metadata = json!({"interaction": touched.interaction_count});
            vec![NewMessage::new(Role::User, text), answer]
        }
    }

    pub async fn concurrent_turns_are_all_kept_with_exact_counts(store: &Store) {
        const SESSIONS: usize = 6;
        const TURNS_PER_SESSION: usize = 30;
        let mut sessions = Vec::new();
        for i in 0..SESSIONS {
            sessions.push(turn_session(store, &format!("user{i}"), true).await);
        }
        let (closed, _) = turn_session(store, "closer", true).await;
        assert!(store.close_session(&closed.id).await.unwrap());
        let (bare, _) = turn_session(store, "bare", false).await;

        // Every turn its own task, interleaved across sessions, with turns that must fail mixed in.
        let mut tasks = Vec::new();
        for turn in 0..TURNS_PER_SESSION {
            for (i, (session, _)) in sessions.iter().enumerate() {
                let store = store.clone();
                let id = session.id.clone();
                let text = format!("s{i} t{turn}");
                tasks.push(tokio::spawn(async move {
                    let (touched, stored) = store
                        .record_turn(&id, None, echo_turn(text.clone()))
                        .await
                        .expect("a turn on a live session")
                        .expect("the session is active");
                    assert_eq!(touched.id, id);
                    assert_eq!(stored.len(), 2);
                    assert_eq!(stored[0].content, text);
                    assert_eq!(
                        stored[1].metadata,
                        json!({"interaction": touched.interaction_count})
                    );
                    assert!(stored[0].seq < stored[1].seq);
                    (i, touched.interaction_count, stored)
                }));
            }
            if turn % 5 == 0 {
                let store = store.clone();
                let (closed, bare) = (closed.id.clone(), bare.id.clone());
                tasks.push(tokio::spawn(async move {
                    assert!(
                        store
                            .record_turn(&closed, None, echo_turn("x".into()))
                            .await
                            .unwrap()
                            .is_none()
                    );
                    let err = store
                        .record_turn(&bare, None, echo_turn("y".into()))
                        .await
                        .unwrap_err();
                    assert_missing_conversation(&err);
                    (usize::MAX, 0, Vec::new())
                }));
            }
        }
        let mut counts = vec![Vec::new(); SESSIONS];
        for task in tasks {
            let (i, count, stored) = task.await.expect("turn task");
            if i == usize::MAX {
                continue;
            }
            counts[i].push(count);
            for message in stored {
                // Acknowledged means stored.
                assert_eq!(store.get_message(&message.id).await.unwrap(), Some(message));
            }
        }
        for (i, (session, conv)) in sessions.iter().enumerate() {
            counts[i].sort_unstable();
            assert_eq!(
                counts[i],
                (1..=TURNS_PER_SESSION as i64).collect::<Vec<_>>(),
                "distinct, gapless interaction counts"
            );
            let conv = conv.as_deref().unwrap();
            assert_eq!(
                store.count_messages(conv).await.unwrap(),
                2 * TURNS_PER_SESSION as i64
            );
            assert_eq!(
                store
                    .get_conversation(conv)
                    .await
                    .unwrap()
                    .unwrap()
                    .message_count,
                2 * TURNS_PER_SESSION as i64
            );
            assert_eq!(
                interactions(store, &session.id).await,
                TURNS_PER_SESSION as i64
            );
        }
        assert_eq!(interactions(store, &closed.id).await, 0);
        assert_eq!(interactions(store, &bare.id).await, 0);
    }

    /// Holds the database's write lock (SQLite) or a lock on `sessions` that blocks updates (PostgreSQL) on a
    /// connection of its own, so the turn writer blocks in its current batch and later turns queue up.
    async fn hold_session_writes(store: &Store) -> Box<dyn std::any::Any + Send> {
        match store.backend() {
            store::Backend::Sqlite(s) => {
                let mut conn = s.pool().acquire().await.unwrap();
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                Box::new(conn)
            }
            store::Backend::Postgres(p) => {
                let mut conn = p.pool().acquire().await.unwrap();
                sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
                sqlx::query("LOCK TABLE sessions IN SHARE MODE")
                    .execute(&mut *conn)
                    .await
                    .unwrap();
                Box::new(conn)
            }
        }
    }

    async fn release_session_writes(store: &Store, held: Box<dyn std::any::Any + Send>) {
        match store.backend() {
            store::Backend::Sqlite(_) => {
                let mut conn = *held
                    .downcast::<sqlx::pool::PoolConnection<sqlx::Sqlite>>()
                    .unwrap();
                sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
            }
            store::Backend::Postgres(_) => {
                let mut conn = *held
                    .downcast::<sqlx::pool::PoolConnection<sqlx::Postgres>>()
                    .unwrap();
                sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
            }
        }
    }

    pub async fn one_group_commit_isolates_failed_turns(store: &Store) {
        // One writer: every turn queued while it is blocked goes into its next batch (PostgreSQL has several).
        let store = &store.clone().with_turn_writers(1);
        let (a, a_conv) = turn_session(store, "a", true).await;
        let (b, b_conv) = turn_session(store, "b", true).await;
        let (bare, _) = turn_session(store, "bare", false).await;
        let (closed, _) = turn_session(store, "closed", true).await;
        let (doomed, doomed_conv) = turn_session(store, "doomed", true).await;
        assert!(store.close_session(&closed.id).await.unwrap());

        // The first turn takes the writer and blocks on the held lock; the others queue behind it and are then
        // taken together as the next batch: one transaction, one commit.
        let held = hold_session_writes(store).await;
        type Build = Box<dyn FnOnce(&Session) -> Vec<NewMessage> + Send>;
        let spawn = |id: String, build: Build| {
            let store = store.clone();
            tokio::spawn(async move { store.record_turn(&id, None, build).await })
        };
        let blocked = spawn(a.id.clone(), Box::new(echo_turn("first".into())));
        // Time for the writer to take it and block (a loaded machine may be slow to schedule the tasks).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let batch = vec![
            spawn(a.id.clone(), Box::new(echo_turn("a1".into()))),
            spawn(
                bare.id.clone(),
                Box::new(echo_turn("no conversation".into())),
            ),
            spawn(b.id.clone(), Box::new(echo_turn("b1".into()))),
            spawn(closed.id.clone(), Box::new(echo_turn("closed".into()))),
            spawn(
                doomed.id.clone(),
                Box::new(|_: &Session| -> Vec<NewMessage> { panic!("a turn builder that fails") }),
            ),
            spawn(a.id.clone(), Box::new(echo_turn("a2".into()))),
            spawn(
                "no-such-session".into(),
                Box::new(echo_turn("unknown".into())),
            ),
        ];
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!blocked.is_finished(), "the writer waits for the held lock");
        release_session_writes(store, held).await;

        let (first, _) = blocked.await.unwrap().unwrap().unwrap();
        let mut results = Vec::new();
        for task in batch {
            results.push(task.await.unwrap());
        }
        let mut results = results.into_iter();
        let (a1, a1_messages) = results.next().unwrap().unwrap().unwrap();
        let err = results.next().unwrap().unwrap_err();
        assert_missing_conversation(&err);
        let (b1, b1_messages) = results.next().unwrap().unwrap().unwrap();
        assert!(
            results.next().unwrap().unwrap().is_none(),
            "a closed session records nothing"
        );
        let err = results.next().unwrap().unwrap_err();
        assert_messages_refused(&err);
        let (a2, a2_messages) = results.next().unwrap().unwrap().unwrap();
        assert!(
            results.next().unwrap().unwrap().is_none(),
            "an unknown session records nothing"
        );

        // Turns of one session, two of them in one batch: distinct counts (in the order the spawned tasks
        // happened to queue them), each built into its own answer.
        let mut counts = [
            first.interaction_count,
            a1.interaction_count,
            a2.interaction_count,
        ];
        counts.sort_unstable();
        assert_eq!(counts, [1, 2, 3]);
        assert_eq!(
            a1_messages[1].metadata,
            json!({"interaction": a1.interaction_count})
        );
        assert_eq!(
            a2_messages[1].metadata,
            json!({"interaction": a2.interaction_count})
        );
        assert_eq!(b1.interaction_count, 1);
        // One batch: the turns share the transaction's timestamp.
        let stamps: std::collections::BTreeSet<_> = [&a1_messages, &b1_messages, &a2_messages]
            .iter()
            .flat_map(|m| m.iter().map(|m| m.created_at))
            .collect();
        assert_eq!(stamps.len(), 1, "one group commit");
        // The failed turns rolled back alone: their touches are undone, the others' writes kept.
        for (id, count) in [
            (&bare.id, 0),
            (&doomed.id, 0),
            (&closed.id, 0),
            (&a.id, 3),
            (&b.id, 1),
        ] {
            assert_eq!(interactions(store, id).await, count, "{id}");
        }
        assert_eq!(messages_in(store, &a_conv).await, 6);
        assert_eq!(messages_in(store, &b_conv).await, 2);
        assert_eq!(messages_in(store, &doomed_conv).await, 0);

        // The writer survived the panicking builder.
        let (doomed_now, _) = store
            .record_turn(&doomed.id, None, echo_turn("again".into()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(doomed_now.interaction_count, 1);
    }

    /// The error of a write whose conversation does not exist (any more).
    /// The error of a turn whose messages could not be built (its builder panicked).
    fn assert_messages_refused(err: &StoreError) {
        assert!(
            matches!(
                err,
                StoreError::Invalid {
                    field: "messages",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    fn assert_missing_conversation(err: &StoreError) {
        assert!(
            matches!(
                err,
                StoreError::NotFound {
                    what: "conversation"
                }
            ),
            "{err:?}"
        );
    }

    /// A stored session's interaction count.
    async fn interactions(store: &Store, id: &str) -> i64 {
        let session = store.get_session(id).await.expect("read the session");
        session.expect("the session exists").interaction_count
    }

    /// Messages stored in a session's conversation.
    async fn messages_in(store: &Store, conversation: &Option<String>) -> i64 {
        let id = conversation
            .as_deref()
            .expect("the session has a conversation");
        store.count_messages(id).await.expect("count messages")
    }

    /// Runs a schema script (several statements) on the store's database, in the backend's dialect.
    async fn execute_script(store: &Store, sqlite: String, postgres: String) {
        match store.backend() {
            store::Backend::Sqlite(s) => sqlx::raw_sql(sqlx::AssertSqlSafe(sqlite))
                .execute(s.pool())
                .await
                .map(drop),
            store::Backend::Postgres(p) => sqlx::raw_sql(sqlx::AssertSqlSafe(postgres))
                .execute(p.pool())
                .await
                .map(drop),
        }
        .expect("the schema script runs");
    }

    /// Makes every later COMMIT that contains a message with `content` fail: a deferred constraint, checked
    /// only at commit time.
    async fn poison_commits_with(store: &Store, content: &str) {
        let sqlite = format!(
            "CREATE TABLE commit_guard (conversation_id TEXT \
             REFERENCES conversations (id) DEFERRABLE INITIALLY DEFERRED); \
             CREATE TRIGGER poison AFTER INSERT ON messages WHEN NEW.content = '{content}' \
             BEGIN INSERT INTO commit_guard VALUES ('no such conversation'); END"
        );
        let postgres = format!(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'poisoned commit'; END $$; \
             CREATE CONSTRAINT TRIGGER poison AFTER INSERT ON messages \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW \
             WHEN (NEW.content = '{content}') EXECUTE FUNCTION poison()"
        );
        execute_script(store, sqlite, postgres).await;
    }

    pub async fn a_failed_group_commit_fails_every_turn_of_it(store: &Store) {
        // One writer: every turn queued while it is blocked goes into its next batch (PostgreSQL has several).
        let store = &store.clone().with_turn_writers(1);
        let (a, a_conv) = turn_session(store, "a", true).await;
        let (b, b_conv) = turn_session(store, "b", true).await;
        // Cached before the batch, so a stale touched row would show.
        assert_eq!(interactions(store, &a.id).await, 0);
        poison_commits_with(store, "poison").await;

        let held = hold_session_writes(store).await;
        let spawn = |id: String, text: &str| {
            let store = store.clone();
            let build = echo_turn(text.to_owned());
            tokio::spawn(async move { store.record_turn(&id, None, build).await })
        };
        let blocked = spawn(b.id.clone(), "first");
        // Time for the writer to take it and block (a loaded machine may be slow to schedule the tasks).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let batch = [
            spawn(a.id.clone(), "fine"),
            spawn(b.id.clone(), "poison"),
            spawn(a.id.clone(), "fine too"),
        ];
        tokio::time::sleep(Duration::from_millis(200)).await;
        release_session_writes(store, held).await;
        let (first, _) = blocked.await.unwrap().unwrap().unwrap();
        assert_eq!(first.interaction_count, 1);

        // The poisoned turn itself succeeded inside the transaction; the COMMIT failed, so every turn of the
        // batch gets the error and nothing of it is stored or cached.
        for task in batch {
            let err = task.await.unwrap().unwrap_err();
            assert!(matches!(err, StoreError::GroupCommit(_)), "{err:?}");
            assert!(err.is_backend_failure());
        }
        assert_eq!(interactions(store, &a.id).await, 0);
        assert_eq!(interactions(store, &b.id).await, 1);
        assert_eq!(messages_in(store, &a_conv).await, 0);
        assert_eq!(messages_in(store, &b_conv).await, 2);

        // The writer goes on with the next batch.
        let (again, _) = store
            .record_turn(&a.id, None, echo_turn("after".into()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.interaction_count, 1);
        assert_eq!(store.get_session(&a.id).await.unwrap(), Some(again));
    }

    type Build = Box<dyn FnOnce(&Session) -> Vec<NewMessage> + Send>;
    type Outcome = Result<Option<(Session, Vec<Message>)>, StoreError>;

    /// Records `turns` (session id, TTL, builder) as ONE batch, queued in this order: a turn on `blocker` first
    /// takes the only writer and waits for a held lock while the others queue behind it. Returns the blocker's
    /// outcome and the turns' outcomes in order.
    async fn one_batch(
        store: &Store,
        blocker: &str,
        turns: Vec<(String, Option<Duration>, Build)>,
    ) -> (Outcome, Vec<Outcome>) {
        let held = hold_session_writes(store).await;
        let first = {
            let (store, id) = (store.clone(), blocker.to_owned());
            tokio::spawn(async move {
                store
                    .record_turn(&id, None, echo_turn("first".into()))
                    .await
            })
        };
        // Time for the writer to take it and block (a loaded machine may be slow to schedule the tasks).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut pending: Vec<_> = turns
            .into_iter()
            .map(|(id, ttl, build)| {
                let store = store.clone();
                Box::pin(async move { store.record_turn(&id, ttl, build).await })
            })
            .collect();
        // A turn is queued by its future's first poll, so this order is the submission order.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for turn in &mut pending {
            assert!(
                turn.as_mut().poll(&mut cx).is_pending(),
                "the writer is blocked"
            );
        }
        assert!(!first.is_finished(), "the writer waits for the held lock");
        release_session_writes(store, held).await;
        let first = first.await.unwrap();
        let mut outcomes = Vec::new();
        for turn in pending {
            outcomes.push(turn.await);
        }
        (first, outcomes)
    }

    /// The contents of a conversation's messages in order, checking their seq and its `message_count`.
    async fn conversation_log(store: &Store, conversation: &Option<String>) -> Vec<String> {
        let id = conversation
            .as_deref()
            .expect("the session has a conversation");
        let page = store
            .list_messages(
                id,
                &MessageQuery {
                    limit: 100,
                    order: Order::Asc,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(
            page.items.windows(2).all(|w| w[0].seq < w[1].seq),
            "increasing seq"
        );
        let counted = store
            .get_conversation(id)
            .await
            .unwrap()
            .unwrap()
            .message_count;
        assert_eq!(counted, page.items.len() as i64, "message_count");
        page.items.into_iter().map(|m| m.content).collect()
    }

    pub async fn a_batch_is_recorded_set_based_in_submission_order(store: &Store) {
        let store = &store.clone().with_turn_writers(1);
        let (a, a_conv) = turn_session(store, "a", true).await;
        let (b, b_conv) = turn_session(store, "b", true).await;
        let (closed, _) = turn_session(store, "closed", true).await;
        assert!(store.close_session(&closed.id).await.unwrap());
        let before = store.turn_batches();
        let ttl = Some(Duration::from_secs(90));
        let turn = |id: &str, ttl, text: &str| -> (String, Option<Duration>, Build) {
            (id.to_owned(), ttl, Box::new(echo_turn(text.to_owned())))
        };
        let (first, outcomes) = one_batch(
            store,
            &b.id,
            vec![
                turn(&a.id, ttl, "a1"),
                turn(&b.id, None, "b2"),
                turn(&a.id, ttl, "a2"),
                turn(&closed.id, None, "closed"),
                turn("no-such-session", None, "unknown"),
                turn(&a.id, ttl, "a3"),
            ],
        )
        .await;
        assert_eq!(first.unwrap().unwrap().0.interaction_count, 1);
        let [a1, b2, a2, closed_outcome, unknown_outcome, a3]: [_; 6] = outcomes
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        let (a1, b2, a2, a3) = (a1.unwrap(), b2.unwrap(), a2.unwrap(), a3.unwrap());
        assert!(closed_outcome.is_none() && unknown_outcome.is_none());

        // A session with three turns in the batch: +3, and the turns see 1, 2, 3 in submission order, each
        // built into its own answer, with the expiry their TTL sets.
        for (count, (touched, stored)) in [(1, &a1), (2, &a2), (3, &a3)] {
            assert_eq!(touched.interaction_count, count);
            assert_eq!(stored[1].metadata, json!({"interaction": count}));
            assert_eq!(
                touched.expires_at,
                Some(touched.last_activity + chrono::Duration::seconds(90))
            );
        }
        assert_eq!(b2.0.interaction_count, 2);
        assert_eq!(store.get_session(&a.id).await.unwrap(), Some(a3.0.clone()));
        assert_eq!(
            conversation_log(store, &a_conv).await,
            ["a1", "re: a1", "a2", "re: a2", "a3", "re: a3"]
        );
        assert_eq!(
            conversation_log(store, &b_conv).await,
            ["first", "re: first", "b2", "re: b2"]
        );
        for (_, stored) in [&a1, &a2, &a3, &b2] {
            for message in stored {
                assert_eq!(
                    store.get_message(&message.id).await.unwrap().as_ref(),
                    Some(message)
                );
            }
        }
        assert_eq!(interactions(store, &closed.id).await, 0);
        // Both batches (the blocker's and this one) went the set-based way.
        let after = store.turn_batches();
        assert_eq!(
            after.set_based - before.set_based,
            2,
            "{before:?} → {after:?}"
        );
        assert_eq!(
            after.turn_by_turn, before.turn_by_turn,
            "{before:?} → {after:?}"
        );
    }

    /// Makes the database refuse (at once, not at commit) every message row with `content`.
    async fn refuse_rows_with(store: &Store, content: &str) {
        let sqlite = format!(
            "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.content = '{content}' \
             BEGIN SELECT RAISE(ABORT, 'refused row'); END"
        );
        let postgres = format!(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'refused row'; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON messages FOR EACH ROW \
             WHEN (NEW.content = '{content}') EXECUTE FUNCTION refuse()"
        );
        execute_script(store, sqlite, postgres).await;
    }

    pub async fn a_failing_turn_sends_its_batch_turn_by_turn(store: &Store) {
        let store = &store.clone().with_turn_writers(1);
        let (a, a_conv) = turn_session(store, "a", true).await;
        let (b, b_conv) = turn_session(store, "b", true).await;
        let (c, c_conv) = turn_session(store, "c", true).await;
        let (bare, _) = turn_session(store, "bare", false).await;
        let echo = |id: &str, text: &str| -> (String, Option<Duration>, Build) {
            (id.to_owned(), None, Box::new(echo_turn(text.to_owned())))
        };
        let before = store.turn_batches();

        // A panicking builder between two turns of its session: as turn by turn, it fails and rolls back alone,
        // so the next turn of the session sees the count after the first one's (the first one's messages were
        // built once, by the set-based attempt, and are stored as built).
        let panics: Build =
            Box::new(|_: &Session| -> Vec<NewMessage> { panic!("a turn builder that fails") });
        let (_, outcomes) = one_batch(
            store,
            &b.id,
            vec![
                echo(&a.id, "a1"),
                (a.id.clone(), None, panics),
                echo(&a.id, "a2"),
                echo(&b.id, "b2"),
                echo(&bare.id, "no conversation"),
            ],
        )
        .await;
        let mut outcomes = outcomes.into_iter();
        let (a1, a1_stored) = outcomes.next().unwrap().unwrap().unwrap();
        let err = outcomes.next().unwrap().unwrap_err();
        assert_messages_refused(&err);
        let (a2, a2_stored) = outcomes.next().unwrap().unwrap().unwrap();
        let (b2, _) = outcomes.next().unwrap().unwrap().unwrap();
        let err = outcomes.next().unwrap().unwrap_err();
        assert_missing_conversation(&err);
        assert_eq!(
            (
                a1.interaction_count,
                a2.interaction_count,
                b2.interaction_count
            ),
            (1, 2, 2)
        );
        assert_eq!(a1_stored[1].metadata, json!({"interaction": 1}));
        assert_eq!(a2_stored[1].metadata, json!({"interaction": 2}));
        assert_eq!(interactions(store, &a.id).await, 2);
        assert_eq!(interactions(store, &bare.id).await, 0);
        assert_eq!(
            conversation_log(store, &a_conv).await,
            ["a1", "re: a1", "a2", "re: a2"]
        );
        let middle = store.turn_batches();
        assert_eq!(
            middle.turn_by_turn - before.turn_by_turn,
            1,
            "{before:?} → {middle:?}"
        );

        // A row the database refuses fails its turn alone; the others of the batch are stored.
        refuse_rows_with(store, "refused").await;
        let (_, outcomes) = one_batch(
            store,
            &a.id,
            vec![echo(&b.id, "b3"), echo(&c.id, "refused"), echo(&b.id, "b4")],
        )
        .await;
        let mut outcomes = outcomes.into_iter();
        let (b3, _) = outcomes.next().unwrap().unwrap().unwrap();
        let err = outcomes.next().unwrap().unwrap_err();
        assert!(matches!(err, StoreError::Database(_)), "{err:?}");
        let (b4, _) = outcomes.next().unwrap().unwrap().unwrap();
        assert_eq!((b3.interaction_count, b4.interaction_count), (3, 4));
        assert_eq!(interactions(store, &c.id).await, 0);
        assert!(conversation_log(store, &c_conv).await.is_empty());
        assert_eq!(
            conversation_log(store, &b_conv).await,
            [
                "first",
                "re: first",
                "b2",
                "re: b2",
                "b3",
                "re: b3",
                "b4",
                "re: b4"
            ]
        );
        let after = store.turn_batches();
        assert_eq!(
            after.turn_by_turn - middle.turn_by_turn,
            1,
            "{middle:?} → {after:?}"
        );
        // The blockers' batches went the set-based way.
        assert_eq!(
            after.set_based - before.set_based,
            2,
            "{before:?} → {after:?}"
        );
    }

    pub async fn a_dropped_session_write_still_updates_the_cache(store: &Store) {
        let (session, _) = turn_session(store, "alice", true).await;
        assert!(
            store
                .get_session(&session.id)
                .await
                .unwrap()
                .unwrap()
                .active
        );
        // The caller gives up after the first poll (a client that went away). A session write, once started,
        // is carried through: the close commits, and the cache hears of it.
        let mut close = Box::pin(store.close_session(&session.id));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(close.as_mut().poll(&mut cx).is_pending());
        drop(close);
        let started = std::time::Instant::now();
        loop {
            // Straight from the database (listings are never cached).
            let listed = store.list_sessions("alice", None, false).await.unwrap();
            if !listed.iter().any(|s| s.id == session.id && s.active) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the close never committed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Committed, so the cache must not keep serving the active row.
        until_seen(store, &session.id, |s| s.is_some_and(|s| !s.active)).await;
    }

    /// Polls `first` until `done` holds for its session read, or fails after a generous multiple of the
    /// documented bound (250 ms on SQLite; a notification's delivery on PostgreSQL). Returns the wait.
    async fn until_seen(
        first: &Store,
        id: &str,
        done: impl Fn(Option<&Session>) -> bool,
    ) -> Duration {
        let started = std::time::Instant::now();
        loop {
            let session = first.get_session(id).await.unwrap();
            if done(session.as_ref()) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the write never became visible through the cache"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn session_cache_sees_another_writer(first: &Store, second: &Store) {
        let (session, _) = turn_session(first, "alice", true).await;
        assert_eq!(
            first.get_session(&session.id).await.unwrap(),
            Some(session.clone())
        );

        // The read is really served from the cache: a write made beside it (through the backend directly, on
        // this store's own connections) is not seen by this store.
        let touched = match first.backend() {
            store::Backend::Sqlite(s) => s.touch_session(&session.id, None).await,
            store::Backend::Postgres(p) => p.touch_session(&session.id, None).await,
        }
        .unwrap()
        .unwrap();
        assert_eq!(touched.interaction_count, 1);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            first
                .get_session(&session.id)
                .await
                .unwrap()
                .unwrap()
                .interaction_count,
            0,
            "served from the cache"
        );

        // Another store's writes become visible within the bound: a turn, a close, a delete.
        let (turned, _) = second
            .record_turn(&session.id, None, echo_turn("from the second".into()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(turned.interaction_count, 2);
        let waits = [
            until_seen(first, &session.id, |s| {
                s.is_some_and(|s| s.interaction_count == 2)
            })
            .await,
            {
                assert!(second.close_session(&session.id).await.unwrap());
                until_seen(first, &session.id, |s| s.is_some_and(|s| !s.active)).await
            },
            {
                assert!(second.delete_session(&session.id).await.unwrap());
                until_seen(first, &session.id, |s| s.is_none()).await
            },
        ];
        // Generous multiples of the documented bounds (250 ms polls on SQLite; a notification's delivery on
        // PostgreSQL), for a loaded machine.
        let bound = match first.backend() {
            store::Backend::Sqlite(_) => store::sqlite::DATA_VERSION_POLL * 8,
            store::Backend::Postgres(_) => Duration::from_secs(1),
        };
        for wait in waits {
            assert!(wait <= bound, "seen after {wait:?}, bound {bound:?}");
        }
        // The second store, which wrote, saw its own writes at once.
        assert_eq!(second.get_session(&session.id).await.unwrap(), None);
    }

    pub async fn concurrent_appends_lose_nothing(store: &Store) {
        let conv = store
            .create_conversation(&conversation("alice", "chatbot", "a", ""))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for writer in 0..4 {
            let store = store.clone();
            let id = conv.id.clone();
            tasks.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..25 {
                    let m = store
                        .append_message(
                            &id,
                            &NewMessage::new(Role::User, format!("w{writer} m{i}")),
                        )
                        .await;
                    seqs.push(m.expect("append under contention").seq);
                }
                seqs
            }));
        }
        let mut seqs = Vec::new();
        for task in tasks {
            let mine = task.await.unwrap();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "one writer's messages stay in order"
            );
            seqs.extend(mine);
        }
        seqs.sort();
        seqs.dedup();
        assert_eq!(seqs.len(), 100);
        assert_eq!(store.count_messages(&conv.id).await.unwrap(), 100);
        assert_eq!(
            store
                .get_conversation(&conv.id)
                .await
                .unwrap()
                .unwrap()
                .message_count,
            100
        );
    }
}

/// SQLite only: the WAL reaches the database file while the store is busy, by the store's background
/// checkpoint, long before the writer's own automatic checkpoint (16,384 WAL pages) would do it.
#[tokio::test]
async fn sqlite_checkpoints_the_wal_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voxgate.db");
    let store = Store::open_sqlite(&path).await.unwrap();
    // A session read starts the store's background tasks.
    assert_eq!(store.get_session("none").await.unwrap(), None);
    let conv = store
        .create_conversation(&conversation("alice", "chatbot", "a", ""))
        .await
        .unwrap();
    let file_size = || std::fs::metadata(&path).unwrap().len();
    let before = file_size();
    // About 1 MB of messages: a few hundred WAL pages, far below the writer's threshold.
    let text = "x".repeat(4_000);
    for _ in 0..250 {
        store
            .append_message(&conv.id, &NewMessage::new(Role::User, text.clone()))
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while file_size() < before + 1_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {} bytes (from {before}): no checkpoint",
            file_size()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.close().await;
}

/// SQLite only: the expiry sweep and the active-session count go through the index of active sessions
/// (migration 0003), not a scan of every session ever opened, and nothing indexes what a chat turn changes.
#[tokio::test]
async fn sqlite_finds_active_sessions_by_their_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voxgate.db");
    let store = Store::open_sqlite(&path).await.unwrap();
    store.close().await;
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    // The statements of `expire_idle_sessions` and `count_active_sessions`.
    for statement in [
        "UPDATE sessions SET active = FALSE, closed_at = $1 \
         WHERE active = TRUE AND expires_at IS NOT NULL AND expires_at <= $1",
        "SELECT COUNT(*) FROM sessions WHERE active = TRUE",
    ] {
        let plan: Vec<(i64, i64, i64, String)> =
            // Audited: two constant statements.
            sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {statement}")))
                .bind(0_i64)
                .fetch_all(&mut db)
                .await
                .unwrap();
        let plan: Vec<&str> = plan.iter().map(|row| row.3.as_str()).collect();
        assert!(
            plan.iter()
                .any(|step| step.contains("INDEX sessions_active")),
            "{statement}: {plan:?}"
        );
    }
    let indexed: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT ii.name FROM sqlite_master AS m, pragma_index_info(m.name) AS ii \
         WHERE m.type = 'index' AND m.tbl_name = 'sessions'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    for touched in ["last_activity", "interaction_count", "expires_at"] {
        assert!(
            !indexed.iter().any(|(column,)| column == touched),
            "{touched} is indexed: {indexed:?}"
        );
    }
}

/// SQLite only: what was committed is there after the store is closed and opened again (migrations re-run
/// as a no-op).
#[tokio::test]
async fn sqlite_reopen_keeps_committed_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/voxgate.db");
    let store = Store::open_sqlite(&path).await.unwrap();
    let conv = store
        .create_conversation(&conversation("alice", "chatbot", "a", "kept"))
        .await
        .unwrap();
    let msg = store
        .append_message(&conv.id, &NewMessage::new(Role::User, "durable"))
        .await
        .unwrap();
    store.close().await;
    let reopened = Store::open_sqlite(&path).await.unwrap();
    assert_eq!(reopened.get_message(&msg.id).await.unwrap(), Some(msg));
    assert_eq!(
        reopened
            .get_conversation(&conv.id)
            .await
            .unwrap()
            .unwrap()
            .title,
        "kept"
    );
    // The same file through a URL, as `--database-url sqlite://…` gives it.
    reopened.close().await;
    let by_url = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(by_url.count_messages(&conv.id).await.unwrap(), 1);
    assert!(matches!(
        Store::connect("mysql://x").await,
        Err(StoreError::Invalid { .. })
    ));
}
