//! The bounded queue between a session and its client writer.
//!
//! Two queues behind one short-lived mutex: control messages, which are never dropped, and bot
//! audio, which drops its oldest frame when full (a slow client hears a skip, never a stall of the
//! whole session). A sequence number on each entry keeps the merged order exactly as queued, so
//! `bot_audio_end` can never overtake the audio it ends. The mutex is never held across `.await`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

/// One thing to write to the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Outgoing {
    /// A JSON control message.
    Text(String),
    /// A bot audio frame.
    Audio(BotAudio),
    /// The last entry: a close frame.
    Close {
        /// RFC 6455 close code.
        code: u16,
        /// Reason text.
        reason: String,
    },
}

/// A bot audio frame and the instants its latency metrics are measured from once it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotAudio {
    /// The frame, in the client's output format.
    pub data: Bytes,
    /// Samples in the frame (what a drop reports).
    pub samples: u64,
    /// When the kernel received the upstream message carrying it (relay latency); `None` if that read was
    /// not dated.
    pub arrived_at: Option<Instant>,
    /// When the user's turn ended, on the turn's first frame only (time to first audio).
    pub turn_ended_at: Option<Instant>,
}

/// What [`Outbox::push_audio`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pushed {
    /// Frames dropped to make room.
    pub dropped_frames: u64,
    /// Samples in the dropped frames.
    pub dropped_samples: u64,
}

/// Why a control message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The control queue is full: the client has not read for a long time.
    #[error("client control queue full")]
    Full,
    /// A close is already queued.
    #[error("client connection closing")]
    Closed,
}

#[derive(Debug)]
struct Inner {
    seq: u64,
    control: VecDeque<(u64, Outgoing)>,
    audio: VecDeque<(u64, BotAudio)>,
    close: Option<Outgoing>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    audio_capacity: usize,
    control_capacity: usize,
}

impl Outbox {
    /// An outbox holding at most `audio_capacity` audio frames and `control_capacity` messages.
    pub fn new(audio_capacity: usize, control_capacity: usize) -> Self {
        Outbox {
            inner: Mutex::new(Inner {
                seq: 0,
                control: VecDeque::new(),
                audio: VecDeque::new(),
                close: None,
            }),
            notify: Notify::new(),
            audio_capacity: audio_capacity.max(1),
            control_capacity: control_capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another holder panicked mid-push; the queues stay consistent.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a control message.
    ///
    /// # Errors
    /// [`PushError`] when closing or when the client stopped reading.
    pub fn push_control(&self, text: String) -> Result<(), PushError> {
        {
            let mut inner = self.lock();
            if inner.close.is_some() {
                return Err(PushError::Closed);
            }
            if inner.control.len() >= self.control_capacity {
                return Err(PushError::Full);
            }
            inner.seq += 1;
            let seq = inner.seq;
            inner.control.push_back((seq, Outgoing::Text(text)));
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Queues an audio frame, dropping the oldest queued audio if full.
    pub fn push_audio(&self, audio: BotAudio) -> Pushed {
        let mut pushed = Pushed::default();
        {
            let mut inner = self.lock();
            if inner.close.is_some() {
                return pushed;
            }
            while inner.audio.len() >= self.audio_capacity {
                if let Some((_, dropped)) = inner.audio.pop_front() {
                    pushed.dropped_frames += 1;
                    pushed.dropped_samples += dropped.samples;
                }
            }
            inner.seq += 1;
            let seq = inner.seq;
            inner.audio.push_back((seq, audio));
        }
        self.notify.notify_one();
        pushed
    }

    /// Drops every queued audio frame (barge-in). Control messages stay.
    pub fn flush_audio(&self) -> usize {
        let mut inner = self.lock();
        let dropped = inner.audio.len();
        inner.audio.clear();
        dropped
    }

    /// Queues the close frame; later pushes are ignored. The first close wins.
    pub fn close(&self, code: u16, reason: String) {
        {
            let mut inner = self.lock();
            if inner.close.is_none() {
                inner.close = Some(Outgoing::Close { code, reason });
            }
        }
        self.notify.notify_one();
    }

    /// Like [`Outbox::close`], but drops queued bot audio first so the close is not delayed
    /// behind it (shutdown, protocol violations).
    pub fn close_now(&self, code: u16, reason: String) {
        self.flush_audio();
        self.close(code, reason);
    }

    /// True once a close is queued.
    pub fn is_closing(&self) -> bool {
        self.lock().close.is_some()
    }

    /// The next entry in queue order; the close comes after everything queued before it.
    pub fn pop(&self) -> Option<Outgoing> {
        let mut inner = self.lock();
        let control_seq = inner.control.front().map(|(seq, _)| *seq);
        let audio_seq = inner.audio.front().map(|(seq, _)| *seq);
        match (control_seq, audio_seq) {
            (Some(c), Some(a)) if a < c => inner
                .audio
                .pop_front()
                .map(|(_, audio)| Outgoing::Audio(audio)),
            (Some(_), _) => inner.control.pop_front().map(|(_, message)| message),
            (None, Some(_)) => inner
                .audio
                .pop_front()
                .map(|(_, audio)| Outgoing::Audio(audio)),
            (None, None) => inner.close.take(),
        }
    }

    /// Waits until something may have been queued. Spurious wake-ups are possible; call
    /// [`Outbox::pop`] after.
    pub async fn wait(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Outgoing {
        Outgoing::Text(s.to_owned())
    }

    fn audio(data: &'static [u8], samples: u64, arrived_at: Instant) -> BotAudio {
        BotAudio {
            data: Bytes::from_static(data),
            samples,
            arrived_at: Some(arrived_at),
            turn_ended_at: None,
        }
    }

    #[test]
    fn keeps_queue_order_across_both_queues() {
        let outbox = Outbox::new(8, 8);
        let now = Instant::now();
        outbox.push_control("a".into()).expect("room");
        outbox.push_audio(audio(b"1", 1, now));
        outbox.push_control("end".into()).expect("room");
        outbox.close(1000, "bye".into());
        assert_eq!(outbox.pop(), Some(text("a")));
        assert_eq!(outbox.pop(), Some(Outgoing::Audio(audio(b"1", 1, now))));
        assert_eq!(outbox.pop(), Some(text("end")));
        assert_eq!(
            outbox.pop(),
            Some(Outgoing::Close {
                code: 1000,
                reason: "bye".into()
            })
        );
        assert_eq!(outbox.pop(), None);
    }

    #[test]
    fn drops_oldest_audio_never_control() {
        let outbox = Outbox::new(2, 8);
        let now = Instant::now();
        outbox.push_audio(audio(b"1", 10, now));
        outbox.push_control("c".into()).expect("room");
        outbox.push_audio(audio(b"2", 10, now));
        let pushed = outbox.push_audio(audio(b"3", 10, now));
        assert_eq!(
            pushed,
            Pushed {
                dropped_frames: 1,
                dropped_samples: 10
            }
        );
        assert_eq!(outbox.pop(), Some(text("c")));
        assert_eq!(outbox.pop(), Some(Outgoing::Audio(audio(b"2", 10, now))));
        assert_eq!(outbox.pop(), Some(Outgoing::Audio(audio(b"3", 10, now))));
    }

    #[test]
    fn bounds_control_and_stops_after_close() {
        let outbox = Outbox::new(2, 1);
        outbox.push_control("c".into()).expect("room");
        assert_eq!(outbox.push_control("d".into()), Err(PushError::Full));
        outbox.close(1001, "x".into());
        assert_eq!(outbox.push_control("e".into()), Err(PushError::Closed));
        outbox.flush_audio();
        assert_eq!(outbox.pop(), Some(text("c")));
        assert!(matches!(
            outbox.pop(),
            Some(Outgoing::Close { code: 1001, .. })
        ));
    }
}
