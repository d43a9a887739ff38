//! A jitter buffer for fixed-size audio frames with 16-bit (RTP-style) sequence numbers.
//!
//! Frames arrive from the network late, twice, out of order or never; the player wants one frame
//! per frame period, on time. [`JitterBuffer::push`] files each frame by its sequence number and
//! [`JitterBuffer::pop`], called by the player once per frame period (the caller owns the clock),
//! hands out the next frame in sequence, or a concealment frame where one is missing, or silence
//! while (re)buffering.
//!
//! # Sequence numbers
//! Sequence numbers are `u16` and wrap around (65535 is followed by 0). Each is unwrapped against
//! the highest one seen so far into a 64-bit position, taking the nearer of the two directions, so
//! a stream may wrap any number of times; the window ([`JitterConfig::max_depth`]) is limited to
//! 16384 frames so that the nearer direction is never ambiguous.
//!
//! # Playout
//! - **Buffering.** After the first frame (and after each underrun), pops return silence until
//!   the buffered frames span [`JitterConfig::target_depth`] sequence numbers. Playout then starts
//!   at the oldest buffered frame; sequence numbers skipped over are counted as lost.
//! - **Playing.** Each pop plays the next sequence number: the frame if it is there, otherwise a
//!   frame from the [`Concealer`] (counted as lost; the frame is late if it turns up afterwards).
//! - **Underrun.** A pop that finds the buffer empty counts an underrun, returns one concealment
//!   frame (so the audio fades out rather than stops dead), and goes back to buffering. The
//!   missing sequence number is not skipped: if its frame arrives while buffering it is played.
//! - **Overrun.** A frame too far ahead to fit in the window (`max_depth` frames from the next one
//!   to play) moves playout forward: the oldest buffered frames are dropped (counted as overruns)
//!   and empty slots passed over are counted as lost. Latency stays bounded by `max_depth`.
//! - **Late and duplicate frames** are counted and discarded. A duplicate of a frame that was
//!   already played counts as late, since its slot is gone.
//! - **Resync.** A sender that restarts its sequence far behind would otherwise see every frame
//!   discarded as late; after [`JitterConfig::resync_after`] consecutive late frames the buffer
//!   flushes and restarts from the latest one.
//!
//! # Realtime use
//! All memory is allocated by [`JitterBuffer::new`]; `push` and `pop` never allocate or lock.
//!
//! # Accounting
//! At any time: `received == played + overruns + flushed + buffered_len()`, every successful push
//! is one of `received`, `duplicates` or `late`, and every successful pop is one of `played`,
//! `concealed` or `silence`.

/// Largest window allowed: a quarter of the 16-bit sequence space keeps unwrapping unambiguous.
pub const MAX_DEPTH_LIMIT: usize = 1 << 14;

/// Extended position given to the first sequence number, far from zero so that frames older than
/// the first one can be placed without underflow.
const EXTENDED_BASE: u64 = 1 << 32;

/// Sizing of a [`JitterBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Samples per frame; every pushed and popped frame has exactly this length.
    pub frame_len: usize,
    /// Sequence span to collect before playout (re)starts, in frames: the latency bought to
    /// absorb jitter. At least 1, at most `max_depth`.
    pub target_depth: usize,
    /// Window size in frames: the most that can be buffered, and the latency ceiling. At most
    /// [`MAX_DEPTH_LIMIT`].
    pub max_depth: usize,
    /// Consecutive late frames after which the sender is assumed to have restarted its sequence
    /// and the buffer resynchronises. At least 1.
    pub resync_after: usize,
}

impl JitterConfig {
    /// A configuration with `resync_after` equal to `max_depth`.
    pub fn new(frame_len: usize, target_depth: usize, max_depth: usize) -> Self {
        JitterConfig {
            frame_len,
            target_depth,
            max_depth,
            resync_after: max_depth.max(1),
        }
    }

    /// Checks the invariants documented on each field.
    ///
    /// # Errors
    /// The first [`JitterConfigError`] found.
    pub fn validate(&self) -> Result<(), JitterConfigError> {
        if self.frame_len == 0 {
            return Err(JitterConfigError::ZeroFrameLength);
        }
        if self.max_depth == 0 || self.max_depth > MAX_DEPTH_LIMIT {
            return Err(JitterConfigError::MaxDepthOutOfRange {
                max_depth: self.max_depth,
            });
        }
        if self.target_depth == 0 || self.target_depth > self.max_depth {
            return Err(JitterConfigError::TargetDepthOutOfRange {
                target_depth: self.target_depth,
                max_depth: self.max_depth,
            });
        }
        if self.resync_after == 0 {
            return Err(JitterConfigError::ZeroResyncAfter);
        }
        if self.frame_len.checked_mul(self.max_depth).is_none() {
            return Err(JitterConfigError::TooLarge);
        }
        Ok(())
    }
}

/// Why a [`JitterConfig`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JitterConfigError {
    /// `frame_len` was 0.
    #[error("frame length must be at least 1 sample")]
    ZeroFrameLength,
    /// `max_depth` was 0 or above [`MAX_DEPTH_LIMIT`].
    #[error("max depth {max_depth} out of range 1..={MAX_DEPTH_LIMIT}")]
    MaxDepthOutOfRange {
        /// The value given.
        max_depth: usize,
    },
    /// `target_depth` was 0 or above `max_depth`.
    #[error("target depth {target_depth} out of range 1..={max_depth}")]
    TargetDepthOutOfRange {
        /// The value given.
        target_depth: usize,
        /// The configured maximum.
        max_depth: usize,
    },
    /// `resync_after` was 0.
    #[error("resync_after must be at least 1")]
    ZeroResyncAfter,
    /// `frame_len * max_depth` overflows.
    #[error("frame length times max depth overflows")]
    TooLarge,
}

/// Why a push or pop was refused (nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JitterError {
    /// The frame or output buffer does not have the configured frame length.
    #[error("frame has {actual} samples, the jitter buffer is configured for {expected}")]
    FrameLength {
        /// The configured frame length.
        expected: usize,
        /// The length given.
        actual: usize,
    },
}

/// What [`JitterBuffer::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored for playout.
    Stored,
    /// Discarded: the same sequence number is already buffered.
    Duplicate,
    /// Discarded: its slot has already been played, concealed or skipped.
    Late,
}

/// What [`JitterBuffer::pop`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopKind {
    /// The received frame for the next sequence number.
    Frame,
    /// A frame from the [`Concealer`] standing in for a missing one.
    Concealed,
    /// Zeros: nothing to play yet (buffering).
    Silence,
}

/// Counters of everything the buffer did. All are totals since construction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames stored (unique and in time).
    pub received: u64,
    /// Frames discarded because the same sequence number was already buffered.
    pub duplicates: u64,
    /// Frames discarded because their slot had already been played, concealed or skipped.
    pub late: u64,
    /// Buffered frames dropped unplayed because a newer frame moved the window forward.
    pub overruns: u64,
    /// Buffered frames dropped by a resync.
    pub flushed: u64,
    /// Pops that played a received frame.
    pub played: u64,
    /// Pops that returned a concealment frame (for lost frames and at underruns).
    pub concealed: u64,
    /// Pops that returned silence while buffering.
    pub silence: u64,
    /// Sequence numbers passed by playout without their frame (concealed or skipped).
    pub lost: u64,
    /// Pops that found the buffer empty while playing.
    pub underruns: u64,
    /// Restarts after a run of late frames.
    pub resyncs: u64,
}

/// Fills in for missing frames. The Opus decoder's packet-loss concealment plugs in here; closures
/// `FnMut(Option<&[f32]>, u32, &mut [f32])` implement it too.
pub trait Concealer {
    /// Writes a stand-in for a missing frame into `out` (whose length is the frame length).
    /// `last` is the most recent frame actually played, if any; `consecutive` counts the missing
    /// frames in a row, starting at 1.
    fn conceal(&mut self, last: Option<&[f32]>, consecutive: u32, out: &mut [f32]);

    /// Sees every received frame as it is played. The default does nothing.
    fn observe(&mut self, _frame: &[f32]) {}
}

impl<F: FnMut(Option<&[f32]>, u32, &mut [f32])> Concealer for F {
    fn conceal(&mut self, last: Option<&[f32]>, consecutive: u32, out: &mut [f32]) {
        self(last, consecutive, out);
    }
}

/// The default concealer: repeats the last played frame with a linear fade that reaches zero
/// after `fade_frames` consecutive missing frames, then gives silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FadeRepeat {
    /// Missing frames over which the repeat fades to silence; 0 means silence at once.
    pub fade_frames: u32,
}

impl Default for FadeRepeat {
    fn default() -> Self {
        FadeRepeat { fade_frames: 3 }
    }
}

impl Concealer for FadeRepeat {
    fn conceal(&mut self, last: Option<&[f32]>, consecutive: u32, out: &mut [f32]) {
        let Some(last) = last.filter(|_| consecutive <= self.fade_frames) else {
            out.fill(0.0);
            return;
        };
        // The gain falls linearly from (1 - (k-1)/F) to (1 - k/F) across the k-th missing frame,
        // so consecutive concealment frames join without a step.
        let fade = self.fade_frames as f32;
        let start = 1.0 - (consecutive - 1) as f32 / fade;
        let step = 1.0 / (fade * out.len() as f32);
        for (i, (slot, &sample)) in out.iter_mut().zip(last).enumerate() {
            *slot = sample * (start - step * i as f32);
        }
    }
}

/// A concealer that writes silence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SilenceConcealer;

impl Concealer for SilenceConcealer {
    fn conceal(&mut self, _last: Option<&[f32]>, _consecutive: u32, out: &mut [f32]) {
        out.fill(0.0);
    }
}

/// Where the buffer is in its cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing received since construction or the last resync.
    Idle,
    /// Collecting `target_depth` before playing.
    Buffering,
    /// Handing out one sequence number per pop.
    Playing,
}

/// The jitter buffer. See the [module docs](self) for its behaviour.
pub struct JitterBuffer<C = FadeRepeat> {
    config: JitterConfig,
    /// `max_depth` frames back to back; the frame with extended sequence `s` lives in slot
    /// `s % max_depth`.
    slots: Box<[f32]>,
    /// Whether each slot holds a frame. A filled slot always holds a sequence number inside the
    /// window `[next, next + max_depth)`, so the slot index identifies it.
    filled: Box<[bool]>,
    /// Number of filled slots.
    buffered: usize,
    /// The most recent frame played, for the concealer.
    last_played: Box<[f32]>,
    /// Whether `last_played` holds a frame yet.
    has_last: bool,
    /// Missing frames concealed in a row.
    consecutive_missing: u32,
    concealer: C,
    state: State,
    /// Extended sequence of the next frame to play; everything before it has been passed.
    /// Meaningless while `Idle`.
    next: u64,
    /// Highest extended sequence received; the unwrapping reference. Meaningless while `Idle`.
    highest: u64,
    /// Whether playout has started since the last (re)start: before it, a frame older than `next`
    /// can still widen the window backwards instead of being late.
    played_any: bool,
    /// Late frames in a row, for resync.
    late_streak: usize,
    stats: JitterStats,
}

impl<C> std::fmt::Debug for JitterBuffer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitterBuffer")
            .field("config", &self.config)
            .field("state", &self.state)
            .field("buffered", &self.buffered)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl JitterBuffer<FadeRepeat> {
    /// A jitter buffer with the default [`FadeRepeat`] concealer.
    ///
    /// # Errors
    /// As [`JitterConfig::validate`].
    pub fn new(config: JitterConfig) -> Result<Self, JitterConfigError> {
        Self::with_concealer(config, FadeRepeat::default())
    }
}

impl<C: Concealer> JitterBuffer<C> {
    /// A jitter buffer with the given concealer. Allocates all its memory now.
    ///
    /// # Errors
    /// As [`JitterConfig::validate`].
    pub fn with_concealer(config: JitterConfig, concealer: C) -> Result<Self, JitterConfigError> {
        config.validate()?;
        Ok(JitterBuffer {
            config,
            slots: vec![0.0; config.frame_len * config.max_depth].into_boxed_slice(),
            filled: vec![false; config.max_depth].into_boxed_slice(),
            buffered: 0,
            last_played: vec![0.0; config.frame_len].into_boxed_slice(),
            has_last: false,
            consecutive_missing: 0,
            concealer,
            state: State::Idle,
            next: 0,
            highest: 0,
            played_any: false,
            late_streak: 0,
            stats: JitterStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> JitterConfig {
        self.config
    }

    /// The counters.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Frames currently buffered.
    pub fn buffered_len(&self) -> usize {
        self.buffered
    }

    /// Sequence span from the next frame to play to the newest received, inclusive, in frames
    /// (0 when nothing is buffered): the latency currently held.
    pub fn span(&self) -> usize {
        if self.buffered == 0 {
            return 0;
        }
        // Both are inside one window of at most MAX_DEPTH_LIMIT, so this fits.
        (self.highest + 1 - self.next) as usize
    }

    /// Whether pops are currently playing (as opposed to buffering or idle).
    pub fn is_playing(&self) -> bool {
        self.state == State::Playing
    }

    /// The concealer, e.g. to reconfigure it.
    pub fn concealer_mut(&mut self) -> &mut C {
        &mut self.concealer
    }

    /// Files a received frame under its sequence number. Never allocates.
    ///
    /// # Errors
    /// [`JitterError::FrameLength`] if `frame` does not have the configured length.
    pub fn push(&mut self, seq: u16, frame: &[f32]) -> Result<PushOutcome, JitterError> {
        self.check_len(frame.len())?;
        if self.state == State::Idle {
            self.start_at(EXTENDED_BASE + u64::from(seq));
            self.store(EXTENDED_BASE + u64::from(seq), frame);
            return Ok(PushOutcome::Stored);
        }
        // The nearer of the two directions: the signed 16-bit distance from the highest seen.
        let distance = i64::from(seq.wrapping_sub(self.highest as u16) as i16);
        let Some(ext) = self.highest.checked_add_signed(distance) else {
            return Ok(self.on_late(seq, frame));
        };
        let max_depth = self.config.max_depth as u64;
        if ext < self.next {
            if !self.played_any && self.highest - ext < max_depth {
                // Before playout starts an older frame just widens the window backwards: the
                // slots between it and `next` are empty, and everything buffered still fits.
                self.next = ext;
            } else {
                return Ok(self.on_late(seq, frame));
            }
        }
        self.late_streak = 0;
        if ext >= self.next + max_depth {
            self.advance_window(ext + 1 - max_depth);
        }
        if self.filled[self.slot(ext)] {
            self.stats.duplicates += 1;
            return Ok(PushOutcome::Duplicate);
        }
        self.store(ext, frame);
        Ok(PushOutcome::Stored)
    }

    /// Writes the next frame period's audio into `out`. Call once per frame period. Never
    /// allocates.
    ///
    /// # Errors
    /// [`JitterError::FrameLength`] if `out` does not have the configured length.
    pub fn pop(&mut self, out: &mut [f32]) -> Result<PopKind, JitterError> {
        self.check_len(out.len())?;
        if self.state == State::Buffering && self.buffered > 0 {
            // Measured from the oldest frame actually buffered, not from `next`: after an underrun
            // a gap of lost frames must not count as collected latency.
            let oldest = self.oldest_buffered();
            if self.highest + 1 - oldest >= self.config.target_depth as u64 {
                self.start_playout(oldest);
            }
        }
        if self.state != State::Playing {
            out.fill(0.0);
            self.stats.silence += 1;
            return Ok(PopKind::Silence);
        }
        if self.buffered == 0 {
            // Underrun: fade out with one concealment frame, keep `next` (its frame may still
            // come) and collect `target_depth` again before playing on.
            self.stats.underruns += 1;
            self.state = State::Buffering;
            self.conceal(out);
            return Ok(PopKind::Concealed);
        }
        let slot = self.slot(self.next);
        self.next += 1;
        if self.filled[slot] {
            self.filled[slot] = false;
            self.buffered -= 1;
            let frame = self.frame(slot);
            out.copy_from_slice(&self.slots[frame.clone()]);
            self.last_played.copy_from_slice(&self.slots[frame]);
            self.has_last = true;
            self.consecutive_missing = 0;
            self.concealer.observe(out);
            self.stats.played += 1;
            Ok(PopKind::Frame)
        } else {
            self.stats.lost += 1;
            self.conceal(out);
            Ok(PopKind::Concealed)
        }
    }

    /// Drops everything buffered (counted as flushed) and waits for a new first frame, as after
    /// construction. The counters are kept.
    pub fn reset(&mut self) {
        self.stats.flushed += self.buffered as u64;
        self.filled.fill(false);
        self.buffered = 0;
        self.state = State::Idle;
        self.played_any = false;
        self.late_streak = 0;
        self.consecutive_missing = 0;
    }

    /// Counts a late frame, and resyncs on it after a long enough run of them.
    fn on_late(&mut self, seq: u16, frame: &[f32]) -> PushOutcome {
        self.late_streak += 1;
        if self.late_streak < self.config.resync_after {
            self.stats.late += 1;
            return PushOutcome::Late;
        }
        self.reset();
        self.stats.resyncs += 1;
        self.start_at(EXTENDED_BASE + u64::from(seq));
        self.store(EXTENDED_BASE + u64::from(seq), frame);
        PushOutcome::Stored
    }

    /// Enters buffering with `ext` as the only known position.
    fn start_at(&mut self, ext: u64) {
        self.state = State::Buffering;
        self.next = ext;
        self.highest = ext;
    }

    /// Copies `frame` into the slot of `ext`, which must be inside the window and empty.
    fn store(&mut self, ext: u64, frame: &[f32]) {
        let slot = self.slot(ext);
        let range = self.frame(slot);
        self.slots[range].copy_from_slice(frame);
        self.filled[slot] = true;
        self.buffered += 1;
        self.highest = self.highest.max(ext);
        self.stats.received += 1;
    }

    /// Moves `next` forward to `new_next`, dropping buffered frames in between as overruns and
    /// counting the empty slots as lost.
    fn advance_window(&mut self, new_next: u64) {
        let passed = new_next - self.next;
        // Only the first `max_depth` passed slots can hold frames.
        let scan = passed.min(self.config.max_depth as u64);
        let mut dropped = 0;
        for ext in self.next..self.next + scan {
            let slot = self.slot(ext);
            if self.filled[slot] {
                self.filled[slot] = false;
                dropped += 1;
            }
        }
        self.buffered -= dropped as usize;
        self.stats.overruns += dropped;
        self.stats.lost += passed - dropped;
        self.next = new_next;
    }

    /// Extended sequence of the oldest buffered frame; `highest` if nothing is buffered.
    fn oldest_buffered(&self) -> u64 {
        let mut ext = self.next;
        while ext < self.highest && !self.filled[self.slot(ext)] {
            ext += 1;
        }
        ext
    }

    /// Leaves buffering: playout starts at `oldest`, the oldest buffered frame; the empty slots
    /// before it are skipped as lost.
    fn start_playout(&mut self, oldest: u64) {
        self.stats.lost += oldest - self.next;
        self.next = oldest;
        self.state = State::Playing;
        self.played_any = true;
    }

    /// Fills `out` from the concealer and counts it.
    fn conceal(&mut self, out: &mut [f32]) {
        self.consecutive_missing = self.consecutive_missing.saturating_add(1);
        let last = self.has_last.then_some(&self.last_played[..]);
        self.concealer.conceal(last, self.consecutive_missing, out);
        self.stats.concealed += 1;
    }

    fn check_len(&self, actual: usize) -> Result<(), JitterError> {
        if actual == self.config.frame_len {
            Ok(())
        } else {
            Err(JitterError::FrameLength {
                expected: self.config.frame_len,
                actual,
            })
        }
    }

    fn slot(&self, ext: u64) -> usize {
        (ext % self.config.max_depth as u64) as usize
    }

    fn frame(&self, slot: usize) -> std::ops::Range<usize> {
        slot * self.config.frame_len..(slot + 1) * self.config.frame_len
    }
}
