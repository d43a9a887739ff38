//! Barge-in and upstream faults, against the local engine's fault-injectable test server used as
//! a network upstream (`voice.realtime_url`): the gateway's real OpenAI client over real sockets.

use std::time::{Duration, Instant};

use serde_json::json;
use voxgate::config::Config;
use voxgate::testing::TestServer;
use voxgate::voice::protocol::openai::ClientEvent;
use voxgate::voice::upstream::local::LocalEngineConfig;
use voxgate::voice::upstream::local::testkit::{FaultyServer, Received};

use crate::support::{Client, FRAME_BYTES, Frame, http_get, silence, speech_pcm, summary};

const READY: Duration = Duration::from_secs(5);
const ANSWER: Duration = Duration::from_secs(20);

async fn start() -> (FaultyServer, TestServer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = FaultyServer::start(LocalEngineConfig::from_config(&Config::for_test(
        dir.path(),
    )))
    .await;
    let url = upstream.url();
    let server = TestServer::start_with(move |c| c.voice.realtime_url = Some(url))
        .await
        .expect("server starts");
    (upstream, server)
}

async fn ready_client(server: &TestServer) -> Client {
    let mut client = Client::connect(&server.ws_url("/ws/realtime")).await;
    client.expect_json("ready", READY).await;
    client
        .send_json(json!({ "type": "start_conversation" }))
        .await;
    client
}

/// Streams a question, then silence, until the first bot audio frame; returns everything received
/// and (within 20 ms) when the first audio arrived.
async fn ask_until_audio(client: &mut Client, question: &[u8]) -> (Vec<Frame>, Instant) {
    let mut received = Vec::new();
    let pause = silence(2_000);
    let deadline = Instant::now() + ANSWER;
    for frame in question
        .chunks(FRAME_BYTES)
        .chain(pause.chunks(FRAME_BYTES).cycle())
    {
        client.stream_realtime(frame, &mut received).await;
        if received.iter().any(|f| matches!(f, Frame::Audio(_))) {
            return (received, Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "no bot audio: {}",
            summary(&received)
        );
    }
    unreachable!("the silence cycles forever")
}

fn audio_samples(frames: &[Frame]) -> usize {
    frames
        .iter()
        .map(|f| {
            if let Frame::Audio(a) = f {
                a.len() / 2
            } else {
                0
            }
        })
        .sum()
}

async fn barge_in(report_playback: bool) {
    let (upstream, server) = start().await;
    let question = speech_pcm(
        server.data_dir(),
        "Please tell me a long story about the sea.",
        800,
    );
    let interruption = speech_pcm(server.data_dir(), "Stop, stop, wait a moment please.", 0);
    let mut client = ready_client(&server).await;

    let (mut received, first_audio_at) = ask_until_audio(&mut client, &question).await;
    let mut reported_ms = None;
    if report_playback {
        // Say we played half of what arrived so far.
        let samples = audio_samples(&received) / 2;
        client
            .send_json(json!({ "type": "playback", "samples_played": samples }))
            .await;
        reported_ms = Some(samples as u64 * 1_000 / 24_000);
    }
    // The user talks over the bot until the gateway interrupts it.
    let mut after = Vec::new();
    for chunk in interruption.chunks(4_800) {
        client.stream_realtime(chunk, &mut after).await;
        if after.iter().any(|f| f.kind() == Some("interrupt")) {
            break;
        }
    }
    let interrupt_at = after
        .iter()
        .position(|f| f.kind() == Some("interrupt"))
        .expect("interrupt event");
    let interrupted_at = Instant::now();
    received.extend(after.drain(..=interrupt_at));
    let heard_ms = (audio_samples(&received) * 1_000 / 24_000) as u64;
    // Silence on the socket: no new turn can start, so any audio now would be the cancelled answer.
    let mut tail = after;
    while let Some(frame) = client.next(Duration::from_millis(1_500)).await {
        tail.push(frame);
    }
    assert!(
        !tail.iter().any(|f| matches!(f, Frame::Audio(_))),
        "audio after interrupt: {}",
        summary(&tail)
    );
    assert!(
        !received
            .iter()
            .chain(&tail)
            .any(|f| f.kind() == Some("error")),
        "no error (in particular no 'already shorter than'): {} / {}",
        summary(&received),
        summary(&tail)
    );

    let truncate = upstream
        .wait_for(
            |r: &Received| matches!(r.event, ClientEvent::ConversationItemTruncate { .. }),
            READY,
        )
        .await
        .expect("the upstream received conversation.item.truncate");
    let ClientEvent::ConversationItemTruncate {
        audio_end_ms,
        content_index,
        ..
    } = truncate.event
    else {
        unreachable!("matched above")
    };
    assert_eq!(content_index, 0);
    match reported_ms {
        Some(reported) => assert_eq!(
            audio_end_ms, reported,
            "the client's playback report is exact"
        ),
        None => {
            let wall_ms = (interrupted_at - first_audio_at).as_millis() as u64;
            assert!(audio_end_ms > 0, "some audio was played");
            assert!(
                audio_end_ms <= heard_ms,
                "{audio_end_ms} ms truncation, only {heard_ms} ms sent"
            );
            assert!(
                audio_end_ms <= wall_ms + 100,
                "{audio_end_ms} ms played in {wall_ms} ms of wall time"
            );
        }
    }
    let metrics = http_get(&server.http_url("/metrics")).await;
    assert!(metrics.contains("voxgate_barge_ins_total 1"), "{metrics}");
    server.shutdown().await.expect("clean shutdown");
    upstream.shutdown().await;
}

#[tokio::test]
async fn barge_in_interrupts_and_truncates_at_the_played_position() {
    barge_in(false).await;
}

#[tokio::test]
async fn barge_in_truncates_at_the_client_playback_report() {
    barge_in(true).await;
}

#[tokio::test]
async fn upstream_drop_mid_response_reconnects_without_the_client() {
    let (upstream, server) = start().await;
    let question = speech_pcm(server.data_dir(), "What time is it?", 800);
    let mut client = ready_client(&server).await;
    upstream.close_mid_response();
    let mut received = Vec::new();
    client.stream_realtime(&question, &mut received).await;
    let deadline = Instant::now() + ANSWER;
    while !received.iter().any(|f| f.kind() == Some("error")) {
        assert!(
            Instant::now() < deadline,
            "no error: {}",
            summary(&received)
        );
        client.stream_realtime(&silence(100), &mut received).await;
    }
    let error_at = received
        .iter()
        .position(|f| f.kind() == Some("error"))
        .expect("error");
    assert!(
        format!("{:?}", received[error_at]).contains("mid-response"),
        "{:?}",
        received[error_at]
    );
    if !received[error_at..]
        .iter()
        .any(|f| f.kind() == Some("ready"))
    {
        client.expect_json("ready", READY).await;
    }
    assert_eq!(upstream.connections(), 2);

    // The same socket goes on: a new question gets a full answer.
    let mut received = Vec::new();
    client.stream_realtime(&question, &mut received).await;
    client.stream_realtime(&silence(300), &mut received).await;
    let (_, rest) = client.expect_json("bot_audio_end", ANSWER).await;
    received.extend(rest);
    assert!(audio_samples(&received) > 0, "{}", summary(&received));
    let metrics = http_get(&server.http_url("/metrics")).await;
    assert!(
        metrics.contains("voxgate_upstream_reconnects_total 1"),
        "{metrics}"
    );
    server.shutdown().await.expect("clean shutdown");
    upstream.shutdown().await;
}

#[tokio::test]
async fn session_expired_rolls_over_without_the_client_noticing() {
    let (upstream, server) = start().await;
    let question = speech_pcm(server.data_dir(), "Hello, who are you?", 800);
    let mut client = ready_client(&server).await;
    let mut received = Vec::new();
    client.stream_realtime(&question, &mut received).await;
    client.stream_realtime(&silence(300), &mut received).await;
    client.expect_json("bot_audio_end", ANSWER).await;
    // Let the answer's transcript land in the history.
    while client.next(Duration::from_millis(500)).await.is_some() {}

    upstream.expire_session();
    let mut quiet = Vec::new();
    while let Some(frame) = client.next(Duration::from_millis(1_500)).await {
        quiet.push(frame);
    }
    assert!(
        !quiet
            .iter()
            .any(|f| matches!(f.kind(), Some("error" | "ready"))),
        "the client must not notice the rollover: {}",
        summary(&quiet)
    );
    let replayed = upstream
        .wait_for(
            |r: &Received| {
                r.conn > 0 && matches!(r.event, ClientEvent::ConversationItemCreate { .. })
            },
            READY,
        )
        .await;
    assert!(
        replayed.is_some(),
        "the history is replayed on the fresh session"
    );
    assert_eq!(upstream.connections(), 2);

    let mut received = Vec::new();
    client.stream_realtime(&question, &mut received).await;
    client.stream_realtime(&silence(300), &mut received).await;
    client.expect_json("bot_audio_end", ANSWER).await;
    server.shutdown().await.expect("clean shutdown");
    upstream.shutdown().await;
}

#[tokio::test]
async fn refused_credentials_stop_the_retries() {
    let (upstream, server) = start().await;
    upstream.reject_handshakes(401);
    let mut client = Client::connect(&server.ws_url("/ws/realtime")).await;
    let (code, _, before) = client.expect_close(READY).await;
    assert_eq!(code, 1011);
    let error = before
        .iter()
        .find(|f| f.kind() == Some("error"))
        .expect("error before close");
    assert!(format!("{error:?}").contains("401"), "{error:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        upstream.connections(),
        0,
        "no retry after an authentication failure"
    );
    server.shutdown().await.expect("clean shutdown");
    upstream.shutdown().await;
}

#[tokio::test]
async fn fatal_upstream_error_closes_and_other_errors_do_not() {
    let (upstream, server) = start().await;
    let mut client = ready_client(&server).await;
    upstream.send_error("server_error", "the model hiccuped");
    let (error, _) = client.expect_json("error", READY).await;
    assert!(
        error["message"].as_str().unwrap_or("").contains("hiccuped"),
        "{error}"
    );
    client.send_json(json!({ "type": "reset_session" })).await;
    client.expect_json("ready", READY).await;

    upstream.send_error("invalid_api_key", "Incorrect API key provided");
    let (code, _, before) = client.expect_close(READY).await;
    assert_eq!(code, 1011);
    assert!(
        before.iter().any(|f| f.kind() == Some("error")),
        "{}",
        summary(&before)
    );
    let connections = upstream.connections();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        upstream.connections(),
        connections,
        "no reconnect after a fatal error"
    );
    server.shutdown().await.expect("clean shutdown");
    upstream.shutdown().await;
}

#[tokio::test]
async fn append_batching_sends_every_byte_in_fewer_larger_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let upstream = FaultyServer::start(LocalEngineConfig::from_config(&Config::for_test(
        dir.path(),
    )))
    .await;
    let url = upstream.url();
    let server = TestServer::start_with(move |c| {
        c.voice.realtime_url = Some(url);
        c.voice.append_batch_ms = 100;
    })
    .await
    .expect("server starts");
    let mut client = ready_client(&server).await;
    // One second of quiet, distinct samples, so lost, reordered or duplicated bytes would show.
    let sent: Vec<u8> = (0..24_000u32)
        .flat_map(|i| ((i % 97) as i16 - 48).to_le_bytes())
        .collect();
    let mut received = Vec::new();
    for frame in sent.chunks(FRAME_BYTES) {
        client.stream_realtime(frame, &mut received).await;
    }
    let appended = |events: &[Received]| -> Vec<Vec<u8>> {
        events
            .iter()
            .filter_map(|r| match &r.event {
                ClientEvent::InputAudioBufferAppend { audio, .. } => {
                    Some(voxgate_dsp::b64::decode(audio).expect("valid base64"))
                }
                _ => None,
            })
            .collect()
    };
    // The last partial batch goes out when its 100 ms are up.
    let total = sent.len();
    let all_in = upstream
        .wait_for(
            |_| {
                appended(&upstream.received())
                    .iter()
                    .map(Vec::len)
                    .sum::<usize>()
                    >= total
            },
            READY,
        )
        .await;
    assert!(all_in.is_some(), "not every byte reached the upstream");
    let appends = appended(&upstream.received());
    assert_eq!(
        appends.concat(),
        sent,
        "bytes lost, reordered or duplicated"
    );
    // 50 frames of 20 ms in batches of about 100 ms: about ten appends, never one per frame.
    assert!(
        (8..=15).contains(&appends.len()),
        "{} appends for 50 frames",
        appends.len()
    );
    server.shutdown().await.expect("clean shutdown");
    upstream.shutdown().await;
}
