//! A client of OpenAI-compatible chat completions servers: OpenAI, Ollama, vLLM, llama.cpp's server.
//!
//! It posts `{base}/v1/chat/completions` with `stream: true` and `stream_options.include_usage`, and parses the
//! server-sent events ([`super::sse`]) into [`ModelEvent`]s.
//!
//! Retries: a request that fails to connect, or is answered with a 5xx or 429 status, is retried up to
//! `max_retries` times with exponential backoff. Once the server has answered 200 and the stream has begun, a
//! failure is never retried (the client may already have shown tokens): it ends the stream with an error.
//!
//! Usage: taken from the final usage chunk; a server that sends none gets an estimate (whitespace and punctuation
//! tokens), flagged with [`Usage::estimated`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::sse::{SseEvent, SseParser};
use super::{
    ChatRequest, ModelError, ModelEvent, ModelKind, TextModel, Usage, estimate_prompt_tokens,
    retrieval,
};

/// Largest error body kept for an error message.
const MAX_ERROR_BODY: usize = 2048;

/// How to reach the server.
#[derive(Clone)]
pub struct OpenAiCompatOptions {
    /// Base URL: `https://api.openai.com`, `http://localhost:11434` or either with `/v1`; a full
    /// `…/chat/completions` URL is used as is.
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set. Never logged.
    pub api_key: Option<String>,
    /// Whole-answer time limit.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Retries after the first attempt (so `3` means up to four requests).
    pub max_retries: u32,
    /// Wait before the first retry; doubles each time.
    pub initial_backoff: Duration,
}

impl fmt::Debug for OpenAiCompatOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiCompatOptions")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .finish()
    }
}

impl OpenAiCompatOptions {
    /// Defaults: 60 s answer limit, 5 s connect timeout, 3 retries from 250 ms.
    pub fn new(
        base_url: impl Into<String>,
        model: impl Into<String>,
        api_key: Option<String>,
    ) -> Self {
        OpenAiCompatOptions {
            base_url: base_url.into(),
            model: model.into(),
            api_key,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            max_retries: 3,
            initial_backoff: Duration::from_millis(250),
        }
    }
}

/// The chat completions URL and the models URL (for health checks) of a base URL.
pub fn endpoints(base_url: &str) -> (String, String) {
    let base = base_url.trim_end_matches('/');
    if let Some(root) = base.strip_suffix("/chat/completions") {
        return (base.to_owned(), format!("{root}/models"));
    }
    let v1 = if base.ends_with("/v1") {
        base.to_owned()
    } else {
        format!("{base}/v1")
    };
    (format!("{v1}/chat/completions"), format!("{v1}/models"))
}

struct Inner {
    client: reqwest::Client,
    completions_url: String,
    models_url: String,
    options: OpenAiCompatOptions,
}

/// The OpenAI-compatible text model. Cloning shares the HTTP client.
#[derive(Clone)]
pub struct OpenAiCompatModel {
    inner: Arc<Inner>,
}

impl fmt::Debug for OpenAiCompatModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiCompatModel")
            .field("url", &self.inner.completions_url)
            .field("options", &self.inner.options)
            .finish()
    }
}

impl OpenAiCompatModel {
    pub fn new(options: OpenAiCompatOptions) -> Result<Self, ModelError> {
        let url = url::Url::parse(&options.base_url).map_err(|e| {
            ModelError::InvalidRequest(format!(
                "invalid model server URL {:?}: {e}",
                options.base_url
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ModelError::InvalidRequest(format!(
                "model server URL must be http or https, got {}",
                url.scheme()
            )));
        }
        // reqwest is built without a default rustls provider (the workspace uses ring); install it if the binary
        // has not already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .build()
            .map_err(|e| {
                ModelError::InvalidRequest(format!("cannot build the HTTP client: {e}"))
            })?;
        let (completions_url, models_url) = endpoints(&options.base_url);
        Ok(OpenAiCompatModel {
            inner: Arc::new(Inner {
                client,
                completions_url,
                models_url,
                options,
            }),
        })
    }

    /// The URL completions are posted to.
    pub fn completions_url(&self) -> &str {
        &self.inner.completions_url
    }
}

/// The request body for `request`.
pub fn request_body(model: &str, request: &ChatRequest) -> Value {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    let mut system = request.system.clone().unwrap_or_default();
    if !request.context.is_empty() {
        if !system.is_empty() {
            system.push_str("\n\n");
        }
        system.push_str("Use these excerpts from the user's documents when they are relevant, and cite their titles:\n");
        for (i, chunk) in request.context.iter().enumerate() {
            system.push_str(&format!("[{}] {}: {}\n", i + 1, chunk.title, chunk.text));
        }
    }
    if !system.is_empty() {
        messages.push(json!({ "role": "system", "content": system }));
    }
    for m in &request.messages {
        messages.push(json!({ "role": m.role.as_str(), "content": m.content }));
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": { "include_usage": true },
    });
    if let Some(max) = request.max_tokens {
        body["max_tokens"] = json!(max);
    }
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    if request.json {
        body["response_format"] = json!({ "type": "json_object" });
    }
    body
}

impl TextModel for OpenAiCompatModel {
    fn name(&self) -> &str {
        &self.inner.options.model
    }

    fn kind(&self) -> ModelKind {
        ModelKind::OpenAiCompat
    }

    fn stream(&self, request: ChatRequest) -> BoxStream<'static, Result<ModelEvent, ModelError>> {
        let run = Run {
            body: request_body(&self.inner.options.model, &request),
            prompt_estimate: estimate_prompt_tokens(&request),
            deadline: Instant::now() + self.inner.options.timeout,
            inner: Arc::clone(&self.inner),
            phase: Phase::NotStarted,
            parser: SseParser::new(),
            pending: VecDeque::new(),
            text: String::new(),
            usage: None,
            finish_seen: false,
        };
        futures_util::stream::unfold(run, |mut run| async move {
            run.next().await.map(|item| (item, run))
        })
        .boxed()
    }

    fn check(&self) -> BoxFuture<'static, Result<Vec<String>, ModelError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let mut request = inner
                .client
                .get(&inner.models_url)
                .timeout(Duration::from_secs(3));
            if let Some(key) = &inner.options.api_key {
                request = request.bearer_auth(key);
            }
            let response = request
                .send()
                .await
                .map_err(|e| connect_error(&inner.models_url, &e))?;
            let status = response.status();
            if status.is_success() {
                // `{"object": "list", "data": [{"id": "…"}, …]}`; a body of another shape still means "up".
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let models = body
                    .get("data")
                    .and_then(Value::as_array)
                    .map(|list| {
                        list.iter()
                            .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(models)
            } else {
                Err(ModelError::Status {
                    status: status.as_u16(),
                    body: error_body(response).await,
                })
            }
        })
    }
}

enum Phase {
    NotStarted,
    Streaming(BoxStream<'static, reqwest::Result<Bytes>>),
    Ended,
}

/// One generation in progress.
struct Run {
    inner: Arc<Inner>,
    body: Value,
    prompt_estimate: u32,
    deadline: Instant,
    phase: Phase,
    parser: SseParser,
    pending: VecDeque<ModelEvent>,
    /// The answer so far, for the usage estimate.
    text: String,
    usage: Option<Usage>,
    /// A chunk carried a `finish_reason`: the answer is complete even if `[DONE]` never comes.
    finish_seen: bool,
}

enum Progress {
    More,
    Done,
}

impl Run {
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            match &mut self.phase {
                Phase::Ended => return None,
                Phase::NotStarted => match self.start().await {
                    Ok(Started::Stream(body)) => self.phase = Phase::Streaming(body),
                    Ok(Started::Whole(value)) => {
                        self.phase = Phase::Ended;
                        if let Err(e) = self.whole_answer(&value) {
                            return Some(Err(e));
                        }
                    }
                    Err(e) => {
                        self.phase = Phase::Ended;
                        return Some(Err(e));
                    }
                },
                Phase::Streaming(body) => {
                    let next = tokio::time::timeout_at(self.deadline, body.next()).await;
                    let mut events = Vec::new();
                    let eof = match next {
                        Err(_) => {
                            self.phase = Phase::Ended;
                            return Some(Err(ModelError::Timeout(self.inner.options.timeout)));
                        }
                        Ok(Some(Err(e))) => {
                            self.phase = Phase::Ended;
                            return Some(Err(ModelError::Stream(format!(
                                "reading the answer failed: {e}"
                            ))));
                        }
                        Ok(Some(Ok(bytes))) => {
                            self.parser.push(&bytes, &mut events);
                            false
                        }
                        Ok(None) => {
                            self.parser.finish(&mut events);
                            true
                        }
                    };
                    let mut done = false;
                    for event in events {
                        match self.handle(&event) {
                            Ok(Progress::More) => {}
                            Ok(Progress::Done) => {
                                done = true;
                                break;
                            }
                            Err(e) => {
                                self.phase = Phase::Ended;
                                return Some(Err(e));
                            }
                        }
                    }
                    if eof && !done {
                        if self.finish_seen {
                            done = true;
                        } else {
                            self.phase = Phase::Ended;
                            return Some(Err(ModelError::Stream(
                                "the model server closed the stream before the answer ended"
                                    .to_owned(),
                            )));
                        }
                    }
                    if done {
                        self.phase = Phase::Ended;
                        let usage = self.final_usage();
                        self.pending.push_back(ModelEvent::Done(usage));
                    }
                }
            }
        }
    }

    fn final_usage(&self) -> Usage {
        self.usage.unwrap_or_else(|| {
            tracing::debug!("model server reported no usage; estimating tokens");
            Usage {
                prompt_tokens: self.prompt_estimate,
                completion_tokens: retrieval::count_tokens(&self.text),
                estimated: true,
            }
        })
    }

    /// Sends the request, retrying what may be retried.
    async fn start(&mut self) -> Result<Started, ModelError> {
        let inner = Arc::clone(&self.inner);
        let url = &inner.completions_url;
        let mut backoff = inner.options.initial_backoff;
        let mut attempt = 0;
        loop {
            let mut request = inner.client.post(url).json(&self.body);
            if let Some(key) = &inner.options.api_key {
                request = request.bearer_auth(key);
            }
            let outcome = tokio::time::timeout_at(self.deadline, request.send()).await;
            let error = match outcome {
                Err(_) => return Err(ModelError::Timeout(inner.options.timeout)),
                Ok(Err(e)) => connect_error(url, &e),
                Ok(Ok(response)) => {
                    let status = response.status();
                    if status.is_success() {
                        let is_json = response
                            .headers()
                            .get(http::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.starts_with("application/json"));
                        if is_json {
                            // A server that ignores `stream: true` answers with one JSON completion.
                            let value: Value =
                                tokio::time::timeout_at(self.deadline, response.json())
                                    .await
                                    .map_err(|_| ModelError::Timeout(inner.options.timeout))?
                                    .map_err(|e| {
                                        ModelError::Protocol(format!(
                                            "invalid JSON completion: {e}"
                                        ))
                                    })?;
                            return Ok(Started::Whole(value));
                        }
                        return Ok(Started::Stream(response.bytes_stream().boxed()));
                    }
                    let error = ModelError::Status {
                        status: status.as_u16(),
                        body: error_body(response).await,
                    };
                    if !(status.is_server_error() || status.as_u16() == 429) {
                        return Err(error);
                    }
                    error
                }
            };
            if attempt >= inner.options.max_retries || Instant::now() + backoff >= self.deadline {
                return Err(error);
            }
            tracing::warn!(attempt = attempt + 1, error = %error, "model request failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = backoff.saturating_mul(2);
            attempt += 1;
        }
    }

    fn whole_answer(&mut self, value: &Value) -> Result<(), ModelError> {
        if let Some(error) = value.get("error") {
            return Err(ModelError::Stream(error_message(error)));
        }
        let content = value
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ModelError::Protocol("completion without choices[0].message.content".to_owned())
            })?;
        self.text.push_str(content);
        if !content.is_empty() {
            self.pending
                .push_back(ModelEvent::Delta(content.to_owned()));
        }
        self.usage = parse_usage(value.get("usage"));
        let usage = self.final_usage();
        self.pending.push_back(ModelEvent::Done(usage));
        Ok(())
    }

    fn handle(&mut self, event: &SseEvent) -> Result<Progress, ModelError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Progress::Done);
        }
        if data.is_empty() {
            return Ok(Progress::More);
        }
        let value: Value = serde_json::from_str(data)
            .map_err(|e| ModelError::Protocol(format!("invalid JSON in stream event: {e}")))?;
        if let Some(error) = value.get("error") {
            return Err(ModelError::Stream(error_message(error)));
        }
        if let Some(choice) = value.pointer("/choices/0") {
            if let Some(content) = choice.pointer("/delta/content").and_then(Value::as_str)
                && !content.is_empty()
            {
                self.text.push_str(content);
                self.pending
                    .push_back(ModelEvent::Delta(content.to_owned()));
            }
            if choice.get("finish_reason").is_some_and(|r| !r.is_null()) {
                self.finish_seen = true;
            }
        }
        if let Some(usage) = parse_usage(value.get("usage")) {
            self.usage = Some(usage);
        }
        Ok(Progress::More)
    }
}

enum Started {
    Stream(BoxStream<'static, reqwest::Result<Bytes>>),
    Whole(Value),
}

fn parse_usage(value: Option<&Value>) -> Option<Usage> {
    let usage = value?;
    let prompt = usage.get("prompt_tokens")?.as_u64()?;
    let completion = usage.get("completion_tokens")?.as_u64()?;
    Some(Usage {
        prompt_tokens: u32::try_from(prompt).unwrap_or(u32::MAX),
        completion_tokens: u32::try_from(completion).unwrap_or(u32::MAX),
        estimated: false,
    })
}

fn error_message(error: &Value) -> String {
    match error.get("message").and_then(Value::as_str) {
        Some(message) => message.to_owned(),
        None => error.to_string(),
    }
}

fn connect_error(url: &str, error: &reqwest::Error) -> ModelError {
    // The URL is configuration, not a secret; the error text never contains the API key.
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        source = s.source();
    }
    ModelError::Connect {
        url: url.to_owned(),
        reason,
    }
}

async fn error_body(response: reqwest::Response) -> String {
    match response.bytes().await {
        Ok(bytes) => {
            let text =
                String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ERROR_BODY)]).into_owned();
            // OpenAI-style `{"error": {"message": …}}` bodies read better as their message.
            match serde_json::from_str::<Value>(&text) {
                Ok(value) if value.get("error").is_some() => error_message(&value["error"]),
                _ => text,
            }
        }
        Err(e) => format!("<unreadable body: {e}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_accept_bases_with_or_without_v1() {
        let check = |base: &str, want: &str| assert_eq!(endpoints(base).0, want, "{base}");
        check("http://h:1", "http://h:1/v1/chat/completions");
        check("http://h:1/", "http://h:1/v1/chat/completions");
        check("http://h:11434/v1", "http://h:11434/v1/chat/completions");
        check(
            "http://h/x/v1/chat/completions",
            "http://h/x/v1/chat/completions",
        );
        assert_eq!(endpoints("http://h:1/v1").1, "http://h:1/v1/models");
    }
}
