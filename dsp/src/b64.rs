//! Base64 for audio payloads: the standard alphabet with padding, as OpenAI Realtime's
//! `input_audio_buffer.append` and `response.output_audio.delta` carry PCM16.
//!
//! Backed by `base64-simd`, which picks AVX2/SSSE3/NEON at run time. Decoding is strict: no
//! whitespace, no missing padding, no URL-safe characters; anything else is [`B64Error::Invalid`].
//!
//! [`encode_into`], [`decode_into`] and [`decode_to_slice`] reuse caller buffers and do not
//! allocate once those have capacity; [`encode`] and [`decode`] return fresh buffers.

use base64_simd::{Out, STANDARD};

/// Why base64 text could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum B64Error {
    /// The text is not padded standard-alphabet base64.
    #[error("invalid base64: expected padded standard-alphabet base64")]
    Invalid,
    /// The output slice cannot hold the decoded bytes.
    #[error("output buffer too short: {needed} bytes needed, {available} available")]
    OutputTooShort {
        /// Decoded length in bytes.
        needed: usize,
        /// Length of the output slice given.
        available: usize,
    },
}

impl From<base64_simd::Error> for B64Error {
    fn from(_: base64_simd::Error) -> Self {
        B64Error::Invalid
    }
}

/// Length of the base64 text for `bytes` input bytes.
pub const fn encoded_len(bytes: usize) -> usize {
    STANDARD.encoded_length(bytes)
}

/// Encodes `data` as a new string.
pub fn encode(data: &[u8]) -> String {
    STANDARD.encode_to_string(data)
}

/// Replaces the contents of `out` with the base64 of `data`, reusing its capacity.
pub fn encode_into(data: &[u8], out: &mut String) {
    out.clear();
    STANDARD.encode_append(data, out);
}

/// Decodes `text` into a new vector.
///
/// # Errors
/// [`B64Error::Invalid`] if `text` is not padded standard base64.
pub fn decode(text: &str) -> Result<Vec<u8>, B64Error> {
    Ok(STANDARD.decode_to_vec(text)?)
}

/// Replaces the contents of `out` with the bytes `text` decodes to, reusing its capacity. On error
/// `out` is left empty.
///
/// # Errors
/// [`B64Error::Invalid`] if `text` is not padded standard base64.
pub fn decode_into(text: &str, out: &mut Vec<u8>) -> Result<(), B64Error> {
    out.clear();
    STANDARD.decode_append(text, out)?;
    Ok(())
}

/// Decodes `text` into the front of `out` and returns the number of bytes written. Never
/// allocates.
///
/// # Errors
/// [`B64Error::Invalid`] if `text` is not padded standard base64, [`B64Error::OutputTooShort`] if
/// `out` cannot hold the result (nothing is written then).
pub fn decode_to_slice(text: &str, out: &mut [u8]) -> Result<usize, B64Error> {
    let needed = STANDARD.decoded_length(text.as_bytes())?;
    let available = out.len();
    let Some(target) = out.get_mut(..needed) else {
        return Err(B64Error::OutputTooShort { needed, available });
    };
    Ok(STANDARD
        .decode(text.as_bytes(), Out::from_slice(target))?
        .len())
}
