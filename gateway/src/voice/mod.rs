//! The realtime voice path: a browser streams its microphone to `/ws/realtime` and hears the model.
//!
//! # Layout
//! - [`protocol`]: sans-IO wire formats: the OKTI client dialect ([`protocol::okti`]) and the OpenAI
//!   Realtime events ([`protocol::openai`]).
//! - [`session`]: one actor per session around a sans-IO decision core (barge-in, truncation,
//!   reconnect, rollover, backpressure).
//! - [`transport`]: the client WebSocket; it moves frames and decides nothing.
//! - [`upstream`]: the OpenAI Realtime client and the built-in local engine it also talks to.
//!
//! [`VoiceService`] holds what sessions share: the session cap, the upstream client, the local
//! engine and the ephemeral secrets of `GET /api/session`.

pub mod protocol;
pub mod session;
pub mod transport;
pub mod upstream;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use self::session::SessionContext;
use self::session::core::SessionConfig;
use self::session::metrics::SessionMetrics;
use self::upstream::local::{LocalEngineConfig, LocalEngineServer, TokenCheck};
use self::upstream::openai::{Target, UpstreamClient, realtime_url};
use crate::api::realtime_http::{self, SecretStore};
use crate::config::{Config, TurnDetection};
use crate::metrics::{Metrics, labels};
use crate::state::{AppState, ComponentHealth, HealthImpact, HealthRegistry};

/// What voice sessions share. Built once by the server.
pub struct VoiceService {
    /// Admission: one permit per live session (`voice.max_sessions`).
    sessions: Arc<Semaphore>,
    upstream: Arc<UpstreamClient>,
    session_config: SessionConfig,
    /// Handles for sessions on the WebSocket transport.
    ws_metrics: SessionMetrics,
    metrics: Arc<Metrics>,
    local: LocalEngineServer,
    secrets: Arc<SecretStore>,
    http: reqwest::Client,
    next_id: AtomicU64,
    upstream_health: Arc<UpstreamHealth>,
    /// `local` or `openai_compat`, for `/health`.
    upstream_kind: &'static str,
    model: String,
    max_sessions: usize,
}

impl std::fmt::Debug for VoiceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceService")
            .field("free_sessions", &self.sessions.available_permits())
            .finish_non_exhaustive()
    }
}

/// What recent sessions learned about the upstream, for `GET /health`: connecting is the only probe
/// that costs nothing extra (opening a session just to check would cost a provider session).
#[derive(Debug, Default)]
pub struct UpstreamHealth {
    consecutive_failures: AtomicU32,
    last_error: Mutex<Option<String>>,
}

/// Consecutive failed connects after which the upstream is reported down.
const UPSTREAM_DOWN_AFTER: u32 = 3;

impl UpstreamHealth {
    /// Records a successful connect.
    pub fn connected(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Records a failed connect.
    pub fn failed(&self, reason: &str) {
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason.to_owned());
    }

    fn report(&self) -> Option<String> {
        if self.consecutive_failures.load(Ordering::Relaxed) < UPSTREAM_DOWN_AFTER {
            return None;
        }
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Some(last.unwrap_or_else(|| "upstream connects failing".to_owned()))
    }
}

/// Lets the built-in engine accept the secrets `GET /api/session` mints.
struct MintedSecrets(Arc<SecretStore>);

impl TokenCheck for MintedSecrets {
    fn accepts(&self, bearer_token: &str) -> bool {
        self.0.accepts(bearer_token)
    }
}

impl VoiceService {
    /// Builds the service from the configuration: the built-in engine is always there (it serves
    /// `/v1/realtime`); it is also the upstream unless `voice.realtime_url` names another.
    ///
    /// # Errors
    /// An unusable configuration (HTTP client construction).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let voice = &config.voice;
        let secrets = Arc::new(SecretStore::default());
        let local = LocalEngineServer::new(LocalEngineConfig::from_config(config));
        local.set_token_check(Arc::new(MintedSecrets(Arc::clone(&secrets))));
        let target = match &voice.realtime_url {
            Some(url) => Target::Remote {
                url: realtime_url(url, &voice.realtime_model),
                api_key: voice.openai_api_key.clone(),
            },
            None => {
                let engine = local.clone();
                Target::InProcess(Arc::new(move |tasks| {
                    let (ws, driver) = engine.connect_in_process();
                    tasks.spawn(driver);
                    Box::new(ws)
                }))
            }
        };
        tracing::info!(upstream = ?target, model = %voice.realtime_model, "voice upstream");
        let session_config = SessionConfig {
            idle_timeout: voice.idle_timeout,
            // Half the message limit: a frame too big for a session is refused with `error` (and the
            // session goes on) well before the socket itself would have to be closed with 1009.
            max_audio_frame_bytes: (config.limits.ws_max_message_bytes / 2).max(2),
            append_batch: Duration::from_millis(voice.append_batch_ms),
            max_reconnect_attempts: voice.upstream_reconnect_attempts,
            manual_turns: voice.turn_detection == TurnDetection::None,
            rollover_after: Some(voice.upstream_rollover_after).filter(|d| !d.is_zero()),
            ..SessionConfig::default()
        };
        // reqwest is built without a default crypto provider; the workspace uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(voice.upstream_connect_timeout.max(Duration::from_secs(5)))
            .build()?;
        Ok(VoiceService {
            sessions: Arc::new(Semaphore::new(voice.max_sessions)),
            upstream: Arc::new(UpstreamClient::new(config, target)),
            session_config,
            ws_metrics: SessionMetrics::from_registry(&metrics, labels::TRANSPORT_WS),
            metrics,
            local,
            secrets,
            http,
            next_id: AtomicU64::new(1),
            upstream_health: Arc::new(UpstreamHealth::default()),
            upstream_kind: if voice.realtime_url.is_some() {
                labels::MODEL_OPENAI_COMPAT
            } else {
                labels::MODEL_LOCAL
            },
            model: voice.realtime_model.clone(),
            max_sessions: voice.max_sessions,
        })
    }

    /// Registers the `realtime` section of `GET /health`: down after repeated failed upstream
    /// connects, with the live session count.
    pub fn register_health(self: &Arc<Self>, registry: &HealthRegistry) {
        let service = Arc::clone(self);
        registry.register("realtime", HealthImpact::Optional, move || {
            let service = Arc::clone(&service);
            async move {
                let health = match service.upstream_health.report() {
                    None => ComponentHealth::up(),
                    Some(error) => ComponentHealth::down(error),
                };
                let active = service.max_sessions - service.sessions.available_permits();
                health
                    .with("kind", service.upstream_kind)
                    .with("model", service.model.clone())
                    .with("sessions", active)
                    .with("max_sessions", service.max_sessions)
            }
        });
    }

    /// A permit for one more session, or `None` at the cap.
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.sessions).try_acquire_owned().ok()
    }

    /// Counts a refused session.
    pub fn note_rejected(&self, reason: &str) {
        self.metrics
            .sessions_rejected_total
            .with_label_values(&[reason])
            .inc();
    }

    /// What a new WebSocket session needs.
    pub fn session_context(&self, state: &AppState) -> SessionContext {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        SessionContext {
            id: format!("ws-{n}"),
            config: self.session_config.clone(),
            metrics: self.ws_metrics.clone(),
            upstream: Arc::clone(&self.upstream),
            shutdown: state.shutdown.clone(),
            ping_interval: state.config.limits.ping_interval,
            close_timeout: state.config.limits.close_timeout,
            tasks: state.tasks.clone(),
            upstream_health: Arc::clone(&self.upstream_health),
        }
    }

    /// The built-in engine (served at `/v1/realtime`).
    pub fn local_engine(&self) -> &LocalEngineServer {
        &self.local
    }

    /// Secrets minted by `GET /api/session` for the built-in engine.
    pub fn secrets(&self) -> &SecretStore {
        &self.secrets
    }

    /// The HTTP client for provider calls (`client_secrets`).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// `/ws/realtime`, `/api/session` and the built-in engine's `/v1/realtime`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ws/realtime", get(transport::ws::upgrade))
        .route("/api/session", get(realtime_http::session))
        .merge(upstream::local::routes())
}
