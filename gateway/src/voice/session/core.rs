//! The decision core of a voice session, sans-IO.
//!
//! [`SessionCore`] takes [`Event`]s and the current [`Instant`] and queues [`Action`]s; it owns no
//! socket, no task and no clock. The actor in `session.rs` feeds it what the client transport and
//! the upstream report, and carries out its orders. Everything that needs judgement lives here:
//! when the session is ready, what a client message means, barge-in and the truncation position,
//! drop policy for input while the upstream is away, reconnect backoff, session rollover, the
//! idle timeout and the input flood guard.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::convert::{InputConverter, OutputConverter};
use super::metrics::SessionMetrics;
use crate::voice::protocol::okti::{
    self, AudioFormat, ClientMessage, FrameError, ParseError, SEED_SAMPLE_RATE, ServerMessage,
};
pub use crate::voice::protocol::openai::Usage;

/// Close code for a normal end (idle timeout).
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code when the server goes away (shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code for a policy violation (input flood).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code when the upstream cannot be used (fatal upstream error, retries exhausted).
pub const CLOSE_INTERNAL: u16 = 1011;
/// Close code when the server is at capacity.
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;

/// Tuning of one session; built from `Config::voice` by the service.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A session with no client message and no bot audio for this long is closed.
    pub idle_timeout: Duration,
    /// Largest binary audio frame accepted from the client, in bytes.
    pub max_audio_frame_bytes: usize,
    /// Input faster than this many times real time, sustained past the burst, is a flood.
    pub flood_factor: u32,
    /// Seconds of input audio a client may send at once (a backlog after `ready`) before the
    /// flood guard counts.
    pub flood_burst: Duration,
    /// Gather client audio for this long before one `input_audio_buffer.append`; zero forwards
    /// each frame as it arrives.
    pub append_batch: Duration,
    /// First reconnect delay; doubled per failed attempt up to `reconnect_max`, with jitter.
    pub reconnect_base: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Consecutive failed connects after which the session gives up.
    pub max_reconnect_attempts: u32,
    /// True when the upstream runs no turn detection, so `user_audio_end` must ask for a response.
    pub manual_turns: bool,
    /// Conversation items kept for replay on rollover or recovery.
    pub history_items: usize,
    /// Roll over to a fresh upstream session this long after one became ready (providers cap
    /// session length); `None` waits for the upstream's `session_expired`.
    pub rollover_after: Option<Duration>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: Duration::from_secs(300),
            max_audio_frame_bytes: 256 * 1024,
            flood_factor: 4,
            flood_burst: Duration::from_secs(10),
            append_batch: Duration::ZERO,
            reconnect_base: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(10),
            max_reconnect_attempts: 8,
            manual_turns: false,
            history_items: 64,
            rollover_after: None,
        }
    }
}

/// What the upstream said, reduced to what a session needs. Upstream adapters map their wire events
/// (OpenAI GA and beta names) onto this.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelEvent<'a> {
    /// `session.created`: the upstream accepted the connection.
    SessionCreated,
    /// `session.updated`: our configuration is in force.
    SessionUpdated,
    /// `input_audio_buffer.speech_started`.
    SpeechStarted,
    /// `input_audio_buffer.speech_stopped`.
    SpeechStopped,
    /// `response.created`.
    ResponseCreated {
        /// The response id.
        response_id: &'a str,
    },
    /// `response.output_audio.delta` (beta `response.audio.delta`), decoded to PCM16 24 kHz.
    AudioDelta {
        /// The response id.
        response_id: &'a str,
        /// The assistant item that carries the audio.
        item_id: &'a str,
        /// PCM16 little-endian, 24 kHz mono.
        pcm: Bytes,
    },
    /// `response.output_audio.done`.
    AudioDone {
        /// The response id.
        response_id: &'a str,
    },
    /// `response.output_audio_transcript.delta`.
    TranscriptDelta {
        /// The response id.
        response_id: &'a str,
        /// Text to append.
        delta: &'a str,
    },
    /// `response.output_audio_transcript.done`.
    TranscriptDone {
        /// The response id.
        response_id: &'a str,
        /// The whole transcript of the item.
        transcript: &'a str,
    },
    /// `conversation.item.input_audio_transcription.completed`.
    UserTranscript {
        /// What the user said.
        transcript: &'a str,
    },
    /// `response.done`.
    ResponseDone {
        /// The response id.
        response_id: &'a str,
        /// Token usage, when reported.
        usage: Option<Usage>,
    },
    /// `error`.
    Error {
        /// `error.type`, e.g. `invalid_request_error`.
        kind: Option<&'a str>,
        /// `error.code`, e.g. `session_expired`.
        code: Option<&'a str>,
        /// `error.message`.
        message: &'a str,
    },
    /// Anything else (`rate_limits.updated`, `conversation.item.created`, …): nothing to decide.
    Other,
}

/// Everything that can happen to a session.
#[derive(Debug)]
pub enum Event<'a> {
    /// A text frame from the client.
    ClientText(&'a str),
    /// A binary frame from the client.
    ClientAudio(Bytes),
    /// The upstream connection is open (handshake done).
    UpstreamConnected,
    /// Opening the upstream failed.
    UpstreamConnectFailed {
        /// True for failures no retry can fix (authentication).
        fatal: bool,
        /// Why, for logs and the client's `error`.
        reason: &'a str,
    },
    /// The upstream sent an event.
    Model(ModelEvent<'a>),
    /// The upstream connection ended or failed.
    UpstreamClosed {
        /// Why, for logs.
        reason: &'a str,
    },
    /// The client writer dropped this many samples of queued bot audio because the client is slow.
    ClientAudioDropped {
        /// Samples (output format rate) that will never reach the client.
        samples: u64,
    },
    /// A deadline from [`SessionCore::next_deadline`] passed.
    Timer,
    /// The server is shutting down.
    Shutdown,
}

/// A conversation role in the replay history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The human.
    User,
    /// The model.
    Assistant,
}

/// An order for the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamCommand {
    /// `session.update` with the configured session.
    SessionUpdate,
    /// `input_audio_buffer.append` with PCM16 24 kHz.
    Append(Bytes),
    /// `input_audio_buffer.commit`.
    Commit,
    /// `response.create`.
    ResponseCreate,
    /// `response.cancel`.
    ResponseCancel {
        /// The response to cancel.
        response_id: String,
    },
    /// `conversation.item.truncate` of content 0.
    Truncate {
        /// The assistant item.
        item_id: String,
        /// Audio to keep, in milliseconds.
        audio_end_ms: u64,
    },
    /// `conversation.item.create` of a text message (history replay).
    CreateItem {
        /// Who said it.
        role: Role,
        /// What was said.
        text: String,
    },
}

/// An order for the actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this to the upstream.
    Upstream(UpstreamCommand),
    /// Open a new upstream connection after `delay` (closing any current one first).
    ConnectUpstream {
        /// Backoff before the attempt.
        delay: Duration,
    },
    /// Close the upstream connection (a reconnect follows if one is ordered).
    DisconnectUpstream,
    /// Queue a control message (JSON text) for the client; never dropped.
    ClientControl(String),
    /// Queue bot audio for the client, in its output format; dropped oldest-first if the client lags.
    ClientAudio {
        /// The frame.
        data: Bytes,
        /// Samples in the frame, at the output rate.
        samples: u64,
        /// On the first frame of an answer to a finished user turn: when the turn ended. Time to
        /// first audio is observed when the frame is written, not when it is queued.
        turn_ended_at: Option<Instant>,
    },
    /// Drop all bot audio still queued for the client (barge-in).
    FlushClientAudio,
    /// Send a close frame and end the session.
    CloseClient {
        /// RFC 6455 close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

/// Why the upstream is being (re)opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The first connection: `ready` follows.
    Initial,
    /// The client asked for `reset_session`: a fresh conversation, `ready` follows.
    Reset,
    /// The upstream failed: replay history, `ready` follows (the client was told with `error`).
    Recover,
    /// The upstream session expired: replay history silently.
    Rollover,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// A connect was ordered and has not reported yet.
    Connecting(Purpose),
    /// Connected; `session.update` sent, waiting for `session.updated`.
    Configuring(Purpose),
    /// Configured: audio flows.
    Ready,
    /// The session is over; nothing more will be ordered.
    Closed,
}

/// The bot response being spoken.
#[derive(Debug)]
struct Response {
    id: String,
    /// The assistant item carrying the audio, once a delta named it.
    item_id: Option<String>,
    /// PCM16 24 kHz samples the upstream produced for the item.
    produced_samples: u64,
    /// Output-rate samples queued for the client for the item.
    sent_samples: u64,
    /// `sent_since_reset` when the item's first frame was queued (aligns `playback` reports).
    start_offset: u64,
    /// The transcript so far.
    transcript: String,
    /// `response.done` arrived.
    done: bool,
    /// `bot_audio_end` was queued.
    audio_end_sent: bool,
    /// Barge-in cancelled it: its late deltas are ignored.
    cancelled: bool,
    /// The transcript went into the history.
    recorded: bool,
}

impl Response {
    fn new(id: &str) -> Self {
        Response {
            id: id.to_owned(),
            item_id: None,
            produced_samples: 0,
            sent_samples: 0,
            start_offset: 0,
            transcript: String::new(),
            done: false,
            audio_end_sent: false,
            cancelled: false,
            recorded: false,
        }
    }
}

/// Error codes that stop all retries: no reconnect can fix them.
const FATAL_ERROR_CODES: &[&str] = &["invalid_api_key", "insufficient_quota", "model_not_found"];
/// Error codes caused by benign races of our own orders (cancel after done, empty commit): logged,
/// never shown to the client.
const QUIET_ERROR_CODES: &[&str] = &[
    "response_cancel_not_active",
    "input_audio_buffer_commit_empty",
    "conversation_already_has_active_response",
];

/// The decision core of one voice session. See the module docs.
#[derive(Debug)]
pub struct SessionCore {
    config: SessionConfig,
    metrics: SessionMetrics,
    actions: VecDeque<Action>,
    upstream: Upstream,
    /// Failed connects since the upstream was last ready.
    attempts: u32,
    /// Backoff jitter state (xorshift64).
    rng: u64,
    input_format: AudioFormat,
    output_format: AudioFormat,
    input: InputConverter,
    output: OutputConverter,
    /// Pending batched input (PCM16 24 kHz) and when its first bytes arrived.
    batch: BytesMut,
    batch_started: Option<Instant>,
    /// Flood guard: a token bucket of input bytes.
    flood_tokens: f64,
    flood_refilled: Instant,
    last_activity: Instant,
    response: Option<Response>,
    /// Ids of responses cancelled by barge-in whose stray deltas must be ignored.
    cancelled: VecDeque<String>,
    /// Output-rate samples queued for the client since the last `ready` or `interrupt`.
    sent_since_reset: u64,
    /// When the client will have played everything queued so far (wall-clock playout model).
    playout_end: Option<Instant>,
    /// The client's latest `playback` report since the last `ready` or `interrupt`.
    reported_played: Option<u64>,
    /// When the user's turn ended (speech_stopped or user_audio_end), for time-to-first-audio.
    turn_ended_at: Option<Instant>,
    history: VecDeque<(Role, String)>,
    /// When the current upstream session became ready (planned rollover).
    ready_since: Option<Instant>,
    usage: Usage,
    truncations: Vec<u64>,
}

impl SessionCore {
    /// A new session; it immediately orders the first upstream connection.
    pub fn new(config: SessionConfig, metrics: SessionMetrics, now: Instant, seed: u64) -> Self {
        let input_format = AudioFormat::default();
        let output_format = AudioFormat::default();
        let flood_tokens = burst_bytes(&config, input_format);
        let mut core = SessionCore {
            config,
            metrics,
            actions: VecDeque::new(),
            upstream: Upstream::Connecting(Purpose::Initial),
            attempts: 0,
            rng: seed | 1,
            input_format,
            output_format,
            input: InputConverter::new(input_format),
            output: OutputConverter::new(output_format),
            batch: BytesMut::new(),
            batch_started: None,
            flood_tokens,
            flood_refilled: now,
            last_activity: now,
            response: None,
            cancelled: VecDeque::new(),
            sent_since_reset: 0,
            playout_end: None,
            reported_played: None,
            turn_ended_at: None,
            history: VecDeque::new(),
            ready_since: None,
            usage: Usage::default(),
            truncations: Vec::new(),
        };
        core.actions.push_back(Action::ConnectUpstream {
            delay: Duration::ZERO,
        });
        core
    }

    /// The next queued action, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Token usage summed over the session.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The `audio_end_ms` of every truncation ordered so far, oldest first.
    pub fn truncations(&self) -> &[u64] {
        &self.truncations
    }

    /// True once the session has ordered the client closed.
    pub fn is_closed(&self) -> bool {
        self.upstream == Upstream::Closed
    }

    /// True while audio can flow to the upstream.
    pub fn is_ready(&self) -> bool {
        self.upstream == Upstream::Ready
    }

    /// The earliest instant at which [`Event::Timer`] must be delivered.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let idle = self.last_activity + self.config.idle_timeout;
        let batch = self
            .batch_started
            .map(|started| started + self.config.append_batch);
        let rollover = self.rollover_due();
        Some(
            [batch, rollover]
                .into_iter()
                .flatten()
                .fold(idle, Instant::min),
        )
    }

    /// Handles one event; the resulting orders are queued for [`SessionCore::poll_action`].
    pub fn handle(&mut self, event: Event<'_>, now: Instant) {
        if self.is_closed() {
            return;
        }
        match event {
            Event::ClientText(text) => {
                self.last_activity = now;
                match okti::parse_client_text(text) {
                    Ok(message) => self.on_client_message(message, now),
                    Err(error) => self.on_parse_error(&error),
                }
            }
            Event::ClientAudio(frame) => {
                self.last_activity = now;
                self.on_client_audio(frame, now);
            }
            Event::UpstreamConnected => {
                if let Upstream::Connecting(purpose) = self.upstream {
                    self.upstream = Upstream::Configuring(purpose);
                    self.actions
                        .push_back(Action::Upstream(UpstreamCommand::SessionUpdate));
                }
            }
            Event::UpstreamConnectFailed { fatal, reason } => self.on_connect_failed(fatal, reason),
            Event::Model(event) => self.on_model_event(event, now),
            Event::UpstreamClosed { reason } => self.on_upstream_closed(reason),
            Event::ClientAudioDropped { samples } => {
                // Audio the client never got was never played: take it out of the playout model.
                self.sent_since_reset = self.sent_since_reset.saturating_sub(samples);
                if let Some(response) = self.response.as_mut() {
                    response.sent_samples = response.sent_samples.saturating_sub(samples);
                }
                if let Some(end) = self.playout_end {
                    let lost = samples_to_duration(samples, self.output_format.sample_rate());
                    self.playout_end = Some(end.checked_sub(lost).unwrap_or(now).max(now));
                }
            }
            Event::Timer => self.on_timer(now),
            Event::Shutdown => self.close(CLOSE_GOING_AWAY, "server shutting down", true),
        }
    }

    fn on_parse_error(&mut self, error: &ParseError) {
        self.send_error(&error.to_string());
    }

    fn on_client_message(&mut self, message: ClientMessage, now: Instant) {
        match message {
            ClientMessage::StartConversation { input, output } => {
                if input != self.input_format {
                    self.flush_batch();
                    self.input_format = input;
                    self.input = InputConverter::new(input);
                    self.flood_tokens = burst_bytes(&self.config, input);
                    self.flood_refilled = now;
                }
                if output != self.output_format {
                    self.output_format = output;
                    self.output = OutputConverter::new(output);
                }
            }
            ClientMessage::UserAudioEnd => {
                if !self.is_ready() {
                    return;
                }
                self.flush_batch();
                self.actions
                    .push_back(Action::Upstream(UpstreamCommand::Commit));
                if self.config.manual_turns {
                    self.actions
                        .push_back(Action::Upstream(UpstreamCommand::ResponseCreate));
                }
                self.turn_ended_at = Some(now);
            }
            ClientMessage::ResetSession => {
                self.history.clear();
                self.end_response_for_reconnect();
                self.actions.push_back(Action::FlushClientAudio);
                self.reset_playback();
                self.reconnect(Purpose::Reset, Duration::ZERO);
            }
            ClientMessage::Playback { samples_played } => {
                self.reported_played = Some(samples_played);
            }
        }
    }

    fn on_client_audio(&mut self, frame: Bytes, now: Instant) {
        if let Err(error) = okti::check_audio_frame(
            frame.len(),
            self.input_format,
            self.config.max_audio_frame_bytes,
        ) {
            if matches!(error, FrameError::TooLarge { .. }) {
                self.metrics.dropped_oversize.inc();
            } else {
                self.metrics.dropped_invalid.inc();
            }
            self.send_error(&error.to_string());
            return;
        }
        if !self.take_flood_tokens(frame.len(), now) {
            self.metrics.dropped_flood.inc();
            let message = format!(
                "input audio arrives faster than {}x real time; closing",
                self.config.flood_factor
            );
            self.close(CLOSE_POLICY, &message, true);
            return;
        }
        if !self.is_ready() {
            // Audio for an upstream that is not there cannot be replayed meaningfully later.
            self.metrics.dropped_upstream_unavailable.inc();
            return;
        }
        let pcm = if self.input_format.is_seed() {
            frame
        } else {
            match self.input.convert(&frame) {
                Some(pcm) => pcm,
                None => return,
            }
        };
        if self.config.append_batch.is_zero() {
            self.actions
                .push_back(Action::Upstream(UpstreamCommand::Append(pcm)));
        } else {
            if self.batch.is_empty() {
                self.batch_started = Some(now);
            }
            self.batch.extend_from_slice(&pcm);
            if let Some(started) = self.batch_started
                && now >= started + self.config.append_batch
            {
                self.flush_batch();
            }
        }
    }

    fn take_flood_tokens(&mut self, bytes: usize, now: Instant) -> bool {
        let rate =
            self.input_format.bytes_per_second() as f64 * f64::from(self.config.flood_factor);
        let elapsed = now
            .saturating_duration_since(self.flood_refilled)
            .as_secs_f64();
        self.flood_refilled = now;
        let cap = burst_bytes(&self.config, self.input_format);
        self.flood_tokens = (self.flood_tokens + elapsed * rate).min(cap);
        self.flood_tokens -= bytes as f64;
        self.flood_tokens >= 0.0
    }

    fn flush_batch(&mut self) {
        self.batch_started = None;
        if !self.batch.is_empty() {
            let pcm = self.batch.split().freeze();
            self.actions
                .push_back(Action::Upstream(UpstreamCommand::Append(pcm)));
        }
    }

    fn rollover_due(&self) -> Option<Instant> {
        Some(self.ready_since? + self.config.rollover_after?)
    }

    fn on_timer(&mut self, now: Instant) {
        if self.is_ready()
            && let Some(due) = self.rollover_due()
            && now >= due
        {
            let busy = self
                .response
                .as_ref()
                .is_some_and(|r| !r.done && !r.cancelled);
            if busy {
                // Never cut a spoken answer: look again in a second.
                self.ready_since = self.ready_since.map(|since| since + Duration::from_secs(1));
            } else {
                tracing::info!("upstream session reached its planned age; rolling over");
                self.end_response_for_reconnect();
                self.metrics.upstream_reconnects.inc();
                self.reconnect(Purpose::Rollover, Duration::ZERO);
            }
        }
        if let Some(started) = self.batch_started
            && now >= started + self.config.append_batch
        {
            self.flush_batch();
        }
        if now >= self.last_activity + self.config.idle_timeout {
            self.close(CLOSE_NORMAL, "idle timeout", true);
        }
    }

    fn on_connect_failed(&mut self, fatal: bool, reason: &str) {
        let Upstream::Connecting(purpose) = self.upstream else {
            return;
        };
        self.metrics.upstream_errors_connect.inc();
        if fatal {
            tracing::warn!(reason, "upstream refused the session; not retrying");
            self.close(
                CLOSE_INTERNAL,
                &format!("upstream refused the session: {reason}"),
                true,
            );
            return;
        }
        self.attempts += 1;
        if self.attempts > self.config.max_reconnect_attempts {
            self.close(
                CLOSE_INTERNAL,
                &format!(
                    "upstream unavailable after {} attempts: {reason}",
                    self.attempts
                ),
                true,
            );
            return;
        }
        // A silent rollover that cannot reconnect at once is no longer silent.
        let purpose = if purpose == Purpose::Rollover {
            self.send_error(&format!("upstream unavailable, reconnecting: {reason}"));
            Purpose::Recover
        } else {
            purpose
        };
        let delay = self.backoff();
        tracing::info!(
            attempt = self.attempts,
            ?delay,
            reason,
            "upstream connect failed; retrying"
        );
        self.upstream = Upstream::Connecting(purpose);
        self.metrics.upstream_reconnects.inc();
        self.actions.push_back(Action::ConnectUpstream { delay });
    }

    fn backoff(&mut self) -> Duration {
        let exponent = self.attempts.saturating_sub(1).min(16);
        let base = self
            .config
            .reconnect_base
            .saturating_mul(1 << exponent)
            .min(self.config.reconnect_max);
        // Full jitter over the upper half keeps herds of sessions from reconnecting in lockstep.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let fraction = (self.rng % 1_000) as f64 / 1_000.0;
        base.mul_f64(0.5 + fraction / 2.0)
    }

    fn on_upstream_closed(&mut self, reason: &str) {
        let purpose = match self.upstream {
            // A close of the connection being replaced: the new attempt reports for itself.
            Upstream::Closed | Upstream::Connecting(_) => return,
            Upstream::Configuring(Purpose::Rollover) => Purpose::Rollover,
            Upstream::Configuring(_) | Upstream::Ready => Purpose::Recover,
        };
        self.metrics.upstream_errors_closed.inc();
        self.attempts += 1;
        if self.attempts > self.config.max_reconnect_attempts {
            self.close(
                CLOSE_INTERNAL,
                &format!("upstream keeps failing: {reason}"),
                true,
            );
            return;
        }
        if purpose == Purpose::Recover {
            let mid_response = self
                .response
                .as_ref()
                .is_some_and(|r| !r.done && !r.cancelled);
            let message = if mid_response {
                format!("upstream connection lost mid-response ({reason}); reconnecting")
            } else {
                format!("upstream connection lost ({reason}); reconnecting")
            };
            tracing::warn!(reason, mid_response, "upstream closed; reconnecting");
            self.send_error(&message);
        }
        self.end_response_for_reconnect();
        // The first retry is immediate: most drops are one-off; repeated ones back off.
        let delay = if self.attempts <= 1 {
            Duration::ZERO
        } else {
            self.backoff()
        };
        self.metrics.upstream_reconnects.inc();
        self.reconnect(purpose, delay);
    }

    /// Orders a fresh upstream connection for `purpose`.
    fn reconnect(&mut self, purpose: Purpose, delay: Duration) {
        self.flush_batch_discard();
        self.ready_since = None;
        self.upstream = Upstream::Connecting(purpose);
        self.actions.push_back(Action::DisconnectUpstream);
        self.actions.push_back(Action::ConnectUpstream { delay });
    }

    fn flush_batch_discard(&mut self) {
        self.batch.clear();
        self.batch_started = None;
    }

    /// Forgets the response in flight when its upstream goes away; its transcript is kept.
    fn end_response_for_reconnect(&mut self) {
        if let Some(response) = self.response.take()
            && !response.recorded
            && !response.transcript.is_empty()
        {
            self.remember(Role::Assistant, response.transcript);
        }
        self.cancelled.clear();
        self.turn_ended_at = None;
    }

    fn on_model_event(&mut self, event: ModelEvent<'_>, now: Instant) {
        match event {
            ModelEvent::SessionCreated | ModelEvent::Other => {}
            ModelEvent::SessionUpdated => self.on_session_updated(now),
            ModelEvent::SpeechStarted => self.on_speech_started(now),
            ModelEvent::SpeechStopped => self.turn_ended_at = Some(now),
            ModelEvent::ResponseCreated { response_id } => {
                self.finish_previous_response();
                self.response = Some(Response::new(response_id));
            }
            ModelEvent::AudioDelta {
                response_id,
                item_id,
                pcm,
            } => {
                self.on_audio_delta(response_id, item_id, pcm, now);
            }
            ModelEvent::AudioDone { response_id } => {
                if let Some(response) = self.live_response(response_id)
                    && response.sent_samples > 0
                    && !response.audio_end_sent
                {
                    response.audio_end_sent = true;
                    self.send_control(&ServerMessage::BotAudioEnd);
                }
            }
            ModelEvent::TranscriptDelta { response_id, delta } => {
                if let Some(response) = self.live_response(response_id) {
                    response.transcript.push_str(delta);
                    self.send_control(&ServerMessage::TranscriptDelta { text: delta });
                }
            }
            ModelEvent::TranscriptDone {
                response_id,
                transcript,
            } => {
                if let Some(response) = self.live_response(response_id) {
                    response.transcript.clear();
                    response.transcript.push_str(transcript);
                    response.recorded = true;
                    let text = transcript.to_owned();
                    self.remember(Role::Assistant, text);
                }
            }
            ModelEvent::UserTranscript { transcript } => {
                let transcript = transcript.trim();
                if !transcript.is_empty() {
                    self.send_control(&ServerMessage::UserTranscript { text: transcript });
                    self.remember(Role::User, transcript.to_owned());
                }
            }
            ModelEvent::ResponseDone { response_id, usage } => {
                if let Some(usage) = usage {
                    self.usage.accumulate(&usage);
                }
                let mut end = false;
                if let Some(response) = self.response.as_mut().filter(|r| r.id == response_id) {
                    response.done = true;
                    if !response.cancelled && response.sent_samples > 0 && !response.audio_end_sent
                    {
                        response.audio_end_sent = true;
                        end = true;
                    }
                }
                if end {
                    self.send_control(&ServerMessage::BotAudioEnd);
                }
                self.finish_previous_response_if_done();
            }
            ModelEvent::Error {
                kind,
                code,
                message,
            } => self.on_model_error(kind, code, message),
        }
    }

    fn on_session_updated(&mut self, now: Instant) {
        let Upstream::Configuring(purpose) = self.upstream else {
            return;
        };
        self.upstream = Upstream::Ready;
        self.ready_since = Some(now);
        self.attempts = 0;
        if matches!(purpose, Purpose::Recover | Purpose::Rollover) {
            let items: Vec<UpstreamCommand> = self
                .history
                .iter()
                .map(|(role, text)| UpstreamCommand::CreateItem {
                    role: *role,
                    text: text.clone(),
                })
                .collect();
            tracing::info!(
                items = items.len(),
                ?purpose,
                "upstream session replaced; history replayed"
            );
            self.actions.extend(items.into_iter().map(Action::Upstream));
        }
        if purpose != Purpose::Rollover {
            self.reset_playback();
            self.send_control(&ServerMessage::Ready);
        }
    }

    fn on_model_error(&mut self, kind: Option<&str>, code: Option<&str>, message: &str) {
        let code_str = code.unwrap_or("");
        if code_str == "session_expired" {
            tracing::info!("upstream session expired; rolling over to a fresh session");
            self.end_response_for_reconnect();
            self.metrics.upstream_reconnects.inc();
            self.reconnect(Purpose::Rollover, Duration::ZERO);
            return;
        }
        if QUIET_ERROR_CODES.contains(&code_str) {
            tracing::debug!(code = code_str, message, "benign upstream error");
            return;
        }
        self.metrics.upstream_errors_server.inc();
        if FATAL_ERROR_CODES.contains(&code_str) || kind == Some("authentication_error") {
            tracing::warn!(
                code = code_str,
                message,
                "fatal upstream error; not retrying"
            );
            self.close(CLOSE_INTERNAL, &format!("upstream error: {message}"), true);
            return;
        }
        tracing::info!(code = code_str, message, "upstream error");
        self.send_error(&format!("upstream error: {message}"));
    }

    /// The current response, if it is `response_id` and was not cancelled.
    fn live_response(&mut self, response_id: &str) -> Option<&mut Response> {
        self.response
            .as_mut()
            .filter(|r| r.id == response_id && !r.cancelled)
    }

    fn on_audio_delta(&mut self, response_id: &str, item_id: &str, pcm: Bytes, now: Instant) {
        if self.cancelled.iter().any(|id| id == response_id) {
            return;
        }
        match &self.response {
            Some(response) if response.id == response_id => {
                if response.cancelled {
                    return;
                }
            }
            _ => {
                // An upstream that skips `response.created` (some beta servers) still gets tracked.
                self.finish_previous_response();
                self.response = Some(Response::new(response_id));
            }
        }
        let samples_24k = (pcm.len() / 2) as u64;
        let (data, samples) = if self.output_format.is_seed() {
            (pcm, samples_24k)
        } else {
            match self.output.convert(&pcm) {
                Some(data) => {
                    let samples = (data.len() / self.output_format.bytes_per_sample()) as u64;
                    (data, samples)
                }
                None => (Bytes::new(), 0),
            }
        };
        let offset = self.sent_since_reset;
        let Some(response) = self.response.as_mut() else {
            return;
        };
        if response.item_id.as_deref() != Some(item_id) {
            response.item_id = Some(item_id.to_owned());
            response.produced_samples = 0;
            response.sent_samples = 0;
            response.start_offset = offset;
        }
        response.produced_samples += samples_24k;
        if samples == 0 {
            return;
        }
        response.sent_samples += samples;
        self.sent_since_reset += samples;
        let duration = samples_to_duration(samples, self.output_format.sample_rate());
        let start = self.playout_end.map_or(now, |end| end.max(now));
        self.playout_end = Some(start + duration);
        self.last_activity = now;
        self.actions.push_back(Action::ClientAudio {
            data,
            samples,
            turn_ended_at: self.turn_ended_at.take(),
        });
    }

    /// Barge-in: the user speaks over queued or playing bot audio.
    fn on_speech_started(&mut self, now: Instant) {
        self.turn_ended_at = None;
        let playing = self.playout_end.is_some_and(|end| end > now)
            || self
                .reported_played
                .is_some_and(|played| played < self.sent_since_reset);
        let Some(response) = self.response.as_mut().filter(|r| !r.cancelled) else {
            return;
        };
        if response.sent_samples == 0 {
            // Nothing audible yet: stop the model from speaking over the user, nothing to flush.
            if !response.done {
                response.cancelled = true;
                let id = response.id.clone();
                self.remember_cancelled(id.clone());
                self.actions
                    .push_back(Action::Upstream(UpstreamCommand::ResponseCancel {
                        response_id: id,
                    }));
            }
            return;
        }
        if response.done && !playing {
            return;
        }
        response.cancelled = true;
        let out_rate = u64::from(self.output_format.sample_rate());
        let played_samples = match self.reported_played {
            Some(played) => played
                .saturating_sub(response.start_offset)
                .min(response.sent_samples),
            None => {
                let buffered = self
                    .playout_end
                    .map_or(Duration::ZERO, |end| end.saturating_duration_since(now));
                let buffered_samples = (buffered.as_secs_f64() * out_rate as f64).round() as u64;
                response.sent_samples.saturating_sub(buffered_samples)
            }
        };
        let played_ms = played_samples * 1_000 / out_rate;
        let produced_ms = response.produced_samples * 1_000 / u64::from(SEED_SAMPLE_RATE);
        let audio_end_ms = played_ms.min(produced_ms);
        let cancel = (!response.done).then(|| response.id.clone());
        let item_id = response.item_id.clone();
        // Keep in the history only the part of the answer the user heard.
        let heard = heard_prefix(&response.transcript, audio_end_ms, produced_ms).to_owned();
        response.recorded = true;
        let id = response.id.clone();

        self.metrics.barge_ins.inc();
        self.output.reset();
        self.actions.push_back(Action::FlushClientAudio);
        self.send_control(&ServerMessage::Interrupt);
        if let Some(response_id) = cancel {
            self.actions
                .push_back(Action::Upstream(UpstreamCommand::ResponseCancel {
                    response_id,
                }));
        }
        if let Some(item_id) = item_id {
            self.truncations.push(audio_end_ms);
            self.actions
                .push_back(Action::Upstream(UpstreamCommand::Truncate {
                    item_id,
                    audio_end_ms,
                }));
        }
        if !heard.is_empty() {
            self.remember(Role::Assistant, heard);
        }
        self.remember_cancelled(id);
        self.reset_playback();
    }

    fn remember_cancelled(&mut self, id: String) {
        if self.cancelled.len() == 8 {
            self.cancelled.pop_front();
        }
        self.cancelled.push_back(id);
    }

    /// Records the transcript of a finished response that never sent `…transcript.done`.
    fn finish_previous_response(&mut self) {
        if let Some(response) = self.response.take()
            && !response.recorded
            && !response.cancelled
            && !response.transcript.is_empty()
        {
            self.remember(Role::Assistant, response.transcript);
        }
    }

    fn finish_previous_response_if_done(&mut self) {
        if let Some(response) = self.response.as_mut()
            && response.done
            && !response.cancelled
            && !response.recorded
            && !response.transcript.is_empty()
        {
            response.recorded = true;
            let text = response.transcript.clone();
            self.remember(Role::Assistant, text);
        }
    }

    fn remember(&mut self, role: Role, text: String) {
        if self.config.history_items == 0 {
            return;
        }
        if self.history.len() == self.config.history_items {
            self.history.pop_front();
        }
        self.history.push_back((role, text));
    }

    /// Both ends restart their playback accounting at `ready` and `interrupt`.
    fn reset_playback(&mut self) {
        self.sent_since_reset = 0;
        self.playout_end = None;
        self.reported_played = None;
    }

    fn send_control(&mut self, message: &ServerMessage<'_>) {
        self.actions
            .push_back(Action::ClientControl(message.to_json()));
    }

    fn send_error(&mut self, message: &str) {
        self.send_control(&ServerMessage::Error { message });
    }

    fn close(&mut self, code: u16, reason: &str, tell_client: bool) {
        if tell_client {
            self.send_error(reason);
        }
        self.upstream = Upstream::Closed;
        self.actions.push_back(Action::DisconnectUpstream);
        // Close reasons are limited to 123 bytes by RFC 6455.
        let mut reason = reason.to_owned();
        if reason.len() > 120 {
            let mut cut = 120;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        self.actions.push_back(Action::CloseClient { code, reason });
    }
}

fn burst_bytes(config: &SessionConfig, format: AudioFormat) -> f64 {
    config.flood_burst.as_secs_f64() * format.bytes_per_second() as f64
}

fn samples_to_duration(samples: u64, rate: u32) -> Duration {
    Duration::from_secs_f64(samples as f64 / f64::from(rate))
}

/// The prefix of `transcript` in proportion to the audio heard, cut at a word boundary.
fn heard_prefix(transcript: &str, heard_ms: u64, produced_ms: u64) -> &str {
    if produced_ms == 0 || heard_ms >= produced_ms {
        return transcript;
    }
    let target = (transcript.len() as u64 * heard_ms / produced_ms) as usize;
    let mut cut = target.min(transcript.len());
    while !transcript.is_char_boundary(cut) {
        cut -= 1;
    }
    match transcript[..cut].rfind(char::is_whitespace) {
        Some(space) => transcript[..space].trim_end(),
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(core: &mut SessionCore) -> Vec<Action> {
        std::iter::from_fn(|| core.poll_action()).collect()
    }

    fn control(json: &str) -> Action {
        Action::ClientControl(json.to_owned())
    }

    fn controls(actions: &[Action]) -> Vec<serde_json::Value> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::ClientControl(text) => serde_json::from_str(text).ok(),
                _ => None,
            })
            .collect()
    }

    /// A core whose upstream is configured, with the `ready` already drained.
    fn ready_core(config: SessionConfig) -> (SessionCore, Instant) {
        let t0 = Instant::now();
        let mut core = SessionCore::new(config, SessionMetrics::detached(), t0, 42);
        assert_eq!(
            drain(&mut core),
            vec![Action::ConnectUpstream {
                delay: Duration::ZERO
            }]
        );
        core.handle(Event::UpstreamConnected, t0);
        assert_eq!(
            drain(&mut core),
            vec![Action::Upstream(UpstreamCommand::SessionUpdate)]
        );
        core.handle(Event::Model(ModelEvent::SessionCreated), t0);
        core.handle(Event::Model(ModelEvent::SessionUpdated), t0);
        assert_eq!(drain(&mut core), vec![control(r#"{"type":"ready"}"#)]);
        (core, t0)
    }

    fn pcm_ms(ms: u64) -> Bytes {
        Bytes::from(vec![0u8; (ms * 24 * 2) as usize])
    }

    fn speak(core: &mut SessionCore, response_id: &str, ms: u64, now: Instant) -> Vec<Action> {
        core.handle(
            Event::Model(ModelEvent::ResponseCreated { response_id }),
            now,
        );
        core.handle(
            Event::Model(ModelEvent::AudioDelta {
                response_id,
                item_id: "item_a",
                pcm: pcm_ms(ms),
            }),
            now,
        );
        drain(core)
    }

    fn truncate_of(actions: &[Action]) -> Option<u64> {
        actions.iter().find_map(|a| match a {
            Action::Upstream(UpstreamCommand::Truncate { audio_end_ms, .. }) => Some(*audio_end_ms),
            _ => None,
        })
    }

    #[test]
    fn relays_seed_audio_untouched() {
        let (mut core, t0) = ready_core(SessionConfig::default());
        let frame = Bytes::from(vec![1u8; 960]);
        core.handle(Event::ClientAudio(frame.clone()), t0);
        assert_eq!(
            drain(&mut core),
            vec![Action::Upstream(UpstreamCommand::Append(frame))]
        );
        let actions = speak(&mut core, "resp_1", 20, t0);
        assert_eq!(
            actions,
            vec![Action::ClientAudio {
                data: pcm_ms(20),
                samples: 480,
                turn_ended_at: None,
            }]
        );
    }

    #[test]
    fn barge_in_truncates_at_the_wall_clock_playout_position() {
        let (mut core, t0) = ready_core(SessionConfig::default());
        speak(&mut core, "resp_1", 1_000, t0);
        core.handle(
            Event::Model(ModelEvent::SpeechStarted),
            t0 + Duration::from_millis(300),
        );
        let actions = drain(&mut core);
        assert_eq!(actions[0], Action::FlushClientAudio);
        assert_eq!(actions[1], control(r#"{"type":"interrupt"}"#));
        assert_eq!(
            actions[2],
            Action::Upstream(UpstreamCommand::ResponseCancel {
                response_id: "resp_1".into()
            })
        );
        assert_eq!(truncate_of(&actions), Some(300));
        assert_eq!(core.truncations(), &[300]);
    }

    #[test]
    fn barge_in_prefers_the_client_playback_report() {
        let (mut core, t0) = ready_core(SessionConfig::default());
        speak(&mut core, "resp_1", 1_000, t0);
        core.handle(
            Event::ClientText(r#"{"type":"playback","samples_played":4800}"#),
            t0,
        );
        assert!(drain(&mut core).is_empty());
        core.handle(
            Event::Model(ModelEvent::SpeechStarted),
            t0 + Duration::from_millis(700),
        );
        assert_eq!(truncate_of(&drain(&mut core)), Some(200));
    }

    #[test]
    fn truncation_is_clamped_to_the_audio_the_upstream_produced() {
        let (mut core, t0) = ready_core(SessionConfig::default());
        core.handle(
            Event::ClientText(r#"{"type":"start_conversation","output_format":"pcmu"}"#),
            t0,
        );
        speak(&mut core, "resp_1", 1_000, t0);
        core.handle(
            Event::Model(ModelEvent::ResponseDone {
                response_id: "resp_1",
                usage: None,
            }),
            t0,
        );
        // The client claims more than it was sent (the resampler run-in makes `sent` a bit longer
        // than `produced`, and reports may be stale): the value must never exceed what exists.
        core.handle(
            Event::ClientText(r#"{"type":"playback","samples_played":9000}"#),
            t0,
        );
        drain(&mut core);
        core.handle(
            Event::Model(ModelEvent::SpeechStarted),
            t0 + Duration::from_millis(10),
        );
        let actions = drain(&mut core);
        assert_eq!(truncate_of(&actions), Some(1_000));
        // response.done was seen: nothing to cancel.
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Upstream(UpstreamCommand::ResponseCancel { .. })))
        );
    }

    #[test]
    fn audio_dropped_for_a_slow_client_counts_as_never_played() {
        let (mut core, t0) = ready_core(SessionConfig::default());
        speak(&mut core, "resp_1", 1_000, t0);
        // The writer dropped the oldest 500 ms: the client will only ever hear the other half.
        core.handle(Event::ClientAudioDropped { samples: 12_000 }, t0);
        core.handle(
            Event::Model(ModelEvent::SpeechStarted),
            t0 + Duration::from_millis(100),
        );
        assert_eq!(truncate_of(&drain(&mut core)), Some(100));
    }

    #[test]
    fn nothing_from_a_cancelled_response_reaches_the_client() {
        let (mut core, t0) = ready_core(SessionConfig::default());
        speak(&mut core, "resp_1", 500, t0);
        core.handle(
            Event::Model(ModelEvent::SpeechStarted),
            t0 + Duration::from_millis(100),
        );
        drain(&mut core);
        let late = ModelEvent::AudioDelta {
            response_id: "resp_1",
            item_id: "item_a",
            pcm: pcm_ms(100),
        };
        core.handle(Event::Model(late), t0 + Duration::from_millis(110));
        core.handle(
            Event::Model(ModelEvent::TranscriptDelta {
                response_id: "resp_1",
                delta: "encore",
            }),
            t0 + Duration::from_millis(110),
        );
        core.handle(
            Event::Model(ModelEvent::ResponseDone {
                response_id: "resp_1",
                usage: None,
            }),
            t0 + Duration::from_millis(120),
        );
        assert_eq!(drain(&mut core), vec![]);
    }

    #[test]
    fn speech_after_playback_ended_is_a_normal_turn() {
        let (mut core, t0) = ready_core(SessionConfig::default());
        speak(&mut core, "resp_1", 500, t0);
        core.handle(
            Event::Model(ModelEvent::AudioDone {
                response_id: "resp_1",
            }),
            t0,
        );
        core.handle(
            Event::Model(ModelEvent::ResponseDone {
                response_id: "resp_1",
                usage: None,
            }),
            t0,
        );
        assert_eq!(
            drain(&mut core),
            vec![control(r#"{"type":"bot_audio_end"}"#)]
        );
        core.handle(
            Event::Model(ModelEvent::SpeechStarted),
            t0 + Duration::from_millis(600),
        );
        assert_eq!(drain(&mut core), vec![]);
    }

    #[test]
    fn bad_client_input_gets_an_error_and_the_session_goes_on() {
        let (mut core, t0) = ready_core(SessionConfig::default());
        for input in [
            Event::ClientText("{oops"),
            Event::ClientText(r#"{"type":"dance"}"#),
        ] {
            core.handle(input, t0);
            let actions = drain(&mut core);
            assert_eq!(controls(&actions)[0]["type"], "error");
        }
        core.handle(Event::ClientAudio(Bytes::from_static(&[1, 2, 3])), t0);
        assert!(
            controls(&drain(&mut core))[0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("3 bytes")
        );
        let config = SessionConfig {
            max_audio_frame_bytes: 4,
            ..SessionConfig::default()
        };
        let (mut small, t0) = ready_core(config);
        small.handle(Event::ClientAudio(Bytes::from_static(&[0; 6])), t0);
        assert!(
            controls(&drain(&mut small))[0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("exceeds")
        );
        assert!(!core.is_closed() && !small.is_closed());
    }

    #[test]
    fn sustained_input_flood_closes_with_1008() {
        let (mut core, t0) = ready_core(SessionConfig {
            flood_burst: Duration::from_secs(1),
            ..SessionConfig::default()
        });
        let frame = Bytes::from(vec![0u8; 960]); // 20 ms
        // 10x real time: a 20 ms frame every 2 ms.
        let mut closed_at = None;
        for i in 0..2_000u64 {
            core.handle(
                Event::ClientAudio(frame.clone()),
                t0 + Duration::from_millis(2 * i),
            );
            if let Some(Action::CloseClient { code, .. }) = drain(&mut core)
                .into_iter()
                .find(|a| matches!(a, Action::CloseClient { .. }))
            {
                assert_eq!(code, CLOSE_POLICY);
                closed_at = Some(i);
                break;
            }
        }
        // Burst of 1 s at +4x/s net drain of 6x: trips after about 1/6 s of flooding (~80 frames).
        let closed_at = closed_at.expect("flood detected");
        assert!(
            (60..120).contains(&closed_at),
            "closed after {closed_at} frames"
        );
    }

    #[test]
    fn real_time_input_never_trips_the_flood_guard() {
        let (mut core, t0) = ready_core(SessionConfig {
            flood_burst: Duration::from_millis(100),
            ..SessionConfig::default()
        });
        for i in 0..3_000u64 {
            core.handle(
                Event::ClientAudio(Bytes::from(vec![0u8; 960])),
                t0 + Duration::from_millis(20 * i),
            );
        }
        assert!(
            !drain(&mut core)
                .iter()
                .any(|a| matches!(a, Action::CloseClient { .. }))
        );
    }

    #[test]
    fn upstream_drop_mid_response_tells_the_client_and_recovers_with_history() {
        let (mut core, t0) = ready_core(SessionConfig::default());
        core.handle(
            Event::Model(ModelEvent::UserTranscript {
                transcript: "bonjour",
            }),
            t0,
        );
        core.handle(
            Event::Model(ModelEvent::ResponseCreated { response_id: "r1" }),
            t0,
        );
        core.handle(
            Event::Model(ModelEvent::TranscriptDelta {
                response_id: "r1",
                delta: "salut toi",
            }),
            t0,
        );
        drain(&mut core);
        core.handle(
            Event::UpstreamClosed {
                reason: "reset by peer",
            },
            t0,
        );
        let actions = drain(&mut core);
        let errors = controls(&actions);
        assert!(
            errors[0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("mid-response")
        );
        assert!(actions.contains(&Action::DisconnectUpstream));
        assert!(actions.contains(&Action::ConnectUpstream {
            delay: Duration::ZERO
        }));
        // Audio while reconnecting is dropped, not queued.
        core.handle(Event::ClientAudio(Bytes::from(vec![0u8; 960])), t0);
        assert!(drain(&mut core).is_empty());
        core.handle(Event::UpstreamConnected, t0);
        core.handle(Event::Model(ModelEvent::SessionUpdated), t0);
        assert_eq!(
            drain(&mut core),
            vec![
                Action::Upstream(UpstreamCommand::SessionUpdate),
                Action::Upstream(UpstreamCommand::CreateItem {
                    role: Role::User,
                    text: "bonjour".into()
                }),
                Action::Upstream(UpstreamCommand::CreateItem {
                    role: Role::Assistant,
                    text: "salut toi".into()
                }),
                control(r#"{"type":"ready"}"#),
            ]
        );
    }

    #[test]
    fn session_expired_rolls_over_silently() {
        let (mut core, t0) = ready_core(SessionConfig::default());
        core.handle(
            Event::Model(ModelEvent::UserTranscript { transcript: "un" }),
            t0,
        );
        drain(&mut core);
        core.handle(
            Event::Model(ModelEvent::Error {
                kind: Some("invalid_request_error"),
                code: Some("session_expired"),
                message: "Your session hit the maximum duration of 60 minutes.",
            }),
            t0,
        );
        assert_eq!(
            drain(&mut core),
            vec![
                Action::DisconnectUpstream,
                Action::ConnectUpstream {
                    delay: Duration::ZERO
                }
            ]
        );
        // The old socket closing afterwards is expected and changes nothing.
        core.handle(Event::UpstreamClosed { reason: "closed" }, t0);
        assert!(drain(&mut core).is_empty());
        core.handle(Event::UpstreamConnected, t0);
        core.handle(Event::Model(ModelEvent::SessionUpdated), t0);
        let actions = drain(&mut core);
        assert!(
            controls(&actions).is_empty(),
            "the client must not notice: {actions:?}"
        );
        assert!(
            actions.contains(&Action::Upstream(UpstreamCommand::CreateItem {
                role: Role::User,
                text: "un".into()
            }))
        );
    }

    #[test]
    fn planned_rollover_waits_for_the_answer_to_finish() {
        let config = SessionConfig {
            rollover_after: Some(Duration::from_secs(60)),
            ..SessionConfig::default()
        };
        let (mut core, t0) = ready_core(config);
        core.handle(
            Event::Model(ModelEvent::ResponseCreated { response_id: "r1" }),
            t0,
        );
        let due = t0 + Duration::from_secs(60);
        assert_eq!(core.next_deadline(), Some(due));
        core.handle(Event::Timer, due);
        assert!(drain(&mut core).is_empty());
        core.handle(
            Event::Model(ModelEvent::ResponseDone {
                response_id: "r1",
                usage: None,
            }),
            due,
        );
        let later = core.next_deadline().expect("deadline");
        core.handle(Event::Timer, later);
        assert_eq!(
            drain(&mut core),
            vec![
                Action::DisconnectUpstream,
                Action::ConnectUpstream {
                    delay: Duration::ZERO
                }
            ]
        );
    }

    #[test]
    fn fatal_upstream_errors_stop_retries() {
        let (mut core, t0) = ready_core(SessionConfig::default());
        core.handle(
            Event::Model(ModelEvent::Error {
                kind: Some("invalid_request_error"),
                code: Some("invalid_api_key"),
                message: "bad key",
            }),
            t0,
        );
        let actions = drain(&mut core);
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::CloseClient {
                code: CLOSE_INTERNAL,
                ..
            }
        )));
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::ConnectUpstream { .. }))
        );
        assert!(core.is_closed());

        let t0 = Instant::now();
        let mut core =
            SessionCore::new(SessionConfig::default(), SessionMetrics::detached(), t0, 7);
        drain(&mut core);
        core.handle(
            Event::UpstreamConnectFailed {
                fatal: true,
                reason: "HTTP 401",
            },
            t0,
        );
        let actions = drain(&mut core);
        assert!(
            controls(&actions)[0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("401")
        );
        assert!(core.is_closed());
    }

    #[test]
    fn connect_failures_back_off_then_give_up() {
        let config = SessionConfig {
            max_reconnect_attempts: 3,
            ..SessionConfig::default()
        };
        let t0 = Instant::now();
        let mut core = SessionCore::new(config.clone(), SessionMetrics::detached(), t0, 99);
        drain(&mut core);
        let mut delays = Vec::new();
        for _ in 0..3 {
            core.handle(
                Event::UpstreamConnectFailed {
                    fatal: false,
                    reason: "refused",
                },
                t0,
            );
            match drain(&mut core).as_slice() {
                [Action::ConnectUpstream { delay }] => delays.push(*delay),
                other => panic!("unexpected {other:?}"),
            }
        }
        for (i, delay) in delays.iter().enumerate() {
            let base = config.reconnect_base * (1 << i);
            assert!(
                *delay >= base / 2 && *delay <= base,
                "attempt {i}: {delay:?} vs base {base:?}"
            );
        }
        core.handle(
            Event::UpstreamConnectFailed {
                fatal: false,
                reason: "refused",
            },
            t0,
        );
        assert!(drain(&mut core).iter().any(|a| matches!(
            a,
            Action::CloseClient {
                code: CLOSE_INTERNAL,
                ..
            }
        )));
    }

    #[test]
    fn idle_sessions_close_and_shutdown_says_why() {
        let config = SessionConfig {
            idle_timeout: Duration::from_secs(5),
            ..SessionConfig::default()
        };
        let (mut core, t0) = ready_core(config.clone());
        assert_eq!(core.next_deadline(), Some(t0 + Duration::from_secs(5)));
        core.handle(Event::Timer, t0 + Duration::from_secs(5));
        let actions = drain(&mut core);
        assert!(actions.contains(&Action::CloseClient {
            code: CLOSE_NORMAL,
            reason: "idle timeout".into()
        }));

        let (mut core, t0) = ready_core(config);
        core.handle(Event::Shutdown, t0);
        let actions = drain(&mut core);
        assert!(
            controls(&actions)[0]["message"]
                .as_str()
                .unwrap_or("")
                .contains("shutting down")
        );
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::CloseClient {
                code: CLOSE_GOING_AWAY,
                ..
            }
        )));
    }

    #[test]
    fn reset_session_opens_a_fresh_upstream_and_says_ready_again() {
        let (mut core, t0) = ready_core(SessionConfig::default());
        core.handle(
            Event::Model(ModelEvent::UserTranscript {
                transcript: "oublie",
            }),
            t0,
        );
        drain(&mut core);
        core.handle(Event::ClientText(r#"{"type":"reset_session"}"#), t0);
        assert_eq!(
            drain(&mut core),
            vec![
                Action::FlushClientAudio,
                Action::DisconnectUpstream,
                Action::ConnectUpstream {
                    delay: Duration::ZERO
                }
            ]
        );
        core.handle(Event::UpstreamConnected, t0);
        core.handle(Event::Model(ModelEvent::SessionUpdated), t0);
        // A reset forgets the conversation: no replay.
        assert_eq!(
            drain(&mut core),
            vec![
                Action::Upstream(UpstreamCommand::SessionUpdate),
                control(r#"{"type":"ready"}"#)
            ]
        );
    }

    #[test]
    fn user_audio_end_commits_and_asks_for_a_response_without_turn_detection() {
        let (mut core, t0) = ready_core(SessionConfig {
            manual_turns: true,
            ..SessionConfig::default()
        });
        core.handle(Event::ClientText(r#"{"type":"user_audio_end"}"#), t0);
        assert_eq!(
            drain(&mut core),
            vec![
                Action::Upstream(UpstreamCommand::Commit),
                Action::Upstream(UpstreamCommand::ResponseCreate)
            ]
        );
    }

    #[test]
    fn batches_input_when_configured() {
        let config = SessionConfig {
            append_batch: Duration::from_millis(60),
            ..SessionConfig::default()
        };
        let (mut core, t0) = ready_core(config);
        for i in 0..3u64 {
            core.handle(
                Event::ClientAudio(Bytes::from(vec![i as u8; 960])),
                t0 + Duration::from_millis(20 * i),
            );
        }
        assert!(drain(&mut core).is_empty());
        assert_eq!(core.next_deadline(), Some(t0 + Duration::from_millis(60)));
        core.handle(Event::Timer, t0 + Duration::from_millis(60));
        match drain(&mut core).as_slice() {
            [Action::Upstream(UpstreamCommand::Append(pcm))] => assert_eq!(pcm.len(), 2_880),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn converts_formats_at_the_edge() {
        let (mut core, t0) = ready_core(SessionConfig::default());
        core.handle(
            Event::ClientText(r#"{"type":"start_conversation","format":{"encoding":"pcm16","sample_rate":16000},"output_format":"pcma"}"#),
            t0,
        );
        let mut upstream_bytes = 0;
        for i in 0..10u64 {
            core.handle(
                Event::ClientAudio(Bytes::from(vec![0u8; 640])),
                t0 + Duration::from_millis(20 * i),
            );
            for action in drain(&mut core) {
                if let Action::Upstream(UpstreamCommand::Append(pcm)) = action {
                    upstream_bytes += pcm.len();
                }
            }
        }
        // 200 ms of 16 kHz becomes about 200 ms of 24 kHz PCM16 (9600 bytes).
        assert!(
            (9_000..=9_700).contains(&upstream_bytes),
            "{upstream_bytes}"
        );
        let samples: u64 = speak(&mut core, "r1", 100, t0)
            .iter()
            .map(|a| match a {
                Action::ClientAudio { data, samples, .. } => {
                    assert_eq!(data.len() as u64, *samples, "A-law is one byte per sample");
                    *samples
                }
                _ => 0,
            })
            .sum();
        assert!((790..=830).contains(&samples), "{samples}");
    }

    #[test]
    fn only_the_first_frame_of_an_answer_carries_the_turn_end() {
        let (mut core, t0) = ready_core(SessionConfig::default());
        core.handle(Event::Model(ModelEvent::SpeechStopped), t0);
        let turn_ends = |actions: Vec<Action>| -> Vec<Option<Instant>> {
            actions
                .into_iter()
                .filter_map(|a| match a {
                    Action::ClientAudio { turn_ended_at, .. } => Some(turn_ended_at),
                    _ => None,
                })
                .collect()
        };
        let first = speak(&mut core, "r1", 20, t0 + Duration::from_millis(400));
        assert_eq!(turn_ends(first), vec![Some(t0)]);
        let second = speak(&mut core, "r1", 20, t0 + Duration::from_millis(450));
        assert_eq!(turn_ends(second), vec![None]);
    }

    #[test]
    fn heard_prefix_cuts_at_words() {
        assert_eq!(heard_prefix("bonjour tout le monde", 500, 1_000), "bonjour");
        assert_eq!(
            heard_prefix("bonjour tout le monde", 1_000, 1_000),
            "bonjour tout le monde"
        );
        assert_eq!(heard_prefix("bonjour", 100, 1_000), "");
    }
}
