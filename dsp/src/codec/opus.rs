//! Opus for voice: 20 ms mono frames at 24 kHz or 48 kHz, through the system libopus.
//!
//! [`OpusEncoder`] is set up for speech (`Application::Voip`), with a configurable bitrate and
//! in-band forward error correction (FEC) on by default, tuned by the expected packet-loss
//! percentage. [`OpusDecoder`] decodes packets, conceals a missing frame
//! ([`OpusDecoder::conceal_into`], libopus packet-loss concealment) and recovers a lost frame from
//! the FEC data carried by the packet that follows it ([`OpusDecoder::decode_fec_into`]).
//!
//! # Lost packets
//! When a packet is missing at playout time, call [`OpusDecoder::decode_fec_into`] with the next
//! packet if it has already arrived (then decode that packet normally), else
//! [`OpusDecoder::conceal_into`]. Both advance the decoder by one frame, so they belong where
//! packets are decoded in playout order. A PCM jitter buffer whose `Concealer` is a closure can use
//! the decoder's concealment directly:
//!
//! ```text
//! |_last, _consecutive, out: &mut [f32]| if decoder.conceal_into(out).is_err() { out.fill(0.0) }
//! ```
//!
//! # Realtime safety
//! `encode_into`, `decode_into`, `conceal_into` and `decode_fec_into` write into caller-owned
//! buffers, use only scratch preallocated at construction, and never allocate or panic, whatever
//! bytes arrive: every failure is an [`OpusError`] value (which is `Copy` and owns no heap data).
//!
//! # Output range
//! Decoded samples are soft-clipped into [-1, 1] with libopus' `opus_pcm_soft_clip`, the same
//! treatment libopus gives its own 16-bit output. Normal speech is untouched (it stays inside
//! [-1, 1]); without it, corrupt packets that still parse can decode to values in the hundreds of
//! thousands (found by the `opus_decode` fuzz target), which would hit every later stage at full
//! scale.

use opus::{Application, Bitrate, Channels, Decoder, Encoder, ErrorCode, SoftClip};
use thiserror::Error;

/// Duration of one frame, the unit of [`OpusEncoder::encode_into`].
pub const FRAME_MS: u32 = 20;

/// Largest Opus packet for one frame (RFC 6716 section 3.4, R2): a sensible size for packet
/// buffers.
pub const MAX_PACKET_BYTES: usize = 1275;

/// Longest duration a single Opus packet can carry (RFC 6716: up to 120 ms).
pub const MAX_PACKET_MS: u32 = 120;

/// Largest packet [`OpusDecoder`] accepts. 48 frames of 1275 bytes is the most a packet can hold
/// without padding; anything longer is rejected up front (it also keeps lengths far from
/// `i32::MAX`, where the `opus` crate would panic).
pub const MAX_ACCEPTED_PACKET_BYTES: usize = 48 * MAX_PACKET_BYTES;

/// Why an Opus operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OpusError {
    /// Only 24 kHz and 48 kHz are supported (the rates of the voice path).
    #[error("unsupported Opus sample rate {rate} Hz (supported: 24000, 48000)")]
    UnsupportedSampleRate {
        /// The rate that was asked for.
        rate: u32,
    },
    /// The encoder input was not exactly one 20 ms frame.
    #[error("wrong Opus frame size: expected {expected} samples (20 ms), got {got}")]
    WrongFrameSize {
        /// Samples in one 20 ms frame at the codec's rate.
        expected: usize,
        /// Samples that were passed.
        got: usize,
    },
    /// A caller buffer is too small for the result.
    #[error("Opus output buffer too small: need {needed}, got {got}")]
    OutputTooSmall {
        /// The size the operation needs.
        needed: usize,
        /// The size of the buffer that was passed.
        got: usize,
    },
    /// An empty packet was given to `decode_into`; a missing frame goes to `conceal_into` instead.
    #[error("empty Opus packet (use conceal_into for a missing frame)")]
    EmptyPacket,
    /// The packet is longer than any packet this decoder accepts.
    #[error("Opus packet of {len} bytes exceeds the {max}-byte limit")]
    PacketTooLarge {
        /// Length of the packet.
        len: usize,
        /// The limit, [`MAX_ACCEPTED_PACKET_BYTES`].
        max: usize,
    },
    /// The packet decodes to more samples than the output buffer holds.
    #[error("Opus packet carries {samples} samples but the output holds {capacity}")]
    PacketTooLong {
        /// Samples the packet carries.
        samples: usize,
        /// Length of the output buffer.
        capacity: usize,
    },
    /// libopus rejected the packet as malformed.
    #[error("corrupt Opus packet ({len} bytes)")]
    CorruptPacket {
        /// Length of the packet.
        len: usize,
    },
    /// A configuration value is outside the range libopus accepts.
    #[error("invalid Opus setting {setting} = {value} (allowed {min}..={max})")]
    InvalidSetting {
        /// Name of the setting.
        setting: &'static str,
        /// Value that was given.
        value: i64,
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// Any other libopus failure (allocation, internal error).
    #[error("libopus {function} failed: {message}")]
    Codec {
        /// The libopus function that failed.
        function: &'static str,
        /// libopus' description of the error code.
        message: &'static str,
    },
}

impl OpusError {
    fn codec(err: opus::Error) -> Self {
        OpusError::Codec {
            function: err.function(),
            message: err.description(),
        }
    }
}

/// Samples in one 20 ms mono frame at `sample_rate`, or an error for a rate other than 24/48 kHz.
pub fn frame_samples(sample_rate: u32) -> Result<usize, OpusError> {
    match sample_rate {
        24_000 | 48_000 => Ok((sample_rate * FRAME_MS / 1000) as usize),
        rate => Err(OpusError::UnsupportedSampleRate { rate }),
    }
}

/// Encoder settings. The defaults suit a voice call over a lossy network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusEncoderConfig {
    /// Target bitrate in bits per second (libopus accepts 500..=512000). 32 kbit/s gives
    /// wideband-plus speech with room for the FEC copy.
    pub bitrate_bps: u32,
    /// Whether to embed a low-bitrate copy of each frame in the next packet (in-band FEC), so that
    /// a single lost packet can be recovered with [`OpusDecoder::decode_fec_into`].
    pub inband_fec: bool,
    /// Expected packet loss, 0..=100 %. libopus spends more bits on FEC as this grows, and emits
    /// no FEC at all at 0.
    pub packet_loss_percent: u8,
    /// Computational complexity, 0..=10 (10 = best quality, the libopus default).
    pub complexity: u8,
}

impl Default for OpusEncoderConfig {
    fn default() -> Self {
        Self {
            bitrate_bps: 32_000,
            inband_fec: true,
            packet_loss_percent: 10,
            complexity: 10,
        }
    }
}

fn check_setting(setting: &'static str, value: i64, min: i64, max: i64) -> Result<(), OpusError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(OpusError::InvalidSetting {
            setting,
            value,
            min,
            max,
        })
    }
}

/// A mono Opus encoder for 20 ms voice frames at 24 kHz or 48 kHz.
pub struct OpusEncoder {
    inner: Encoder,
    sample_rate: u32,
    frame_samples: usize,
    /// Encoder delay in samples, read once at construction (`OPUS_GET_LOOKAHEAD`): decoded audio
    /// lags the input by this much.
    lookahead: usize,
    /// Sanitised copy of the input frame: non-finite samples become 0 and the rest are clamped to
    /// [-1, 1], so no caller data can push libopus into undefined float territory.
    scratch: Box<[f32]>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("sample_rate", &self.sample_rate)
            .field("frame_samples", &self.frame_samples)
            .field("lookahead", &self.lookahead)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// Creates an encoder for mono 20 ms frames at `sample_rate` (24000 or 48000).
    pub fn new(sample_rate: u32, config: OpusEncoderConfig) -> Result<Self, OpusError> {
        let frame_samples = frame_samples(sample_rate)?;
        let mut inner = Encoder::new(sample_rate, Channels::Mono, Application::Voip)
            .map_err(OpusError::codec)?;
        // Speech hint: keeps libopus in its SILK/hybrid modes, which are the ones that carry
        // in-band FEC.
        inner
            .set_signal(opus::Signal::Voice)
            .map_err(OpusError::codec)?;
        let mut encoder = Self {
            inner,
            sample_rate,
            frame_samples,
            lookahead: 0,
            scratch: vec![0.0; frame_samples].into_boxed_slice(),
        };
        encoder.set_bitrate(config.bitrate_bps)?;
        encoder.set_inband_fec(config.inband_fec)?;
        encoder.set_packet_loss_percent(config.packet_loss_percent)?;
        encoder.set_complexity(config.complexity)?;
        let lookahead = encoder.inner.get_lookahead().map_err(OpusError::codec)?;
        encoder.lookahead = usize::try_from(lookahead).unwrap_or(0);
        Ok(encoder)
    }

    /// The sample rate the encoder was created for.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Samples in one 20 ms frame (480 at 24 kHz, 960 at 48 kHz).
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// The codec's algorithmic delay in samples: decoded output lags the input by this much.
    pub fn lookahead_samples(&self) -> usize {
        self.lookahead
    }

    /// Changes the target bitrate (500..=512000 bit/s).
    pub fn set_bitrate(&mut self, bitrate_bps: u32) -> Result<(), OpusError> {
        check_setting("bitrate_bps", i64::from(bitrate_bps), 500, 512_000)?;
        // The range check above makes the cast lossless.
        self.inner
            .set_bitrate(Bitrate::Bits(bitrate_bps as i32))
            .map_err(OpusError::codec)
    }

    /// Turns in-band FEC on or off.
    pub fn set_inband_fec(&mut self, enabled: bool) -> Result<(), OpusError> {
        self.inner.set_inband_fec(enabled).map_err(OpusError::codec)
    }

    /// Sets the expected packet loss (0..=100 %), which sizes the FEC data.
    pub fn set_packet_loss_percent(&mut self, percent: u8) -> Result<(), OpusError> {
        check_setting("packet_loss_percent", i64::from(percent), 0, 100)?;
        self.inner
            .set_packet_loss_perc(i32::from(percent))
            .map_err(OpusError::codec)
    }

    /// Sets the computational complexity (0..=10).
    pub fn set_complexity(&mut self, complexity: u8) -> Result<(), OpusError> {
        check_setting("complexity", i64::from(complexity), 0, 10)?;
        self.inner
            .set_complexity(i32::from(complexity))
            .map_err(OpusError::codec)
    }

    /// Encodes exactly one 20 ms frame of samples in [-1, 1] into `packet`, returning the packet
    /// length.
    ///
    /// Realtime-safe: no allocation. `packet` should hold [`MAX_PACKET_BYTES`]; a smaller buffer
    /// works as long as the encoded frame fits (libopus then lowers the bitrate of this frame
    /// to fit).
    pub fn encode_into(&mut self, pcm: &[f32], packet: &mut [u8]) -> Result<usize, OpusError> {
        if pcm.len() != self.frame_samples {
            return Err(OpusError::WrongFrameSize {
                expected: self.frame_samples,
                got: pcm.len(),
            });
        }
        // Fewer than 3 bytes cannot hold any Opus frame; libopus would fail with BUFFER_TOO_SMALL.
        if packet.len() < 3 {
            return Err(OpusError::OutputTooSmall {
                needed: 3,
                got: packet.len(),
            });
        }
        for (dst, &src) in self.scratch.iter_mut().zip(pcm) {
            *dst = if src.is_finite() {
                src.clamp(-1.0, 1.0)
            } else {
                0.0
            };
        }
        // libopus takes the output length as an i32; more than MAX_PACKET_BYTES is never used
        // anyway.
        let limit = packet.len().min(MAX_PACKET_BYTES);
        self.inner
            .encode_float(&self.scratch, &mut packet[..limit])
            .map_err(OpusError::codec)
    }

    /// Clears the encoder's history, as at the start of a new stream.
    pub fn reset(&mut self) -> Result<(), OpusError> {
        self.inner.reset_state().map_err(OpusError::codec)
    }
}

/// A mono Opus decoder at 24 kHz or 48 kHz, with packet-loss concealment and FEC recovery.
pub struct OpusDecoder {
    inner: Decoder,
    sample_rate: u32,
    frame_samples: usize,
    /// Soft-clipper state (see "Output range" in the module docs); it carries the shape of a
    /// clipped excursion across frames so the clipping stays smooth.
    soft_clip: SoftClip,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("sample_rate", &self.sample_rate)
            .field("frame_samples", &self.frame_samples)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// Creates a mono decoder producing `sample_rate` (24000 or 48000) samples.
    pub fn new(sample_rate: u32) -> Result<Self, OpusError> {
        let frame_samples = frame_samples(sample_rate)?;
        let inner = Decoder::new(sample_rate, Channels::Mono).map_err(OpusError::codec)?;
        Ok(Self {
            inner,
            sample_rate,
            frame_samples,
            soft_clip: SoftClip::new(Channels::Mono),
        })
    }

    /// The output sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Samples in one 20 ms frame (480 at 24 kHz, 960 at 48 kHz).
    pub fn frame_samples(&self) -> usize {
        self.frame_samples
    }

    /// Samples in the longest packet Opus allows (120 ms): an output buffer this long accepts any
    /// valid packet.
    pub fn max_packet_samples(&self) -> usize {
        (self.sample_rate * MAX_PACKET_MS / 1000) as usize
    }

    fn check_output(&self, out: &[f32]) -> Result<(), OpusError> {
        if out.len() < self.frame_samples {
            return Err(OpusError::OutputTooSmall {
                needed: self.frame_samples,
                got: out.len(),
            });
        }
        Ok(())
    }

    /// Decodes one packet into `out`, returning the number of samples written.
    ///
    /// For the 20 ms packets [`OpusEncoder`] produces this is [`Self::frame_samples`]. Other valid
    /// Opus durations (2.5 ms to 120 ms) decode too, as long as `out` has room for them; `out`
    /// must hold at least one 20 ms frame. Realtime-safe: no allocation, and any byte string
    /// yields `Ok` or an error.
    pub fn decode_into(&mut self, packet: &[u8], out: &mut [f32]) -> Result<usize, OpusError> {
        self.check_output(out)?;
        if packet.is_empty() {
            return Err(OpusError::EmptyPacket);
        }
        if packet.len() > MAX_ACCEPTED_PACKET_BYTES {
            return Err(OpusError::PacketTooLarge {
                len: packet.len(),
                max: MAX_ACCEPTED_PACKET_BYTES,
            });
        }
        // Parse the table of contents first, so a packet longer than `out` is a precise error
        // rather than libopus' generic BUFFER_TOO_SMALL.
        let samples = opus::packet::get_nb_samples(packet, self.sample_rate)
            .map_err(|_| OpusError::CorruptPacket { len: packet.len() })?;
        // A packet of zero frames (TOC code 3 with a count of 0) is invalid by RFC 6716 section
        // 3.2.5.
        if samples == 0 {
            return Err(OpusError::CorruptPacket { len: packet.len() });
        }
        if samples > out.len() {
            return Err(OpusError::PacketTooLong {
                samples,
                capacity: out.len(),
            });
        }
        match self.inner.decode_float(packet, &mut out[..samples], false) {
            Ok(n) => {
                self.soft_clip.apply(&mut out[..n.min(samples)]);
                Ok(n)
            }
            Err(err) if err.code() == ErrorCode::InvalidPacket => {
                Err(OpusError::CorruptPacket { len: packet.len() })
            }
            Err(err) => Err(OpusError::codec(err)),
        }
    }

    /// Fills one 20 ms frame of `out` with libopus packet-loss concealment, for a frame that never
    /// arrived. Returns [`Self::frame_samples`]. This is the hook a jitter buffer calls on a gap.
    ///
    /// Realtime-safe. `out` must hold at least one frame; only the first frame is written.
    pub fn conceal_into(&mut self, out: &mut [f32]) -> Result<usize, OpusError> {
        self.check_output(out)?;
        let frame = &mut out[..self.frame_samples];
        let n = self
            .inner
            .decode_float(&[], frame, false)
            .map_err(OpusError::codec)?;
        self.soft_clip
            .apply(&mut frame[..n.min(self.frame_samples)]);
        Ok(n)
    }

    /// Recovers a lost 20 ms frame from the FEC data inside `next_packet`, the packet that follows
    /// the gap. Returns [`Self::frame_samples`].
    ///
    /// Call it in place of [`Self::conceal_into`] when the next packet is already at hand, then
    /// decode `next_packet` itself normally with [`Self::decode_into`]. When `next_packet`
    /// carries no FEC data (FEC off, CELT-only mode, or the encoder judged it not worth the
    /// bits), libopus falls back to concealment, so the result is never worse than
    /// `conceal_into`.
    pub fn decode_fec_into(
        &mut self,
        next_packet: &[u8],
        out: &mut [f32],
    ) -> Result<usize, OpusError> {
        self.check_output(out)?;
        if next_packet.is_empty() {
            return Err(OpusError::EmptyPacket);
        }
        if next_packet.len() > MAX_ACCEPTED_PACKET_BYTES {
            return Err(OpusError::PacketTooLarge {
                len: next_packet.len(),
                max: MAX_ACCEPTED_PACKET_BYTES,
            });
        }
        let frame = &mut out[..self.frame_samples];
        match self.inner.decode_float(next_packet, frame, true) {
            Ok(n) => {
                self.soft_clip
                    .apply(&mut frame[..n.min(self.frame_samples)]);
                Ok(n)
            }
            Err(err) if err.code() == ErrorCode::InvalidPacket => Err(OpusError::CorruptPacket {
                len: next_packet.len(),
            }),
            Err(err) => Err(OpusError::codec(err)),
        }
    }

    /// Clears the decoder's history, as at the start of a new stream.
    pub fn reset(&mut self) -> Result<(), OpusError> {
        self.soft_clip = SoftClip::new(Channels::Mono);
        self.inner.reset_state().map_err(OpusError::codec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_samples_per_rate() {
        assert_eq!(frame_samples(24_000), Ok(480));
        assert_eq!(frame_samples(48_000), Ok(960));
        assert_eq!(
            frame_samples(16_000),
            Err(OpusError::UnsupportedSampleRate { rate: 16_000 })
        );
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let config = OpusEncoderConfig {
            packet_loss_percent: 101,
            ..OpusEncoderConfig::default()
        };
        assert!(matches!(
            OpusEncoder::new(48_000, config),
            Err(OpusError::InvalidSetting {
                setting: "packet_loss_percent",
                value: 101,
                ..
            })
        ));
        let config = OpusEncoderConfig {
            bitrate_bps: 100,
            ..OpusEncoderConfig::default()
        };
        assert!(matches!(
            OpusEncoder::new(24_000, config),
            Err(OpusError::InvalidSetting {
                setting: "bitrate_bps",
                ..
            })
        ));
    }
}
