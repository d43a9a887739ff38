//! Server and configuration tests: the real server over real sockets, and the real binary as a process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::{get, post};
use futures_util::{SinkExt as _, StreamExt as _};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::connect_async_with_config;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use voxgate::config::{Config, LocalEngineMode, TurnDetection};
use voxgate::http::ws::{limit_upgrade, upstream_config};
use voxgate::server;
use voxgate::state::AppState;
use voxgate::testing::TestServer;

fn client() -> reqwest::Client {
    // reqwest is built without a default crypto provider; plain HTTP still needs one installed to build.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn load(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Config> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut argv = vec!["voxgate"];
    argv.extend_from_slice(args);
    Config::load_from(argv, |name| env.get(name).cloned())
}

fn write_file(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

// ---------------------------------------------------------------- configuration

#[test]
fn config_layers_flag_over_env_over_file_over_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(
        dir.path(),
        "voxgate.toml",
        r#"
        http_addr = "127.0.0.1:1111"
        cors_origins = ["https://file.example"]
        [limits]
        max_connections = 5
        header_timeout = "2s"
        [voice]
        realtime_model = "file-model"
        voice = "file-voice"
        idle_timeout = "2m"
        turn_detection = "semantic_vad"
        [[chat.chatbots]]
        id = "support"
        name = "Support"
        "#,
    );
    let env = [
        ("VOXGATE_CONFIG", file.as_str()),
        ("VOXGATE_REALTIME_MODEL", "env-model"),
        ("VOXGATE_VOICE", "env-voice"),
        ("VOXGATE_MAX_CONNECTIONS", "7"),
        (
            "VOXGATE_CORS_ORIGINS",
            "https://a.example,https://b.example",
        ),
        // A value that looks like a flag is still a value.
        ("VOXGATE_INSTRUCTIONS", "--be-brief"),
        // Empty means unset.
        ("VOXGATE_REALTIME_URL", ""),
    ];
    let config = load(
        &[
            "--realtime-model",
            "cli-model",
            "--local-engine-mode",
            "echo",
        ],
        &env,
    )
    .unwrap();

    assert_eq!(
        config.voice.realtime_model, "cli-model",
        "flag beats env and file"
    );
    assert_eq!(config.voice.voice, "env-voice", "env beats file");
    assert_eq!(config.voice.instructions, "--be-brief");
    assert_eq!(config.voice.realtime_url, None);
    assert_eq!(config.limits.max_connections, 7, "env beats file");
    assert_eq!(
        config.cors_origins,
        ["https://a.example", "https://b.example"]
    );
    assert_eq!(
        config.http_addr,
        "127.0.0.1:1111".parse::<SocketAddr>().unwrap(),
        "file beats default"
    );
    assert_eq!(config.limits.header_timeout, Duration::from_secs(2));
    assert_eq!(config.voice.idle_timeout, Duration::from_secs(120));
    assert_eq!(config.voice.turn_detection, TurnDetection::SemanticVad);
    assert_eq!(config.voice.local_engine_mode, LocalEngineMode::Echo);
    assert_eq!(config.chat.chatbots.len(), 1);
    assert_eq!(config.chat.chatbots[0].id, "support");
    assert_eq!(
        config.limits.max_connections_per_ip, 256,
        "default where nobody says anything"
    );
    assert_eq!(config.voice.max_sessions, 1000);

    // Without the environment, the file's values show through.
    let config = load(&["--config", &file], &[]).unwrap();
    assert_eq!(config.voice.realtime_model, "file-model");
    assert_eq!(config.limits.max_connections, 5);

    // --config on the command line beats VOXGATE_CONFIG.
    let other = write_file(
        dir.path(),
        "other.toml",
        "[voice]\nrealtime_model = \"other-model\"\n",
    );
    let config = load(&["--config", &other], &[("VOXGATE_CONFIG", file.as_str())]).unwrap();
    assert_eq!(config.voice.realtime_model, "other-model");
    assert_eq!(config.limits.max_connections, 10_000);
}

#[test]
fn config_errors_name_the_offending_key_or_variable() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "typo.toml", "[limits]\nheader_timeot = 5\n");
    let err = format!("{:#}", load(&["--config", &file], &[]).unwrap_err());
    assert!(err.contains("header_timeot"), "{err}");

    let file = write_file(
        dir.path(),
        "bad.toml",
        "[voice]\nidle_timeout = \"5 parsecs\"\n",
    );
    let err = format!("{:#}", load(&["--config", &file], &[]).unwrap_err());
    assert!(
        err.contains("idle_timeout") && err.contains("unknown unit"),
        "{err}"
    );

    let err = format!(
        "{:#}",
        load(&[], &[("VOXGATE_MAX_CONNECTIONS", "many")]).unwrap_err()
    );
    assert!(
        err.contains("VOXGATE_MAX_CONNECTIONS") && err.contains("many"),
        "{err}"
    );

    let err = format!("{:#}", load(&["--max-connections", "0"], &[]).unwrap_err());
    assert!(err.contains("limits.max_connections"), "{err}");

    let err = format!(
        "{:#}",
        load(&["--cors-origins", "https://app.example/"], &[]).unwrap_err()
    );
    assert!(err.contains("cors_origins"), "{err}");

    let err = format!(
        "{:#}",
        load(&["--realtime-url", "ftp://x"], &[]).unwrap_err()
    );
    assert!(err.contains("voice.realtime_url"), "{err}");

    let err = load(&["--no-such-flag"], &[]).unwrap_err();
    assert!(err.downcast_ref::<clap::Error>().is_some());
}

#[test]
fn secrets_come_from_the_environment_and_never_show_in_debug() {
    let config = load(&[], &[("OPENAI_API_KEY", "sk-test-openai-0123456789")]).unwrap();
    assert_eq!(
        config.voice.openai_api_key.as_ref().unwrap().expose(),
        "sk-test-openai-0123456789"
    );
    assert_eq!(
        config.chat.llm_api_key.as_ref().unwrap().expose(),
        "sk-test-openai-0123456789",
        "the LLM key falls back to OPENAI_API_KEY"
    );
    assert!(config.chat.jwt_secret_ephemeral);
    assert!(!format!("{config:?}").contains("sk-test-openai"));

    let config = load(
        &[],
        &[
            ("OPENAI_API_KEY", "sk-test-openai-0123456789"),
            ("VOXGATE_LLM_API_KEY", "llm-key"),
            ("VOXGATE_JWT_SECRET", "a-configured-jwt-secret"),
        ],
    )
    .unwrap();
    assert_eq!(config.chat.llm_api_key.unwrap().expose(), "llm-key");
    assert_eq!(config.chat.jwt_secret.expose(), "a-configured-jwt-secret");
    assert!(!config.chat.jwt_secret_ephemeral);

    // Two processes without a configured secret get different ones.
    let a = load(&[], &[]).unwrap();
    let b = load(&[], &[]).unwrap();
    assert_ne!(a.chat.jwt_secret.expose(), b.chat.jwt_secret.expose());
}

// ---------------------------------------------------------------- HTTP surface

#[tokio::test]
async fn health_reports_both_seed_shapes() {
    let server = TestServer::start_default().await.unwrap();
    let response = client()
        .get(server.http_url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["service"], "octi-realtime-backend");
    let timestamp = body["timestamp"].as_str().unwrap();
    // RFC 3339 with milliseconds in UTC, as in seed 002: 2024-01-01T12:00:00.000Z
    assert_eq!(timestamp.len(), 24, "{timestamp}");
    assert!(
        timestamp.ends_with('Z') && timestamp.as_bytes()[19] == b'.',
        "{timestamp}"
    );
    chrono::DateTime::parse_from_rfc3339(timestamp).unwrap();
    assert!(body["database"].is_object(), "{body}");
    assert!(body["ollama"].is_object(), "{body}");

    // A critical component that is down makes the instance unhealthy (503).
    server.state.health.register(
        "database",
        voxgate::state::HealthImpact::Critical,
        || async { voxgate::state::ComponentHealth::down("connection refused") },
    );
    let response = client()
        .get(server.http_url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["database"]["connected"], false);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn request_ids_are_generated_or_echoed() {
    let server = TestServer::start_default().await.unwrap();
    let response = client()
        .get(server.http_url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let first = client()
        .get(server.http_url("/health"))
        .send()
        .await
        .unwrap();
    let second = client()
        .get(server.http_url("/health"))
        .send()
        .await
        .unwrap();
    assert_ne!(
        first.headers()["x-request-id"],
        second.headers()["x-request-id"]
    );
    // An unusable id (too long) is replaced, not echoed.
    let long = "x".repeat(500);
    let response = client()
        .get(server.http_url("/health"))
        .header("x-request-id", long.as_str())
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert!(id != long && !id.is_empty() && id.len() <= 128, "{id}");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn errors_outside_the_seeds_are_problem_json() {
    let server = TestServer::start_default().await.unwrap();
    let response = client()
        .get(server.http_url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], 404);
    assert_eq!(body["type"], "urn:voxgate:problem:not_found");

    let response = client()
        .delete(server.http_url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert!(
        response.headers()["allow"]
            .to_str()
            .unwrap()
            .contains("GET")
    );
    server.shutdown().await.unwrap();
}

/// Asserts a 413 in problem+json whose detail contains `detail_part`.
async fn assert_problem_413(response: reqwest::Response, detail_part: &str) {
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains(detail_part),
        "{body}"
    );
}

#[tokio::test]
async fn oversize_bodies_get_413() {
    let server = TestServer::start_with(|config| config.body_limit_bytes = 1024)
        .await
        .unwrap();
    let declared = client()
        .post(server.http_url("/health"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    assert_problem_413(declared, "1024").await;

    // A chunked body declares no length: the limit is met while a route's extractor reads it, and axum's
    // plain-text rejection still reaches the client as problem+json.
    let chunks = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1024]))),
    );
    let chunked = client()
        .post(server.http_url("/api/v1/sessions/create"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_problem_413(chunked, "limit").await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn cors_only_for_configured_origins() {
    let server = TestServer::start_with(|config| {
        config.cors_origins = vec!["https://app.example.com".to_owned()]
    })
    .await
    .unwrap();
    let preflight = |origin: &str| {
        client()
            .request(reqwest::Method::OPTIONS, server.http_url("/health"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let response = preflight("https://app.example.com").await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        response.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("GET")
    );

    let response = preflight("https://evil.example.com").await.unwrap();
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
    server.shutdown().await.unwrap();

    // No origins configured: no CORS headers at all.
    let server = TestServer::start_default().await.unwrap();
    let response = client()
        .get(server.http_url("/health"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(
        !response
            .headers()
            .keys()
            .any(|name| name.as_str().starts_with("access-control-"))
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_expose_every_family_in_valid_text_format() {
    let server = TestServer::start_default().await.unwrap();
    client()
        .get(server.http_url("/health"))
        .send()
        .await
        .unwrap();
    client()
        .get(server.http_url("/nowhere"))
        .send()
        .await
        .unwrap();
    let response = client()
        .get(server.http_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();

    let families = parse_exposition(&text);
    for name in [
        "voxgate_build_info",
        "voxgate_active_sessions",
        "voxgate_audio_frames_total",
        "voxgate_audio_bytes_total",
        "voxgate_relay_latency_seconds",
        "voxgate_time_to_first_audio_seconds",
        "voxgate_upstream_connects_total",
        "voxgate_upstream_reconnects_total",
        "voxgate_barge_ins_total",
        "voxgate_dropped_frames_total",
        "voxgate_http_requests_total",
        "voxgate_http_request_duration_seconds",
        "voxgate_connections_open",
        "voxgate_connections_rejected_total",
        "voxgate_chat_tokens_total",
        "voxgate_rate_limited_total",
        "voxgate_model_latency_seconds",
        "voxgate_store_errors_total",
    ] {
        assert!(families.contains_key(name), "{name} missing from /metrics");
    }
    assert_eq!(families["voxgate_relay_latency_seconds"], "histogram");
    assert_eq!(families["voxgate_connections_open"], "gauge");
    assert!(
        text.contains(
            r#"voxgate_http_requests_total{method="GET",route="/health",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"voxgate_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
        ),
        "{text}"
    );
    promtool_check(&text);
    assert!(
        text.contains("voxgate_connections_open 1"),
        "the scrape's own connection is open:\n{text}"
    );
    server.shutdown().await.unwrap();
}

/// Runs `promtool check metrics` (the Prometheus linter) on the exposition when promtool is installed
/// (Debian package `prometheus`); `parse_exposition` below covers machines without it.
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("promtool not installed; relying on the built-in exposition check");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A strict reading of the Prometheus text format (what `promtool check metrics` parses): every sample
/// belongs to a family declared by `# HELP` and `# TYPE` before it, names and label syntax are valid, values
/// are numbers, counters end in `_total`, and histogram buckets are cumulative. Returns family -> type.
fn parse_exposition(text: &str) -> HashMap<String, String> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps = std::collections::HashSet::new();
    let mut last_bucket: HashMap<String, f64> = HashMap::new();
    let valid_name = |name: &str| {
        !name.is_empty()
            && name.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "bad name in {line}");
            assert!(helps.insert(name.to_owned()), "duplicate HELP: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(helps.contains(name), "TYPE before HELP: {line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter without _total: {name}");
            }
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "duplicate TYPE: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "unexpected line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.strip_suffix('}').expect("unclosed labels")),
            None => (series, ""),
        };
        assert!(valid_name(name), "bad metric name in {line}");
        for pair in labels.split("\",").filter(|pair| !pair.is_empty()) {
            let (label, quoted) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("bad label in {line}"));
            assert!(
                valid_name(label) && quoted.starts_with('"'),
                "bad label {pair} in {line}"
            );
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample of undeclared family: {line}"
        );
        if name.ends_with("_bucket") {
            let key = format!("{family}{{{}", labels.split("le=").next().unwrap());
            let previous = last_bucket.get(&key).copied().unwrap_or(0.0);
            assert!(
                value >= previous,
                "histogram buckets not cumulative at {line}"
            );
            last_bucket.insert(key, value);
        }
    }
    types
}

// ---------------------------------------------------------------- transport limits

/// Reads until the server closes the connection; returns what it sent and when it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<(Vec<u8>, Instant)> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let remaining = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(remaining, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((received, Instant::now())),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

#[tokio::test]
async fn slowloris_connection_is_closed_after_the_header_timeout() {
    let timeout = Duration::from_millis(300);
    let server = TestServer::start_with(|config| config.limits.header_timeout = timeout)
        .await
        .unwrap();

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let (_, closed_at) = read_until_closed(&mut stream, Duration::from_secs(5))
        .await
        .expect("the server must close a connection that never finishes its headers");
    let elapsed = closed_at - started;
    assert!(
        elapsed >= timeout - Duration::from_millis(50),
        "closed too early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "closed too late: {elapsed:?}"
    );

    // An idle connection that sends nothing is bounded the same way.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    read_until_closed(&mut idle, Duration::from_secs(5))
        .await
        .expect("idle connection must be closed");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_request_heads_are_refused() {
    let server = TestServer::start_default().await.unwrap();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let huge = "a".repeat(100 * 1024);
    let request = format!("GET /health HTTP/1.1\r\nHost: x\r\nX-Huge: {huge}\r\n\r\n");
    // The server may stop reading (and close) before everything is written.
    let _ = stream.write_all(request.as_bytes()).await;
    let (received, _) = read_until_closed(&mut stream, Duration::from_secs(3))
        .await
        .expect("connection closed");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 431"),
        "{text}"
    );
    assert!(!text.contains("200 OK"), "{text}");
    server.shutdown().await.unwrap();
}

async fn get_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut status))
        .await
        .unwrap()
        .unwrap();
    status
}

/// Polls `condition` until it holds or 5 s pass.
async fn eventually(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "condition not reached within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn assert_refused(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (received, _) = read_until_closed(&mut stream, Duration::from_secs(3))
        .await
        .expect("a refused connection is closed at once");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 503"),
        "{text}"
    );
}

#[tokio::test]
async fn connections_per_ip_are_capped() {
    let server = TestServer::start_with(|config| {
        config.limits.max_connections_per_ip = 2;
        config.limits.header_timeout = Duration::from_secs(30);
    })
    .await
    .unwrap();
    let metrics = server.state.metrics.clone();
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    assert!(get_on(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(get_on(&mut second).await.starts_with("HTTP/1.1 200"));
    assert_eq!(metrics.connections_open.get(), 2);

    assert_refused(server.addr).await;
    assert_eq!(
        metrics
            .connections_rejected_total
            .with_label_values(&["per_ip"])
            .get(),
        1
    );

    // Closing one frees its slot.
    drop(first);
    eventually(|| metrics.connections_open.get() == 1).await;
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    assert!(get_on(&mut third).await.starts_with("HTTP/1.1 200"));
    drop((second, third));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_overall_are_capped() {
    let server = TestServer::start_with(|config| {
        config.limits.max_connections = 3;
        config.limits.header_timeout = Duration::from_secs(30);
    })
    .await
    .unwrap();
    let metrics = server.state.metrics.clone();
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        assert!(get_on(&mut stream).await.starts_with("HTTP/1.1 200"));
        open.push(stream);
    }
    assert_refused(server.addr).await;
    assert_refused(server.addr).await;
    assert_eq!(
        metrics
            .connections_rejected_total
            .with_label_values(&["max_connections"])
            .get(),
        2
    );
    assert_eq!(
        metrics
            .connections_rejected_total
            .with_label_values(&["per_ip"])
            .get(),
        0
    );

    open.pop();
    eventually(|| metrics.connections_open.get() == 2).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    assert!(get_on(&mut stream).await.starts_with("HTTP/1.1 200"));
    server.shutdown().await.unwrap();
}

/// A server whose routes are test routes behind the real middleware and accept loop: `/echo` is a WebSocket
/// echo with the shared limits that says goodbye (1001) on shutdown; `/upload` reads the whole body.
async fn start_custom_server(
    adjust: impl FnOnce(&mut Config),
) -> (
    SocketAddr,
    AppState,
    JoinHandle<anyhow::Result<()>>,
    TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_test(dir.path());
    adjust(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = server::build_state(config, CancellationToken::new(), TaskTracker::new())
        .await
        .unwrap();
    let routes = Router::new().route("/echo", get(echo_socket)).route(
        "/upload",
        post(|body: Bytes| async move { body.len().to_string() }),
    );
    let app = voxgate::http::with_middleware(routes, state.clone());
    let handle = tokio::spawn(server::run_with_router(state.clone(), listener, app));
    (addr, state, handle, dir)
}

async fn echo_socket(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    let limits = state.config.limits.clone();
    limit_upgrade(upgrade, &limits).on_upgrade(move |socket| echo_session(socket, state))
}

async fn echo_session(mut socket: WebSocket, state: AppState) {
    // Keeps the drain waiting for this session, as real sessions do.
    let _busy = state.tasks.token();
    loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                    if socket.send(message).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            () = state.shutdown.cancelled() => {
                let frame = CloseFrame { code: 1001, reason: "server shutting down".into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return;
            }
        }
    }
}

#[tokio::test]
async fn stalled_request_bodies_are_cut_off_but_slow_steady_ones_are_not() {
    let idle = Duration::from_millis(400);
    let (addr, state, handle, _dir) =
        start_custom_server(|config| config.limits.header_timeout = idle).await;

    // 10 bytes in 5 chunks, 150 ms apart: 750 ms in all, longer than the idle timeout but never idle.
    let mut steady = TcpStream::connect(addr).await.unwrap();
    steady
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        steady.write_all(b"ab").await.unwrap();
    }
    let (received, _) = read_until_closed(&mut steady, Duration::from_secs(5))
        .await
        .expect("closed after the idle keep-alive time");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("\r\n\r\n10"),
        "{text}"
    );

    // A body announced as 100 bytes of which 10 arrive, then silence.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let started = Instant::now();
    let (received, closed_at) = read_until_closed(&mut stalled, Duration::from_secs(5))
        .await
        .expect("a stalled body must not hold the connection");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(closed_at - started >= idle - Duration::from_millis(50));

    state.shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn websocket_upgrades_keep_their_slot_and_get_the_shared_limits() {
    let (addr, state, handle, _dir) = start_custom_server(|config| {
        config.limits.max_connections_per_ip = 2;
        config.limits.header_timeout = Duration::from_secs(30);
        config.limits.ws_max_message_bytes = 1024;
        config.limits.ws_max_frame_bytes = 1024;
    })
    .await;
    let metrics = state.metrics.clone();
    let client_config = Some(upstream_config(&state.config.limits));
    let url = format!("ws://{addr}/echo");
    let (mut first, _) = connect_async_with_config(url.as_str(), client_config, false)
        .await
        .unwrap();
    first.send(WsMessage::text("hello")).await.unwrap();
    assert_eq!(
        first.next().await.unwrap().unwrap(),
        WsMessage::text("hello")
    );

    // After the upgrade hyper's connection task is gone, but the socket still holds its slot.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(metrics.connections_open.get(), 1);
    let (mut second, _) = connect_async_with_config(url.as_str(), client_config, false)
        .await
        .unwrap();
    assert_refused(addr).await;
    assert_eq!(
        metrics
            .connections_rejected_total
            .with_label_values(&["per_ip"])
            .get(),
        1
    );

    // A message over ws_max_message_bytes ends the session and frees the slot.
    first
        .send(WsMessage::binary(vec![0u8; 2048]))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(3), first.next())
        .await
        .expect("oversize message did not end the session");
    match reply {
        Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => {}
        Some(Ok(other)) => panic!("oversize message was echoed: {other:?}"),
    }
    eventually(|| metrics.connections_open.get() == 1).await;

    // Shutdown: the session is told (1001) and the server returns after it ends.
    state.shutdown.cancel();
    let close = tokio::time::timeout(Duration::from_secs(3), second.next())
        .await
        .unwrap();
    match close {
        Some(Ok(WsMessage::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    tokio::time::timeout(Duration::from_secs(3), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------- shutdown

#[tokio::test]
async fn shutdown_waits_for_tracked_tasks_and_closes_idle_connections() {
    let server =
        TestServer::start_with(|config| config.limits.shutdown_drain = Duration::from_secs(5))
            .await
            .unwrap();
    // An idle keep-alive connection must not hold the shutdown up.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert!(get_on(&mut idle).await.starts_with("HTTP/1.1 200"));

    // A subsystem task that needs 300 ms to say goodbye after the shutdown signal.
    let state = server.state.clone();
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = finished.clone();
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        state.shutdown.cancelled().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });

    let started = Instant::now();
    server.shutdown().await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        finished.load(std::sync::atomic::Ordering::SeqCst),
        "the drain waits for tracked tasks"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "idle connections do not delay shutdown: {elapsed:?}"
    );
    read_until_closed(&mut idle, Duration::from_secs(1))
        .await
        .expect("idle connection closed by shutdown");
    assert!(
        TcpStream::connect(idle.peer_addr().unwrap()).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn shutdown_returns_within_the_drain_bound_while_a_connection_is_stuck() {
    let drain = Duration::from_millis(500);
    let server = TestServer::start_with(|config| {
        config.limits.shutdown_drain = drain;
        config.limits.header_timeout = Duration::from_secs(30);
    })
    .await
    .unwrap();
    // A request whose head never completes keeps its connection busy past any graceful close.
    let mut stuck = TcpStream::connect(server.addr).await.unwrap();
    stuck
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    server.shutdown().await.unwrap();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= drain - Duration::from_millis(50),
        "returned before the drain time: {elapsed:?}"
    );
    assert!(
        elapsed < drain + Duration::from_secs(1),
        "drain bound not enforced: {elapsed:?}"
    );
    read_until_closed(&mut stuck, Duration::from_secs(1))
        .await
        .expect("stuck connection closed after the drain");
}

// ---------------------------------------------------------------- the binary

#[test]
fn binary_help_lists_flags_and_environment() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_voxgate"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "--http-addr",
        "VOXGATE_HTTP_ADDR",
        "--config",
        "--realtime-url",
        "OPENAI_API_KEY",
    ] {
        assert!(
            help.contains(needle),
            "{needle} missing from --help:\n{help}"
        );
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_voxgate"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[tokio::test]
async fn binary_serves_and_exits_zero_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxgate"))
        .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env_clear()
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                return rest.trim().parse().unwrap();
            }
        }
        panic!("the server exited without logging its address");
    })
    .await
    .expect("no 'listening on' line within 20 s");
    assert_ne!(addr.port(), 0);

    let response = client()
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("no exit after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
}
