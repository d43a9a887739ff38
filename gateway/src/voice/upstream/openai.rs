//! The client side of the OpenAI Realtime protocol over WebSocket.
//!
//! One code path for every upstream: `wss://api.openai.com/v1/realtime?model=…` with a bearer key,
//! any compatible `ws://`/`wss://` URL, or the built-in local engine reached in-process through an
//! in-memory duplex (the engine runs the server side of the same WebSocket handshake on it). The
//! session actor owns an [`UpstreamConnection`] and turns what it reads into
//! [`ModelEvent`]s with [`Decoded`]; it never sees JSON.
//!
//! The connection is generic over its message transport ([`UpstreamWs`]): a tokio-tungstenite
//! stream over TCP/TLS for the network, or over an in-memory duplex for the local engine. Either
//! way the same framing, the same events and this same code run.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::task::TaskTracker;

use super::BoxedIo;
use crate::config::{Config, Secret, TurnDetection as ConfigTurnDetection};
use crate::net::{self, ArrivalClock, GATEWAY_STAMP_EVERY, StampedTcp};
use crate::voice::protocol::openai::{
    self, AudioConfig, AudioDeltaIds, AudioInput, AudioOutput, ClientEvent, InputTranscription,
    Item, Modality, ServerEvent, Session, TurnDetection,
};
use crate::voice::session::core::{ModelEvent, Role, UpstreamCommand};

/// Opens an in-process connection to the built-in engine: the client end of a WebSocket over an
/// in-memory duplex. The engine's side is spawned on the given tracker.
pub type InProcessDialer = Arc<dyn Fn(&TaskTracker) -> Box<dyn UpstreamWs> + Send + Sync>;

/// A WebSocket message transport: what every upstream connection runs over.
pub trait UpstreamWs:
    Stream<Item = Result<Message, tungstenite::Error>>
    + Sink<Message, Error = tungstenite::Error>
    + Send
    + Unpin
{
}

impl<T> UpstreamWs for T where
    T: Stream<Item = Result<Message, tungstenite::Error>>
        + Sink<Message, Error = tungstenite::Error>
        + Send
        + Unpin
{
}

/// Where the upstream lives.
#[derive(Clone)]
pub enum Target {
    /// A network endpoint (`ws://` or `wss://`), with the model in the query string.
    Remote {
        /// Full URL including `?model=…`.
        url: String,
        /// Bearer key, if the endpoint needs one.
        api_key: Option<Secret>,
    },
    /// The built-in engine in this process.
    InProcess(InProcessDialer),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Remote { url, .. } => f
                .debug_struct("Remote")
                .field("url", url)
                .finish_non_exhaustive(),
            Target::InProcess(_) => f.write_str("InProcess"),
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The upstream refused our credentials: retrying cannot help.
    #[error("upstream refused the credentials (HTTP {status})")]
    Unauthorized {
        /// The handshake's HTTP status.
        status: u16,
    },
    /// The handshake got an HTTP answer other than 101.
    #[error("upstream answered the handshake with HTTP {status}")]
    Status {
        /// The HTTP status.
        status: u16,
    },
    /// The URL cannot be used.
    #[error("invalid upstream URL: {0}")]
    InvalidUrl(String),
    /// TCP, TLS or WebSocket failure.
    #[error("upstream connection failed: {0}")]
    Transport(String),
    /// The connect deadline passed.
    #[error("upstream connection timed out after {0:?}")]
    Timeout(Duration),
}

impl ConnectError {
    /// True when no retry can succeed.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ConnectError::Unauthorized { .. } | ConnectError::InvalidUrl(_)
        )
    }
}

/// The upstream endpoint and the session we ask it for.
#[derive(Debug)]
pub struct UpstreamClient {
    target: Target,
    connect_timeout: Duration,
    ws_config: WebSocketConfig,
    /// The `session.update` event, rendered once.
    session_update: String,
}

/// The URL the gateway dials for the configured realtime endpoint: `?model=` added if missing.
pub fn realtime_url(base: &str, model: &str) -> String {
    if base.contains("model=") {
        base.to_owned()
    } else {
        let separator = if base.contains('?') { '&' } else { '?' };
        format!("{base}{separator}model={model}")
    }
}

/// The GA `session.update` the gateway sends after connecting.
pub fn session_update(config: &Config) -> ClientEvent {
    let voice = &config.voice;
    let turn_detection = match voice.turn_detection {
        ConfigTurnDetection::ServerVad => Some(TurnDetection::server_vad_default()),
        ConfigTurnDetection::SemanticVad => Some(TurnDetection::SemanticVad {
            eagerness: None,
            create_response: Some(true),
            interrupt_response: Some(true),
        }),
        ConfigTurnDetection::None => None,
    };
    ClientEvent::SessionUpdate {
        event_id: None,
        session: Session {
            kind: Some("realtime".to_owned()),
            model: Some(voice.realtime_model.clone()),
            output_modalities: Some(vec![Modality::Audio]),
            instructions: Some(voice.instructions.clone()),
            audio: Some(AudioConfig {
                input: Some(AudioInput {
                    format: Some(openai::AudioFormat::PCM24K),
                    transcription: Some(Some(InputTranscription {
                        model: Some("gpt-4o-mini-transcribe".to_owned()),
                        ..InputTranscription::default()
                    })),
                    turn_detection: Some(turn_detection),
                    noise_reduction: None,
                }),
                output: Some(AudioOutput {
                    format: Some(openai::AudioFormat::PCM24K),
                    voice: Some(voice.voice.clone()),
                    speed: None,
                }),
            }),
            ..Session::default()
        },
    }
}

impl UpstreamClient {
    /// A client for `target` with the limits and session of `config`.
    pub fn new(config: &Config, target: Target) -> Self {
        let ws_config = crate::http::ws::upstream_config(&config.limits);
        UpstreamClient {
            target,
            connect_timeout: config.voice.upstream_connect_timeout,
            ws_config,
            session_update: session_update(config).to_json(),
        }
    }

    /// Opens one upstream connection (TCP/TLS/duplex + WebSocket handshake), within the timeout.
    ///
    /// # Errors
    /// [`ConnectError`]; [`ConnectError::is_fatal`] tells whether to retry.
    pub async fn connect(&self, tasks: &TaskTracker) -> Result<UpstreamConnection, ConnectError> {
        match tokio::time::timeout(self.connect_timeout, self.connect_inner(tasks)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectError::Timeout(self.connect_timeout)),
        }
    }

    async fn connect_inner(&self, tasks: &TaskTracker) -> Result<UpstreamConnection, ConnectError> {
        let (url, api_key, io, arrivals): (&str, Option<&Secret>, BoxedIo, _) = match &self.target {
            Target::InProcess(dial) => {
                return Ok(UpstreamConnection {
                    ws: dial(tasks),
                    session_update: self.session_update.clone(),
                    arrivals: None,
                });
            }
            Target::Remote { url, api_key } => {
                let parsed =
                    url::Url::parse(url).map_err(|e| ConnectError::InvalidUrl(e.to_string()))?;
                let default_port = match parsed.scheme() {
                    "ws" => 80,
                    "wss" => 443,
                    other => {
                        return Err(ConnectError::InvalidUrl(format!(
                            "scheme {other} is not ws or wss"
                        )));
                    }
                };
                let host = parsed
                    .host_str()
                    .ok_or_else(|| ConnectError::InvalidUrl("no host".to_owned()))?
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let port = parsed.port().unwrap_or(default_port);
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                    .await
                    .map_err(|e| ConnectError::Transport(e.to_string()))?;
                // Audio frames are small and latency-bound: never wait for Nagle.
                let _ = tcp.set_nodelay(true);
                let tcp = StampedTcp::sampled(tcp, GATEWAY_STAMP_EVERY);
                let arrivals = tcp.clock();
                (
                    url.as_str(),
                    api_key.as_ref(),
                    Box::new(tcp),
                    Some(arrivals),
                )
            }
        };
        let mut request = url
            .into_client_request()
            .map_err(|e| ConnectError::InvalidUrl(e.to_string()))?;
        if let Some(key) = api_key {
            let value =
                HeaderValue::from_str(&format!("Bearer {}", key.expose())).map_err(|_| {
                    ConnectError::InvalidUrl("API key is not a valid header value".to_owned())
                })?;
            request.headers_mut().insert("Authorization", value);
        }
        let (ws, _response) = tokio_tungstenite::client_async_tls_with_config(
            request,
            io,
            Some(self.ws_config),
            None,
        )
        .await
        .map_err(classify_handshake_error)?;
        Ok(UpstreamConnection {
            ws: Box::new(ws),
            session_update: self.session_update.clone(),
            arrivals,
        })
    }
}

fn classify_handshake_error(error: tungstenite::Error) -> ConnectError {
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                ConnectError::Unauthorized {
                    status: status.as_u16(),
                }
            } else {
                ConnectError::Status {
                    status: status.as_u16(),
                }
            }
        }
        tungstenite::Error::Url(error) => ConnectError::InvalidUrl(error.to_string()),
        other => ConnectError::Transport(other.to_string()),
    }
}

/// One open upstream WebSocket.
pub struct UpstreamConnection {
    ws: Box<dyn UpstreamWs>,
    session_update: String,
    /// When the kernel received what the socket's last read returned; `None` in process (no socket).
    arrivals: Option<ArrivalClock>,
}

impl std::fmt::Debug for UpstreamConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConnection").finish_non_exhaustive()
    }
}

/// What the upstream sent, as the actor needs it.
#[derive(Debug)]
pub enum Incoming {
    /// A text event.
    Text(tungstenite::Utf8Bytes),
    /// Ping, pong or an unexpected binary frame: proof of life, nothing to decide.
    Other,
    /// The connection ended; the reason is for logs.
    Closed(String),
}

impl UpstreamConnection {
    /// When the kernel received the message [`Self::recv`] returned last (`None`: that read was not dated);
    /// now for an in-process upstream, which has no socket to wait in.
    pub fn arrived_at(&self) -> Option<std::time::Instant> {
        net::arrival(self.arrivals.as_ref())
    }

    /// Sends one command.
    ///
    /// # Errors
    /// The socket failed; the connection is dead.
    pub async fn send(&mut self, command: &UpstreamCommand) -> Result<(), tungstenite::Error> {
        let text = match command {
            UpstreamCommand::SessionUpdate => self.session_update.clone(),
            UpstreamCommand::Append(pcm) => {
                let mut text = String::new();
                openai::write_append_event(&mut text, pcm);
                text
            }
            UpstreamCommand::Commit => r#"{"type":"input_audio_buffer.commit"}"#.to_owned(),
            UpstreamCommand::ResponseCreate => r#"{"type":"response.create"}"#.to_owned(),
            UpstreamCommand::ResponseCancel { response_id } => ClientEvent::ResponseCancel {
                event_id: None,
                response_id: Some(response_id.clone()),
            }
            .to_json(),
            UpstreamCommand::Truncate {
                item_id,
                audio_end_ms,
            } => ClientEvent::ConversationItemTruncate {
                event_id: None,
                item_id: item_id.clone(),
                content_index: 0,
                audio_end_ms: *audio_end_ms,
            }
            .to_json(),
            UpstreamCommand::CreateItem { role, text } => ClientEvent::ConversationItemCreate {
                event_id: None,
                previous_item_id: None,
                item: match role {
                    Role::User => Item::user_text(text.clone()),
                    Role::Assistant => Item::assistant_text(text.clone()),
                },
            }
            .to_json(),
        };
        self.ws.send(Message::text(text)).await
    }

    /// Sends a keepalive ping.
    ///
    /// # Errors
    /// The socket failed.
    pub async fn ping(&mut self) -> Result<(), tungstenite::Error> {
        self.ws.send(Message::Ping(Bytes::new())).await
    }

    /// Waits for the next message. Cancel-safe.
    pub async fn recv(&mut self) -> Incoming {
        match self.ws.next().await {
            Some(Ok(Message::Text(text))) => Incoming::Text(text),
            Some(Ok(Message::Close(frame))) => Incoming::Closed(match frame {
                Some(frame) => format!(
                    "upstream closed with code {}: {}",
                    u16::from(frame.code),
                    frame.reason
                ),
                None => "upstream closed".to_owned(),
            }),
            Some(Ok(_)) => Incoming::Other,
            Some(Err(error)) => Incoming::Closed(format!("upstream socket error: {error}")),
            None => Incoming::Closed("upstream connection ended".to_owned()),
        }
    }

    /// Sends a close frame, waiting at most `timeout`. Best effort: the connection is dropped after.
    pub async fn close(mut self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.ws.close()).await;
    }
}

/// An upstream text event, decoded; [`Decoded::event`] borrows from it.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// Audio on the hot path: ids borrowed from the text, PCM decoded.
    Audio {
        /// The delta's ids.
        ids: AudioDeltaIds<'a>,
        /// PCM16 24 kHz.
        pcm: Bytes,
    },
    /// Any other event.
    Event(Box<ServerEvent>),
    /// Not a valid event; logged and skipped.
    Malformed(String),
}

impl<'a> Decoded<'a> {
    /// Decodes one upstream text frame.
    pub fn parse(text: &'a str) -> Self {
        // The decoder reserves the exact decoded length, so this allocates once, and only for audio.
        let mut pcm = Vec::new();
        match openai::decode_output_audio_delta(text, &mut pcm) {
            Ok(Some(ids)) => Decoded::Audio {
                ids,
                pcm: Bytes::from(pcm),
            },
            Ok(None) => match ServerEvent::from_json(text) {
                Ok(ServerEvent::OutputAudioDelta {
                    response_id,
                    item_id,
                    delta,
                    ..
                }) => {
                    // Escaped ids defeat the fast path; decode the slow way.
                    match voxgate_dsp::b64::decode(&delta) {
                        Ok(pcm) => Decoded::Audio {
                            ids: AudioDeltaIds {
                                event_id: None,
                                response_id: response_id.into(),
                                item_id: item_id.into(),
                                output_index: 0,
                                content_index: 0,
                            },
                            pcm: Bytes::from(pcm),
                        },
                        Err(error) => Decoded::Malformed(error.to_string()),
                    }
                }
                Ok(event) => Decoded::Event(Box::new(event)),
                Err(error) => Decoded::Malformed(error.to_string()),
            },
            Err(error) => Decoded::Malformed(error.to_string()),
        }
    }

    /// The event as the session core sees it.
    pub fn event(&self) -> ModelEvent<'_> {
        match self {
            Decoded::Audio { ids, pcm } => ModelEvent::AudioDelta {
                response_id: &ids.response_id,
                item_id: &ids.item_id,
                pcm: pcm.clone(),
            },
            Decoded::Malformed(_) => ModelEvent::Other,
            Decoded::Event(event) => match event.as_ref() {
                ServerEvent::Error { error, .. } => ModelEvent::Error {
                    kind: Some(error.kind.as_str()).filter(|k| !k.is_empty()),
                    code: error.code.as_deref(),
                    message: &error.message,
                },
                ServerEvent::SessionCreated { .. } => ModelEvent::SessionCreated,
                ServerEvent::SessionUpdated { .. } => ModelEvent::SessionUpdated,
                ServerEvent::SpeechStarted { .. } => ModelEvent::SpeechStarted,
                ServerEvent::SpeechStopped { .. } => ModelEvent::SpeechStopped,
                ServerEvent::ResponseCreated { response, .. } => ModelEvent::ResponseCreated {
                    response_id: &response.id,
                },
                ServerEvent::OutputAudioDone { response_id, .. } => {
                    ModelEvent::AudioDone { response_id }
                }
                ServerEvent::OutputAudioTranscriptDelta {
                    response_id, delta, ..
                } => ModelEvent::TranscriptDelta { response_id, delta },
                ServerEvent::OutputAudioTranscriptDone {
                    response_id,
                    transcript,
                    ..
                } => ModelEvent::TranscriptDone {
                    response_id,
                    transcript,
                },
                ServerEvent::InputAudioTranscriptionCompleted { transcript, .. } => {
                    ModelEvent::UserTranscript { transcript }
                }
                ServerEvent::ResponseDone { response, .. } => ModelEvent::ResponseDone {
                    response_id: &response.id,
                    usage: response.usage,
                },
                _ => ModelEvent::Other,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_model_to_the_url() {
        assert_eq!(
            realtime_url("wss://api.openai.com/v1/realtime", "gpt-realtime"),
            "wss://api.openai.com/v1/realtime?model=gpt-realtime"
        );
        assert_eq!(
            realtime_url("ws://h/v1/realtime?x=1", "m"),
            "ws://h/v1/realtime?x=1&model=m"
        );
        assert_eq!(
            realtime_url("ws://h/v1/realtime?model=a", "m"),
            "ws://h/v1/realtime?model=a"
        );
    }

    #[test]
    fn decodes_audio_and_control_events() {
        let text = r#"{"type":"response.output_audio.delta","response_id":"resp_1","item_id":"item_1","output_index":0,"content_index":0,"delta":"AAEAAg=="}"#;
        let decoded = Decoded::parse(text);
        match decoded.event() {
            ModelEvent::AudioDelta {
                response_id,
                item_id,
                pcm,
            } => {
                assert_eq!((response_id, item_id), ("resp_1", "item_1"));
                assert_eq!(&pcm[..], &[0, 1, 0, 2]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let beta = r#"{"type":"response.audio_transcript.delta","response_id":"r","item_id":"i","delta":"bon"}"#;
        assert_eq!(
            Decoded::parse(beta).event(),
            ModelEvent::TranscriptDelta {
                response_id: "r",
                delta: "bon"
            }
        );
        let error = r#"{"type":"error","error":{"type":"invalid_request_error","code":"session_expired","message":"gone"}}"#;
        assert_eq!(
            Decoded::parse(error).event(),
            ModelEvent::Error {
                kind: Some("invalid_request_error"),
                code: Some("session_expired"),
                message: "gone"
            }
        );
        assert_eq!(Decoded::parse("{nope").event(), ModelEvent::Other);
    }
}
