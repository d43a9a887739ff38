//! Text models: the [`TextModel`] trait and its two implementations.
//!
//! - [`openai_compat::OpenAiCompatModel`]: `POST …/v1/chat/completions` with `stream: true` against OpenAI,
//!   Ollama, vLLM or llama.cpp's server, parsing the SSE stream.
//! - [`local::LocalModel`]: the built-in deterministic engine (`voxgate-local`), grounded in the conversation
//!   history and in the retrieved document chunks the caller passes in [`ChatRequest::context`].
//!
//! Retrieval is not a model concern: [`crate::chat::ChatService`] searches the documents ([`retrieval`]) and hands
//! the best chunks to whichever model runs, so both answer from the same evidence.

pub mod local;
pub mod openai_compat;
pub mod retrieval;
pub(crate) mod sse;

use std::fmt;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

use super::domain::Role;

/// One message of the prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptMessage {
    pub role: Role,
    pub content: String,
}

impl PromptMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        PromptMessage {
            role,
            content: content.into(),
        }
    }
}

/// A retrieved piece of a document given to the model as evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextChunk {
    pub document_id: String,
    pub title: String,
    pub text: String,
    /// Retrieval score (BM25); higher is better.
    pub score: f64,
}

/// What to generate from.
#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    /// Instructions placed first (the chatbot's system prompt).
    pub system: Option<String>,
    /// The history, oldest first, ending with the user turn to answer.
    pub messages: Vec<PromptMessage>,
    /// Retrieved evidence, best first.
    pub context: Vec<ContextChunk>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    /// Ask for a JSON object answer (`response_format: {"type": "json_object"}` on OpenAI-compatible servers).
    pub json: bool,
}

impl ChatRequest {
    /// The last user message, which the answer is for.
    pub fn last_user_message(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
    }
}

/// Token usage of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// True when the model did not report usage and these are the gateway's own estimate.
    pub estimated: bool,
}

/// One item of a generation stream: text deltas, then exactly one `Done` at the end of a successful stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent {
    Delta(String),
    Done(Usage),
}

/// Which implementation a model is; also the `model_kind` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Local,
    OpenAiCompat,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Local => crate::metrics::labels::MODEL_LOCAL,
            ModelKind::OpenAiCompat => crate::metrics::labels::MODEL_OPENAI_COMPAT,
        }
    }
}

/// Why a generation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The model server could not be reached (after retries).
    #[error("cannot reach the model server at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The model server answered with an error status.
    #[error("model server returned HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// The stream was cut or carried an error after it had started.
    #[error("model stream failed: {0}")]
    Stream(String),
    /// The model server sent something that is not the documented format.
    #[error("unexpected answer from the model server: {0}")]
    Protocol(String),
    /// The generation took longer than allowed.
    #[error("model timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The request cannot be answered (for example no user message).
    #[error("invalid model request: {0}")]
    InvalidRequest(String),
}

impl ModelError {
    /// Whether the error is the upstream's fault (a 502/503 at the HTTP edge) rather than the request's.
    pub fn is_upstream(&self) -> bool {
        !matches!(self, ModelError::InvalidRequest(_))
    }
}

/// A text model that streams its answer.
pub trait TextModel: Send + Sync + fmt::Debug {
    /// The model name reported to clients (`voxgate-local`, or the configured remote model).
    fn name(&self) -> &str;

    fn kind(&self) -> ModelKind;

    /// Starts a generation. The stream yields [`ModelEvent::Delta`]s and ends with one [`ModelEvent::Done`]
    /// carrying the usage, or with an `Err` after which nothing follows.
    fn stream(&self, request: ChatRequest) -> BoxStream<'static, Result<ModelEvent, ModelError>>;

    /// A cheap reachability probe for `/health`: the model names the server offers (empty when it does not say).
    fn check(&self) -> BoxFuture<'static, Result<Vec<String>, ModelError>>;
}

/// Estimates prompt tokens of a request the way usage is estimated when a server does not report it.
pub fn estimate_prompt_tokens(request: &ChatRequest) -> u32 {
    let system = request.system.as_deref().map_or(0, retrieval::count_tokens);
    let messages: u32 = request
        .messages
        .iter()
        .map(|m| retrieval::count_tokens(&m.content) + 4)
        .sum();
    let context: u32 = request
        .context
        .iter()
        .map(|c| retrieval::count_tokens(&c.text))
        .sum();
    system + messages + context
}
