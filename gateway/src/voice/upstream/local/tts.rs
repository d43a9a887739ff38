//! Speech synthesis for voice mode: espeak-ng ([`crate::speech`]) when installed, a generated tone otherwise.
//!
//! This is the one piece of the engine that does IO (it spawns a process); the sans-IO core asks
//! for speech with `Output::Synthesize` and gets samples back through
//! `LocalEngine::synthesis_done`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::reply;
use crate::speech::{Espeak, Speech, SpeechError};

/// espeak-ng is given this long per utterance; replies are one short sentence.
const SYNTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Every reply is spoken in US English at 170 words per minute; the fallback tone is at the engine's 24 kHz.
const VOICE: &str = "en-us";
const WORDS_PER_MINUTE: u32 = 170;
const TONE_SAMPLE_RATE: u32 = 24_000;

/// The synthesizer shared by every session of one engine. Remembers whether espeak-ng is
/// missing so that the fallback is logged once, not per reply.
#[derive(Debug)]
pub struct Synthesizer {
    espeak: Espeak,
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
    pub fn new(program: impl Into<std::path::PathBuf>) -> Self {
        Synthesizer {
            espeak: Espeak::new(program)
                .with_words_per_minute(WORDS_PER_MINUTE)
                .with_timeout(SYNTH_TIMEOUT),
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
            match self.espeak.speak(text, VOICE).await {
                Ok(speech) => return speech,
                Err(error @ SpeechError::Start { .. }) => {
                    if !self.unavailable.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            %error,
                            "espeak-ng is not available; the local engine answers with a tone instead of speech"
                        );
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "speech synthesis failed; answering with a tone")
                }
            }
        }
        Speech {
            samples: reply::tone_for(text, TONE_SAMPLE_RATE),
            sample_rate: TONE_SAMPLE_RATE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_program_falls_back_to_the_tone() {
        let synth = Synthesizer::new("/nonexistent/espeak-ng-for-test");
        let speech = synth.speak("two words").await;
        assert!(synth.uses_fallback());
        assert_eq!(speech.sample_rate, 24_000);
        assert_eq!(speech.samples, reply::tone_for("two words", 24_000));
    }
}
