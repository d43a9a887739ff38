//! The OKTI client dialect of `WS /ws/realtime` (seed 002), sans-IO.
//!
//! Text frames carry JSON control messages tagged by `type`; binary frames carry audio. This module
//! turns client text into [`ClientMessage`], checks binary frames against the negotiated
//! [`AudioFormat`], and renders [`ServerMessage`] as JSON. It knows no socket and no clock.
//!
//! Seed messages: `start_conversation`, `user_audio_end`, `reset_session` (client) and `ready`,
//! `bot_audio_end`, `transcript_delta`, `error` (server). Additive extensions, all documented in
//! `docs/realtime-protocol.md`: `start_conversation.format` / `output_format`, the client's
//! `playback` report, and the server's `interrupt` and `user_transcript`.

use serde::Deserialize;
use std::fmt::Write as _;

/// The sample rate of the seed format (PCM16 24 kHz mono) and of what the upstream speaks.
pub const SEED_SAMPLE_RATE: u32 = 24_000;

/// An audio encoding the client may choose for either direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    /// Signed 16-bit little-endian PCM, mono, at `rate` Hz (8000, 16000, 24000 or 48000).
    Pcm16 {
        /// Samples per second.
        rate: u32,
    },
    /// G.711 mu-law, 8 kHz mono, one byte per sample.
    Pcmu,
    /// G.711 A-law, 8 kHz mono, one byte per sample.
    Pcma,
}

impl Default for AudioFormat {
    /// The seed format: PCM16 at 24 kHz.
    fn default() -> Self {
        AudioFormat::Pcm16 {
            rate: SEED_SAMPLE_RATE,
        }
    }
}

impl AudioFormat {
    /// Samples per second.
    pub fn sample_rate(self) -> u32 {
        match self {
            AudioFormat::Pcm16 { rate } => rate,
            AudioFormat::Pcmu | AudioFormat::Pcma => 8_000,
        }
    }

    /// Bytes per sample on the wire.
    pub fn bytes_per_sample(self) -> usize {
        match self {
            AudioFormat::Pcm16 { .. } => 2,
            AudioFormat::Pcmu | AudioFormat::Pcma => 1,
        }
    }

    /// Bytes per second on the wire, for rate limits and queue sizing.
    pub fn bytes_per_second(self) -> u64 {
        u64::from(self.sample_rate()) * self.bytes_per_sample() as u64
    }

    /// True for the seed format, which needs no conversion on either side.
    pub fn is_seed(self) -> bool {
        self == AudioFormat::default()
    }
}

/// A control message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// Seed `start_conversation`, with the additive optional formats (seed format when absent).
    StartConversation {
        /// Encoding of the client's binary frames.
        input: AudioFormat,
        /// Encoding of the bot's binary frames.
        output: AudioFormat,
    },
    /// Seed `user_audio_end`: commit the input buffer and ask for a response.
    UserAudioEnd,
    /// Seed `reset_session`: a fresh upstream session on the same socket.
    ResetSession,
    /// Extension `playback`: samples of bot audio the client has played since it last received
    /// `ready` or `interrupt`, at the output format's rate.
    Playback {
        /// Samples actually played out.
        samples_played: u64,
    },
}

/// Why a client text message was refused. The session reports it as an `error` event and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The text is not JSON, or not a JSON object with a string `type`.
    #[error("invalid JSON: {detail}")]
    InvalidJson {
        /// What the JSON parser reported.
        detail: String,
    },
    /// The `type` is not one this server knows.
    #[error("unknown message type \"{kind}\"")]
    UnknownType {
        /// The `type` value received (truncated to 64 characters).
        kind: String,
    },
    /// A known message with a field of the wrong shape or value.
    #[error("invalid field \"{field}\" in {kind}: {detail}")]
    InvalidField {
        /// The message `type`.
        kind: &'static str,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

/// Why a binary frame was refused. The session reports it as an `error` event and goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A PCM16 frame must hold whole samples.
    #[error("audio frame of {len} bytes is not a whole number of 16-bit samples")]
    OddByteCount {
        /// Bytes received.
        len: usize,
    },
    /// The frame is longer than the audio frame limit.
    #[error("audio frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Bytes received.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// An empty binary frame carries nothing to relay.
    #[error("empty audio frame")]
    Empty,
}

/// Checks a binary audio frame against the input format and the frame size limit.
///
/// # Errors
/// [`FrameError`] if the frame is empty, too large or holds a partial PCM16 sample.
pub fn check_audio_frame(len: usize, format: AudioFormat, max: usize) -> Result<(), FrameError> {
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    if !len.is_multiple_of(format.bytes_per_sample()) {
        return Err(FrameError::OddByteCount { len });
    }
    Ok(())
}

/// The raw shape of a client message; only `type` is required.
#[derive(Deserialize)]
struct RawClientMessage<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    format: Option<RawFormat>,
    #[serde(default)]
    output_format: Option<RawFormat>,
    #[serde(default)]
    samples_played: Option<serde_json::Value>,
}

/// A format as the client writes it: `"pcmu"` or `{"encoding": "pcm16", "sample_rate": 16000}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawFormat {
    Name(String),
    Object {
        encoding: String,
        #[serde(default)]
        sample_rate: Option<u32>,
    },
}

fn parse_format(raw: RawFormat, field: &'static str) -> Result<AudioFormat, ParseError> {
    let invalid = |detail: String| ParseError::InvalidField {
        kind: "start_conversation",
        field,
        detail,
    };
    let (encoding, rate) = match raw {
        RawFormat::Name(name) => (name, None),
        RawFormat::Object {
            encoding,
            sample_rate,
        } => (encoding, sample_rate),
    };
    match encoding.as_str() {
        "pcm16" => match rate.unwrap_or(SEED_SAMPLE_RATE) {
            rate @ (8_000 | 16_000 | 24_000 | 48_000) => Ok(AudioFormat::Pcm16 { rate }),
            other => Err(invalid(format!(
                "sample_rate {other} is not one of 8000, 16000, 24000, 48000"
            ))),
        },
        "pcmu" | "pcma" => match rate {
            None | Some(8_000) => Ok(if encoding == "pcmu" {
                AudioFormat::Pcmu
            } else {
                AudioFormat::Pcma
            }),
            Some(other) => Err(invalid(format!("{encoding} is 8000 Hz only, not {other}"))),
        },
        other => Err(invalid(format!(
            "encoding \"{}\" is not one of pcm16, pcmu, pcma",
            truncate(other, 64)
        ))),
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

/// Parses one client text frame.
///
/// # Errors
/// [`ParseError`] for malformed JSON, an unknown `type`, or a bad field of a known message.
pub fn parse_client_text(text: &str) -> Result<ClientMessage, ParseError> {
    let raw: RawClientMessage<'_> =
        serde_json::from_str(text).map_err(|error| ParseError::InvalidJson {
            detail: error.to_string(),
        })?;
    match raw.kind.as_ref() {
        "start_conversation" => Ok(ClientMessage::StartConversation {
            input: raw
                .format
                .map(|f| parse_format(f, "format"))
                .transpose()?
                .unwrap_or_default(),
            output: raw
                .output_format
                .map(|f| parse_format(f, "output_format"))
                .transpose()?
                .unwrap_or_default(),
        }),
        "user_audio_end" => Ok(ClientMessage::UserAudioEnd),
        "reset_session" => Ok(ClientMessage::ResetSession),
        "playback" => {
            let samples_played = raw
                .samples_played
                .as_ref()
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| ParseError::InvalidField {
                    kind: "playback",
                    field: "samples_played",
                    detail: "expected a non-negative integer".to_owned(),
                })?;
            Ok(ClientMessage::Playback { samples_played })
        }
        other => Err(ParseError::UnknownType {
            kind: truncate(other, 64),
        }),
    }
}

/// A control message to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage<'a> {
    /// Seed `ready`: the upstream session is confirmed; audio may flow.
    Ready,
    /// Seed `bot_audio_end`: the bot has finished a spoken response.
    BotAudioEnd,
    /// Seed `transcript_delta`: a piece of the bot's transcript.
    TranscriptDelta {
        /// Text to append.
        text: &'a str,
    },
    /// Seed `error`.
    Error {
        /// Human-readable reason.
        message: &'a str,
    },
    /// Extension `interrupt`: the user barged in; flush queued playback now.
    Interrupt,
    /// Extension `user_transcript`: what the model heard the user say, once per user turn.
    UserTranscript {
        /// The transcript.
        text: &'a str,
    },
}

impl ServerMessage<'_> {
    /// Renders the message as a JSON text frame.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(32);
        self.write_json(&mut out);
        out
    }

    /// Appends the JSON rendering to `out`.
    pub fn write_json(&self, out: &mut String) {
        match self {
            ServerMessage::Ready => out.push_str(r#"{"type":"ready"}"#),
            ServerMessage::BotAudioEnd => out.push_str(r#"{"type":"bot_audio_end"}"#),
            ServerMessage::Interrupt => out.push_str(r#"{"type":"interrupt"}"#),
            ServerMessage::TranscriptDelta { text } => {
                write_with_text(out, "transcript_delta", "text", text)
            }
            ServerMessage::UserTranscript { text } => {
                write_with_text(out, "user_transcript", "text", text)
            }
            ServerMessage::Error { message } => write_with_text(out, "error", "message", message),
        }
    }
}

fn write_with_text(out: &mut String, kind: &str, field: &str, text: &str) {
    // `serde_json::to_string` of a `&str` cannot fail; the fallback keeps this path panic-free.
    let quoted = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned());
    let _ = write!(out, r#"{{"type":"{kind}","{field}":{quoted}}}"#);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<ClientMessage, &str>) {
        let got = parse_client_text(input);
        match (got, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "input {input}"),
            (Err(got), Err(want)) => assert!(
                got.to_string().contains(want),
                "input {input}: error {got} does not mention {want}"
            ),
            (got, want) => panic!("input {input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parses_seed_messages() {
        let seed = AudioFormat::default();
        check(
            r#"{"type":"start_conversation"}"#,
            Ok(ClientMessage::StartConversation {
                input: seed,
                output: seed,
            }),
        );
        check(
            r#"{"type":"user_audio_end"}"#,
            Ok(ClientMessage::UserAudioEnd),
        );
        check(
            r#"{ "type" : "reset_session", "extra": [1,2] }"#,
            Ok(ClientMessage::ResetSession),
        );
    }

    #[test]
    fn parses_formats() {
        check(
            r#"{"type":"start_conversation","format":{"encoding":"pcm16","sample_rate":16000},"output_format":"pcmu"}"#,
            Ok(ClientMessage::StartConversation {
                input: AudioFormat::Pcm16 { rate: 16_000 },
                output: AudioFormat::Pcmu,
            }),
        );
        check(
            r#"{"type":"start_conversation","format":"pcma"}"#,
            Ok(ClientMessage::StartConversation {
                input: AudioFormat::Pcma,
                output: AudioFormat::default(),
            }),
        );
        check(
            r#"{"type":"start_conversation","format":{"encoding":"pcm16","sample_rate":44100}}"#,
            Err("sample_rate 44100"),
        );
        check(
            r#"{"type":"start_conversation","output_format":{"encoding":"pcmu","sample_rate":16000}}"#,
            Err("output_format"),
        );
        check(
            r#"{"type":"start_conversation","format":"opus"}"#,
            Err("encoding \"opus\""),
        );
    }

    #[test]
    fn parses_playback() {
        check(
            r#"{"type":"playback","samples_played":48000}"#,
            Ok(ClientMessage::Playback {
                samples_played: 48_000,
            }),
        );
        check(
            r#"{"type":"playback","samples_played":-1}"#,
            Err("samples_played"),
        );
        check(r#"{"type":"playback"}"#, Err("samples_played"));
    }

    #[test]
    fn refuses_bad_text() {
        check("not json", Err("invalid JSON"));
        check("{}", Err("invalid JSON"));
        check(r#"{"type":3}"#, Err("invalid JSON"));
        check(r#"{"type":"dance"}"#, Err("unknown message type \"dance\""));
    }

    #[test]
    fn checks_binary_frames() {
        let seed = AudioFormat::default();
        assert_eq!(check_audio_frame(960, seed, 1024), Ok(()));
        assert_eq!(
            check_audio_frame(961, seed, 1024),
            Err(FrameError::OddByteCount { len: 961 })
        );
        assert_eq!(
            check_audio_frame(2048, seed, 1024),
            Err(FrameError::TooLarge {
                len: 2048,
                max: 1024
            })
        );
        assert_eq!(check_audio_frame(0, seed, 1024), Err(FrameError::Empty));
        assert_eq!(check_audio_frame(161, AudioFormat::Pcmu, 1024), Ok(()));
    }

    #[test]
    fn renders_server_messages() {
        assert_eq!(ServerMessage::Ready.to_json(), r#"{"type":"ready"}"#);
        assert_eq!(
            ServerMessage::BotAudioEnd.to_json(),
            r#"{"type":"bot_audio_end"}"#
        );
        assert_eq!(
            ServerMessage::Interrupt.to_json(),
            r#"{"type":"interrupt"}"#
        );
        assert_eq!(
            ServerMessage::TranscriptDelta {
                text: "il a dit \"bonjour\"\n"
            }
            .to_json(),
            r#"{"type":"transcript_delta","text":"il a dit \"bonjour\"\n"}"#
        );
        assert_eq!(
            ServerMessage::Error { message: "boom" }.to_json(),
            r#"{"type":"error","message":"boom"}"#
        );
        let parsed: serde_json::Value =
            serde_json::from_str(&ServerMessage::UserTranscript { text: "é" }.to_json())
                .expect("valid JSON");
        assert_eq!(parsed["type"], "user_transcript");
        assert_eq!(parsed["text"], "é");
    }
}
