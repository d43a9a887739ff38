//! The seed 002 client flow and the client-facing rules of `/ws/realtime`, against the built-in
//! engine running in-process (the gateway's own OpenAI client talks to it).

use std::time::Duration;

use serde_json::json;
use voxgate::config::{Config, LocalEngineMode};
use voxgate::testing::TestServer;

use crate::support::{
    Client, FRAME_BYTES, Frame, http_get, raw_close_code, silence, speech_pcm, summary,
};

const READY: Duration = Duration::from_secs(5);

#[tokio::test]
async fn seed_client_flow_end_to_end() {
    let server = TestServer::start_default().await.expect("server starts");
    let speech = speech_pcm(server.data_dir(), "Hello there, can you hear me?", 1_200);
    let mut client = Client::connect(&server.ws_url("/ws/realtime")).await;
    client.expect_json("ready", READY).await;
    client
        .send_json(json!({ "type": "start_conversation" }))
        .await;

    let mut received = Vec::new();
    client.stream_realtime(&speech, &mut received).await;
    // Keep the microphone open with silence, as a browser would, until the bot has answered.
    let (_, rest) = {
        let mut more = Vec::new();
        client.stream_realtime(&silence(200), &mut more).await;
        received.extend(more);
        client
            .expect_json("bot_audio_end", Duration::from_secs(20))
            .await
    };
    received.extend(rest);

    let audio_bytes: usize = received
        .iter()
        .map(|f| if let Frame::Audio(a) = f { a.len() } else { 0 })
        .sum();
    assert!(
        audio_bytes >= 24_000,
        "expected at least 0.5 s of bot audio: {}",
        summary(&received)
    );
    assert!(
        received
            .iter()
            .all(|f| !matches!(f, Frame::Audio(a) if a.len() % 2 != 0)),
        "bot audio frames hold whole PCM16 samples"
    );
    let transcript: String = received
        .iter()
        .filter(|f| f.kind() == Some("transcript_delta"))
        .filter_map(|f| {
            if let Frame::Json(v) = f {
                v["text"].as_str().map(str::to_owned)
            } else {
                None
            }
        })
        .collect();
    assert!(
        !transcript.trim().is_empty(),
        "transcript_delta carries text: {}",
        summary(&received)
    );
    assert!(
        !received.iter().any(|f| f.kind() == Some("error")),
        "no error: {}",
        summary(&received)
    );

    let metrics = http_get(&server.http_url("/metrics")).await;
    assert!(
        metrics.contains(r#"voxgate_active_sessions{transport="ws"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("voxgate_time_to_first_audio_seconds_count 1"),
        "one turn measured"
    );
    assert!(metrics.contains(r#"voxgate_audio_frames_total{direction="upstream_to_client"}"#));
    assert_eq!(
        client.close_and_await_reply(Duration::from_secs(5)).await,
        1000,
        "the gateway answers the client's close frame"
    );
    server.shutdown().await.expect("clean shutdown");
}

/// A gateway whose engine echoes (with `adjust` applied to its config), and a client past `ready` and a plain
/// `start_conversation`.
async fn echo_session(adjust: impl FnOnce(&mut Config)) -> (TestServer, Client) {
    let server = TestServer::start_with(|c| {
        c.voice.local_engine_mode = LocalEngineMode::Echo;
        adjust(c);
    })
    .await
    .expect("server starts");
    let mut client = Client::connect(&server.ws_url("/ws/realtime")).await;
    client.expect_json("ready", READY).await;
    client
        .send_json(json!({ "type": "start_conversation" }))
        .await;
    (server, client)
}

/// Reads bot audio after `echoed` (what already came back) until `len` bytes did; panics if it stops.
async fn read_echo(client: &mut Client, mut echoed: Vec<u8>, len: usize) -> Vec<u8> {
    while echoed.len() < len {
        match client.next(Duration::from_secs(5)).await {
            Some(Frame::Audio(a)) => echoed.extend_from_slice(&a),
            Some(Frame::Json(_)) => {}
            other => panic!("echo stopped at {} of {len} bytes: {other:?}", echoed.len()),
        }
    }
    echoed
}

#[tokio::test]
async fn echo_mode_relays_audio_byte_for_byte() {
    let (server, mut client) = echo_session(|_| {}).await;
    let sent: Vec<u8> = (0..50 * FRAME_BYTES).map(|i| (i * 7 % 251) as u8).collect();
    let mut received = Vec::new();
    client.stream_realtime(&sent, &mut received).await;
    let mut echoed: Vec<u8> = Vec::new();
    for frame in &received {
        if let Frame::Audio(a) = frame {
            echoed.extend_from_slice(a);
        }
    }
    let echoed = read_echo(&mut client, echoed, sent.len()).await;
    assert_eq!(echoed, sent, "the relay must not change a byte");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_burst_is_relayed_not_called_a_flood() {
    // Fifty frames sent at once: the session reads them as fast as it relays them (meanwhile TCP pushes back on
    // the client), and does not call them a flood: one second of audio is far below the flood guard's 4x real
    // time past a 10-second burst.
    let (server, mut client) = echo_session(|_| {}).await;
    let sent: Vec<u8> = (0..50 * FRAME_BYTES)
        .map(|i| (i * 13 % 241) as u8)
        .collect();
    for frame in sent.chunks(FRAME_BYTES) {
        assert!(
            client.send_audio(frame).await,
            "the gateway stopped reading"
        );
    }
    let echoed = read_echo(&mut client, Vec::new(), sent.len()).await;
    assert_eq!(echoed, sent);
    let metrics = http_get(&server.http_url("/metrics")).await;
    assert!(
        !metrics.contains(r#"voxgate_dropped_frames_total{reason="input_flood"} 1"#),
        "{metrics}"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn converts_client_formats_both_ways() {
    let server = TestServer::start_with(|c| c.voice.local_engine_mode = LocalEngineMode::Echo)
        .await
        .expect("server starts");
    let mut client = Client::connect(&server.ws_url("/ws/realtime")).await;
    client.expect_json("ready", READY).await;
    client
        .send_json(json!({
            "type": "start_conversation",
            "format": { "encoding": "pcm16", "sample_rate": 16000 },
            "output_format": "pcmu"
        }))
        .await;
    // One second of 16 kHz PCM16 in 20 ms frames (640 bytes each).
    let tone: Vec<f32> = (0..16_000).map(|i| 0.3 * (i as f32 * 0.1).sin()).collect();
    let pcm16k = voxgate_dsp::pcm::encode_pcm16le(&tone);
    let mut received = Vec::new();
    for frame in pcm16k.chunks(640) {
        assert!(client.send_audio(frame).await);
    }
    let mut total = 0;
    while total < 7_800 {
        match client.next(Duration::from_secs(3)).await {
            Some(Frame::Audio(a)) => total += a.len(),
            Some(frame) => received.push(frame),
            None => break,
        }
    }
    // One second comes back as about one second of 8 kHz mu-law: one byte per sample.
    assert!(
        (7_800..=8_100).contains(&total),
        "got {total} bytes of pcmu; {}",
        summary(&received)
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_session_goes_on() {
    let server = TestServer::start_default().await.expect("server starts");
    let mut client = Client::connect(&server.ws_url("/ws/realtime")).await;
    client.expect_json("ready", READY).await;

    client.send_audio(&[1, 2, 3]).await;
    let (error, _) = client.expect_json("error", READY).await;
    assert!(
        error["message"].as_str().unwrap_or("").contains("16-bit"),
        "{error}"
    );

    client.send_text("{not json").await;
    let (error, _) = client.expect_json("error", READY).await;
    assert!(
        error["message"]
            .as_str()
            .unwrap_or("")
            .contains("invalid JSON"),
        "{error}"
    );

    client.send_json(json!({ "type": "sing" })).await;
    let (error, _) = client.expect_json("error", READY).await;
    assert!(
        error["message"].as_str().unwrap_or("").contains("sing"),
        "{error}"
    );

    // A binary frame over the audio frame limit (half the WebSocket message limit) is refused...
    let limit = server.state.config.limits.ws_max_message_bytes;
    client.send_audio(&vec![0; limit / 2 + 2]).await;
    let (error, _) = client.expect_json("error", READY).await;
    assert!(
        error["message"].as_str().unwrap_or("").contains("exceeds"),
        "{error}"
    );

    // ...and the session is still alive: a reset answers `ready`.
    client.send_json(json!({ "type": "reset_session" })).await;
    client.expect_json("ready", READY).await;

    // Over the WebSocket message limit the socket itself is closed with 1009.
    client.send_audio(&vec![0; limit + 2]).await;
    let (code, _, _) = client.expect_close(READY).await;
    assert_eq!(code, 1009);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn invalid_utf8_text_closes_with_1007() {
    let server = TestServer::start_default().await.expect("server starts");
    // A masked text frame whose payload is not UTF-8.
    let payload = [0xff, 0xfe, 0xfd];
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    assert_eq!(raw_close_code(server.addr, &frame).await, 1007);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn an_unmasked_client_frame_closes_with_1002() {
    let server = TestServer::start_default().await.expect("server starts");
    // RFC 6455 section 5.1: a client must mask every frame.
    assert_eq!(
        raw_close_code(server.addr, &[0x82, 0x02, 0x00, 0x00]).await,
        1002
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn an_input_flood_is_closed_with_1008() {
    let server = TestServer::start_with(|c| c.voice.local_engine_mode = LocalEngineMode::Echo)
        .await
        .expect("server starts");
    let mut client = Client::connect(&server.ws_url("/ws/realtime")).await;
    client.expect_json("ready", READY).await;
    // Sixty seconds of audio as fast as the socket takes it.
    let chunk = vec![0u8; 4_800];
    for _ in 0..600 {
        if !client.send_audio(&chunk).await {
            break;
        }
    }
    let (code, reason, before) = client.expect_close(Duration::from_secs(10)).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(
        before.iter().any(|f| f.kind() == Some("error")),
        "error before the close: {}",
        summary(&before)
    );
    let metrics = http_get(&server.http_url("/metrics")).await;
    assert!(
        metrics.contains(r#"voxgate_dropped_frames_total{reason="input_flood"} 1"#),
        "{metrics}"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn sessions_past_the_cap_get_1013() {
    let server = TestServer::start_with(|c| c.voice.max_sessions = 1)
        .await
        .expect("server starts");
    let mut first = Client::connect(&server.ws_url("/ws/realtime")).await;
    first.expect_json("ready", READY).await;
    let mut second = Client::connect(&server.ws_url("/ws/realtime")).await;
    let (code, _, before) = second.expect_close(READY).await;
    assert_eq!(code, 1013);
    assert_eq!(before.first().and_then(Frame::kind), Some("error"));
    // The first session is untouched, and its slot is freed when it ends.
    first.send_json(json!({ "type": "reset_session" })).await;
    first.expect_json("ready", READY).await;
    first.close().await;
    let mut third = None;
    for _ in 0..50 {
        let mut client = Client::connect(&server.ws_url("/ws/realtime")).await;
        match client.next(READY).await {
            Some(frame) if frame.kind() == Some("ready") => {
                third = Some(client);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(
        third.is_some(),
        "a slot frees up after the first session ends"
    );
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn reset_session_sends_ready_again_on_the_same_socket() {
    let server = TestServer::start_default().await.expect("server starts");
    let mut client = Client::connect(&server.ws_url("/ws/realtime")).await;
    client.expect_json("ready", READY).await;
    for _ in 0..2 {
        client.send_json(json!({ "type": "reset_session" })).await;
        client.expect_json("ready", READY).await;
    }
    let metrics = http_get(&server.http_url("/metrics")).await;
    assert!(
        metrics.contains("voxgate_upstream_connects_total 3"),
        "{metrics}"
    );
    let health: serde_json::Value =
        serde_json::from_str(&http_get(&server.http_url("/health")).await).expect("JSON");
    assert_eq!(health["realtime"]["connected"], true, "{health}");
    assert_eq!(health["realtime"]["kind"], "local", "{health}");
    assert_eq!(health["realtime"]["sessions"], 1, "{health}");
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn shutdown_tells_live_sessions_and_closes_with_1001() {
    let server = TestServer::start_default().await.expect("server starts");
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(&server.ws_url("/ws/realtime")).await;
        client.expect_json("ready", READY).await;
        clients.push(client);
    }
    let shutdown = tokio::spawn(server.shutdown());
    for mut client in clients {
        let (code, _, before) = client.expect_close(READY).await;
        assert_eq!(code, 1001);
        let error = before
            .iter()
            .find(|f| f.kind() == Some("error"))
            .expect("an error before the close");
        assert!(format!("{error:?}").contains("shutting down"));
    }
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown drains in time")
        .expect("join")
        .expect("clean shutdown");
}

/// A request to a realtime WebSocket route that is no WebSocket handshake gets a JSON error naming the header at
/// fault, and 426 with `Upgrade: websocket` when it did not ask for an upgrade at all; the local engine's
/// `/v1/realtime` answers in OpenAI's error shape, with the header in `param`.
#[tokio::test]
async fn requests_that_are_no_websocket_handshake_get_json_errors() {
    let server = TestServer::start_default().await.expect("server starts");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let send = |path: &str, version: Option<&str>| {
        let mut request = client.get(server.http_url(path));
        if let Some(version) = version {
            request = request
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", version)
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        }
        request.send()
    };
    let response = send("/ws/realtime", None).await.expect("GET");
    assert_eq!(response.status(), 426);
    assert_eq!(response.headers()["upgrade"], "websocket");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["field"], "Connection", "{body}");
    let response = send("/ws/realtime", Some("8")).await.expect("GET");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.expect("JSON");
    assert_eq!(body["field"], "Sec-WebSocket-Version", "{body}");

    for (path, version, status, param) in [
        ("/v1/realtime", None, 426, "Upgrade"),
        ("/v1/realtime", Some("8"), 400, "Sec-WebSocket-Version"),
    ] {
        let response = send(path, version).await.expect("GET");
        assert_eq!(response.status(), status, "{path}");
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(body["error"]["param"], param, "{path}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn api_session_mints_a_secret_in_the_seed_shape() {
    let server = TestServer::start_default().await.expect("server starts");
    let body: serde_json::Value =
        serde_json::from_str(&http_get(&server.http_url("/api/session")).await).expect("JSON");
    assert_eq!(body["object"], "realtime.session");
    assert!(
        body["id"].as_str().unwrap_or("").starts_with("sess_"),
        "{body}"
    );
    assert_eq!(
        body["model"],
        server.state.config.voice.realtime_model.as_str()
    );
    assert_eq!(body["voice"], server.state.config.voice.voice.as_str());
    assert!(body["instructions"].is_string());
    let secret = body["client_secret"]["value"]
        .as_str()
        .expect("client_secret.value");
    assert!(secret.starts_with("ek_"), "{body}");
    let expires_at = body["client_secret"]["expires_at"]
        .as_u64()
        .expect("expires_at");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        expires_at > now && expires_at <= now + 120,
        "{expires_at} vs {now}"
    );
    assert!(server.state.voice.secrets().accepts(secret));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn idle_sessions_are_closed() {
    let server = TestServer::start_with(|c| c.voice.idle_timeout = Duration::from_millis(500))
        .await
        .expect("server starts");
    let mut client = Client::connect(&server.ws_url("/ws/realtime")).await;
    client.expect_json("ready", READY).await;
    let (code, reason, _) = client.expect_close(READY).await;
    assert_eq!((code, reason.as_str()), (1000, "idle timeout"));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_dropped() {
    let server = TestServer::start_with(|c| c.limits.ping_interval = Duration::from_millis(200))
        .await
        .expect("server starts");
    let mut client = Client::connect(&server.ws_url("/ws/realtime")).await;
    client.expect_json("ready", READY).await;
    // Not reading means not answering pings: after two unanswered pings the server lets go.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let metrics = http_get(&server.http_url("/metrics")).await;
    assert!(
        metrics.contains(r#"voxgate_active_sessions{transport="ws"} 0"#),
        "{metrics}"
    );
    drop(client);
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn api_session_asks_the_provider_for_a_client_secret() {
    use axum::Json;
    use axum::http::HeaderMap;
    use axum::routing::post;
    // A stand-in for OpenAI's `POST /v1/realtime/client_secrets` on a real socket.
    let provider = axum::Router::new().route(
        "/v1/realtime/client_secrets",
        post(|headers: HeaderMap, Json(body): Json<serde_json::Value>| async move {
            assert_eq!(headers["authorization"], "Bearer sk-test-key");
            assert_eq!(body["session"]["type"], "realtime");
            Json(json!({
                "value": "ek_from_provider",
                "expires_at": 1_900_000_000u64,
                "session": { "id": "sess_provider", "type": "realtime", "model": body["session"]["model"],
                             "tools": [] }
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, provider).await });
    let server = TestServer::start_with(move |c| {
        c.voice.realtime_url = Some(format!("ws://{addr}/v1/realtime"));
        c.voice.openai_api_key = Some(voxgate::config::Secret::new("sk-test-key"));
    })
    .await
    .expect("server starts");
    let body: serde_json::Value =
        serde_json::from_str(&http_get(&server.http_url("/api/session")).await).expect("JSON");
    assert_eq!(body["object"], "realtime.session");
    assert_eq!(body["id"], "sess_provider");
    assert_eq!(body["client_secret"]["value"], "ek_from_provider");
    assert_eq!(body["client_secret"]["expires_at"], 1_900_000_000u64);
    assert_eq!(body["voice"], "alloy");
    assert!(
        body["tools"].is_array(),
        "provider fields pass through: {body}"
    );
    server.shutdown().await.expect("clean shutdown");
}
