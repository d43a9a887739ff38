//! The seed API surfaces: one thin adapter per documented contract, from its JSON to the chat domain.
//!
//! # Layout
//! - [`chatbot`]: seed 004, the chatbot WebSocket client (`/chatbot/...`, `/ws/chat/{session_id}`).
//! - [`intentlayer`]: seed 000, IntentLayer sessions (`/api/v1/sessions/...`, `/audio/{file}`).
//! - [`auth`]: JWT bearer tokens for the chatbot surface.
//! - [`rate_limit`]: the keyed request-rate limiter both surfaces use (per user, per session).
//!
//! Each surface keeps its own documented error shape (see `docs/chatbot-api.md` and
//! `docs/intentlayer-api.md`); only this layer knows the seeds' JSON field names.

pub mod auth;
pub mod chatbot;
pub mod intentlayer;
pub mod rate_limit;
pub mod realtime_http;

use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Every route of the seed surfaces.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(chatbot::routes())
        .merge(intentlayer::routes())
}

/// The per-server state of the API surfaces (held in [`AppState::api`]).
pub struct ApiService {
    /// Verifies chatbot bearer tokens.
    pub jwt: auth::JwtVerifier,
    /// Live chatbot sockets and the per-user message rate limiter.
    pub chatbot: chatbot::ChatbotService,
    /// IntentLayer audio, request rate limiter and sessions housekeeping.
    pub intentlayer: intentlayer::IntentLayerService,
}

impl std::fmt::Debug for ApiService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiService")
            .field("intentlayer", &self.intentlayer)
            .finish_non_exhaustive()
    }
}

impl ApiService {
    /// Builds the API state from the configuration (creates `data_dir/audio`).
    ///
    /// # Errors
    /// If the audio directory cannot be created.
    pub fn new(config: &Config, metrics: &Metrics) -> anyhow::Result<Self> {
        Ok(ApiService {
            jwt: auth::JwtVerifier::new(config.chat.jwt_secret.expose().as_bytes()),
            chatbot: chatbot::ChatbotService::new(config, metrics),
            intentlayer: intentlayer::IntentLayerService::new(config, metrics)?,
        })
    }
}

/// Starts the background housekeeping of the API surfaces (IntentLayer session expiry, audio orphans,
/// rate-limiter pruning) as a task tracked by `state.tasks` that ends with `state.shutdown`.
pub fn spawn_background(state: &AppState) {
    intentlayer::spawn_sweeper(state);
}

/// Whether the route at `path` limits its request body itself (seed upload routes, which answer 413 in
/// their surface's documented shape): the HTTP edge then skips its early `Content-Length` check.
pub fn enforces_own_body_limit(path: &str) -> bool {
    path.strip_prefix("/chatbot/")
        .is_some_and(|rest| rest.ends_with("/documents") && rest.matches('/').count() == 1)
}

/// A timestamp as the seeds write it: RFC 3339 UTC with a `Z` and whole seconds (`2024-01-15T10:30:00Z`).
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn upload_routes_are_recognised() {
        assert!(super::enforces_own_body_limit(
            "/chatbot/assistant/documents"
        ));
        assert!(!super::enforces_own_body_limit("/chatbot/a/b/documents"));
        assert!(!super::enforces_own_body_limit(
            "/chatbot/assistant/session"
        ));
        assert!(!super::enforces_own_body_limit("/api/v1/sessions/create"));
    }
}
