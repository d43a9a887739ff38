//! Audio format conversion at the edge of a session, through dsp.
//!
//! The upstream always speaks PCM16 24 kHz; a client that chose another format in
//! `start_conversation` has its frames decoded, resampled and re-encoded here. Scratch buffers are
//! kept between frames, so the only per-frame allocation is the owned output frame the sockets need.

use bytes::Bytes;
use voxgate_dsp::codec::g711;
use voxgate_dsp::pcm;
use voxgate_dsp::resample::Resampler;

use crate::voice::protocol::okti::{AudioFormat, SEED_SAMPLE_RATE};

/// Scratch state shared by both directions.
struct Pipeline {
    resampler: Option<Resampler>,
    decoded: Vec<f32>,
    resampled: Vec<f32>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("resampling", &self.resampler.is_some())
            .finish()
    }
}

impl Pipeline {
    fn new(from: u32, to: u32) -> Self {
        let resampler = if from == to {
            None
        } else {
            match Resampler::new(from, to) {
                Ok(resampler) => Some(resampler),
                Err(error) => {
                    // The client parser admits only supported rates, so this is a bug if it happens.
                    tracing::error!(%error, from, to, "no resampler; audio passes at the wrong rate");
                    None
                }
            }
        };
        Pipeline {
            resampler,
            decoded: Vec::new(),
            resampled: Vec::new(),
        }
    }

    /// Resamples `self.decoded` and returns the samples at the target rate.
    fn resample(&mut self) -> &[f32] {
        match self.resampler.as_mut() {
            Some(resampler) => {
                self.resampled.clear();
                self.resampled
                    .reserve(resampler.max_output_len(self.decoded.len()));
                resampler.process_into(&self.decoded, &mut self.resampled);
                &self.resampled
            }
            None => &self.decoded,
        }
    }
}

/// Client input format -> PCM16 24 kHz.
#[derive(Debug)]
pub struct InputConverter {
    format: AudioFormat,
    pipeline: Pipeline,
}

impl InputConverter {
    /// A converter from `format`.
    pub fn new(format: AudioFormat) -> Self {
        InputConverter {
            format,
            pipeline: Pipeline::new(format.sample_rate(), SEED_SAMPLE_RATE),
        }
    }

    /// Converts one client frame (already checked for whole samples). `None` when the resampler
    /// has not produced output yet or the frame cannot be decoded.
    pub fn convert(&mut self, frame: &[u8]) -> Option<Bytes> {
        let samples = frame.len() / self.format.bytes_per_sample();
        self.pipeline.decoded.resize(samples, 0.0);
        let decoded = match self.format {
            AudioFormat::Pcm16 { .. } => {
                pcm::pcm16le_to_f32(frame, &mut self.pipeline.decoded).is_ok()
            }
            AudioFormat::Pcmu => g711::ulaw_to_f32_into(frame, &mut self.pipeline.decoded).is_ok(),
            AudioFormat::Pcma => g711::alaw_to_f32_into(frame, &mut self.pipeline.decoded).is_ok(),
        };
        if !decoded {
            return None;
        }
        let resampled = self.pipeline.resample();
        if resampled.is_empty() {
            return None;
        }
        let mut out = vec![0u8; resampled.len() * 2];
        pcm::f32_to_pcm16le(resampled, &mut out).ok()?;
        Some(Bytes::from(out))
    }
}

/// PCM16 24 kHz -> client output format.
#[derive(Debug)]
pub struct OutputConverter {
    format: AudioFormat,
    pipeline: Pipeline,
}

impl OutputConverter {
    /// A converter to `format`.
    pub fn new(format: AudioFormat) -> Self {
        OutputConverter {
            format,
            pipeline: Pipeline::new(SEED_SAMPLE_RATE, format.sample_rate()),
        }
    }

    /// Forgets the filter history, so a cancelled answer's last samples do not bleed into the next.
    pub fn reset(&mut self) {
        if let Some(resampler) = self.pipeline.resampler.as_mut() {
            resampler.reset();
        }
    }

    /// Converts one upstream chunk of PCM16 24 kHz. `None` when there is no output yet.
    pub fn convert(&mut self, pcm16: &[u8]) -> Option<Bytes> {
        self.pipeline.decoded.resize(pcm16.len() / 2, 0.0);
        pcm::pcm16le_to_f32(&pcm16[..pcm16.len() & !1], &mut self.pipeline.decoded).ok()?;
        let format = self.format;
        let resampled = self.pipeline.resample();
        if resampled.is_empty() {
            return None;
        }
        let mut out = vec![0u8; resampled.len() * format.bytes_per_sample()];
        let ok = match format {
            AudioFormat::Pcm16 { .. } => pcm::f32_to_pcm16le(resampled, &mut out).is_ok(),
            AudioFormat::Pcmu => g711::f32_to_ulaw_into(resampled, &mut out).is_ok(),
            AudioFormat::Pcma => g711::f32_to_alaw_into(resampled, &mut out).is_ok(),
        };
        ok.then(|| Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, ms: u32) -> Vec<u8> {
        let n = rate * ms / 1000;
        let samples: Vec<f32> = (0..n)
            .map(|i| 0.5 * (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin())
            .collect();
        pcm::encode_pcm16le(&samples)
    }

    #[test]
    fn converts_16k_input_to_24k_at_the_right_length() {
        let mut converter = InputConverter::new(AudioFormat::Pcm16 { rate: 16_000 });
        let mut total = 0;
        for _ in 0..50 {
            total += converter
                .convert(&tone(16_000, 20))
                .map_or(0, |b| b.len() / 2);
        }
        // One second of 16 kHz input becomes one second at 24 kHz (give or take the filter run-in).
        assert!((23_900..=24_100).contains(&total), "got {total} samples");
    }

    #[test]
    fn converts_24k_output_to_pcmu_8k() {
        let mut converter = OutputConverter::new(AudioFormat::Pcmu);
        let mut total = 0;
        for _ in 0..50 {
            total += converter.convert(&tone(24_000, 20)).map_or(0, |b| b.len());
        }
        assert!((7_950..=8_050).contains(&total), "got {total} bytes");
    }

    #[test]
    fn round_trips_alaw_input_loudness() {
        let mut to_alaw = OutputConverter::new(AudioFormat::Pcma);
        let mut from_alaw = InputConverter::new(AudioFormat::Pcma);
        let mut back = Vec::new();
        for _ in 0..25 {
            if let Some(alaw) = to_alaw.convert(&tone(24_000, 20))
                && let Some(pcm) = from_alaw.convert(&alaw)
            {
                back.extend_from_slice(&pcm);
            }
        }
        let samples = pcm::decode_pcm16le(&back).expect("even length");
        let tail = &samples[samples.len() / 2..];
        let rms = (tail.iter().map(|s| s * s).sum::<f32>() / tail.len() as f32).sqrt();
        // A 0.5-amplitude sine has an RMS of about 0.354.
        assert!((0.30..0.40).contains(&rms), "rms {rms}");
    }
}
