//! PCM sample conversion: PCM16 little-endian bytes <-> f32, i16 <-> f32, stereo -> mono.
//!
//! # Conventions
//! - i16 -> f32 scales by 1/32768, so `i16::MIN` maps to exactly -1.0 and `i16::MAX` to
//!   32767/32768.
//! - f32 -> i16 scales by 32768, rounds half to even, clips to `[-32768, 32767]` and maps NaN to
//!   0. A PCM16 round trip (`bytes -> f32 -> bytes`) is therefore exact.
//!
//! # Realtime use
//! The `*_into`-style functions ([`pcm16le_to_f32`], [`f32_to_pcm16le`], [`i16_to_f32`],
//! [`f32_to_i16`], [`stereo_to_mono`], [`interleaved_to_mono`]) write into caller-owned buffers and
//! never allocate; they are realtime-safe. [`decode_pcm16le`] and [`encode_pcm16le`] allocate
//! their result and are meant for tools and tests.
//!
//! # SIMD
//! The byte conversions run on the best [`Kernel`] the CPU offers (AVX2, then SSE2 on x86_64;
//! NEON on little-endian aarch64; scalar elsewhere), detected once and cached. Every kernel gives
//! bit-identical output; [`pcm16le_to_f32_with`] and [`f32_to_pcm16le_with`] pick one explicitly
//! for tests and benches.

use std::fmt;
use std::sync::OnceLock;

pub mod kernels;

/// Scale of one i16 step in f32: 1/32768, exactly representable.
pub(crate) const I16_TO_F32_SCALE: f32 = 1.0 / 32768.0;
/// Inverse of [`I16_TO_F32_SCALE`].
pub(crate) const F32_TO_I16_SCALE: f32 = 32768.0;

/// Why a PCM conversion did not run. No output is written when one of these is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PcmError {
    /// PCM16 input must hold whole 2-byte samples.
    #[error("PCM16 input has an odd byte count ({len}); samples are 2 bytes each")]
    OddByteCount {
        /// Length of the input in bytes.
        len: usize,
    },
    /// Interleaved input must hold whole frames.
    #[error(
        "interleaved input of {len} samples is not a whole number of {channels}-channel frames"
    )]
    PartialFrame {
        /// Length of the input in samples.
        len: usize,
        /// Channels per frame.
        channels: usize,
    },
    /// A channel count of zero was given.
    #[error("channel count must be at least 1")]
    ZeroChannels,
    /// The output buffer cannot hold the whole result.
    #[error("output buffer too short: {needed} elements needed, {available} available")]
    OutputTooShort {
        /// Elements (samples, or bytes for PCM16 output) the conversion would write.
        needed: usize,
        /// Length of the output buffer given.
        available: usize,
    },
    /// The kernel asked for is not supported by this CPU.
    #[error("the {kernel} kernel is not available on this CPU")]
    KernelUnavailable {
        /// The kernel asked for.
        kernel: Kernel,
    },
}

/// One implementation of the byte conversions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kernel {
    /// Portable Rust; the reference for the others.
    Scalar,
    /// x86_64 SSE2.
    Sse2,
    /// x86_64 AVX2.
    Avx2,
    /// aarch64 (little-endian) NEON.
    Neon,
}

impl Kernel {
    /// Every kernel, whether or not this CPU supports it.
    pub const ALL: [Kernel; 4] = [Kernel::Scalar, Kernel::Sse2, Kernel::Avx2, Kernel::Neon];

    /// Whether this build and CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Sse2 => std::arch::is_x86_feature_detected!("sse2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
            Kernel::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)] // Which arms remain depends on the target.
            _ => false,
        }
    }

    /// The kernels this CPU can run, scalar first.
    pub fn available() -> impl Iterator<Item = Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|kernel| kernel.is_available())
    }

    /// The fastest kernel this CPU can run, detected on first use and cached.
    pub fn detected() -> Kernel {
        static DETECTED: OnceLock<Kernel> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            [Kernel::Avx2, Kernel::Neon, Kernel::Sse2]
                .into_iter()
                .find(|kernel| kernel.is_available())
                .unwrap_or(Kernel::Scalar)
        })
    }

    /// Short lowercase name, as used in bench ids.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Sse2 => "sse2",
            Kernel::Avx2 => "avx2",
            Kernel::Neon => "neon",
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Converts one i16 sample to f32 (scale 1/32768).
#[inline]
pub fn sample_i16_to_f32(sample: i16) -> f32 {
    f32::from(sample) * I16_TO_F32_SCALE
}

/// Converts one f32 sample to i16: scale by 32768, round half to even, clip to
/// `[-32768, 32767]`, NaN to 0.
#[inline]
pub fn sample_f32_to_i16(sample: f32) -> i16 {
    /// 1.5 * 2^23: for |x| <= 2^22, `x + ROUNDER` lies in [2^23, 2^24), where f32 values are
    /// exactly the integers, so the addition rounds x half-to-even (the default rounding mode)
    /// and the integer sits in the low mantissa bits.
    const ROUNDER: f32 = 12_582_912.0;
    let scaled = sample * F32_TO_I16_SCALE;
    let clamped = if scaled.is_nan() {
        0.0
    } else {
        scaled.clamp(-32768.0, 32767.0)
    };
    // Equal to `round_ties_even() as i16`, but branch-free integer arithmetic that vectorises,
    // where `round_ties_even` is a libm call per sample without SSE4.1.
    let biased = (clamped + ROUNDER).to_bits() as i32 - ROUNDER.to_bits() as i32;
    biased as i16
}

/// Converts PCM16 little-endian bytes to f32 samples in `out`, on the detected [`Kernel`].
///
/// Returns the number of samples written (`input.len() / 2`). Realtime-safe.
///
/// # Errors
/// [`PcmError::OddByteCount`] if `input` has an odd length, [`PcmError::OutputTooShort`] if `out`
/// holds fewer than `input.len() / 2` samples.
pub fn pcm16le_to_f32(input: &[u8], out: &mut [f32]) -> Result<usize, PcmError> {
    pcm16le_to_f32_with(Kernel::detected(), input, out)
}

/// [`pcm16le_to_f32`] on the given kernel.
///
/// # Errors
/// As [`pcm16le_to_f32`], plus [`PcmError::KernelUnavailable`] if this CPU cannot run `kernel`.
pub fn pcm16le_to_f32_with(
    kernel: Kernel,
    input: &[u8],
    out: &mut [f32],
) -> Result<usize, PcmError> {
    if !input.len().is_multiple_of(2) {
        return Err(PcmError::OddByteCount { len: input.len() });
    }
    let count = input.len() / 2;
    let out = checked_prefix(out, count)?;
    match kernel {
        Kernel::Scalar => kernels::scalar::pcm16le_to_f32(input, out),
        #[cfg(target_arch = "x86_64")]
        Kernel::Sse2 if kernel.is_available() => {
            // SAFETY: SSE2 support was just checked.
            unsafe { kernels::sse2::pcm16le_to_f32(input, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 if kernel.is_available() => {
            // SAFETY: AVX2 support was just checked.
            unsafe { kernels::avx2::pcm16le_to_f32(input, out) }
        }
        #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
        Kernel::Neon if kernel.is_available() => {
            // SAFETY: NEON support was just checked.
            unsafe { kernels::neon::pcm16le_to_f32(input, out) }
        }
        _ => return Err(PcmError::KernelUnavailable { kernel }),
    }
    Ok(count)
}

/// Converts f32 samples to PCM16 little-endian bytes in `out`, on the detected [`Kernel`].
///
/// Returns the number of bytes written (`2 * input.len()`). Realtime-safe.
///
/// # Errors
/// [`PcmError::OutputTooShort`] if `out` holds fewer than `2 * input.len()` bytes.
pub fn f32_to_pcm16le(input: &[f32], out: &mut [u8]) -> Result<usize, PcmError> {
    f32_to_pcm16le_with(Kernel::detected(), input, out)
}

/// [`f32_to_pcm16le`] on the given kernel.
///
/// # Errors
/// As [`f32_to_pcm16le`], plus [`PcmError::KernelUnavailable`] if this CPU cannot run `kernel`.
pub fn f32_to_pcm16le_with(
    kernel: Kernel,
    input: &[f32],
    out: &mut [u8],
) -> Result<usize, PcmError> {
    let bytes = input.len().checked_mul(2).ok_or(PcmError::OutputTooShort {
        needed: usize::MAX,
        available: out.len(),
    })?;
    let out = checked_prefix(out, bytes)?;
    match kernel {
        Kernel::Scalar => kernels::scalar::f32_to_pcm16le(input, out),
        #[cfg(target_arch = "x86_64")]
        Kernel::Sse2 if kernel.is_available() => {
            // SAFETY: SSE2 support was just checked.
            unsafe { kernels::sse2::f32_to_pcm16le(input, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 if kernel.is_available() => {
            // SAFETY: AVX2 support was just checked.
            unsafe { kernels::avx2::f32_to_pcm16le(input, out) }
        }
        #[cfg(all(target_arch = "aarch64", target_endian = "little"))]
        Kernel::Neon if kernel.is_available() => {
            // SAFETY: NEON support was just checked.
            unsafe { kernels::neon::f32_to_pcm16le(input, out) }
        }
        _ => return Err(PcmError::KernelUnavailable { kernel }),
    }
    Ok(bytes)
}

/// Decodes PCM16 little-endian bytes into a new f32 vector. Allocates; see [`pcm16le_to_f32`]
/// for the realtime form.
///
/// # Errors
/// [`PcmError::OddByteCount`] if `input` has an odd length.
pub fn decode_pcm16le(input: &[u8]) -> Result<Vec<f32>, PcmError> {
    let mut out = vec![0.0; input.len() / 2];
    pcm16le_to_f32(input, &mut out)?;
    Ok(out)
}

/// Encodes f32 samples as PCM16 little-endian bytes in a new vector. Allocates; see
/// [`f32_to_pcm16le`] for the realtime form.
pub fn encode_pcm16le(input: &[f32]) -> Vec<u8> {
    let mut out = vec![0; input.len() * 2];
    // Cannot fail: `out` is exactly twice as long as `input`. Falling back to the scalar kernel
    // keeps this function total without a panic path even so.
    if f32_to_pcm16le(input, &mut out).is_err() {
        kernels::scalar::f32_to_pcm16le(input, &mut out);
    }
    out
}

/// Converts i16 samples to f32 (scale 1/32768). Returns the number of samples written.
/// Realtime-safe.
///
/// # Errors
/// [`PcmError::OutputTooShort`] if `out` is shorter than `input`.
pub fn i16_to_f32(input: &[i16], out: &mut [f32]) -> Result<usize, PcmError> {
    let out = checked_prefix(out, input.len())?;
    #[cfg(target_endian = "little")]
    {
        // On a little-endian target an i16 slice *is* PCM16LE, so the SIMD byte kernels apply.
        pcm16le_to_f32(i16_bytes(input), out)
    }
    #[cfg(not(target_endian = "little"))]
    {
        for (&sample, slot) in input.iter().zip(out.iter_mut()) {
            *slot = sample_i16_to_f32(sample);
        }
        Ok(input.len())
    }
}

/// Converts f32 samples to i16 (same rule as [`sample_f32_to_i16`]). Returns the number of samples
/// written. Realtime-safe.
///
/// # Errors
/// [`PcmError::OutputTooShort`] if `out` is shorter than `input`.
pub fn f32_to_i16(input: &[f32], out: &mut [i16]) -> Result<usize, PcmError> {
    let out = checked_prefix(out, input.len())?;
    #[cfg(target_endian = "little")]
    {
        f32_to_pcm16le(input, i16_bytes_mut(out))?;
    }
    #[cfg(not(target_endian = "little"))]
    for (&sample, slot) in input.iter().zip(out.iter_mut()) {
        *slot = sample_f32_to_i16(sample);
    }
    Ok(input.len())
}

/// Averages interleaved stereo (L, R, L, R, ...) into mono. Returns the number of mono samples
/// written (`input.len() / 2`). Realtime-safe.
///
/// # Errors
/// [`PcmError::PartialFrame`] if `input` has an odd length, [`PcmError::OutputTooShort`] if `out`
/// holds fewer than `input.len() / 2` samples.
pub fn stereo_to_mono(input: &[f32], out: &mut [f32]) -> Result<usize, PcmError> {
    if !input.len().is_multiple_of(2) {
        return Err(PcmError::PartialFrame {
            len: input.len(),
            channels: 2,
        });
    }
    let out = checked_prefix(out, input.len() / 2)?;
    // Plain loop on fixed-size chunks: the compiler vectorises it with the baseline SIMD set.
    for (frame, slot) in input.chunks_exact(2).zip(out.iter_mut()) {
        *slot = (frame[0] + frame[1]) * 0.5;
    }
    Ok(out.len())
}

/// Averages interleaved frames of `channels` samples into mono. Returns the number of mono samples
/// written (`input.len() / channels`). Realtime-safe.
///
/// # Errors
/// [`PcmError::ZeroChannels`], [`PcmError::PartialFrame`] if `input` is not a whole number of
/// frames, [`PcmError::OutputTooShort`] if `out` cannot hold one sample per frame.
pub fn interleaved_to_mono(
    input: &[f32],
    channels: usize,
    out: &mut [f32],
) -> Result<usize, PcmError> {
    match channels {
        0 => Err(PcmError::ZeroChannels),
        1 => {
            let out = checked_prefix(out, input.len())?;
            out.copy_from_slice(input);
            Ok(out.len())
        }
        2 => stereo_to_mono(input, out),
        _ => {
            if !input.len().is_multiple_of(channels) {
                return Err(PcmError::PartialFrame {
                    len: input.len(),
                    channels,
                });
            }
            let out = checked_prefix(out, input.len() / channels)?;
            // Usize -> f32 is exact for any realistic channel count (< 2^24).
            let inverse = 1.0 / channels as f32;
            for (frame, slot) in input.chunks_exact(channels).zip(out.iter_mut()) {
                *slot = frame.iter().sum::<f32>() * inverse;
            }
            Ok(out.len())
        }
    }
}

/// The first `needed` elements of `out`, or [`PcmError::OutputTooShort`].
fn checked_prefix<T>(out: &mut [T], needed: usize) -> Result<&mut [T], PcmError> {
    let available = out.len();
    out.get_mut(..needed)
        .ok_or(PcmError::OutputTooShort { needed, available })
}

/// Views i16 samples as their in-memory bytes (PCM16LE on a little-endian target).
#[cfg(target_endian = "little")]
fn i16_bytes(samples: &[i16]) -> &[u8] {
    // SAFETY: u8 has no alignment requirement and every byte of an i16 is initialised; the byte
    // length `2 * len` cannot overflow because the i16 slice already occupies that many bytes.
    unsafe {
        std::slice::from_raw_parts(
            samples.as_ptr().cast::<u8>(),
            std::mem::size_of_val(samples),
        )
    }
}

/// Views i16 samples as mutable bytes (PCM16LE on a little-endian target).
#[cfg(target_endian = "little")]
fn i16_bytes_mut(samples: &mut [i16]) -> &mut [u8] {
    let len = std::mem::size_of_val(samples);
    // SAFETY: as in `i16_bytes`; in addition every bit pattern written through the byte view is a
    // valid i16, and the exclusive borrow of `samples` is held for the view's lifetime.
    unsafe { std::slice::from_raw_parts_mut(samples.as_mut_ptr().cast::<u8>(), len) }
}
