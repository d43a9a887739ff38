//! Seed 004 over real sockets: sessions, the chat WebSocket, JWT, rate limit, documents.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::common::*;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn seed_flow_end_to_end() {
    let server = start(|_| {}).await;
    let (token, session) = session_for(&server, "alice").await;
    assert_eq!(
        keys(&session),
        [
            "chatbot_id",
            "chatbot_name",
            "conversation_id",
            "created_at",
            "previous_messages",
            "session_id"
        ]
    );
    assert_eq!(session["chatbot_id"], "assistant");
    assert_eq!(session["chatbot_name"], "Assistant");
    assert!(session["session_id"].is_string() && session["conversation_id"].is_string());
    assert_eq!(session["previous_messages"], json!([]));
    let session_id = session["session_id"].as_str().unwrap();

    let mut ws = connect(&server, session_id, &token).await;
    let info = next_event(&mut ws).await;
    assert_eq!(
        keys(&info),
        ["chatbot_name", "message", "session_id", "type"]
    );
    assert_eq!(info["type"], "session_info");
    assert_eq!(info["session_id"], session_id);
    assert_eq!(info["chatbot_name"], "Assistant");
    assert!(info["message"].as_str().unwrap().contains("Assistant"));

    let first = turn(&mut ws, "Hello, can you help me with my project?").await;
    assert!(!first.chunks.is_empty());
    assert_eq!(first.full_response, first.chunks.concat());
    assert!(!first.full_response.trim().is_empty());
    let second = turn(&mut ws, "Thanks! And what did I just ask you?").await;
    assert_eq!(second.full_response, second.chunks.concat());

    // Every acknowledged message and every completed answer is in the store.
    let store = server.state.chat.store();
    for id in [
        &first.message_id,
        &first.response_id,
        &second.message_id,
        &second.response_id,
    ] {
        assert!(
            store.get_message(id).await.unwrap().is_some(),
            "message {id} stored"
        );
    }
    let stored_answer = store
        .get_message(&first.response_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored_answer.content, first.full_response);

    let metrics = metrics(&server).await;
    assert!(
        metrics.contains("voxgate_chat_requests_total{surface=\"chatbot\"} 2"),
        "{metrics}"
    );

    ws.close(None).await.unwrap();
    let reply = ws.next().await;
    assert!(
        matches!(reply, Some(Ok(Message::Close(_)))),
        "the gateway answers the client's close frame: {reply:?}"
    );
    drop(ws);

    // The next session carries the history, in order, with the fields the seed's client reads.
    let (status, next) = create_session(&server, &token, "assistant").await;
    assert_eq!(status, 200);
    assert_eq!(next["conversation_id"], session["conversation_id"]);
    assert_ne!(next["session_id"], session["session_id"]);
    let previous = next["previous_messages"].as_array().unwrap();
    let roles: Vec<&str> = previous
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(
        previous[0]["message"],
        "Hello, can you help me with my project?"
    );
    assert_eq!(previous[1]["message"], first.full_response.as_str());
    assert_eq!(previous[0]["message_id"], first.message_id.as_str());
    for message in previous {
        assert!(is_timestamp(&message["created_at"]), "{message}");
    }
}

#[tokio::test]
async fn jwt_cases() {
    let server = start(|_| {}).await;
    let url = server.http_url("/chatbot/assistant/session");
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    let claims = serde_json::to_vec(&json!({"sub": "alice", "exp": now() + 600})).unwrap();
    let unsigned = format!("{none_header}.{}.", b64url(&claims));
    let wrong_key = voxgate::api::auth::sign_hs256(b"not-the-server-secret", "alice", 600).unwrap();
    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("valid", Some(token(&server, "alice")), 200),
        ("alg none", Some(unsigned), 401),
        ("bad signature", Some(wrong_key), 401),
        (
            "expired",
            Some(signed(
                &server,
                &json!({"sub": "alice", "exp": now() - 3600}),
            )),
            401,
        ),
        (
            "nbf in the future",
            Some(signed(
                &server,
                &json!({"sub": "alice", "exp": now() + 7200, "nbf": now() + 3600}),
            )),
            401,
        ),
        (
            "missing sub",
            Some(signed(&server, &json!({"exp": now() + 600}))),
            401,
        ),
        (
            "missing exp",
            Some(signed(&server, &json!({"sub": "alice"}))),
            401,
        ),
        (
            "exp as string",
            Some(signed(
                &server,
                &json!({"sub": "alice", "exp": (now() + 600).to_string()}),
            )),
            401,
        ),
        ("garbage", Some("abc.def.ghi".to_owned()), 401),
        ("no header", None, 401),
    ];
    for (name, token, expected) in cases {
        let mut request = client().post(&url);
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let www_authenticate = response.headers().get("www-authenticate").cloned();
        let (status, body) = json_response(response).await;
        assert_eq!(status, expected, "{name}: {body}");
        if expected == 401 {
            assert_eq!(body["field"], "Authorization", "{name}: {body}");
            assert!(
                body["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{name}: {body}"
            );
            assert_eq!(www_authenticate.unwrap(), "Bearer", "{name}");
        }
    }

    // The socket refuses bad tokens too, with a close code, before any event.
    let (token, session) = session_for(&server, "alice").await;
    let session_id = session["session_id"].as_str().unwrap();
    let expired = signed(&server, &json!({"sub": "alice", "exp": now() - 3600}));
    let mut ws = connect(&server, session_id, &expired).await;
    let (code, reason) = expect_close(&mut ws).await;
    assert_eq!(code, 4401);
    assert!(reason.contains("expired"), "{reason}");
    // The good token still works afterwards.
    let mut ws = connect(&server, session_id, &token).await;
    assert_eq!(next_event(&mut ws).await["type"], "session_info");
}

/// Base64url without padding.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn unknown_chatbot_is_404() {
    let server = start(|_| {}).await;
    let (status, body) = create_session(&server, &token(&server, "alice"), "no-such-bot").await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"detail": "Chatbot not found", "field": "chatbotId"})
    );
}

/// What is wrong with the request itself is answered over HTTP in the surface's JSON shape, naming the part at
/// fault: a path parameter that is not UTF-8 (422), and a request to the chat socket that is no WebSocket
/// handshake (426 with `Upgrade: websocket`).
#[tokio::test]
async fn malformed_requests_are_json_errors_naming_the_part_at_fault() {
    let server = start(|_| {}).await;
    let bearer = token(&server, "alice");
    let cases = [
        (
            reqwest::Method::POST,
            "/chatbot/%FF/session".to_owned(),
            422,
            "chatbotId",
        ),
        (
            reqwest::Method::POST,
            "/chatbot/%FF/documents".to_owned(),
            422,
            "chatbotId",
        ),
        (
            reqwest::Method::DELETE,
            "/chatbot/session/%FF".to_owned(),
            422,
            "session_id",
        ),
        (
            reqwest::Method::GET,
            "/ws/chat/%FF".to_owned(),
            422,
            "session_id",
        ),
        (
            reqwest::Method::GET,
            format!("/ws/chat/{}?token={bearer}", uuid::Uuid::new_v4()),
            426,
            "Connection",
        ),
    ];
    for (method, path, expected_status, field) in cases {
        let response = client()
            .request(method.clone(), server.http_url(&path))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap();
        let upgrade = response.headers().get("upgrade").cloned();
        let (status, body) = json_response(response).await;
        assert_eq!(
            (status, body["field"].as_str()),
            (expected_status, Some(field)),
            "{method} {path}: {body}"
        );
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
        if status == 426 {
            assert_eq!(
                upgrade.as_ref().map(|v| v.as_bytes()),
                Some(&b"websocket"[..])
            );
        }
    }
    let (status, _) = create_session(&server, &bearer, "assistant").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn one_session_per_user_and_chatbot() {
    let server = start(|config| {
        config.chat.chatbots.push(voxgate::config::ChatbotConfig {
            id: "support".into(),
            name: "Support".into(),
            system_prompt: "You help with support questions.".into(),
        });
    })
    .await;
    let (token, first) = session_for(&server, "alice").await;
    let first_id = first["session_id"].as_str().unwrap();
    let mut first_ws = connect(&server, first_id, &token).await;
    assert_eq!(next_event(&mut first_ws).await["type"], "session_info");

    // A session with another chatbot does not touch the first.
    let (status, support) = create_session(&server, &token, "support").await;
    assert_eq!(status, 200);
    assert_eq!(support["chatbot_name"], "Support");
    assert_ne!(support["conversation_id"], first["conversation_id"]);

    // A new session with the same chatbot closes the first one, and its socket.
    let (_, second) = session_for(&server, "alice").await;
    let (code, reason) = expect_close(&mut first_ws).await;
    assert_eq!((code, reason.as_str()), (4000, "Session closed"));
    let store = server.state.chat.store();
    assert!(!store.get_session(first_id).await.unwrap().unwrap().active);
    assert!(
        store
            .get_session(support["session_id"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap()
            .active
    );

    // The closed session cannot be reopened; the new one works.
    let mut again = connect(&server, first_id, &token).await;
    assert_eq!(
        expect_close(&mut again).await,
        (4404, "Session not found".to_owned())
    );
    let mut second_ws = connect(&server, second["session_id"].as_str().unwrap(), &token).await;
    assert_eq!(next_event(&mut second_ws).await["type"], "session_info");
    // A second socket on the same session is refused.
    let mut duplicate = connect(&server, second["session_id"].as_str().unwrap(), &token).await;
    assert_eq!(expect_close(&mut duplicate).await.0, 4409);
}

#[tokio::test]
async fn other_users_session_is_refused_like_an_unknown_one() {
    let server = start(|_| {}).await;
    let (_, alice_session) = session_for(&server, "alice").await;
    let alice_id = alice_session["session_id"].as_str().unwrap();
    let bob = token(&server, "bob");

    let mut foreign = connect(&server, alice_id, &bob).await;
    let foreign_close = expect_close(&mut foreign).await;
    let unknown_id = uuid::Uuid::new_v4().to_string();
    let mut unknown = connect(&server, &unknown_id, &bob).await;
    let unknown_close = expect_close(&mut unknown).await;
    assert_eq!(foreign_close, unknown_close);
    assert_eq!(foreign_close, (4404, "Session not found".to_owned()));
    let mut malformed = connect(&server, "not-a-session", &bob).await;
    assert_eq!(expect_close(&mut malformed).await, unknown_close);

    // Same for DELETE: bob gets the unknown-session answer, and alice's session stays open.
    let delete = |id: String| {
        let bob = bob.clone();
        let url = server.http_url(&format!("/chatbot/session/{id}"));
        async move { json_response(client().delete(url).bearer_auth(bob).send().await.unwrap()).await }
    };
    let foreign_delete = delete(alice_id.to_owned()).await;
    let unknown_delete = delete(unknown_id).await;
    assert_eq!(foreign_delete, unknown_delete);
    assert_eq!(foreign_delete.0, 404);
    assert!(
        server
            .state
            .chat
            .store()
            .get_session(alice_id)
            .await
            .unwrap()
            .unwrap()
            .active
    );
}

#[tokio::test]
async fn errors_are_events_and_the_socket_stays_open() {
    let server = start(|_| {}).await;
    let (token, session) = session_for(&server, "alice").await;
    let mut ws = connect(&server, session["session_id"].as_str().unwrap(), &token).await;
    next_event(&mut ws).await;
    let too_long = json!({"message": "x".repeat(8001), "message_type": "text"}).to_string();
    for (frame, code) in [
        ("{not json".to_owned(), "invalid_json"),
        (
            json!({"message_type": "text"}).to_string(),
            "invalid_message",
        ),
        (
            json!({"message": "   ", "message_type": "text"}).to_string(),
            "invalid_message",
        ),
        (json!({"message": 42}).to_string(), "invalid_message"),
        (too_long, "message_too_long"),
    ] {
        ws.send(Message::Text(frame.into())).await.unwrap();
        let event = next_event(&mut ws).await;
        assert_eq!(event["type"], "error", "{event}");
        assert_eq!(event["code"], code, "{event}");
        assert!(
            event["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{event}"
        );
    }
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(next_event(&mut ws).await["type"], "error");
    // Nothing of the above was stored, and a valid message still works.
    let conversation = session["conversation_id"].as_str().unwrap();
    assert_eq!(
        server
            .state
            .chat
            .store()
            .count_messages(conversation)
            .await
            .unwrap(),
        0
    );
    let exchange = turn(&mut ws, "Hello").await;
    assert_eq!(exchange.full_response, exchange.chunks.concat());
}

#[tokio::test]
async fn rate_limit_sends_an_error_and_stores_nothing() {
    let server = start(|config| config.chat.ws_messages_per_minute = 2).await;
    let (token, session) = session_for(&server, "alice").await;
    let session_id = session["session_id"].as_str().unwrap();
    let mut ws = connect(&server, session_id, &token).await;
    next_event(&mut ws).await;
    turn(&mut ws, "one").await;
    turn(&mut ws, "two").await;
    send_message(&mut ws, "three").await;
    let event = next_event(&mut ws).await;
    assert_eq!(event["type"], "error", "{event}");
    assert_eq!(event["code"], "rate_limited", "{event}");
    let conversation = session["conversation_id"].as_str().unwrap();
    let store = server.state.chat.store();
    let messages = store.recent_messages(conversation, 50).await.unwrap();
    let user_texts: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == voxgate::chat::Role::User)
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(user_texts, ["one", "two"]);

    // The budget is the user's, not the socket's: a new session (new socket) is limited too.
    drop(ws);
    let (_, again) = create_session(&server, &token, "assistant").await;
    let mut ws = connect(&server, again["session_id"].as_str().unwrap(), &token).await;
    next_event(&mut ws).await;
    send_message(&mut ws, "four").await;
    assert_eq!(next_event(&mut ws).await["code"], "rate_limited");
    let exposition = metrics(&server).await;
    for series in [
        "voxgate_rate_limited_total{surface=\"chatbot\"} 2",
        "voxgate_rate_limited_total{surface=\"intentlayer\"} 0",
    ] {
        assert!(exposition.contains(series), "{series} in {exposition}");
    }
    // Another user has their own budget.
    let (bob_token, bob_session) = session_for(&server, "bob").await;
    let mut bob = connect(
        &server,
        bob_session["session_id"].as_str().unwrap(),
        &bob_token,
    )
    .await;
    next_event(&mut bob).await;
    turn(&mut bob, "hi").await;
}

#[tokio::test]
async fn disconnect_and_delete_close_the_session() {
    let server = start(|_| {}).await;
    let store = server.state.chat.store().clone();
    let (token, session) = session_for(&server, "alice").await;
    let session_id = session["session_id"].as_str().unwrap().to_owned();
    let mut ws = connect(&server, &session_id, &token).await;
    next_event(&mut ws).await;
    ws.close(None).await.unwrap();
    drop(ws);
    let mut closed = false;
    for _ in 0..100 {
        if !store
            .get_session(&session_id)
            .await
            .unwrap()
            .unwrap()
            .active
        {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "disconnect closes the session");
    assert_eq!(server.state.api.chatbot.live_sockets(), 0);

    // DELETE closes the session and its socket; it answers 200 with JSON, also when already closed.
    let (_, session) = session_for(&server, "alice").await;
    let session_id = session["session_id"].as_str().unwrap().to_owned();
    let mut ws = connect(&server, &session_id, &token).await;
    next_event(&mut ws).await;
    let url = server.http_url(&format!("/chatbot/session/{session_id}"));
    let (status, body) = json_response(
        client()
            .delete(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"message": "Session closed", "session_id": session_id})
    );
    assert_eq!(expect_close(&mut ws).await.0, 4000);
    assert!(
        !store
            .get_session(&session_id)
            .await
            .unwrap()
            .unwrap()
            .active
    );
    let (status, _) = json_response(
        client()
            .delete(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = json_response(client().delete(&url).send().await.unwrap()).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (401, Some("Authorization"))
    );
}

fn multipart(boundary: &str, file_name: &str, content_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nHandbook\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: {content_type}\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

async fn upload(
    server: &voxgate::testing::TestServer,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let response = client()
        .post(server.http_url("/chatbot/assistant/documents"))
        .bearer_auth(token)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    json_response(response).await
}

#[tokio::test]
async fn document_uploads() {
    let server = start(|config| config.chat.max_upload_bytes = 4096).await;
    let alice = token(&server, "alice");

    let (status, body) = upload(
        &server,
        &alice,
        "text/plain; charset=utf-8",
        b"Opening hours: 9 to 5.".to_vec(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        keys(&body),
        [
            "chatbot_id",
            "chunk_count",
            "created_at",
            "document_id",
            "mime",
            "size_bytes",
            "title"
        ]
    );
    assert_eq!(body["mime"], "text/plain");
    assert_eq!(body["size_bytes"], 22);
    assert!(body["chunk_count"].as_i64().unwrap() >= 1);

    let pdf = voxgate::testing::one_page_pdf(&["Quarterly revenue grew by eleven percent"]);
    let (status, body) = upload(&server, &alice, "application/pdf", pdf.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["mime"], "application/pdf");
    let stored = server
        .state
        .chat
        .store()
        .get_document(body["document_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.scope, "assistant");
    assert_eq!(stored.owner, "alice");

    let boundary = "voxgate-test-boundary";
    let (status, body) = upload(
        &server,
        &alice,
        &format!("multipart/form-data; boundary={boundary}"),
        multipart(boundary, "r.pdf", "application/pdf", &pdf),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["title"], "Handbook");

    // Too large, raw and multipart: 413 naming the field.
    let (status, body) = upload(&server, &alice, "text/plain", vec![b'a'; 5000]).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (413, Some("file")),
        "{body}"
    );
    let (status, body) = upload(
        &server,
        &alice,
        &format!("multipart/form-data; boundary={boundary}"),
        multipart(boundary, "big.txt", "text/plain", &[b'a'; 5000]),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (413, Some("file")),
        "{body}"
    );

    // Unsupported types: 415 naming the field.
    let (status, body) = upload(&server, &alice, "image/png", vec![0x89, b'P', b'N', b'G']).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (415, Some("file")),
        "{body}"
    );
    let (status, body) = upload(
        &server,
        &alice,
        &format!("multipart/form-data; boundary={boundary}"),
        multipart(boundary, "x.png", "image/png", b"png"),
    )
    .await;
    assert_eq!(
        (status, body["field"].as_str()),
        (415, Some("file")),
        "{body}"
    );
    let (status, _) = upload(
        &server,
        &alice,
        "application/pdf",
        b"not a pdf at all".to_vec(),
    )
    .await;
    assert_eq!(status, 415);

    // Unauthenticated uploads are refused.
    let response = client()
        .post(server.http_url("/chatbot/assistant/documents"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn answers_use_the_uploaded_document() {
    let server = start(|_| {}).await;
    let alice = token(&server, "alice");
    let pdf = voxgate::testing::one_page_pdf(&[
        "The Zephyr project launch code is 7341 and the launch site is Kourou.",
    ]);
    let (status, body) = upload(&server, &alice, "application/pdf", pdf).await;
    assert_eq!(status, 201, "{body}");
    upload(
        &server,
        &alice,
        "text/plain",
        b"Bananas are yellow and grow in tropical climates.".to_vec(),
    )
    .await;

    let (_, session) = session_for(&server, "alice").await;
    let mut ws = connect(&server, session["session_id"].as_str().unwrap(), &alice).await;
    next_event(&mut ws).await;
    let exchange = turn(&mut ws, "What is the launch code of the Zephyr project?").await;
    assert!(
        exchange.full_response.contains("7341"),
        "{}",
        exchange.full_response
    );

    // Bob does not see alice's document.
    let (bob_token, bob_session) = session_for(&server, "bob").await;
    let mut bob = connect(
        &server,
        bob_session["session_id"].as_str().unwrap(),
        &bob_token,
    )
    .await;
    next_event(&mut bob).await;
    let exchange = turn(&mut bob, "What is the launch code of the Zephyr project?").await;
    assert!(
        !exchange.full_response.contains("7341"),
        "{}",
        exchange.full_response
    );
}

#[tokio::test]
async fn shutdown_closes_chat_sockets_with_going_away() {
    let server = start(|_| {}).await;
    let (token, session) = session_for(&server, "alice").await;
    let session_id = session["session_id"].as_str().unwrap().to_owned();
    let mut ws = connect(&server, &session_id, &token).await;
    next_event(&mut ws).await;
    server.shutdown.cancel();
    assert_eq!(
        expect_close(&mut ws).await,
        (1001, "Server shutting down".to_owned())
    );
    let mut server = server;
    server.stop().await.unwrap();
    // The drain waited for the socket task, which closed the session, and the store closed after it: what the
    // server left on disk says so.
    let store = voxgate::chat::Store::connect(server.state.config.database_url().as_str())
        .await
        .unwrap();
    let session = store.get_session(&session_id).await.unwrap().unwrap();
    assert!(!session.active);
    store.close().await;
}
