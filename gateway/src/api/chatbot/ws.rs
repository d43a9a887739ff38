//! `WS /ws/chat/{session_id}?token=…`: the chat socket of seed 004.
//!
//! Admission happens before the handshake completes, and every refusal is the same for the same cause:
//! - a missing or invalid token: close `4401` with the token problem as reason;
//! - an unknown session id, another user's session, a closed session: close `4404` "Session not found" after
//!   the same single store lookup, so ids cannot be probed;
//! - a session that already has an open socket: close `4409`.
//!
//! Then: `session_info`; per client message `message_received` (only after the message is committed),
//! `response_start`, `response_chunk`…, `response_complete` (after the answer is committed). Every problem
//! with one message is an `error` event and the socket stays open. The socket is closed with `4000` when the
//! session is closed elsewhere (replaced by a new session, deleted), `1001` on shutdown; closing the socket
//! closes the session.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use futures_util::StreamExt as _;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::{ChatbotError, KIND, find_chatbot};
use crate::api::auth::AuthError;
use crate::api::timestamp;
use crate::chat::{DocumentFilter, Reply, ReplyEvent, ReplyRequest, Session};
use crate::config::ChatbotConfig;
use crate::metrics::labels;
use crate::state::AppState;

/// Longest accepted chat message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 8000;

/// Close code: the token is missing or invalid.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;
/// Close code: no such session for this user (unknown, another user's, or closed).
pub const CLOSE_NOT_FOUND: u16 = 4404;
/// Close code: the session already has an open socket.
pub const CLOSE_ALREADY_CONNECTED: u16 = 4409;
/// Close code: the session was closed while the socket was open (replaced or deleted).
pub const CLOSE_SESSION_CLOSED: u16 = 4000;
/// Close code: the store is unavailable.
const CLOSE_INTERNAL: u16 = 1011;
/// Close code: the server is shutting down.
const CLOSE_GOING_AWAY: u16 = 1001;

/// Server -> client events, exactly the seed's `type`s and fields. `code` on `error` is additive.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerEvent<'a> {
    SessionInfo {
        session_id: &'a str,
        chatbot_name: &'a str,
        message: String,
    },
    MessageReceived {
        message_id: &'a str,
        timestamp: String,
    },
    ResponseStart {
        message: &'a str,
    },
    ResponseChunk {
        chunk: &'a str,
    },
    ResponseComplete {
        message_id: &'a str,
        timestamp: String,
        full_response: &'a str,
    },
    Error {
        message: String,
        code: &'static str,
    },
}

/// Why a socket is refused.
#[derive(Debug)]
enum Refusal {
    Unauthorized(AuthError),
    NotFound,
    Unavailable,
}

/// A socket allowed in.
struct Admitted {
    session: Session,
    chatbot: ChatbotConfig,
}

pub(super) async fn upgrade(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // What is wrong with the request itself is answered over HTTP, before any upgrade, as a JSON error naming
    // the part at fault (the query string cannot be: it is decoded lossily, and a mangled token fails
    // authentication). Refusals of the session (token, ownership) come after the upgrade, as close codes a
    // browser's WebSocket can read.
    let (session_id, upgrade) = match (path, upgrade) {
        (Ok(Path(session_id)), Ok(upgrade)) => (session_id, upgrade),
        (Err(rejection), _) => return ChatbotError::path("session_id", &rejection).into_response(),
        (_, Err(rejection)) => {
            let (status, header) = crate::http::ws::rejected_upgrade(&rejection);
            let error = ChatbotError::new(
                status,
                format!("/ws/chat speaks WebSocket only: {}", rejection.body_text()),
                Some(header),
            );
            return crate::http::ws::upgrade_required(error.into_response());
        }
    };
    let upgrade = crate::http::ws::limit_upgrade(upgrade, &state.config.limits);
    // Created inside the request span, so the socket's logs carry the request id as well as the session id.
    let span = tracing::info_span!("chat_ws", session_id = %session_id);
    let admission = admit(&state, &session_id, query.get("token").map(String::as_str))
        .instrument(span.clone())
        .await;
    let tasks = state.tasks.clone();
    upgrade.on_upgrade(move |socket| {
        let work = async move {
            match admission {
                Ok(admitted) => run(state, socket, admitted).await,
                Err(refusal) => {
                    let (code, reason) = match &refusal {
                        Refusal::Unauthorized(error) => {
                            (CLOSE_UNAUTHORIZED, format!("Unauthorized: {error}"))
                        }
                        Refusal::NotFound => (CLOSE_NOT_FOUND, "Session not found".to_owned()),
                        Refusal::Unavailable => (CLOSE_INTERNAL, "Storage unavailable".to_owned()),
                    };
                    tracing::info!(code, reason, "chat socket refused");
                    close(socket, code, &reason, state.config.limits.close_timeout).await;
                }
            }
        };
        tasks.track_future(work.instrument(span))
    })
}

async fn admit(
    state: &AppState,
    session_id: &str,
    token: Option<&str>,
) -> Result<Admitted, Refusal> {
    let claims = state
        .api
        .jwt
        .verify(token.unwrap_or_default())
        .map_err(Refusal::Unauthorized)?;
    if uuid::Uuid::parse_str(session_id).is_err() {
        return Err(Refusal::NotFound);
    }
    // One lookup whatever the outcome: unknown, foreign and closed sessions cost the same.
    let session = state
        .chat
        .store()
        .get_session(session_id)
        .await
        .map_err(|error| {
            tracing::error!(%error, "session lookup failed");
            Refusal::Unavailable
        })?;
    let session = session
        .filter(|session| session.kind == KIND && session.user_id == claims.sub && session.active)
        .ok_or(Refusal::NotFound)?;
    let chatbot = find_chatbot(&state.config, &session.scope)
        .cloned()
        .ok_or(Refusal::NotFound)?;
    Ok(Admitted { session, chatbot })
}

/// Sends a close frame and waits (bounded) for the peer's, so the close handshake completes.
async fn close(mut socket: WebSocket, code: u16, reason: &str, timeout: Duration) {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(truncate_reason(reason)),
    };
    if socket.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Close reasons are limited to 123 bytes by RFC 6455.
fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

async fn send(socket: &mut WebSocket, event: &ServerEvent<'_>) -> Result<(), axum::Error> {
    let text = serde_json::to_string(event)
        .unwrap_or_else(|_| r#"{"type":"error","message":"internal error"}"#.into());
    socket.send(Message::Text(text.into())).await
}

fn error_event(code: &'static str, message: impl Into<String>) -> ServerEvent<'static> {
    ServerEvent::Error {
        message: message.into(),
        code,
    }
}

/// Why the socket loop ended.
enum End {
    /// The client sent its close frame.
    ClientClosed,
    /// The client vanished.
    ClientGone,
    /// The session was closed elsewhere.
    SessionClosed,
    /// The server is shutting down.
    Shutdown,
    /// The client stopped answering pings.
    Unresponsive,
}

async fn run(state: AppState, mut socket: WebSocket, admitted: Admitted) {
    let Admitted { session, chatbot } = admitted;
    let Some(closed) = state
        .api
        .chatbot
        .register(&session.id, &session.user_id, &chatbot.id)
    else {
        close(
            socket,
            CLOSE_ALREADY_CONNECTED,
            "Session already connected",
            state.config.limits.close_timeout,
        )
        .await;
        return;
    };
    let gauge = state
        .metrics
        .active_sessions
        .with_label_values(&[labels::TRANSPORT_CHAT_WS]);
    gauge.inc();
    tracing::info!(chatbot = %chatbot.id, "chat socket open");

    let end = serve(&state, &mut socket, &session, &chatbot, &closed).await;
    state.api.chatbot.unregister(&session.id);
    gauge.dec();
    let close_timeout = state.config.limits.close_timeout;
    match end {
        End::ClientClosed => crate::http::ws::reply_to_close(&mut socket, close_timeout).await,
        End::ClientGone => {}
        End::SessionClosed => {
            close(
                socket,
                CLOSE_SESSION_CLOSED,
                "Session closed",
                close_timeout,
            )
            .await
        }
        End::Shutdown => {
            close(
                socket,
                CLOSE_GOING_AWAY,
                "Server shutting down",
                close_timeout,
            )
            .await
        }
        End::Unresponsive => {
            close(socket, CLOSE_GOING_AWAY, "No pong received", close_timeout).await
        }
    }
    // The seed: "Sessions automatically closed on disconnect".
    if let Err(error) = state.chat.store().close_session(&session.id).await {
        tracing::warn!(%error, "cannot close the session after its socket ended");
    }
    tracing::info!("chat socket closed");
}

async fn serve(
    state: &AppState,
    socket: &mut WebSocket,
    session: &Session,
    chatbot: &ChatbotConfig,
    closed: &tokio_util::sync::CancellationToken,
) -> End {
    let info = ServerEvent::SessionInfo {
        session_id: &session.id,
        chatbot_name: &chatbot.name,
        message: format!("Connected to {}. You can start chatting!", chatbot.name),
    };
    if send(socket, &info).await.is_err() {
        return End::ClientGone;
    }
    let ping_every = state.config.limits.ping_interval;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        let frame = tokio::select! {
            biased;
            () = closed.cancelled() => return End::SessionClosed,
            () = state.shutdown.cancelled() => return End::Shutdown,
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_every * 2 {
                    return End::Unresponsive;
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return End::ClientGone;
                }
                continue;
            }
            frame = socket.recv() => frame,
        };
        last_heard = Instant::now();
        let outcome = match frame {
            Some(Ok(Message::Close(_))) => return End::ClientClosed,
            None | Some(Err(_)) => return End::ClientGone,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Binary(_))) => {
                send(
                    socket,
                    &error_event(
                        "unsupported_frame",
                        "Binary frames are not supported; send JSON text",
                    ),
                )
                .await
            }
            Some(Ok(Message::Text(text))) => {
                tokio::select! {
                    biased;
                    () = closed.cancelled() => return End::SessionClosed,
                    () = state.shutdown.cancelled() => return End::Shutdown,
                    outcome = handle_message(state, socket, session, chatbot, text.as_str()) => match outcome {
                        Step::Continue => Ok(()),
                        Step::Gone => return End::ClientGone,
                        Step::SessionClosed => return End::SessionClosed,
                    },
                }
            }
        };
        if outcome.is_err() {
            return End::ClientGone;
        }
        // Pings were not sent while a message was being answered: the silence was ours, not the client's.
        last_heard = Instant::now();
    }
}

/// What the loop does after one message.
enum Step {
    Continue,
    Gone,
    SessionClosed,
}

/// A client message, validated.
struct ClientMessage {
    text: String,
}

/// Reads `{"message": "...", "message_type": "text"}`; the error is the `error` event to send.
fn parse_client_message(text: &str) -> Result<ClientMessage, ServerEvent<'static>> {
    let value: Value =
        serde_json::from_str(text).map_err(|_| error_event("invalid_json", "Invalid JSON"))?;
    let object = value.as_object().ok_or_else(|| {
        error_event(
            "invalid_message",
            "Expected a JSON object with a 'message' field",
        )
    })?;
    if let Some(kind) = object.get("message_type") {
        match kind.as_str() {
            Some("text") => {}
            _ => {
                return Err(error_event(
                    "invalid_message",
                    "Unsupported message_type: only \"text\" is supported",
                ));
            }
        }
    }
    let message = match object.get("message") {
        None | Some(Value::Null) => {
            return Err(error_event("invalid_message", "Missing 'message' field"));
        }
        Some(Value::String(message)) => message,
        Some(_) => return Err(error_event("invalid_message", "'message' must be a string")),
    };
    if message.trim().is_empty() {
        return Err(error_event("invalid_message", "Message cannot be empty"));
    }
    if message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(error_event(
            "message_too_long",
            format!("Message too long: at most {MAX_MESSAGE_CHARS} characters"),
        ));
    }
    Ok(ClientMessage {
        text: message.clone(),
    })
}

async fn handle_message(
    state: &AppState,
    socket: &mut WebSocket,
    session: &Session,
    chatbot: &ChatbotConfig,
    text: &str,
) -> Step {
    macro_rules! emit {
        ($event:expr) => {
            if send(socket, &$event).await.is_err() {
                return Step::Gone;
            }
        };
    }
    // Every frame counts against the user's budget, valid or not: the budget protects the server.
    if !state.api.chatbot.allow_message(&session.user_id) {
        emit!(error_event(
            "rate_limited",
            format!(
                "Rate limit exceeded: at most {} messages per minute; this message was not processed",
                state.config.chat.ws_messages_per_minute
            ),
        ));
        return Step::Continue;
    }
    let message = match parse_client_message(text) {
        Ok(message) => message,
        Err(event) => {
            emit!(event);
            return Step::Continue;
        }
    };

    let store = state.chat.store();
    // The session may have been closed by another instance sharing the database.
    match store.get_session(&session.id).await {
        Ok(Some(current)) if current.active => {}
        Ok(_) => {
            emit!(error_event("session_closed", "Session is closed"));
            return Step::SessionClosed;
        }
        Err(error) => {
            tracing::error!(%error, "session lookup failed");
            emit!(error_event(
                "storage_unavailable",
                "Could not save your message, please retry"
            ));
            return Step::Continue;
        }
    }
    let Some(conversation_id) = session.conversation_id.as_deref() else {
        emit!(error_event("session_closed", "Session has no conversation"));
        return Step::SessionClosed;
    };

    // The chat domain commits the user message before it returns; only then is it acknowledged.
    let mut request = ReplyRequest::new(conversation_id, message.text);
    request.user_message.metadata =
        serde_json::json!({ "message_type": "text", "session_id": session.id });
    request.system_prompt = Some(chatbot.system_prompt.clone()).filter(|prompt| !prompt.is_empty());
    request.documents = Some(DocumentFilter {
        scope: chatbot.id.clone(),
        owner: Some(session.user_id.clone()),
    });
    request.assistant_metadata =
        serde_json::json!({ "chatbot_id": chatbot.id, "session_id": session.id });
    let Reply {
        user_message,
        mut events,
    } = match state.chat.reply_stream(request).await {
        Ok(reply) => reply,
        Err(error) => {
            tracing::error!(%error, "cannot store the user message");
            emit!(error_event(
                "storage_unavailable",
                "Could not save your message, please retry"
            ));
            return Step::Continue;
        }
    };
    state
        .metrics
        .chat_requests_total
        .with_label_values(&[KIND])
        .inc();
    emit!(ServerEvent::MessageReceived {
        message_id: &user_message.id,
        timestamp: timestamp(user_message.created_at),
    });
    emit!(ServerEvent::ResponseStart {
        message: "Assistant is thinking..."
    });

    // Dropping `events` early (client gone, session closed) cancels the generation; nothing is stored then.
    while let Some(event) = events.next().await {
        match event {
            Ok(ReplyEvent::Delta(chunk)) => {
                if !chunk.is_empty() {
                    emit!(ServerEvent::ResponseChunk { chunk: &chunk });
                }
            }
            Ok(ReplyEvent::Complete { message, .. }) => {
                // The answer is committed before `Complete` is yielded.
                if let Err(error) = state.chat.store().touch_session(&session.id, None).await {
                    tracing::warn!(%error, "cannot record session activity");
                }
                emit!(ServerEvent::ResponseComplete {
                    message_id: &message.id,
                    timestamp: timestamp(message.created_at),
                    full_response: &message.content,
                });
                return Step::Continue;
            }
            Err(error) => {
                tracing::warn!(%error, "the model failed to answer");
                emit!(error_event(
                    "model_error",
                    "The assistant could not answer, please retry"
                ));
                return Step::Continue;
            }
        }
    }
    // The stream ended without `Complete`: the domain stored no answer.
    emit!(error_event(
        "model_error",
        "The assistant could not answer, please retry"
    ));
    Step::Continue
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<&str, &str>) {
        let got = parse_client_message(input).map(|m| m.text);
        match (got, expected) {
            (Ok(text), Ok(want)) => assert_eq!(text, want),
            (Err(ServerEvent::Error { code, .. }), Err(want)) => assert_eq!(code, want, "{input}"),
            (got, want) => panic!(
                "{input}: got {:?}, want {want:?}",
                got.map_err(|e| format!("{e:?}"))
            ),
        }
    }

    #[test]
    fn client_messages() {
        check(
            r#"{"message": "Hello", "message_type": "text"}"#,
            Ok("Hello"),
        );
        check(r#"{"message": "Hello"}"#, Ok("Hello"));
        check("not json", Err("invalid_json"));
        check("[1]", Err("invalid_message"));
        check(r#"{"message_type": "text"}"#, Err("invalid_message"));
        check(r#"{"message": "  "}"#, Err("invalid_message"));
        check(r#"{"message": 3}"#, Err("invalid_message"));
        check(
            r#"{"message": "hi", "message_type": "image"}"#,
            Err("invalid_message"),
        );
        check(
            &serde_json::json!({"message": "x".repeat(MAX_MESSAGE_CHARS + 1)}).to_string(),
            Err("message_too_long"),
        );
    }

    #[test]
    fn events_have_the_seed_shape() {
        let event = ServerEvent::ResponseComplete {
            message_id: "m",
            timestamp: "t".into(),
            full_response: "f",
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({"type": "response_complete", "message_id": "m", "timestamp": "t", "full_response": "f"})
        );
        assert_eq!(truncate_reason(&"é".repeat(100)).len(), 122);
    }
}
