//! A bounded read cache of session rows for [`super::Store::get_session`] (the IntentLayer info read, and the
//! first read of every chat POST).
//!
//! # Coherence
//! - **This process's writes.** Every session-mutating store method, after its commit, either writes the row it
//!   committed through to the cache or evicts the id. A write that wants to write through takes a [`Ticket`]
//!   *before* its commit, and its row goes in only if no other write of that id's stripe finished in between;
//!   otherwise it evicts. So two writers racing never leave the older row behind, whatever order their
//!   post-commit steps run in.
//! - **Raced misses.** A read that misses takes a ticket before it queries the database, and inserts the row it
//!   read only if no write of the id's stripe (and no [`SessionCache::clear`]) finished since. The check and the
//!   insert happen under the stripe's lock, which writers also take to bump and evict: a row older than a
//!   finished write is never inserted, not even for an instant.
//! - **Other processes** (a second gateway on PostgreSQL, the ops CLI on either backend) are seen through the
//!   backend's watcher, which evicts ids or clears the cache (PostgreSQL `NOTIFY`, SQLite `PRAGMA data_version`;
//!   see each backend for its staleness bound). Until the watcher runs, and while it is disconnected, the cache
//!   is disabled: reads go to the database and nothing is inserted.
//!
//! The cache stores what the database holds; expiry and `active` are judged by the callers at read time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use quick_cache::sync::Cache;

use crate::chat::domain::Session;

/// Sessions kept (a few hundred bytes each): the working set of a busy gateway, and a bound on memory.
pub(super) const DEFAULT_CAPACITY: usize = 65_536;
/// Write counters are kept per stripe of ids rather than per id, so they take no memory per session.
const STRIPES: usize = 256;

/// The cache. Shared by every clone of a store and by its background tasks.
pub(super) struct SessionCache {
    rows: Cache<String, Session>,
    /// Per stripe, the number of writes that finished (committed and then bumped this). Its lock also makes
    /// "check the counter, then insert" atomic against "bump, then evict".
    stripes: Box<[Mutex<u64>]>,
    /// Bumped by every [`SessionCache::clear`], which holds every stripe lock while it does.
    generation: AtomicU64,
    /// Whether the backend's watcher of other processes' writes is running; reads bypass the cache until then.
    enabled: AtomicBool,
}

/// What a write or a miss saw of its id's stripe before it touched the database.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    stripe: usize,
    writes: u64,
    generation: u64,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("len", &self.rows.len())
            .field("enabled", &self.enabled.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl SessionCache {
    pub(super) fn new(capacity: usize) -> Self {
        SessionCache {
            rows: Cache::new(capacity.max(1)),
            stripes: (0..STRIPES).map(|_| Mutex::new(0)).collect(),
            generation: AtomicU64::new(0),
            enabled: AtomicBool::new(false),
        }
    }

    /// The cached row, if the cache is enabled and holds it.
    pub(super) fn get(&self, id: &str) -> Option<Session> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        self.rows.get(id)
    }

    /// Taken before reading or writing `id` in the database.
    pub(super) fn ticket(&self, id: &str) -> Ticket {
        let stripe = stripe_of(id);
        let writes = *lock(&self.stripes[stripe]);
        Ticket {
            stripe,
            writes,
            generation: self.generation.load(Ordering::Acquire),
        }
    }

    /// After a read that missed: keeps `row` unless a write of the stripe or a clear finished since `ticket`.
    pub(super) fn fill(&self, ticket: Ticket, row: &Session) {
        if !self.enabled.load(Ordering::Acquire) {
            return;
        }
        let writes = lock(&self.stripes[ticket.stripe]);
        if *writes == ticket.writes && self.generation.load(Ordering::Acquire) == ticket.generation
        {
            self.rows.insert(row.id.clone(), row.clone());
        }
    }

    /// After a write of `id` has committed (or failed): counts the write, then keeps `row` (the row as the write
    /// committed it) if nothing else finished writing the stripe since `ticket`, and evicts `id` otherwise or
    /// when `row` is `None` (deleted, unknown, or the outcome is not known).
    pub(super) fn written(&self, id: &str, ticket: Ticket, row: Option<&Session>) {
        self.written_many(&[(id, ticket, row)]);
    }

    /// [`SessionCache::written`] for the writes of one commit (a group commit of chat turns), in commit order:
    /// they finish together, so they do not count as racing each other, and of several rows of one id the last
    /// one stays.
    pub(super) fn written_many(&self, writes: &[(&str, Ticket, Option<&Session>)]) {
        let mut stripes: Vec<usize> = writes.iter().map(|(_, t, _)| t.stripe).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let enabled = self.enabled.load(Ordering::Acquire);
        for stripe in stripes {
            let mut finished = lock(&self.stripes[stripe]);
            let generation = self.generation.load(Ordering::Acquire);
            for (id, ticket, row) in writes.iter().filter(|(_, t, _)| t.stripe == stripe) {
                let unraced = *finished == ticket.writes && generation == ticket.generation;
                match row {
                    Some(row) if unraced && enabled && row.id == *id => {
                        self.rows.insert(row.id.clone(), (*row).clone());
                    }
                    _ => {
                        self.rows.remove(*id);
                    }
                }
            }
            *finished += 1;
        }
    }

    /// After a write of `id` has committed (or failed), or when another process changed it: evicts it.
    pub(super) fn evict(&self, id: &str) {
        let mut writes = lock(&self.stripes[stripe_of(id)]);
        *writes += 1;
        self.rows.remove(id);
    }

    /// Forgets every row (after a write whose affected ids are not known, or when another process's writes may
    /// have been missed).
    pub(super) fn clear(&self) {
        let _all: Vec<_> = self.stripes.iter().map(lock).collect();
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.rows.clear();
    }

    /// Turns the cache on once the backend's watcher runs, and off (cleared) when it loses track.
    pub(super) fn set_enabled(&self, enabled: bool) {
        if enabled {
            // Rows read before the watcher ran may predate a change it will never report.
            self.clear();
            self.enabled.store(true, Ordering::Release);
        } else {
            self.enabled.store(false, Ordering::Release);
            self.clear();
        }
    }

    pub(super) fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }
}

fn stripe_of(id: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    // A fixed hasher: the stripe of an id must not change between a ticket and its use.
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(id);
    (hash % STRIPES as u64) as usize
}

/// The counter stays meaningful even if a holder panicked (it is only ever incremented), so poisoning is ignored.
fn lock(stripe: &Mutex<u64>) -> std::sync::MutexGuard<'_, u64> {
    stripe
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn session(id: &str, count: i64) -> Session {
        Session {
            id: id.to_owned(),
            kind: "k".into(),
            scope: String::new(),
            user_id: "u".into(),
            conversation_id: None,
            created_at: Utc::now(),
            last_activity: Utc::now(),
            expires_at: None,
            closed_at: None,
            active: true,
            interaction_count: count,
            metadata: serde_json::json!({}),
        }
    }

    #[test]
    fn disabled_cache_neither_serves_nor_keeps() {
        let cache = SessionCache::new(16);
        let ticket = cache.ticket("a");
        cache.fill(ticket, &session("a", 1));
        assert_eq!(cache.get("a"), None);
        cache.set_enabled(true);
        assert_eq!(
            cache.get("a"),
            None,
            "a row filled while disabled is not kept"
        );
        let ticket = cache.ticket("a");
        cache.fill(ticket, &session("a", 1));
        assert_eq!(cache.get("a").map(|s| s.interaction_count), Some(1));
        cache.set_enabled(false);
        assert!(!cache.is_enabled());
        assert_eq!(cache.get("a"), None);
    }

    #[test]
    fn a_miss_raced_by_a_write_does_not_insert_its_older_row() {
        let cache = SessionCache::new(16);
        cache.set_enabled(true);
        // The read takes its ticket and reads count 1; a write of count 2 commits and finishes before the read
        // gets to fill.
        let read = cache.ticket("a");
        let write = cache.ticket("a");
        cache.written("a", write, Some(&session("a", 2)));
        cache.fill(read, &session("a", 1));
        assert_eq!(cache.get("a").map(|s| s.interaction_count), Some(2));
        // The same with an eviction-only write: nothing is cached rather than the old row.
        let read = cache.ticket("a");
        cache.evict("a");
        cache.fill(read, &session("a", 2));
        assert_eq!(cache.get("a"), None);
        // And with a clear (another process changed something).
        let read = cache.ticket("a");
        cache.clear();
        cache.fill(read, &session("a", 2));
        assert_eq!(cache.get("a"), None);
    }

    #[test]
    fn racing_writes_leave_no_older_row() {
        let cache = SessionCache::new(16);
        cache.set_enabled(true);
        // Two writes take their tickets before committing; the later commit (count 3) finishes first, then the
        // earlier one (count 2) finishes: it must not write its older row through.
        let first = cache.ticket("a");
        let second = cache.ticket("a");
        cache.written("a", second, Some(&session("a", 3)));
        cache.written("a", first, Some(&session("a", 2)));
        assert_eq!(cache.get("a"), None);
        // The turns of one group commit do not race each other; the last row of an id stays.
        let tickets: Vec<_> = ["a", "b", "a"].iter().map(|id| cache.ticket(id)).collect();
        let (a2, b1, a3) = (session("a", 2), session("b", 1), session("a", 3));
        cache.written_many(&[
            ("a", tickets[0], Some(&a2)),
            ("b", tickets[1], Some(&b1)),
            ("a", tickets[2], Some(&a3)),
        ]);
        assert_eq!(cache.get("a").map(|s| s.interaction_count), Some(3));
        assert_eq!(cache.get("b").map(|s| s.interaction_count), Some(1));
        // An unraced write is written through.
        let ticket = cache.ticket("a");
        cache.written("a", ticket, Some(&session("a", 4)));
        assert_eq!(cache.get("a").map(|s| s.interaction_count), Some(4));
        // A write whose outcome is unknown evicts.
        let ticket = cache.ticket("a");
        cache.written("a", ticket, None);
        assert_eq!(cache.get("a"), None);
    }

    #[test]
    fn bounded() {
        let cache = SessionCache::new(100);
        cache.set_enabled(true);
        for i in 0..1_000 {
            let id = format!("s{i}");
            let ticket = cache.ticket(&id);
            cache.fill(ticket, &session(&id, i));
        }
        assert!(cache.rows.len() <= 100, "{} rows kept", cache.rows.len());
    }
}
