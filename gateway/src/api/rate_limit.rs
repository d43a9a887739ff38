//! One keyed request-rate limiter shared by the API surfaces: the chatbot WebSocket (messages per user) and the
//! IntentLayer HTTP routes (requests per session or per user).
//!
//! A thin layer over `governor`'s GCRA limiter that adds what both surfaces need: a per-minute rate with an
//! explicit burst, "disabled" as a value (a rate of 0), the wait to report to a refused client, a counter of
//! refusals (`voxgate_rate_limited_total{surface}`), pruning for bounded memory, and a clock that tests can move
//! forward instead of sleeping through a minute.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use prometheus::IntCounter;

/// The limiter's time: monotonic time since it was built, plus a skew that only [`LimiterClock::advance`]
/// changes. Clones share the skew, so a test can hold the clock of a limiter living inside a server.
#[derive(Debug, Clone)]
pub struct LimiterClock {
    start: Instant,
    /// Nanoseconds added to the real elapsed time (always 0 outside tests).
    skew: Arc<AtomicU64>,
}

impl LimiterClock {
    fn new() -> Self {
        LimiterClock {
            start: Instant::now(),
            skew: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves this clock (and so its limiter's window) forward by `by`, as if that much time had passed.
    /// For tests that check a limit is lifted after its window without waiting for it.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.skew.fetch_add(nanos, Ordering::AcqRel);
    }
}

impl Clock for LimiterClock {
    // `Duration` is a `governor::clock::Reference`: time since `start`.
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed() + Duration::from_nanos(self.skew.load(Ordering::Acquire))
    }
}

type Inner =
    RateLimiter<String, DefaultKeyedStateStore<String>, LimiterClock, NoOpMiddleware<Duration>>;

/// A refused request: the limit it hit and when the key may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// The configured rate.
    pub per_minute: u32,
    /// Time until one more request of this key is allowed.
    pub retry_after: Duration,
}

impl RateLimited {
    /// `retry_after` in whole seconds, rounded up and at least 1 (the value of a `Retry-After` header).
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        if self.retry_after.subsec_nanos() > 0 || secs == 0 {
            secs + 1
        } else {
            secs
        }
    }
}

/// Requests per minute per key (a user, a session), with a burst. A rate of 0 disables it: every check passes
/// and nothing is remembered.
pub struct KeyedRateLimiter {
    /// `None` when disabled.
    limiter: Option<Inner>,
    per_minute: u32,
    /// A handle on the limiter's clock (shared with it).
    clock: LimiterClock,
    /// Counts refused requests, when the surface gave one ([`KeyedRateLimiter::counting_refusals`]).
    refusals: Option<IntCounter>,
}

impl std::fmt::Debug for KeyedRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("per_minute", &self.per_minute)
            .field("keys", &self.keys())
            .finish()
    }
}

impl KeyedRateLimiter {
    /// `per_minute` requests per minute per key, replenished evenly (one every `60 s / per_minute`), of which up
    /// to `burst` (at least 1) may come at once. `per_minute == 0` disables the limiter.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        let clock = LimiterClock::new();
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::per_minute(rate).allow_burst(burst);
            RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone())
        });
        KeyedRateLimiter {
            limiter,
            per_minute,
            clock,
            refusals: None,
        }
    }

    /// Increments `counter` at every refusal (the surface's `voxgate_rate_limited_total` series).
    #[must_use]
    pub fn counting_refusals(mut self, counter: IntCounter) -> Self {
        self.refusals = Some(counter);
        self
    }

    /// Whether the limiter is on (a non-zero rate).
    pub fn is_enabled(&self) -> bool {
        self.limiter.is_some()
    }

    /// The configured rate (0 when disabled).
    pub fn rate_per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Counts one request of `key`; refuses it (and counts nothing) past the limit.
    ///
    /// # Errors
    /// [`RateLimited`] with the wait before `key` may send again.
    pub fn check(&self, key: &str) -> Result<(), RateLimited> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        // governor's keyed API takes `&K`: the owned key is only allocated for the lookup.
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            if let Some(refusals) = &self.refusals {
                refusals.inc();
            }
            RateLimited {
                per_minute: self.per_minute,
                retry_after: not_until.wait_time_from(self.clock.now()),
            }
        })
    }

    /// Forgets keys idle long enough to be back at a full burst (they behave exactly as unknown keys), so memory
    /// follows the keys active in the last window rather than every key ever seen. Call periodically.
    pub fn prune(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys currently remembered.
    pub fn keys(&self) -> usize {
        self.limiter.as_ref().map_or(0, |limiter| limiter.len())
    }

    /// The limiter's clock, to move it forward in tests.
    pub fn clock(&self) -> &LimiterClock {
        &self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_until_the_next_cell() {
        // 6 per minute: one every 10 s, 2 at once.
        let refusals = IntCounter::new("refusals", "test").unwrap();
        let limiter = KeyedRateLimiter::per_minute(6, 2).counting_refusals(refusals.clone());
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let refused = limiter.check("a").unwrap_err();
        assert_eq!(refused.per_minute, 6);
        assert!(
            refused.retry_after > Duration::from_secs(9)
                && refused.retry_after <= Duration::from_secs(10),
            "{refused:?}"
        );
        assert_eq!(refused.retry_after_secs(), 10);
        // Another key has its own budget.
        assert!(limiter.check("b").is_ok());
        limiter.clock().advance(Duration::from_secs(10));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err());
        assert_eq!(refusals.get(), 2);
    }

    #[test]
    fn zero_disables() {
        let limiter = KeyedRateLimiter::per_minute(0, 5);
        assert!(!limiter.is_enabled());
        for _ in 0..1000 {
            assert!(limiter.check("a").is_ok());
        }
        assert_eq!(limiter.keys(), 0);
    }

    #[test]
    fn prune_forgets_idle_keys_only() {
        let limiter = KeyedRateLimiter::per_minute(60, 1);
        limiter.check("idle").unwrap();
        limiter.clock().advance(Duration::from_secs(5));
        limiter.check("busy").unwrap();
        assert_eq!(limiter.keys(), 2);
        limiter.prune();
        // "idle" is back at a full burst, so forgetting it changes nothing; "busy" is still limited.
        assert_eq!(limiter.keys(), 1);
        assert!(limiter.check("busy").is_err());
        assert!(limiter.check("idle").is_ok());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let at = |retry_after| RateLimited {
            per_minute: 1,
            retry_after,
        };
        assert_eq!(at(Duration::ZERO).retry_after_secs(), 1);
        assert_eq!(at(Duration::from_millis(1)).retry_after_secs(), 1);
        assert_eq!(at(Duration::from_secs(2)).retry_after_secs(), 2);
        assert_eq!(at(Duration::from_millis(2001)).retry_after_secs(), 3);
    }
}
