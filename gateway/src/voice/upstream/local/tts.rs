//! Speech synthesis for voice mode: espeak-ng when installed, a generated tone otherwise.
//!
//! This is the one piece of the engine that does IO (it spawns a process); the sans-IO core asks
//! for speech with `Output::Synthesize` and gets samples back through
//! `LocalEngine::synthesis_done`.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::reply;

/// espeak-ng is given this long per utterance; replies are one short sentence.
const SYNTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Synthesized speech: mono samples and their rate.
#[derive(Debug, Clone)]
pub struct Speech {
    /// Mono samples in -1..1.
    pub samples: Vec<f32>,
    /// Their sample rate.
    pub sample_rate: u32,
}

/// Why espeak-ng could not be used.
#[derive(Debug, thiserror::Error)]
enum EspeakError {
    #[error("espeak-ng could not be started: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("espeak-ng failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("espeak-ng took longer than {SYNTH_TIMEOUT:?}")]
    Timeout,
    #[error("espeak-ng exited with {0}")]
    Status(std::process::ExitStatus),
    #[error("espeak-ng produced unreadable audio: {0}")]
    Wav(&'static str),
}

/// The synthesizer shared by every session of one engine. Remembers whether espeak-ng is
/// missing so that the fallback is logged once, not per reply.
#[derive(Debug)]
pub struct Synthesizer {
    program: String,
    /// Set once espeak-ng failed to start; from then on the tone is used without trying again.
    unavailable: AtomicBool,
}

impl Default for Synthesizer {
    fn default() -> Self {
        Self::new("espeak-ng")
    }
}

impl Synthesizer {
    /// A synthesizer running `program` (normally `espeak-ng`).
    pub fn new(program: impl Into<String>) -> Self {
        Synthesizer {
            program: program.into(),
            unavailable: AtomicBool::new(false),
        }
    }

    /// Whether the last attempt found the synthesizer missing (the tone is in use).
    pub fn uses_fallback(&self) -> bool {
        self.unavailable.load(Ordering::Relaxed)
    }

    /// Speaks `text` with espeak-ng; falls back to [`reply::tone_for`] at 24 kHz if espeak-ng is
    /// missing (logged once) or fails (logged each time, since that is unexpected).
    pub async fn speak(&self, text: &str) -> Speech {
        if !self.unavailable.load(Ordering::Relaxed) {
            match self.espeak(text).await {
                Ok(speech) => return speech,
                Err(EspeakError::Spawn(e)) => {
                    if !self.unavailable.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            program = %self.program,
                            error = %e,
                            "espeak-ng is not available; the local engine answers with a tone instead of speech"
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "speech synthesis failed; answering with a tone")
                }
            }
        }
        Speech {
            samples: reply::tone_for(text, 24_000),
            sample_rate: 24_000,
        }
    }

    async fn espeak(&self, text: &str) -> Result<Speech, EspeakError> {
        // The text goes through stdin so that nothing in it can be taken for an option.
        let mut child = tokio::process::Command::new(&self.program)
            .args(["--stdout", "-v", "en-us", "-s", "170"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(EspeakError::Spawn)?;
        let mut stdin = child.stdin.take().ok_or(EspeakError::Wav("no stdin"))?;
        let mut stdout = child.stdout.take().ok_or(EspeakError::Wav("no stdout"))?;
        let run = async {
            stdin.write_all(text.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
            drop(stdin);
            let mut wav = Vec::with_capacity(64 * 1024);
            stdout.read_to_end(&mut wav).await?;
            let status = child.wait().await?;
            Ok::<_, EspeakError>((wav, status))
        };
        let (wav, status) = tokio::time::timeout(SYNTH_TIMEOUT, run)
            .await
            .map_err(|_| EspeakError::Timeout)??;
        if !status.success() {
            return Err(EspeakError::Status(status));
        }
        let (samples, sample_rate) = parse_streamed_wav(&wav).map_err(EspeakError::Wav)?;
        Ok(Speech {
            samples,
            sample_rate,
        })
    }
}

/// Reads a mono PCM16 WAV as written to a pipe: espeak-ng cannot seek back to fix the sizes in
/// the header, so it writes placeholders (0x7ffff000). The data chunk is taken to run to the
/// end of the bytes, whatever its header says.
fn parse_streamed_wav(bytes: &[u8]) -> Result<(Vec<f32>, u32), &'static str> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE stream");
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let mut at = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = u32_at(at + 4) as usize;
        let body = at + 8;
        if id == b"fmt " {
            if body + 16 > bytes.len() {
                return Err("truncated fmt chunk");
            }
            format = Some((
                u16_at(body),
                u16_at(body + 2),
                u32_at(body + 4),
                u16_at(body + 14),
            ));
        } else if id == b"data" {
            let (tag, channels, rate, bits) = format.ok_or("data before fmt")?;
            if tag != 1 || bits != 16 || channels == 0 || rate == 0 {
                return Err("not PCM16");
            }
            let data = &bytes[body..body + size.min(bytes.len() - body)];
            let channels = usize::from(channels);
            let frame = 2 * channels;
            let samples = data
                .chunks_exact(frame)
                .map(|f| {
                    let sum: f32 = f
                        .chunks_exact(2)
                        .map(|s| {
                            voxgate_dsp::pcm::sample_i16_to_f32(i16::from_le_bytes([s[0], s[1]]))
                        })
                        .sum();
                    sum / channels as f32
                })
                .collect();
            return Ok((samples, rate));
        }
        // Chunks are padded to an even size.
        at = body.saturating_add(size).saturating_add(size & 1);
    }
    Err("no data chunk")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(rate: u32, channels: u16, data_size: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(b"RIFF");
        h.extend_from_slice(&0x7fff_f024u32.to_le_bytes());
        h.extend_from_slice(b"WAVEfmt ");
        h.extend_from_slice(&16u32.to_le_bytes());
        h.extend_from_slice(&1u16.to_le_bytes());
        h.extend_from_slice(&channels.to_le_bytes());
        h.extend_from_slice(&rate.to_le_bytes());
        h.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
        h.extend_from_slice(&(2 * channels).to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(b"data");
        h.extend_from_slice(&data_size.to_le_bytes());
        h
    }

    #[test]
    fn streamed_header_sizes_are_ignored() {
        let mut wav = header(22_050, 1, 0x7fff_f000);
        for s in [0i16, 16384, -16384] {
            wav.extend_from_slice(&s.to_le_bytes());
        }
        let (samples, rate) = parse_streamed_wav(&wav).unwrap();
        assert_eq!(rate, 22_050);
        assert_eq!(samples, vec![0.0, 0.5, -0.5]);
    }

    #[test]
    fn stereo_is_mixed_down_and_garbage_rejected() {
        let mut wav = header(16_000, 2, 8);
        for s in [16384i16, 0, -16384, -16384] {
            wav.extend_from_slice(&s.to_le_bytes());
        }
        assert_eq!(parse_streamed_wav(&wav).unwrap().0, vec![0.25, -0.5]);
        assert!(parse_streamed_wav(b"hello").is_err());
        assert!(parse_streamed_wav(&header(16_000, 1, 0)[..30]).is_err());
    }

    #[tokio::test]
    async fn missing_program_falls_back_to_the_tone() {
        let synth = Synthesizer::new("/nonexistent/espeak-ng-for-test");
        let speech = synth.speak("two words").await;
        assert!(synth.uses_fallback());
        assert_eq!(speech.sample_rate, 24_000);
        assert_eq!(speech.samples, reply::tone_for("two words", 24_000));
    }

    #[tokio::test]
    async fn espeak_speaks_when_installed() {
        let synth = Synthesizer::default();
        let speech = synth.speak("I heard about one second of audio.").await;
        if synth.uses_fallback() {
            // Not installed on this machine: the fallback path is what must work then.
            assert_eq!(speech.sample_rate, 24_000);
            return;
        }
        assert_eq!(speech.sample_rate, 22_050);
        let secs = speech.samples.len() as f32 / speech.sample_rate as f32;
        assert!((1.0..5.0).contains(&secs), "{secs} s of speech");
        let peak = speech.samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.05, "speech is audible (peak {peak})");
    }
}
