//! Seed 000, IntentLayer sessions: per-user sessions whose chat answers carry an intent analysis, UI
//! components and a spoken WAV.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/sessions/create` | opens a session for `user_id` (evicting the user's oldest past the limit) |
//! | `POST /api/v1/sessions/chat` | one interaction: `response_text`, `response_audio`, `ui_components`, `nlp_analysis`, `session_info` |
//! | `GET /api/v1/sessions/info/{session_id}` | the session |
//! | `GET /api/v1/sessions/history/{session_id}` | additive: the session's interactions, a page at a time |
//! | `DELETE /api/v1/sessions/delete/{session_id}` | removes the session and its audio |
//! | `GET /api/v1/sessions/list/{user_id}` | the user's live sessions, newest first |
//! | `GET /audio/{file}` | a spoken answer (`audio/wav`), rendered from the stored answer on first request |
//!
//! Sessions are chat-domain sessions of kind `intentlayer` with an idle TTL (`chat.session_ttl`); each has one
//! conversation where every interaction stores the user message and the answer. Wire ids are `sess_<uuid>`.
//! A session that expires, is evicted or is deleted is removed with its audio; the conversation stays.
//!
//! Requests are rate limited (seed: "Limitation du taux de requêtes"): `chat.intentlayer_rate_per_minute` per
//! session for chat, info and delete, per user for create and list; past it, 429 and nothing is done.
//!
//! Errors keep the seed's style: `{"success": false, "message": "...", "field": "..."}` (422 names the
//! field; 404 is `{"success": false, "message": "Session non trouvée"}`). See `docs/intentlayer-api.md`.

pub mod audio;
pub mod classifier;
pub mod components;
mod history;
mod llm;
pub mod tts;

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::Instrument as _;

use self::audio::{AudioError, AudioStore, Script};
use self::classifier::{Analysis, Entity, Language};
use self::components::UiComponent;
use super::rate_limit::{KeyedRateLimiter, RateLimited};
use super::timestamp;
use crate::chat::{
    Message, MessageQuery, NewConversation, NewMessage, NewSession, Order, Role, Session,
    StoreError,
};
use crate::config::Config;
use crate::metrics::{Metrics, labels};
use crate::state::AppState;

/// The session and conversation `kind` of this surface in the chat domain.
pub const KIND: &str = "intentlayer";

/// Prefix of wire session ids (`sess_<uuid>`).
pub const SESSION_PREFIX: &str = "sess_";

/// Longest accepted chat message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 4000;

/// Longest accepted `user_id`.
pub const MAX_USER_ID_CHARS: usize = 128;

/// The IntentLayer routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/sessions/create", post(create))
        .route("/api/v1/sessions/chat", post(chat))
        .route("/api/v1/sessions/info/{session_id}", get(info))
        .route(
            "/api/v1/sessions/history/{session_id}",
            get(history::history),
        )
        .route("/api/v1/sessions/delete/{session_id}", delete(remove))
        .route("/api/v1/sessions/list/{user_id}", get(list))
        .route("/audio/{file}", get(audio_file))
}

/// Per-server state of the surface.
#[derive(Debug)]
pub struct IntentLayerService {
    /// Spoken answers.
    pub audio: AudioStore,
    /// Requests per minute per session (chat, info, delete) and per user (create, list), in one limiter whose
    /// keys are prefixed by kind so that a session id never shares a budget with a user id.
    limiter: KeyedRateLimiter,
    /// Idle time-to-live of a session.
    ttl: Duration,
    /// Live sessions per user.
    max_per_user: u32,
    /// Rendered history pages of unchanged sessions.
    history_pages: history::HistoryPages,
}

impl IntentLayerService {
    /// State for `config` (creates `data_dir/audio`); rate-limit refusals count in `metrics`.
    ///
    /// # Errors
    /// If the audio directory cannot be created.
    pub fn new(config: &Config, metrics: &Metrics) -> anyhow::Result<Self> {
        let dir = config.data_dir.join("audio");
        let audio =
            AudioStore::new(dir.clone(), tts::Tts::from_config(config)).map_err(|error| {
                anyhow::anyhow!(
                    "failed to create audio directory {}: {error}",
                    dir.display()
                )
            })?;
        let per_minute = config.chat.intentlayer_rate_per_minute;
        let refusals = metrics
            .rate_limited_total
            .with_label_values(&[labels::SURFACE_INTENTLAYER]);
        Ok(IntentLayerService {
            audio,
            limiter: KeyedRateLimiter::per_minute(per_minute, rate_burst(per_minute))
                .counting_refusals(refusals),
            ttl: config.chat.session_ttl,
            max_per_user: config.chat.max_sessions_per_user.max(1),
            history_pages: history::HistoryPages::new(
                u64::from(config.chat.history_cache_mib) << 20,
                &metrics.history_page_lookups_total,
            ),
        })
    }

    /// The request rate limiter (its clock can be moved forward in tests).
    pub fn rate_limiter(&self) -> &KeyedRateLimiter {
        &self.limiter
    }
}

/// Requests that may come at once: five seconds' worth of the per-minute rate (10 for the default 120), at
/// least 1. Small, so a client cannot spend a minute's budget in one go, yet enough for a page that creates a
/// session and sends a message together.
fn rate_burst(per_minute: u32) -> u32 {
    (per_minute / 12).max(1)
}

/// Whose budget a request spends.
enum RateKey<'a> {
    /// A session's (store id): chat, info, delete.
    Session(&'a str),
    /// A user's: create, list.
    User(&'a str),
}

/// Counts one request against its key; 429 past the limit.
fn check_rate(state: &AppState, key: RateKey<'_>) -> Result<(), IntentLayerError> {
    let limiter = &state.api.intentlayer.limiter;
    if !limiter.is_enabled() {
        return Ok(());
    }
    let (key, per) = match key {
        RateKey::Session(id) => (format!("session:{id}"), "session"),
        RateKey::User(id) => (format!("user:{id}"), "utilisateur"),
    };
    limiter.check(&key).map_err(|limited| {
        tracing::debug!(key, "intentlayer request rate limited");
        IntentLayerError::rate_limited(limited, per)
    })
}

// ---------------------------------------------------------------------------------------------------------
// Errors

/// An error of this surface: `{"success": false, "message": "...", "field": "..."}`.
#[derive(Debug)]
pub struct IntentLayerError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
    /// Seconds before trying again (429 only): the `Retry-After` header and an additive body field.
    retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    success: bool,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

impl IntentLayerError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        IntentLayerError {
            status,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        IntentLayerError {
            field: Some(field),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
        }
    }

    fn session_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Session non trouvée")
    }

    fn store(error: &StoreError) -> Self {
        tracing::error!(%error, "intentlayer store operation failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Stockage indisponible, réessayez plus tard",
        )
    }

    /// 429 naming the limit; `per` is what the budget belongs to ("session", "utilisateur").
    fn rate_limited(limited: RateLimited, per: &str) -> Self {
        let seconds = limited.retry_after_secs();
        IntentLayerError {
            retry_after: Some(seconds),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Trop de requêtes: au plus {} requêtes par minute par {per}; réessayez dans {seconds} s",
                    limited.per_minute
                ),
            )
        }
    }
}

impl IntoResponse for IntentLayerError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                success: false,
                message: &self.message,
                field: self.field,
                retry_after: self.retry_after,
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

type ApiResult<T> = Result<Json<T>, IntentLayerError>;

/// A path parameter as the route extracted it, or why the URL could not give it as text.
type PathParam = Result<Path<String>, PathRejection>;

/// The text of a path parameter, or 422 naming it (its percent-encoded bytes are not UTF-8).
fn path_param(path: PathParam, field: &'static str) -> Result<String, IntentLayerError> {
    path.map(|Path(value)| value).map_err(|rejection| {
        IntentLayerError::invalid(
            field,
            format!(
                "Le paramètre '{field}' de l'URL est invalide: {}",
                rejection.body_text()
            ),
        )
    })
}

// ---------------------------------------------------------------------------------------------------------
// Request parsing: bodies are read as JSON values so that every problem names its field.

fn parse_body(body: &Bytes) -> Result<Map<String, Value>, IntentLayerError> {
    if body.is_empty() {
        return Err(IntentLayerError::invalid(
            "body",
            "Corps de requête vide: un objet JSON est attendu",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(IntentLayerError::invalid(
            "body",
            "Le corps de la requête doit être un objet JSON",
        )),
        Err(error) => Err(IntentLayerError::invalid(
            "body",
            format!("JSON invalide: {error}"),
        )),
    }
}

fn required_string<'a>(
    body: &'a Map<String, Value>,
    field: &'static str,
    max_chars: usize,
) -> Result<&'a str, IntentLayerError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(IntentLayerError::invalid(
            field,
            format!("Le champ '{field}' est requis"),
        )),
        Some(Value::String(value)) if value.trim().is_empty() => Err(IntentLayerError::invalid(
            field,
            format!("Le champ '{field}' ne peut pas être vide"),
        )),
        Some(Value::String(value)) if value.chars().count() > max_chars => {
            Err(IntentLayerError::invalid(
                field,
                format!("Le champ '{field}' dépasse {max_chars} caractères"),
            ))
        }
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err(IntentLayerError::invalid(
            field,
            format!("Le champ '{field}' doit être une chaîne"),
        )),
    }
}

fn optional_object(
    body: &Map<String, Value>,
    field: &'static str,
) -> Result<Value, IntentLayerError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(value @ Value::Object(_)) => Ok(value.clone()),
        Some(_) => Err(IntentLayerError::invalid(
            field,
            format!("Le champ '{field}' doit être un objet"),
        )),
    }
}

/// A user id usable in a URL path segment: letters, digits and `._@:+-`.
fn valid_user_id(user_id: &str) -> Result<(), IntentLayerError> {
    if user_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._@:+-".contains(c))
    {
        Ok(())
    } else {
        Err(IntentLayerError::invalid(
            "user_id",
            "Le champ 'user_id' ne peut contenir que des lettres, des chiffres et . _ @ : + -",
        ))
    }
}

/// The store id behind a wire id `sess_<uuid>`; `None` for anything else.
fn store_id(wire: &str) -> Option<&str> {
    let id = wire.strip_prefix(SESSION_PREFIX)?;
    uuid::Uuid::parse_str(id).ok().map(|_| id)
}

fn wire_id(store_id: &str) -> String {
    format!("{SESSION_PREFIX}{store_id}")
}

// ---------------------------------------------------------------------------------------------------------
// Session lifecycle

/// `session_info` as `create`, `info` and `list` return it.
#[derive(Debug, Serialize)]
struct SessionInfo {
    session_id: String,
    user_id: String,
    created_at: String,
    last_activity: String,
    interaction_count: i64,
    is_active: bool,
    /// Additive: when the session expires unless used.
    expires_at: Option<String>,
}

impl From<&Session> for SessionInfo {
    fn from(session: &Session) -> Self {
        SessionInfo {
            session_id: wire_id(&session.id),
            user_id: session.user_id.clone(),
            created_at: timestamp(session.created_at),
            last_activity: timestamp(session.last_activity),
            interaction_count: session.interaction_count,
            is_active: session.active,
            expires_at: session.expires_at.map(timestamp),
        }
    }
}

fn is_expired(session: &Session) -> bool {
    session
        .expires_at
        .is_some_and(|at| at <= chrono::Utc::now())
}

/// Removes a session that ended (deleted, expired, evicted): its row, then its audio. Its conversation stays.
/// In that order so that an audio request arriving meanwhile finds no answer to render (see
/// [`AudioStore::remove_session`]); a crash in between leaves an audio directory that start-up removes.
async fn discard(state: &AppState, store_id: &str) -> Result<(), StoreError> {
    state.chat.store().delete_session(store_id).await?;
    state.api.intentlayer.audio.remove_session(store_id).await;
    Ok(())
}

/// The store id behind a wire id, or the seed's 404.
fn known_id(wire: &str) -> Result<&str, IntentLayerError> {
    store_id(wire).ok_or_else(IntentLayerError::session_not_found)
}

/// The live session with store id `id`, expiring it on the spot when its TTL has passed.
async fn live_session(state: &AppState, id: &str) -> Result<Session, IntentLayerError> {
    let session = state
        .chat
        .store()
        .get_session(id)
        .await
        .map_err(|e| IntentLayerError::store(&e))?;
    let session = session
        .filter(|s| s.kind == KIND)
        .ok_or_else(IntentLayerError::session_not_found)?;
    if !session.active || is_expired(&session) {
        tracing::info!(session_id = %session.id, "intentlayer session expired");
        discard(state, &session.id)
            .await
            .map_err(|e| IntentLayerError::store(&e))?;
        return Err(IntentLayerError::session_not_found());
    }
    Ok(session)
}

#[derive(Debug, Serialize)]
struct Created {
    success: bool,
    message: &'static str,
    session_info: SessionInfo,
}

async fn create(State(state): State<AppState>, body: Bytes) -> ApiResult<Created> {
    let body = parse_body(&body)?;
    let user_id = required_string(&body, "user_id", MAX_USER_ID_CHARS)?
        .trim()
        .to_owned();
    valid_user_id(&user_id)?;
    let user_data = optional_object(&body, "user_data")?;
    let context = optional_object(&body, "context")?;
    let language = match user_data.pointer("/preferences/language") {
        None | Some(Value::Null) => None,
        Some(Value::String(value)) => Language::from_preference(value),
        Some(_) => {
            return Err(IntentLayerError::invalid(
                "user_data",
                "'user_data.preferences.language' doit être une chaîne",
            ));
        }
    };
    check_rate(&state, RateKey::User(&user_id))?;
    let display_name = user_data
        .get("name")
        .and_then(Value::as_str)
        .map(|name| name.chars().take(200).collect::<String>());

    let store = state.chat.store();
    store
        .upsert_user(&user_id, display_name.as_deref(), Some(&user_data))
        .await
        .map_err(|e| IntentLayerError::store(&e))?;
    let conversation = store
        .create_conversation(&NewConversation {
            owner: user_id.clone(),
            kind: KIND.to_owned(),
            scope: String::new(),
            title: "IntentLayer".to_owned(),
            metadata: serde_json::json!({ "context": context }),
        })
        .await
        .map_err(|e| IntentLayerError::store(&e))?;
    let service = &state.api.intentlayer;
    let session = store
        .create_session(&NewSession {
            kind: KIND.to_owned(),
            scope: String::new(),
            user_id: user_id.clone(),
            conversation_id: Some(conversation.id.clone()),
            ttl: Some(service.ttl),
            metadata: serde_json::json!({
                "user_data": user_data,
                "context": context,
                "language": language.map(Language::code),
            }),
            close_others_in_scope: false,
            // Upserted above, with the user's name and data.
            record_user_seen: false,
        })
        .await
        .map_err(|e| IntentLayerError::store(&e))?;
    // Past the per-user limit, the oldest sessions go.
    let evicted = store
        .close_oldest_over_limit(&user_id, KIND, service.max_per_user)
        .await
        .map_err(|e| IntentLayerError::store(&e))?;
    for id in evicted {
        tracing::info!(session_id = %id, "intentlayer session evicted (per-user limit)");
        discard(&state, &id)
            .await
            .map_err(|e| IntentLayerError::store(&e))?;
    }
    tracing::info!(session_id = %session.id, "intentlayer session created");
    Ok(Json(Created {
        success: true,
        message: "Session créée avec succès",
        session_info: SessionInfo::from(&session),
    }))
}

// ---------------------------------------------------------------------------------------------------------
// Chat

#[derive(Debug, Serialize)]
struct NlpAnalysis {
    intent: &'static str,
    entities: Vec<Entity>,
    confidence: f32,
    /// Additive: the language of `response_text` and of the audio.
    language: Language,
}

#[derive(Debug, Serialize)]
struct ChatSessionInfo {
    session_id: String,
    interaction_count: i64,
    last_activity: String,
}

#[derive(Debug, Serialize)]
struct ChatResponse {
    success: bool,
    response_text: String,
    response_audio: String,
    ui_components: Vec<UiComponent>,
    nlp_analysis: NlpAnalysis,
    session_info: ChatSessionInfo,
    /// Additive: the stored ids of the user message and of the answer.
    message_id: String,
    response_id: String,
}

/// A confidence as the chat response writes it (the f32's shortest decimal: 0.95, 1.0), for JSON built as a
/// `Value`, where the f32 would be widened to f64 and read back as 0.949999988079071.
fn confidence_value(confidence: f32) -> Value {
    // An f32's shortest decimal parses to the f64 nearest it, which serializes as that same decimal.
    confidence
        .to_string()
        .parse::<f64>()
        .map_or(Value::Null, Value::from)
}

/// The language of the answer: the session's preference, else the message's evident language, else French.
fn answer_language(session: &Session, analysis: &Analysis) -> Language {
    session
        .metadata
        .get("language")
        .and_then(Value::as_str)
        .and_then(Language::from_preference)
        .or(analysis.detected_language)
        .unwrap_or(Language::Fr)
}

async fn chat(State(state): State<AppState>, body: Bytes) -> ApiResult<ChatResponse> {
    let body = parse_body(&body)?;
    let wire = required_string(&body, "session_id", 64)?;
    let message = required_string(&body, "message", MAX_MESSAGE_CHARS)?;
    match body.get("input_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(kind)) if kind == "text" => {}
        Some(_) => {
            return Err(IntentLayerError::invalid(
                "input_type",
                "Seul 'input_type': \"text\" est pris en charge",
            ));
        }
    }
    let context = optional_object(&body, "context")?;
    let id = known_id(wire)?;
    check_rate(&state, RateKey::Session(id))?;
    let session = live_session(&state, id).await?;
    let span = tracing::info_span!("intentlayer_chat", session_id = %session.id);
    interact(&state, session, message, context)
        .instrument(span)
        .await
        .map(Json)
}

/// One interaction on a live session: analyse, answer, store. The audio is rendered from the stored answer when
/// its URL is first requested ([`audio_file`]); nothing here touches the disk.
async fn interact(
    state: &AppState,
    session: Session,
    message: &str,
    context: Value,
) -> Result<ChatResponse, IntentLayerError> {
    let llm::ModelAnalysis {
        analysis,
        response_text,
    } = llm::analyze(state, message).await;
    let language = answer_language(&session, &analysis);
    let ui_components = components::components_for(&analysis, language);
    let response_text = response_text
        .unwrap_or_else(|| components::response_text(&analysis, &ui_components, language));

    let service = &state.api.intentlayer;
    let mut question = NewMessage::new(Role::User, message);
    question.metadata = serde_json::json!({ "input_type": "text", "context": context });
    // `language` is the voice of the answer's audio, rendered later from this message.
    let answer_metadata = serde_json::json!({
        "intent": analysis.intent.as_str(),
        "entities": analysis.entities,
        "confidence": confidence_value(analysis.confidence),
        "ui_components": ui_components,
        "language": language.code(),
    });
    // The turn (session touch, question, answer) is ONE transaction: one commit per chat POST. The answer's
    // audio is named after the touched session's interaction count, so its metadata is built inside it (on the
    // store's group-commit writer task, hence the owned copy of the text).
    let answer_text = response_text.clone();
    let (touched, stored) = state
        .chat
        .store()
        .record_turn(&session.id, Some(service.ttl), move |touched| {
            let mut metadata = answer_metadata;
            metadata["response_audio"] = Value::String(audio::url(&audio::file_name(
                &touched.id,
                touched.interaction_count,
            )));
            let mut answer = NewMessage::new(Role::Assistant, answer_text);
            answer.metadata = metadata;
            vec![question, answer]
        })
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => IntentLayerError::session_not_found(),
            e => IntentLayerError::store(&e),
        })?
        .ok_or_else(IntentLayerError::session_not_found)?;
    let response_audio = audio::url(&audio::file_name(&touched.id, touched.interaction_count));
    let [question, answer]: [Message; 2] = stored.try_into().map_err(|_| {
        IntentLayerError::store(&StoreError::Corrupt(
            "a turn did not return its two messages".to_owned(),
        ))
    })?;
    state
        .metrics
        .chat_requests_total
        .with_label_values(&[KIND])
        .inc();

    tracing::info!(intent = analysis.intent.as_str(), "intentlayer interaction");
    Ok(ChatResponse {
        success: true,
        response_text,
        response_audio,
        ui_components,
        nlp_analysis: NlpAnalysis {
            intent: analysis.intent.as_str(),
            entities: analysis.entities,
            confidence: analysis.confidence,
            language,
        },
        session_info: ChatSessionInfo {
            session_id: wire_id(&touched.id),
            interaction_count: touched.interaction_count,
            last_activity: timestamp(touched.last_activity),
        },
        message_id: question.id,
        response_id: answer.id,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Info, delete, list

#[derive(Debug, Serialize)]
struct Info {
    success: bool,
    message: &'static str,
    session_info: SessionInfo,
}

async fn info(State(state): State<AppState>, path: PathParam) -> ApiResult<Info> {
    let session_id = path_param(path, "session_id")?;
    let id = known_id(&session_id)?;
    check_rate(&state, RateKey::Session(id))?;
    let session = live_session(&state, id).await?;
    Ok(Json(Info {
        success: true,
        message: "Session trouvée",
        session_info: SessionInfo::from(&session),
    }))
}

#[derive(Debug, Serialize)]
struct Deleted {
    success: bool,
    message: &'static str,
    session_id: String,
}

async fn remove(State(state): State<AppState>, path: PathParam) -> ApiResult<Deleted> {
    let session_id = path_param(path, "session_id")?;
    let id = known_id(&session_id)?;
    check_rate(&state, RateKey::Session(id))?;
    let session = live_session(&state, id).await?;
    discard(&state, &session.id)
        .await
        .map_err(|e| IntentLayerError::store(&e))?;
    tracing::info!(session_id = %session.id, "intentlayer session deleted");
    Ok(Json(Deleted {
        success: true,
        message: "Session supprimée avec succès",
        session_id: wire_id(&session.id),
    }))
}

#[derive(Debug, Serialize)]
struct Listed {
    success: bool,
    message: String,
    user_id: String,
    sessions: Vec<SessionInfo>,
    total: usize,
}

async fn list(State(state): State<AppState>, path: PathParam) -> ApiResult<Listed> {
    let user_id = path_param(path, "user_id")?;
    if user_id.chars().count() > MAX_USER_ID_CHARS {
        return Err(IntentLayerError::invalid(
            "user_id",
            format!("Le champ 'user_id' dépasse {MAX_USER_ID_CHARS} caractères"),
        ));
    }
    valid_user_id(&user_id)?;
    check_rate(&state, RateKey::User(&user_id))?;
    let sessions = state
        .chat
        .store()
        .list_sessions(&user_id, Some(KIND), true)
        .await
        .map_err(|e| IntentLayerError::store(&e))?;
    let mut live = Vec::with_capacity(sessions.len());
    for session in sessions {
        if is_expired(&session) {
            discard(&state, &session.id)
                .await
                .map_err(|e| IntentLayerError::store(&e))?;
        } else {
            live.push(SessionInfo::from(&session));
        }
    }
    let total = live.len();
    Ok(Json(Listed {
        success: true,
        message: format!("{total} session(s) active(s)"),
        user_id,
        sessions: live,
        total,
    }))
}

// ---------------------------------------------------------------------------------------------------------
// Audio

async fn audio_file(State(state): State<AppState>, path: PathParam) -> Response {
    let file = match path_param(path, "file") {
        Ok(file) => file,
        Err(error) => return error.into_response(),
    };
    let lookup = |session: String, n: u64| stored_script(&state, session, n);
    match state.api.intentlayer.audio.read(&file, lookup).await {
        Ok(bytes) => {
            let mut response = bytes.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=3600"),
            );
            response
        }
        Err(AudioError::NotFound) => {
            IntentLayerError::new(StatusCode::NOT_FOUND, "Fichier audio non trouvé").into_response()
        }
        Err(AudioError::Lookup(error)) => IntentLayerError::store(&error).into_response(),
        Err(error) => {
            tracing::error!(%error, file, "audio file cannot be served");
            IntentLayerError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Fichier audio indisponible",
            )
            .into_response()
        }
    }
}

/// What answer `n` of session `session_id` (a store id) says, from the store; `None` when the session is gone
/// (deleted, expired, evicted) or has no such answer.
async fn stored_script(
    state: &AppState,
    session_id: String,
    n: u64,
) -> Result<Option<Script>, AudioError> {
    let store = state.chat.store();
    let Some(session) = store.get_session(&session_id).await? else {
        return Ok(None);
    };
    let answered = i64::try_from(n).is_ok_and(|n| n >= 1 && n <= session.interaction_count);
    if session.kind != KIND || !session.active || is_expired(&session) || !answered {
        return Ok(None);
    }
    let Some(conversation) = session.conversation_id.as_deref() else {
        return Ok(None);
    };
    let Some(answer) = stored_answer(state, conversation, &session, n).await? else {
        return Ok(None);
    };
    // Answers stored before the language was recorded get the session's preference, else French.
    let language = answer
        .metadata
        .get("language")
        .or_else(|| session.metadata.get("language"))
        .and_then(Value::as_str)
        .and_then(Language::from_preference)
        .unwrap_or(Language::Fr);
    Ok(Some(Script {
        text: answer.content,
        language,
    }))
}

/// The answer of interaction `n` (`1 <= n <= interaction_count`): the assistant message whose
/// `response_audio` names it. Every interaction appends its question then its answer, so answer `n` is normally
/// the message `2 * (interaction_count - n)` places from the end: one indexed read, shortest for the recent
/// answers clients ask for. A conversation that holds other messages as well is searched, newest first.
async fn stored_answer(
    state: &AppState,
    conversation: &str,
    session: &Session,
    n: u64,
) -> Result<Option<Message>, StoreError> {
    let store = state.chat.store();
    let url = audio::url(&audio::file_name(&session.id, n as i64));
    let is_answer = |message: &Message| {
        message.role == Role::Assistant
            && message
                .metadata
                .get("response_audio")
                .and_then(Value::as_str)
                == Some(url.as_str())
    };
    let from_end = (session.interaction_count - n as i64).saturating_mul(2);
    if let Ok(offset) = u32::try_from(from_end) {
        let query = MessageQuery {
            offset,
            limit: 1,
            order: Order::Desc,
            ..MessageQuery::default()
        };
        let page = store.list_messages(conversation, &query).await?;
        if let Some(answer) = page.items.into_iter().find(is_answer) {
            return Ok(Some(answer));
        }
    }
    let mut before = None;
    loop {
        let query = MessageQuery {
            before,
            limit: 1000,
            order: Order::Desc,
            ..MessageQuery::default()
        };
        let page = store.list_messages(conversation, &query).await?;
        if let Some(answer) = page.items.into_iter().find(is_answer) {
            return Ok(Some(answer));
        }
        match page.next_cursor {
            Some(cursor) if page.has_more => before = Some(cursor),
            _ => return Ok(None),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Housekeeping

/// How often expired sessions are swept: a quarter of the TTL, between 100 ms and 30 s.
fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

/// How often the rate limiters forget idle keys: often enough that memory follows the keys of the last few
/// seconds (a key is forgotten once back at a full burst), rarely enough that the scans cost nothing.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Spawns the sweeper: removes orphaned audio once, then expired sessions (and their audio) every
/// [`sweep_interval`], and prunes the rate limiters (this surface's and the chatbot's) every [`PRUNE_EVERY`].
/// Tracked by `state.tasks`; ends with `state.shutdown`.
pub fn spawn_sweeper(state: &AppState) {
    let state = state.clone();
    let every = sweep_interval(state.api.intentlayer.ttl);
    state.tasks.clone().spawn(async move {
        remove_orphaned_audio(&state).await;
        let mut sweep = tokio::time::interval(every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => break,
                _ = sweep.tick() => sweep_once(&state).await,
                _ = prune.tick() => {
                    state.api.chatbot.prune();
                    state.api.intentlayer.limiter.prune();
                }
            }
        }
    });
}

/// Removes every IntentLayer session whose TTL has passed, with its audio.
pub async fn sweep_once(state: &AppState) {
    let expired = match state
        .chat
        .store()
        .expire_idle_sessions(chrono::Utc::now())
        .await
    {
        Ok(expired) => expired,
        Err(error) => {
            tracing::warn!(%error, "session sweep failed");
            return;
        }
    };
    for session in expired.into_iter().filter(|session| session.kind == KIND) {
        tracing::info!(session_id = %session.id, "intentlayer session expired");
        if let Err(error) = discard(state, &session.id).await {
            tracing::warn!(%error, session_id = %session.id, "cannot remove an expired session");
        }
    }
}

/// Audio directories whose session is gone (the process died between the two removals).
async fn remove_orphaned_audio(state: &AppState) {
    let audio = &state.api.intentlayer.audio;
    for id in audio.sessions_on_disk().await {
        match state.chat.store().get_session(&id).await {
            Ok(Some(session)) if session.active => {}
            Ok(_) => audio.remove_session(&id).await,
            Err(error) => {
                tracing::warn!(%error, "cannot check audio orphans");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_confidences_read_back_as_the_chat_response_wrote_them() {
        for confidence in [
            0.95_f32,
            0.1,
            0.3,
            0.55,
            0.8,
            1.0,
            0.0,
            0.123_456_79,
            f32::MIN_POSITIVE,
        ] {
            let written = serde_json::to_string(&confidence).unwrap();
            let stored = serde_json::to_string(&confidence_value(confidence)).unwrap();
            assert_eq!(stored, written);
        }
        assert_eq!(confidence_value(f32::NAN), Value::Null);
    }

    #[test]
    fn wire_ids() {
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(store_id(&wire_id(&id)), Some(id.as_str()));
        assert_eq!(store_id("sess_abc123"), None);
        assert_eq!(store_id(&id), None);
    }

    #[test]
    fn sweep_interval_is_bounded() {
        assert_eq!(
            sweep_interval(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(3600)),
            Duration::from_secs(30)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(10)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn field_validation() {
        let body = parse_body(&Bytes::from_static(br#"{"user_id": 5, "context": []}"#)).unwrap();
        assert_eq!(
            required_string(&body, "user_id", 10).unwrap_err().field,
            Some("user_id")
        );
        assert_eq!(
            optional_object(&body, "context").unwrap_err().field,
            Some("context")
        );
        assert_eq!(
            required_string(&body, "message", 10).unwrap_err().field,
            Some("message")
        );
        assert_eq!(
            parse_body(&Bytes::from_static(b"[]")).unwrap_err().field,
            Some("body")
        );
        assert!(valid_user_id("user123").is_ok());
        assert!(valid_user_id("a/b").is_err());
    }
}
