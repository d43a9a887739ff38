//! Speech for IntentLayer answers (`response_audio`): text in, a WAV file out.
//!
//! Backends, tried in this order until one succeeds:
//! 1. an OpenAI-compatible speech endpoint when `chat.tts_url` is configured (the operator asked for it);
//! 2. `espeak-ng` when it is installed (found on `PATH` at start-up), voice `fr` or `en`;
//! 3. OpenAI's `/v1/audio/speech` when an OpenAI key is configured (`OPENAI_API_KEY`);
//! 4. a short generated tone, so that the URL handed to the client always serves a valid WAV.
//!
//! Every backend writes to a temporary file beside the target and renames it into place, so a reader
//! never sees a half-written WAV.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use super::classifier::Language;
use crate::config::Config;

/// Longest text handed to a synthesiser; longer answers are cut at a word boundary.
pub const MAX_SPOKEN_CHARS: usize = 2000;

/// Time allowed for one synthesis.
const SYNTHESIS_TIMEOUT: Duration = Duration::from_secs(15);

/// Sample rate of the generated tone.
const TONE_SAMPLE_RATE: u32 = 24_000;

/// Which backend produced a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtsBackend {
    /// An OpenAI-compatible speech endpoint.
    Remote,
    /// The local `espeak-ng` program.
    Espeak,
    /// The generated tone (no synthesiser available).
    Tone,
}

/// Why a synthesis failed. Only the tone backend's I/O errors reach the caller; the others fall through.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TtsError {
    /// Writing the WAV failed.
    #[error("cannot write audio file: {0}")]
    Io(#[from] std::io::Error),
    /// A backend ran but produced no usable audio.
    #[error("{backend} failed: {reason}")]
    Backend {
        /// The backend name.
        backend: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// An OpenAI-compatible `/audio/speech` endpoint.
struct RemoteSpeech {
    /// Full URL of the speech endpoint.
    endpoint: String,
    model: String,
    voice: String,
    key: Option<crate::config::Secret>,
    client: reqwest::Client,
}

/// The synthesiser chain, built once from the configuration.
pub struct Tts {
    /// The configured speech endpoint (`chat.tts_url`), tried first.
    configured: Option<RemoteSpeech>,
    /// The `espeak-ng` executable, when installed.
    espeak: Option<PathBuf>,
    /// OpenAI's public speech endpoint, when a key is configured and no `tts_url` is.
    openai: Option<RemoteSpeech>,
}

impl std::fmt::Debug for Tts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tts")
            .field(
                "configured",
                &self.configured.as_ref().map(|r| r.endpoint.as_str()),
            )
            .field("espeak", &self.espeak)
            .field("openai", &self.openai.is_some())
            .finish()
    }
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

/// Finds an executable by name on `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

impl Tts {
    /// Builds the chain from the configuration and what is installed.
    pub fn from_config(config: &Config) -> Self {
        let configured = config.chat.tts_url.as_ref().and_then(|base| {
            Some(RemoteSpeech {
                endpoint: format!("{}/audio/speech", base.trim_end_matches('/')),
                model: config.chat.tts_model.clone(),
                voice: config.voice.voice.clone(),
                key: config
                    .chat
                    .llm_api_key
                    .clone()
                    .or_else(|| config.voice.openai_api_key.clone()),
                client: speech_client()?,
            })
        });
        let openai = match (&configured, &config.voice.openai_api_key) {
            (None, Some(key)) => speech_client().map(|client| RemoteSpeech {
                endpoint: "https://api.openai.com/v1/audio/speech".to_owned(),
                model: config.chat.tts_model.clone(),
                voice: config.voice.voice.clone(),
                key: Some(key.clone()),
                client,
            }),
            _ => None,
        };
        let tts = Tts {
            configured,
            espeak: find_on_path("espeak-ng"),
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
    pub fn local_only(espeak: Option<PathBuf>) -> Self {
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

    /// Speaks `text` in `language` into the WAV file `out`, trying each backend in turn.
    ///
    /// # Errors
    /// Only when even the tone cannot be written (disk full, directory gone).
    pub async fn synthesize(
        &self,
        text: &str,
        language: Language,
        out: &Path,
    ) -> Result<TtsBackend, TtsError> {
        let text = spoken_text(text);
        let tmp = temp_path(out);
        if let Some(remote) = &self.configured {
            match remote.synthesize(&text, &tmp).await {
                Ok(()) => return finish(&tmp, out, TtsBackend::Remote).await,
                Err(error) => {
                    tracing::warn!(%error, "configured speech endpoint failed; trying the next synthesiser")
                }
            }
        }
        if let Some(espeak) = &self.espeak {
            match espeak_ng(espeak, &text, language, &tmp).await {
                Ok(()) => return finish(&tmp, out, TtsBackend::Espeak).await,
                Err(error) => {
                    tracing::warn!(%error, "espeak-ng failed; trying the next synthesiser")
                }
            }
        }
        if let Some(remote) = &self.openai {
            match remote.synthesize(&text, &tmp).await {
                Ok(()) => return finish(&tmp, out, TtsBackend::Remote).await,
                Err(error) => {
                    tracing::warn!(%error, "OpenAI speech failed; falling back to a tone")
                }
            }
        }
        tracing::info!(file = %out.display(), "no speech synthesiser succeeded: writing a tone");
        let bytes = tone_wav();
        tokio::fs::write(&tmp, bytes).await?;
        finish(&tmp, out, TtsBackend::Tone).await
    }
}

async fn finish(tmp: &Path, out: &Path, backend: TtsBackend) -> Result<TtsBackend, TtsError> {
    tokio::fs::rename(tmp, out).await?;
    Ok(backend)
}

fn temp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".tmp-{}-{name}", uuid::Uuid::new_v4().simple()))
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

async fn remove_quietly(path: &Path) {
    if let Err(error) = tokio::fs::remove_file(path).await
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(%error, file = %path.display(), "cannot remove temporary audio file");
    }
}

async fn espeak_ng(
    program: &Path,
    text: &str,
    language: Language,
    tmp: &Path,
) -> Result<(), TtsError> {
    let fail = |reason: String| TtsError::Backend {
        backend: "espeak-ng",
        reason,
    };
    // The text goes through stdin, never argv: it may start with '-' and argv is visible in `ps`.
    let mut child = tokio::process::Command::new(program)
        .arg("-v")
        .arg(language.code())
        .arg("-w")
        .arg(tmp)
        .arg("--stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| fail(format!("cannot start: {error}")))?;
    let mut stdin = child.stdin.take().ok_or_else(|| fail("no stdin".into()))?;
    let input = text.to_owned();
    let run = async move {
        stdin.write_all(input.as_bytes()).await?;
        stdin.write_all(b"\n").await?;
        drop(stdin);
        child.wait_with_output().await
    };
    let output = match tokio::time::timeout(SYNTHESIS_TIMEOUT, run).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => {
            remove_quietly(tmp).await;
            return Err(fail(error.to_string()));
        }
        Err(_) => {
            remove_quietly(tmp).await;
            return Err(fail(format!("timed out after {SYNTHESIS_TIMEOUT:?}")));
        }
    };
    if !output.status.success() {
        remove_quietly(tmp).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(fail(format!(
            "exit status {}: {}",
            output.status,
            stderr.trim()
        )));
    }
    let head = tokio::fs::read(tmp)
        .await
        .map_err(|error| fail(format!("no output file: {error}")))?;
    if !looks_like_wav(&head) {
        remove_quietly(tmp).await;
        return Err(fail("output is not a WAV file".into()));
    }
    Ok(())
}

impl RemoteSpeech {
    async fn synthesize(&self, text: &str, tmp: &Path) -> Result<(), TtsError> {
        let fail = |reason: String| TtsError::Backend {
            backend: "speech endpoint",
            reason,
        };
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
            .map_err(|error| fail(error.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}")));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|error| fail(error.without_url().to_string()))?;
        if !looks_like_wav(&bytes) {
            return Err(fail("response is not a WAV file".into()));
        }
        tokio::fs::write(tmp, &bytes).await?;
        Ok(())
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
    async fn espeak_or_tone_writes_a_wav() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.wav");
        let tts = Tts::local_only(find_on_path("espeak-ng"));
        let backend = tts
            .synthesize("Bonjour, voici votre formulaire.", Language::Fr, &out)
            .await
            .unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert!(looks_like_wav(&bytes));
        assert_eq!(backend == TtsBackend::Espeak, tts.has_speech());
        // Nothing temporary is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[tokio::test]
    async fn failing_espeak_falls_back_to_the_tone() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("b.wav");
        let tts = Tts::local_only(Some(PathBuf::from("/bin/false")));
        assert_eq!(
            tts.synthesize("x", Language::En, &out).await.unwrap(),
            TtsBackend::Tone
        );
        assert!(looks_like_wav(&std::fs::read(&out).unwrap()));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
