//! AVX2 kernels: 32 samples per unrolled iteration.
//!
//! Bit-exact with [`super::scalar`] for the same reasons as the SSE2 kernels: exact i16 -> f32
//! conversion, power-of-two scaling, and round-half-to-even `vcvtps2dq` under the default MXCSR.

use std::arch::x86_64::{
    __m128i, __m256, __m256i, _CMP_ORD_Q, _mm_loadu_si128, _mm256_and_ps, _mm256_cmp_ps,
    _mm256_cvtepi16_epi32, _mm256_cvtepi32_ps, _mm256_cvtps_epi32, _mm256_loadu_ps, _mm256_min_ps,
    _mm256_mul_ps, _mm256_packs_epi32, _mm256_permute4x64_epi64, _mm256_set1_ps, _mm256_storeu_ps,
    _mm256_storeu_si256,
};

use super::super::{F32_TO_I16_SCALE, I16_TO_F32_SCALE};
use super::scalar;

/// Samples handled per unrolled iteration.
const BLOCK: usize = 32;

/// Converts PCM16 little-endian bytes to f32 samples scaled by 1/32768.
///
/// Converts `min(input.len() / 2, out.len())` samples; a trailing odd byte is ignored.
///
/// # Safety
/// The CPU must support AVX2 (`is_x86_feature_detected!("avx2")`).
#[target_feature(enable = "avx2")]
pub unsafe fn pcm16le_to_f32(input: &[u8], out: &mut [f32]) {
    let count = (input.len() / 2).min(out.len());
    // A few scalar samples first, so that every vector store below lands on a 32-byte boundary:
    // a store straddling two cache lines costs about twice as much, and allocators commonly hand
    // out buffers aligned to 16 bytes only.
    let head = out.as_ptr().align_offset(32).min(count);
    scalar::pcm16le_to_f32(&input[..2 * head], &mut out[..head]);
    let (input, out) = (&input[2 * head..2 * count], &mut out[head..count]);
    let count = out.len();
    let blocks = count / BLOCK;
    let src = input.as_ptr();
    let dst = out.as_mut_ptr();
    let scale = _mm256_set1_ps(I16_TO_F32_SCALE);
    for block in 0..blocks {
        let base = block * BLOCK;
        for i in 0..4 {
            let sample = base + 8 * i;
            // SAFETY: `sample + 8 <= base + BLOCK <= count <= input.len() / 2`, so the 16 bytes
            // read are inside `input`; `loadu` has no alignment requirement.
            let raw = unsafe { _mm_loadu_si128(src.add(2 * sample).cast::<__m128i>()) };
            let floats = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(raw)), scale);
            // SAFETY: `sample + 8 <= count <= out.len()`.
            unsafe { _mm256_storeu_ps(dst.add(sample), floats) };
        }
    }
    let done = blocks * BLOCK;
    scalar::pcm16le_to_f32(&input[2 * done..2 * count], &mut out[done..count]);
}

/// Scales eight floats by 32768, maps NaN to 0, clamps from above to 32767 and converts them to
/// i32 with round-half-to-even (values below the i16 range saturate in the following pack).
#[inline]
#[target_feature(enable = "avx2")]
fn quantise(values: __m256) -> __m256i {
    let scaled = _mm256_mul_ps(values, _mm256_set1_ps(F32_TO_I16_SCALE));
    // Ordered-compare with itself is all-ones except for NaN lanes; masking turns NaN into +0.0
    // before min/max, which would otherwise pass a NaN operand through.
    let not_nan = _mm256_and_ps(scaled, _mm256_cmp_ps::<_CMP_ORD_Q>(scaled, scaled));
    // Only the upper clamp is needed: below -2^31 `vcvtps2dq` yields i32::MIN, which the
    // saturating pack turns into -32768, the right answer.
    _mm256_cvtps_epi32(_mm256_min_ps(not_nan, _mm256_set1_ps(32767.0)))
}

/// Converts f32 samples to PCM16 little-endian bytes (see [`scalar::f32_to_pcm16le`] for the
/// exact rule).
///
/// Converts `min(input.len(), out.len() / 2)` samples.
///
/// # Safety
/// The CPU must support AVX2 (`is_x86_feature_detected!("avx2")`).
#[target_feature(enable = "avx2")]
pub unsafe fn f32_to_pcm16le(input: &[f32], out: &mut [u8]) {
    let count = input.len().min(out.len() / 2);
    // Align the vector stores to 32 bytes as in the decoder; from an odd address no whole number
    // of 2-byte samples gets there, so then the stores stay unaligned.
    let offset = out.as_ptr().align_offset(32);
    let head = if offset.is_multiple_of(2) {
        (offset / 2).min(count)
    } else {
        0
    };
    scalar::f32_to_pcm16le(&input[..head], &mut out[..2 * head]);
    let (input, out) = (&input[head..count], &mut out[2 * head..2 * count]);
    let count = input.len();
    let blocks = count / BLOCK;
    let src = input.as_ptr();
    let dst = out.as_mut_ptr();
    for block in 0..blocks {
        let base = block * BLOCK;
        for half in 0..2 {
            let sample = base + 16 * half;
            // SAFETY: `sample + 16 <= base + BLOCK <= count <= input.len()`.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_ps(src.add(sample)),
                    _mm256_loadu_ps(src.add(sample + 8)),
                )
            };
            // `packs` works within 128-bit lanes, giving [a0..3, b0..3, a4..7, b4..7]; the
            // 64-bit permute (0, 2, 1, 3) restores sample order.
            let packed = _mm256_packs_epi32(quantise(a), quantise(b));
            let ordered = _mm256_permute4x64_epi64::<0b11_01_10_00>(packed);
            // SAFETY: `2 * (sample + 16) <= 2 * count <= out.len()`: the 32 bytes written are
            // inside `out`; x86 is little-endian, so the lanes are already in PCM16LE order.
            unsafe { _mm256_storeu_si256(dst.add(2 * sample).cast::<__m256i>(), ordered) };
        }
    }
    let done = blocks * BLOCK;
    scalar::f32_to_pcm16le(&input[done..count], &mut out[2 * done..2 * count]);
}
