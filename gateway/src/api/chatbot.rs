//! Seed 004, the chatbot WebSocket client: sessions, the chat socket, and documents for retrieval.
//!
//! | route | what |
//! |---|---|
//! | `POST /chatbot/{chatbotId}/session` | opens the user's session with a chatbot (closing the previous one) |
//! | `WS /ws/chat/{session_id}?token=…` | the chat: `session_info`, then per message `message_received`, `response_start`, `response_chunk`…, `response_complete`, or `error` |
//! | `DELETE /chatbot/session/{id}` | closes a session (and its socket) |
//! | `POST /chatbot/{chatbotId}/documents` | uploads a text or PDF document the chatbot's answers draw on |
//!
//! Every route needs `Authorization: Bearer <JWT>` (the socket takes the token from `?token=`); the user is
//! the token's `sub`. Errors are `{"detail": "...", "field": "..."}` (FastAPI's `detail`, plus the field at
//! fault when there is one); see `docs/chatbot-api.md`.

mod documents;
mod extract;
mod ws;

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::auth::{AuthError, Claims};
use super::rate_limit::KeyedRateLimiter;
use super::timestamp;
use crate::chat::{ConversationQuery, NewConversation, NewSession, Role, StoreError};
use crate::config::{ChatbotConfig, Config};
use crate::metrics::{Metrics, labels};
use crate::state::AppState;

pub use extract::{DocumentKind, ExtractError, extract_text};

/// The session and conversation `kind` of this surface in the chat domain.
pub const KIND: &str = "chatbot";

/// Messages returned as `previous_messages` when a session opens.
pub const PREVIOUS_MESSAGES_LIMIT: u32 = 50;

/// The chatbot routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/chatbot/{chatbot_id}/session", post(create_session))
        .route("/chatbot/session/{session_id}", delete(delete_session))
        // The upload handler enforces `chat.max_upload_bytes` itself, with this surface's error shape.
        .route(
            "/chatbot/{chatbot_id}/documents",
            post(documents::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/ws/chat/{session_id}", get(ws::upgrade))
}

/// Live chat sockets and the per-user message rate limiter.
pub struct ChatbotService {
    /// Messages per minute per user, shared by all of the user's sockets.
    limiter: KeyedRateLimiter,
    /// Open sockets by session id, so that closing a session (replaced, deleted) closes its socket.
    live: Mutex<HashMap<String, LiveSocket>>,
}

struct LiveSocket {
    user: String,
    chatbot: String,
    close: CancellationToken,
}

impl ChatbotService {
    /// State for `config.chat.ws_messages_per_minute`; refusals count in `metrics`.
    pub fn new(config: &Config, metrics: &Metrics) -> Self {
        // The whole minute's budget may come at once, as before the limiter was shared; at least 1 per
        // minute (the configuration refuses 0, so the WebSocket is never unlimited).
        let per_minute = config.chat.ws_messages_per_minute.max(1);
        let refusals = metrics
            .rate_limited_total
            .with_label_values(&[labels::SURFACE_CHATBOT]);
        ChatbotService {
            limiter: KeyedRateLimiter::per_minute(per_minute, per_minute)
                .counting_refusals(refusals),
            live: Mutex::new(HashMap::new()),
        }
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveSocket>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers the socket of `session`; `None` if one is already open for it.
    fn register(&self, session: &str, user: &str, chatbot: &str) -> Option<CancellationToken> {
        let mut live = self.lock_live();
        if live.contains_key(session) {
            return None;
        }
        let close = CancellationToken::new();
        live.insert(
            session.to_owned(),
            LiveSocket {
                user: user.to_owned(),
                chatbot: chatbot.to_owned(),
                close: close.clone(),
            },
        );
        Some(close)
    }

    fn unregister(&self, session: &str) {
        self.lock_live().remove(session);
    }

    /// Closes the socket of `session`, if open.
    fn close_socket(&self, session: &str) {
        if let Some(socket) = self.lock_live().get(session) {
            socket.close.cancel();
        }
    }

    /// Closes the user's sockets with `chatbot` other than `keep`'s.
    fn close_other_sockets(&self, user: &str, chatbot: &str, keep: &str) {
        for (session, socket) in self.lock_live().iter() {
            if socket.user == user && socket.chatbot == chatbot && session != keep {
                socket.close.cancel();
            }
        }
    }

    /// Whether `user` may send one more message now.
    fn allow_message(&self, user: &str) -> bool {
        self.limiter.check(user).is_ok()
    }

    /// Forgets rate-limiter state of users idle for a full period (bounded memory).
    pub fn prune(&self) {
        self.limiter.prune();
    }

    /// Open sockets (for tests and metrics).
    pub fn live_sockets(&self) -> usize {
        self.lock_live().len()
    }
}

/// An error of this surface: `{"detail": "...", "field": "..."}` with a status.
#[derive(Debug)]
pub struct ChatbotError {
    status: StatusCode,
    detail: String,
    field: Option<&'static str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
}

impl ChatbotError {
    fn new(status: StatusCode, detail: impl Into<String>, field: Option<&'static str>) -> Self {
        ChatbotError {
            status,
            detail: detail.into(),
            field,
        }
    }

    /// 422: a path parameter the URL does not give as text (percent-encoded bytes that are not UTF-8).
    fn path(field: &'static str, rejection: &PathRejection) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Invalid {field}: {}", rejection.body_text()),
            Some(field),
        )
    }

    fn unauthorized(error: &AuthError) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            format!("Not authenticated: {error}"),
            Some("Authorization"),
        )
    }

    fn chatbot_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Chatbot not found",
            Some("chatbotId"),
        )
    }

    fn session_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "Session not found",
            Some("session_id"),
        )
    }

    fn store(error: &StoreError) -> Self {
        tracing::error!(%error, "chatbot store operation failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Storage is unavailable, try again later",
            None,
        )
    }
}

impl IntoResponse for ChatbotError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                detail: &self.detail,
                field: self.field,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The user of a request, from its `Authorization: Bearer` header.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Claims, ChatbotError> {
    let value = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ChatbotError::unauthorized(&AuthError::NotBearer))?,
        ),
    };
    state
        .api
        .jwt
        .verify_authorization(value)
        .map_err(|error| ChatbotError::unauthorized(&error))
}

fn find_chatbot<'a>(config: &'a Config, id: &str) -> Option<&'a ChatbotConfig> {
    config.chat.chatbots.iter().find(|chatbot| chatbot.id == id)
}

/// One of `previous_messages`.
#[derive(Debug, Serialize)]
struct PreviousMessage {
    /// Additive: the stored message id.
    message_id: String,
    role: &'static str,
    message: String,
    created_at: String,
}

/// The body of `POST /chatbot/{chatbotId}/session`.
#[derive(Debug, Serialize)]
struct SessionCreated {
    session_id: String,
    conversation_id: String,
    chatbot_id: String,
    chatbot_name: String,
    previous_messages: Vec<PreviousMessage>,
    /// Additive: when the session was opened.
    created_at: String,
}

async fn create_session(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<SessionCreated>, ChatbotError> {
    let Path(chatbot_id) = path.map_err(|r| ChatbotError::path("chatbotId", &r))?;
    let claims = authenticate(&state, &headers)?;
    let chatbot =
        find_chatbot(&state.config, &chatbot_id).ok_or_else(ChatbotError::chatbot_not_found)?;
    let store = state.chat.store();
    let user = claims.sub;

    // One conversation per user and chatbot carries the history across sessions.
    let mut query = ConversationQuery::by_owner(&user);
    query.kind = Some(KIND.to_owned());
    query.scope = Some(chatbot.id.clone());
    query.limit = 1;
    let existing = store
        .list_conversations(&query)
        .await
        .map_err(|e| ChatbotError::store(&e))?;
    let conversation = match existing.items.into_iter().next() {
        Some(conversation) => conversation,
        None => store
            .create_conversation(&NewConversation {
                owner: user.clone(),
                kind: KIND.to_owned(),
                scope: chatbot.id.clone(),
                title: chatbot.name.clone(),
                metadata: serde_json::json!({}),
            })
            .await
            .map_err(|e| ChatbotError::store(&e))?,
    };

    let session = store
        .create_session(&NewSession {
            kind: KIND.to_owned(),
            scope: chatbot.id.clone(),
            user_id: user.clone(),
            conversation_id: Some(conversation.id.clone()),
            ttl: None,
            metadata: serde_json::json!({}),
            close_others_in_scope: true,
            record_user_seen: true,
        })
        .await
        .map_err(|e| ChatbotError::store(&e))?;
    // The store closed the previous sessions; close their sockets too.
    state
        .api
        .chatbot
        .close_other_sockets(&user, &chatbot.id, &session.id);

    let history = store
        .recent_messages(&conversation.id, PREVIOUS_MESSAGES_LIMIT)
        .await
        .map_err(|e| ChatbotError::store(&e))?;
    let previous_messages = history
        .into_iter()
        .filter(|message| matches!(message.role, Role::User | Role::Assistant))
        .map(|message| PreviousMessage {
            message_id: message.id,
            role: message.role.as_str(),
            message: message.content,
            created_at: timestamp(message.created_at),
        })
        .collect();
    tracing::info!(session_id = %session.id, chatbot = %chatbot.id, "chatbot session opened");
    Ok(Json(SessionCreated {
        session_id: session.id,
        conversation_id: conversation.id,
        chatbot_id: chatbot.id.clone(),
        chatbot_name: chatbot.name.clone(),
        previous_messages,
        created_at: timestamp(session.created_at),
    }))
}

/// The body of `DELETE /chatbot/session/{id}`.
#[derive(Debug, Serialize)]
struct SessionClosed {
    message: &'static str,
    session_id: String,
}

async fn delete_session(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<SessionClosed>, ChatbotError> {
    let Path(session_id) = path.map_err(|r| ChatbotError::path("session_id", &r))?;
    let claims = authenticate(&state, &headers)?;
    let store = state.chat.store();
    // Unknown, malformed and other users' sessions are the same 404, so ids cannot be probed.
    let session = match uuid::Uuid::parse_str(&session_id) {
        Ok(_) => store
            .get_session(&session_id)
            .await
            .map_err(|e| ChatbotError::store(&e))?,
        Err(_) => None,
    };
    let session = session
        .filter(|session| session.kind == KIND && session.user_id == claims.sub)
        .ok_or_else(ChatbotError::session_not_found)?;
    // Closing an already closed session succeeds: the seed's client closes on page unload, after its socket
    // may already have closed the session.
    store
        .close_session(&session.id)
        .await
        .map_err(|e| ChatbotError::store(&e))?;
    state.api.chatbot.close_socket(&session.id);
    tracing::info!(session_id = %session.id, "chatbot session closed by client");
    Ok(Json(SessionClosed {
        message: "Session closed",
        session_id: session.id,
    }))
}
