//! voxgate-dsp: the audio building blocks of voxgate.
//!
//! Pure computation: nothing here knows of tokio, sockets or clocks, so every piece can be tested,
//! benchmarked and fuzzed on its own. Hot-path functions take caller-owned buffers
//! (`process_into(&input, &mut output)` style) and never allocate; convenience forms that allocate sit
//! beside them and say so.
//!
//! # Layout
//! - [`pcm`]: PCM16 little-endian bytes <-> f32, stereo -> mono; SIMD with runtime dispatch.
//! - [`resample`]: streaming resampler between the telephony and studio rates.
//! - [`codec`]: Opus and G.711 (mu-law, A-law).
//! - [`ring`]: lock-free SPSC audio ring; [`jitter`]: jitter buffer for sequenced frames (reorder,
//!   dedup, concealment, playout pacing by the caller).
//! - [`vad`]: voice-activity detection with OpenAI `server_vad` parameters.
//! - [`b64`]: base64 for audio payloads.
//! - [`wav`]: WAV read and write.

pub mod b64;
pub mod codec;
pub mod jitter;
pub mod pcm;
pub mod resample;
pub mod ring;
pub mod vad;
pub mod wav;
