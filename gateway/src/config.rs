//! One [`Config`] for the whole gateway, layered from four sources.
//!
//! Precedence, highest first: **CLI flag > environment variable > TOML file > built-in default**.
//! The TOML file is named by `--config` / `VOXGATE_CONFIG`; it is optional.
//!
//! Why layered this way: operators keep a checked-in file, deployments override a few values through the
//! environment, and a developer overrides one value on the command line without editing either.
//!
//! # The TOML file
//! Sections mirror the struct: top-level keys, then `[limits]`, `[voice]`, `[chat]` and `[[chat.chatbots]]`.
//! Every section rejects unknown keys, so a typo fails at start-up with an error that names the key.
//!
//! Durations are written either as a number of seconds (`idle_timeout = 300`, `header_timeout = 0.5`) or as a
//! string with one unit: `"250ms"`, `"10s"`, `"5m"`, `"1h"` (see [`parse_duration`]). The same strings work
//! in flags and environment variables. Sizes are plain integers in bytes.
//!
//! ```toml
//! http_addr = "0.0.0.0:8080"
//! cors_origins = ["https://app.example.com"]
//!
//! [limits]
//! header_timeout = "10s"
//! max_connections_per_ip = 64
//!
//! [voice]
//! realtime_url = "wss://api.openai.com/v1/realtime"
//! idle_timeout = "5m"
//!
//! [[chat.chatbots]]
//! id = "support"
//! name = "Support"
//! system_prompt = "You answer support questions."
//! ```
//!
//! # Secrets
//! `OPENAI_API_KEY`, `VOXGATE_LLM_API_KEY` and `VOXGATE_JWT_SECRET` are read from the environment (or the file),
//! never from flags: flags are visible to every user through `ps`. Secrets are held in [`Secret`], whose
//! `Debug` prints `[redacted]`, and database URLs in [`DatabaseUrl`], whose `Debug` hides the password, so
//! `tracing::info!(?config)` is safe.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, ValueEnum};
use serde::Deserialize;

/// The whole gateway configuration. Build it with [`Config::load`] (process arguments and environment),
/// [`Config::load_from`] (explicit arguments and environment, for tests) or [`Config::for_test`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP/WebSocket listener binds (`--http-addr`, `VOXGATE_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// Directory for the SQLite database, generated audio and uploads (`--data-dir`, `VOXGATE_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Log line format (`--log-format text|json`).
    pub log_format: LogFormat,
    /// Browser origins allowed by CORS. Empty means no CORS headers at all (same-origin clients only).
    pub cors_origins: Vec<String>,
    /// Largest request body accepted by ordinary HTTP routes; larger bodies get 413.
    /// Upload routes may raise it for themselves (see [`ChatConfig::max_upload_bytes`]).
    pub body_limit_bytes: usize,
    /// Transport limits shared by every socket.
    pub limits: LimitsConfig,
    /// The realtime voice path.
    pub voice: VoiceConfig,
    /// The chat domain and its API surfaces.
    pub chat: ChatConfig,
}

/// Transport limits: how long we wait, how much we buffer, how many we accept.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// A client must send a complete request head within this time, or the connection is closed
    /// (slowloris defence). Also bounds how long an idle keep-alive connection is kept.
    #[serde(with = "duration_serde")]
    pub header_timeout: Duration,
    /// Open TCP connections overall; past it new connections are closed at once.
    pub max_connections: usize,
    /// Open TCP connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Largest WebSocket message (after reassembly of fragments).
    pub ws_max_message_bytes: usize,
    /// Largest single WebSocket frame.
    pub ws_max_frame_bytes: usize,
    /// WebSocket read buffer per socket. Small, because there may be thousands of sockets.
    pub ws_read_buffer_bytes: usize,
    /// WebSocket write buffer per socket; writes flush once it is full.
    pub ws_write_buffer_bytes: usize,
    /// Interval between server pings on long-lived sockets; a peer that misses two is dropped.
    #[serde(with = "duration_serde")]
    pub ping_interval: Duration,
    /// How long to wait for the peer's close frame after sending ours.
    #[serde(with = "duration_serde")]
    pub close_timeout: Duration,
    /// On shutdown, how long live connections and sessions get to finish before the server returns anyway.
    #[serde(with = "duration_serde")]
    pub shutdown_drain: Duration,
}

/// The realtime voice path.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceConfig {
    /// OpenAI-compatible Realtime WebSocket endpoint (`wss://api.openai.com/v1/realtime`).
    /// `None` runs the built-in local engine in-process.
    pub realtime_url: Option<String>,
    /// Key for `realtime_url` (env `OPENAI_API_KEY`; never a flag, never logged).
    pub openai_api_key: Option<Secret>,
    /// Realtime model name sent upstream.
    pub realtime_model: String,
    /// What the built-in engine does with speech: answer it (`voice`) or play it back (`echo`).
    pub local_engine_mode: LocalEngineMode,
    /// Voice name sent upstream (`alloy`, ...).
    pub voice: String,
    /// Session instructions (system prompt) sent upstream.
    pub instructions: String,
    /// Concurrent voice sessions; past it new sessions are refused.
    pub max_sessions: usize,
    /// A session with no client audio or message for this long is closed.
    #[serde(with = "duration_serde")]
    pub idle_timeout: Duration,
    /// Batch client audio for this many milliseconds before sending upstream; 0 forwards each frame at once.
    pub append_batch_ms: u64,
    /// Turn detection requested from the upstream.
    pub turn_detection: TurnDetection,
    /// Bound of the upstream-to-client audio queue, in frames. A full queue drops the oldest (`client_slow`).
    pub output_queue_frames: usize,
    /// Time allowed to open the upstream WebSocket, handshake included.
    #[serde(with = "duration_serde")]
    pub upstream_connect_timeout: Duration,
    /// Reconnect attempts after an upstream connection drops mid-session, before the session fails.
    pub upstream_reconnect_attempts: u32,
    /// Upstream sessions are capped in length by providers (60 min for OpenAI): roll over to a fresh upstream
    /// session after this long, carrying the conversation over.
    #[serde(with = "duration_serde")]
    pub upstream_rollover_after: Duration,
}

/// The chat domain: storage, text models, and the seed chat surfaces.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// `sqlite://...` or `postgres://...`. `None` means the SQLite file `data_dir/voxgate.db`;
    /// use [`Config::database_url`] to get the resolved URL.
    pub database_url: Option<DatabaseUrl>,
    /// OpenAI-compatible chat completions base URL (e.g. `http://localhost:11434/v1`). `None` uses the
    /// built-in local text model.
    pub llm_url: Option<String>,
    /// Model name sent to `llm_url`.
    pub llm_model: String,
    /// Key for `llm_url` (env `VOXGATE_LLM_API_KEY`, falling back to `OPENAI_API_KEY`).
    pub llm_api_key: Option<Secret>,
    /// Time allowed for a whole model reply.
    #[serde(with = "duration_serde")]
    pub llm_timeout: Duration,
    /// HMAC secret for the chatbot session JWTs (env `VOXGATE_JWT_SECRET`). When unset, [`Config::load_from`]
    /// generates a random per-process secret and sets [`ChatConfig::jwt_secret_ephemeral`]; tokens then do not
    /// survive a restart and the server logs a warning.
    pub jwt_secret: Secret,
    /// True when `jwt_secret` was generated for this process rather than configured.
    #[serde(skip)]
    pub jwt_secret_ephemeral: bool,
    /// Lifetime of a chatbot session token.
    #[serde(with = "duration_serde")]
    pub jwt_ttl: Duration,
    /// The chatbots served by `POST /chatbot/{id}/session`.
    pub chatbots: Vec<ChatbotConfig>,
    /// Messages one chat WebSocket may send per minute.
    pub ws_messages_per_minute: u32,
    /// IntentLayer sessions expire after this much idle time.
    #[serde(with = "duration_serde")]
    pub session_ttl: Duration,
    /// Live IntentLayer sessions per user.
    pub max_sessions_per_user: u32,
    /// IntentLayer API requests per minute per session (chat, info, delete) and per user (create, list), with a
    /// burst of a twelfth of it (at least 1); past it, 429. 0 disables the limit.
    pub intentlayer_rate_per_minute: u32,
    /// Memory for rendered IntentLayer history pages of unchanged sessions, in MiB; 0 disables the cache.
    pub history_cache_mib: u32,
    /// Largest attachment or document upload.
    pub max_upload_bytes: usize,
    /// OpenAI-compatible speech endpoint base URL for spoken answers. `None` uses the built-in synthesiser.
    pub tts_url: Option<String>,
    /// Model name sent to `tts_url`.
    pub tts_model: String,
}

/// One chatbot of seed 004.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatbotConfig {
    /// Path id (`/chatbot/{id}/session`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// System prompt for this chatbot.
    #[serde(default)]
    pub system_prompt: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// What the built-in engine does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LocalEngineMode {
    /// Transcribe, answer with the local text model, and speak the answer.
    #[default]
    Voice,
    /// Play each utterance back; useful for latency measurements.
    Echo,
}

/// Turn detection requested from the upstream (OpenAI Realtime `turn_detection.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TurnDetection {
    /// Energy/voice-activity based end of turn.
    #[default]
    #[value(name = "server_vad")]
    ServerVad,
    /// Model-judged end of turn.
    #[value(name = "semantic_vad")]
    SemanticVad,
    /// The client commits turns itself.
    #[value(name = "none")]
    None,
}

impl TurnDetection {
    /// The wire name (`server_vad`, `semantic_vad`, `none`).
    pub fn as_str(self) -> &'static str {
        match self {
            TurnDetection::ServerVad => "server_vad",
            TurnDetection::SemanticVad => "semantic_vad",
            TurnDetection::None => "none",
        }
    }
}

/// A secret string (API key, signing key). `Debug` and `Display` never show it; call [`Secret::expose`]
/// at the one place it is sent.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A fresh random secret of 32 bytes, hex-encoded.
    pub fn random() -> Self {
        let bytes: [u8; 32] = rand::random();
        Secret(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A database URL. `Debug`/`Display` replace the password (if any) with `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The full URL, password included. Pass it to the driver; never log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut url) if url.password().is_some() => {
                // set_password only fails for URLs that cannot have credentials, which this one has.
                let _ = url.set_password(Some("***"));
                url.to_string()
            }
            Ok(url) => url.to_string(),
            // Unparseable: it may still hold a password somewhere, so show only the scheme-ish prefix.
            Err(_) => format!("{}…", self.0.split(':').next().unwrap_or_default()),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            log_format: LogFormat::Text,
            cors_origins: Vec::new(),
            body_limit_bytes: 1024 * 1024,
            limits: LimitsConfig::default(),
            voice: VoiceConfig::default(),
            chat: ChatConfig::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            header_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_ip: 256,
            ws_max_message_bytes: 256 * 1024,
            ws_max_frame_bytes: 256 * 1024,
            // 4 KiB each keeps an idle voice session near 23 KiB (measured over 1000 sessions);
            // 8 KiB measured 31 KiB, too close to the 32 KiB budget. A 20 ms frame is 960 bytes.
            ws_read_buffer_bytes: 4 * 1024,
            ws_write_buffer_bytes: 4 * 1024,
            ping_interval: Duration::from_secs(25),
            close_timeout: Duration::from_secs(5),
            shutdown_drain: Duration::from_secs(10),
        }
    }
}

impl Default for VoiceConfig {
    fn default() -> Self {
        VoiceConfig {
            realtime_url: None,
            openai_api_key: None,
            realtime_model: "gpt-realtime".to_owned(),
            local_engine_mode: LocalEngineMode::Voice,
            voice: "alloy".to_owned(),
            instructions: "You are a helpful, concise voice assistant.".to_owned(),
            max_sessions: 1000,
            idle_timeout: Duration::from_secs(300),
            append_batch_ms: 0,
            turn_detection: TurnDetection::ServerVad,
            // 20 ms frames: 256 is 5.12 s of output (a model may burst ahead of playback).
            output_queue_frames: 256,
            upstream_connect_timeout: Duration::from_secs(10),
            upstream_reconnect_attempts: 3,
            upstream_rollover_after: Duration::from_secs(55 * 60),
        }
    }
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            database_url: None,
            llm_url: None,
            llm_model: "gpt-4o-mini".to_owned(),
            llm_api_key: None,
            llm_timeout: Duration::from_secs(60),
            // Replaced by a per-process random secret in `Config::load_from` when nothing is configured; this
            // value only exists so that `Default` is total.
            jwt_secret: Secret::random(),
            jwt_secret_ephemeral: true,
            jwt_ttl: Duration::from_secs(3600),
            chatbots: vec![ChatbotConfig {
                id: "assistant".to_owned(),
                name: "Assistant".to_owned(),
                system_prompt: "You are a helpful assistant. Answer clearly and briefly."
                    .to_owned(),
            }],
            ws_messages_per_minute: 30,
            session_ttl: Duration::from_secs(30 * 60),
            max_sessions_per_user: 5,
            intentlayer_rate_per_minute: 120,
            history_cache_mib: 64,
            max_upload_bytes: 10 * 1024 * 1024,
            tts_url: None,
            tts_model: "gpt-4o-mini-tts".to_owned(),
        }
    }
}

/// Command-line flags. Every field is optional so that "not given" falls through to the environment, the
/// file and the defaults. Each flag can also be set by the environment variable shown in `--help`.
#[derive(Debug, Default, Parser)]
#[command(
    name = "voxgate",
    version,
    about = "voxgate: realtime audio gateway (voice relay, chat APIs, metrics)",
    after_help = "Precedence: flag > environment > TOML file (--config) > default.\n\
Durations: seconds (\"300\") or one unit (\"250ms\", \"10s\", \"5m\", \"1h\").\n\
Secrets are read from the environment only: OPENAI_API_KEY, VOXGATE_LLM_API_KEY (falls back to\n\
OPENAI_API_KEY), VOXGATE_JWT_SECRET (random per process when unset)."
)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "VOXGATE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to listen on for HTTP and WebSocket [default: 127.0.0.1:8080].
    #[arg(long, env = "VOXGATE_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Data directory (SQLite database, audio, uploads) [default: ./data].
    #[arg(long, env = "VOXGATE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, env = "VOXGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Allowed CORS origins, comma-separated [default: none, no CORS headers].
    #[arg(
        long,
        env = "VOXGATE_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    pub cors_origins: Option<Vec<String>>,
    /// Largest HTTP request body in bytes [default: 1048576].
    #[arg(long, env = "VOXGATE_BODY_LIMIT_BYTES", value_name = "BYTES")]
    pub body_limit_bytes: Option<usize>,
    /// Time allowed to send a request head [default: 10s].
    #[arg(long, env = "VOXGATE_HEADER_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub header_timeout: Option<Duration>,
    /// Open connections overall [default: 10000].
    #[arg(long, env = "VOXGATE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Open connections per client IP [default: 256].
    #[arg(long, env = "VOXGATE_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Time live connections get to finish on shutdown [default: 10s].
    #[arg(long, env = "VOXGATE_SHUTDOWN_DRAIN", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_drain: Option<Duration>,
    /// OpenAI-compatible Realtime WebSocket URL [default: built-in local engine].
    #[arg(long, env = "VOXGATE_REALTIME_URL", value_name = "URL")]
    pub realtime_url: Option<String>,
    /// Realtime model name [default: gpt-realtime].
    #[arg(long, env = "VOXGATE_REALTIME_MODEL", value_name = "MODEL")]
    pub realtime_model: Option<String>,
    /// Built-in engine mode [default: voice].
    #[arg(long, env = "VOXGATE_LOCAL_ENGINE_MODE", value_enum)]
    pub local_engine_mode: Option<LocalEngineMode>,
    /// Voice name [default: alloy].
    #[arg(long, env = "VOXGATE_VOICE", value_name = "NAME")]
    pub voice: Option<String>,
    /// Session instructions (system prompt) for voice sessions.
    #[arg(long, env = "VOXGATE_INSTRUCTIONS", value_name = "TEXT")]
    pub instructions: Option<String>,
    /// Concurrent voice sessions [default: 1000].
    #[arg(long, env = "VOXGATE_MAX_SESSIONS", value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Idle voice session timeout [default: 300s].
    #[arg(long, env = "VOXGATE_IDLE_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: Option<Duration>,
    /// Batch client audio for N ms before sending upstream [default: 0].
    #[arg(long, env = "VOXGATE_APPEND_BATCH_MS", value_name = "MS")]
    pub append_batch_ms: Option<u64>,
    /// Turn detection [default: server_vad].
    #[arg(long, env = "VOXGATE_TURN_DETECTION", value_enum)]
    pub turn_detection: Option<TurnDetection>,
    /// Database URL, sqlite://... or postgres://... [default: sqlite in the data directory].
    #[arg(long, env = "VOXGATE_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// OpenAI-compatible chat completions base URL [default: built-in local model].
    #[arg(long, env = "VOXGATE_LLM_URL", value_name = "URL")]
    pub llm_url: Option<String>,
    /// Chat model name [default: gpt-4o-mini].
    #[arg(long, env = "VOXGATE_LLM_MODEL", value_name = "MODEL")]
    pub llm_model: Option<String>,
    /// OpenAI-compatible speech base URL [default: built-in synthesiser].
    #[arg(long, env = "VOXGATE_TTS_URL", value_name = "URL")]
    pub tts_url: Option<String>,
    /// Chat WebSocket messages per minute [default: 30].
    #[arg(long, env = "VOXGATE_WS_MESSAGES_PER_MINUTE", value_name = "N")]
    pub ws_messages_per_minute: Option<u32>,
    /// IntentLayer session idle TTL [default: 30m].
    #[arg(long, env = "VOXGATE_SESSION_TTL", value_parser = parse_duration, value_name = "DURATION")]
    pub session_ttl: Option<Duration>,
    /// Live IntentLayer sessions per user [default: 5].
    #[arg(long, env = "VOXGATE_MAX_SESSIONS_PER_USER", value_name = "N")]
    pub max_sessions_per_user: Option<u32>,
    /// IntentLayer API requests per minute per session or user, 0 = unlimited [default: 120].
    #[arg(long, env = "VOXGATE_INTENTLAYER_RATE_PER_MINUTE", value_name = "N")]
    pub intentlayer_rate_per_minute: Option<u32>,
    /// Memory for cached IntentLayer history pages, in MiB, 0 = no cache [default: 64].
    #[arg(long, env = "VOXGATE_HISTORY_CACHE_MIB", value_name = "MIB")]
    pub history_cache_mib: Option<u32>,
}

impl Cli {
    /// Writes every given value over `config`.
    fn apply(self, config: &mut Config) {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *slot = value;
            }
        }
        set(&mut config.http_addr, self.http_addr);
        set(&mut config.data_dir, self.data_dir);
        set(&mut config.log_format, self.log_format);
        set(&mut config.cors_origins, self.cors_origins);
        set(&mut config.body_limit_bytes, self.body_limit_bytes);
        let limits = &mut config.limits;
        set(&mut limits.header_timeout, self.header_timeout);
        set(&mut limits.max_connections, self.max_connections);
        set(
            &mut limits.max_connections_per_ip,
            self.max_connections_per_ip,
        );
        set(&mut limits.shutdown_drain, self.shutdown_drain);
        let voice = &mut config.voice;
        set(&mut voice.realtime_url, self.realtime_url.map(Some));
        set(&mut voice.realtime_model, self.realtime_model);
        set(&mut voice.local_engine_mode, self.local_engine_mode);
        set(&mut voice.voice, self.voice);
        set(&mut voice.instructions, self.instructions);
        set(&mut voice.max_sessions, self.max_sessions);
        set(&mut voice.idle_timeout, self.idle_timeout);
        set(&mut voice.append_batch_ms, self.append_batch_ms);
        set(&mut voice.turn_detection, self.turn_detection);
        let chat = &mut config.chat;
        set(
            &mut chat.database_url,
            self.database_url.map(|u| Some(DatabaseUrl(u))),
        );
        set(&mut chat.llm_url, self.llm_url.map(Some));
        set(&mut chat.llm_model, self.llm_model);
        set(&mut chat.tts_url, self.tts_url.map(Some));
        set(
            &mut chat.ws_messages_per_minute,
            self.ws_messages_per_minute,
        );
        set(&mut chat.session_ttl, self.session_ttl);
        set(&mut chat.max_sessions_per_user, self.max_sessions_per_user);
        set(
            &mut chat.intentlayer_rate_per_minute,
            self.intentlayer_rate_per_minute,
        );
        set(&mut chat.history_cache_mib, self.history_cache_mib);
    }
}

impl Config {
    /// Loads the configuration from the process arguments and environment.
    ///
    /// `--help` and `--version` come back as a [`clap::Error`] inside the `anyhow::Error`; the binary
    /// downcasts it and calls `exit()` so they print and exit as usual.
    pub fn load() -> anyhow::Result<Config> {
        Config::load_from(std::env::args_os(), |name| std::env::var(name).ok())
    }

    /// Loads the configuration from explicit arguments (`args[0]` is the program name) and an explicit
    /// environment lookup, so tests never touch (or race on) the process environment.
    pub fn load_from<I, T>(args: I, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Config>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        // Empty variables count as unset: `VOXGATE_REALTIME_URL=` in a compose file means "not configured".
        let env = |name: &str| env(name).filter(|value| !value.is_empty());

        // Clap would read the process environment itself; strip the `env` attributes from the parsing command
        // and feed the environment through the same parsers explicitly instead.
        let annotated = Cli::command();
        let mut env_args: Vec<(String, String, String)> = Vec::new();
        for arg in annotated.get_arguments() {
            if let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) {
                let var = var.to_string_lossy().into_owned();
                if let Some(value) = env(&var) {
                    // `--flag=value`, so a value starting with '-' is not mistaken for a flag.
                    env_args.push((var, format!("--{long}={value}"), value));
                }
            }
        }
        let parser = || Cli::command().mut_args(|arg| arg.env(None::<&'static str>));

        let flags = match parser().try_get_matches_from(&args) {
            Ok(matches) => Cli::from_arg_matches(&matches)?,
            Err(err) if err.kind() == clap::error::ErrorKind::DisplayHelp => {
                // Render help from the annotated command so it lists the environment variables.
                let err = Cli::command()
                    .mut_args(|arg| arg.hide_env_values(true))
                    .try_get_matches_from(&args)
                    .err()
                    .unwrap_or(err);
                return Err(err.into());
            }
            Err(err) => return Err(err.into()),
        };

        let mut from_env = Cli::default();
        for (var, flag_and_value, value) in &env_args {
            // One parse per variable so a bad value is reported against the variable, not a flag never typed.
            let matches = parser()
                .try_get_matches_from(["voxgate", flag_and_value.as_str()])
                .map_err(|err| {
                    anyhow::anyhow!(
                        "invalid value {value:?} in environment variable {var}: {}",
                        clap_error_summary(&err)
                    )
                })?;
            let parsed = Cli::from_arg_matches(&matches)?;
            from_env = merge_cli(from_env, parsed);
        }

        let config_path = flags.config.clone().or_else(|| from_env.config.clone());
        let mut config = match &config_path {
            Some(path) => Config::from_toml_file(path)?,
            None => Config::default(),
        };
        let jwt_from_file = config_path.is_some() && !config.chat.jwt_secret_ephemeral;
        from_env.apply(&mut config);
        flags.apply(&mut config);

        // Secrets: environment only (or the file), never flags.
        if let Some(key) = env("OPENAI_API_KEY") {
            config.voice.openai_api_key = Some(Secret(key));
        }
        if let Some(key) = env("VOXGATE_LLM_API_KEY") {
            config.chat.llm_api_key = Some(Secret(key));
        }
        if config.chat.llm_api_key.is_none() {
            config.chat.llm_api_key = config.voice.openai_api_key.clone();
        }
        if let Some(secret) = env("VOXGATE_JWT_SECRET") {
            config.chat.jwt_secret = Secret(secret);
            config.chat.jwt_secret_ephemeral = false;
        } else if !jwt_from_file {
            config.chat.jwt_secret = Secret::random();
            config.chat.jwt_secret_ephemeral = true;
        }

        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML configuration file. Unknown keys are errors that name the key.
    pub fn from_toml_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read config file {}", path.display()))?;
        Config::from_toml_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses TOML configuration text (see the module docs for the format).
    pub fn from_toml_str(text: &str) -> anyhow::Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|err| anyhow::anyhow!("{err}"))?;
        // A secret present in the file is a configured one; the default random one is ephemeral.
        config.chat.jwt_secret_ephemeral = !toml_has_jwt_secret(text);
        Ok(config)
    }

    /// A configuration for in-process tests: `127.0.0.1:0`, the given data directory, local engines,
    /// SQLite in the data directory, and short timeouts so tests about timeouts finish quickly.
    pub fn for_test(data_dir: &Path) -> Config {
        let mut config = Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_path_buf(),
            ..Config::default()
        };
        // Short enough for timeout tests to be quick, long enough that a test client's pooled keep-alive
        // connection is not closed under it between two requests (a reuse racing the close would flake).
        config.limits.header_timeout = Duration::from_secs(1);
        config.limits.ping_interval = Duration::from_secs(2);
        config.limits.close_timeout = Duration::from_millis(500);
        config.limits.shutdown_drain = Duration::from_secs(2);
        config.voice.max_sessions = 64;
        config.voice.idle_timeout = Duration::from_secs(10);
        config.voice.upstream_connect_timeout = Duration::from_secs(2);
        config.chat.llm_timeout = Duration::from_secs(10);
        config.chat.jwt_secret = Secret::new("voxgate-test-jwt-secret");
        config.chat.jwt_secret_ephemeral = false;
        config
    }

    /// The database URL to connect to: the configured one, or the SQLite file `data_dir/voxgate.db`
    /// (created if missing).
    pub fn database_url(&self) -> DatabaseUrl {
        match &self.chat.database_url {
            Some(url) => url.clone(),
            None => DatabaseUrl(format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("voxgate.db").display()
            )),
        }
    }

    /// Checks values that parse but make no sense. Errors name the offending key.
    pub fn validate(&self) -> anyhow::Result<()> {
        fn ensure(ok: bool, key: &str, why: &str) -> anyhow::Result<()> {
            if ok {
                Ok(())
            } else {
                Err(anyhow::anyhow!("invalid configuration: {key} {why}"))
            }
        }
        for origin in &self.cors_origins {
            if origin != "*" {
                check_origin(origin)?;
            }
        }
        let l = &self.limits;
        ensure(
            self.body_limit_bytes > 0,
            "body_limit_bytes",
            "must be at least 1",
        )?;
        ensure(
            !l.header_timeout.is_zero(),
            "limits.header_timeout",
            "must be positive",
        )?;
        ensure(
            l.max_connections > 0,
            "limits.max_connections",
            "must be at least 1",
        )?;
        ensure(
            l.max_connections_per_ip > 0,
            "limits.max_connections_per_ip",
            "must be at least 1",
        )?;
        ensure(
            l.ws_max_frame_bytes > 0,
            "limits.ws_max_frame_bytes",
            "must be at least 1",
        )?;
        ensure(
            l.ws_max_message_bytes >= l.ws_max_frame_bytes,
            "limits.ws_max_message_bytes",
            "must be at least limits.ws_max_frame_bytes",
        )?;
        ensure(
            l.ws_read_buffer_bytes > 0,
            "limits.ws_read_buffer_bytes",
            "must be at least 1",
        )?;
        ensure(
            l.ws_write_buffer_bytes > 0,
            "limits.ws_write_buffer_bytes",
            "must be at least 1",
        )?;
        ensure(
            !l.ping_interval.is_zero(),
            "limits.ping_interval",
            "must be positive",
        )?;
        let v = &self.voice;
        ensure(
            v.max_sessions > 0,
            "voice.max_sessions",
            "must be at least 1",
        )?;
        ensure(
            v.output_queue_frames > 0,
            "voice.output_queue_frames",
            "must be at least 1",
        )?;
        ensure(
            !v.idle_timeout.is_zero(),
            "voice.idle_timeout",
            "must be positive",
        )?;
        ensure(
            v.append_batch_ms <= 1000,
            "voice.append_batch_ms",
            "must be at most 1000",
        )?;
        if let Some(url) = &v.realtime_url {
            check_url(url, "voice.realtime_url", &["ws", "wss", "http", "https"])?;
        }
        let c = &self.chat;
        if let Some(url) = &c.llm_url {
            check_url(url, "chat.llm_url", &["http", "https"])?;
        }
        if let Some(url) = &c.tts_url {
            check_url(url, "chat.tts_url", &["http", "https"])?;
        }
        if let Some(url) = &c.database_url {
            let scheme = url.as_str().split(':').next().unwrap_or_default();
            ensure(
                matches!(scheme, "sqlite" | "postgres" | "postgresql"),
                "chat.database_url",
                "must start with sqlite:, postgres: or postgresql:",
            )?;
        }
        ensure(
            c.ws_messages_per_minute > 0,
            "chat.ws_messages_per_minute",
            "must be at least 1",
        )?;
        ensure(
            c.max_sessions_per_user > 0,
            "chat.max_sessions_per_user",
            "must be at least 1",
        )?;
        ensure(
            c.jwt_secret.expose().len() >= 16,
            "chat.jwt_secret",
            "must be at least 16 characters",
        )?;
        let mut ids = std::collections::HashSet::new();
        for bot in &c.chatbots {
            ensure(!bot.id.is_empty(), "chat.chatbots.id", "must not be empty")?;
            ensure(
                bot.id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_'),
                "chat.chatbots.id",
                "may only contain ASCII letters, digits, '-' and '_'",
            )?;
            ensure(
                ids.insert(bot.id.as_str()),
                "chat.chatbots.id",
                "must be unique",
            )?;
        }
        Ok(())
    }
}

fn merge_cli(lower: Cli, higher: Cli) -> Cli {
    Cli {
        config: higher.config.or(lower.config),
        http_addr: higher.http_addr.or(lower.http_addr),
        data_dir: higher.data_dir.or(lower.data_dir),
        log_format: higher.log_format.or(lower.log_format),
        cors_origins: higher.cors_origins.or(lower.cors_origins),
        body_limit_bytes: higher.body_limit_bytes.or(lower.body_limit_bytes),
        header_timeout: higher.header_timeout.or(lower.header_timeout),
        max_connections: higher.max_connections.or(lower.max_connections),
        max_connections_per_ip: higher
            .max_connections_per_ip
            .or(lower.max_connections_per_ip),
        shutdown_drain: higher.shutdown_drain.or(lower.shutdown_drain),
        realtime_url: higher.realtime_url.or(lower.realtime_url),
        realtime_model: higher.realtime_model.or(lower.realtime_model),
        local_engine_mode: higher.local_engine_mode.or(lower.local_engine_mode),
        voice: higher.voice.or(lower.voice),
        instructions: higher.instructions.or(lower.instructions),
        max_sessions: higher.max_sessions.or(lower.max_sessions),
        idle_timeout: higher.idle_timeout.or(lower.idle_timeout),
        append_batch_ms: higher.append_batch_ms.or(lower.append_batch_ms),
        turn_detection: higher.turn_detection.or(lower.turn_detection),
        database_url: higher.database_url.or(lower.database_url),
        llm_url: higher.llm_url.or(lower.llm_url),
        llm_model: higher.llm_model.or(lower.llm_model),
        tts_url: higher.tts_url.or(lower.tts_url),
        ws_messages_per_minute: higher
            .ws_messages_per_minute
            .or(lower.ws_messages_per_minute),
        session_ttl: higher.session_ttl.or(lower.session_ttl),
        max_sessions_per_user: higher.max_sessions_per_user.or(lower.max_sessions_per_user),
        intentlayer_rate_per_minute: higher
            .intentlayer_rate_per_minute
            .or(lower.intentlayer_rate_per_minute),
        history_cache_mib: higher.history_cache_mib.or(lower.history_cache_mib),
    }
}

/// The first line of a clap error without the "error: " prefix and usage footer.
fn clap_error_summary(err: &clap::Error) -> String {
    let text = err.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

fn toml_has_jwt_secret(text: &str) -> bool {
    toml::from_str::<toml::Value>(text)
        .ok()
        .and_then(|value| value.get("chat")?.get("jwt_secret").cloned())
        .is_some()
}

/// A CORS origin is `scheme://host[:port]`, exactly as browsers send it in `Origin` (no path, no trailing
/// slash), so that comparison is a plain string match.
fn check_origin(origin: &str) -> anyhow::Result<()> {
    let bad =
        |why: &str| anyhow::anyhow!("invalid configuration: cors_origins entry {origin:?} {why}");
    let url = url::Url::parse(origin).map_err(|err| bad(&format!("is not an origin: {err}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("must be http://host[:port] or https://host[:port]"));
    }
    if origin.ends_with('/')
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(bad("must not have a path, query or trailing slash"));
    }
    Ok(())
}

fn check_url(url: &str, key: &str, schemes: &[&str]) -> anyhow::Result<()> {
    let parsed = url::Url::parse(url)
        .map_err(|err| anyhow::anyhow!("invalid configuration: {key} is not a URL: {err}"))?;
    if !schemes.contains(&parsed.scheme()) {
        anyhow::bail!(
            "invalid configuration: {key} must use one of the schemes {}, got {:?}",
            schemes.join(", "),
            parsed.scheme()
        );
    }
    Ok(())
}

/// Parses a duration: a number of seconds (`"300"`, `"0.5"`) or a number with one unit:
/// `ms`, `s`, `m`/`min`, `h` (`"250ms"`, `"10s"`, `"5m"`, `"1h"`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!(
            "invalid duration {text:?}: expected e.g. \"300\", \"250ms\", \"10s\", \"5m\", \"1h\""
        )
    })?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "invalid duration {text:?}: unknown unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * scale)
        .map_err(|err| format!("invalid duration {text:?}: {err}"))
}

/// Serde support for durations written as seconds or as a [`parse_duration`] string.
mod duration_serde {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration: seconds as a number, or a string like \"250ms\", \"10s\", \"5m\", \"1h\"")
        }

        fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(secs))
        }

        fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Duration, E> {
            u64::try_from(secs)
                .map(Duration::from_secs)
                .map_err(|_| E::custom("a duration cannot be negative"))
        }

        fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(secs).map_err(E::custom)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            super::parse_duration(text).map_err(E::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        let check = |text: &str, expected: Duration| {
            assert_eq!(parse_duration(text), Ok(expected), "{text}")
        };
        check("300", Duration::from_secs(300));
        check("0.5", Duration::from_millis(500));
        check("250ms", Duration::from_millis(250));
        check("10s", Duration::from_secs(10));
        check("5m", Duration::from_secs(300));
        check("1h", Duration::from_secs(3600));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn debug_redacts_secrets_and_database_passwords() {
        let mut config = Config::default();
        config.voice.openai_api_key = Some(Secret::new("sk-live-very-secret"));
        config.chat.database_url = Some(DatabaseUrl::new("postgres://app:hunter2@db:5432/voxgate"));
        let text = format!("{config:?}");
        assert!(!text.contains("sk-live-very-secret"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(
            text.contains("postgres://app:***@db:5432/voxgate"),
            "{text}"
        );
        assert!(!text.contains(config.chat.jwt_secret.expose()));
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        Config::for_test(Path::new("/tmp")).validate().unwrap();
    }
}
