//! Portable kernels: the reference every SIMD kernel is tested against, and the fallback on
//! machines without one.

use super::super::{sample_f32_to_i16, sample_i16_to_f32};

/// Converts PCM16 little-endian bytes to f32 samples scaled by 1/32768.
///
/// Converts `min(input.len() / 2, out.len())` samples; a trailing odd byte is ignored (the public
/// wrappers reject it before calling).
pub fn pcm16le_to_f32(input: &[u8], out: &mut [f32]) {
    for (pair, slot) in input.chunks_exact(2).zip(out.iter_mut()) {
        *slot = sample_i16_to_f32(i16::from_le_bytes([pair[0], pair[1]]));
    }
}

/// Converts f32 samples to PCM16 little-endian bytes: scale by 32768, round half to even, clip to
/// `[-32768, 32767]`, NaN to 0.
///
/// Converts `min(input.len(), out.len() / 2)` samples.
pub fn f32_to_pcm16le(input: &[f32], out: &mut [u8]) {
    for (&sample, pair) in input.iter().zip(out.chunks_exact_mut(2)) {
        pair.copy_from_slice(&sample_f32_to_i16(sample).to_le_bytes());
    }
}
