//! Voice-activity detection with the parameters of OpenAI's `server_vad` turn detection.
//!
//! [`Vad`] takes mono `f32` audio at any rate the dsp [`Resampler`] converts (8, 16, 22.05, 24,
//! 44.1 and 48 kHz) in chunks of any size, and reports where speech starts and stops as
//! [`VadEvent`]s, with offsets in input samples since the start of the stream:
//!
//! - [`VadEvent::SpeechStarted`] is reported as soon as a frame scores at or above
//!   [`VadConfig::threshold`]; its offset is the start of that frame moved back by
//!   [`VadConfig::prefix_padding_ms`] (never before the stream start or the previous stop), like
//!   OpenAI's `audio_start_ms`, so that the audio handed on includes the onset of the first word.
//! - [`VadEvent::SpeechStopped`] is reported once [`VadConfig::silence_duration_ms`] of non-speech
//!   has followed the last speech frame; its offset is the end of that last speech frame, i.e.
//!   where speech really ended. OpenAI's `audio_end_ms` is documented to *include* the silence
//!   duration: a caller that wants that figure adds [`Vad::silence_duration_samples`] (which is
//!   also the earliest point at which the event can be reported).
//!
//! # How frames are scored
//! The input is resampled to 16 kHz and cut into 16 ms frames of 256 samples, the frame of
//! [`earshot`]'s small neural detector, which gives each frame a speech probability. earshot alone
//! is not enough to reject noise: it judges per-frame normalised log-mel features and has no idea
//! of the background level. Measured here with white and pink noise: at -11 dBFS RMS nearly every
//! frame scores at or above 0.5; at -30 dBFS the first 10-15 frames of a stream do, and so do about
//! 2 s of frames after an abrupt onset that follows digital silence. So its score is combined with
//! two energy gates, and a frame that fails either scores 0:
//!
//! - an absolute gate, [`ENERGY_GATE_DBFS`]: frames quieter than -50 dBFS are not speech in a voice
//!   call (a microphone or telephone user speaks 20-40 dB louder), whatever their spectral shape;
//! - a noise-floor gate, [`NOISE_FLOOR_MARGIN_DB`]: the frame must be 10 dB above the quietest
//!   frame of the last second (minimum statistics). Stationary noise stays within a few dB of its
//!   own minimum (measured: white 1.5 dB, pink 3.6 dB, brown 8.3 dB at most), speech rises well
//!   above it. Levels for this gate are taken after a 100 Hz high-pass, so rumble and brown noise,
//!   whose energy below 100 Hz swings by 20 dB between 16 ms frames, do not look like onsets.
//!
//! The cost: speech must be about 10 dB above stationary background noise to be detected (earshot
//! alone claims 3 dB), which a close-talking voice-call user exceeds. An abrupt stationary noise
//! that starts after digital silence reads as speech until the floor has learnt it (about 1 s).
//!
//! Speech starts on the first frame at or above `threshold`, and continues while frames stay at or
//! above a slightly lower `threshold - 0.15` (hysteresis, the convention of Silero's VAD iterator):
//! the probability of real speech dips between syllables, and a single threshold would need a long
//! `silence_duration_ms` to paper over that.
//!
//! # Realtime safety
//! [`Vad::process`] does not allocate, except to grow `events` when it has no spare capacity (reuse
//! one vector, and keep a few slots free). All other buffers are sized in [`Vad::new`].

use earshot::Detector;
use thiserror::Error;

use crate::resample::{ResampleError, Resampler};

/// The rate earshot's detector works at.
pub const DETECTOR_RATE: u32 = 16_000;

/// Samples in one detector frame at [`DETECTOR_RATE`] (16 ms).
pub const DETECTOR_FRAME: usize = 256;

/// Frames whose RMS level is below this score 0 whatever earshot says (see the module docs). Levels
/// are `10 * log10(mean square)`, so a full-scale square wave is 0 dBFS and a full-scale sine -3
/// dBFS.
pub const ENERGY_GATE_DBFS: f32 = -50.0;

/// How far (dB) a frame must rise above the tracked noise floor to count. See the module docs.
pub const NOISE_FLOOR_MARGIN_DB: f32 = 10.0;

/// The noise floor is the quietest frame of the last `FLOOR_BLOCKS * FLOOR_BLOCK_FRAMES` frames
/// (8 x 8 x 16 ms, about 1 s), kept as per-block minima so the window slides without storing every
/// frame. A longer window remembers a quiet past for longer (an abrupt noise after silence then
/// passes the gate for longer); a shorter one risks counting the dips of continuous speech as
/// noise. Running speech dips between syllables several times a second, so 1 s is safe.
const FLOOR_BLOCKS: usize = 8;
const FLOOR_BLOCK_FRAMES: usize = 8;

/// How far below `threshold` the score may dip while speech continues. See the module docs.
const HYSTERESIS: f32 = 0.15;

/// Input samples sanitised and resampled per step, so the scratch buffers have a fixed size
/// whatever the caller's chunk size.
const STEP: usize = 480;

/// Parameters of the detector, named and defaulted like OpenAI's `server_vad` turn detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Speech probability (0..=1) at or above which a frame is speech. Higher needs louder,
    /// clearer speech and rejects more noise. Default 0.5.
    pub threshold: f32,
    /// Audio before the detected start that is counted as part of the utterance, in ms. Default
    /// 300.
    pub prefix_padding_ms: u32,
    /// Non-speech needed after speech before the speech counts as stopped, in ms. Default 500.
    pub silence_duration_ms: u32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
        }
    }
}

/// A change of speech state, with its position in input samples since the start of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began; `sample_offset` already includes the prefix padding.
    SpeechStarted {
        /// Input samples since the stream start (or the last [`Vad::reset`]).
        sample_offset: u64,
    },
    /// Speech ended at `sample_offset`; reported once the silence duration has passed.
    SpeechStopped {
        /// Input samples since the stream start (or the last [`Vad::reset`]).
        sample_offset: u64,
    },
}

/// The score of one 16 ms detector frame, for diagnostics ([`Vad::process_with_frames`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadFrame {
    /// Where the frame starts, in input samples since the stream start (resampler delay removed).
    pub sample_offset: u64,
    /// earshot's speech probability for the frame, 0..=1.
    pub detector_score: f32,
    /// The frame's RMS level in dBFS (see [`ENERGY_GATE_DBFS`]), floored at -120 for digital
    /// silence.
    pub rms_dbfs: f32,
    /// The frame's level after the 100 Hz high-pass, in dBFS: the level compared with the noise
    /// floor.
    pub high_passed_dbfs: f32,
    /// The noise floor at this frame in dBFS: the quietest frame of the last 2 s.
    pub noise_floor_dbfs: f32,
    /// The score the state machine uses: `detector_score`, or 0 when the frame is below
    /// [`ENERGY_GATE_DBFS`] or less than [`NOISE_FLOOR_MARGIN_DB`] above the noise floor.
    pub probability: f32,
}

/// Why a [`Vad`] could not be built.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum VadError {
    /// The threshold must be a probability.
    #[error("VAD threshold {threshold} is outside 0..=1")]
    InvalidThreshold {
        /// The threshold that was given.
        threshold: f32,
    },
    /// The input rate cannot be converted to the detector's 16 kHz.
    #[error("unsupported VAD input rate: {0}")]
    UnsupportedSampleRate(#[from] ResampleError),
}

/// A streaming voice-activity detector. Create one per audio stream.
pub struct Vad {
    config: VadConfig,
    sample_rate: u32,
    /// Converts the input to 16 kHz. `Resampler` is a plain copy when the input already is 16 kHz.
    resampler: Resampler,
    /// The sanitised copy of the current input step (non-finite samples zeroed, others clamped to
    /// [-1, 1], which earshot expects).
    clean: Box<[f32; STEP]>,
    /// The resampler's output for the current step; capacity fixed in `new`.
    resampled: Vec<f32>,
    detector: Box<Detector>,
    /// The detector frame being filled.
    frame: Box<[f32; DETECTOR_FRAME]>,
    frame_fill: usize,
    /// 16 kHz samples fed to the detector frames since the stream start (includes the resampler's
    /// delay, which `to_input_offset` removes).
    detector_samples: u64,
    /// The resampler's delay in 16 kHz samples.
    resampler_delay: u64,
    speaking: bool,
    /// End of the last speech frame, in 16 kHz samples (valid while `speaking`).
    speech_end: u64,
    /// Where the last stop was reported, in input samples, so that a new start's prefix padding
    /// never reaches back into the previous utterance.
    last_stop: u64,
    last_frame: Option<VadFrame>,
    /// Minimum frame level (dBFS) of each completed block of the noise-floor window; a ring.
    floor_blocks: [f32; FLOOR_BLOCKS],
    /// Completed blocks in `floor_blocks` (saturates at `FLOOR_BLOCKS`), and where the next goes.
    floor_blocks_filled: usize,
    floor_next_block: usize,
    /// Minimum level and frame count of the block being filled.
    floor_block_min: f32,
    floor_block_frames: usize,
    /// Removes rumble below the speech band before levels are compared with the noise floor.
    high_pass: Biquad,
}

impl std::fmt::Debug for Vad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vad")
            .field("config", &self.config)
            .field("sample_rate", &self.sample_rate)
            .field("speaking", &self.speaking)
            .field("last_frame", &self.last_frame)
            .finish_non_exhaustive()
    }
}

impl Vad {
    /// Creates a detector for mono input at `sample_rate`.
    ///
    /// # Errors
    /// [`VadError::InvalidThreshold`] for a threshold outside 0..=1 (or NaN),
    /// [`VadError::UnsupportedSampleRate`] for a rate the dsp resampler does not take.
    pub fn new(config: VadConfig, sample_rate: u32) -> Result<Self, VadError> {
        if !(0.0..=1.0).contains(&config.threshold) {
            return Err(VadError::InvalidThreshold {
                threshold: config.threshold,
            });
        }
        let resampler = Resampler::new(sample_rate, DETECTOR_RATE)?;
        let resampled = Vec::with_capacity(resampler.max_output_len(STEP));
        Ok(Self {
            config,
            sample_rate,
            resampler_delay: resampler.delay() as u64,
            resampler,
            clean: Box::new([0.0; STEP]),
            resampled,
            detector: Detector::default_boxed(),
            frame: Box::new([0.0; DETECTOR_FRAME]),
            frame_fill: 0,
            detector_samples: 0,
            speaking: false,
            speech_end: 0,
            last_stop: 0,
            last_frame: None,
            floor_blocks: [0.0; FLOOR_BLOCKS],
            floor_blocks_filled: 0,
            floor_next_block: 0,
            floor_block_min: f32::INFINITY,
            floor_block_frames: 0,
            high_pass: Biquad::high_pass(HIGH_PASS_HZ, DETECTOR_RATE),
        })
    }

    /// The configuration the detector was built with.
    pub fn config(&self) -> &VadConfig {
        &self.config
    }

    /// The input sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Whether the detector is inside an utterance (between a start and its stop).
    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// [`VadConfig::silence_duration_ms`] in input samples: how long after the
    /// [`VadEvent::SpeechStopped`] offset the event is reported (OpenAI's `audio_end_ms` is the
    /// stop offset plus this).
    pub fn silence_duration_samples(&self) -> u64 {
        ms_to_samples(self.config.silence_duration_ms, self.sample_rate)
    }

    /// The score of the most recent detector frame, if any frame has been completed.
    pub fn last_frame(&self) -> Option<VadFrame> {
        self.last_frame
    }

    /// Forgets all state and starts a new stream at offset 0.
    pub fn reset(&mut self) {
        self.resampler.reset();
        self.detector.reset();
        self.frame_fill = 0;
        self.detector_samples = 0;
        self.speaking = false;
        self.speech_end = 0;
        self.last_stop = 0;
        self.last_frame = None;
        self.floor_blocks_filled = 0;
        self.floor_next_block = 0;
        self.floor_block_min = f32::INFINITY;
        self.floor_block_frames = 0;
        self.high_pass.reset();
    }

    /// Feeds the next `samples` of the stream and appends any speech events to `events`.
    ///
    /// Realtime-safe (see the module docs). The events do not depend on how the stream is chunked.
    pub fn process(&mut self, samples: &[f32], events: &mut Vec<VadEvent>) {
        self.process_inner(samples, events, None);
    }

    /// [`process`](Self::process), also appending the score of every completed detector frame to
    /// `frames` (for diagnostics and tuning; allocates as `frames` grows).
    pub fn process_with_frames(
        &mut self,
        samples: &[f32],
        events: &mut Vec<VadEvent>,
        frames: &mut Vec<VadFrame>,
    ) {
        self.process_inner(samples, events, Some(frames));
    }

    fn process_inner(
        &mut self,
        samples: &[f32],
        events: &mut Vec<VadEvent>,
        mut frames: Option<&mut Vec<VadFrame>>,
    ) {
        for step in samples.chunks(STEP) {
            let clean = &mut self.clean[..step.len()];
            for (dst, &src) in clean.iter_mut().zip(step) {
                *dst = if src.is_finite() {
                    src.clamp(-1.0, 1.0)
                } else {
                    0.0
                };
            }
            self.resampled.clear();
            self.resampler.process_into(clean, &mut self.resampled);
            // Index loop: `push_sample` needs `&mut self`, so `self.resampled` cannot stay
            // borrowed.
            for i in 0..self.resampled.len() {
                let sample = self.resampled[i].clamp(-1.0, 1.0);
                self.push_sample(sample, events, frames.as_deref_mut());
            }
        }
    }

    fn push_sample(
        &mut self,
        sample: f32,
        events: &mut Vec<VadEvent>,
        frames: Option<&mut Vec<VadFrame>>,
    ) {
        self.frame[self.frame_fill] = sample;
        self.frame_fill += 1;
        if self.frame_fill < DETECTOR_FRAME {
            return;
        }
        self.frame_fill = 0;
        let frame_start = self.detector_samples;
        self.detector_samples += DETECTOR_FRAME as u64;
        let frame_end = self.detector_samples;

        let detector_score = self.detector.predict_f32(&self.frame[..]).clamp(0.0, 1.0);
        let mean_square = self.frame.iter().map(|s| s * s).sum::<f32>() / DETECTOR_FRAME as f32;
        let rms_dbfs = (10.0 * mean_square.log10()).max(-120.0);
        let mut hp_energy = 0.0;
        for &x in self.frame.iter() {
            let y = self.high_pass.process(x);
            hp_energy += y * y;
        }
        let hp_dbfs = (10.0 * (hp_energy / DETECTOR_FRAME as f32).log10()).max(-120.0);
        let noise_floor_dbfs = self.track_noise_floor(hp_dbfs);
        let probability =
            if rms_dbfs < ENERGY_GATE_DBFS || hp_dbfs < noise_floor_dbfs + NOISE_FLOOR_MARGIN_DB {
                0.0
            } else {
                detector_score
            };
        let scored = VadFrame {
            sample_offset: self.to_input_offset(frame_start),
            detector_score,
            rms_dbfs,
            noise_floor_dbfs,
            high_passed_dbfs: hp_dbfs,
            probability,
        };
        self.last_frame = Some(scored);
        if let Some(frames) = frames {
            frames.push(scored);
        }

        if !self.speaking {
            // `> 0.0`: a gated frame never starts speech, even with a threshold of 0.
            if probability >= self.config.threshold && probability > 0.0 {
                self.speaking = true;
                self.speech_end = frame_end;
                let detected = self.to_input_offset(frame_start);
                let padding = ms_to_samples(self.config.prefix_padding_ms, self.sample_rate);
                let sample_offset = detected.saturating_sub(padding).max(self.last_stop);
                events.push(VadEvent::SpeechStarted { sample_offset });
            }
            return;
        }
        let continue_threshold = (self.config.threshold - HYSTERESIS).max(0.0);
        if probability >= continue_threshold && probability > 0.0 {
            self.speech_end = frame_end;
            return;
        }
        let silence = ms_to_samples(self.config.silence_duration_ms, DETECTOR_RATE);
        if frame_end - self.speech_end >= silence {
            self.speaking = false;
            let sample_offset = self.to_input_offset(self.speech_end);
            self.last_stop = sample_offset;
            events.push(VadEvent::SpeechStopped { sample_offset });
        }
    }

    /// Adds a frame level to the sliding noise-floor window and returns the floor, the quietest
    /// frame of the window (this frame included).
    fn track_noise_floor(&mut self, rms_dbfs: f32) -> f32 {
        self.floor_block_min = self.floor_block_min.min(rms_dbfs);
        self.floor_block_frames += 1;
        let floor = self.floor_blocks[..self.floor_blocks_filled]
            .iter()
            .fold(self.floor_block_min, |floor, &block| floor.min(block));
        if self.floor_block_frames == FLOOR_BLOCK_FRAMES {
            self.floor_blocks[self.floor_next_block] = self.floor_block_min;
            self.floor_next_block = (self.floor_next_block + 1) % FLOOR_BLOCKS;
            self.floor_blocks_filled = (self.floor_blocks_filled + 1).min(FLOOR_BLOCKS);
            self.floor_block_min = f32::INFINITY;
            self.floor_block_frames = 0;
        }
        floor
    }

    /// Converts a position in the 16 kHz detector stream to input samples since the stream start.
    fn to_input_offset(&self, detector_position: u64) -> u64 {
        let aligned = detector_position.saturating_sub(self.resampler_delay);
        // Round to nearest; u128 so that no stream length can overflow.
        let scaled = (u128::from(aligned) * u128::from(self.sample_rate)
            + u128::from(DETECTOR_RATE / 2))
            / u128::from(DETECTOR_RATE);
        u64::try_from(scaled).unwrap_or(u64::MAX)
    }
}

fn ms_to_samples(ms: u32, rate: u32) -> u64 {
    u64::from(ms) * u64::from(rate) / 1000
}

/// Corner of the high-pass applied before levels are compared with the noise floor. Voiced speech
/// has its fundamental above about 85 Hz; below 100 Hz there is mostly rumble, hum and brown noise.
const HIGH_PASS_HZ: f32 = 100.0;

/// A second-order (Butterworth, Q = 1/sqrt 2) IIR section, RBJ cookbook form, direct form I.
#[derive(Debug, Clone, Copy)]
struct Biquad {
    b0: f32,
    b1: f32,
    b2: f32,
    a1: f32,
    a2: f32,
    x1: f32,
    x2: f32,
    y1: f32,
    y2: f32,
}

impl Biquad {
    fn high_pass(corner_hz: f32, sample_rate: u32) -> Self {
        let w0 = 2.0 * std::f32::consts::PI * corner_hz / sample_rate as f32;
        let alpha = w0.sin() / std::f32::consts::SQRT_2;
        let cos = w0.cos();
        let a0 = 1.0 + alpha;
        Self {
            b0: (1.0 + cos) / 2.0 / a0,
            b1: -(1.0 + cos) / a0,
            b2: (1.0 + cos) / 2.0 / a0,
            a1: -2.0 * cos / a0,
            a2: (1.0 - alpha) / a0,
            x1: 0.0,
            x2: 0.0,
            y1: 0.0,
            y2: 0.0,
        }
    }

    fn process(&mut self, x: f32) -> f32 {
        let y = self.b0 * x + self.b1 * self.x1 + self.b2 * self.x2
            - self.a1 * self.y1
            - self.a2 * self.y2;
        self.x2 = self.x1;
        self.x1 = x;
        self.y2 = self.y1;
        // Flush denormals: after long digital silence the feedback would otherwise decay into
        // subnormal numbers, which are slow on x86.
        self.y1 = if y.abs() < 1e-20 { 0.0 } else { y };
        y
    }

    fn reset(&mut self) {
        self.x1 = 0.0;
        self.x2 = 0.0;
        self.y1 = 0.0;
        self.y2 = 0.0;
    }
}
