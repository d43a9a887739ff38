//! Helpers shared by the chat surface tests: a server, tokens, HTTP and WebSocket clients.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voxgate::config::Config;
use voxgate::testing::TestServer;

/// How long a test waits for one event before failing.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A server with the test configuration, adjusted.
pub async fn start(adjust: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(adjust).await.expect("server starts")
}

/// A valid token for `sub`, signed with the server's secret.
pub fn token(server: &TestServer, sub: &str) -> String {
    voxgate::api::auth::sign_hs256(
        server.state.config.chat.jwt_secret.expose().as_bytes(),
        sub,
        3600,
    )
    .unwrap()
}

/// Signs arbitrary claims with the server's secret.
pub fn signed(server: &TestServer, claims: &Value) -> String {
    voxgate::api::auth::sign_claims(
        server.state.config.chat.jwt_secret.expose().as_bytes(),
        claims,
    )
    .unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The server's `GET /metrics` exposition.
pub async fn metrics(server: &TestServer) -> String {
    let response = client().get(server.http_url("/metrics")).send().await;
    response.unwrap().text().await.unwrap()
}

/// Reads a response as (status, JSON body); the body must be JSON.
pub async fn json_response(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("status {status}: body is not JSON ({error}): {text}"));
    (status, body)
}

/// `POST /chatbot/{chatbot}/session` with `token`.
pub async fn create_session(server: &TestServer, token: &str, chatbot: &str) -> (u16, Value) {
    let response = client()
        .post(server.http_url(&format!("/chatbot/{chatbot}/session")))
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .send()
        .await
        .unwrap();
    json_response(response).await
}

/// A session of `user` with the default chatbot; returns (token, session body).
pub async fn session_for(server: &TestServer, user: &str) -> (String, Value) {
    let token = token(server, user);
    let (status, body) = create_session(server, &token, "assistant").await;
    assert_eq!(status, 200, "{body}");
    (token, body)
}

/// Opens the chat socket of `session_id` with `token` (the handshake must succeed).
pub async fn connect(server: &TestServer, session_id: &str, token: &str) -> Ws {
    let url = server.ws_url(&format!("/ws/chat/{session_id}?token={token}"));
    let (ws, response) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket handshake");
    assert_eq!(response.status().as_u16(), 101);
    ws
}

/// The next JSON event (pings are skipped). Panics on close, timeout or a non-JSON frame.
pub async fn next_event(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(EVENT_TIMEOUT, ws.next())
            .await
            .expect("event within timeout");
        match frame {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str()).expect("event is JSON");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a JSON event, got {other:?}"),
        }
    }
}

/// Waits for the server's close frame; returns its code and reason.
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        let frame = tokio::time::timeout(EVENT_TIMEOUT, ws.next())
            .await
            .expect("close within timeout");
        match frame {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) => return (u16::from(CloseCode::Status), String::new()),
            Some(Ok(Message::Text(text))) => panic!("expected close, got event {text}"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Sends a client message as the seed does.
pub async fn send_message(ws: &mut Ws, text: &str) {
    let body = serde_json::json!({ "message": text, "message_type": "text" });
    ws.send(Message::Text(body.to_string().into()))
        .await
        .unwrap();
}

/// One exchange as the seed describes it.
#[derive(Debug)]
pub struct Turn {
    pub message_id: String,
    pub chunks: Vec<String>,
    pub response_id: String,
    pub full_response: String,
}

/// Sends `text` and reads `message_received`, `response_start`, chunks and `response_complete`, checking
/// each event's fields and types.
pub async fn turn(ws: &mut Ws, text: &str) -> Turn {
    send_message(ws, text).await;
    let received = next_event(ws).await;
    assert_eq!(received["type"], "message_received", "{received}");
    let message_id = received["message_id"]
        .as_str()
        .expect("message_id is a string")
        .to_owned();
    assert!(is_timestamp(&received["timestamp"]), "{received}");
    let start = next_event(ws).await;
    assert_eq!(start["type"], "response_start", "{start}");
    assert!(start["message"].is_string(), "{start}");
    let mut chunks = Vec::new();
    loop {
        let event = next_event(ws).await;
        match event["type"].as_str() {
            Some("response_chunk") => chunks.push(
                event["chunk"]
                    .as_str()
                    .expect("chunk is a string")
                    .to_owned(),
            ),
            Some("response_complete") => {
                assert!(is_timestamp(&event["timestamp"]), "{event}");
                return Turn {
                    message_id,
                    chunks,
                    response_id: event["message_id"]
                        .as_str()
                        .expect("message_id is a string")
                        .to_owned(),
                    full_response: event["full_response"]
                        .as_str()
                        .expect("full_response is a string")
                        .to_owned(),
                };
            }
            _ => panic!("unexpected event during a response: {event}"),
        }
    }
}

/// Whether `value` is an RFC 3339 UTC timestamp string like the seeds' `2024-01-15T10:30:00Z`.
pub fn is_timestamp(value: &Value) -> bool {
    value.as_str().is_some_and(|text| {
        text.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(text).is_ok()
    })
}

/// Keys of a JSON object, sorted.
pub fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}
