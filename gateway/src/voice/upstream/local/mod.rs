//! The built-in local engine: a real server of the OpenAI Realtime protocol (GA), with no keys and
//! no network.
//!
//! It is what the gateway talks to by default, through the same client code it uses for OpenAI:
//! [`LocalEngineServer::connect_in_process`] hands out the client end of a WebSocket running over
//! an in-memory duplex, with real framing, so the only difference from the network case is the
//! byte pipe. The same engine is served at `GET /v1/realtime` ([`routes`]) for any OpenAI
//! Realtime client, and on its own port by [`testkit::FaultyServer`] for fault-injection tests.
//!
//! # Layout
//! - [`engine`]: the sans-IO core ([`LocalEngine`]): client events, audio and time in; server
//!   events out. Turn detection (dsp VAD), replies, pacing, cancel, truncate, echo.
//! - `driver`: the tokio task that connects one WebSocket to one engine.
//! - `tts`: espeak-ng (or a tone when it is missing); `reply`: the reply text; `codec`: formats.
//! - [`testkit`]: a loopback server that misbehaves on command.
//!
//! # Modes
//! - `voice`: each turn is answered with speech saying what was heard ("I heard about 1.3 seconds
//!   of audio."), paced at real-time speed after a 200 ms head start.
//! - `echo`: each appended chunk comes straight back as one `response.output_audio.delta`, byte
//!   for byte (converted only if the input and output formats differ); no VAD, no pacing.
//!
//! # Authentication at `/v1/realtime`
//! `Authorization: Bearer <token>` (or the browser form, a `Sec-WebSocket-Protocol` entry
//! `openai-insecure-api-key.<token>`) must be the configured `OPENAI_API_KEY` or an ephemeral
//! secret minted by `GET /api/session` (checked through [`TokenCheck`]). With neither the
//! endpoint accepts nobody: the engine spawns processes, so it is not open by default.

mod codec;
mod driver;
pub mod engine;
mod reply;
#[doc(hidden)]
pub mod testkit;
mod tts;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::FutureExt as _;
use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;

pub use self::engine::{EngineMode, EngineSettings, LocalEngine, Output};
use self::tts::Synthesizer;
use crate::config::{Config, LocalEngineMode, Secret};
use crate::state::AppState;

/// Bytes buffered in each direction of the in-process pipe: several 20-40 ms audio events (1.3 to
/// 2.6 KB of base64 each), so neither side waits on the other in normal operation, while an idle
/// session keeps little memory (the pipe's buffer grows only as far as it is used).
const DUPLEX_BUFFER: usize = 16 * 1024;

/// The largest event the engine accepts. OpenAI allows 15 MiB appends; 1 MiB (about 16 s of
/// 24 kHz PCM16 in base64) is plenty for a relay that forwards 20 ms frames, and bounds memory.
const MAX_CLIENT_MESSAGE: usize = 1024 * 1024;

/// Decides whether a bearer token may use `/v1/realtime` (the `/api/session` secret store
/// implements it).
pub trait TokenCheck: Send + Sync {
    /// True if `bearer_token` is currently valid.
    fn accepts(&self, bearer_token: &str) -> bool;
}

/// How the engine is built.
#[derive(Debug, Clone)]
pub struct LocalEngineConfig {
    /// Per-connection behaviour (mode, voice, pacing, expiry).
    pub settings: EngineSettings,
    /// The key clients must present at `/v1/realtime` (besides minted secrets).
    pub api_key: Option<Secret>,
    /// WebSocket limits of the engine's side of each connection.
    pub ws: WebSocketConfig,
    /// The speech synthesizer to run (normally `espeak-ng`).
    pub espeak_program: String,
}

impl Default for LocalEngineConfig {
    fn default() -> Self {
        LocalEngineConfig {
            settings: EngineSettings::default(),
            api_key: None,
            ws: WebSocketConfig::default()
                .read_buffer_size(8 * 1024)
                .write_buffer_size(8 * 1024)
                .max_write_buffer_size(4 * MAX_CLIENT_MESSAGE)
                .max_message_size(Some(MAX_CLIENT_MESSAGE))
                .max_frame_size(Some(MAX_CLIENT_MESSAGE)),
            espeak_program: "espeak-ng".to_owned(),
        }
    }
}

impl LocalEngineConfig {
    /// The engine as the gateway configuration describes it.
    pub fn from_config(config: &Config) -> Self {
        let voice = &config.voice;
        let limits = &config.limits;
        let defaults = LocalEngineConfig::default();
        LocalEngineConfig {
            settings: EngineSettings {
                mode: match voice.local_engine_mode {
                    LocalEngineMode::Voice => EngineMode::Voice,
                    LocalEngineMode::Echo => EngineMode::Echo,
                },
                model: voice.realtime_model.clone(),
                voice: voice.voice.clone(),
                instructions: voice.instructions.clone(),
                ..EngineSettings::default()
            },
            api_key: voice.openai_api_key.clone(),
            ws: defaults
                .ws
                .read_buffer_size(limits.ws_read_buffer_bytes)
                .write_buffer_size(limits.ws_write_buffer_bytes),
            espeak_program: defaults.espeak_program,
        }
    }
}

/// What every connection of one engine shares.
pub(crate) struct Shared {
    settings: EngineSettings,
    synth: Synthesizer,
    api_key: Option<Secret>,
    token_check: RwLock<Option<Arc<dyn TokenCheck>>>,
    ws: WebSocketConfig,
    connections: AtomicU64,
}

impl Shared {
    /// A different id seed per connection.
    fn next_seed(&self) -> u64 {
        let n = self.connections.fetch_add(1, Ordering::Relaxed);
        rand::random::<u64>() ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// The engine: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct LocalEngineServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LocalEngineServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEngineServer")
            .field("mode", &self.shared.settings.mode)
            .field(
                "connections",
                &self.shared.connections.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl LocalEngineServer {
    /// Builds the engine. Nothing runs until a connection arrives.
    pub fn new(config: LocalEngineConfig) -> Self {
        LocalEngineServer {
            shared: Arc::new(Shared {
                settings: config.settings,
                synth: Synthesizer::new(config.espeak_program),
                api_key: config.api_key,
                token_check: RwLock::new(None),
                ws: config.ws,
                connections: AtomicU64::new(0),
            }),
        }
    }

    /// Installs the check for ephemeral secrets (minted by `GET /api/session`).
    pub fn set_token_check(&self, check: Arc<dyn TokenCheck>) {
        let mut slot = self
            .shared
            .token_check
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(check);
    }

    /// Voice or echo.
    pub fn mode(&self) -> EngineMode {
        self.shared.settings.mode
    }

    /// True once espeak-ng was found missing: replies are tones instead of speech.
    pub fn uses_tone_fallback(&self) -> bool {
        self.shared.synth.uses_fallback()
    }

    /// Connections served so far (all transports).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Opens an in-process connection: returns the client end of a WebSocket over an in-memory
    /// duplex, and the engine's driver for the other end. Spawn the driver on the caller's task
    /// tracker; it ends when the client end is closed or dropped.
    pub fn connect_in_process(
        &self,
    ) -> (
        WebSocketStream<DuplexStream>,
        impl Future<Output = ()> + Send + 'static,
    ) {
        let (client_io, server_io) = tokio::io::duplex(DUPLEX_BUFFER);
        // The client end gets the same sized buffers as the engine's end: tungstenite's defaults
        // (128 KiB each way) would dominate an idle session's memory.
        // `from_raw_socket` performs no handshake and completes on its first poll, so this never
        // yields `None`; the gateway's client gets a ready stream without an `.await`.
        let client =
            WebSocketStream::from_raw_socket(client_io, Role::Client, Some(self.shared.ws))
                .now_or_never()
                .unwrap_or_else(|| unreachable!("from_raw_socket completes on first poll"));
        let shared = Arc::clone(&self.shared);
        let driver = async move {
            let config = shared.ws;
            let ws = WebSocketStream::from_raw_socket(server_io, Role::Server, Some(config)).await;
            let settings = shared.settings.clone();
            // Nothing to watch: the gateway side closes the pipe when it shuts down.
            driver::serve(
                ws,
                shared,
                settings,
                CancellationToken::new(),
                driver::Hooks::default(),
            )
            .await;
        };
        (client, driver)
    }

    /// Whether `headers` carry a token this engine accepts; on success returns the subprotocol to
    /// answer with (`realtime`, when the browser form was used).
    fn authorize(&self, headers: &HeaderMap) -> Result<Option<&'static str>, AuthError> {
        let protocols: Vec<&str> = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let from_protocol = protocols
            .iter()
            .find_map(|p| p.strip_prefix("openai-insecure-api-key."));
        let Some(token) = bearer.or(from_protocol).filter(|t| !t.is_empty()) else {
            return Err(AuthError::Missing);
        };
        let key_ok = self
            .shared
            .api_key
            .as_ref()
            .is_some_and(|key| constant_time_eq(key.expose().as_bytes(), token.as_bytes()));
        let minted_ok = || {
            let check = self
                .shared
                .token_check
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            check.as_ref().is_some_and(|c| c.accepts(token))
        };
        if !key_ok && !minted_ok() {
            return Err(AuthError::Invalid);
        }
        Ok(protocols.contains(&"realtime").then_some("realtime"))
    }
}

/// Compares without an early exit, so the time taken does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Clone, Copy)]
enum AuthError {
    Missing,
    Invalid,
}

/// `GET /v1/realtime`: the engine for any OpenAI Realtime client.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/realtime", get(realtime_upgrade))
}

/// An error in OpenAI's HTTP shape (`{"error": {...}}`), so clients report it as they would
/// OpenAI's.
fn openai_http_error(
    status: StatusCode,
    code: &str,
    message: &str,
    param: Option<&str>,
) -> Response {
    let body = serde_json::json!({
        "error": { "type": "invalid_request_error", "code": code, "message": message, "param": param }
    });
    (status, axum::Json(body)).into_response()
}

async fn realtime_upgrade(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return openai_http_error(
            StatusCode::UPGRADE_REQUIRED,
            "websocket_required",
            "This endpoint speaks the Realtime protocol over WebSocket only.",
            Some("Upgrade"),
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return openai_http_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Sec-WebSocket-Version must be 13.",
            Some("Sec-WebSocket-Version"),
        );
    }
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return openai_http_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Sec-WebSocket-Key is missing.",
            Some("Sec-WebSocket-Key"),
        );
    };
    let engine = state.voice.local_engine().clone();
    let protocol = match engine.authorize(headers) {
        Ok(protocol) => protocol,
        Err(AuthError::Missing) => {
            return openai_http_error(
                StatusCode::UNAUTHORIZED,
                "missing_api_key",
                "You didn't provide an API key. Send 'Authorization: Bearer <key>' with the configured key or a secret from GET /api/session.",
                None,
            );
        }
        Err(AuthError::Invalid) => {
            return openai_http_error(
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                "Incorrect API key provided.",
                None,
            );
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let mut settings = engine.shared.settings.clone();
    if let Some(model) = query.get("model").filter(|m| !m.is_empty()) {
        settings.model.clone_from(model);
    }
    let shared = Arc::clone(&engine.shared);
    let shutdown = state.shutdown.clone();
    state.tasks.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "local engine upgrade failed");
                return;
            }
        };
        let config = shared.ws;
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        driver::serve(ws, shared, settings, shutdown, driver::Hooks::default()).await;
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = protocol {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Minted;
    impl TokenCheck for Minted {
        fn accepts(&self, token: &str) -> bool {
            token == "ek_minted"
        }
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn tokens_are_the_key_or_a_minted_secret() {
        let engine = LocalEngineServer::new(LocalEngineConfig {
            api_key: Some(Secret::new("sk-test")),
            ..LocalEngineConfig::default()
        });
        let auth = |pairs: &[(header::HeaderName, &str)]| engine.authorize(&headers(pairs));
        assert!(matches!(auth(&[]), Err(AuthError::Missing)));
        assert!(matches!(
            auth(&[(header::AUTHORIZATION, "Bearer sk-test")]),
            Ok(None)
        ));
        assert!(matches!(
            auth(&[(header::AUTHORIZATION, "Bearer sk-tesT")]),
            Err(AuthError::Invalid)
        ));
        assert!(matches!(
            auth(&[(header::AUTHORIZATION, "Bearer ek_minted")]),
            Err(AuthError::Invalid)
        ));
        engine.set_token_check(Arc::new(Minted));
        assert!(matches!(
            auth(&[(header::AUTHORIZATION, "Bearer ek_minted")]),
            Ok(None)
        ));
        // The browser form: the token rides in the subprotocol list, and `realtime` is echoed.
        let browser = auth(&[(
            header::SEC_WEBSOCKET_PROTOCOL,
            "realtime, openai-insecure-api-key.ek_minted",
        )]);
        assert!(matches!(browser, Ok(Some("realtime"))));
    }

    #[test]
    fn without_a_key_only_minted_secrets_pass() {
        let engine = LocalEngineServer::new(LocalEngineConfig::default());
        engine.set_token_check(Arc::new(Minted));
        assert!(
            engine
                .authorize(&headers(&[(header::AUTHORIZATION, "Bearer ek_minted")]))
                .is_ok()
        );
        assert!(
            engine
                .authorize(&headers(&[(header::AUTHORIZATION, "Bearer anything")]))
                .is_err()
        );
        assert!(
            engine
                .authorize(&headers(&[(header::AUTHORIZATION, "Bearer ")]))
                .is_err()
        );
    }
}
