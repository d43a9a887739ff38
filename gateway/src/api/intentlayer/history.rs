//! `GET /api/v1/sessions/history/{session_id}` (additive): a session's interactions, newest page first, each
//! page oldest first, with every message as the chat POST described it.
//!
//! # Page cache
//! A history read of an unchanged session is served from [`HistoryPages`]: the page's rendered body, kept
//! with the version of the session it was read under (interaction count and last activity). An IntentLayer
//! conversation changes only through a chat turn ([`crate::chat::Store::record_turn`]), which bumps both in the
//! commit that stores its messages, so a page is valid while its session's version is unchanged. The version
//! comes from [`crate::chat::Store::get_session`], read before the page and kept coherent with every writer,
//! including other processes: a cached page is never staler than that session read. The messages are read
//! after it, so a page may be newer than the version it is filed under, never older.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::{HeaderValue, StatusCode, header};
use prometheus::{IntCounter, IntCounterVec};
use quick_cache::Weighter;
use quick_cache::sync::Cache;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    IntentLayerError, RateKey, check_rate, confidence_value, known_id, live_session, wire_id,
};
use crate::api::timestamp;
use crate::chat::{Message, MessageQuery, Order, Session, StoreError};
use crate::metrics::labels;
use crate::state::AppState;

/// Messages per history page unless `limit` says otherwise, and the most it may say.
const HISTORY_PAGE: u32 = 50;
const MAX_HISTORY_PAGE: u32 = 200;

#[derive(Debug, Deserialize)]
pub(super) struct HistoryParams {
    limit: Option<String>,
    before: Option<String>,
}

#[derive(Debug, Serialize)]
struct History {
    success: bool,
    message: &'static str,
    session_id: String,
    /// Oldest first.
    messages: Vec<HistoryMessage>,
    /// Whether older messages remain; pass `next_before` as `before` for the previous page.
    has_more: bool,
    next_before: Option<String>,
}

/// A stored message as the chat POST described it: the user's question with its `input_type` and `context`,
/// or the answer with its audio, components and analysis.
#[derive(Debug, Serialize)]
struct HistoryMessage {
    message_id: String,
    role: &'static str,
    content: String,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_type: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_audio: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ui_components: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nlp_analysis: Option<Map<String, Value>>,
}

impl From<Message> for HistoryMessage {
    fn from(message: Message) -> Self {
        let mut history = HistoryMessage {
            message_id: message.id,
            role: message.role.as_str(),
            content: message.content,
            timestamp: timestamp(message.created_at),
            input_type: None,
            context: None,
            response_audio: None,
            ui_components: None,
            nlp_analysis: None,
        };
        let Value::Object(mut metadata) = message.metadata else {
            return history;
        };
        let mut analysis: Map<String, Value> = ["intent", "entities", "confidence", "language"]
            .into_iter()
            .filter_map(|key| metadata.remove(key).map(|value| (key.to_owned(), value)))
            .collect();
        // Answers stored before `confidence_value` carry the f32 widened to f64 (0.949999988…).
        if let Some(confidence) = analysis.get_mut("confidence")
            && let Some(widened) = confidence.as_f64()
        {
            *confidence = confidence_value(widened as f32);
        }
        history.input_type = metadata.remove("input_type");
        history.context = metadata.remove("context");
        history.response_audio = metadata.remove("response_audio");
        history.ui_components = metadata.remove("ui_components");
        history.nlp_analysis = (!analysis.is_empty()).then_some(analysis);
        history
    }
}

/// The page size asked for: 1 to [`MAX_HISTORY_PAGE`], [`HISTORY_PAGE`] when absent.
fn history_limit(limit: Option<&str>) -> Result<u32, IntentLayerError> {
    let Some(limit) = limit else {
        return Ok(HISTORY_PAGE);
    };
    match limit.parse::<u32>() {
        Ok(n) if (1..=MAX_HISTORY_PAGE).contains(&n) => Ok(n),
        _ => Err(IntentLayerError::invalid(
            "limit",
            format!("Le paramètre 'limit' doit être un entier de 1 à {MAX_HISTORY_PAGE}"),
        )),
    }
}

/// What a page costs beyond its key and body (entry, version, bookkeeping), for the byte bound.
const ENTRY_OVERHEAD: usize = 96;

/// Rendered history pages by session, page size and cursor (see the module documentation).
pub(super) struct HistoryPages {
    pages: Cache<PageKey, Page, PageWeight>,
    hits: IntCounter,
    misses: IntCounter,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PageKey {
    session_id: String,
    limit: u32,
    before: Option<String>,
}

#[derive(Debug, Clone)]
struct Page {
    version: Version,
    body: Bytes,
}

/// What a chat turn changes in its session, in the commit that stores the turn's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    interaction_count: i64,
    last_activity: DateTime<Utc>,
}

impl Version {
    fn of(session: &Session) -> Self {
        Version {
            interaction_count: session.interaction_count,
            last_activity: session.last_activity,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct PageWeight;

impl Weighter<PageKey, Page> for PageWeight {
    fn weight(&self, key: &PageKey, page: &Page) -> u64 {
        let key_bytes = key.session_id.len() + key.before.as_ref().map_or(0, String::len);
        (key_bytes + page.body.len() + ENTRY_OVERHEAD) as u64
    }
}

impl HistoryPages {
    /// Pages of at most `bytes` in all (64 MiB hold about 7,000 pages of 20 messages; none when 0), each
    /// lookup counted in `lookups` by result.
    pub(super) fn new(bytes: u64, lookups: &IntCounterVec) -> Self {
        let estimated_pages = usize::try_from(bytes / 8192).unwrap_or(1).max(1);
        HistoryPages {
            pages: Cache::with_weighter(estimated_pages, bytes, PageWeight),
            hits: lookups.with_label_values(&[labels::LOOKUP_HIT]),
            misses: lookups.with_label_values(&[labels::LOOKUP_MISS]),
        }
    }

    /// The page's body, if it was rendered under `version`.
    fn get(&self, key: &PageKey, version: Version) -> Option<Bytes> {
        let body = self
            .pages
            .get(key)
            .filter(|page| page.version == version)
            .map(|page| page.body);
        match body {
            Some(_) => self.hits.inc(),
            None => self.misses.inc(),
        }
        body
    }

    fn insert(&self, key: PageKey, version: Version, body: Bytes) {
        self.pages.insert(key, Page { version, body });
    }
}

impl std::fmt::Debug for HistoryPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryPages")
            .field("pages", &self.pages.len())
            .field("bytes", &self.pages.weight())
            .finish()
    }
}

pub(super) async fn history(
    State(state): State<AppState>,
    path: super::PathParam,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Response, IntentLayerError> {
    let session_id = super::path_param(path, "session_id")?;
    let Query(params) = params.map_err(|rejection| {
        IntentLayerError::invalid(
            "query",
            format!("Paramètres invalides: {}", rejection.body_text()),
        )
    })?;
    let limit = history_limit(params.limit.as_deref())?;
    let id = known_id(&session_id)?;
    check_rate(&state, RateKey::Session(id))?;
    let session = live_session(&state, id).await?;
    let Some(conversation) = session.conversation_id.as_deref() else {
        return Err(IntentLayerError::session_not_found());
    };
    let pages = &state.api.intentlayer.history_pages;
    let key = PageKey {
        session_id: session.id.clone(),
        limit,
        before: params.before,
    };
    let version = Version::of(&session);
    if let Some(body) = pages.get(&key, version) {
        return Ok(json(body));
    }
    let query = MessageQuery {
        before: key.before.clone(),
        limit,
        order: Order::Desc,
        ..MessageQuery::default()
    };
    let page = state
        .chat
        .store()
        .list_messages(conversation, &query)
        .await
        .map_err(|e| match e {
            StoreError::InvalidCursor { .. } => IntentLayerError::invalid(
                "before",
                "Le paramètre 'before' ne désigne aucun message de cette session",
            ),
            e => IntentLayerError::store(&e),
        })?;
    let mut messages: Vec<HistoryMessage> =
        page.items.into_iter().map(HistoryMessage::from).collect();
    messages.reverse();
    let history = History {
        success: true,
        message: "Historique de la session",
        session_id: wire_id(&session.id),
        messages,
        has_more: page.has_more,
        next_before: page.next_cursor,
    };
    let body = Bytes::from(serde_json::to_vec(&history).map_err(|error| {
        tracing::error!(%error, "history page cannot be rendered");
        IntentLayerError::new(StatusCode::INTERNAL_SERVER_ERROR, "Historique indisponible")
    })?);
    pages.insert(key, version, body.clone());
    Ok(json(body))
}

fn json(body: Bytes) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(session: &str) -> PageKey {
        PageKey {
            session_id: session.to_owned(),
            limit: 20,
            before: None,
        }
    }

    fn counted_pages(bytes: u64) -> HistoryPages {
        let lookups =
            IntCounterVec::new(prometheus::Opts::new("lookups", "lookups"), &["result"]).unwrap();
        HistoryPages::new(bytes, &lookups)
    }

    fn version(interaction_count: i64) -> Version {
        Version {
            interaction_count,
            last_activity: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_page_serves_only_its_version() {
        let pages = counted_pages(1 << 20);
        pages.insert(key("a"), version(3), Bytes::from_static(b"three"));
        assert_eq!(
            pages.get(&key("a"), version(3)).as_deref(),
            Some(&b"three"[..])
        );
        assert_eq!(pages.get(&key("a"), version(4)), None);
        let touched = Version {
            last_activity: DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(1),
            ..version(3)
        };
        assert_eq!(pages.get(&key("a"), touched), None);
        assert_eq!(pages.get(&key("b"), version(3)), None);
        let older = PageKey {
            before: Some("m1".into()),
            ..key("a")
        };
        assert_eq!(pages.get(&older, version(3)), None);
        assert_eq!((pages.hits.get(), pages.misses.get()), (1, 4));
    }

    #[test]
    fn bounded_by_bytes() {
        let capacity = 256 * 1024;
        let pages = counted_pages(capacity);
        for i in 0..200 {
            pages.insert(
                key(&format!("s{i}")),
                version(1),
                Bytes::from(vec![b'x'; 9000]),
            );
        }
        assert!(pages.pages.weight() <= capacity, "{pages:?}");
        assert!(pages.pages.len() >= 10, "{pages:?}");

        let none = counted_pages(0);
        none.insert(key("a"), version(1), Bytes::from_static(b"page"));
        assert_eq!(none.get(&key("a"), version(1)), None);
    }
}
