//! `GET /api/session` (seed 002): mint an ephemeral realtime session for a browser.
//!
//! With an OpenAI-compatible upstream and a key, the gateway calls `POST /v1/realtime/client_secrets`
//! and answers in the seed's shape (`object`, `id`, `model`, `client_secret {value, expires_at}`,
//! `instructions`, `voice`, …). With the built-in engine it mints the secret itself: a random
//! `ek_local_…` value valid for [`LOCAL_SECRET_TTL`], which the engine's `/v1/realtime` accepts as a
//! bearer token (through [`SecretStore`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::config::Config;
use crate::http::error::ApiError;
use crate::state::AppState;

/// Lifetime of a secret minted for the built-in engine (OpenAI's are about as short).
pub const LOCAL_SECRET_TTL: Duration = Duration::from_secs(60);

/// Most live secrets kept; past it the oldest-expiring are forgotten first.
const MAX_LIVE_SECRETS: usize = 10_000;

/// Ephemeral secrets minted for the built-in engine, with their expiry (Unix seconds).
#[derive(Debug, Default)]
pub struct SecretStore {
    secrets: Mutex<HashMap<String, u64>>,
}

impl SecretStore {
    /// Mints a secret valid for `ttl`; returns it and its expiry in Unix seconds.
    pub fn mint(&self, ttl: Duration) -> (String, u64) {
        let bytes: [u8; 24] = rand::random();
        let value = format!("ek_local_{}", hex(&bytes));
        let now = unix_now();
        let expires_at = now + ttl.as_secs();
        let mut secrets = self
            .secrets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        secrets.retain(|_, expiry| *expiry > now);
        if secrets.len() >= MAX_LIVE_SECRETS
            && let Some(oldest) = secrets
                .iter()
                .min_by_key(|(_, expiry)| **expiry)
                .map(|(k, _)| k.clone())
        {
            secrets.remove(&oldest);
        }
        secrets.insert(value.clone(), expires_at);
        (value, expires_at)
    }

    /// True if `token` was minted here and has not expired.
    pub fn accepts(&self, token: &str) -> bool {
        let secrets = self
            .secrets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        secrets
            .get(token)
            .is_some_and(|expiry| *expiry > unix_now())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The HTTP base (`https://host`) of a realtime WebSocket URL (`wss://host/v1/realtime?model=…`).
pub fn http_base(realtime_url: &str) -> Option<String> {
    let mut url = url::Url::parse(realtime_url).ok()?;
    let scheme = match url.scheme() {
        "wss" | "https" => "https",
        "ws" | "http" => "http",
        _ => return None,
    };
    url.set_scheme(scheme).ok()?;
    url.set_path("");
    url.set_query(None);
    Some(url.as_str().trim_end_matches('/').to_owned())
}

fn seed_shape(config: &Config, id: &str, secret: &str, expires_at: u64) -> Value {
    let voice = &config.voice;
    json!({
        "object": "realtime.session",
        "id": id,
        "model": voice.realtime_model,
        "client_secret": { "value": secret, "expires_at": expires_at },
        "instructions": voice.instructions,
        "voice": voice.voice,
        "modalities": ["audio", "text"],
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "turn_detection": match voice.turn_detection.as_str() {
            "none" => Value::Null,
            kind => json!({ "type": kind }),
        },
        "expires_at": expires_at,
    })
}

/// The `GET /api/session` handler.
///
/// # Errors
/// 502 when the upstream refuses or answers something unusable, 504 on its timeout.
pub async fn session(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let config = &state.config;
    match (&config.voice.realtime_url, &config.voice.openai_api_key) {
        (Some(url), Some(key)) => {
            let base = http_base(url)
                .ok_or_else(|| ApiError::bad_gateway("the realtime URL has no HTTP form"))?;
            let body = json!({
                "session": {
                    "type": "realtime",
                    "model": config.voice.realtime_model,
                    "instructions": config.voice.instructions,
                    "audio": { "output": { "voice": config.voice.voice } },
                }
            });
            let response = state
                .voice
                .http()
                .post(format!("{base}/v1/realtime/client_secrets"))
                .bearer_auth(key.expose())
                .json(&body)
                .send()
                .await
                .map_err(|error| {
                    if error.is_timeout() {
                        ApiError::upstream_timeout("the realtime provider did not answer in time")
                    } else {
                        ApiError::bad_gateway(format!(
                            "the realtime provider is unreachable: {error}"
                        ))
                    }
                })?;
            let status = response.status();
            if !status.is_success() {
                return Err(ApiError::bad_gateway(format!(
                    "the realtime provider answered HTTP {status}"
                )));
            }
            let upstream: Value = response.json().await.map_err(|error| {
                ApiError::bad_gateway(format!("unreadable provider answer: {error}"))
            })?;
            // GA: {"value", "expires_at", "session": {...}}; beta: {"client_secret": {...}, ...session}.
            let (secret, expires_at) = match (upstream.get("value"), upstream.get("client_secret"))
            {
                (Some(value), _) => (
                    value.as_str(),
                    upstream.get("expires_at").and_then(Value::as_u64),
                ),
                (None, Some(secret)) => (
                    secret.get("value").and_then(Value::as_str),
                    secret.get("expires_at").and_then(Value::as_u64),
                ),
                (None, None) => (None, None),
            };
            let secret = secret
                .ok_or_else(|| ApiError::bad_gateway("the provider answer has no client secret"))?;
            let session = upstream.get("session").unwrap_or(&upstream);
            let id = session
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut shape = seed_shape(config, id, secret, expires_at.unwrap_or_default());
            // Whatever else the provider says about the session is passed through, seed fields first.
            if let (Some(shape), Some(extra)) = (shape.as_object_mut(), session.as_object()) {
                for (key, value) in extra {
                    if key != "client_secret" && key != "object" {
                        shape.entry(key.clone()).or_insert_with(|| value.clone());
                    }
                }
            }
            Ok(Json(shape))
        }
        _ => {
            let (secret, expires_at) = state.voice.secrets().mint(LOCAL_SECRET_TTL);
            let id_bytes: [u8; 12] = rand::random();
            let id = format!("sess_{}", hex(&id_bytes));
            Ok(Json(seed_shape(config, &id, &secret, expires_at)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_the_http_base() {
        assert_eq!(
            http_base("wss://api.openai.com/v1/realtime?model=gpt-realtime").as_deref(),
            Some("https://api.openai.com")
        );
        assert_eq!(
            http_base("ws://127.0.0.1:9000/v1/realtime").as_deref(),
            Some("http://127.0.0.1:9000")
        );
        assert_eq!(http_base("ftp://x"), None);
    }

    #[test]
    fn minted_secrets_expire() {
        let store = SecretStore::default();
        let (live, _) = store.mint(Duration::from_secs(60));
        let (dead, _) = store.mint(Duration::ZERO);
        assert!(store.accepts(&live));
        assert!(!store.accepts(&dead));
        assert!(!store.accepts("ek_local_forged"));
    }
}
