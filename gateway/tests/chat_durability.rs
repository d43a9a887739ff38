//! Acknowledged chat messages survive SIGKILL.
//!
//! The real `voxgate` binary runs on a data directory (SQLite) or a fresh PostgreSQL database. Clients
//! stream messages over the chatbot WebSocket and the IntentLayer chat endpoint and record every message the
//! server acknowledged (`message_received`, a `success` response). The process is killed with SIGKILL
//! (`Child::kill` on Unix) while messages are in flight, restarted on the same storage, and every
//! acknowledged message must be in the history.
//!
//! PostgreSQL: `VOXGATE_TEST_DATABASE_URL` names a server (scripts/test starts a throwaway one); without it the
//! test starts one itself with `scripts/pg-test-server`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use voxgate::chat::Store;

const JWT_SECRET: &str = "durability-test-secret";
/// Messages each client tries to send; the kill comes long before the end.
const MESSAGES_PER_CLIENT: usize = 400;
/// Acknowledgements to wait for before the kill.
const ACKS_BEFORE_KILL: usize = 25;

/// A `voxgate` process on a fixed address.
struct Gateway {
    child: Child,
    addr: SocketAddr,
}

impl Gateway {
    fn start(data_dir: &Path, database_url: Option<&str>) -> Gateway {
        // Reserve a free port, release it, and hand it to the child.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_voxgate"));
        command
            .arg("--http-addr")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("VOXGATE_JWT_SECRET", JWT_SECRET)
            .env("VOXGATE_WS_MESSAGES_PER_MINUTE", "100000")
            // The IntentLayer clients post back to back, far past the default rate limit.
            .env("VOXGATE_INTENTLAYER_RATE_PER_MINUTE", "0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(url) = database_url {
            command.arg("--database-url").arg(url);
        }
        let child = command.spawn().expect("voxgate binary starts");
        Gateway { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("voxgate exited early with {status}");
            }
            if let Ok(response) = client.get(self.url("/health")).send().await
                && response.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("voxgate did not become ready");
    }

    /// SIGKILL, then reap.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL delivered");
        let status = self.child.wait().unwrap();
        assert!(
            !status.success(),
            "the process was killed, not exited: {status}"
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Message ids the server acknowledged.
type Acks = Arc<Mutex<Vec<String>>>;

fn ack_count(acks: &Acks) -> usize {
    acks.lock().unwrap().len()
}

/// Streams messages over the chatbot socket, recording each `message_received` id, until the socket dies.
async fn chatbot_client(
    gateway_addr: SocketAddr,
    user: String,
    acks: Acks,
    started: Arc<AtomicUsize>,
) -> String {
    let token = voxgate::api::auth::sign_hs256(JWT_SECRET.as_bytes(), &user, 3600).unwrap();
    let session: Value = reqwest::Client::new()
        .post(format!("http://{gateway_addr}/chatbot/assistant/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session_id = session["session_id"].as_str().unwrap().to_owned();
    let url = format!("ws://{gateway_addr}/ws/chat/{session_id}?token={token}");
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    started.fetch_add(1, Ordering::SeqCst);
    let (mut sink, mut stream) = ws.split();
    // Pipelined: the writer does not wait for answers, so messages are in flight when the kill comes.
    let writer = tokio::spawn(async move {
        for n in 0..MESSAGES_PER_CLIENT {
            let body =
                json!({"message": format!("message {n} from {user}"), "message_type": "text"});
            if sink
                .send(Message::Text(body.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    while let Some(Ok(frame)) = stream.next().await {
        if let Message::Text(text) = frame {
            let event: Value = serde_json::from_str(text.as_str()).unwrap();
            if event["type"] == "message_received" {
                acks.lock()
                    .unwrap()
                    .push(event["message_id"].as_str().unwrap().to_owned());
            }
        }
    }
    writer.abort();
    session["conversation_id"].as_str().unwrap().to_owned()
}

/// Posts IntentLayer chat requests back to back, recording the message ids of successful answers.
async fn intentlayer_client(
    gateway_addr: SocketAddr,
    user: String,
    acks: Acks,
    started: Arc<AtomicUsize>,
) {
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("http://{gateway_addr}/api/v1/sessions/create"))
        .json(&json!({"user_id": user}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session_id = created["session_info"]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    started.fetch_add(1, Ordering::SeqCst);
    for n in 0..MESSAGES_PER_CLIENT {
        let response = client
            .post(format!("http://{gateway_addr}/api/v1/sessions/chat"))
            .json(&json!({"session_id": session_id, "message": format!("Créer un formulaire de contact {n}")}))
            .send()
            .await;
        let Ok(response) = response else { break };
        let Ok(body) = response.json::<Value>().await else {
            break;
        };
        if body["success"] == true {
            let mut acks = acks.lock().unwrap();
            acks.push(body["message_id"].as_str().unwrap().to_owned());
            acks.push(body["response_id"].as_str().unwrap().to_owned());
        }
    }
}

async fn acknowledged_messages_survive_sigkill(data_dir: &Path, database_url: Option<&str>) {
    // reqwest is built without a default TLS provider; the binary installs ring, and so does the test.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut gateway = Gateway::start(data_dir, database_url);
    gateway.wait_ready().await;
    let addr = gateway.addr;

    let chatbot_acks: Acks = Arc::default();
    let intentlayer_acks: Acks = Arc::default();
    // Clients past their setup (session opened); the kill waits for all of them, or a client still opening
    // its session would fail on the killed server before it had anything to lose.
    let started = Arc::new(AtomicUsize::new(0));
    let mut chatbot_clients = Vec::new();
    for n in 0..3 {
        chatbot_clients.push(tokio::spawn(chatbot_client(
            addr,
            format!("user-{n}"),
            chatbot_acks.clone(),
            started.clone(),
        )));
    }
    let mut intentlayer_clients = Vec::new();
    for n in 0..3 {
        intentlayer_clients.push(tokio::spawn(intentlayer_client(
            addr,
            format!("il-{n}"),
            intentlayer_acks.clone(),
            started.clone(),
        )));
    }

    // Kill mid-stream: once enough messages were acknowledged, with the clients still sending.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let clients = chatbot_clients.len() + intentlayer_clients.len();
    while ack_count(&chatbot_acks) < ACKS_BEFORE_KILL
        || ack_count(&intentlayer_acks) < ACKS_BEFORE_KILL
        || started.load(Ordering::SeqCst) < clients
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "clients made no progress"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gateway.kill();
    let mut conversations = Vec::new();
    for client in chatbot_clients {
        conversations.push(
            tokio::time::timeout(Duration::from_secs(30), client)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    for client in intentlayer_clients {
        tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .unwrap()
            .unwrap();
    }
    let chatbot_acks = chatbot_acks.lock().unwrap().clone();
    let intentlayer_acks = intentlayer_acks.lock().unwrap().clone();
    eprintln!(
        "acknowledged before SIGKILL: {} chatbot messages, {} IntentLayer messages",
        chatbot_acks.len(),
        intentlayer_acks.len()
    );
    assert!(chatbot_acks.len() >= ACKS_BEFORE_KILL);
    // The kill came mid-stream: far fewer than everything was acknowledged.
    assert!(chatbot_acks.len() < 3 * MESSAGES_PER_CLIENT);
    assert!(intentlayer_acks.len() < 2 * 3 * MESSAGES_PER_CLIENT);

    // Restart on the same storage: the history has every acknowledged message.
    let mut restarted = Gateway::start(data_dir, database_url);
    restarted.wait_ready().await;
    let store = match database_url {
        Some(url) => Store::connect(url).await,
        None => Store::open_sqlite(&data_dir.join("voxgate.db")).await,
    }
    .expect("store opens");
    for id in chatbot_acks.iter().chain(&intentlayer_acks) {
        assert!(
            store.get_message(id).await.unwrap().is_some(),
            "acknowledged message {id} survived"
        );
    }
    // And through the API: a new session's history holds the user's acknowledged messages, in order.
    let token = voxgate::api::auth::sign_hs256(JWT_SECRET.as_bytes(), "user-0", 3600).unwrap();
    let session: Value = reqwest::Client::new()
        .post(restarted.url("/chatbot/assistant/session"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["conversation_id"], conversations[0].as_str());
    let history = store
        .recent_messages(&conversations[0], 1000)
        .await
        .unwrap();
    let history_ids: Vec<&str> = history.iter().map(|m| m.id.as_str()).collect();
    let user0: Vec<&str> = chatbot_acks
        .iter()
        .map(String::as_str)
        .filter(|id| history_ids.contains(id))
        .collect();
    assert!(!user0.is_empty(), "user-0 had acknowledged messages");
    let previous: Vec<&str> = session["previous_messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["message_id"].as_str())
        .collect();
    for id in user0.iter().rev().take(20) {
        assert!(
            previous.contains(id),
            "acknowledged {id} is in previous_messages"
        );
    }
    store.close().await;
    restarted.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    acknowledged_messages_survive_sigkill(dir.path(), None).await;
}

/// A PostgreSQL server for the test: the one named by `VOXGATE_TEST_DATABASE_URL`, or a throwaway one started
/// with `scripts/pg-test-server` (stopped on drop, and by the script's watcher if this process dies).
struct Postgres {
    url: String,
    started: Option<(PathBuf, String)>,
}

impl Postgres {
    fn get() -> Postgres {
        if let Ok(url) = std::env::var("VOXGATE_TEST_DATABASE_URL")
            && !url.is_empty()
        {
            return Postgres { url, started: None };
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-test-server");
        let output = Command::new(&script)
            .arg("start")
            .arg("--watch-pid")
            .arg(std::process::id().to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/pg-test-server runs (or set VOXGATE_TEST_DATABASE_URL)");
        assert!(
            output.status.success(),
            "scripts/pg-test-server could not start PostgreSQL"
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        let value = |key: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(key).map(str::to_owned))
                .unwrap_or_else(|| panic!("pg-test-server printed no {key}: {stdout}"))
        };
        Postgres {
            url: value("DATABASE_URL="),
            started: Some((script, value("PGDATA_DIR="))),
        }
    }

    /// A fresh, empty database on the server; returns its URL.
    async fn fresh_database(&self) -> String {
        let name = format!("voxgate_durability_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&self.url)
            .await
            .expect("PostgreSQL reachable");
        // The name is ours (a fixed prefix and hex digits), so the statement is safe to build as text.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        let mut url = url::Url::parse(&self.url).unwrap();
        url.set_path(&format!("/{name}"));
        url.to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some((script, dir)) = &self.started {
            let _ = Command::new(script).arg("stop").arg(dir).output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_acknowledged_messages_survive_sigkill() {
    let postgres = Postgres::get();
    let url = postgres.fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    acknowledged_messages_survive_sigkill(dir.path(), Some(&url)).await;
}
