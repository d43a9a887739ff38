//! A lock-free single-producer single-consumer audio ring (a thin wrapper over `ringbuf`).
//!
//! [`AudioRing::new`] allocates once and returns an [`AudioProducer`] and an [`AudioConsumer`]
//! that may live on different threads. Pushing and popping never block, never allocate and never
//! take a lock, so both ends are realtime-safe. Neither end can wait for the other: a caller that
//! needs to wait (a network task feeding an audio callback) polls on its own schedule.
//!
//! # Overflow policy
//! The producer never overwrites: [`AudioProducer::push_slice`] stores what fits and returns the
//! count, so the *newest* samples are the ones refused, and the caller decides what to do with the
//! rest (count them as dropped, retry later). Dropping the *oldest* samples instead, which is what
//! a live stream wants when the reader fell behind, cannot be done from the producer side without
//! racing the consumer, so it is the consumer's job: [`AudioConsumer::discard_oldest`] and
//! [`AudioConsumer::keep_latest`] trim the backlog before reading.

use std::fmt;

use ringbuf::traits::{Consumer as _, Observer as _, Producer as _, Split as _};
use ringbuf::{HeapCons, HeapProd, HeapRb};

/// Constructor of producer/consumer pairs.
#[derive(Debug, Clone, Copy)]
pub struct AudioRing;

impl AudioRing {
    /// Allocates a ring of `capacity` samples (a capacity of 0 is raised to 1) and splits it into
    /// its two ends.
    // Like `mpsc::channel`, making the ring *is* handing out its two ends; no `AudioRing` value
    // exists to return.
    #[allow(clippy::new_ret_no_self)]
    pub fn new<T: Copy>(capacity: usize) -> (AudioProducer<T>, AudioConsumer<T>) {
        let (producer, consumer) = HeapRb::<T>::new(capacity.max(1)).split();
        (
            AudioProducer { inner: producer },
            AudioConsumer { inner: consumer },
        )
    }
}

/// The writing end of an [`AudioRing`].
pub struct AudioProducer<T> {
    inner: HeapProd<T>,
}

/// The reading end of an [`AudioRing`].
pub struct AudioConsumer<T> {
    inner: HeapCons<T>,
}

impl<T> fmt::Debug for AudioProducer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioProducer")
            .field("capacity", &self.inner.capacity())
            .field("occupied", &self.inner.occupied_len())
            .finish()
    }
}

impl<T> fmt::Debug for AudioConsumer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AudioConsumer")
            .field("capacity", &self.inner.capacity())
            .field("occupied", &self.inner.occupied_len())
            .finish()
    }
}

impl<T: Copy> AudioProducer<T> {
    /// Appends as many of `samples` as fit, in order, and returns how many were stored. The rest
    /// (`samples[count..]`) were not stored.
    pub fn push_slice(&mut self, samples: &[T]) -> usize {
        self.inner.push_slice(samples)
    }

    /// Appends all of `samples` if they fit, or nothing. Returns whether they were stored. Useful
    /// for whole frames, which are worth nothing in part.
    pub fn push_exact(&mut self, samples: &[T]) -> bool {
        // Only the consumer can change the vacant length meanwhile, and only upwards.
        if self.inner.vacant_len() < samples.len() {
            return false;
        }
        self.inner.push_slice(samples) == samples.len()
    }

    /// Appends one sample, or gives it back if the ring is full.
    ///
    /// # Errors
    /// The sample itself when the ring is full.
    pub fn try_push(&mut self, sample: T) -> Result<(), T> {
        self.inner.try_push(sample)
    }

    /// Free space in samples (a lower bound: the consumer may be freeing more right now).
    pub fn vacant_len(&self) -> usize {
        self.inner.vacant_len()
    }

    /// Samples waiting to be read (an upper bound: the consumer may be reading right now).
    pub fn occupied_len(&self) -> usize {
        self.inner.occupied_len()
    }

    /// Total capacity in samples.
    pub fn capacity(&self) -> usize {
        self.inner.capacity().get()
    }

    /// Whether the consumer still exists; once it is dropped nothing pushed will ever be read.
    pub fn is_consumer_alive(&self) -> bool {
        self.inner.read_is_held()
    }
}

impl<T: Copy> AudioConsumer<T> {
    /// Moves up to `out.len()` of the oldest samples into `out`, in order, and returns how many.
    pub fn pop_slice(&mut self, out: &mut [T]) -> usize {
        self.inner.pop_slice(out)
    }

    /// Fills all of `out` if that many samples are waiting, or takes nothing. Returns whether it
    /// did.
    pub fn pop_exact(&mut self, out: &mut [T]) -> bool {
        // Only the producer can change the occupied length meanwhile, and only upwards.
        if self.inner.occupied_len() < out.len() {
            return false;
        }
        self.inner.pop_slice(out) == out.len()
    }

    /// Takes the oldest sample, if any.
    pub fn try_pop(&mut self) -> Option<T> {
        self.inner.try_pop()
    }

    /// Drops up to `count` of the oldest samples and returns how many were dropped.
    pub fn discard_oldest(&mut self, count: usize) -> usize {
        self.inner.skip(count)
    }

    /// Drops the oldest samples so that at most `keep` remain (as of now), and returns how many were
    /// dropped. This is the drop-oldest overflow policy for a reader that fell behind.
    pub fn keep_latest(&mut self, keep: usize) -> usize {
        let excess = self.inner.occupied_len().saturating_sub(keep);
        self.inner.skip(excess)
    }

    /// Drops every waiting sample and returns how many.
    pub fn clear(&mut self) -> usize {
        self.inner.clear()
    }

    /// Samples waiting to be read (a lower bound: the producer may be adding more right now).
    pub fn occupied_len(&self) -> usize {
        self.inner.occupied_len()
    }

    /// Whether nothing is waiting (as of now).
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Total capacity in samples.
    pub fn capacity(&self) -> usize {
        self.inner.capacity().get()
    }

    /// Whether the producer still exists. Once it is gone and the ring is empty, no sample will
    /// ever arrive.
    pub fn is_producer_alive(&self) -> bool {
        self.inner.write_is_held()
    }
}
