//! The built-in engine's own protocol, tested as any OpenAI Realtime client would use it: a raw
//! tokio-tungstenite client against `/v1/realtime` on the real server.

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voxgate::config::{LocalEngineMode, Secret};
use voxgate::testing::TestServer;
use voxgate::voice::protocol::openai::{self, ServerEvent};

use crate::support::{http_get, speech_pcm};

const KEY: &str = "sk-engine-test";
const STEP: Duration = Duration::from_secs(5);

async fn server(mode: LocalEngineMode) -> TestServer {
    TestServer::start_with(move |c| {
        c.voice.local_engine_mode = mode;
        c.voice.openai_api_key = Some(Secret::new(KEY));
    })
    .await
    .expect("server starts")
}

/// A raw Realtime client.
struct Rt {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

async fn connect(server: &TestServer, token: Option<&str>) -> Result<Rt, tungstenite::Error> {
    let mut request = server
        .ws_url("/v1/realtime?model=gpt-realtime")
        .into_client_request()?;
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
        request.headers_mut().insert("authorization", value);
    }
    let (ws, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(Rt { ws })
}

impl Rt {
    async fn send(&mut self, event: Value) {
        self.ws
            .send(Message::text(event.to_string()))
            .await
            .expect("send");
    }

    async fn append(&mut self, pcm: &[u8]) {
        let mut text = String::new();
        openai::write_append_event(&mut text, pcm);
        self.ws
            .send(Message::text(text))
            .await
            .expect("send append");
    }

    /// The next server event within `timeout`; `None` on timeout.
    async fn next(&mut self, timeout: Duration) -> Option<(ServerEvent, Instant)> {
        loop {
            match tokio::time::timeout(timeout, self.ws.next()).await.ok()?? {
                Ok(Message::Text(text)) => {
                    let event =
                        ServerEvent::from_json(text.as_str()).expect("server events are JSON");
                    return Some((event, Instant::now()));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Events until one of `kind` (inclusive).
    async fn until(&mut self, kind: &str, timeout: Duration) -> Vec<(ServerEvent, Instant)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(event) => {
                    let done = event.0.kind() == kind;
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
                None => panic!("no {kind} within {timeout:?}; got {:?}", kinds(&seen)),
            }
        }
    }

    /// Streams `pcm` as 20 ms appends at real-time pace, collecting events meanwhile.
    async fn stream(&mut self, pcm: &[u8], seen: &mut Vec<(ServerEvent, Instant)>) {
        let start = tokio::time::Instant::now();
        for (i, frame) in pcm.chunks(960).enumerate() {
            self.append(frame).await;
            let due = start + Duration::from_millis(20 * (i as u64 + 1));
            while let Some(left) = due.checked_duration_since(tokio::time::Instant::now()) {
                match self.next(left).await {
                    Some(event) => seen.push(event),
                    None => break,
                }
            }
        }
    }
}

fn kinds(events: &[(ServerEvent, Instant)]) -> Vec<&str> {
    events
        .iter()
        .map(|(e, _)| e.kind())
        .filter(|k| !k.ends_with("delta"))
        .collect()
}

fn audio_bytes(events: &[(ServerEvent, Instant)]) -> usize {
    events
        .iter()
        .map(|(e, _)| match e {
            ServerEvent::OutputAudioDelta { delta, .. } => {
                voxgate_dsp::b64::decode(delta).expect("base64").len()
            }
            _ => 0,
        })
        .sum()
}

/// Turns detection off so the test drives the turn: append, commit, response.create.
async fn manual_turn(rt: &mut Rt, ms: usize) -> Vec<(ServerEvent, Instant)> {
    rt.send(json!({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {"turn_detection": null}}}}))
        .await;
    rt.until("session.updated", STEP).await;
    rt.append(&vec![0u8; ms * 48]).await;
    rt.send(json!({"type": "input_audio_buffer.commit"})).await;
    rt.send(json!({"type": "response.create"})).await;
    rt.until("response.output_audio.delta", STEP).await
}

#[tokio::test]
async fn session_created_then_updated() {
    let server = server(LocalEngineMode::Voice).await;
    let mut rt = connect(&server, Some(KEY))
        .await
        .expect("connects with the key");
    let (created, _) = rt.next(STEP).await.expect("session.created");
    let ServerEvent::SessionCreated { session, .. } = created else {
        panic!("{created:?}")
    };
    assert_eq!(session.kind.as_deref(), Some("realtime"));
    assert_eq!(session.model.as_deref(), Some("gpt-realtime"));
    assert!(
        session
            .id
            .as_deref()
            .is_some_and(|id| id.starts_with("sess_"))
    );

    rt.send(json!({"type": "session.update", "event_id": "u1", "session": {
        "type": "realtime", "instructions": "Be brief.",
        "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
                  "input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}}}))
        .await;
    let (updated, _) = rt.next(STEP).await.expect("session.updated");
    let ServerEvent::SessionUpdated { session, .. } = updated else {
        panic!("{updated:?}")
    };
    assert_eq!(session.output_format(), Some(openai::AudioFormat::Pcmu));
    assert_eq!(session.voice(), Some("marin"));
    assert_eq!(session.instructions.as_deref(), Some("Be brief."));

    // Bad input gets an error and the session goes on.
    rt.send(json!({"type": "no.such.event"})).await;
    let (error, _) = rt.next(STEP).await.expect("error");
    assert_eq!(error.kind(), "error");
    rt.ws.send(Message::text("{not json")).await.expect("send");
    assert_eq!(rt.next(STEP).await.expect("error").0.kind(), "error");
    rt.send(json!({"type": "input_audio_buffer.clear"})).await;
    assert_eq!(
        rt.next(STEP).await.expect("cleared").0.kind(),
        "input_audio_buffer.cleared"
    );
}

#[tokio::test]
async fn tokens_are_checked() {
    let server = server(LocalEngineMode::Voice).await;
    let refused = |result: Result<Rt, tungstenite::Error>| match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connected without a valid token"),
    };
    assert_eq!(refused(connect(&server, None).await), 401);
    assert_eq!(refused(connect(&server, Some("sk-wrong")).await), 401);
    // An ephemeral secret minted by GET /api/session is accepted.
    let session: Value =
        serde_json::from_str(&http_get(&server.http_url("/api/session")).await).expect("JSON");
    let secret = session["client_secret"]["value"]
        .as_str()
        .expect("a minted secret")
        .to_owned();
    let mut rt = connect(&server, Some(&secret))
        .await
        .expect("minted secret accepted");
    assert_eq!(
        rt.next(STEP).await.expect("session.created").0.kind(),
        "session.created"
    );
}

#[tokio::test]
async fn speech_in_gives_the_full_sequence_and_a_reply_of_the_right_length() {
    let server = server(LocalEngineMode::Voice).await;
    let speech = speech_pcm(server.data_dir(), "Hello there, can you hear me?", 0);
    let mut rt = connect(&server, Some(KEY)).await.expect("connects");
    rt.until("session.created", STEP).await;

    let mut seen = Vec::new();
    rt.stream(&speech, &mut seen).await;
    // Silence until the reply is over, like an open microphone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|(e, _)| e.kind() == "response.done") {
        assert!(
            Instant::now() < deadline,
            "no response.done: {:?}",
            kinds(&seen)
        );
        rt.stream(&vec![0u8; 960 * 5], &mut seen).await;
    }
    assert_eq!(
        kinds(&seen),
        [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "response.created",
            "response.output_item.added",
            "conversation.item.added",
            "response.content_part.added",
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "response.output_item.done",
            "conversation.item.done",
            "response.done",
        ]
    );
    let (started, stopped) = match (&seen[0].0, &seen[1].0) {
        (
            ServerEvent::SpeechStarted { audio_start_ms, .. },
            ServerEvent::SpeechStopped { audio_end_ms, .. },
        ) => (*audio_start_ms, *audio_end_ms),
        other => panic!("{other:?}"),
    };
    let spoken_ms = speech.len() as u64 / 48;
    assert!(
        started < 500 && stopped > spoken_ms / 2 && stopped <= spoken_ms + 800,
        "{started}..{stopped} of {spoken_ms}"
    );

    let transcript = seen
        .iter()
        .find_map(|(e, _)| match e {
            ServerEvent::OutputAudioTranscriptDone { transcript, .. } => Some(transcript.clone()),
            _ => None,
        })
        .expect("transcript");
    assert!(
        transcript.starts_with("I heard about ") && transcript.ends_with(" seconds of audio."),
        "{transcript}"
    );
    let deltas: String = seen
        .iter()
        .filter_map(|(e, _)| match e {
            ServerEvent::OutputAudioTranscriptDelta { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, transcript);

    // The audio is the reply spoken by espeak-ng, resampled to 24 kHz: same length.
    let reply = speech_pcm(server.data_dir(), &transcript, 0);
    let got = audio_bytes(&seen);
    let want = reply.len();
    assert!(
        got.abs_diff(want) <= want / 50,
        "reply audio {got} bytes, espeak says {want}"
    );
    // ... paced like playback: the deltas span the clip's duration minus the 200 ms head start
    // (exact timing is unit-tested with a virtual clock; this machine is shared, hence the slack).
    let times: Vec<Instant> = seen
        .iter()
        .filter(|(e, _)| e.kind() == "response.output_audio.delta")
        .map(|(_, t)| *t)
        .collect();
    let span = *times.last().expect("deltas") - times[0];
    let duration = Duration::from_millis(got as u64 / 48);
    assert!(
        span + Duration::from_millis(600) >= duration,
        "sent {duration:?} of audio in {span:?}"
    );
    assert!(
        span <= duration + Duration::from_millis(500),
        "too slow: {duration:?} in {span:?}"
    );
    let ServerEvent::ResponseDone { response, .. } = &seen.last().expect("done").0 else {
        unreachable!()
    };
    assert_eq!(response.status, openai::ResponseStatus::Completed);
    assert!(
        response
            .usage
            .is_some_and(|u| u.output_token_details.audio_tokens > 0)
    );
}

#[tokio::test]
async fn cancel_mid_response_stops_the_audio() {
    let server = server(LocalEngineMode::Voice).await;
    let mut rt = connect(&server, Some(KEY)).await.expect("connects");
    rt.until("session.created", STEP).await;
    let first = manual_turn(&mut rt, 2_000).await;
    let ServerEvent::OutputAudioDelta { response_id, .. } = &first.last().expect("delta").0 else {
        unreachable!()
    };
    rt.send(json!({"type": "response.cancel", "response_id": response_id}))
        .await;
    let rest = rt.until("response.done", STEP).await;
    let ServerEvent::ResponseDone { response, .. } = &rest.last().expect("done").0 else {
        unreachable!()
    };
    assert_eq!(response.status, openai::ResponseStatus::Cancelled);
    // Nothing more for that response, even after waiting longer than the reply would last.
    let mut after = Vec::new();
    while let Some(event) = rt.next(Duration::from_millis(2_500)).await {
        after.push(event);
    }
    assert!(
        after
            .iter()
            .all(|(e, _)| !e.kind().starts_with("response.")),
        "{:?}",
        kinds(&after)
    );
}

#[tokio::test]
async fn truncate_past_the_produced_audio_is_refused() {
    let server = server(LocalEngineMode::Voice).await;
    let mut rt = connect(&server, Some(KEY)).await.expect("connects");
    rt.until("session.created", STEP).await;
    let mut seen = manual_turn(&mut rt, 1_000).await;
    let ServerEvent::OutputAudioDelta { item_id, .. } = &seen.last().expect("delta").0 else {
        unreachable!()
    };
    let item_id = item_id.clone();
    rt.send(json!({"type": "response.cancel"})).await;
    seen.extend(rt.until("response.done", STEP).await);
    let produced_ms = audio_bytes(&seen) as u64 / 48;

    let truncate = |ms: u64| json!({"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": ms});
    rt.send(truncate(produced_ms + 500)).await;
    let (error, _) = rt.next(STEP).await.expect("error");
    let ServerEvent::Error { error, .. } = error else {
        panic!("{error:?}")
    };
    assert_eq!(
        error.message,
        format!(
            "Audio content of {produced_ms}ms is already shorter than {}ms",
            produced_ms + 500
        )
    );
    rt.send(truncate(produced_ms)).await;
    let (truncated, _) = rt.next(STEP).await.expect("truncated");
    assert!(
        matches!(truncated, ServerEvent::ConversationItemTruncated { audio_end_ms, .. } if audio_end_ms == produced_ms),
        "{truncated:?}"
    );
}

#[tokio::test]
async fn echo_mode_returns_audio_byte_for_byte() {
    let server = server(LocalEngineMode::Echo).await;
    let mut rt = connect(&server, Some(KEY)).await.expect("connects");
    rt.until("session.created", STEP).await;
    let mut state = 0x1234_5678u32;
    for _ in 0..20 {
        let frame: Vec<u8> = (0..960)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        rt.append(&frame).await;
        let event = loop {
            let (event, _) = rt.next(STEP).await.expect("echo");
            if event.kind() == "response.output_audio.delta" {
                break event;
            }
        };
        let ServerEvent::OutputAudioDelta { delta, .. } = event else {
            unreachable!()
        };
        assert_eq!(voxgate_dsp::b64::decode(&delta).expect("base64"), frame);
    }
}
