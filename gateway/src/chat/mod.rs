//! The chat domain: conversations, messages, sessions, documents, ratings, attachments, and streaming replies.
//!
//! Every text surface (`api/*`) is a thin adapter over [`ChatService`]: it maps its JSON onto the [`domain`]
//! types, and every surface streams and persists a reply the same way, through [`ChatService::reply_stream`].
//!
//! # Layout
//! - [`domain`]: the types every text surface maps its JSON onto.
//! - [`store`]: [`Store`], SQLite or PostgreSQL behind one set of methods.
//! - [`model`]: the [`model::TextModel`] trait, the OpenAI-compatible client, the built-in local engine, and the
//!   lexical retrieval (BM25) both are grounded with.
//!
//! # Invariants
//! - A user message is committed before `reply_stream` returns (so before a surface acknowledges it), and the
//!   assistant message is committed before [`ReplyEvent::Complete`] is yielded.
//! - Storage is reached only through [`Store`].

pub mod domain;
pub mod model;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use futures_util::stream::{BoxStream, StreamExt};
use serde_json::{Value, json};

pub use domain::*;
use model::local::LocalModel;
use model::openai_compat::{OpenAiCompatModel, OpenAiCompatOptions};
use model::retrieval::Bm25Index;
use model::{ChatRequest, ContextChunk, ModelError, ModelEvent, PromptMessage, TextModel, Usage};
pub use store::{Store, StoreError};

use crate::config::Config;
use crate::metrics::{Metrics, labels};
use crate::state::{ComponentHealth, HealthImpact, HealthRegistry};

/// Retrieval indexes kept in memory; beyond this the cache is emptied and rebuilt on demand.
const MAX_CACHED_INDEXES: usize = 256;
/// Chunks handed to the model per reply.
const CONTEXT_CHUNKS: usize = 3;

/// Errors of chat operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// What to answer, and how.
#[derive(Debug, Clone)]
pub struct ReplyRequest {
    pub conversation_id: String,
    /// The user's message, stored before generation starts.
    pub user_message: NewMessage,
    /// Instructions for the model (the chatbot's system prompt).
    pub system_prompt: Option<String>,
    /// Documents to ground the answer in; `None` for no retrieval.
    pub documents: Option<DocumentFilter>,
    /// How many earlier messages of the conversation the model sees.
    pub history_limit: u32,
    /// Ask the model for a JSON object.
    pub json: bool,
    /// Stored with the assistant message (merged with `model` and `sources`, which the service adds).
    pub assistant_metadata: Value,
}

impl ReplyRequest {
    /// A reply to `text` in `conversation_id` with 20 messages of history and no retrieval.
    pub fn new(conversation_id: impl Into<String>, text: impl Into<String>) -> Self {
        ReplyRequest {
            conversation_id: conversation_id.into(),
            user_message: NewMessage::new(Role::User, text),
            system_prompt: None,
            documents: None,
            history_limit: 20,
            json: false,
            assistant_metadata: json!({}),
        }
    }
}

/// One item of a reply stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyEvent {
    /// A piece of the answer, in order.
    Delta(String),
    /// The answer is complete and its message committed.
    Complete { message: Message, usage: Usage },
}

/// A reply in progress: the committed user message and the stream of the answer.
pub struct Reply {
    pub user_message: Message,
    /// Deltas, then one `Complete`; or an `Err` after which nothing follows (no assistant message is stored).
    /// Dropping it cancels the generation.
    pub events: BoxStream<'static, Result<ReplyEvent, ChatError>>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("user_message", &self.user_message)
            .finish_non_exhaustive()
    }
}

/// A finished reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyOutcome {
    pub user_message: Message,
    pub assistant_message: Message,
    pub usage: Usage,
}

/// A built retrieval index and the chunks it refers to.
struct CachedIndex {
    fingerprint: (i64, i64, i64),
    chunks: Vec<DocumentChunk>,
    index: Bm25Index,
}

/// The chat subsystem: the store, the text model, and the operations every text surface shares.
pub struct ChatService {
    store: Store,
    model: Arc<dyn TextModel>,
    metrics: Arc<Metrics>,
    indexes: Mutex<HashMap<DocumentFilter, Arc<CachedIndex>>>,
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService")
            .field("store", &self.store.backend_name())
            .field("model", &self.model.name())
            .finish_non_exhaustive()
    }
}

impl ChatService {
    /// Opens the configured store (SQLite in the data directory unless `chat.database_url` is set) and the
    /// configured model (the local engine unless `chat.llm_url` is set).
    pub async fn connect(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let url = config.database_url();
        let store = Store::connect(url.as_str()).await.with_context(|| {
            format!(
                "failed to open the chat store ({})",
                backend_of(url.as_str())
            )
        })?;
        let model: Arc<dyn TextModel> = match &config.chat.llm_url {
            Some(base) => {
                let mut options = OpenAiCompatOptions::new(
                    base.clone(),
                    config.chat.llm_model.clone(),
                    config
                        .chat
                        .llm_api_key
                        .as_ref()
                        .map(|k| k.expose().to_owned()),
                );
                options.timeout = config.chat.llm_timeout;
                Arc::new(OpenAiCompatModel::new(options).context("invalid chat.llm_url")?)
            }
            None => Arc::new(LocalModel::new()),
        };
        tracing::info!(
            store = store.backend_name(),
            model = model.name(),
            "chat service ready"
        );
        Ok(ChatService::new(store, model, metrics))
    }

    /// A service over an opened store and model.
    pub fn new(store: Store, model: Arc<dyn TextModel>, metrics: Arc<Metrics>) -> Self {
        let store = store.with_error_counter(metrics.store_errors_total.clone());
        ChatService {
            store,
            model,
            metrics,
            indexes: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn model(&self) -> &Arc<dyn TextModel> {
        &self.model
    }

    /// Registers the `database` (critical) and `ollama` (optional; seed 003's name for the text model section)
    /// health checks.
    pub fn register_health(self: &Arc<Self>, registry: &HealthRegistry) {
        let service = Arc::clone(self);
        registry.register("database", HealthImpact::Critical, move || {
            let service = Arc::clone(&service);
            async move {
                let started = Instant::now();
                let result = service.store.ping().await;
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                let health = match result {
                    Ok(()) => match service.store.count_active_sessions().await {
                        Ok(sessions) => ComponentHealth::up().with("sessions", sessions),
                        Err(_) => ComponentHealth::up(),
                    },
                    Err(e) => ComponentHealth::down(format!(
                        "{} unavailable: {e}",
                        service.store.backend_name()
                    )),
                };
                health
                    .with("backend", service.store.backend_name())
                    .with("latency_ms", round2(latency_ms))
            }
        });
        let service = Arc::clone(self);
        registry.register("ollama", HealthImpact::Optional, move || {
            let service = Arc::clone(&service);
            async move {
                let started = Instant::now();
                let result = service.model.check().await;
                let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
                let name = service.model.name();
                let health = match result {
                    // Seed 003's shape: `available` says whether the configured model is among those served.
                    Ok(models) => ComponentHealth::up()
                        .with(
                            "available",
                            models.is_empty() || models.iter().any(|m| m == name),
                        )
                        .with("models", models),
                    Err(e) => ComponentHealth::down(e.to_string()).with("available", false),
                };
                health
                    .with("model", service.model.name())
                    .with("kind", service.model.kind().as_str())
                    .with("latency_ms", round2(latency_ms))
            }
        });
    }

    /// The best `limit` chunks for `query` among the documents `filter` allows, best first.
    ///
    /// The BM25 index of a filter is cached and rebuilt when the documents' fingerprint changes, so a store
    /// shared by several instances stays consistent.
    pub async fn retrieve(
        &self,
        filter: &DocumentFilter,
        query: &str,
        limit: usize,
    ) -> Result<Vec<ContextChunk>, ChatError> {
        let fingerprint = self.store.documents_fingerprint(filter).await?;
        if fingerprint.0 == 0 {
            return Ok(Vec::new());
        }
        let cached = self
            .indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(filter)
            .cloned();
        let index = match cached {
            Some(index) if index.fingerprint == fingerprint => index,
            _ => {
                let chunks = self.store.document_chunks(filter).await?;
                let texts: Vec<&str> = chunks.iter().map(|c| c.text.as_str()).collect();
                let index = Bm25Index::build(&texts);
                let built = Arc::new(CachedIndex {
                    fingerprint,
                    chunks,
                    index,
                });
                let mut indexes = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
                if indexes.len() >= MAX_CACHED_INDEXES {
                    indexes.clear();
                }
                indexes.insert(filter.clone(), Arc::clone(&built));
                built
            }
        };
        Ok(index
            .index
            .search(query, limit)
            .into_iter()
            .map(|hit| {
                let chunk = &index.chunks[hit.index];
                ContextChunk {
                    document_id: chunk.document_id.clone(),
                    title: chunk.document_title.clone(),
                    text: chunk.text.clone(),
                    score: hit.score,
                }
            })
            .collect())
    }

    /// Stores the user message (committed when this returns), then starts the model on the conversation's
    /// history and the retrieved documents. See [`Reply`].
    pub async fn reply_stream(&self, request: ReplyRequest) -> Result<Reply, ChatError> {
        if request.user_message.content.trim().is_empty() {
            return Err(ChatError::Invalid {
                field: "message",
                reason: "must not be empty".to_owned(),
            });
        }
        let user_message = match self
            .store
            .append_message(&request.conversation_id, &request.user_message)
            .await
        {
            Ok(message) => message,
            Err(StoreError::NotFound { what }) => return Err(ChatError::NotFound { what }),
            Err(e) => return Err(e.into()),
        };
        let history = self
            .store
            .recent_messages(
                &request.conversation_id,
                request.history_limit.saturating_add(1),
            )
            .await?;
        let context = match &request.documents {
            Some(filter) => {
                self.retrieve(filter, &user_message.content, CONTEXT_CHUNKS)
                    .await?
            }
            None => Vec::new(),
        };
        let mut metadata = match request.assistant_metadata {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        metadata.insert("model".to_owned(), json!(self.model.name()));
        if !context.is_empty() {
            let sources: Vec<Value> = context
                .iter()
                .map(|c| json!({ "document_id": c.document_id, "title": c.title, "score": round2(c.score) }))
                .collect();
            metadata.insert("sources".to_owned(), Value::Array(sources));
        }
        let chat_request = ChatRequest {
            system: request.system_prompt,
            messages: history
                .iter()
                .filter(|m| m.role != Role::Tool)
                .map(|m| PromptMessage::new(m.role, m.content.clone()))
                .collect(),
            context,
            json: request.json,
            ..Default::default()
        };
        let run = ReplyRun {
            model_events: self.model.stream(chat_request),
            store: self.store.clone(),
            metrics: Arc::clone(&self.metrics),
            model_kind: self.model.kind().as_str(),
            conversation_id: request.conversation_id,
            metadata: Value::Object(metadata),
            text: String::new(),
            started: Instant::now(),
            first_token: false,
            finished: false,
        };
        let events = futures_util::stream::unfold(run, |mut run| async move {
            let item = run.next().await?;
            Some((item, run))
        })
        .boxed();
        Ok(Reply {
            user_message,
            events,
        })
    }

    /// [`ChatService::reply_stream`] collected: returns once the assistant message is committed.
    pub async fn reply(&self, request: ReplyRequest) -> Result<ReplyOutcome, ChatError> {
        let Reply {
            user_message,
            mut events,
        } = self.reply_stream(request).await?;
        while let Some(event) = events.next().await {
            if let ReplyEvent::Complete { message, usage } = event? {
                return Ok(ReplyOutcome {
                    user_message,
                    assistant_message: message,
                    usage,
                });
            }
        }
        Err(ModelError::Stream("the answer ended without completing".to_owned()).into())
    }

    /// [`ChatService::complete`] of one system prompt and one user message, asking for a JSON object answer
    /// when `json` is set; returns the text.
    pub async fn complete_text(
        &self,
        system: &str,
        user: &str,
        json: bool,
    ) -> Result<String, ChatError> {
        let request = ChatRequest {
            system: Some(system.to_owned()),
            messages: vec![PromptMessage::new(Role::User, user)],
            json,
            ..Default::default()
        };
        Ok(self.complete(request).await?.0)
    }

    /// A one-shot generation that stores nothing (classification prompts, JSON extraction).
    pub async fn complete(&self, request: ChatRequest) -> Result<(String, Usage), ChatError> {
        let started = Instant::now();
        let kind = self.model.kind().as_str();
        let mut events = self.model.stream(request);
        let mut text = String::new();
        let mut first = true;
        while let Some(event) = events.next().await {
            match event? {
                ModelEvent::Delta(delta) => {
                    if first {
                        first = false;
                        observe_latency(&self.metrics, kind, labels::PHASE_FIRST_TOKEN, started);
                    }
                    text.push_str(&delta);
                }
                ModelEvent::Done(usage) => {
                    observe_latency(&self.metrics, kind, labels::PHASE_TOTAL, started);
                    count_tokens(&self.metrics, usage);
                    return Ok((text, usage));
                }
            }
        }
        Err(ModelError::Stream("the answer ended without completing".to_owned()).into())
    }
}

/// The state of one streaming reply.
struct ReplyRun {
    model_events: BoxStream<'static, Result<ModelEvent, ModelError>>,
    store: Store,
    metrics: Arc<Metrics>,
    model_kind: &'static str,
    conversation_id: String,
    metadata: Value,
    text: String,
    started: Instant,
    first_token: bool,
    finished: bool,
}

impl ReplyRun {
    async fn next(&mut self) -> Option<Result<ReplyEvent, ChatError>> {
        if self.finished {
            return None;
        }
        let event = self.model_events.next().await;
        match event {
            Some(Ok(ModelEvent::Delta(delta))) => {
                if !self.first_token {
                    self.first_token = true;
                    observe_latency(
                        &self.metrics,
                        self.model_kind,
                        labels::PHASE_FIRST_TOKEN,
                        self.started,
                    );
                }
                self.text.push_str(&delta);
                Some(Ok(ReplyEvent::Delta(delta)))
            }
            Some(Ok(ModelEvent::Done(usage))) => {
                self.finished = true;
                observe_latency(
                    &self.metrics,
                    self.model_kind,
                    labels::PHASE_TOTAL,
                    self.started,
                );
                count_tokens(&self.metrics, usage);
                if usage.estimated
                    && let Value::Object(map) = &mut self.metadata
                {
                    map.insert("usage_estimated".to_owned(), Value::Bool(true));
                }
                let new = NewMessage {
                    role: Role::Assistant,
                    content: std::mem::take(&mut self.text),
                    metadata: std::mem::take(&mut self.metadata),
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens: usage.completion_tokens,
                };
                Some(
                    match self.store.append_message(&self.conversation_id, &new).await {
                        Ok(message) => Ok(ReplyEvent::Complete { message, usage }),
                        Err(StoreError::NotFound { what }) => Err(ChatError::NotFound { what }),
                        Err(e) => Err(e.into()),
                    },
                )
            }
            Some(Err(e)) => {
                self.finished = true;
                tracing::warn!(error = %e, conversation_id = %self.conversation_id, "model failed during a reply");
                Some(Err(e.into()))
            }
            None => {
                self.finished = true;
                Some(Err(ModelError::Stream(
                    "the model stream ended without completing".to_owned(),
                )
                .into()))
            }
        }
    }
}

fn observe_latency(metrics: &Metrics, kind: &str, phase: &str, started: Instant) {
    metrics
        .model_latency_seconds
        .with_label_values(&[kind, phase])
        .observe(started.elapsed().as_secs_f64());
}

fn count_tokens(metrics: &Metrics, usage: Usage) {
    metrics
        .chat_tokens_total
        .with_label_values(&[labels::TOKENS_PROMPT])
        .inc_by(u64::from(usage.prompt_tokens));
    metrics
        .chat_tokens_total
        .with_label_values(&[labels::TOKENS_COMPLETION])
        .inc_by(u64::from(usage.completion_tokens));
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The scheme of a database URL, for messages that must not show credentials.
fn backend_of(url: &str) -> &str {
    url.split(':').next().unwrap_or("unknown")
}
