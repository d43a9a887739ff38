//! SSE2 kernels (every x86_64 CPU has SSE2; they are still selected at run time like the others so
//! that the dispatch logic has one shape).
//!
//! Both kernels are bit-exact with [`super::scalar`]: int -> float conversion of an i16 is exact,
//! multiplying by a power of two is exact, and `cvtps2dq` rounds half to even under the default
//! MXCSR rounding mode, which is what Rust code runs with.

use std::arch::x86_64::{
    __m128, __m128i, _mm_and_ps, _mm_cmpord_ps, _mm_cvtepi32_ps, _mm_cvtps_epi32, _mm_loadu_ps,
    _mm_loadu_si128, _mm_min_ps, _mm_mul_ps, _mm_packs_epi32, _mm_set1_ps, _mm_srai_epi16,
    _mm_storeu_ps, _mm_storeu_si128, _mm_unpackhi_epi16, _mm_unpacklo_epi16,
};

use super::super::{F32_TO_I16_SCALE, I16_TO_F32_SCALE};
use super::scalar;

/// Samples handled per unrolled iteration.
const BLOCK: usize = 16;

/// Converts PCM16 little-endian bytes to f32 samples scaled by 1/32768.
///
/// Converts `min(input.len() / 2, out.len())` samples; a trailing odd byte is ignored.
///
/// # Safety
/// The CPU must support SSE2 (always true on x86_64, checked anyway by the dispatcher).
#[target_feature(enable = "sse2")]
pub unsafe fn pcm16le_to_f32(input: &[u8], out: &mut [f32]) {
    let count = (input.len() / 2).min(out.len());
    // A few scalar samples first, so that every vector store below lands on a 16-byte boundary:
    // a store straddling two cache lines costs about twice as much, and allocators commonly hand
    // out buffers aligned to 16 bytes only.
    let head = out.as_ptr().align_offset(16).min(count);
    scalar::pcm16le_to_f32(&input[..2 * head], &mut out[..head]);
    let (input, out) = (&input[2 * head..2 * count], &mut out[head..count]);
    let count = out.len();
    let blocks = count / BLOCK;
    let src = input.as_ptr();
    let dst = out.as_mut_ptr();
    let scale = _mm_set1_ps(I16_TO_F32_SCALE);
    for block in 0..blocks {
        let base = block * BLOCK;
        // SAFETY: `base + BLOCK <= count <= input.len() / 2`, so the 32 bytes read from
        // `src + 2 * base` are inside `input`; `loadu` has no alignment requirement.
        let (a, b) = unsafe {
            (
                _mm_loadu_si128(src.add(2 * base).cast::<__m128i>()),
                _mm_loadu_si128(src.add(2 * base + 16).cast::<__m128i>()),
            )
        };
        // Sign extension without SSE4.1's `pmovsxwd`: interleave each i16 with its sign mask
        // (all ones or all zeros), which builds the i32 exactly. (Interleaving with zero or with
        // itself and then shifting right by 16 leaves half of each input "don't care", and LLVM
        // then fills it from a stale register: a dependency across iterations that halves speed.)
        let widen = |lane: __m128i| _mm_mul_ps(_mm_cvtepi32_ps(lane), scale);
        let (sign_a, sign_b) = (_mm_srai_epi16::<15>(a), _mm_srai_epi16::<15>(b));
        let f0 = widen(_mm_unpacklo_epi16(a, sign_a));
        let f1 = widen(_mm_unpackhi_epi16(a, sign_a));
        let f2 = widen(_mm_unpacklo_epi16(b, sign_b));
        let f3 = widen(_mm_unpackhi_epi16(b, sign_b));
        // SAFETY: `base + BLOCK <= count <= out.len()`: the 16 floats written are inside `out`.
        unsafe {
            _mm_storeu_ps(dst.add(base), f0);
            _mm_storeu_ps(dst.add(base + 4), f1);
            _mm_storeu_ps(dst.add(base + 8), f2);
            _mm_storeu_ps(dst.add(base + 12), f3);
        }
    }
    let done = blocks * BLOCK;
    scalar::pcm16le_to_f32(&input[2 * done..2 * count], &mut out[done..count]);
}

/// Scales four floats by 32768, maps NaN to 0, clamps from above to 32767 and converts them to
/// i32 with round-half-to-even (values below the i16 range saturate in the following pack).
#[inline]
#[target_feature(enable = "sse2")]
fn quantise(values: __m128) -> __m128i {
    let scaled = _mm_mul_ps(values, _mm_set1_ps(F32_TO_I16_SCALE));
    // `cmpord(x, x)` is all-ones except where x is NaN; masking turns NaN into +0.0. This must
    // come before `min`, which returns its second operand when either one is NaN.
    let not_nan = _mm_and_ps(scaled, _mm_cmpord_ps(scaled, scaled));
    // Only the upper clamp is needed: below -2^31 `cvtps2dq` yields i32::MIN, which the
    // saturating pack turns into -32768, the right answer.
    _mm_cvtps_epi32(_mm_min_ps(not_nan, _mm_set1_ps(32767.0)))
}

/// Converts f32 samples to PCM16 little-endian bytes (see [`scalar::f32_to_pcm16le`] for the
/// exact rule).
///
/// Converts `min(input.len(), out.len() / 2)` samples.
///
/// # Safety
/// The CPU must support SSE2 (always true on x86_64, checked anyway by the dispatcher).
#[target_feature(enable = "sse2")]
pub unsafe fn f32_to_pcm16le(input: &[f32], out: &mut [u8]) {
    let count = input.len().min(out.len() / 2);
    // Align the vector stores to 16 bytes as in the decoder; from an odd address no whole number
    // of 2-byte samples gets there, so then the stores stay unaligned.
    let offset = out.as_ptr().align_offset(16);
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
        // SAFETY: `base + BLOCK <= count <= input.len()`: the 16 floats read are inside `input`.
        let [a, b, c, d] = unsafe {
            [
                _mm_loadu_ps(src.add(base)),
                _mm_loadu_ps(src.add(base + 4)),
                _mm_loadu_ps(src.add(base + 8)),
                _mm_loadu_ps(src.add(base + 12)),
            ]
        };
        // `packs` saturates, but the values are already clamped, so it only narrows.
        let low = _mm_packs_epi32(quantise(a), quantise(b));
        let high = _mm_packs_epi32(quantise(c), quantise(d));
        // SAFETY: `2 * (base + BLOCK) <= 2 * count <= out.len()`: the 32 bytes written are inside
        // `out`; x86 is little-endian, so the i16 lanes are already in PCM16LE byte order.
        unsafe {
            _mm_storeu_si128(dst.add(2 * base).cast::<__m128i>(), low);
            _mm_storeu_si128(dst.add(2 * base + 16).cast::<__m128i>(), high);
        }
    }
    let done = blocks * BLOCK;
    scalar::f32_to_pcm16le(&input[done..count], &mut out[2 * done..2 * count]);
}
