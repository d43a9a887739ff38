//! ITU-T G.711 companding: mu-law (North America, Japan; what Twilio media streams carry) and
//! A-law (elsewhere), 8 bits per sample at 8 kHz.
//!
//! The encoders follow the classic Sun Microsystems reference (`g711.c`) on full 16-bit input:
//! the magnitude is truncated into its segment and interval, and the decoders reconstruct the
//! middle of each quantisation interval, so the error is at most half an interval except where
//! mu-law clips above its largest level (32124). Decoding goes through 256-entry tables
//! computed at compile time from the same definitions.
//!
//! Mu-law has two codes for zero (0x7F, "-0", and 0xFF, "+0"); both decode to 0 and the encoder
//! produces 0xFF for 0. A-law has no zero code: its smallest magnitudes are ±8.
//!
//! All `*_into` functions write into caller buffers, never allocate and are realtime-safe.

use crate::pcm::{sample_f32_to_i16, sample_i16_to_f32};

/// Why a G.711 slice conversion did not run. Nothing is written when one is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum G711Error {
    /// The output buffer cannot hold one element per input sample.
    #[error("output buffer too short: {needed} samples needed, {available} available")]
    OutputTooShort {
        /// Samples in the input.
        needed: usize,
        /// Length of the output buffer given.
        available: usize,
    },
}

/// Sign bit of a code word.
const SIGN_BIT: u8 = 0x80;
/// Quantisation (mantissa) bits of a code word.
const QUANT_MASK: u8 = 0x0F;
/// Segment (exponent) bits of a code word.
const SEG_MASK: u8 = 0x70;
/// Position of the segment bits.
const SEG_SHIFT: u32 = 4;
/// Bias added to mu-law magnitudes so that every segment starts at a power of two.
const ULAW_BIAS: i32 = 0x84;
/// Upper end of each segment's magnitude range (16-bit domain).
const SEG_END: [i32; 8] = [0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF];

/// Index of the first segment whose range holds `magnitude`, or 8 if it is beyond all of them.
#[inline]
const fn segment(magnitude: i32) -> u32 {
    let mut seg = 0;
    while seg < SEG_END.len() {
        if magnitude <= SEG_END[seg] {
            return seg as u32;
        }
        seg += 1;
    }
    8
}

/// Encodes one linear sample as mu-law.
#[inline]
pub const fn encode_ulaw(sample: i16) -> u8 {
    let sample = sample as i32;
    // The code stores the inverted sign-magnitude, so negative values use mask 0x7F (sign bit 0).
    let (magnitude, mask) = if sample < 0 {
        (ULAW_BIAS - sample, 0x7F)
    } else {
        (sample + ULAW_BIAS, 0xFF)
    };
    let seg = segment(magnitude);
    if seg >= 8 {
        // Beyond the last segment: the largest magnitude of this sign.
        return 0x7F ^ mask;
    }
    let code = ((seg << SEG_SHIFT) as u8) | ((magnitude >> (seg + 3)) as u8 & QUANT_MASK);
    code ^ mask
}

/// Decodes one mu-law code to a linear sample (computed; [`decode_ulaw`] uses the table).
const fn expand_ulaw(code: u8) -> i16 {
    let code = !code;
    let mantissa = ((code & QUANT_MASK) as i32) << 3;
    let magnitude = (mantissa + ULAW_BIAS) << ((code & SEG_MASK) >> SEG_SHIFT);
    (if code & SIGN_BIT != 0 {
        ULAW_BIAS - magnitude
    } else {
        magnitude - ULAW_BIAS
    }) as i16
}

/// Encodes one linear sample as A-law.
#[inline]
pub const fn encode_alaw(sample: i16) -> u8 {
    let sample = sample as i32;
    // A-law transmits with even bits inverted (XOR 0x55); the sign bit set means positive.
    // Negative values use the one's-complement magnitude (-x - 1), which mirrors the positive
    // intervals exactly (-1..=-16 share the smallest negative code as 0..=15 share the smallest
    // positive one). This is the later Sun/ITU G.191 formulation; the early 16-bit Sun code's
    // `-x - 8` sends -1..=-7 to negative magnitudes and so to a wrong segment.
    let (magnitude, mask) = if sample >= 0 {
        (sample, 0xD5u8)
    } else {
        (-sample - 1, 0x55u8)
    };
    let seg = segment(magnitude);
    if seg >= 8 {
        return 0x7F ^ mask;
    }
    let shift = if seg < 2 { 4 } else { seg + 3 };
    let code = ((seg << SEG_SHIFT) as u8) | ((magnitude >> shift) as u8 & QUANT_MASK);
    code ^ mask
}

/// Decodes one A-law code to a linear sample (computed; [`decode_alaw`] uses the table).
const fn expand_alaw(code: u8) -> i16 {
    let code = code ^ 0x55;
    let mut magnitude = ((code & QUANT_MASK) as i32) << 4;
    let seg = ((code & SEG_MASK) >> SEG_SHIFT) as u32;
    magnitude += match seg {
        0 => 8,
        _ => 0x108,
    };
    if seg > 1 {
        magnitude <<= seg - 1;
    }
    (if code & SIGN_BIT != 0 {
        magnitude
    } else {
        -magnitude
    }) as i16
}

/// Builds the 256-entry decoding table of mu-law (`alaw == false`) or A-law.
const fn table(alaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        // Const fns cannot call through function pointers, hence the flag.
        table[code] = if alaw {
            expand_alaw(code as u8)
        } else {
            expand_ulaw(code as u8)
        };
        code += 1;
    }
    table
}

/// Linear value of every mu-law code.
static ULAW_TABLE: [i16; 256] = table(false);
/// Linear value of every A-law code.
static ALAW_TABLE: [i16; 256] = table(true);

/// Decodes one mu-law code to a linear sample.
#[inline]
pub fn decode_ulaw(code: u8) -> i16 {
    ULAW_TABLE[usize::from(code)]
}

/// Decodes one A-law code to a linear sample.
#[inline]
pub fn decode_alaw(code: u8) -> i16 {
    ALAW_TABLE[usize::from(code)]
}

/// Applies `convert` element-wise from `input` into the front of `out`, after checking its length.
#[inline]
fn map_into<A: Copy, B>(
    input: &[A],
    out: &mut [B],
    convert: impl Fn(A) -> B,
) -> Result<usize, G711Error> {
    let available = out.len();
    let Some(out) = out.get_mut(..input.len()) else {
        return Err(G711Error::OutputTooShort {
            needed: input.len(),
            available,
        });
    };
    for (&value, slot) in input.iter().zip(out.iter_mut()) {
        *slot = convert(value);
    }
    Ok(input.len())
}

/// Encodes linear samples as mu-law codes. Returns the number written.
///
/// # Errors
/// [`G711Error::OutputTooShort`] if `out` is shorter than `input`.
pub fn encode_ulaw_into(input: &[i16], out: &mut [u8]) -> Result<usize, G711Error> {
    map_into(input, out, encode_ulaw)
}

/// Decodes mu-law codes to linear samples. Returns the number written.
///
/// # Errors
/// [`G711Error::OutputTooShort`] if `out` is shorter than `input`.
pub fn decode_ulaw_into(input: &[u8], out: &mut [i16]) -> Result<usize, G711Error> {
    map_into(input, out, decode_ulaw)
}

/// Encodes linear samples as A-law codes. Returns the number written.
///
/// # Errors
/// [`G711Error::OutputTooShort`] if `out` is shorter than `input`.
pub fn encode_alaw_into(input: &[i16], out: &mut [u8]) -> Result<usize, G711Error> {
    map_into(input, out, encode_alaw)
}

/// Decodes A-law codes to linear samples. Returns the number written.
///
/// # Errors
/// [`G711Error::OutputTooShort`] if `out` is shorter than `input`.
pub fn decode_alaw_into(input: &[u8], out: &mut [i16]) -> Result<usize, G711Error> {
    map_into(input, out, decode_alaw)
}

/// Decodes mu-law bytes to f32 samples (scale 1/32768). Returns the number written.
///
/// # Errors
/// [`G711Error::OutputTooShort`] if `out` is shorter than `input`.
pub fn ulaw_to_f32_into(input: &[u8], out: &mut [f32]) -> Result<usize, G711Error> {
    map_into(input, out, |code| sample_i16_to_f32(decode_ulaw(code)))
}

/// Encodes f32 samples as mu-law bytes (rounded and clipped to i16 first, as
/// [`sample_f32_to_i16`]). Returns the number written.
///
/// # Errors
/// [`G711Error::OutputTooShort`] if `out` is shorter than `input`.
pub fn f32_to_ulaw_into(input: &[f32], out: &mut [u8]) -> Result<usize, G711Error> {
    map_into(input, out, |sample| encode_ulaw(sample_f32_to_i16(sample)))
}

/// Decodes A-law bytes to f32 samples (scale 1/32768). Returns the number written.
///
/// # Errors
/// [`G711Error::OutputTooShort`] if `out` is shorter than `input`.
pub fn alaw_to_f32_into(input: &[u8], out: &mut [f32]) -> Result<usize, G711Error> {
    map_into(input, out, |code| sample_i16_to_f32(decode_alaw(code)))
}

/// Encodes f32 samples as A-law bytes (rounded and clipped to i16 first, as
/// [`sample_f32_to_i16`]). Returns the number written.
///
/// # Errors
/// [`G711Error::OutputTooShort`] if `out` is shorter than `input`.
pub fn f32_to_alaw_into(input: &[f32], out: &mut [u8]) -> Result<usize, G711Error> {
    map_into(input, out, |sample| encode_alaw(sample_f32_to_i16(sample)))
}
