//! The sans-IO core of the local engine: one [`LocalEngine`] per connection.
//!
//! Client events, appended audio, synthesized speech and the current time go in; server events
//! come out of [`LocalEngine::poll_output`]. There are no sockets, clocks or tasks in here: the
//! caller passes `now` (time since any fixed origin) and asks [`LocalEngine::poll_timeout`] when
//! to call [`LocalEngine::handle_timeout`] next. That makes every sequence testable with exact
//! timing.
//!
//! # Pacing
//! Voice replies are sent like a real model streams them: the first `prebuffer_ms` (200 ms) at
//! once, then one `chunk_ms` (40 ms) delta each time playback time catches up, i.e. at real-time
//! speed times `pace` (1.0 by default). A client therefore never holds more than about
//! `prebuffer_ms` of unplayed bot audio, which is what makes barge-in and truncation realistic.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use voxgate_dsp::vad::{Vad, VadConfig, VadEvent};

use super::codec;
use super::reply::{self, Heard};
use crate::voice::protocol::openai::{
    AudioConfig, AudioFormat, AudioInput, AudioOutput, ClientEvent, ContentPart, Eagerness,
    InputTokenDetails, Item, Modality, OutputTokenDetails, Response, ResponseParams,
    ResponseStatus, Role, ServerEvent, Session, StatusDetails, TurnDetection, Usage,
};

/// What the engine does with a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineMode {
    /// Detects turns with the VAD and answers each with speech.
    #[default]
    Voice,
    /// Returns every appended chunk at once as an audio delta (for latency measurement).
    Echo,
}

/// Per-connection settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Voice or echo.
    pub mode: EngineMode,
    /// Model name reported in the session.
    pub model: String,
    /// Default voice name reported in the session.
    pub voice: String,
    /// Default instructions.
    pub instructions: String,
    /// Playback speed multiplier of the pacing (1.0 = real time).
    pub pace: f32,
    /// Audio sent at once at the start of a reply, in ms.
    pub prebuffer_ms: u32,
    /// Audio per delta, in ms.
    pub chunk_ms: u32,
    /// After this long the session ends with `error` code `session_expired`, as OpenAI does
    /// after 60 minutes. `None` never expires.
    pub max_session: Option<Duration>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            mode: EngineMode::Voice,
            model: "gpt-realtime".to_owned(),
            voice: "alloy".to_owned(),
            instructions: String::new(),
            pace: 1.0,
            prebuffer_ms: 200,
            chunk_ms: 40,
            max_session: Some(Duration::from_secs(60 * 60)),
        }
    }
}

/// One audio delta to send (kept apart from [`ServerEvent`] so the driver can serialize it on
/// the fast path).
#[derive(Debug, Clone, PartialEq)]
pub struct AudioOut {
    /// The response.
    pub response_id: Arc<str>,
    /// The assistant item.
    pub item_id: Arc<str>,
    /// Wire audio in the session's output format.
    pub bytes: Vec<u8>,
}

/// A request for speech; answer with [`LocalEngine::synthesis_done`].
#[derive(Debug, Clone, PartialEq)]
pub struct SynthesisRequest {
    /// The response the speech is for.
    pub response_id: Arc<str>,
    /// What to say.
    pub text: String,
}

/// Something the driver must do.
// Outputs are queued and drained at once after each input, never stored in bulk, so the size of
// the event variant costs nothing worth a box per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send this event.
    Event(ServerEvent),
    /// Send this audio as `response.output_audio.delta`.
    Audio(AudioOut),
    /// Synthesize speech and pass it back.
    Synthesize(SynthesisRequest),
    /// Close the connection (after sending everything before this).
    Close {
        /// WebSocket close code.
        code: u16,
        /// Close reason.
        reason: &'static str,
    },
}

/// Ids like OpenAI's: a prefix, a per-connection random part, and a counter.
#[derive(Debug)]
struct IdGen {
    base: String,
    next: u64,
}

impl IdGen {
    fn new(seed: u64) -> Self {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut x = seed | 1;
        let base = (0..12)
            .map(|_| {
                // xorshift64: enough to make ids of different connections differ.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
            })
            .collect();
        IdGen { base, next: 0 }
    }

    fn make(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}_{}{:06}", self.base, self.next)
    }
}

/// One item of the conversation, as far as the engine needs to remember it.
#[derive(Debug, Clone)]
struct ConvItem {
    id: String,
    role: Role,
    /// Text content (user text, or the assistant's transcript).
    text: Option<String>,
    /// Audio length in ms: committed user audio, or assistant audio produced so far.
    audio_ms: u64,
    /// Whether the item has audio (only audio items can be truncated).
    has_audio: bool,
}

/// A reply being produced.
#[derive(Debug)]
struct ActiveResponse {
    id: Arc<str>,
    item_id: Arc<str>,
    modality: Modality,
    /// Whether the reply joins the conversation (`conversation: "none"` is out of band).
    in_conversation: bool,
    text: String,
    /// Bytes of `text` already sent as transcript deltas.
    transcript_sent: usize,
    /// Wire audio of the whole reply, once synthesized.
    audio: Option<Vec<u8>>,
    /// Wire bytes already sent.
    sent: usize,
    /// When the audio became available (origin of the pacing schedule).
    audio_t0: Duration,
    metadata: Option<serde_json::Value>,
    /// Input tokens charged for this reply.
    input_usage: InputTokenDetails,
}

/// The echo mode's long-lived response.
#[derive(Debug)]
struct EchoResponse {
    id: Arc<str>,
    item_id: Arc<str>,
    bytes: usize,
}

/// One engine session (one connection).
#[derive(Debug)]
pub struct LocalEngine {
    settings: EngineSettings,
    ids: IdGen,
    session: Session,
    input_format: AudioFormat,
    output_format: AudioFormat,
    turn_detection: Option<TurnDetection>,
    output_modalities: Vec<Modality>,
    vad: Option<Vad>,
    /// Input sample count at which the VAD's sample offsets start.
    vad_origin: u64,
    vad_events: Vec<VadEvent>,
    scratch: Vec<f32>,
    /// Every input sample ever appended (OpenAI's `audio_start_ms` counts from the session start).
    input_samples: u64,
    /// Where the uncommitted input buffer starts.
    buffer_start: u64,
    /// Speech in progress: its item id and start (in input samples).
    speech: Option<(String, u64)>,
    items: Vec<ConvItem>,
    response: Option<ActiveResponse>,
    echo: Option<EchoResponse>,
    out: VecDeque<Output>,
    expired: bool,
}

impl LocalEngine {
    /// A new session. `seed` makes ids unique per connection; `created_unix` is the wall-clock
    /// time (s) used for `expires_at`. Emits `session.created`.
    pub fn new(settings: EngineSettings, seed: u64, created_unix: i64) -> Self {
        let mut ids = IdGen::new(seed);
        let expires_at = settings
            .max_session
            .map(|d| created_unix.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
        let turn_detection = match settings.mode {
            EngineMode::Voice => Some(TurnDetection::server_vad_default()),
            EngineMode::Echo => None,
        };
        let session = Session {
            kind: Some("realtime".to_owned()),
            id: Some(ids.make("sess")),
            object: Some("realtime.session".to_owned()),
            model: Some(settings.model.clone()),
            instructions: Some(settings.instructions.clone()),
            expires_at,
            ..Session::default()
        };
        let mut engine = LocalEngine {
            ids,
            session,
            input_format: AudioFormat::PCM24K,
            output_format: AudioFormat::PCM24K,
            turn_detection,
            output_modalities: vec![Modality::Audio],
            vad: None,
            vad_origin: 0,
            vad_events: Vec::new(),
            scratch: Vec::new(),
            input_samples: 0,
            buffer_start: 0,
            speech: None,
            items: Vec::new(),
            response: None,
            echo: None,
            out: VecDeque::new(),
            expired: false,
            settings,
        };
        engine.rebuild_vad();
        let session = engine.effective_session();
        engine.emit(ServerEvent::SessionCreated {
            event_id: None,
            session,
        });
        engine
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The mode of this session.
    pub fn mode(&self) -> EngineMode {
        self.settings.mode
    }

    /// A fresh server event id (for audio deltas serialized by the driver).
    pub fn next_event_id(&mut self) -> String {
        self.ids.make("event")
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let pacing = self.response.as_ref().and_then(|r| {
            let audio = r.audio.as_ref()?;
            if r.sent >= audio.len() {
                return Some(r.audio_t0);
            }
            let target = r.sent + self.chunk_bytes().min(audio.len() - r.sent);
            Some(r.audio_t0 + self.time_for_bytes(target))
        });
        let expiry = if self.expired {
            None
        } else {
            self.settings.max_session
        };
        match (pacing, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Advances time: sends the audio that is due, finishes replies, expires the session.
    pub fn handle_timeout(&mut self, now: Duration) {
        if let Some(max) = self.settings.max_session
            && now >= max
            && !self.expired
        {
            self.expired = true;
            self.cancel_response("turn_detected");
            self.emit(ServerEvent::error(
                "invalid_request_error",
                Some("session_expired"),
                format!(
                    "Your session hit the maximum duration of {} minutes.",
                    max.as_secs() / 60
                ),
                None,
                None,
            ));
            self.out.push_back(Output::Close {
                code: 1000,
                reason: "session expired",
            });
            return;
        }
        self.send_due_audio(now);
    }

    /// Handles one client event (other than appends on the fast path; those may come here too).
    pub fn handle_event(&mut self, event: ClientEvent, now: Duration) {
        if self.expired {
            return;
        }
        match event {
            ClientEvent::SessionUpdate { event_id, session } => {
                self.update_session(session, event_id)
            }
            ClientEvent::InputAudioBufferAppend { event_id, audio } => {
                match voxgate_dsp::b64::decode(&audio) {
                    Ok(bytes) => self.append_audio(&bytes, event_id.as_deref(), now),
                    Err(e) => self.invalid(
                        event_id.as_deref(),
                        "audio",
                        format!("Invalid 'audio': {e}"),
                    ),
                }
            }
            ClientEvent::InputAudioBufferCommit { event_id } => self.commit(event_id.as_deref()),
            ClientEvent::InputAudioBufferClear { .. } => self.clear_buffer(),
            ClientEvent::ConversationItemCreate {
                event_id,
                previous_item_id,
                item,
            } => self.create_item(item, previous_item_id, event_id.as_deref()),
            ClientEvent::ConversationItemTruncate {
                event_id,
                item_id,
                content_index,
                audio_end_ms,
            } => self.truncate(&item_id, content_index, audio_end_ms, event_id.as_deref()),
            ClientEvent::ConversationItemDelete { event_id, item_id } => {
                self.delete_item(&item_id, event_id.as_deref())
            }
            ClientEvent::ResponseCreate { event_id, response } => {
                self.create_response(response.unwrap_or_default(), event_id.as_deref(), now)
            }
            ClientEvent::ResponseCancel {
                event_id,
                response_id,
            } => self.cancel_by_client(response_id.as_deref(), event_id.as_deref()),
        }
    }

    /// Reports a client message the driver could not turn into an event (bad JSON, unknown type,
    /// binary frame) as an `error` event; the session goes on, as with OpenAI.
    pub fn handle_protocol_error(&mut self, code: &str, message: &str, param: Option<&str>) {
        self.emit(ServerEvent::error(
            "invalid_request_error",
            Some(code),
            message,
            param,
            None,
        ));
    }

    /// Appends wire audio (already base64-decoded) to the input buffer.
    pub fn append_audio(&mut self, audio: &[u8], event_id: Option<&str>, now: Duration) {
        if self.expired {
            return;
        }
        let samples = (audio.len() / self.input_format.bytes_per_sample()) as u64;
        if self.input_format.bytes_per_sample() == 2 && !audio.len().is_multiple_of(2) {
            self.invalid(
                event_id,
                "audio",
                format!(
                    "Invalid 'audio': PCM16 needs an even number of bytes, got {}",
                    audio.len()
                ),
            );
            return;
        }
        self.input_samples += samples;
        match self.settings.mode {
            EngineMode::Echo => self.echo(audio),
            EngineMode::Voice => self.run_vad(audio, now),
        }
    }

    /// Delivers speech for a reply requested with [`Output::Synthesize`]. Ignored if that
    /// reply has ended meanwhile (cancelled or interrupted).
    pub fn synthesis_done(
        &mut self,
        response_id: &str,
        samples: &[f32],
        sample_rate: u32,
        now: Duration,
    ) {
        let format = self.output_format;
        let Some(response) = self.response.as_mut().filter(|r| &*r.id == response_id) else {
            return;
        };
        let clip = match codec::resample_clip(samples, sample_rate, format.sample_rate()) {
            Ok(clip) => clip,
            Err(e) => {
                tracing::warn!(error = %e, sample_rate, "cannot resample synthesized speech; sending silence");
                vec![0.0; format.sample_rate() as usize / 2]
            }
        };
        let mut wire = Vec::with_capacity(clip.len() * format.bytes_per_sample());
        codec::encode_wire(format, &clip, &mut wire);
        response.audio = Some(wire);
        response.audio_t0 = now;
        self.send_due_audio(now);
    }

    // -----------------------------------------------------------------------------------------
    // Session
    // -----------------------------------------------------------------------------------------

    fn effective_session(&self) -> Session {
        let mut session = self.session.clone();
        session.output_modalities = Some(self.output_modalities.clone());
        let mut audio = self.session.audio.clone().unwrap_or_default();
        let input = audio.input.get_or_insert_with(AudioInput::default);
        input.format = Some(self.input_format);
        input.turn_detection = Some(self.turn_detection.clone());
        input.transcription.get_or_insert(None);
        input.noise_reduction.get_or_insert(None);
        let output = audio.output.get_or_insert_with(AudioOutput::default);
        output.format = Some(self.output_format);
        output
            .voice
            .get_or_insert_with(|| self.settings.voice.clone());
        output.speed.get_or_insert(1.0);
        session.audio = Some(audio);
        session
    }

    fn update_session(&mut self, update: Session, event_id: Option<String>) {
        let caused_by = event_id.as_deref();
        if let Some(kind) = update.kind.as_deref()
            && kind != "realtime"
        {
            self.invalid(
                caused_by,
                "session.type",
                format!("Invalid value: '{kind}'. This endpoint only serves 'realtime' sessions."),
            );
            return;
        }
        let audio = update.audio.unwrap_or_default();
        let input = audio.input.unwrap_or_default();
        let output = audio.output.unwrap_or_default();
        for (format, param) in [
            (input.format, "session.audio.input.format.rate"),
            (output.format, "session.audio.output.format.rate"),
        ] {
            if let Some(AudioFormat::Pcm { rate }) = format
                && rate != 24_000
            {
                self.invalid(
                    caused_by,
                    param,
                    format!("Invalid value: {rate}. Supported values are: 24000."),
                );
                return;
            }
        }
        if let Some(Some(TurnDetection::ServerVad {
            threshold: Some(t), ..
        })) = &input.turn_detection
            && !(0.0..=1.0).contains(t)
        {
            self.invalid(
                caused_by,
                "session.audio.input.turn_detection.threshold",
                format!("Invalid value: {t}. Expected a number between 0 and 1."),
            );
            return;
        }

        let mut vad_changed = false;
        if let Some(format) = input.format {
            vad_changed |= format != self.input_format;
            self.input_format = format;
        }
        if let Some(format) = output.format {
            self.output_format = format;
        }
        // Echo mode has no turns: it keeps turn detection off whatever the client asks.
        if let Some(td) = input.turn_detection
            && self.settings.mode == EngineMode::Voice
        {
            vad_changed |= td != self.turn_detection;
            self.turn_detection = td;
        }
        if let Some(modalities) = update.output_modalities {
            self.output_modalities = modalities;
        }
        if let Some(instructions) = update.instructions {
            self.session.instructions = Some(instructions);
        }
        let stored = self.session.audio.get_or_insert_with(AudioConfig::default);
        let stored_in = stored.input.get_or_insert_with(AudioInput::default);
        if let Some(t) = input.transcription {
            stored_in.transcription = Some(t);
        }
        if let Some(n) = input.noise_reduction {
            stored_in.noise_reduction = Some(n);
        }
        let stored_out = stored.output.get_or_insert_with(AudioOutput::default);
        if let Some(voice) = output.voice {
            stored_out.voice = Some(voice);
        }
        if let Some(speed) = output.speed {
            stored_out.speed = Some(speed);
        }
        self.session.extra.extend(update.extra);
        if vad_changed {
            self.rebuild_vad();
        }
        let session = self.effective_session();
        self.emit(ServerEvent::SessionUpdated {
            event_id: None,
            session,
        });
    }

    fn rebuild_vad(&mut self) {
        self.vad = None;
        self.speech = None;
        self.vad_origin = self.input_samples;
        let config = match &self.turn_detection {
            None => return,
            Some(TurnDetection::ServerVad {
                threshold,
                prefix_padding_ms,
                silence_duration_ms,
                ..
            }) => VadConfig {
                threshold: threshold.unwrap_or(0.5),
                prefix_padding_ms: prefix_padding_ms.unwrap_or(300),
                silence_duration_ms: silence_duration_ms.unwrap_or(500),
            },
            // There is no semantic model here: eagerness maps to how much silence ends a turn.
            Some(TurnDetection::SemanticVad { eagerness, .. }) => VadConfig {
                silence_duration_ms: match eagerness {
                    Some(Eagerness::High) => 250,
                    Some(Eagerness::Low) => 1000,
                    _ => 500,
                },
                ..VadConfig::default()
            },
        };
        match Vad::new(config, self.input_format.sample_rate()) {
            Ok(vad) => self.vad = Some(vad),
            Err(e) => tracing::warn!(error = %e, "cannot build the VAD; turn detection is off"),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Input
    // -----------------------------------------------------------------------------------------

    fn input_ms(&self, samples: u64) -> u64 {
        samples * 1000 / u64::from(self.input_format.sample_rate().max(1))
    }

    fn run_vad(&mut self, audio: &[u8], now: Duration) {
        let Some(vad) = self.vad.as_mut() else {
            return;
        };
        self.scratch.clear();
        // Odd PCM lengths were rejected by the caller.
        let _ = codec::decode_wire(self.input_format, audio, &mut self.scratch);
        self.vad_events.clear();
        vad.process(&self.scratch, &mut self.vad_events);
        let events = std::mem::take(&mut self.vad_events);
        for event in &events {
            match *event {
                VadEvent::SpeechStarted { sample_offset } => {
                    let at = self.vad_origin + sample_offset;
                    self.speech_started(at);
                }
                VadEvent::SpeechStopped { sample_offset } => {
                    let at = self.vad_origin + sample_offset;
                    self.speech_stopped(at, now);
                }
            }
        }
        self.vad_events = events;
    }

    fn speech_started(&mut self, at: u64) {
        let item_id = self.ids.make("item");
        self.emit(ServerEvent::SpeechStarted {
            event_id: None,
            audio_start_ms: self.input_ms(at),
            item_id: item_id.clone(),
        });
        // Audio before the padded speech start is not part of the user's turn.
        self.buffer_start = self.buffer_start.max(at);
        self.speech = Some((item_id, at));
        let interrupt = self
            .turn_detection
            .as_ref()
            .is_some_and(|td| td.interrupt_response());
        if interrupt {
            self.cancel_response("turn_detected");
        }
    }

    fn speech_stopped(&mut self, at: u64, now: Duration) {
        let Some((item_id, start)) = self.speech.take() else {
            return;
        };
        self.emit(ServerEvent::SpeechStopped {
            event_id: None,
            audio_end_ms: self.input_ms(at),
            item_id: item_id.clone(),
        });
        let audio_ms = self.input_ms(at.saturating_sub(start));
        self.buffer_start = self.input_samples;
        self.add_user_audio_item(item_id, audio_ms);
        let create = self
            .turn_detection
            .as_ref()
            .is_some_and(|td| td.create_response());
        if create && self.response.is_none() {
            self.create_response(ResponseParams::default(), None, now);
        }
    }

    fn add_user_audio_item(&mut self, item_id: String, audio_ms: u64) {
        let previous_item_id = self.items.last().map(|i| i.id.clone());
        self.emit(ServerEvent::InputAudioBufferCommitted {
            event_id: None,
            previous_item_id: previous_item_id.clone(),
            item_id: item_id.clone(),
        });
        let item = Item::Message {
            id: Some(item_id.clone()),
            object: Some("realtime.item".to_owned()),
            status: Some("completed".to_owned()),
            role: Role::User,
            content: vec![ContentPart::InputAudio {
                audio: None,
                transcript: None,
            }],
        };
        self.items.push(ConvItem {
            id: item_id,
            role: Role::User,
            text: None,
            audio_ms,
            has_audio: true,
        });
        self.emit(ServerEvent::ConversationItemAdded {
            event_id: None,
            previous_item_id: previous_item_id.clone(),
            item: item.clone(),
        });
        self.emit(ServerEvent::ConversationItemDone {
            event_id: None,
            previous_item_id,
            item,
        });
    }

    fn commit(&mut self, caused_by: Option<&str>) {
        if self.settings.mode == EngineMode::Echo {
            // A commit ends the current echo turn.
            self.finish_echo(ResponseStatus::Completed, None);
            self.buffer_start = self.input_samples;
            return;
        }
        let buffered = self.input_samples.saturating_sub(self.buffer_start);
        let ms = self.input_ms(buffered);
        if ms < 100 {
            self.emit(ServerEvent::error(
                "invalid_request_error",
                Some("input_audio_buffer_commit_empty"),
                format!(
                    "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but buffer only has {ms}.00ms of audio."
                ),
                None,
                caused_by,
            ));
            return;
        }
        let item_id = match self.speech.take() {
            Some((id, _)) => id,
            None => self.ids.make("item"),
        };
        self.buffer_start = self.input_samples;
        if let Some(vad) = self.vad.as_mut() {
            // The committed audio is gone; the detector starts afresh on what comes next.
            vad.reset();
            self.vad_origin = self.input_samples;
        }
        self.add_user_audio_item(item_id, ms);
    }

    fn clear_buffer(&mut self) {
        self.buffer_start = self.input_samples;
        self.speech = None;
        if let Some(vad) = self.vad.as_mut() {
            vad.reset();
            self.vad_origin = self.input_samples;
        }
        self.emit(ServerEvent::InputAudioBufferCleared { event_id: None });
    }

    // -----------------------------------------------------------------------------------------
    // Conversation items
    // -----------------------------------------------------------------------------------------

    fn create_item(
        &mut self,
        mut item: Item,
        previous_item_id: Option<String>,
        caused_by: Option<&str>,
    ) {
        let position = match previous_item_id.as_deref() {
            None => self.items.len(),
            Some("root") => 0,
            Some(prev) => match self.items.iter().position(|i| i.id == prev) {
                Some(p) => p + 1,
                None => {
                    self.invalid(
                        caused_by,
                        "previous_item_id",
                        format!("Invalid 'previous_item_id': no item with id '{prev}'."),
                    );
                    return;
                }
            },
        };
        let id = match item.id() {
            Some(id) if self.items.iter().any(|i| i.id == id) => {
                self.invalid(
                    caused_by,
                    "item.id",
                    format!("Item with id '{id}' already exists."),
                );
                return;
            }
            Some(id) => id.to_owned(),
            None => {
                let id = self.ids.make("item");
                if let Item::Message { id: slot, .. }
                | Item::FunctionCall { id: slot, .. }
                | Item::FunctionCallOutput { id: slot, .. } = &mut item
                {
                    *slot = Some(id.clone());
                }
                id
            }
        };
        let (role, text, has_audio) = match &item {
            Item::Message { role, content, .. } => {
                let text: Vec<&str> = content
                    .iter()
                    .filter_map(|part| match part {
                        ContentPart::InputText { text } | ContentPart::OutputText { text } => {
                            Some(text.as_str())
                        }
                        ContentPart::InputAudio { transcript, .. }
                        | ContentPart::OutputAudio { transcript, .. } => transcript.as_deref(),
                        ContentPart::Other(_) => None,
                    })
                    .collect();
                let has_audio = content.iter().any(|p| {
                    matches!(
                        p,
                        ContentPart::InputAudio { .. } | ContentPart::OutputAudio { .. }
                    )
                });
                (*role, (!text.is_empty()).then(|| text.join(" ")), has_audio)
            }
            _ => (Role::System, None, false),
        };
        let previous = position.checked_sub(1).map(|p| self.items[p].id.clone());
        self.items.insert(
            position,
            ConvItem {
                id,
                role,
                text,
                audio_ms: 0,
                has_audio,
            },
        );
        self.emit(ServerEvent::ConversationItemAdded {
            event_id: None,
            previous_item_id: previous.clone(),
            item: item.clone(),
        });
        self.emit(ServerEvent::ConversationItemDone {
            event_id: None,
            previous_item_id: previous,
            item,
        });
    }

    fn delete_item(&mut self, item_id: &str, caused_by: Option<&str>) {
        match self.items.iter().position(|i| i.id == item_id) {
            Some(p) => {
                self.items.remove(p);
                self.emit(ServerEvent::ConversationItemDeleted {
                    event_id: None,
                    item_id: item_id.to_owned(),
                });
            }
            None => self.invalid(
                caused_by,
                "item_id",
                format!("Invalid 'item_id': no item with id '{item_id}'."),
            ),
        }
    }

    fn truncate(
        &mut self,
        item_id: &str,
        content_index: u32,
        audio_end_ms: u64,
        caused_by: Option<&str>,
    ) {
        let Some(pos) = self.items.iter().position(|i| i.id == item_id) else {
            self.invalid(
                caused_by,
                "item_id",
                format!("Invalid 'item_id': no item with id '{item_id}'."),
            );
            return;
        };
        let item = &self.items[pos];
        if item.role != Role::Assistant || !item.has_audio {
            self.invalid(
                caused_by,
                "item_id",
                format!("Only assistant messages with audio can be truncated; '{item_id}' cannot."),
            );
            return;
        }
        if content_index != 0 {
            self.invalid(
                caused_by,
                "content_index",
                format!("Invalid 'content_index': {content_index}. The item has one content part."),
            );
            return;
        }
        let produced = self.produced_ms(pos);
        if audio_end_ms > produced {
            // The same check (and wording) as OpenAI: a relay that truncates past what the model
            // produced gets this error, which is why the gateway clamps.
            self.invalid(
                caused_by,
                "audio_end_ms",
                format!("Audio content of {produced}ms is already shorter than {audio_end_ms}ms"),
            );
            return;
        }
        if self
            .response
            .as_ref()
            .is_some_and(|r| &*r.item_id == item_id)
        {
            self.cancel_response("client_cancelled");
        }
        let item = &mut self.items[pos];
        item.audio_ms = audio_end_ms;
        // OpenAI drops the transcript of a truncated item so the text matches what was heard.
        item.text = None;
        self.emit(ServerEvent::ConversationItemTruncated {
            event_id: None,
            item_id: item_id.to_owned(),
            content_index,
            audio_end_ms,
        });
    }

    /// Audio of item `pos` produced so far, in ms.
    fn produced_ms(&self, pos: usize) -> u64 {
        let item = &self.items[pos];
        match (&self.response, &self.echo) {
            (Some(r), _) if *r.item_id == item.id => self.output_format.duration_ms(r.sent),
            (_, Some(e)) if *e.item_id == item.id => self.output_format.duration_ms(e.bytes),
            _ => item.audio_ms,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Responses
    // -----------------------------------------------------------------------------------------

    fn create_response(&mut self, params: ResponseParams, caused_by: Option<&str>, now: Duration) {
        if self.settings.mode == EngineMode::Echo {
            // Echo answers appends, not turns: there is nothing to generate.
            return;
        }
        if let Some(active) = &self.response {
            let message = format!(
                "Conversation already has an active response in progress: {}. Wait until the response is finished before creating a new one.",
                active.id
            );
            self.emit(ServerEvent::error(
                "invalid_request_error",
                Some("conversation_already_has_active_response"),
                message,
                None,
                caused_by,
            ));
            return;
        }
        let in_conversation = params.conversation.as_deref() != Some("none");
        let heard = self.last_heard(params.input.as_deref());
        let text = reply::reply_text(&heard);
        let modality = params
            .output_modalities
            .as_deref()
            .unwrap_or(&self.output_modalities)
            .first()
            .copied()
            .unwrap_or(Modality::Audio);
        let id: Arc<str> = self.ids.make("resp").into();
        let item_id: Arc<str> = self.ids.make("item").into();
        let input_usage = self.input_usage();
        let response = ActiveResponse {
            id: id.clone(),
            item_id: item_id.clone(),
            modality,
            in_conversation,
            text,
            transcript_sent: 0,
            audio: None,
            sent: 0,
            audio_t0: now,
            metadata: params.metadata,
            input_usage,
        };
        self.open_response(
            &id,
            &item_id,
            modality,
            in_conversation,
            response.metadata.clone(),
        );
        match modality {
            Modality::Audio => {
                let request = SynthesisRequest {
                    response_id: id,
                    text: response.text.clone(),
                };
                self.response = Some(response);
                self.out.push_back(Output::Synthesize(request));
            }
            Modality::Text => {
                // Text needs no pacing: stream the words and finish at once.
                let ids = (id.to_string(), item_id.to_string());
                for word in split_words(&response.text) {
                    self.emit(ServerEvent::OutputTextDelta {
                        event_id: None,
                        response_id: ids.0.clone(),
                        item_id: ids.1.clone(),
                        output_index: 0,
                        content_index: 0,
                        delta: word.to_owned(),
                    });
                }
                self.response = Some(ActiveResponse {
                    transcript_sent: response.text.len(),
                    ..response
                });
                self.finish_response(ResponseStatus::Completed, None);
            }
        }
    }

    /// Opens a response the way OpenAI does: `response.created`, `response.output_item.added`, then
    /// `conversation.item.added` when it joins the conversation, then `response.content_part.added`.
    fn open_response(
        &mut self,
        id: &str,
        item_id: &str,
        modality: Modality,
        in_conversation: bool,
        metadata: Option<serde_json::Value>,
    ) {
        self.emit(ServerEvent::ResponseCreated {
            event_id: None,
            response: Response {
                id: id.to_owned(),
                object: Some("realtime.response".to_owned()),
                status: ResponseStatus::InProgress,
                status_details: None,
                output: Vec::new(),
                conversation_id: in_conversation.then(|| "conv_local".to_owned()),
                output_modalities: Some(vec![modality]),
                usage: None,
                metadata,
            },
        });
        let item = assistant_item(item_id, "in_progress", Vec::new());
        self.emit(ServerEvent::OutputItemAdded {
            event_id: None,
            response_id: id.to_owned(),
            output_index: 0,
            item: item.clone(),
        });
        if in_conversation {
            let previous_item_id = self.items.last().map(|i| i.id.clone());
            self.items.push(ConvItem {
                id: item_id.to_owned(),
                role: Role::Assistant,
                text: None,
                audio_ms: 0,
                has_audio: modality == Modality::Audio,
            });
            self.emit(ServerEvent::ConversationItemAdded {
                event_id: None,
                previous_item_id,
                item,
            });
        }
        self.emit(ServerEvent::ContentPartAdded {
            event_id: None,
            response_id: id.to_owned(),
            item_id: item_id.to_owned(),
            output_index: 0,
            content_index: 0,
            part: empty_part(modality),
        });
    }

    /// What the reply should talk about: the last user item (or the given input items).
    fn last_heard(&self, input: Option<&[Item]>) -> Heard {
        if let Some(items) = input {
            for item in items.iter().rev() {
                if let Item::Message {
                    role: Role::User,
                    content,
                    ..
                } = item
                {
                    for part in content {
                        if let ContentPart::InputText { text } = part {
                            return Heard::Text(text.clone());
                        }
                    }
                }
            }
            return Heard::Nothing;
        }
        match self.items.iter().rev().find(|i| i.role == Role::User) {
            Some(ConvItem {
                text: Some(text), ..
            }) => Heard::Text(text.clone()),
            Some(ConvItem {
                audio_ms,
                has_audio: true,
                ..
            }) => Heard::Audio { ms: *audio_ms },
            _ => Heard::Nothing,
        }
    }

    /// Token estimate of the conversation as input: about 10 tokens per second of user audio and
    /// a token per 4 characters of text, like OpenAI's published rates.
    fn input_usage(&self) -> InputTokenDetails {
        let audio_ms: u64 = self
            .items
            .iter()
            .filter(|i| i.role == Role::User)
            .map(|i| i.audio_ms)
            .sum();
        let text_chars: usize = self
            .items
            .iter()
            .filter_map(|i| i.text.as_ref())
            .map(String::len)
            .sum::<usize>()
            + self.session.instructions.as_ref().map_or(0, String::len);
        InputTokenDetails {
            cached_tokens: 0,
            text_tokens: (text_chars as u64).div_ceil(4),
            audio_tokens: audio_ms.div_ceil(100),
            image_tokens: 0,
        }
    }

    fn bytes_per_second(&self) -> u64 {
        u64::from(self.output_format.sample_rate()) * self.output_format.bytes_per_sample() as u64
    }

    fn chunk_bytes(&self) -> usize {
        let bps = self.output_format.bytes_per_sample();
        let bytes =
            (self.bytes_per_second() * u64::from(self.settings.chunk_ms.max(1)) / 1000) as usize;
        (bytes / bps).max(1) * bps
    }

    fn prebuffer_bytes(&self) -> usize {
        (self.bytes_per_second() * u64::from(self.settings.prebuffer_ms) / 1000) as usize
    }

    /// Time after the audio start at which `bytes` may have been sent.
    fn time_for_bytes(&self, bytes: usize) -> Duration {
        let paced = bytes.saturating_sub(self.prebuffer_bytes()) as f64;
        let rate = self.bytes_per_second() as f64 * f64::from(self.settings.pace.max(0.01));
        Duration::from_secs_f64(paced / rate)
    }

    fn send_due_audio(&mut self, now: Duration) {
        let chunk = self.chunk_bytes();
        loop {
            let Some(r) = self.response.as_ref() else {
                return;
            };
            let Some(audio) = r.audio.as_ref() else {
                return;
            };
            if r.sent >= audio.len() {
                self.finish_response(ResponseStatus::Completed, None);
                return;
            }
            let end = (r.sent + chunk).min(audio.len());
            if r.audio_t0 + self.time_for_bytes(end) > now {
                return;
            }
            let total = audio.len();
            let bytes = audio[r.sent..end].to_vec();
            let (response_id, item_id) = (r.id.clone(), r.item_id.clone());
            // The transcript runs slightly ahead of the audio, as OpenAI's does.
            let transcript_target =
                ((r.text.len() as u64 * (end + chunk) as u64) / total as u64) as usize;
            self.send_transcript_up_to(transcript_target);
            self.out.push_back(Output::Audio(AudioOut {
                response_id,
                item_id,
                bytes,
            }));
            if let Some(r) = self.response.as_mut() {
                r.sent = end;
            }
        }
    }

    /// Sends transcript deltas up to the first word boundary at or after `target` bytes.
    fn send_transcript_up_to(&mut self, target: usize) {
        let Some(r) = self.response.as_mut() else {
            return;
        };
        if r.transcript_sent >= r.text.len() || target <= r.transcript_sent {
            return;
        }
        let mut end = target.min(r.text.len());
        while end < r.text.len() && !r.text.is_char_boundary(end) {
            end += 1;
        }
        end = r.text[end..]
            .find(' ')
            .map_or(r.text.len(), |p| end + p + 1);
        let delta = r.text[r.transcript_sent..end].to_owned();
        r.transcript_sent = end;
        let (response_id, item_id) = (r.id.to_string(), r.item_id.to_string());
        self.emit(ServerEvent::OutputAudioTranscriptDelta {
            event_id: None,
            response_id,
            item_id,
            output_index: 0,
            content_index: 0,
            delta,
        });
    }

    fn cancel_by_client(&mut self, response_id: Option<&str>, caused_by: Option<&str>) {
        let active = self
            .response
            .as_ref()
            .map(|r| r.id.clone())
            .or_else(|| self.echo.as_ref().map(|e| e.id.clone()));
        match (active, response_id) {
            (Some(active), Some(wanted)) if &*active != wanted => self.emit(ServerEvent::error(
                "invalid_request_error",
                Some("response_cancel_not_active"),
                format!("Cancellation failed: response '{wanted}' is not active."),
                Some("response_id"),
                caused_by,
            )),
            (Some(_), _) => {
                if self.response.is_some() {
                    self.cancel_response("client_cancelled");
                } else {
                    self.finish_echo(ResponseStatus::Cancelled, Some("client_cancelled"));
                }
            }
            (None, _) => self.emit(ServerEvent::error(
                "invalid_request_error",
                Some("response_cancel_not_active"),
                "Cancellation failed: no active response found",
                None,
                caused_by,
            )),
        }
    }

    fn cancel_response(&mut self, reason: &'static str) {
        if self.response.is_some() {
            self.finish_response(ResponseStatus::Cancelled, Some(reason));
        }
    }

    /// Ends the active response: the closing events of its part and item, then `response.done`.
    fn finish_response(&mut self, status: ResponseStatus, reason: Option<&'static str>) {
        let Some(r) = self.response.take() else {
            return;
        };
        let (response_id, item_id) = (r.id.to_string(), r.item_id.to_string());
        let said = r.text[..r.transcript_sent].to_owned();
        let produced_ms = self.output_format.duration_ms(r.sent);
        let item_status = if status == ResponseStatus::Completed {
            "completed"
        } else {
            "incomplete"
        };
        let part = match r.modality {
            Modality::Audio => {
                self.emit(ServerEvent::OutputAudioDone {
                    event_id: None,
                    response_id: response_id.clone(),
                    item_id: item_id.clone(),
                    output_index: 0,
                    content_index: 0,
                });
                self.emit(ServerEvent::OutputAudioTranscriptDone {
                    event_id: None,
                    response_id: response_id.clone(),
                    item_id: item_id.clone(),
                    output_index: 0,
                    content_index: 0,
                    transcript: said.clone(),
                });
                ContentPart::OutputAudio {
                    audio: None,
                    transcript: Some(said.clone()),
                }
            }
            Modality::Text => {
                self.emit(ServerEvent::OutputTextDone {
                    event_id: None,
                    response_id: response_id.clone(),
                    item_id: item_id.clone(),
                    output_index: 0,
                    content_index: 0,
                    text: said.clone(),
                });
                ContentPart::OutputText { text: said.clone() }
            }
        };
        self.emit(ServerEvent::ContentPartDone {
            event_id: None,
            response_id: response_id.clone(),
            item_id: item_id.clone(),
            output_index: 0,
            content_index: 0,
            part: part.clone(),
        });
        let item = assistant_item(&item_id, item_status, vec![part]);
        self.emit(ServerEvent::OutputItemDone {
            event_id: None,
            response_id: response_id.clone(),
            output_index: 0,
            item: item.clone(),
        });
        if r.in_conversation
            && let Some(pos) = self.items.iter().position(|i| i.id == item_id)
        {
            let stored = &mut self.items[pos];
            stored.audio_ms = produced_ms;
            stored.text = Some(said.clone());
            let previous_item_id = pos.checked_sub(1).map(|p| self.items[p].id.clone());
            self.emit(ServerEvent::ConversationItemDone {
                event_id: None,
                previous_item_id,
                item: item.clone(),
            });
        }
        // Output estimate: about 20 tokens per second of audio, a token per 4 characters of text.
        let output_details = OutputTokenDetails {
            text_tokens: (said.len() as u64).div_ceil(4),
            audio_tokens: produced_ms.div_ceil(50),
        };
        let usage = usage_of(r.input_usage, output_details);
        self.emit(ServerEvent::ResponseDone {
            event_id: None,
            response: Response {
                id: response_id,
                object: Some("realtime.response".to_owned()),
                status,
                status_details: Some(StatusDetails {
                    kind: Some(status_name(status).to_owned()),
                    reason: reason.map(str::to_owned),
                    error: None,
                }),
                output: vec![item],
                conversation_id: r.in_conversation.then(|| "conv_local".to_owned()),
                output_modalities: Some(vec![r.modality]),
                usage: Some(usage),
                metadata: r.metadata,
            },
        });
    }

    // -----------------------------------------------------------------------------------------
    // Echo
    // -----------------------------------------------------------------------------------------

    fn echo(&mut self, audio: &[u8]) {
        if self.echo.is_none() {
            let id: Arc<str> = self.ids.make("resp").into();
            let item_id: Arc<str> = self.ids.make("item").into();
            self.open_response(&id, &item_id, Modality::Audio, true, None);
            self.echo = Some(EchoResponse {
                id,
                item_id,
                bytes: 0,
            });
        }
        let bytes = if self.input_format == self.output_format {
            audio.to_vec()
        } else {
            self.transcode(audio)
        };
        if let Some(echo) = self.echo.as_mut() {
            echo.bytes += bytes.len();
            let (response_id, item_id) = (echo.id.clone(), echo.item_id.clone());
            self.out.push_back(Output::Audio(AudioOut {
                response_id,
                item_id,
                bytes,
            }));
        }
    }

    /// Converts input audio to the output format (echo with different formats each way).
    fn transcode(&mut self, audio: &[u8]) -> Vec<u8> {
        self.scratch.clear();
        let _ = codec::decode_wire(self.input_format, audio, &mut self.scratch);
        let (from, to) = (
            self.input_format.sample_rate(),
            self.output_format.sample_rate(),
        );
        let samples = codec::resample_clip(&self.scratch, from, to).unwrap_or_default();
        let mut out = Vec::with_capacity(samples.len() * 2);
        codec::encode_wire(self.output_format, &samples, &mut out);
        out
    }

    fn finish_echo(&mut self, status: ResponseStatus, reason: Option<&'static str>) {
        let Some(echo) = self.echo.take() else {
            return;
        };
        let produced_ms = self.output_format.duration_ms(echo.bytes);
        if let Some(item) = self.items.iter_mut().find(|i| *i.id == *echo.item_id) {
            item.audio_ms = produced_ms;
        }
        let item_status = if status == ResponseStatus::Completed {
            "completed"
        } else {
            "incomplete"
        };
        let part = ContentPart::OutputAudio {
            audio: None,
            transcript: None,
        };
        self.emit(ServerEvent::OutputAudioDone {
            event_id: None,
            response_id: echo.id.to_string(),
            item_id: echo.item_id.to_string(),
            output_index: 0,
            content_index: 0,
        });
        let item = assistant_item(&echo.item_id, item_status, vec![part]);
        self.emit(ServerEvent::OutputItemDone {
            event_id: None,
            response_id: echo.id.to_string(),
            output_index: 0,
            item,
        });
        self.emit(ServerEvent::ResponseDone {
            event_id: None,
            response: Response {
                id: echo.id.to_string(),
                object: Some("realtime.response".to_owned()),
                status,
                status_details: Some(StatusDetails {
                    kind: Some(status_name(status).to_owned()),
                    reason: reason.map(str::to_owned),
                    error: None,
                }),
                output: Vec::new(),
                conversation_id: Some("conv_local".to_owned()),
                output_modalities: Some(vec![Modality::Audio]),
                usage: Some(usage_of(
                    InputTokenDetails {
                        audio_tokens: produced_ms.div_ceil(100),
                        ..Default::default()
                    },
                    OutputTokenDetails {
                        text_tokens: 0,
                        audio_tokens: produced_ms.div_ceil(50),
                    },
                )),
                metadata: None,
            },
        });
    }

    // -----------------------------------------------------------------------------------------
    // Helpers
    // -----------------------------------------------------------------------------------------

    fn emit(&mut self, mut event: ServerEvent) {
        *event.event_id_mut() = Some(self.ids.make("event"));
        self.out.push_back(Output::Event(event));
    }

    fn invalid(&mut self, caused_by: Option<&str>, param: &str, message: String) {
        self.emit(ServerEvent::error(
            "invalid_request_error",
            Some("invalid_value"),
            message,
            Some(param),
            caused_by,
        ));
    }
}

fn status_name(status: ResponseStatus) -> &'static str {
    match status {
        ResponseStatus::InProgress => "in_progress",
        ResponseStatus::Completed => "completed",
        ResponseStatus::Cancelled => "cancelled",
        ResponseStatus::Incomplete => "incomplete",
        ResponseStatus::Failed => "failed",
        ResponseStatus::Unknown => "unknown",
    }
}

fn usage_of(input: InputTokenDetails, output: OutputTokenDetails) -> Usage {
    let input_tokens = input.text_tokens + input.audio_tokens;
    let output_tokens = output.text_tokens + output.audio_tokens;
    Usage {
        total_tokens: input_tokens + output_tokens,
        input_tokens,
        output_tokens,
        input_token_details: input,
        output_token_details: output,
    }
}

fn assistant_item(id: &str, status: &str, content: Vec<ContentPart>) -> Item {
    Item::Message {
        id: Some(id.to_owned()),
        object: Some("realtime.item".to_owned()),
        status: Some(status.to_owned()),
        role: Role::Assistant,
        content,
    }
}

fn empty_part(modality: Modality) -> ContentPart {
    match modality {
        Modality::Audio => ContentPart::OutputAudio {
            audio: None,
            transcript: Some(String::new()),
        },
        Modality::Text => ContentPart::OutputText {
            text: String::new(),
        },
    }
}

/// Splits text into deltas of one word each, keeping the spaces (so they concatenate back).
fn split_words(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn engine(mode: EngineMode) -> LocalEngine {
        let settings = EngineSettings {
            mode,
            max_session: None,
            ..EngineSettings::default()
        };
        LocalEngine::new(settings, 7, 1_700_000_000)
    }

    /// Drains the outputs: events by wire type, audio as `"audio:<bytes>"`, synthesis requests as
    /// `"synthesize:<text>"`.
    fn drain(engine: &mut LocalEngine) -> (Vec<String>, Vec<Output>) {
        let mut names = Vec::new();
        let mut all = Vec::new();
        while let Some(out) = engine.poll_output() {
            names.push(match &out {
                Output::Event(e) => e.kind().to_owned(),
                Output::Audio(a) => format!("audio:{}", a.bytes.len()),
                Output::Synthesize(s) => format!("synthesize:{}", s.text),
                Output::Close { code, .. } => format!("close:{code}"),
            });
            all.push(out);
        }
        (names, all)
    }

    fn events(outputs: &[Output]) -> impl Iterator<Item = &ServerEvent> {
        outputs.iter().filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
    }

    fn error_of(outputs: &[Output]) -> crate::voice::protocol::openai::ErrorDetail {
        events(outputs)
            .find_map(|e| match e {
                ServerEvent::Error { error, .. } => Some(error.clone()),
                _ => None,
            })
            .expect("an error event")
    }

    fn manual_turns(engine: &mut LocalEngine) {
        let session: Session = serde_json::from_str(
            r#"{"type":"realtime","audio":{"input":{"turn_detection":null}}}"#,
        )
        .unwrap();
        engine.handle_event(
            ClientEvent::SessionUpdate {
                event_id: None,
                session,
            },
            Duration::ZERO,
        );
        drain(engine);
    }

    /// Appends `ms` of PCM16 silence, commits and asks for a response; returns the response id.
    fn ask(engine: &mut LocalEngine, ms: usize, now: Duration) -> Arc<str> {
        engine.append_audio(&vec![0u8; ms * 48], None, now);
        engine.handle_event(ClientEvent::InputAudioBufferCommit { event_id: None }, now);
        engine.handle_event(
            ClientEvent::ResponseCreate {
                event_id: None,
                response: None,
            },
            now,
        );
        let (_, outputs) = drain(engine);
        outputs
            .iter()
            .find_map(|o| match o {
                Output::Synthesize(s) => Some(s.response_id.clone()),
                _ => None,
            })
            .expect("a synthesis request")
    }

    #[test]
    fn session_created_first_then_updates_merge() {
        let mut e = engine(EngineMode::Voice);
        let (names, outputs) = drain(&mut e);
        assert_eq!(names, ["session.created"]);
        let ServerEvent::SessionCreated { session, event_id } = &events(&outputs).next().unwrap()
        else {
            unreachable!()
        };
        assert!(event_id.as_deref().unwrap().starts_with("event_"));
        assert_eq!(session.kind.as_deref(), Some("realtime"));
        assert_eq!(session.input_format(), Some(AudioFormat::PCM24K));
        assert_eq!(session.voice(), Some("alloy"));
        assert_eq!(session.expires_at, None, "this session never expires");
        assert!(matches!(
            session.turn_detection(),
            Some(Some(TurnDetection::ServerVad { .. }))
        ));

        let update: Session = serde_json::from_str(
            r#"{"type":"realtime","instructions":"Be brief.","tools":[],
                "audio":{"input":{"format":{"type":"audio/pcmu"},"turn_detection":null},
                         "output":{"format":{"type":"audio/pcma"},"voice":"marin"}}}"#,
        )
        .unwrap();
        e.handle_event(
            ClientEvent::SessionUpdate {
                event_id: None,
                session: update,
            },
            Duration::ZERO,
        );
        let (names, outputs) = drain(&mut e);
        assert_eq!(names, ["session.updated"]);
        let ServerEvent::SessionUpdated { session, .. } = events(&outputs).next().unwrap() else {
            unreachable!()
        };
        assert_eq!(session.input_format(), Some(AudioFormat::Pcmu));
        assert_eq!(session.output_format(), Some(AudioFormat::Pcma));
        assert_eq!(session.voice(), Some("marin"));
        assert_eq!(session.turn_detection(), Some(None));
        assert_eq!(session.instructions.as_deref(), Some("Be brief."));
        assert!(session.extra.contains_key("tools"));
    }

    #[test]
    fn bad_session_updates_are_errors_and_change_nothing() {
        let mut e = engine(EngineMode::Voice);
        drain(&mut e);
        let check = |e: &mut LocalEngine, json: &str, param: &str| {
            let session: Session = serde_json::from_str(json).unwrap();
            e.handle_event(
                ClientEvent::SessionUpdate {
                    event_id: Some("ev1".into()),
                    session,
                },
                Duration::ZERO,
            );
            let (names, outputs) = drain(e);
            assert_eq!(names, ["error"], "{json}");
            let error = error_of(&outputs);
            assert_eq!(error.param.as_deref(), Some(param));
            assert_eq!(error.event_id.as_deref(), Some("ev1"));
        };
        check(
            &mut e,
            r#"{"audio":{"input":{"format":{"type":"audio/pcm","rate":16000}}}}"#,
            "session.audio.input.format.rate",
        );
        check(&mut e, r#"{"type":"transcription"}"#, "session.type");
        check(
            &mut e,
            r#"{"audio":{"input":{"turn_detection":{"type":"server_vad","threshold":3}}}}"#,
            "session.audio.input.turn_detection.threshold",
        );
        assert_eq!(e.input_format, AudioFormat::PCM24K);
    }

    #[test]
    fn a_turn_produces_the_full_openai_sequence_paced_in_real_time() {
        let mut e = engine(EngineMode::Voice);
        drain(&mut e);
        manual_turns(&mut e);
        e.append_audio(&vec![0u8; 1500 * 48], None, Duration::ZERO);
        e.handle_event(
            ClientEvent::InputAudioBufferCommit { event_id: None },
            Duration::ZERO,
        );
        e.handle_event(
            ClientEvent::ResponseCreate {
                event_id: None,
                response: None,
            },
            Duration::ZERO,
        );
        let (names, outputs) = drain(&mut e);
        assert_eq!(
            names,
            [
                "input_audio_buffer.committed",
                "conversation.item.added",
                "conversation.item.done",
                "response.created",
                "response.output_item.added",
                "conversation.item.added",
                "response.content_part.added",
                "synthesize:I heard about 1.5 seconds of audio.",
            ]
        );
        let Some(Output::Synthesize(request)) = outputs.last() else {
            unreachable!()
        };
        // Nothing is due before the speech exists.
        assert_eq!(e.poll_timeout(), None);

        // One second of "speech" at 24 kHz arrives at t = 100 ms.
        let t0 = 100 * MS;
        e.synthesis_done(&request.response_id, &vec![0.1; 24_000], 24_000, t0);
        let (names, _) = drain(&mut e);
        let audio: Vec<&String> = names.iter().filter(|n| n.starts_with("audio:")).collect();
        // The 200 ms head start: five 40 ms deltas of 1920 bytes, with the transcript ahead of them.
        assert_eq!(audio, vec!["audio:1920"; 5]);
        assert_eq!(names[0], "response.output_audio_transcript.delta");
        // The next delta is due when playback reaches 240 - 200 = 40 ms after t0.
        assert_eq!(e.poll_timeout(), Some(t0 + 40 * MS));
        e.handle_timeout(t0 + 39 * MS);
        assert!(drain(&mut e).0.is_empty(), "nothing early");
        e.handle_timeout(t0 + 40 * MS);
        assert_eq!(
            drain(&mut e)
                .0
                .iter()
                .filter(|n| n.starts_with("audio:"))
                .count(),
            1
        );

        // Run the clock to the end of the clip (800 ms after t0 for 1 s with a 200 ms head start).
        let mut total = 6 * 1920;
        let mut names = Vec::new();
        let mut transcript = String::new();
        let mut finished_at = None;
        while let Some(at) = e.poll_timeout() {
            assert!(
                at <= t0 + 800 * MS,
                "paced no slower than real time: {at:?}"
            );
            e.handle_timeout(at);
            let (n, outputs) = drain(&mut e);
            total += n.iter().filter(|n| n.starts_with("audio:")).count() * 1920;
            for event in events(&outputs) {
                if let ServerEvent::OutputAudioTranscriptDelta { delta, .. } = event {
                    transcript.push_str(delta);
                }
                if let ServerEvent::ResponseDone { response, .. } = event {
                    assert_eq!(response.status, ResponseStatus::Completed);
                    let usage = response.usage.unwrap();
                    assert_eq!(usage.output_token_details.audio_tokens, 20, "1 s of audio");
                    assert_eq!(usage.input_token_details.audio_tokens, 15, "1.5 s heard");
                    assert_eq!(usage.total_tokens, usage.input_tokens + usage.output_tokens);
                    finished_at = Some(at);
                }
            }
            names.extend(n);
        }
        assert_eq!(
            total, 48_000,
            "every sample of the clip is sent exactly once"
        );
        assert_eq!(finished_at, Some(t0 + 800 * MS));
        let tail: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !n.starts_with("audio:"))
            .collect();
        assert_eq!(
            &tail[tail.len() - 6..],
            [
                "response.output_audio.done",
                "response.output_audio_transcript.done",
                "response.content_part.done",
                "response.output_item.done",
                "conversation.item.done",
                "response.done",
            ]
        );
        assert!(e.poll_timeout().is_none());
        assert!(transcript.len() <= "I heard about 1.5 seconds of audio.".len());
    }

    #[test]
    fn cancel_stops_audio_at_once() {
        let mut e = engine(EngineMode::Voice);
        drain(&mut e);
        manual_turns(&mut e);
        let id = ask(&mut e, 500, Duration::ZERO);
        e.synthesis_done(&id, &vec![0.1; 48_000], 24_000, Duration::ZERO);
        drain(&mut e);
        e.handle_event(
            ClientEvent::ResponseCancel {
                event_id: None,
                response_id: Some(id.to_string()),
            },
            10 * MS,
        );
        let (names, outputs) = drain(&mut e);
        assert_eq!(names.last().map(String::as_str), Some("response.done"));
        assert!(!names.iter().any(|n| n.starts_with("audio:")));
        let Some(ServerEvent::ResponseDone { response, .. }) = events(&outputs).last() else {
            unreachable!()
        };
        assert_eq!(response.status, ResponseStatus::Cancelled);
        assert_eq!(
            response.status_details.as_ref().unwrap().reason.as_deref(),
            Some("client_cancelled")
        );
        // No more deltas, however long we wait; speech arriving late is ignored.
        assert_eq!(e.poll_timeout(), None);
        e.handle_timeout(Duration::from_secs(5));
        e.synthesis_done(&id, &[0.1; 100], 24_000, Duration::from_secs(5));
        assert!(drain(&mut e).0.is_empty());
        // A second cancel has nothing to cancel.
        e.handle_event(
            ClientEvent::ResponseCancel {
                event_id: None,
                response_id: None,
            },
            20 * MS,
        );
        assert_eq!(
            error_of(&drain(&mut e).1).code.as_deref(),
            Some("response_cancel_not_active")
        );
    }

    #[test]
    fn truncate_beyond_produced_audio_is_an_error_like_openai() {
        let mut e = engine(EngineMode::Voice);
        drain(&mut e);
        manual_turns(&mut e);
        let id = ask(&mut e, 500, Duration::ZERO);
        e.synthesis_done(&id, &vec![0.1; 48_000], 24_000, Duration::ZERO);
        let (_, outputs) = drain(&mut e);
        let item_id = outputs
            .iter()
            .find_map(|o| match o {
                Output::Audio(a) => Some(a.item_id.to_string()),
                _ => None,
            })
            .unwrap();
        // 200 ms were produced (the head start); the client claims 900 ms were played.
        let truncate = |ms| ClientEvent::ConversationItemTruncate {
            event_id: Some("t1".into()),
            item_id: item_id.clone(),
            content_index: 0,
            audio_end_ms: ms,
        };
        e.handle_event(truncate(900), 10 * MS);
        let (names, outputs) = drain(&mut e);
        assert_eq!(names, ["error"]);
        let error = error_of(&outputs);
        assert_eq!(
            error.message,
            "Audio content of 200ms is already shorter than 900ms"
        );
        assert_eq!(
            (error.code.as_deref(), error.param.as_deref()),
            (Some("invalid_value"), Some("audio_end_ms"))
        );
        assert_eq!(error.event_id.as_deref(), Some("t1"));
        // Within the produced audio it works, and ends the response it belongs to.
        e.handle_event(truncate(150), 10 * MS);
        let (names, outputs) = drain(&mut e);
        assert_eq!(
            names.last().map(String::as_str),
            Some("conversation.item.truncated")
        );
        assert!(names.contains(&"response.done".to_owned()));
        assert!(matches!(
            events(&outputs).last(),
            Some(ServerEvent::ConversationItemTruncated {
                audio_end_ms: 150,
                ..
            })
        ));
        // The item now holds 150 ms: truncating to 151 fails.
        e.handle_event(truncate(151), 20 * MS);
        assert_eq!(
            error_of(&drain(&mut e).1).message,
            "Audio content of 150ms is already shorter than 151ms"
        );
        // Unknown items and user items cannot be truncated.
        e.handle_event(
            ClientEvent::ConversationItemTruncate {
                event_id: None,
                item_id: "nope".into(),
                content_index: 0,
                audio_end_ms: 0,
            },
            20 * MS,
        );
        assert_eq!(error_of(&drain(&mut e).1).param.as_deref(), Some("item_id"));
    }

    #[test]
    fn one_response_at_a_time_and_empty_commits_fail() {
        let mut e = engine(EngineMode::Voice);
        drain(&mut e);
        manual_turns(&mut e);
        e.handle_event(
            ClientEvent::InputAudioBufferCommit { event_id: None },
            Duration::ZERO,
        );
        assert_eq!(
            error_of(&drain(&mut e).1).code.as_deref(),
            Some("input_audio_buffer_commit_empty")
        );
        ask(&mut e, 300, Duration::ZERO);
        e.handle_event(
            ClientEvent::ResponseCreate {
                event_id: None,
                response: None,
            },
            Duration::ZERO,
        );
        assert_eq!(
            error_of(&drain(&mut e).1).code.as_deref(),
            Some("conversation_already_has_active_response")
        );
        // Clearing drops buffered audio.
        e.append_audio(&[0u8; 9600], None, Duration::ZERO);
        e.handle_event(
            ClientEvent::InputAudioBufferClear { event_id: None },
            Duration::ZERO,
        );
        assert_eq!(drain(&mut e).0, ["input_audio_buffer.cleared"]);
        e.handle_event(
            ClientEvent::InputAudioBufferCommit { event_id: None },
            Duration::ZERO,
        );
        assert_eq!(
            error_of(&drain(&mut e).1).code.as_deref(),
            Some("input_audio_buffer_commit_empty")
        );
        // Odd PCM16 lengths are rejected.
        e.append_audio(&[0u8; 3], Some("odd"), Duration::ZERO);
        assert_eq!(error_of(&drain(&mut e).1).event_id.as_deref(), Some("odd"));
    }

    #[test]
    fn text_items_and_text_responses() {
        let mut e = engine(EngineMode::Voice);
        drain(&mut e);
        e.handle_event(
            ClientEvent::ConversationItemCreate {
                event_id: None,
                previous_item_id: None,
                item: Item::user_text("bonjour"),
            },
            Duration::ZERO,
        );
        assert_eq!(
            drain(&mut e).0,
            ["conversation.item.added", "conversation.item.done"]
        );
        let params = ResponseParams {
            output_modalities: Some(vec![Modality::Text]),
            ..Default::default()
        };
        e.handle_event(
            ClientEvent::ResponseCreate {
                event_id: None,
                response: Some(params),
            },
            Duration::ZERO,
        );
        let (names, outputs) = drain(&mut e);
        assert!(names.contains(&"response.output_text.delta".to_owned()));
        let text: String = events(&outputs)
            .filter_map(|e| match e {
                ServerEvent::OutputTextDelta { delta, .. } => Some(delta.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "You said: bonjour");
        assert_eq!(names.last().map(String::as_str), Some("response.done"));
        // Deleting works once.
        let id = e.items[0].id.clone();
        e.handle_event(
            ClientEvent::ConversationItemDelete {
                event_id: None,
                item_id: id.clone(),
            },
            Duration::ZERO,
        );
        assert_eq!(drain(&mut e).0, ["conversation.item.deleted"]);
        e.handle_event(
            ClientEvent::ConversationItemDelete {
                event_id: None,
                item_id: id,
            },
            Duration::ZERO,
        );
        assert_eq!(drain(&mut e).0, ["error"]);
    }

    #[test]
    fn echo_returns_each_chunk_byte_for_byte() {
        let mut e = engine(EngineMode::Echo);
        drain(&mut e);
        let chunk: Vec<u8> = (0..960u32).map(|i| (i * 31) as u8).collect();
        e.append_audio(&chunk, None, Duration::ZERO);
        let (names, outputs) = drain(&mut e);
        assert_eq!(
            names,
            [
                "response.created",
                "response.output_item.added",
                "conversation.item.added",
                "response.content_part.added",
                "audio:960",
            ]
        );
        let Some(Output::Audio(first)) = outputs.last() else {
            unreachable!()
        };
        assert_eq!(first.bytes, chunk);
        for n in 0..3u8 {
            let chunk = vec![n; 480];
            e.append_audio(&chunk, None, Duration::ZERO);
            let (_, outputs) = drain(&mut e);
            assert_eq!(
                outputs,
                [Output::Audio(AudioOut {
                    bytes: chunk,
                    ..first.clone()
                })]
            );
        }
        // Echo ignores VAD and pacing; a commit ends the echo turn.
        assert_eq!(e.poll_timeout(), None);
        e.handle_event(
            ClientEvent::InputAudioBufferCommit { event_id: None },
            Duration::ZERO,
        );
        assert_eq!(
            drain(&mut e).0.last().map(String::as_str),
            Some("response.done")
        );
    }

    #[test]
    fn echo_converts_between_formats() {
        let mut e = engine(EngineMode::Echo);
        let update: Session =
            serde_json::from_str(r#"{"audio":{"input":{"format":{"type":"audio/pcmu"}}}}"#)
                .unwrap();
        e.handle_event(
            ClientEvent::SessionUpdate {
                event_id: None,
                session: update,
            },
            Duration::ZERO,
        );
        drain(&mut e);
        e.append_audio(&[0xFF; 160], None, Duration::ZERO);
        let (names, _) = drain(&mut e);
        // 20 ms of 8 kHz mu-law becomes 20 ms of 24 kHz PCM16.
        assert_eq!(names.last().map(String::as_str), Some("audio:960"));
    }

    #[test]
    fn sessions_expire_like_openai() {
        let settings = EngineSettings {
            max_session: Some(Duration::from_secs(60)),
            ..EngineSettings::default()
        };
        let mut e = LocalEngine::new(settings, 1, 0);
        let (_, created) = drain(&mut e);
        let Some(ServerEvent::SessionCreated { session, .. }) = events(&created).next() else {
            unreachable!()
        };
        assert_eq!(session.expires_at, Some(60));
        assert_eq!(e.poll_timeout(), Some(Duration::from_secs(60)));
        e.handle_timeout(Duration::from_secs(60));
        let (names, outputs) = drain(&mut e);
        assert_eq!(names, ["error", "close:1000"]);
        assert_eq!(error_of(&outputs).code.as_deref(), Some("session_expired"));
        assert_eq!(e.poll_timeout(), None);
    }
}
