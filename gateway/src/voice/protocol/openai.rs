//! OpenAI Realtime events (GA protocol), both directions, as serde types. Sans-IO: text in, values
//! out, and the reverse.
//!
//! Both the gateway's upstream client (`voice::upstream::openai`) and the built-in local engine
//! (`voice::upstream::local`, the server side) use these types, so the two sides cannot drift apart.
//!
//! # Shape
//! - [`ClientEvent`]: what a client sends (`session.update`, `input_audio_buffer.*`,
//!   `conversation.item.create|truncate`, `response.create|cancel`).
//! - [`ServerEvent`]: what a server sends. The GA names are canonical; the older beta names
//!   (`response.audio.delta`, `response.audio_transcript.delta`, `response.text.delta`, ...) are
//!   accepted on input as aliases. A type this module does not know, or a known type whose shape
//!   does not match, becomes [`ServerEvent::Unknown`]: deserializing a server event never fails on
//!   valid JSON, so a new OpenAI event cannot break a live session.
//! - Every event carries an optional `event_id`.
//!
//! # Hot path
//! Audio dominates the traffic, so it has helpers that skip the generic machinery:
//! [`write_append_event`] / [`write_output_audio_delta`] write the JSON text straight into a reused
//! `String` (base64 appended in place), and [`decode_output_audio_delta`] /
//! [`decode_append_event`] borrow the ids from the text and decode the base64 into a reused
//! `Vec<u8>` without building a `serde_json::Value`.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The only PCM rate OpenAI Realtime accepts and produces.
pub const PCM_RATE: u32 = 24_000;

// ---------------------------------------------------------------------------------------------
// Session configuration
// ---------------------------------------------------------------------------------------------

/// An audio format of the Realtime API (`session.audio.{input,output}.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AudioFormat {
    /// 16-bit little-endian PCM, mono. OpenAI only accepts 24 kHz.
    #[serde(rename = "audio/pcm")]
    Pcm {
        /// Sample rate in Hz; OpenAI documents 24000 as the only value.
        #[serde(default = "default_pcm_rate")]
        rate: u32,
    },
    /// G.711 mu-law, 8 kHz.
    #[serde(rename = "audio/pcmu")]
    Pcmu,
    /// G.711 A-law, 8 kHz.
    #[serde(rename = "audio/pcma")]
    Pcma,
}

fn default_pcm_rate() -> u32 {
    PCM_RATE
}

impl Default for AudioFormat {
    fn default() -> Self {
        AudioFormat::Pcm { rate: PCM_RATE }
    }
}

impl AudioFormat {
    /// 24 kHz PCM16, the default format of both directions.
    pub const PCM24K: AudioFormat = AudioFormat::Pcm { rate: PCM_RATE };

    /// Sample rate in Hz (8000 for the G.711 formats).
    pub fn sample_rate(&self) -> u32 {
        match self {
            AudioFormat::Pcm { rate } => *rate,
            AudioFormat::Pcmu | AudioFormat::Pcma => 8_000,
        }
    }

    /// Bytes per sample on the wire (2 for PCM16, 1 for G.711).
    pub fn bytes_per_sample(&self) -> usize {
        match self {
            AudioFormat::Pcm { .. } => 2,
            AudioFormat::Pcmu | AudioFormat::Pcma => 1,
        }
    }

    /// Duration in milliseconds of `bytes` bytes of audio in this format (rounded down).
    pub fn duration_ms(&self, bytes: usize) -> u64 {
        let samples = (bytes / self.bytes_per_sample()) as u64;
        samples * 1000 / u64::from(self.sample_rate().max(1))
    }
}

/// `eagerness` of `semantic_vad`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Eagerness {
    /// Waits longest before ending the user's turn.
    Low,
    /// The middle ground.
    Medium,
    /// Ends the user's turn soonest.
    High,
    /// Lets the server choose (equivalent to medium).
    Auto,
}

/// `session.audio.input.turn_detection` (when not `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TurnDetection {
    /// Energy/model-based voice activity detection with explicit thresholds.
    ServerVad {
        /// Activation threshold, 0.0 to 1.0 (OpenAI default 0.5).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        threshold: Option<f32>,
        /// Audio kept before the detected speech start, in ms (default 300).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix_padding_ms: Option<u32>,
        /// Silence that ends a turn, in ms (default 500).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        silence_duration_ms: Option<u32>,
        /// Whether the server creates a response when a turn ends (default true).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        create_response: Option<bool>,
        /// Whether speech cancels an in-progress response (default true).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interrupt_response: Option<bool>,
        /// Optional idle timeout after which the server prompts the user, in ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idle_timeout_ms: Option<u64>,
    },
    /// Model-based end-of-turn detection.
    SemanticVad {
        /// How eagerly the turn is ended.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eagerness: Option<Eagerness>,
        /// Whether the server creates a response when a turn ends (default true).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        create_response: Option<bool>,
        /// Whether speech cancels an in-progress response (default true).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interrupt_response: Option<bool>,
    },
}

impl TurnDetection {
    /// `server_vad` with OpenAI's documented defaults spelled out.
    pub fn server_vad_default() -> Self {
        TurnDetection::ServerVad {
            threshold: Some(0.5),
            prefix_padding_ms: Some(300),
            silence_duration_ms: Some(500),
            create_response: Some(true),
            interrupt_response: Some(true),
            idle_timeout_ms: None,
        }
    }

    /// Whether the server should start a response on its own at the end of a turn.
    pub fn create_response(&self) -> bool {
        match self {
            TurnDetection::ServerVad {
                create_response, ..
            }
            | TurnDetection::SemanticVad {
                create_response, ..
            } => create_response.unwrap_or(true),
        }
    }

    /// Whether speech should cancel a response in progress.
    pub fn interrupt_response(&self) -> bool {
        match self {
            TurnDetection::ServerVad {
                interrupt_response, ..
            }
            | TurnDetection::SemanticVad {
                interrupt_response, ..
            } => interrupt_response.unwrap_or(true),
        }
    }
}

/// `session.audio.input.transcription`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct InputTranscription {
    /// Transcription model, e.g. `gpt-4o-transcribe` or `whisper-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// ISO-639-1 language hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Free-text hint for the transcriber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// `session.audio.input`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AudioInput {
    /// Format of the audio the client appends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AudioFormat>,
    /// Transcription of the user's audio; `null` turns it off.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub transcription: Option<Option<InputTranscription>>,
    /// Turn detection. `None`: leave unchanged; `Some(None)`: `null`, i.e. turned off (the client
    /// commits and asks for responses itself).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub turn_detection: Option<Option<TurnDetection>>,
    /// Noise reduction settings, passed through as is (`null` turns it off).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub noise_reduction: Option<Option<serde_json::Value>>,
}

/// `session.audio.output`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AudioOutput {
    /// Format of the audio the server produces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AudioFormat>,
    /// Voice name (`alloy`, `marin`, ...). In GA it lives here, not at the session's top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
    /// Speaking speed multiplier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<f32>,
}

/// `session.audio`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AudioConfig {
    /// Input side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<AudioInput>,
    /// Output side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<AudioOutput>,
}

/// Output modality of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Text only.
    Text,
    /// Audio with its transcript.
    Audio,
}

/// The session object: the body of `session.update` and of `session.created|updated`.
///
/// Every field is optional: in `session.update` an absent field is left unchanged; the server
/// answers with the full effective configuration. Fields this type does not model are kept in
/// `extra` so that a relay can pass them through.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Session {
    /// Always `realtime` for a speech-to-speech session (`transcription` for the other kind).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Session id, `sess_...` (server events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Always `realtime.session` (server events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `["audio"]` or `["text"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_modalities: Option<Vec<Modality>>,
    /// System instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Audio input and output settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioConfig>,
    /// Unix time (s) at which the session expires (server events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Everything else (`tools`, `tool_choice`, `max_output_tokens`, `tracing`, ...), verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Session {
    /// The input format, if set.
    pub fn input_format(&self) -> Option<AudioFormat> {
        self.audio.as_ref()?.input.as_ref()?.format
    }

    /// The output format, if set.
    pub fn output_format(&self) -> Option<AudioFormat> {
        self.audio.as_ref()?.output.as_ref()?.format
    }

    /// The turn detection: `None` if absent, `Some(None)` if explicitly `null`.
    pub fn turn_detection(&self) -> Option<Option<&TurnDetection>> {
        let td = self
            .audio
            .as_ref()?
            .input
            .as_ref()?
            .turn_detection
            .as_ref()?;
        Some(td.as_ref())
    }

    /// The voice, if set.
    pub fn voice(&self) -> Option<&str> {
        self.audio.as_ref()?.output.as_ref()?.voice.as_deref()
    }
}

// ---------------------------------------------------------------------------------------------
// Conversation items
// ---------------------------------------------------------------------------------------------

/// Who authored a message item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The end user.
    User,
    /// The model.
    Assistant,
    /// System/developer instructions.
    System,
}

/// One content part of a message item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text typed by the user (or replayed history).
    InputText {
        /// The text.
        text: String,
    },
    /// Audio from the user, base64 in the item's input format.
    InputAudio {
        /// Base64 audio (absent in server echoes of streamed audio).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audio: Option<String>,
        /// Transcript, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transcript: Option<String>,
    },
    /// Text produced by the model (beta name: `text`).
    #[serde(alias = "text")]
    OutputText {
        /// The text.
        #[serde(default)]
        text: String,
    },
    /// Audio produced by the model (beta name: `audio`).
    #[serde(alias = "audio")]
    OutputAudio {
        /// Base64 audio (usually absent: the audio travels in deltas).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        audio: Option<String>,
        /// Transcript of the audio.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transcript: Option<String>,
    },
    /// A part kind this module does not model, kept verbatim.
    #[serde(untagged)]
    Other(serde_json::Value),
}

/// A conversation item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    /// A message from the user, the assistant or the system.
    Message {
        /// Item id (`item_...`); optional when the client creates the item.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Always `realtime.item` in server events.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        object: Option<String>,
        /// `in_progress`, `completed` or `incomplete`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        /// Author.
        role: Role,
        /// Content parts.
        #[serde(default)]
        content: Vec<ContentPart>,
    },
    /// A function call emitted by the model.
    FunctionCall {
        /// Item id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Call id to answer with a `function_call_output` item.
        #[serde(default)]
        call_id: String,
        /// Function name.
        #[serde(default)]
        name: String,
        /// JSON-encoded arguments.
        #[serde(default)]
        arguments: String,
    },
    /// The result of a function call.
    FunctionCallOutput {
        /// Item id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// The call this answers.
        call_id: String,
        /// The output, usually JSON text.
        output: String,
    },
    /// An item kind this module does not model, kept verbatim.
    #[serde(untagged)]
    Other(serde_json::Value),
}

impl Item {
    /// A user message with one `input_text` part, as used to replay text history.
    pub fn user_text(text: impl Into<String>) -> Self {
        Item::Message {
            id: None,
            object: None,
            status: None,
            role: Role::User,
            content: vec![ContentPart::InputText { text: text.into() }],
        }
    }

    /// An assistant message with one `output_text` part, as used to replay text history.
    pub fn assistant_text(text: impl Into<String>) -> Self {
        Item::Message {
            id: None,
            object: None,
            status: None,
            role: Role::Assistant,
            content: vec![ContentPart::OutputText { text: text.into() }],
        }
    }

    /// The item's id, if it has one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Item::Message { id, .. }
            | Item::FunctionCall { id, .. }
            | Item::FunctionCallOutput { id, .. } => id.as_deref(),
            Item::Other(v) => v.get("id").and_then(|v| v.as_str()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------------------------

/// The status of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    /// Still producing output.
    InProgress,
    /// Finished normally.
    Completed,
    /// Cancelled by `response.cancel` or by turn detection.
    Cancelled,
    /// Stopped early, e.g. by a token limit.
    Incomplete,
    /// Failed; see `status_details`.
    Failed,
    /// A status this module does not know.
    #[serde(other)]
    Unknown,
}

/// Token detail counts of the input side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InputTokenDetails {
    /// Tokens served from the prompt cache.
    #[serde(default)]
    pub cached_tokens: u64,
    /// Text tokens.
    #[serde(default)]
    pub text_tokens: u64,
    /// Audio tokens.
    #[serde(default)]
    pub audio_tokens: u64,
    /// Image tokens.
    #[serde(default)]
    pub image_tokens: u64,
}

/// Token detail counts of the output side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OutputTokenDetails {
    /// Text tokens.
    #[serde(default)]
    pub text_tokens: u64,
    /// Audio tokens.
    #[serde(default)]
    pub audio_tokens: u64,
}

/// `response.usage`: what a response cost, kept per session for accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Input plus output tokens.
    #[serde(default)]
    pub total_tokens: u64,
    /// Input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Breakdown of the input tokens.
    #[serde(default)]
    pub input_token_details: InputTokenDetails,
    /// Breakdown of the output tokens.
    #[serde(default)]
    pub output_token_details: OutputTokenDetails,
}

impl Usage {
    /// Adds `other` to `self` (for per-session totals).
    pub fn accumulate(&mut self, other: &Usage) {
        self.total_tokens += other.total_tokens;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        let (a, b) = (&mut self.input_token_details, &other.input_token_details);
        a.cached_tokens += b.cached_tokens;
        a.text_tokens += b.text_tokens;
        a.audio_tokens += b.audio_tokens;
        a.image_tokens += b.image_tokens;
        let (a, b) = (&mut self.output_token_details, &other.output_token_details);
        a.text_tokens += b.text_tokens;
        a.audio_tokens += b.audio_tokens;
    }
}

/// `response.status_details`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StatusDetails {
    /// `completed`, `cancelled`, `incomplete` or `failed`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Why: `turn_detected`, `client_cancelled`, `max_output_tokens`, `content_filter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The error of a failed response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
}

/// The response object of `response.created` and `response.done`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Response id, `resp_...`.
    pub id: String,
    /// Always `realtime.response`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// Status.
    pub status: ResponseStatus,
    /// Why the status is what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_details: Option<StatusDetails>,
    /// Output items (complete in `response.done`, empty in `response.created`).
    #[serde(default)]
    pub output: Vec<Item>,
    /// Conversation the response belongs to (`conv_...`), absent for out-of-band responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Modalities produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_modalities: Option<Vec<Modality>>,
    /// Token usage (in `response.done`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Client metadata echoed back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// The optional body of `response.create`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ResponseParams {
    /// Instructions for this response only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Modalities for this response only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_modalities: Option<Vec<Modality>>,
    /// `auto` (default: the response joins the conversation) or `none` (out of band).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<String>,
    /// Items to use as input instead of the conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Vec<Item>>,
    /// Metadata echoed back in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Everything else, verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

// ---------------------------------------------------------------------------------------------
// Client events
// ---------------------------------------------------------------------------------------------

/// An event a client sends to a Realtime server.
// `session.update` is much larger than the rest, but client events are built, sent and dropped one
// at a time (the audio hot path does not build them at all), so boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientEvent {
    /// `session.update`.
    #[serde(rename = "session.update")]
    SessionUpdate {
        /// Optional client-chosen id, echoed in errors.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The fields to change.
        session: Session,
    },
    /// `input_audio_buffer.append`. On the hot path use [`write_append_event`] instead.
    #[serde(rename = "input_audio_buffer.append")]
    InputAudioBufferAppend {
        /// Optional client-chosen id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// Base64 audio in the session's input format.
        audio: String,
    },
    /// `input_audio_buffer.commit`.
    #[serde(rename = "input_audio_buffer.commit")]
    InputAudioBufferCommit {
        /// Optional client-chosen id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// `input_audio_buffer.clear`.
    #[serde(rename = "input_audio_buffer.clear")]
    InputAudioBufferClear {
        /// Optional client-chosen id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// `conversation.item.create`.
    #[serde(rename = "conversation.item.create")]
    ConversationItemCreate {
        /// Optional client-chosen id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// Insert after this item (`root` for the start); default: at the end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_item_id: Option<String>,
        /// The item.
        item: Item,
    },
    /// `conversation.item.truncate`: cut an assistant audio item to what the user heard.
    #[serde(rename = "conversation.item.truncate")]
    ConversationItemTruncate {
        /// Optional client-chosen id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The assistant item to truncate.
        item_id: String,
        /// The content part (0 for audio).
        #[serde(default)]
        content_index: u32,
        /// Audio played, in ms; more than the item holds is an error.
        audio_end_ms: u64,
    },
    /// `conversation.item.delete`.
    #[serde(rename = "conversation.item.delete")]
    ConversationItemDelete {
        /// Optional client-chosen id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The item to delete.
        item_id: String,
    },
    /// `response.create`.
    #[serde(rename = "response.create")]
    ResponseCreate {
        /// Optional client-chosen id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// Per-response overrides.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response: Option<ResponseParams>,
    },
    /// `response.cancel`.
    #[serde(rename = "response.cancel")]
    ResponseCancel {
        /// Optional client-chosen id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The response to cancel; default: the one in progress.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response_id: Option<String>,
    },
}

impl ClientEvent {
    /// The wire `type` of this event.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientEvent::SessionUpdate { .. } => "session.update",
            ClientEvent::InputAudioBufferAppend { .. } => "input_audio_buffer.append",
            ClientEvent::InputAudioBufferCommit { .. } => "input_audio_buffer.commit",
            ClientEvent::InputAudioBufferClear { .. } => "input_audio_buffer.clear",
            ClientEvent::ConversationItemCreate { .. } => "conversation.item.create",
            ClientEvent::ConversationItemTruncate { .. } => "conversation.item.truncate",
            ClientEvent::ConversationItemDelete { .. } => "conversation.item.delete",
            ClientEvent::ResponseCreate { .. } => "response.create",
            ClientEvent::ResponseCancel { .. } => "response.cancel",
        }
    }

    /// The event's `event_id`, if any.
    pub fn event_id(&self) -> Option<&str> {
        match self {
            ClientEvent::SessionUpdate { event_id, .. }
            | ClientEvent::InputAudioBufferAppend { event_id, .. }
            | ClientEvent::InputAudioBufferCommit { event_id }
            | ClientEvent::InputAudioBufferClear { event_id }
            | ClientEvent::ConversationItemCreate { event_id, .. }
            | ClientEvent::ConversationItemTruncate { event_id, .. }
            | ClientEvent::ConversationItemDelete { event_id, .. }
            | ClientEvent::ResponseCreate { event_id, .. }
            | ClientEvent::ResponseCancel { event_id, .. } => event_id.as_deref(),
        }
    }

    /// Serializes to JSON text. Cannot fail for these types.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| unreachable_json(&e))
    }

    /// Parses JSON text.
    ///
    /// # Errors
    /// The serde error for invalid JSON, an unknown `type` or a missing field.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

// ---------------------------------------------------------------------------------------------
// Server events
// ---------------------------------------------------------------------------------------------

/// The `error` object of an `error` event.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// `invalid_request_error`, `server_error`, ...
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Machine code: `session_expired`, `invalid_api_key`, `invalid_value`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// The offending parameter, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// The `event_id` of the client event that caused it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

/// One entry of `rate_limits.updated`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RateLimit {
    /// `requests` or `tokens`.
    #[serde(default)]
    pub name: String,
    /// The limit.
    #[serde(default)]
    pub limit: u64,
    /// What is left.
    #[serde(default)]
    pub remaining: u64,
    /// Seconds until the window resets.
    #[serde(default)]
    pub reset_seconds: f64,
}

/// A server event of a type this module does not model (or whose shape did not match), kept
/// verbatim so that it can be logged or passed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnknownEvent {
    /// The wire `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// All other fields.
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// An event a Realtime server sends to its client.
///
/// Deserializing never fails on a JSON object with a string `type`: unmodelled types become
/// [`ServerEvent::Unknown`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerEvent {
    /// `error`.
    #[serde(rename = "error")]
    Error {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// What went wrong.
        error: ErrorDetail,
    },
    /// `session.created`: the first event of every connection.
    #[serde(rename = "session.created")]
    SessionCreated {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The effective configuration.
        session: Session,
    },
    /// `session.updated`: the answer to `session.update`.
    #[serde(rename = "session.updated")]
    SessionUpdated {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The effective configuration.
        session: Session,
    },
    /// `input_audio_buffer.speech_started`.
    #[serde(rename = "input_audio_buffer.speech_started")]
    SpeechStarted {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// Position of the speech start in the session's input audio, in ms.
        #[serde(default)]
        audio_start_ms: u64,
        /// The user item the speech will become.
        #[serde(default)]
        item_id: String,
    },
    /// `input_audio_buffer.speech_stopped`.
    #[serde(rename = "input_audio_buffer.speech_stopped")]
    SpeechStopped {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// Position of the speech end in the session's input audio, in ms.
        #[serde(default)]
        audio_end_ms: u64,
        /// The user item.
        #[serde(default)]
        item_id: String,
    },
    /// `input_audio_buffer.committed`.
    #[serde(rename = "input_audio_buffer.committed")]
    InputAudioBufferCommitted {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The item before the new one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_item_id: Option<String>,
        /// The user item created from the buffer.
        item_id: String,
    },
    /// `input_audio_buffer.cleared`.
    #[serde(rename = "input_audio_buffer.cleared")]
    InputAudioBufferCleared {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
    },
    /// `conversation.item.created` (beta name, still sent by some servers).
    #[serde(rename = "conversation.item.created")]
    ConversationItemCreated {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The item before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_item_id: Option<String>,
        /// The item.
        item: Item,
    },
    /// `conversation.item.added` (GA): an item entered the conversation.
    #[serde(rename = "conversation.item.added")]
    ConversationItemAdded {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The item before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_item_id: Option<String>,
        /// The item.
        item: Item,
    },
    /// `conversation.item.done` (GA): an item is complete.
    #[serde(rename = "conversation.item.done")]
    ConversationItemDone {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The item before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_item_id: Option<String>,
        /// The item.
        item: Item,
    },
    /// `conversation.item.truncated`.
    #[serde(rename = "conversation.item.truncated")]
    ConversationItemTruncated {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The truncated item.
        item_id: String,
        /// The truncated part.
        #[serde(default)]
        content_index: u32,
        /// Where the audio now ends, in ms.
        audio_end_ms: u64,
    },
    /// `conversation.item.deleted`.
    #[serde(rename = "conversation.item.deleted")]
    ConversationItemDeleted {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The deleted item.
        item_id: String,
    },
    /// `conversation.item.input_audio_transcription.delta`.
    #[serde(rename = "conversation.item.input_audio_transcription.delta")]
    InputAudioTranscriptionDelta {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The user item.
        item_id: String,
        /// The content part.
        #[serde(default)]
        content_index: u32,
        /// Text to append.
        #[serde(default)]
        delta: String,
    },
    /// `conversation.item.input_audio_transcription.completed`.
    #[serde(rename = "conversation.item.input_audio_transcription.completed")]
    InputAudioTranscriptionCompleted {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The user item.
        item_id: String,
        /// The content part.
        #[serde(default)]
        content_index: u32,
        /// The full transcript.
        #[serde(default)]
        transcript: String,
    },
    /// `conversation.item.input_audio_transcription.failed`.
    #[serde(rename = "conversation.item.input_audio_transcription.failed")]
    InputAudioTranscriptionFailed {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The user item.
        item_id: String,
        /// The content part.
        #[serde(default)]
        content_index: u32,
        /// Why.
        #[serde(default)]
        error: ErrorDetail,
    },
    /// `response.created`.
    #[serde(rename = "response.created")]
    ResponseCreated {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The new response (status `in_progress`).
        response: Response,
    },
    /// `response.done`: the response ended (completed, cancelled, incomplete or failed).
    #[serde(rename = "response.done")]
    ResponseDone {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The final response, with `usage`.
        response: Response,
    },
    /// `response.output_item.added`.
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The response.
        response_id: String,
        /// Index of the item in the response's output.
        #[serde(default)]
        output_index: u32,
        /// The item.
        item: Item,
    },
    /// `response.output_item.done`.
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The response.
        response_id: String,
        /// Index of the item in the response's output.
        #[serde(default)]
        output_index: u32,
        /// The item.
        item: Item,
    },
    /// `response.content_part.added`.
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The response.
        response_id: String,
        /// The item.
        item_id: String,
        /// Index of the item in the response's output.
        #[serde(default)]
        output_index: u32,
        /// Index of the part in the item's content.
        #[serde(default)]
        content_index: u32,
        /// The part.
        part: ContentPart,
    },
    /// `response.content_part.done`.
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The response.
        response_id: String,
        /// The item.
        item_id: String,
        /// Index of the item in the response's output.
        #[serde(default)]
        output_index: u32,
        /// Index of the part in the item's content.
        #[serde(default)]
        content_index: u32,
        /// The part.
        part: ContentPart,
    },
    /// `response.output_audio.delta` (beta: `response.audio.delta`). On the hot path use
    /// [`decode_output_audio_delta`] instead.
    #[serde(rename = "response.output_audio.delta", alias = "response.audio.delta")]
    OutputAudioDelta {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The response.
        response_id: String,
        /// The assistant item.
        item_id: String,
        /// Index of the item in the response's output.
        #[serde(default)]
        output_index: u32,
        /// Index of the part in the item's content.
        #[serde(default)]
        content_index: u32,
        /// Base64 audio in the session's output format.
        delta: String,
    },
    /// `response.output_audio.done` (beta: `response.audio.done`).
    #[serde(rename = "response.output_audio.done", alias = "response.audio.done")]
    OutputAudioDone {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The response.
        response_id: String,
        /// The assistant item.
        item_id: String,
        /// Index of the item in the response's output.
        #[serde(default)]
        output_index: u32,
        /// Index of the part in the item's content.
        #[serde(default)]
        content_index: u32,
    },
    /// `response.output_audio_transcript.delta` (beta: `response.audio_transcript.delta`).
    #[serde(
        rename = "response.output_audio_transcript.delta",
        alias = "response.audio_transcript.delta"
    )]
    OutputAudioTranscriptDelta {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The response.
        response_id: String,
        /// The assistant item.
        item_id: String,
        /// Index of the item in the response's output.
        #[serde(default)]
        output_index: u32,
        /// Index of the part in the item's content.
        #[serde(default)]
        content_index: u32,
        /// Text to append.
        delta: String,
    },
    /// `response.output_audio_transcript.done` (beta: `response.audio_transcript.done`).
    #[serde(
        rename = "response.output_audio_transcript.done",
        alias = "response.audio_transcript.done"
    )]
    OutputAudioTranscriptDone {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The response.
        response_id: String,
        /// The assistant item.
        item_id: String,
        /// Index of the item in the response's output.
        #[serde(default)]
        output_index: u32,
        /// Index of the part in the item's content.
        #[serde(default)]
        content_index: u32,
        /// The full transcript.
        #[serde(default)]
        transcript: String,
    },
    /// `response.output_text.delta` (beta: `response.text.delta`).
    #[serde(rename = "response.output_text.delta", alias = "response.text.delta")]
    OutputTextDelta {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The response.
        response_id: String,
        /// The assistant item.
        item_id: String,
        /// Index of the item in the response's output.
        #[serde(default)]
        output_index: u32,
        /// Index of the part in the item's content.
        #[serde(default)]
        content_index: u32,
        /// Text to append.
        delta: String,
    },
    /// `response.output_text.done` (beta: `response.text.done`).
    #[serde(rename = "response.output_text.done", alias = "response.text.done")]
    OutputTextDone {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The response.
        response_id: String,
        /// The assistant item.
        item_id: String,
        /// Index of the item in the response's output.
        #[serde(default)]
        output_index: u32,
        /// Index of the part in the item's content.
        #[serde(default)]
        content_index: u32,
        /// The full text.
        #[serde(default)]
        text: String,
    },
    /// `rate_limits.updated`.
    #[serde(rename = "rate_limits.updated")]
    RateLimitsUpdated {
        /// Server event id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event_id: Option<String>,
        /// The current limits.
        #[serde(default)]
        rate_limits: Vec<RateLimit>,
    },
    /// Any other event (or a known type whose shape did not match), kept verbatim.
    #[serde(untagged)]
    Unknown(UnknownEvent),
}

impl ServerEvent {
    /// The wire `type` of this event (the GA name for aliased beta events).
    pub fn kind(&self) -> &str {
        match self {
            ServerEvent::Error { .. } => "error",
            ServerEvent::SessionCreated { .. } => "session.created",
            ServerEvent::SessionUpdated { .. } => "session.updated",
            ServerEvent::SpeechStarted { .. } => "input_audio_buffer.speech_started",
            ServerEvent::SpeechStopped { .. } => "input_audio_buffer.speech_stopped",
            ServerEvent::InputAudioBufferCommitted { .. } => "input_audio_buffer.committed",
            ServerEvent::InputAudioBufferCleared { .. } => "input_audio_buffer.cleared",
            ServerEvent::ConversationItemCreated { .. } => "conversation.item.created",
            ServerEvent::ConversationItemAdded { .. } => "conversation.item.added",
            ServerEvent::ConversationItemDone { .. } => "conversation.item.done",
            ServerEvent::ConversationItemTruncated { .. } => "conversation.item.truncated",
            ServerEvent::ConversationItemDeleted { .. } => "conversation.item.deleted",
            ServerEvent::InputAudioTranscriptionDelta { .. } => {
                "conversation.item.input_audio_transcription.delta"
            }
            ServerEvent::InputAudioTranscriptionCompleted { .. } => {
                "conversation.item.input_audio_transcription.completed"
            }
            ServerEvent::InputAudioTranscriptionFailed { .. } => {
                "conversation.item.input_audio_transcription.failed"
            }
            ServerEvent::ResponseCreated { .. } => "response.created",
            ServerEvent::ResponseDone { .. } => "response.done",
            ServerEvent::OutputItemAdded { .. } => "response.output_item.added",
            ServerEvent::OutputItemDone { .. } => "response.output_item.done",
            ServerEvent::ContentPartAdded { .. } => "response.content_part.added",
            ServerEvent::ContentPartDone { .. } => "response.content_part.done",
            ServerEvent::OutputAudioDelta { .. } => "response.output_audio.delta",
            ServerEvent::OutputAudioDone { .. } => "response.output_audio.done",
            ServerEvent::OutputAudioTranscriptDelta { .. } => {
                "response.output_audio_transcript.delta"
            }
            ServerEvent::OutputAudioTranscriptDone { .. } => {
                "response.output_audio_transcript.done"
            }
            ServerEvent::OutputTextDelta { .. } => "response.output_text.delta",
            ServerEvent::OutputTextDone { .. } => "response.output_text.done",
            ServerEvent::RateLimitsUpdated { .. } => "rate_limits.updated",
            ServerEvent::Unknown(u) => &u.kind,
        }
    }

    /// The event's `event_id` slot, for a server (the local engine) to stamp ids on what it emits.
    pub fn event_id_mut(&mut self) -> &mut Option<String> {
        match self {
            ServerEvent::Error { event_id, .. }
            | ServerEvent::SessionCreated { event_id, .. }
            | ServerEvent::SessionUpdated { event_id, .. }
            | ServerEvent::SpeechStarted { event_id, .. }
            | ServerEvent::SpeechStopped { event_id, .. }
            | ServerEvent::InputAudioBufferCommitted { event_id, .. }
            | ServerEvent::InputAudioBufferCleared { event_id }
            | ServerEvent::ConversationItemCreated { event_id, .. }
            | ServerEvent::ConversationItemAdded { event_id, .. }
            | ServerEvent::ConversationItemDone { event_id, .. }
            | ServerEvent::ConversationItemTruncated { event_id, .. }
            | ServerEvent::ConversationItemDeleted { event_id, .. }
            | ServerEvent::InputAudioTranscriptionDelta { event_id, .. }
            | ServerEvent::InputAudioTranscriptionCompleted { event_id, .. }
            | ServerEvent::InputAudioTranscriptionFailed { event_id, .. }
            | ServerEvent::ResponseCreated { event_id, .. }
            | ServerEvent::ResponseDone { event_id, .. }
            | ServerEvent::OutputItemAdded { event_id, .. }
            | ServerEvent::OutputItemDone { event_id, .. }
            | ServerEvent::ContentPartAdded { event_id, .. }
            | ServerEvent::ContentPartDone { event_id, .. }
            | ServerEvent::OutputAudioDelta { event_id, .. }
            | ServerEvent::OutputAudioDone { event_id, .. }
            | ServerEvent::OutputAudioTranscriptDelta { event_id, .. }
            | ServerEvent::OutputAudioTranscriptDone { event_id, .. }
            | ServerEvent::OutputTextDelta { event_id, .. }
            | ServerEvent::OutputTextDone { event_id, .. }
            | ServerEvent::RateLimitsUpdated { event_id, .. } => event_id,
            ServerEvent::Unknown(u) => &mut u.event_id,
        }
    }

    /// An `error` event.
    pub fn error(
        kind: impl Into<String>,
        code: Option<&str>,
        message: impl Into<String>,
        param: Option<&str>,
        caused_by: Option<&str>,
    ) -> Self {
        ServerEvent::Error {
            event_id: None,
            error: ErrorDetail {
                kind: kind.into(),
                code: code.map(str::to_owned),
                message: message.into(),
                param: param.map(str::to_owned),
                event_id: caused_by.map(str::to_owned),
            },
        }
    }

    /// Serializes to JSON text. Cannot fail for these types.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| unreachable_json(&e))
    }

    /// Parses JSON text. Unknown types become [`ServerEvent::Unknown`].
    ///
    /// # Errors
    /// Only for text that is not a JSON object with a string `type`.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Serializing these types cannot fail (string keys, no non-finite floats from our own code); if
/// it ever does, emit an `error`-shaped text rather than panic.
fn unreachable_json(e: &serde_json::Error) -> String {
    let mut out = String::from(r#"{"type":"error","error":{"type":"server_error","message":""#);
    push_json_escaped(&mut out, &e.to_string());
    out.push_str("\"}}");
    out
}

/// `Option<Option<T>>` <-> absent / `null` / value.
mod double_option {
    use super::*;

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            // `skip_serializing_if = "Option::is_none"` handles the absent case.
            None | Some(None) => serializer.serialize_none(),
            Some(Some(v)) => v.serialize(serializer),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        // Only called when the field is present, so `null` means `Some(None)`.
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

// ---------------------------------------------------------------------------------------------
// Hot path: audio events without the generic machinery
// ---------------------------------------------------------------------------------------------

const APPEND_PREFIX: &str = r#"{"type":"input_audio_buffer.append","audio":""#;
const APPEND_SUFFIX: &str = r#""}"#;

/// Length of the text [`write_append_event`] produces for `pcm_len` audio bytes (for sizing
/// buffers and message limits).
pub fn append_event_len(pcm_len: usize) -> usize {
    APPEND_PREFIX.len() + voxgate_dsp::b64::encoded_len(pcm_len) + APPEND_SUFFIX.len()
}

/// Replaces the contents of `buf` with `{"type":"input_audio_buffer.append","audio":"<base64>"}`.
///
/// Reuses `buf`'s capacity; once it is large enough this does not allocate. `audio` is the raw
/// bytes in the session's input format (PCM16 little-endian for `audio/pcm`).
pub fn write_append_event(buf: &mut String, audio: &[u8]) {
    buf.clear();
    buf.reserve(append_event_len(audio.len()));
    buf.push_str(APPEND_PREFIX);
    base64_simd::STANDARD.encode_append(audio, buf);
    buf.push_str(APPEND_SUFFIX);
}

/// Ids of an audio delta, borrowed from the event text when it has no escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioDeltaIds<'a> {
    /// Server event id.
    pub event_id: Option<Cow<'a, str>>,
    /// The response.
    pub response_id: Cow<'a, str>,
    /// The assistant item (what a truncate names).
    pub item_id: Cow<'a, str>,
    /// Index of the item in the response's output.
    pub output_index: u32,
    /// Index of the part in the item's content.
    pub content_index: u32,
}

/// Why a hot-path decode failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FastPathError {
    /// The text is not valid JSON for this event.
    #[error("malformed audio event: {0}")]
    Json(#[from] serde_json::Error),
    /// The base64 payload is invalid.
    #[error("malformed audio event: {0}")]
    Base64(#[from] voxgate_dsp::b64::B64Error),
}

/// The fields the fast paths read; everything else is skipped without being built.
#[derive(Deserialize)]
struct AudioEventFields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    event_id: Option<CowStr<'a>>,
    #[serde(default, borrow)]
    response_id: Option<CowStr<'a>>,
    #[serde(default, borrow)]
    item_id: Option<CowStr<'a>>,
    #[serde(default)]
    output_index: u32,
    #[serde(default)]
    content_index: u32,
    #[serde(default, borrow)]
    delta: Option<CowStr<'a>>,
    #[serde(default, borrow)]
    audio: Option<CowStr<'a>>,
}

/// serde borrows a `Cow<str>` only when it is the field's exact type, not inside an `Option`;
/// this newtype makes it the exact type again.
#[derive(Deserialize)]
#[serde(transparent)]
struct CowStr<'a>(#[serde(borrow)] Cow<'a, str>);

/// Whether `text` may be a `response.output_audio.delta` (or its beta alias). A quoted type
/// name cannot occur inside a JSON string value without escaped quotes, and base64 holds no
/// quotes, so this substring test never misses an audio delta; a rare false positive only costs
/// the caller a second parse.
fn looks_like_output_audio_delta(text: &str) -> bool {
    text.contains("\"response.output_audio.delta\"") || text.contains("\"response.audio.delta\"")
}

/// Hot-path parser for `response.output_audio.delta` (and the beta `response.audio.delta`).
///
/// Returns `Ok(None)` when `text` is some other event: parse it with [`ServerEvent::from_json`]
/// then. Otherwise decodes the base64 into `out` (replacing its contents, reusing its capacity)
/// and returns the ids, borrowed from `text`. No `serde_json::Value` is built and, once `out` is
/// large enough, nothing is allocated for unescaped ids.
///
/// # Errors
/// [`FastPathError`] when the event is an audio delta but malformed (missing ids or bad base64).
pub fn decode_output_audio_delta<'a>(
    text: &'a str,
    out: &mut Vec<u8>,
) -> Result<Option<AudioDeltaIds<'a>>, FastPathError> {
    if !looks_like_output_audio_delta(text) {
        return Ok(None);
    }
    let fields: AudioEventFields<'a> = serde_json::from_str(text)?;
    if fields.kind != "response.output_audio.delta" && fields.kind != "response.audio.delta" {
        return Ok(None);
    }
    let (Some(response_id), Some(item_id), Some(delta)) =
        (fields.response_id, fields.item_id, fields.delta)
    else {
        return Err(FastPathError::Json(serde::de::Error::custom(
            "response.output_audio.delta needs response_id, item_id and delta",
        )));
    };
    voxgate_dsp::b64::decode_into(&delta.0, out)?;
    Ok(Some(AudioDeltaIds {
        event_id: fields.event_id.map(|c| c.0),
        response_id: response_id.0,
        item_id: item_id.0,
        output_index: fields.output_index,
        content_index: fields.content_index,
    }))
}

/// Server-side hot path: parses `input_audio_buffer.append` and decodes its audio into `out`.
///
/// Returns `Ok(None)` when `text` is another event (parse it with [`ClientEvent::from_json`]),
/// otherwise `Ok(Some(event_id))`.
///
/// # Errors
/// [`FastPathError`] when the event is an append but malformed.
pub fn decode_append_event<'a>(
    text: &'a str,
    out: &mut Vec<u8>,
) -> Result<Option<Option<Cow<'a, str>>>, FastPathError> {
    if !text.contains("\"input_audio_buffer.append\"") {
        return Ok(None);
    }
    let fields: AudioEventFields<'a> = serde_json::from_str(text)?;
    if fields.kind != "input_audio_buffer.append" {
        return Ok(None);
    }
    let Some(audio) = fields.audio else {
        return Err(FastPathError::Json(serde::de::Error::custom(
            "input_audio_buffer.append needs audio",
        )));
    };
    voxgate_dsp::b64::decode_into(&audio.0, out)?;
    Ok(Some(fields.event_id.map(|c| c.0)))
}

/// Replaces the contents of `buf` with a `response.output_audio.delta` event carrying `audio`
/// as base64. Server-side counterpart of [`write_append_event`].
pub fn write_output_audio_delta(
    buf: &mut String,
    event_id: &str,
    ids: &AudioDeltaIds<'_>,
    audio: &[u8],
) {
    buf.clear();
    buf.reserve(160 + voxgate_dsp::b64::encoded_len(audio.len()));
    buf.push_str(r#"{"type":"response.output_audio.delta","event_id":""#);
    push_json_escaped(buf, event_id);
    buf.push_str(r#"","response_id":""#);
    push_json_escaped(buf, &ids.response_id);
    buf.push_str(r#"","item_id":""#);
    push_json_escaped(buf, &ids.item_id);
    buf.push_str(r#"","output_index":"#);
    push_u32(buf, ids.output_index);
    buf.push_str(r#","content_index":"#);
    push_u32(buf, ids.content_index);
    buf.push_str(r#","delta":""#);
    base64_simd::STANDARD.encode_append(audio, buf);
    buf.push_str("\"}");
}

fn push_u32(buf: &mut String, v: u32) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = write!(buf, "{v}");
}

/// Appends `s` as the inside of a JSON string literal.
fn push_json_escaped(buf: &mut String, s: &str) {
    use std::fmt::Write as _;
    for c in s.chars() {
        match c {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\t' => buf.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => buf.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Serializes, parses back, and checks equality both as values and as JSON.
    fn round_trip_client(event: ClientEvent) {
        let text = event.to_json();
        let back = ClientEvent::from_json(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(back, event, "{text}");
        assert_eq!(
            back.kind(),
            serde_json::from_str::<serde_json::Value>(&text).unwrap()["type"]
        );
    }

    fn round_trip_server(event: ServerEvent) {
        let text = event.to_json();
        let back = ServerEvent::from_json(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(
            !matches!(back, ServerEvent::Unknown(_)) || matches!(event, ServerEvent::Unknown(_)),
            "{text}"
        );
        assert_eq!(back, event, "{text}");
        assert_eq!(
            back.kind(),
            serde_json::from_str::<serde_json::Value>(&text).unwrap()["type"]
        );
    }

    fn full_session() -> Session {
        Session {
            kind: Some("realtime".into()),
            model: Some("gpt-realtime".into()),
            output_modalities: Some(vec![Modality::Audio]),
            instructions: Some("Be brief.".into()),
            audio: Some(AudioConfig {
                input: Some(AudioInput {
                    format: Some(AudioFormat::PCM24K),
                    transcription: Some(Some(InputTranscription {
                        model: Some("gpt-4o-transcribe".into()),
                        ..Default::default()
                    })),
                    turn_detection: Some(Some(TurnDetection::server_vad_default())),
                    noise_reduction: Some(None),
                }),
                output: Some(AudioOutput {
                    format: Some(AudioFormat::Pcmu),
                    voice: Some("alloy".into()),
                    speed: None,
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_client_event_round_trips() {
        let mut session_null_td = full_session();
        session_null_td
            .audio
            .as_mut()
            .unwrap()
            .input
            .as_mut()
            .unwrap()
            .turn_detection = Some(None);
        let semantic = Session {
            kind: Some("realtime".into()),
            audio: Some(AudioConfig {
                input: Some(AudioInput {
                    format: Some(AudioFormat::Pcma),
                    turn_detection: Some(Some(TurnDetection::SemanticVad {
                        eagerness: Some(Eagerness::High),
                        create_response: Some(true),
                        interrupt_response: Some(false),
                    })),
                    ..Default::default()
                }),
                output: None,
            }),
            ..Default::default()
        };
        let events = vec![
            ClientEvent::SessionUpdate {
                event_id: Some("e1".into()),
                session: full_session(),
            },
            ClientEvent::SessionUpdate {
                event_id: None,
                session: session_null_td,
            },
            ClientEvent::SessionUpdate {
                event_id: None,
                session: semantic,
            },
            ClientEvent::InputAudioBufferAppend {
                event_id: None,
                audio: "AAEC".into(),
            },
            ClientEvent::InputAudioBufferCommit {
                event_id: Some("c".into()),
            },
            ClientEvent::InputAudioBufferClear { event_id: None },
            ClientEvent::ConversationItemCreate {
                event_id: None,
                previous_item_id: Some("root".into()),
                item: Item::user_text("hello"),
            },
            ClientEvent::ConversationItemCreate {
                event_id: None,
                previous_item_id: None,
                item: Item::assistant_text("hi there"),
            },
            ClientEvent::ConversationItemCreate {
                event_id: None,
                previous_item_id: None,
                item: Item::Message {
                    id: Some("item_1".into()),
                    object: None,
                    status: None,
                    role: Role::User,
                    content: vec![ContentPart::InputAudio {
                        audio: Some("AAAA".into()),
                        transcript: None,
                    }],
                },
            },
            ClientEvent::ConversationItemTruncate {
                event_id: None,
                item_id: "item_2".into(),
                content_index: 0,
                audio_end_ms: 1500,
            },
            ClientEvent::ConversationItemDelete {
                event_id: None,
                item_id: "item_3".into(),
            },
            ClientEvent::ResponseCreate {
                event_id: None,
                response: None,
            },
            ClientEvent::ResponseCreate {
                event_id: None,
                response: Some(ResponseParams {
                    instructions: Some("say hi".into()),
                    output_modalities: Some(vec![Modality::Text]),
                    conversation: Some("none".into()),
                    ..Default::default()
                }),
            },
            ClientEvent::ResponseCancel {
                event_id: None,
                response_id: Some("resp_1".into()),
            },
            ClientEvent::ResponseCancel {
                event_id: None,
                response_id: None,
            },
        ];
        for e in events {
            round_trip_client(e);
        }
    }

    #[test]
    fn session_update_wire_shape_matches_ga() {
        let mut session = full_session();
        session
            .audio
            .as_mut()
            .unwrap()
            .input
            .as_mut()
            .unwrap()
            .turn_detection = Some(None);
        let v: serde_json::Value = serde_json::from_str(
            &ClientEvent::SessionUpdate {
                event_id: None,
                session,
            }
            .to_json(),
        )
        .unwrap();
        assert_eq!(v["type"], "session.update");
        assert_eq!(v["session"]["type"], "realtime");
        assert_eq!(
            v["session"]["audio"]["input"]["format"],
            json!({"type": "audio/pcm", "rate": 24000})
        );
        assert_eq!(
            v["session"]["audio"]["output"]["format"],
            json!({"type": "audio/pcmu"})
        );
        assert_eq!(v["session"]["audio"]["output"]["voice"], "alloy");
        // `null` must be on the wire: it is how turn detection is switched off.
        assert!(
            v["session"]["audio"]["input"]
                .as_object()
                .unwrap()
                .contains_key("turn_detection")
        );
        assert!(v["session"]["audio"]["input"]["turn_detection"].is_null());
        assert!(!v.as_object().unwrap().contains_key("event_id"));
    }

    #[test]
    fn absent_and_null_turn_detection_differ() {
        let absent: Session =
            serde_json::from_str(r#"{"type":"realtime","audio":{"input":{}}}"#).unwrap();
        assert_eq!(absent.turn_detection(), None);
        let null: Session = serde_json::from_str(
            r#"{"type":"realtime","audio":{"input":{"turn_detection":null}}}"#,
        )
        .unwrap();
        assert_eq!(null.turn_detection(), Some(None));
        let vad: Session = serde_json::from_str(
            r#"{"audio":{"input":{"turn_detection":{"type":"server_vad","threshold":0.6,"silence_duration_ms":200}}}}"#,
        )
        .unwrap();
        let Some(Some(TurnDetection::ServerVad {
            threshold,
            silence_duration_ms,
            prefix_padding_ms,
            ..
        })) = vad.turn_detection()
        else {
            panic!("server_vad expected");
        };
        assert_eq!(
            (*threshold, *silence_duration_ms, *prefix_padding_ms),
            (Some(0.6), Some(200), None)
        );
    }

    #[test]
    fn every_server_event_round_trips() {
        let response = Response {
            id: "resp_1".into(),
            object: Some("realtime.response".into()),
            status: ResponseStatus::Completed,
            status_details: None,
            output: vec![Item::Message {
                id: Some("item_9".into()),
                object: Some("realtime.item".into()),
                status: Some("completed".into()),
                role: Role::Assistant,
                content: vec![ContentPart::OutputAudio {
                    audio: None,
                    transcript: Some("Hi.".into()),
                }],
            }],
            conversation_id: Some("conv_1".into()),
            output_modalities: Some(vec![Modality::Audio]),
            usage: Some(Usage {
                total_tokens: 30,
                input_tokens: 10,
                output_tokens: 20,
                input_token_details: InputTokenDetails {
                    cached_tokens: 1,
                    text_tokens: 2,
                    audio_tokens: 7,
                    image_tokens: 0,
                },
                output_token_details: OutputTokenDetails {
                    text_tokens: 5,
                    audio_tokens: 15,
                },
            }),
            metadata: None,
        };
        let audio_part = ContentPart::OutputAudio {
            audio: None,
            transcript: None,
        };
        let ev = Some("event_1".to_string());
        let events = vec![
            ServerEvent::error(
                "invalid_request_error",
                Some("session_expired"),
                "expired",
                None,
                Some("c1"),
            ),
            ServerEvent::SessionCreated {
                event_id: ev.clone(),
                session: full_session(),
            },
            ServerEvent::SessionUpdated {
                event_id: None,
                session: full_session(),
            },
            ServerEvent::SpeechStarted {
                event_id: ev.clone(),
                audio_start_ms: 120,
                item_id: "item_1".into(),
            },
            ServerEvent::SpeechStopped {
                event_id: None,
                audio_end_ms: 980,
                item_id: "item_1".into(),
            },
            ServerEvent::InputAudioBufferCommitted {
                event_id: None,
                previous_item_id: None,
                item_id: "item_1".into(),
            },
            ServerEvent::InputAudioBufferCleared { event_id: None },
            ServerEvent::ConversationItemCreated {
                event_id: None,
                previous_item_id: None,
                item: Item::user_text("x"),
            },
            ServerEvent::ConversationItemAdded {
                event_id: None,
                previous_item_id: Some("a".into()),
                item: Item::user_text("x"),
            },
            ServerEvent::ConversationItemDone {
                event_id: None,
                previous_item_id: None,
                item: Item::assistant_text("y"),
            },
            ServerEvent::ConversationItemTruncated {
                event_id: None,
                item_id: "item_2".into(),
                content_index: 0,
                audio_end_ms: 700,
            },
            ServerEvent::ConversationItemDeleted {
                event_id: None,
                item_id: "item_2".into(),
            },
            ServerEvent::InputAudioTranscriptionDelta {
                event_id: None,
                item_id: "item_1".into(),
                content_index: 0,
                delta: "hel".into(),
            },
            ServerEvent::InputAudioTranscriptionCompleted {
                event_id: None,
                item_id: "item_1".into(),
                content_index: 0,
                transcript: "hello".into(),
            },
            ServerEvent::InputAudioTranscriptionFailed {
                event_id: None,
                item_id: "item_1".into(),
                content_index: 0,
                error: ErrorDetail::default(),
            },
            ServerEvent::ResponseCreated {
                event_id: None,
                response: Response {
                    status: ResponseStatus::InProgress,
                    output: vec![],
                    usage: None,
                    ..response.clone()
                },
            },
            ServerEvent::ResponseDone {
                event_id: None,
                response: response.clone(),
            },
            ServerEvent::OutputItemAdded {
                event_id: None,
                response_id: "resp_1".into(),
                output_index: 0,
                item: Item::assistant_text(""),
            },
            ServerEvent::OutputItemDone {
                event_id: None,
                response_id: "resp_1".into(),
                output_index: 0,
                item: Item::assistant_text("done"),
            },
            ServerEvent::ContentPartAdded {
                event_id: None,
                response_id: "r".into(),
                item_id: "i".into(),
                output_index: 0,
                content_index: 0,
                part: audio_part.clone(),
            },
            ServerEvent::ContentPartDone {
                event_id: None,
                response_id: "r".into(),
                item_id: "i".into(),
                output_index: 0,
                content_index: 0,
                part: audio_part,
            },
            ServerEvent::OutputAudioDelta {
                event_id: ev.clone(),
                response_id: "r".into(),
                item_id: "i".into(),
                output_index: 0,
                content_index: 0,
                delta: "AAAA".into(),
            },
            ServerEvent::OutputAudioDone {
                event_id: None,
                response_id: "r".into(),
                item_id: "i".into(),
                output_index: 0,
                content_index: 0,
            },
            ServerEvent::OutputAudioTranscriptDelta {
                event_id: None,
                response_id: "r".into(),
                item_id: "i".into(),
                output_index: 0,
                content_index: 0,
                delta: "Hi".into(),
            },
            ServerEvent::OutputAudioTranscriptDone {
                event_id: None,
                response_id: "r".into(),
                item_id: "i".into(),
                output_index: 0,
                content_index: 0,
                transcript: "Hi.".into(),
            },
            ServerEvent::OutputTextDelta {
                event_id: None,
                response_id: "r".into(),
                item_id: "i".into(),
                output_index: 0,
                content_index: 0,
                delta: "Hi".into(),
            },
            ServerEvent::OutputTextDone {
                event_id: None,
                response_id: "r".into(),
                item_id: "i".into(),
                output_index: 0,
                content_index: 0,
                text: "Hi.".into(),
            },
            ServerEvent::RateLimitsUpdated {
                event_id: None,
                rate_limits: vec![RateLimit {
                    name: "tokens".into(),
                    limit: 100,
                    remaining: 50,
                    reset_seconds: 1.5,
                }],
            },
            ServerEvent::Unknown(UnknownEvent {
                kind: "output_audio_buffer.started".into(),
                event_id: Some("e".into()),
                fields: json!({"response_id": "r"}).as_object().unwrap().clone(),
            }),
        ];
        for e in events {
            round_trip_server(e);
        }
    }

    #[test]
    fn parses_real_looking_ga_samples() {
        let created = r#"{"type":"session.created","event_id":"event_C9G5RJeJ2gF77mV7f2B1j","session":{"type":"realtime","object":"realtime.session","id":"sess_C9G5QPteg4UIbotdKLoYQ","model":"gpt-realtime-2025-08-28","output_modalities":["audio"],"instructions":"Your knowledge cutoff is 2023-10.","tools":[],"tool_choice":"auto","max_output_tokens":"inf","tracing":null,"prompt":null,"expires_at":1756324625,"audio":{"input":{"format":{"type":"audio/pcm","rate":24000},"transcription":null,"noise_reduction":null,"turn_detection":{"type":"server_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":200,"idle_timeout_ms":null,"create_response":true,"interrupt_response":true}},"output":{"format":{"type":"audio/pcm","rate":24000},"voice":"marin","speed":1}},"include":null}}"#;
        let ServerEvent::SessionCreated { event_id, session } =
            ServerEvent::from_json(created).unwrap()
        else {
            panic!("session.created expected");
        };
        assert_eq!(event_id.as_deref(), Some("event_C9G5RJeJ2gF77mV7f2B1j"));
        assert_eq!(session.input_format(), Some(AudioFormat::PCM24K));
        assert_eq!(session.voice(), Some("marin"));
        assert_eq!(session.extra["max_output_tokens"], "inf");
        assert!(session.turn_detection().unwrap().unwrap().create_response());

        let done = r#"{"type":"response.done","event_id":"event_CCXHxcMy86rrKhBLDdqCh","response":{"object":"realtime.response","id":"resp_CCXHw0UJld10EzIUXQCNh","status":"completed","status_details":null,"output":[{"id":"item_CCXHwGjjDUfOXbiySlK7i","type":"message","status":"completed","role":"assistant","content":[{"type":"output_audio","transcript":"Loud and clear! I can hear you perfectly."}]}],"conversation_id":"conv_CCXHsurMKcaVxIZvaCI5m","output_modalities":["audio"],"max_output_tokens":"inf","audio":{"output":{"format":{"type":"audio/pcm","rate":24000},"voice":"alloy"}},"usage":{"total_tokens":253,"input_tokens":132,"output_tokens":121,"input_token_details":{"text_tokens":119,"audio_tokens":13,"image_tokens":0,"cached_tokens":64,"cached_tokens_details":{"text_tokens":64,"audio_tokens":0,"image_tokens":0}},"output_token_details":{"text_tokens":30,"audio_tokens":91}},"metadata":null}}"#;
        let ServerEvent::ResponseDone { response, .. } = ServerEvent::from_json(done).unwrap()
        else {
            panic!("response.done expected");
        };
        assert_eq!(response.status, ResponseStatus::Completed);
        let usage = response.usage.unwrap();
        assert_eq!(
            (
                usage.total_tokens,
                usage.input_token_details.audio_tokens,
                usage.output_token_details.audio_tokens
            ),
            (253, 13, 91)
        );
        assert_eq!(response.output[0].id(), Some("item_CCXHwGjjDUfOXbiySlK7i"));

        let err = r#"{"type":"error","event_id":"event_x","error":{"type":"invalid_request_error","code":"session_expired","message":"Your session hit the maximum duration of 60 minutes.","param":null,"event_id":null}}"#;
        let ServerEvent::Error { error, .. } = ServerEvent::from_json(err).unwrap() else {
            panic!("error expected");
        };
        assert_eq!(error.code.as_deref(), Some("session_expired"));

        let started = r#"{"type":"input_audio_buffer.speech_started","event_id":"event_1","audio_start_ms":1000,"item_id":"item_003"}"#;
        assert_eq!(
            ServerEvent::from_json(started).unwrap(),
            ServerEvent::SpeechStarted {
                event_id: Some("event_1".into()),
                audio_start_ms: 1000,
                item_id: "item_003".into()
            }
        );
        let limits = r#"{"type":"rate_limits.updated","event_id":"e","rate_limits":[{"name":"requests","limit":1000,"remaining":999,"reset_seconds":60},{"name":"tokens","limit":50000,"remaining":49950,"reset_seconds":0.12}]}"#;
        let ServerEvent::RateLimitsUpdated { rate_limits, .. } =
            ServerEvent::from_json(limits).unwrap()
        else {
            panic!("rate_limits.updated expected");
        };
        assert_eq!(rate_limits[1].remaining, 49950);
    }

    #[test]
    fn beta_names_are_accepted_as_aliases() {
        let check = |beta: &str, ga: &str, extra: &str| {
            let text = format!(
                r#"{{"type":"{beta}","response_id":"r","item_id":"i","output_index":0,"content_index":0{extra}}}"#
            );
            let event = ServerEvent::from_json(&text).unwrap();
            assert!(
                !matches!(event, ServerEvent::Unknown(_)),
                "{beta} parsed as unknown"
            );
            assert_eq!(event.kind(), ga);
            // Re-serialized with the GA name.
            assert!(event.to_json().contains(&format!("\"{ga}\"")));
        };
        check(
            "response.audio.delta",
            "response.output_audio.delta",
            r#","delta":"AAAA""#,
        );
        check("response.audio.done", "response.output_audio.done", "");
        check(
            "response.audio_transcript.delta",
            "response.output_audio_transcript.delta",
            r#","delta":"he""#,
        );
        check(
            "response.audio_transcript.done",
            "response.output_audio_transcript.done",
            r#","transcript":"hey""#,
        );
        check(
            "response.text.delta",
            "response.output_text.delta",
            r#","delta":"he""#,
        );
        check(
            "response.text.done",
            "response.output_text.done",
            r#","text":"hey""#,
        );
        // Beta content part names.
        let part: ContentPart =
            serde_json::from_str(r#"{"type":"audio","transcript":"x"}"#).unwrap();
        assert_eq!(
            part,
            ContentPart::OutputAudio {
                audio: None,
                transcript: Some("x".into())
            }
        );
    }

    #[test]
    fn unknown_server_events_never_fail() {
        let text =
            r#"{"type":"output_audio_buffer.started","event_id":"event_9","response_id":"resp_1"}"#;
        let ServerEvent::Unknown(u) = ServerEvent::from_json(text).unwrap() else {
            panic!("unknown expected");
        };
        assert_eq!(u.kind, "output_audio_buffer.started");
        assert_eq!(u.event_id.as_deref(), Some("event_9"));
        assert_eq!(u.fields["response_id"], "resp_1");
        // A known type with a shape we cannot read is also kept, not an error.
        let odd = ServerEvent::from_json(r#"{"type":"response.done","response":42}"#).unwrap();
        assert_eq!(odd.kind(), "response.done");
        assert!(matches!(odd, ServerEvent::Unknown(_)));
        // Unknown item kinds inside a known event stay known events.
        let mcp = r#"{"type":"conversation.item.added","item":{"type":"mcp_call","id":"item_5"}}"#;
        let ServerEvent::ConversationItemAdded { item, .. } = ServerEvent::from_json(mcp).unwrap()
        else {
            panic!("conversation.item.added expected");
        };
        assert_eq!(item.id(), Some("item_5"));
        // Not JSON, or no type: a real error.
        assert!(ServerEvent::from_json("nope").is_err());
        assert!(ServerEvent::from_json(r#"{"event_id":"x"}"#).is_err());
    }

    #[test]
    fn unknown_client_event_is_an_error() {
        let err = ClientEvent::from_json(r#"{"type":"session.frobnicate"}"#).unwrap_err();
        assert!(err.to_string().contains("session.frobnicate"), "{err}");
    }

    #[test]
    fn append_fast_path_matches_serde() {
        let pcm: Vec<u8> = (0..=255u8).cycle().take(960).collect();
        let mut buf = String::from("stale");
        write_append_event(&mut buf, &pcm);
        assert_eq!(buf.len(), append_event_len(pcm.len()));
        let parsed = ClientEvent::from_json(&buf).unwrap();
        assert_eq!(
            parsed,
            ClientEvent::InputAudioBufferAppend {
                event_id: None,
                audio: voxgate_dsp::b64::encode(&pcm)
            }
        );
        let mut out = vec![1, 2, 3];
        assert_eq!(decode_append_event(&buf, &mut out).unwrap(), Some(None));
        assert_eq!(out, pcm);
        // Field order and event_id do not matter to the decoder.
        let reordered = r#"{"audio":"AAEC","event_id":"ev","type":"input_audio_buffer.append"}"#;
        assert_eq!(
            decode_append_event(reordered, &mut out).unwrap(),
            Some(Some(Cow::Borrowed("ev")))
        );
        assert_eq!(out, [0, 1, 2]);
        assert!(
            decode_append_event(r#"{"type":"input_audio_buffer.commit"}"#, &mut out)
                .unwrap()
                .is_none()
        );
        assert!(
            decode_append_event(
                r#"{"type":"input_audio_buffer.append","audio":"!!"}"#,
                &mut out
            )
            .is_err()
        );
        assert!(decode_append_event(r#"{"type":"input_audio_buffer.append"}"#, &mut out).is_err());
    }

    #[test]
    fn output_delta_fast_path_matches_serde() {
        let pcm: Vec<u8> = (0..4800u32).map(|i| (i * 7) as u8).collect();
        let ids = AudioDeltaIds {
            event_id: None,
            response_id: Cow::Borrowed("resp_\"q\""),
            item_id: Cow::Borrowed("item_1"),
            output_index: 0,
            content_index: 3,
        };
        let mut buf = String::new();
        write_output_audio_delta(&mut buf, "event_7", &ids, &pcm);
        let ServerEvent::OutputAudioDelta {
            event_id,
            response_id,
            item_id,
            content_index,
            delta,
            ..
        } = ServerEvent::from_json(&buf).unwrap()
        else {
            panic!("audio delta expected: {buf}");
        };
        assert_eq!(
            (
                event_id.as_deref(),
                response_id.as_str(),
                item_id.as_str(),
                content_index
            ),
            (Some("event_7"), "resp_\"q\"", "item_1", 3)
        );
        assert_eq!(voxgate_dsp::b64::decode(&delta).unwrap(), pcm);

        let mut out = Vec::new();
        let got = decode_output_audio_delta(&buf, &mut out).unwrap().unwrap();
        assert_eq!(got.response_id, "resp_\"q\"");
        assert_eq!(got.item_id, "item_1");
        assert!(
            matches!(got.item_id, Cow::Borrowed(_)),
            "unescaped ids are borrowed"
        );
        assert_eq!(got.event_id.as_deref(), Some("event_7"));
        assert_eq!(out, pcm);

        // Beta name, other field order.
        let beta = r#"{"delta":"AAEC","item_id":"i","response_id":"r","type":"response.audio.delta","event_id":"e"}"#;
        let got = decode_output_audio_delta(beta, &mut out).unwrap().unwrap();
        assert_eq!(
            (got.item_id.as_ref(), out.as_slice()),
            ("i", &[0u8, 1, 2][..])
        );
        // Other events are left to the generic parser, even when they mention the name.
        let transcript = r#"{"type":"response.output_audio_transcript.delta","response_id":"r","item_id":"i","delta":"response.output_audio.delta"}"#;
        assert!(
            decode_output_audio_delta(transcript, &mut out)
                .unwrap()
                .is_none()
        );
        let sneaky = r#"{"type":"response.output_text.delta","response_id":"r","item_id":"i","delta":"\"response.output_audio.delta\""}"#;
        assert!(
            decode_output_audio_delta(sneaky, &mut out)
                .unwrap()
                .is_none()
        );
        assert!(
            decode_output_audio_delta(
                r#"{"type":"response.output_audio.delta","item_id":"i"}"#,
                &mut out
            )
            .is_err()
        );
    }

    #[test]
    fn audio_format_durations() {
        assert_eq!(AudioFormat::PCM24K.duration_ms(48_000), 1000);
        assert_eq!(AudioFormat::Pcmu.duration_ms(160), 20);
        assert_eq!(AudioFormat::Pcma.sample_rate(), 8000);
        assert_eq!(
            serde_json::from_str::<AudioFormat>(r#"{"type":"audio/pcm"}"#).unwrap(),
            AudioFormat::PCM24K
        );
    }

    #[test]
    fn usage_accumulates() {
        let one = Usage {
            total_tokens: 3,
            input_tokens: 1,
            output_tokens: 2,
            ..Default::default()
        };
        let mut sum = Usage::default();
        sum.accumulate(&one);
        sum.accumulate(&one);
        assert_eq!(
            (sum.total_tokens, sum.input_tokens, sum.output_tokens),
            (6, 2, 4)
        );
    }
}
