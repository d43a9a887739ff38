//! NEON kernels for little-endian aarch64: 16 samples per unrolled iteration.
//!
//! Bit-exact with [`super::scalar`]: `scvtf` of an i16 is exact, scaling by a power of two is
//! exact, and `fcvtns` rounds half to even, saturates and maps NaN to 0, which is exactly Rust's
//! `round_ties_even() as i16` once `sqxtn` narrows with saturation.

use std::arch::aarch64::{
    vcombine_s16, vcvtnq_s32_f32, vcvtq_f32_s32, vget_high_s16, vget_low_s16, vld1q_f32, vld1q_u8,
    vmovl_s16, vmulq_n_f32, vqmovn_s32, vreinterpretq_s16_u8, vreinterpretq_u8_s16, vst1q_f32,
    vst1q_u8,
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
/// The CPU must support NEON (`std::arch::is_aarch64_feature_detected!("neon")`).
#[target_feature(enable = "neon")]
pub unsafe fn pcm16le_to_f32(input: &[u8], out: &mut [f32]) {
    let count = (input.len() / 2).min(out.len());
    let blocks = count / BLOCK;
    let src = input.as_ptr();
    let dst = out.as_mut_ptr();
    for block in 0..blocks {
        let base = block * BLOCK;
        for half in 0..2 {
            let sample = base + 8 * half;
            // SAFETY: `sample + 8 <= count <= input.len() / 2`: the 16 bytes read are inside
            // `input`. Loading bytes (not i16) keeps the load free of any alignment requirement.
            let raw = vreinterpretq_s16_u8(unsafe { vld1q_u8(src.add(2 * sample)) });
            let low = vmulq_n_f32(
                vcvtq_f32_s32(vmovl_s16(vget_low_s16(raw))),
                I16_TO_F32_SCALE,
            );
            let high = vmulq_n_f32(
                vcvtq_f32_s32(vmovl_s16(vget_high_s16(raw))),
                I16_TO_F32_SCALE,
            );
            // SAFETY: `sample + 8 <= count <= out.len()`.
            unsafe {
                vst1q_f32(dst.add(sample), low);
                vst1q_f32(dst.add(sample + 4), high);
            }
        }
    }
    let done = blocks * BLOCK;
    scalar::pcm16le_to_f32(&input[2 * done..2 * count], &mut out[done..count]);
}

/// Converts f32 samples to PCM16 little-endian bytes (see [`scalar::f32_to_pcm16le`] for the
/// exact rule).
///
/// Converts `min(input.len(), out.len() / 2)` samples.
///
/// # Safety
/// The CPU must support NEON (`std::arch::is_aarch64_feature_detected!("neon")`).
#[target_feature(enable = "neon")]
pub unsafe fn f32_to_pcm16le(input: &[f32], out: &mut [u8]) {
    let count = input.len().min(out.len() / 2);
    let blocks = count / BLOCK;
    let src = input.as_ptr();
    let dst = out.as_mut_ptr();
    for block in 0..blocks {
        let base = block * BLOCK;
        for half in 0..2 {
            let sample = base + 8 * half;
            // SAFETY: `sample + 8 <= count <= input.len()`.
            let (a, b) = unsafe { (vld1q_f32(src.add(sample)), vld1q_f32(src.add(sample + 4))) };
            let a = vcvtnq_s32_f32(vmulq_n_f32(a, F32_TO_I16_SCALE));
            let b = vcvtnq_s32_f32(vmulq_n_f32(b, F32_TO_I16_SCALE));
            let packed = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
            // SAFETY: `2 * (sample + 8) <= 2 * count <= out.len()`: the 16 bytes written are
            // inside `out`; this module is compiled only for little-endian aarch64.
            unsafe { vst1q_u8(dst.add(2 * sample), vreinterpretq_u8_s16(packed)) };
        }
    }
    let done = blocks * BLOCK;
    scalar::f32_to_pcm16le(&input[done..count], &mut out[2 * done..2 * count]);
}
