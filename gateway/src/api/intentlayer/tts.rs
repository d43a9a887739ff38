//! Speech for IntentLayer answers (`response_audio`): text in, the bytes of a WAV file out.
//!
//! Backends, tried in this order until one succeeds:
//! 1. an OpenAI-compatible speech endpoint when `chat.tts_url` is configured (the operator asked for it);
//! 2. `espeak-ng` ([`crate::speech`]) when it is installed (found on `PATH` at start-up), voice `fr` or `en`;
//! 3. OpenAI's `/v1/audio/speech` when an OpenAI key is configured (`OPENAI_API_KEY`);
//! 4. a short generated tone, so that the URL handed to the client always serves a valid WAV.
//!
//! The chain hands back the WAV's bytes; the caller decides where they go (the audio store renames them into
//! place, so a reader never sees a half-written file).

use std::time::Duration;

use super::classifier::Language;
use crate::config::{Config, Secret};
use crate::speech::Espeak;

/// Longest text handed to a synthesiser; longer answers are cut at a word boundary.
pub const MAX_SPOKEN_CHARS: usize = 2000;

/// OpenAI's public speech endpoint.
const OPENAI_SPEECH_URL: &str = "https://api.openai.com/v1/audio/speech";

/// Time allowed for one remote synthesis.
const SYNTHESIS_TIMEOUT: Duration = Duration::from_secs(15);

/// Sample rate of the generated tone.
const TONE_SAMPLE_RATE: u32 = 24_000;

/// Which backend produced the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtsBackend {
    /// An OpenAI-compatible speech endpoint.
    Remote,
    /// The local `espeak-ng` program.
    Espeak,
    /// The generated tone (no synthesiser available).
    Tone,
}

/// Why a speech endpoint produced no audio (logged; the chain moves on to the next backend).
#[derive(Debug, thiserror::Error)]
enum RemoteSpeechError {
    #[error("speech endpoint request failed: {0}")]
    Request(#[source] reqwest::Error),
    #[error("speech endpoint answered HTTP {0}")]
    Status(reqwest::StatusCode),
    #[error("speech endpoint's response is not a WAV file")]
    NotWav,
}

/// An OpenAI-compatible `/audio/speech` endpoint.
#[derive(Debug)]
struct RemoteSpeech {
    /// Full URL of the speech endpoint.
    endpoint: String,
    model: String,
    voice: String,
    key: Option<Secret>,
    client: reqwest::Client,
}

/// The synthesiser chain, built once from the configuration.
#[derive(Debug)]
pub struct Tts {
    /// The configured speech endpoint (`chat.tts_url`), tried first.
    configured: Option<RemoteSpeech>,
    /// The `espeak-ng` executable, when installed.
    espeak: Option<Espeak>,
    /// OpenAI's public speech endpoint, when a key is configured and no `tts_url` is.
    openai: Option<RemoteSpeech>,
}

fn speech_client() -> Option<reqwest::Client> {
    match reqwest::Client::builder()
        .timeout(SYNTHESIS_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(client) => Some(client),
        Err(error) => {
            tracing::warn!(%error, "cannot build the HTTP client for speech synthesis; remote speech disabled");
            None
        }
    }
}

impl Tts {
    /// Builds the chain from the configuration and what is installed.
    pub fn from_config(config: &Config) -> Self {
        let remote = |endpoint: String, key: Option<Secret>| {
            Some(RemoteSpeech {
                endpoint,
                model: config.chat.tts_model.clone(),
                voice: config.voice.voice.clone(),
                key,
                client: speech_client()?,
            })
        };
        let configured = config.chat.tts_url.as_ref().and_then(|base| {
            let key =
                (config.chat.llm_api_key.clone()).or_else(|| config.voice.openai_api_key.clone());
            remote(format!("{}/audio/speech", base.trim_end_matches('/')), key)
        });
        let openai = match (&configured, &config.voice.openai_api_key) {
            (None, Some(key)) => remote(OPENAI_SPEECH_URL.to_owned(), Some(key.clone())),
            _ => None,
        };
        let tts = Tts {
            configured,
            espeak: Espeak::locate(),
            openai,
        };
        if tts.configured.is_none() && tts.espeak.is_none() && tts.openai.is_none() {
            tracing::warn!(
                "no speech synthesiser available (no tts_url, espeak-ng not installed, no OpenAI key): \
                 IntentLayer answers will carry a short tone instead of speech"
            );
        }
        tts
    }

    /// A chain with only the given `espeak-ng` (or none): for tests that need a known backend.
    pub fn local_only(espeak: Option<Espeak>) -> Self {
        Tts {
            configured: None,
            espeak,
            openai: None,
        }
    }

    /// Whether a real speech backend is available (otherwise answers get the tone).
    pub fn has_speech(&self) -> bool {
        self.configured.is_some() || self.espeak.is_some() || self.openai.is_some()
    }

    /// Speaks `text` in `language` as the bytes of a WAV file, trying each backend in turn; the tone when
    /// none succeeds, so there is always audio to serve.
    pub async fn synthesize(&self, text: &str, language: Language) -> (Vec<u8>, TtsBackend) {
        let text = spoken_text(text);
        if let Some(remote) = &self.configured {
            match remote.synthesize(&text).await {
                Ok(wav) => return (wav, TtsBackend::Remote),
                Err(error) => {
                    tracing::warn!(%error, "configured speech endpoint failed; trying the next synthesiser")
                }
            }
        }
        if let Some(espeak) = &self.espeak {
            match espeak.wav(&text, language.code()).await {
                Ok(wav) => return (wav, TtsBackend::Espeak),
                Err(error) => {
                    tracing::warn!(%error, "espeak-ng failed; trying the next synthesiser")
                }
            }
        }
        if let Some(remote) = &self.openai {
            match remote.synthesize(&text).await {
                Ok(wav) => return (wav, TtsBackend::Remote),
                Err(error) => {
                    tracing::warn!(%error, "OpenAI speech failed; falling back to a tone")
                }
            }
        }
        tracing::info!("no speech synthesiser succeeded: answering with a tone");
        (tone_wav(), TtsBackend::Tone)
    }
}

/// The text as spoken: bounded in length, cut at a word boundary.
fn spoken_text(text: &str) -> String {
    if text.chars().count() <= MAX_SPOKEN_CHARS {
        return text.to_owned();
    }
    let cut: String = text.chars().take(MAX_SPOKEN_CHARS).collect();
    match cut.rfind(char::is_whitespace) {
        Some(at) => cut[..at].to_owned(),
        None => cut,
    }
}

/// Whether `bytes` start like a RIFF/WAVE file with a data chunk.
pub fn looks_like_wav(bytes: &[u8]) -> bool {
    bytes.len() > 44 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WAVE"
}

impl RemoteSpeech {
    async fn synthesize(&self, text: &str) -> Result<Vec<u8>, RemoteSpeechError> {
        let body = serde_json::json!({
            "model": self.model,
            "input": text,
            "voice": self.voice,
            "response_format": "wav",
        });
        let mut request = self.client.post(&self.endpoint).json(&body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|error| RemoteSpeechError::Request(error.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(RemoteSpeechError::Status(status));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|error| RemoteSpeechError::Request(error.without_url()))?;
        if !looks_like_wav(&bytes) {
            return Err(RemoteSpeechError::NotWav);
        }
        Ok(bytes.into())
    }
}

/// A 0.6 s two-note chime (mono PCM16, 24 kHz) with soft edges: the answer's audio when no
/// synthesiser is available.
pub fn tone_wav() -> Vec<u8> {
    let rate = TONE_SAMPLE_RATE as f32;
    let total = (rate * 0.6) as usize;
    let fade = (rate * 0.02) as usize;
    let samples: Vec<f32> = (0..total)
        .map(|i| {
            let t = i as f32 / rate;
            let freq = if i < total / 2 { 660.0 } else { 880.0 };
            let edge = (i.min(total - 1 - i) as f32 / fade as f32).min(1.0);
            0.25 * edge * (2.0 * std::f32::consts::PI * freq * t).sin()
        })
        .collect();
    // The rate is a non-zero constant and 0.6 s is far from WAV's 4 GiB limit: the only errors
    // `to_wav_bytes` has cannot happen here.
    voxgate_dsp::wav::to_wav_bytes(TONE_SAMPLE_RATE, &samples)
        .expect("a 0.6 s tone at a fixed non-zero rate is a valid WAV")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_is_a_valid_wav() {
        let bytes = tone_wav();
        assert!(looks_like_wav(&bytes));
        let data_len = u32::from_le_bytes(bytes[40..44].try_into().unwrap()) as usize;
        assert_eq!(data_len, bytes.len() - 44);
        assert_eq!(
            u32::from_le_bytes(bytes[24..28].try_into().unwrap()),
            TONE_SAMPLE_RATE
        );
    }

    #[test]
    fn long_text_is_cut_at_a_word() {
        let text = "mot ".repeat(1000);
        let spoken = spoken_text(&text);
        assert!(spoken.chars().count() <= MAX_SPOKEN_CHARS);
        assert!(spoken.ends_with("mot"));
    }

    #[tokio::test]
    async fn failing_espeak_falls_back_to_the_tone() {
        let tts = Tts::local_only(Some(Espeak::new("/bin/false")));
        assert_eq!(
            tts.synthesize("x", Language::En).await,
            (tone_wav(), TtsBackend::Tone)
        );
    }
}
