//! Seed 000, IntentLayer sessions: per-user sessions whose chat answers carry an intent analysis, UI
//! components and a spoken WAV.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/sessions/create` | opens a session for `user_id` (evicting the user's oldest past the limit) |
//! | `POST /api/v1/sessions/chat` | one interaction: `response_text`, `response_audio`, `ui_components`, `nlp_analysis`, `session_info` |
//! | `GET /api/v1/sessions/info/{session_id}` | the session |
//! | `DELETE /api/v1/sessions/delete/{session_id}` | removes the session and its audio |
//! | `GET /api/v1/sessions/list/{user_id}` | the user's live sessions, newest first |
//! | `GET /audio/{file}` | a spoken answer (`audio/wav`) |
//!
//! Sessions are chat-domain sessions of kind `intentlayer` with an idle TTL (`chat.session_ttl`); each has one
//! conversation where every interaction stores the user message and the answer. Wire ids are `sess_<uuid>`.
//! A session that expires, is evicted or is deleted is removed with its audio; the conversation stays.
//!
//! Errors keep the seed's style: `{"success": false, "message": "...", "field": "..."}` (422 names the
//! field; 404 is `{"success": false, "message": "Session non trouvée"}`). See `docs/intentlayer-api.md`.

pub mod audio;
pub mod classifier;
pub mod components;
mod llm;
pub mod tts;

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::Instrument as _;

use self::audio::{AudioError, AudioStore};
use self::classifier::{Analysis, Entity, Language};
use self::components::UiComponent;
use super::timestamp;
use crate::chat::{Message, NewConversation, NewMessage, NewSession, Role, Session, StoreError};
use crate::config::Config;
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
        .route("/api/v1/sessions/delete/{session_id}", delete(remove))
        .route("/api/v1/sessions/list/{user_id}", get(list))
        .route("/audio/{file}", get(audio_file))
}

/// Per-server state of the surface.
#[derive(Debug)]
pub struct IntentLayerService {
    /// Spoken answers.
    pub audio: AudioStore,
    /// Idle time-to-live of a session.
    ttl: Duration,
    /// Live sessions per user.
    max_per_user: u32,
}

impl IntentLayerService {
    /// State for `config` (creates `data_dir/audio`).
    ///
    /// # Errors
    /// If the audio directory cannot be created.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let dir = config.data_dir.join("audio");
        let audio =
            AudioStore::new(dir.clone(), tts::Tts::from_config(config)).map_err(|error| {
                anyhow::anyhow!(
                    "failed to create audio directory {}: {error}",
                    dir.display()
                )
            })?;
        Ok(IntentLayerService {
            audio,
            ttl: config.chat.session_ttl,
            max_per_user: config.chat.max_sessions_per_user.max(1),
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Errors

/// An error of this surface: `{"success": false, "message": "...", "field": "..."}`.
#[derive(Debug)]
pub struct IntentLayerError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    success: bool,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
}

impl IntentLayerError {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        IntentLayerError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: message.into(),
            field: Some(field),
        }
    }

    fn session_not_found() -> Self {
        IntentLayerError {
            status: StatusCode::NOT_FOUND,
            message: "Session non trouvée".into(),
            field: None,
        }
    }

    fn store(error: &StoreError) -> Self {
        tracing::error!(%error, "intentlayer store operation failed");
        IntentLayerError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "Stockage indisponible, réessayez plus tard".into(),
            field: None,
        }
    }
}

impl IntoResponse for IntentLayerError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                success: false,
                message: &self.message,
                field: self.field,
            }),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<Json<T>, IntentLayerError>;

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

/// Removes a session that ended (deleted, expired, evicted): its row and its audio. Its conversation stays.
async fn discard(state: &AppState, store_id: &str) -> Result<(), StoreError> {
    state.api.intentlayer.audio.remove_session(store_id).await;
    state.chat.store().delete_session(store_id).await?;
    Ok(())
}

/// The live session behind a wire id, expiring it on the spot when its TTL has passed.
async fn live_session(state: &AppState, wire: &str) -> Result<Session, IntentLayerError> {
    let id = store_id(wire).ok_or_else(IntentLayerError::session_not_found)?;
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
    let session = live_session(&state, wire).await?;
    let span = tracing::info_span!("intentlayer_chat", session_id = %session.id);
    interact(&state, session, message, context)
        .instrument(span)
        .await
        .map(Json)
}

/// One interaction on a live session: analyse, answer, store, schedule the audio.
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
    let answer_metadata = serde_json::json!({
        "intent": analysis.intent.as_str(),
        "entities": analysis.entities,
        "confidence": analysis.confidence,
        "ui_components": ui_components,
    });
    // The turn (session touch, question, answer) is ONE transaction: one commit per chat POST. The answer's
    // audio is named after the touched session's interaction count, so its metadata is built inside it.
    let (touched, stored) = state
        .chat
        .store()
        .record_turn(&session.id, Some(service.ttl), |touched| {
            let mut metadata = answer_metadata;
            metadata["response_audio"] = Value::String(audio::url(&audio::file_name(
                &touched.id,
                touched.interaction_count,
            )));
            let mut answer = NewMessage::new(Role::Assistant, response_text.clone());
            answer.metadata = metadata;
            vec![question, answer]
        })
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => IntentLayerError::session_not_found(),
            e => IntentLayerError::store(&e),
        })?
        .ok_or_else(IntentLayerError::session_not_found)?;
    // Written after the commit: if it fails, the client gets a 500 for a turn that is stored but whose audio
    // will never render (before, the touch was committed first and the messages lost in that case).
    let file = service
        .audio
        .schedule(
            &touched.id,
            touched.interaction_count,
            &response_text,
            language,
        )
        .await
        .map_err(|error| {
            tracing::error!(%error, "cannot record the answer's audio");
            IntentLayerError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: "Impossible de préparer l'audio de la réponse".into(),
                field: None,
            }
        })?;
    let response_audio = audio::url(&file);
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

    // Render the audio now, in the background, if a renderer is free; otherwise the first GET renders it.
    if let Some(permit) = service.audio.try_reserve() {
        let api = state.api.clone();
        state.tasks.spawn(
            async move {
                if let Err(error) = api.intentlayer.audio.render(&file, Some(permit)).await {
                    tracing::debug!(%error, file, "answer audio not rendered");
                }
            }
            .in_current_span(),
        );
    }

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

async fn info(State(state): State<AppState>, Path(session_id): Path<String>) -> ApiResult<Info> {
    let session = live_session(&state, &session_id).await?;
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

async fn remove(
    State(state): State<AppState>,
    Path(session_id): Path<String>,
) -> ApiResult<Deleted> {
    let session = live_session(&state, &session_id).await?;
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

async fn list(State(state): State<AppState>, Path(user_id): Path<String>) -> ApiResult<Listed> {
    if user_id.chars().count() > MAX_USER_ID_CHARS {
        return Err(IntentLayerError::invalid(
            "user_id",
            format!("Le champ 'user_id' dépasse {MAX_USER_ID_CHARS} caractères"),
        ));
    }
    valid_user_id(&user_id)?;
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

async fn audio_file(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    match state.api.intentlayer.audio.read(&file).await {
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
        Err(AudioError::NotFound) => IntentLayerError {
            status: StatusCode::NOT_FOUND,
            message: "Fichier audio non trouvé".into(),
            field: None,
        }
        .into_response(),
        Err(error) => {
            tracing::error!(%error, file, "audio file cannot be served");
            IntentLayerError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: "Fichier audio indisponible".into(),
                field: None,
            }
            .into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Housekeeping

/// How often expired sessions are swept: a quarter of the TTL, between 100 ms and 30 s.
fn sweep_interval(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

/// Spawns the sweeper: removes orphaned audio once, then expired sessions (and their audio) every
/// [`sweep_interval`], and prunes the chatbot rate limiter. Tracked by `state.tasks`; ends with `state.shutdown`.
pub fn spawn_sweeper(state: &AppState) {
    let state = state.clone();
    let every = sweep_interval(state.api.intentlayer.ttl);
    state.tasks.clone().spawn(async move {
        remove_orphaned_audio(&state).await;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = state.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            sweep_once(&state).await;
            if last_prune.elapsed() >= Duration::from_secs(60) {
                state.api.chatbot.prune();
                last_prune = tokio::time::Instant::now();
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
