//! Text models: the OpenAI-compatible client against a loopback server that speaks the real SSE chunk format and
//! fails on command, and the built-in local engine (alone and through `ChatService` over a real SQLite store).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use voxgate::chat::model::local::LocalModel;
use voxgate::chat::model::openai_compat::{OpenAiCompatModel, OpenAiCompatOptions};
use voxgate::chat::model::retrieval::{Bm25Index, chunk_text};
use voxgate::chat::model::{
    ChatRequest, ContextChunk, ModelError, ModelEvent, PromptMessage, TextModel, Usage,
};
use voxgate::chat::*;
use voxgate::metrics::Metrics;

// ---------------------------------------------------------------------------------------------------------------
// The loopback server
// ---------------------------------------------------------------------------------------------------------------

/// What the server does with one request.
#[derive(Clone)]
enum Reply {
    /// A plain response with this status and JSON body.
    Status(u16, &'static str),
    /// `200 text/event-stream`, then these byte pieces written one by one (flushed, with a pause so they arrive
    /// as separate reads), then the connection closes.
    Sse(Vec<Vec<u8>>),
    /// `200 application/json` with this body (a server that ignores `stream: true`).
    Json(String),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    authorization: Option<String>,
    body: Value,
}

struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Serves `plan[i]` to the i-th request (the last entry repeats).
    async fn start(plan: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let reply = plan[n.min(plan.len() - 1)].clone();
                n += 1;
                let log = Arc::clone(&log);
                tokio::spawn(async move { serve(socket, reply, log).await });
            }
        });
        Server { url, seen }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(mut socket: TcpStream, reply: Reply, log: Arc<Mutex<Vec<Seen>>>) {
    // Read the head, then Content-Length bytes of body.
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
    log.lock().unwrap().push(Seen {
        request_line: head.lines().next().unwrap_or_default().to_owned(),
        authorization: header("authorization"),
        body,
    });
    match reply {
        Reply::Status(status, body) => {
            let response = format!(
                "HTTP/1.1 {status} Whatever\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
        Reply::Json(body) => {
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
        Reply::Sse(pieces) => {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                        Connection: close\r\n\r\n";
            if socket.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            for piece in pieces {
                if socket.write_all(&piece).await.is_err() {
                    return;
                }
                let _ = socket.flush().await;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
    }
    let _ = socket.shutdown().await;
}

/// A chat.completion.chunk event carrying `content`.
fn delta(content: &str) -> String {
    let chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "test-model",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]
    });
    format!("data: {chunk}\n\n")
}

fn role_chunk() -> String {
    let chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "test-model",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]
    });
    format!("data: {chunk}\n\n")
}

fn finish_chunk() -> String {
    let chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "test-model",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    });
    format!("data: {chunk}\n\n")
}

/// The final chunk of `stream_options.include_usage`: empty choices, usage set.
fn usage_chunk(prompt: u32, completion: u32) -> String {
    let chunk = json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "test-model",
        "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    });
    format!("data: {chunk}\n\n")
}

const DONE: &str = "data: [DONE]\n\n";

/// A full successful answer "Hello world!" with usage, as one string.
fn full_answer() -> String {
    [
        role_chunk(),
        delta("Hello"),
        delta(" world"),
        delta("!"),
        finish_chunk(),
        usage_chunk(9, 3),
        DONE.to_owned(),
    ]
    .concat()
}

fn split_every(text: &str, n: usize) -> Vec<Vec<u8>> {
    text.as_bytes().chunks(n).map(<[u8]>::to_vec).collect()
}

fn client(url: &str) -> OpenAiCompatModel {
    let mut options = OpenAiCompatOptions::new(url, "test-model", Some("sk-test".to_owned()));
    options.initial_backoff = Duration::from_millis(10);
    options.timeout = Duration::from_secs(10);
    OpenAiCompatModel::new(options).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest {
        system: Some("You are terse.".into()),
        messages: vec![PromptMessage::new(Role::User, "Say hello")],
        context: vec![ContextChunk {
            document_id: "d1".into(),
            title: "Greetings".into(),
            text: "Always greet the world.".into(),
            score: 1.0,
        }],
        ..Default::default()
    }
}

/// Every item of a generation, errors included.
async fn collect(
    model: &dyn TextModel,
    request: ChatRequest,
) -> Vec<Result<ModelEvent, ModelError>> {
    model.stream(request).collect().await
}

fn text_of(items: &[Result<ModelEvent, ModelError>]) -> String {
    items
        .iter()
        .filter_map(|i| match i {
            Ok(ModelEvent::Delta(d)) => Some(d.as_str()),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// OpenAI-compatible client
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn streams_deltas_and_reports_usage_whatever_the_framing() {
    let answer = full_answer();
    let crlf = answer.replace("\n", "\r\n");
    let framings: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "one event per write",
            answer
                .split_inclusive("\n\n")
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        ),
        (
            "all events merged in one write",
            vec![answer.as_bytes().to_vec()],
        ),
        ("split every 7 bytes", split_every(&answer, 7)),
        ("CRLF line ends split every 5 bytes", split_every(&crlf, 5)),
        ("keep-alive comments between events", {
            let with_comments = answer.replace("\n\ndata:", "\n\n: keep-alive\n\ndata:");
            vec![b": hello\n\n".to_vec(), with_comments.into_bytes()]
        }),
    ];
    for (name, pieces) in framings {
        let server = Server::start(vec![Reply::Sse(pieces)]).await;
        let model = client(&server.url);
        let items = collect(&model, request()).await;
        assert_eq!(text_of(&items), "Hello world!", "{name}");
        assert_eq!(
            items.last().unwrap().as_ref().unwrap(),
            &ModelEvent::Done(Usage {
                prompt_tokens: 9,
                completion_tokens: 3,
                estimated: false
            }),
            "{name}"
        );
        assert!(items.iter().all(Result::is_ok), "{name}: {items:?}");
        assert_eq!(server.requests().len(), 1, "{name}");
    }
}

#[tokio::test]
async fn sends_the_documented_request() {
    let server = Server::start(vec![Reply::Sse(vec![full_answer().into_bytes()])]).await;
    let model = client(&format!("{}/v1/", server.url));
    let mut req = request();
    req.json = true;
    req.max_tokens = Some(64);
    collect(&model, req).await;
    let seen = &server.requests()[0];
    assert_eq!(seen.request_line, "POST /v1/chat/completions HTTP/1.1");
    assert_eq!(seen.authorization.as_deref(), Some("Bearer sk-test"));
    let body = &seen.body;
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["max_tokens"], 64);
    assert_eq!(body["response_format"]["type"], "json_object");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    let system = messages[0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are terse."), "{system}");
    assert!(
        system.contains("[1] Greetings: Always greet the world."),
        "{system}"
    );
    assert_eq!(messages[1], json!({"role": "user", "content": "Say hello"}));
}

#[tokio::test]
async fn retries_503_twice_then_succeeds() {
    let server = Server::start(vec![
        Reply::Status(503, r#"{"error":{"message":"overloaded"}}"#),
        Reply::Status(503, r#"{"error":{"message":"overloaded"}}"#),
        Reply::Sse(vec![full_answer().into_bytes()]),
    ])
    .await;
    let items = collect(&client(&server.url), request()).await;
    assert_eq!(text_of(&items), "Hello world!");
    assert!(matches!(items.last(), Some(Ok(ModelEvent::Done(_)))));
    assert_eq!(server.requests().len(), 3);
}

#[tokio::test]
async fn gives_up_after_three_retries_of_5xx() {
    let server = Server::start(vec![Reply::Status(
        500,
        r#"{"error":{"message":"internal"}}"#,
    )])
    .await;
    let items = collect(&client(&server.url), request()).await;
    assert_eq!(items.len(), 1);
    match &items[0] {
        Err(ModelError::Status { status: 500, body }) => assert_eq!(body, "internal"),
        other => panic!("expected a 500 status error, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 4, "first attempt + 3 retries");
}

#[tokio::test]
async fn connection_refused_is_retried_with_backoff_then_reported() {
    // A port that was just free: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let items = collect(&client(&format!("http://127.0.0.1:{port}")), request()).await;
    let elapsed = started.elapsed();
    assert_eq!(items.len(), 1);
    assert!(
        matches!(&items[0], Err(ModelError::Connect { .. })),
        "{items:?}"
    );
    // Backoff 10 + 20 + 40 ms between the four attempts.
    assert!(
        elapsed >= Duration::from_millis(70),
        "retried too fast: {elapsed:?}"
    );
}

#[tokio::test]
async fn unauthorized_is_not_retried() {
    let server = Server::start(vec![Reply::Status(
        401,
        r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#,
    )])
    .await;
    let items = collect(&client(&server.url), request()).await;
    match &items[..] {
        [Err(ModelError::Status { status: 401, body })] => {
            assert_eq!(body, "Incorrect API key provided")
        }
        other => panic!("expected one 401 error, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_error_after_tokens_ends_the_stream_without_retry() {
    let error = "data: {\"error\":{\"message\":\"upstream exploded\",\"code\":500}}\n\n";
    let server = Server::start(vec![Reply::Sse(vec![
        role_chunk().into_bytes(),
        delta("Hel").into_bytes(),
        delta("lo").into_bytes(),
        error.as_bytes().to_vec(),
    ])])
    .await;
    let items = collect(&client(&server.url), request()).await;
    assert_eq!(text_of(&items), "Hello");
    match items.last() {
        Some(Err(ModelError::Stream(message))) => assert_eq!(message, "upstream exploded"),
        other => panic!("expected a stream error, got {other:?}"),
    }
    assert!(!items.iter().any(|i| matches!(i, Ok(ModelEvent::Done(_)))));
    assert_eq!(
        server.requests().len(),
        1,
        "never retried once tokens streamed"
    );
}

#[tokio::test]
async fn a_connection_cut_mid_answer_is_an_error_not_a_retry() {
    let server = Server::start(vec![Reply::Sse(vec![
        delta("partial").into_bytes(),
        b"data: {\"choi".to_vec(),
    ])])
    .await;
    let items = collect(&client(&server.url), request()).await;
    assert_eq!(text_of(&items), "partial");
    assert!(
        matches!(
            items.last(),
            Some(Err(ModelError::Protocol(_) | ModelError::Stream(_)))
        ),
        "{items:?}"
    );
    assert_eq!(server.requests().len(), 1);

    let server = Server::start(vec![Reply::Sse(vec![delta("partial").into_bytes()])]).await;
    let items = collect(&client(&server.url), request()).await;
    assert!(
        matches!(items.last(), Some(Err(ModelError::Stream(_)))),
        "{items:?}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn missing_usage_is_estimated_and_flagged() {
    // llama.cpp-style: finish_reason, then the connection closes without usage or [DONE].
    let server = Server::start(vec![Reply::Sse(vec![
        [delta("one two, three"), finish_chunk()]
            .concat()
            .into_bytes(),
    ])])
    .await;
    let items = collect(&client(&server.url), request()).await;
    match items.last() {
        Some(Ok(ModelEvent::Done(usage))) => {
            assert!(usage.estimated);
            assert_eq!(usage.completion_tokens, 4, "three words and a comma");
            assert!(usage.prompt_tokens > 0);
        }
        other => panic!("expected Done, got {other:?}"),
    }
}

#[tokio::test]
async fn a_non_streaming_json_answer_is_accepted() {
    let body = json!({
        "id": "x", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "{\"intent\":\"create_form\"}"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    });
    let server = Server::start(vec![Reply::Json(body.to_string())]).await;
    let items = collect(&client(&server.url), request()).await;
    assert_eq!(text_of(&items), "{\"intent\":\"create_form\"}");
    assert_eq!(
        items.last().unwrap().as_ref().unwrap(),
        &ModelEvent::Done(Usage {
            prompt_tokens: 5,
            completion_tokens: 7,
            estimated: false
        })
    );
}

#[tokio::test]
async fn health_check_lists_models_and_reports_failures() {
    let server = Server::start(vec![
        Reply::Json(r#"{"object":"list","data":[{"id":"test-model"}]}"#.to_owned()),
        Reply::Status(401, r#"{"error":{"message":"bad key"}}"#),
    ])
    .await;
    let model = client(&server.url);
    assert_eq!(model.check().await.unwrap(), ["test-model"]);
    assert_eq!(server.requests()[0].request_line, "GET /v1/models HTTP/1.1");
    assert!(matches!(
        model.check().await,
        Err(ModelError::Status { status: 401, .. })
    ));
}

#[test]
fn invalid_urls_are_refused_at_construction() {
    for url in ["not a url", "ftp://host"] {
        let options = OpenAiCompatOptions::new(url, "m", None);
        assert!(OpenAiCompatModel::new(options).is_err(), "{url}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Local engine and retrieval
// ---------------------------------------------------------------------------------------------------------------

const CORPUS: &[(&str, &str)] = &[
    (
        "Refund policy",
        "Customers may return any product within thirty days of delivery. Refunds are paid back to the original \
         payment method within five business days after the returned item is inspected.",
    ),
    (
        "Shipping",
        "Orders leave our warehouse within two days. Express shipping costs twelve euros and arrives the next \
         day in France; standard shipping is free above fifty euros.",
    ),
    (
        "Politique de confidentialité",
        "Nous conservons les données personnelles pendant trois ans. Vous pouvez demander la suppression de vos \
         données en écrivant au délégué à la protection des données.",
    ),
];

#[test]
fn bm25_ranks_the_right_chunk_first_on_a_small_corpus() {
    let chunks: Vec<String> = CORPUS
        .iter()
        .flat_map(|(_, text)| chunk_text(text))
        .collect();
    assert_eq!(chunks.len(), 3);
    let index = Bm25Index::build(&chunks);
    let check = |query: &str, expected: usize| {
        let hits = index.search(query, 3);
        assert_eq!(
            hits.first().map(|h| h.index),
            Some(expected),
            "{query}: {hits:?}"
        );
    };
    check("How long do refunds take?", 0);
    check("how much does express shipping cost", 1);
    check(
        "Combien de temps conservez-vous mes données personnelles ?",
        2,
    );
    check("suppression des donnees", 2);
    assert!(index.search("quantum entanglement", 3).is_empty());
}

fn grounded_request() -> ChatRequest {
    ChatRequest {
        messages: vec![
            PromptMessage::new(Role::User, "I bought shoes last week"),
            PromptMessage::new(Role::Assistant, "Nice."),
            PromptMessage::new(Role::User, "How long do refunds take?"),
        ],
        context: vec![ContextChunk {
            document_id: "d1".into(),
            title: "Refund policy".into(),
            text: CORPUS[0].1.into(),
            score: 3.2,
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn local_engine_is_deterministic_and_its_chunks_concatenate_to_the_answer() {
    let model = LocalModel::new();
    assert_eq!(model.name(), "voxgate-local");
    let answer = model.answer(&grounded_request()).unwrap();
    assert!(
        answer.starts_with("According to \u{201c}Refund policy\u{201d}:"),
        "{answer}"
    );
    assert!(answer.contains("Refunds are paid back"), "{answer}");

    let first = collect(&model, grounded_request()).await;
    let second = collect(&model, grounded_request()).await;
    assert_eq!(
        format!("{first:?}"),
        format!("{second:?}"),
        "same request, same stream"
    );
    let deltas = first
        .iter()
        .filter(|i| matches!(i, Ok(ModelEvent::Delta(_))))
        .count();
    assert!(deltas > 3, "streamed in several chunks, got {deltas}");
    assert_eq!(text_of(&first), answer);
    match first.last() {
        Some(Ok(ModelEvent::Done(usage))) => {
            assert!(!usage.estimated);
            assert_eq!(
                usage.completion_tokens,
                voxgate::chat::model::retrieval::count_tokens(&answer)
            );
            assert!(usage.prompt_tokens > 0);
        }
        other => panic!("expected Done, got {other:?}"),
    }
}

#[tokio::test]
async fn local_engine_chunk_delay_paces_the_stream() {
    let model = LocalModel::with_chunk_delay(Duration::from_millis(5));
    let started = Instant::now();
    let items = collect(&model, grounded_request()).await;
    let deltas = items
        .iter()
        .filter(|i| matches!(i, Ok(ModelEvent::Delta(_))))
        .count() as u32;
    assert!(started.elapsed() >= Duration::from_millis(5) * (deltas - 1));
}

// ---------------------------------------------------------------------------------------------------------------
// ChatService: retrieval + streaming + persistence, on a real SQLite store
// ---------------------------------------------------------------------------------------------------------------

async fn service(model: Arc<dyn TextModel>) -> (Arc<ChatService>, Arc<Metrics>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("voxgate.db"))
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    (
        Arc::new(ChatService::new(store, model, Arc::clone(&metrics))),
        metrics,
        dir,
    )
}

#[tokio::test]
async fn reply_stream_grounds_streams_and_persists() {
    let (chat, metrics, _dir) = service(Arc::new(LocalModel::new())).await;
    let store = chat.store();
    for (title, text) in CORPUS {
        store
            .add_document(&NewDocument {
                owner: "alice".into(),
                scope: "assistant".into(),
                title: (*title).into(),
                mime: "text/plain".into(),
                content: (*text).into(),
                size_bytes: text.len() as i64,
                metadata: json!({}),
            })
            .await
            .unwrap();
    }
    let conv = store
        .create_conversation(&NewConversation {
            owner: "alice".into(),
            kind: "chatbot".into(),
            scope: "assistant".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let mut request = ReplyRequest::new(&conv.id, "How much is express shipping?");
    request.documents = Some(DocumentFilter {
        scope: "assistant".into(),
        owner: Some("alice".into()),
    });
    request.assistant_metadata = json!({"chatbot_id": "assistant"});
    let reply = chat.reply_stream(request).await.unwrap();
    // The user message is committed before the first token.
    assert_eq!(
        store.get_message(&reply.user_message.id).await.unwrap(),
        Some(reply.user_message.clone())
    );

    let events: Vec<_> = reply.events.collect().await;
    let streamed: String = events
        .iter()
        .filter_map(|e| match e {
            Ok(ReplyEvent::Delta(d)) => Some(d.as_str()),
            _ => None,
        })
        .collect();
    let Some(Ok(ReplyEvent::Complete { message, usage })) = events.last() else {
        panic!("expected Complete, got {events:?}");
    };
    assert_eq!(message.content, streamed);
    assert!(
        streamed.contains("Express shipping costs twelve euros"),
        "{streamed}"
    );
    assert_eq!(message.role, Role::Assistant);
    assert_eq!(message.completion_tokens, usage.completion_tokens);
    assert_eq!(message.metadata["model"], "voxgate-local");
    assert_eq!(message.metadata["chatbot_id"], "assistant");
    assert_eq!(message.metadata["sources"][0]["title"], "Shipping");
    assert_eq!(
        store.get_message(&message.id).await.unwrap().as_ref(),
        Some(message)
    );
    assert_eq!(store.count_messages(&conv.id).await.unwrap(), 2);

    let exposition = metrics.render();
    let completion_line = exposition
        .lines()
        .find(|l| l.starts_with("voxgate_chat_tokens_total{kind=\"completion\"}"))
        .expect("completion token counter");
    assert!(
        completion_line.ends_with(&format!(" {}", usage.completion_tokens)),
        "{completion_line}"
    );
    assert!(
        exposition.contains(
            "voxgate_model_latency_seconds_count{model_kind=\"local\",phase=\"total\"} 1"
        )
    );

    // The next turn sees the history: asked about what was said, it quotes it.
    let outcome = chat
        .reply(ReplyRequest::new(
            &conv.id,
            "What did I say about shipping earlier?",
        ))
        .await
        .unwrap();
    assert!(
        outcome
            .assistant_message
            .content
            .contains("How much is express shipping?"),
        "{outcome:?}"
    );
    assert_eq!(store.count_messages(&conv.id).await.unwrap(), 4);
}

#[tokio::test]
async fn reply_errors_are_typed_and_store_nothing_for_the_assistant() {
    let (chat, _metrics, _dir) = service(Arc::new(LocalModel::new())).await;
    let missing = chat
        .reply_stream(ReplyRequest::new("no-such-conversation", "hi"))
        .await;
    assert!(
        matches!(
            missing,
            Err(ChatError::NotFound {
                what: "conversation"
            })
        ),
        "{missing:?}"
    );
    let conv = chat
        .store()
        .create_conversation(&NewConversation {
            owner: "u".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let empty = chat.reply_stream(ReplyRequest::new(&conv.id, "   ")).await;
    assert!(
        matches!(
            empty,
            Err(ChatError::Invalid {
                field: "message",
                ..
            })
        ),
        "{empty:?}"
    );
    assert_eq!(chat.store().count_messages(&conv.id).await.unwrap(), 0);

    // A model that fails mid-answer: the user message stays, no assistant message is stored.
    let error = "data: {\"error\":{\"message\":\"boom\"}}\n\n";
    let server = Server::start(vec![Reply::Sse(vec![
        delta("par").into_bytes(),
        error.as_bytes().to_vec(),
    ])])
    .await;
    let (chat, metrics, _dir2) = service(Arc::new(client(&server.url))).await;
    let conv = chat
        .store()
        .create_conversation(&NewConversation {
            owner: "u".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let reply = chat
        .reply_stream(ReplyRequest::new(&conv.id, "hi"))
        .await
        .unwrap();
    let events: Vec<_> = reply.events.collect().await;
    assert!(matches!(events.first(), Some(Ok(ReplyEvent::Delta(d))) if d == "par"));
    assert!(
        matches!(
            events.last(),
            Some(Err(ChatError::Model(ModelError::Stream(_))))
        ),
        "{events:?}"
    );
    assert_eq!(chat.store().count_messages(&conv.id).await.unwrap(), 1);
    assert!(metrics.render().contains(
        "voxgate_model_latency_seconds_count{model_kind=\"openai_compat\",phase=\"first_token\"} 1"
    ));
}

#[tokio::test]
async fn complete_text_asks_the_remote_model_for_json() {
    let server = Server::start(vec![Reply::Sse(vec![
        [
            delta("{\"intent\":"),
            delta("\"create_form\"}"),
            usage_chunk(3, 4),
            DONE.to_owned(),
        ]
        .concat()
        .into_bytes(),
    ])])
    .await;
    let (chat, _metrics, _dir) = service(Arc::new(client(&server.url))).await;
    let text = chat
        .complete_text("Classify.", "Créer un formulaire de contact", true)
        .await
        .unwrap();
    assert_eq!(text, "{\"intent\":\"create_form\"}");
    let body = &server.requests()[0].body;
    assert_eq!(body["response_format"]["type"], "json_object");
    assert_eq!(
        body["messages"][1]["content"],
        "Créer un formulaire de contact"
    );
}

#[tokio::test]
async fn health_checks_report_storage_and_model() {
    use voxgate::state::{HealthRegistry, HealthStatus};
    let (chat, _metrics, _dir) = service(Arc::new(LocalModel::new())).await;
    let registry = HealthRegistry::new(Duration::from_secs(2));
    chat.register_health(&registry);
    let report = registry.report_uncached().await;
    assert_eq!(report.status, HealthStatus::Ok);
    let database = &report.sections["database"];
    assert_eq!(database["connected"], true);
    assert_eq!(database["backend"], "sqlite");
    assert_eq!(database["sessions"], 0);
    assert!(database["latency_ms"].as_f64().is_some());
    let model = &report.sections["ollama"];
    assert_eq!(model["connected"], true);
    assert_eq!(model["model"], "voxgate-local");
    assert_eq!(model["kind"], "local");
    assert_eq!(model["available"], true);

    // A remote model that is down degrades the status; storage still up.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (chat, _metrics, _dir2) =
        service(Arc::new(client(&format!("http://127.0.0.1:{port}")))).await;
    let registry = HealthRegistry::new(Duration::from_secs(2));
    chat.register_health(&registry);
    let report = registry.report_uncached().await;
    assert_eq!(report.status, HealthStatus::Degraded);
    assert_eq!(report.sections["ollama"]["connected"], false);
    assert_eq!(report.sections["ollama"]["available"], false);
    assert_eq!(report.sections["database"]["connected"], true);

    // Storage gone: unhealthy.
    chat.store().close().await;
    assert!(chat.store().ping().await.is_err(), "ping after close");
    let report = registry.report_uncached().await;
    assert_eq!(report.status, HealthStatus::Unhealthy, "{report:?}");
}
