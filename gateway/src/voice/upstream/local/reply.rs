//! The local engine's "model": a short reply that says what it heard, and a generated tone that
//! stands in for speech when espeak-ng is not installed. Pure functions.

/// What the user's last turn was, as the engine saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// Committed audio of this duration.
    Audio {
        /// Duration in milliseconds.
        ms: u64,
    },
    /// A text item.
    Text(String),
    /// Nothing yet (a `response.create` with no user input).
    Nothing,
}

/// Text replies are capped so that a long pasted message does not produce minutes of speech.
const MAX_ECHOED_CHARS: usize = 200;

/// The reply text for `heard`.
pub fn reply_text(heard: &Heard) -> String {
    match heard {
        Heard::Audio { ms } => {
            let tenths = (ms + 50) / 100;
            format!(
                "I heard about {}.{} seconds of audio.",
                tenths / 10,
                tenths % 10
            )
        }
        Heard::Text(text) => {
            let text = text.trim();
            if text.is_empty() {
                return "You sent an empty message.".to_owned();
            }
            let mut clipped: String = text.chars().take(MAX_ECHOED_CHARS).collect();
            if clipped.len() < text.len() {
                clipped.push_str("...");
            }
            format!("You said: {clipped}")
        }
        Heard::Nothing => "Hello, this is the voxgate local engine.".to_owned(),
    }
}

/// A stand-in for speech when no synthesizer is available: one short two-note chime per word,
/// so that the audio's length still follows the text. Mono f32 at `sample_rate`.
pub fn tone_for(text: &str, sample_rate: u32) -> Vec<f32> {
    let words = text.split_whitespace().count().max(1);
    let note = (sample_rate as usize * 120) / 1000;
    let gap = (sample_rate as usize * 40) / 1000;
    let mut out = Vec::with_capacity(words * (2 * note + gap));
    for word in 0..words {
        // Alternate between two pitch pairs so consecutive words are distinguishable.
        let (a, b) = if word % 2 == 0 {
            (440.0, 660.0)
        } else {
            (550.0, 770.0)
        };
        for freq in [a, b] {
            for i in 0..note {
                // A raised-cosine envelope avoids clicks at the note edges.
                let env = 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / note as f32).cos();
                let phase = 2.0 * std::f32::consts::PI * freq * i as f32 / sample_rate as f32;
                out.push(0.2 * env * phase.sin());
            }
        }
        out.extend(std::iter::repeat_n(0.0, gap));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_say_what_was_heard() {
        let check = |heard: Heard, expected: &str| assert_eq!(reply_text(&heard), expected);
        check(
            Heard::Audio { ms: 1234 },
            "I heard about 1.2 seconds of audio.",
        );
        check(
            Heard::Audio { ms: 960 },
            "I heard about 1.0 seconds of audio.",
        );
        check(
            Heard::Audio { ms: 40 },
            "I heard about 0.0 seconds of audio.",
        );
        check(Heard::Text("  hi there ".into()), "You said: hi there");
        check(Heard::Text(" ".into()), "You sent an empty message.");
        check(Heard::Nothing, "Hello, this is the voxgate local engine.");
        let long = "a".repeat(500);
        assert_eq!(
            reply_text(&Heard::Text(long)).len(),
            "You said: ".len() + MAX_ECHOED_CHARS + 3
        );
    }

    #[test]
    fn tone_length_follows_words_and_stays_in_range() {
        let one = tone_for("hi", 24_000);
        let three = tone_for("one two three", 24_000);
        assert_eq!(one.len(), 2 * 2880 + 960);
        assert_eq!(three.len(), 3 * one.len());
        assert!(three.iter().all(|s| s.abs() <= 0.2));
        assert!(three.iter().any(|s| s.abs() > 0.1));
    }
}
