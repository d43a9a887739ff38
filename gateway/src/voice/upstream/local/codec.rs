//! Wire audio <-> f32 samples for the three Realtime formats, through dsp.

use voxgate_dsp::codec::g711;
use voxgate_dsp::pcm;

use crate::voice::protocol::openai::AudioFormat;

/// PCM16 audio with an odd number of bytes cannot be split into samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("PCM16 audio must have an even number of bytes, got {0}")]
pub struct OddPcmLength(pub usize);

/// Appends the samples of `bytes` (wire audio in `format`) to `out`, at the format's rate.
///
/// # Errors
/// [`OddPcmLength`] for PCM16 with an odd byte count; nothing is appended then.
pub fn decode_wire(
    format: AudioFormat,
    bytes: &[u8],
    out: &mut Vec<f32>,
) -> Result<(), OddPcmLength> {
    let start = out.len();
    match format {
        AudioFormat::Pcm { .. } => {
            if !bytes.len().is_multiple_of(2) {
                return Err(OddPcmLength(bytes.len()));
            }
            out.resize(start + bytes.len() / 2, 0.0);
            // The output slice was sized above, so neither error case can occur.
            let _ = pcm::pcm16le_to_f32(bytes, &mut out[start..]);
        }
        AudioFormat::Pcmu => {
            out.resize(start + bytes.len(), 0.0);
            let _ = g711::ulaw_to_f32_into(bytes, &mut out[start..]);
        }
        AudioFormat::Pcma => {
            out.resize(start + bytes.len(), 0.0);
            let _ = g711::alaw_to_f32_into(bytes, &mut out[start..]);
        }
    }
    Ok(())
}

/// Appends the wire encoding of `samples` (at the format's rate) in `format` to `out`.
pub fn encode_wire(format: AudioFormat, samples: &[f32], out: &mut Vec<u8>) {
    let start = out.len();
    match format {
        AudioFormat::Pcm { .. } => {
            out.resize(start + samples.len() * 2, 0);
            // Sized above: cannot fail.
            let _ = pcm::f32_to_pcm16le(samples, &mut out[start..]);
        }
        AudioFormat::Pcmu => {
            out.resize(start + samples.len(), 0);
            let _ = g711::f32_to_ulaw_into(samples, &mut out[start..]);
        }
        AudioFormat::Pcma => {
            out.resize(start + samples.len(), 0);
            let _ = g711::f32_to_alaw_into(samples, &mut out[start..]);
        }
    }
}

/// Resamples a whole clip from `from` to `to` Hz, trimming the resampler's delay so that the
/// output is time-aligned and `round(len * to / from)` samples long.
///
/// # Errors
/// The resampler's error for a rate it cannot handle.
pub fn resample_clip(
    samples: &[f32],
    from: u32,
    to: u32,
) -> Result<Vec<f32>, voxgate_dsp::resample::ResampleError> {
    if from == to {
        return Ok(samples.to_vec());
    }
    let mut resampler = voxgate_dsp::resample::Resampler::new_arbitrary(from, to)?;
    let delay = resampler.delay();
    let mut out =
        Vec::with_capacity(resampler.max_output_len(samples.len()) + resampler.max_flush_len());
    resampler.process_into(samples, &mut out);
    resampler.flush_into(&mut out);
    let wanted = (samples.len() as u64 * u64::from(to)).div_ceil(u64::from(from)) as usize;
    let end = (delay + wanted).min(out.len());
    Ok(out.get(delay.min(end)..end).unwrap_or_default().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm_round_trips_and_rejects_odd_lengths() {
        let bytes: Vec<u8> = [0i16, 1000, -1000, 32767, -32768]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        let mut samples = vec![9.0];
        decode_wire(AudioFormat::PCM24K, &bytes, &mut samples).unwrap();
        assert_eq!(samples.len(), 6);
        let mut back = Vec::new();
        encode_wire(AudioFormat::PCM24K, &samples[1..], &mut back);
        assert_eq!(back, bytes);
        assert_eq!(
            decode_wire(AudioFormat::PCM24K, &[1, 2, 3], &mut samples),
            Err(OddPcmLength(3))
        );
        assert_eq!(samples.len(), 6);
    }

    #[test]
    fn g711_is_one_byte_per_sample() {
        let samples = [0.0f32, 0.25, -0.25, 0.5];
        for format in [AudioFormat::Pcmu, AudioFormat::Pcma] {
            let mut wire = Vec::new();
            encode_wire(format, &samples, &mut wire);
            assert_eq!(wire.len(), 4);
            let mut back = Vec::new();
            decode_wire(format, &wire, &mut back).unwrap();
            for (a, b) in samples.iter().zip(&back) {
                assert!((a - b).abs() < 0.02, "{format:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn resample_clip_keeps_duration() {
        let tone: Vec<f32> = (0..22_050).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let out = resample_clip(&tone, 22_050, 24_000).unwrap();
        assert_eq!(out.len(), 24_000);
        let down = resample_clip(&out, 24_000, 8_000).unwrap();
        assert_eq!(down.len(), 8_000);
    }
}
