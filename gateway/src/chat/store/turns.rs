//! Group commit of chat turns ([`super::Store::record_turn`]).
//!
//! Every turn goes to ONE writer task per store through a bounded queue. The task blocks for the first turn, then
//! takes whatever else is already queued (up to the backend's `MAX_TURNS_PER_COMMIT`; no timer, so an idle
//! store adds no latency), and records them in ONE transaction: set-based first (one statement touches every
//! session of the batch, one inserts every message), and if that fails, turn by turn with a savepoint per turn,
//! so that a turn whose session has no conversation, whose builder panics or whose row the database refuses
//! rolls back alone ([`TurnBatches`] counts both ways). After the single COMMIT it answers each caller through
//! a oneshot, so a turn is acknowledged only once the commit that contains it has returned (the durability
//! contract). If the transaction fails, every turn of the batch gets the error and nothing of it is stored.
//!
//! Why: a turn is a handful of small statements, but its commit is the costly part (SQLite writes the changed
//! pages to the WAL; PostgreSQL flushes its WAL with `synchronous_commit = on`), and SQLite admits one writer at
//! a time anyway. Under load, N concurrent turns now share one commit instead of queueing for N.
//!
//! SQLite has one writer task (it has one writer connection), on a thread of its own ([`spawn_on_own_thread`]). PostgreSQL has a few
//! ([`super::PgStore::TURN_WRITERS`], or [`super::Store::with_turn_writers`]): there a batch's time goes into round trips, not into its commit, so
//! batches on separate connections overlap. A session's turns always go to the same writer (chosen by a hash of
//! its id), so they stay in submission order and no two batches ever lock the same session row. Two sessions of
//! one conversation on different writers could still make two batches wait on each other's conversation rows;
//! PostgreSQL then aborts one of them (a deadlock error for its turns). IntentLayer sessions, the users of
//! `record_turn`, each have a conversation of their own.
//!
//! A turn submitted and then abandoned by its caller (the HTTP client went away) is still recorded: once queued
//! it is the writer's, as it would be once its transaction had been sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::cache::SessionCache;
use super::{Backend, StoreError, StoreResult};
use crate::chat::domain::{Message, NewMessage, Session};

/// Builds a turn's messages from the touched session (inside the turn's transaction).
pub(super) type BuildMessages = Box<dyn FnOnce(&Session) -> Vec<NewMessage> + Send>;
/// What [`super::Store::record_turn`] answers.
pub(super) type TurnOutcome = StoreResult<Option<(Session, Vec<Message>)>>;

/// How many group commits of chat turns a store has made since it was opened, by the way they were recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnBatches {
    /// Batches recorded with a few set-based statements for the whole batch (the usual way).
    pub set_based: u64,
    /// Batches recorded turn by turn, each in its own savepoint, after the set-based way failed (a turn that
    /// cannot be recorded: its session has no conversation, its builder panicked, the database refused a row).
    pub turn_by_turn: u64,
}

/// The counts behind [`TurnBatches`], shared by a store's writers.
#[derive(Debug, Default)]
pub(super) struct TurnBatchCounters {
    set_based: AtomicU64,
    turn_by_turn: AtomicU64,
}

impl TurnBatchCounters {
    pub(super) fn get(&self) -> TurnBatches {
        TurnBatches {
            set_based: self.set_based.load(Ordering::Relaxed),
            turn_by_turn: self.turn_by_turn.load(Ordering::Relaxed),
        }
    }
}

/// Turns that may wait for the writer; past this, `record_turn` waits to enqueue (backpressure).
const QUEUE_CAPACITY: usize = 1024;

/// One turn as the backend records it.
pub(super) struct TurnJob {
    pub(super) session_id: String,
    pub(super) ttl: Option<Duration>,
    /// Taken (called once) by the first attempt that touches the session; `None` afterwards.
    build: Option<BuildMessages>,
    /// The session `build` was given and what it returned (`None`: it panicked). A builder runs once, so when
    /// the set-based attempt fails after building, the per-turn retry reuses this.
    built: Option<(Session, Option<Vec<NewMessage>>)>,
}

impl TurnJob {
    pub(super) fn new(session_id: String, ttl: Option<Duration>, build: BuildMessages) -> TurnJob {
        TurnJob {
            session_id,
            ttl,
            build: Some(build),
            built: None,
        }
    }

    /// The turn's messages for `session` (the touched session as this turn sees it), built on first use.
    ///
    /// The builder is the caller's code running on the writer task: a panic in it fails its turn (an error),
    /// not the writer and every later turn. A retry that touches the session into another state than the one
    /// the messages were built from (another writer changed it in between) cannot rebuild them and fails the
    /// turn rather than store messages that describe a state that never was.
    pub(super) fn messages_for(&mut self, session: &Session) -> StoreResult<&[NewMessage]> {
        if let Some(build) = self.build.take() {
            let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(session)));
            self.built = Some((session.clone(), built.ok()));
        }
        match &self.built {
            Some((from, Some(messages))) if from == session => Ok(messages),
            Some((from, None)) if from == session => Err(StoreError::Invalid {
                field: "messages",
                reason: "building the turn's messages panicked".to_owned(),
            }),
            Some(_) => Err(StoreError::Invalid {
                field: "messages",
                reason:
                    "the session changed between the turn's messages being built and their retry"
                        .to_owned(),
            }),
            None => Err(StoreError::Corrupt("a turn without messages".to_owned())),
        }
    }

    /// The built messages, taken once the batch that holds them is stored: no retry follows, so they move into
    /// the stored messages instead of being copied. Empty if they were never built.
    pub(super) fn take_messages(&mut self) -> Vec<NewMessage> {
        match &mut self.built {
            Some((_, Some(messages))) => std::mem::take(messages),
            _ => Vec::new(),
        }
    }
}

struct Queued {
    job: TurnJob,
    reply: oneshot::Sender<TurnOutcome>,
}

/// The sending sides of the writer tasks' queues.
#[derive(Debug)]
pub(super) struct TurnQueue {
    writers: Vec<mpsc::Sender<Queued>>,
}

impl TurnQueue {
    /// Spawns the writer tasks of `backend`. They stop when `stop` is cancelled (after recording what was
    /// already queued) or when the [`TurnQueue`] is dropped.
    pub(super) fn start(
        backend: &Backend,
        writers: usize,
        cache: &Arc<SessionCache>,
        counters: &Arc<TurnBatchCounters>,
        stop: &CancellationToken,
    ) -> (TurnQueue, Vec<JoinHandle<()>>) {
        let (writers, tasks) = (0..writers.max(1))
            .map(|_| {
                let (queue, turns) = mpsc::channel(QUEUE_CAPACITY);
                let writer = run_writer(
                    backend.clone(),
                    cache.clone(),
                    counters.clone(),
                    turns,
                    stop.clone(),
                );
                let task = match backend {
                    Backend::Sqlite(_) => spawn_on_own_thread(writer),
                    Backend::Postgres(_) => tokio::spawn(writer),
                };
                (queue, task)
            })
            .unzip();
        (TurnQueue { writers }, tasks)
    }

    /// Queues `job` and waits for its commit.
    pub(super) async fn submit(&self, job: TurnJob) -> TurnOutcome {
        let (reply, answer) = oneshot::channel();
        let writer = &self.writers[writer_of(&job.session_id, self.writers.len())];
        writer
            .send(Queued { job, reply })
            .await
            // The writer stopped: the store was closed.
            .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        answer
            .await
            // The writer dropped the turn without answering: it ended abnormally.
            .map_err(|_| StoreError::Database(sqlx::Error::WorkerCrashed))?
    }
}

/// Runs a SQLite writer on a thread of its own: a current-thread runtime on a blocking-pool thread.
///
/// Every statement of a batch is a round trip to sqlx's connection thread, and the writer's next step waits for
/// its task to be polled again. On the server's runtime that task queued behind the HTTP requests whose turns it
/// was about to commit; on its own thread it runs as soon as the answer is there. Measured with the chat POST
/// (`scripts/bench-http`, SQLite, back to back): 11.8k and 12.6k req/s before, 14.9k and 15.4k after. (SQLite
/// only: sqlx's SQLite connections are runtime-agnostic threads, while a PostgreSQL connection's socket belongs
/// to the runtime that opened it, and the pool shares it with the handlers.)
fn spawn_on_own_thread(writer: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(writer),
            // The queue's receiver goes with `writer`: every turn then fails as with a closed store.
            Err(error) => tracing::error!(%error, "cannot start the chat turn writer's runtime"),
        }
    })
}

/// The writer of a session's turns: a fixed hash, so it never changes while the store runs.
fn writer_of(session_id: &str, writers: usize) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(session_id);
    (hash % writers as u64) as usize
}

async fn run_writer(
    backend: Backend,
    cache: Arc<SessionCache>,
    counters: Arc<TurnBatchCounters>,
    mut turns: mpsc::Receiver<Queued>,
    stop: CancellationToken,
) {
    let max = backend.max_turns_per_commit();
    let mut batch = Vec::with_capacity(max);
    let mut stopping = false;
    loop {
        let first = if stopping {
            turns.recv().await
        } else {
            tokio::select! {
                biased;
                turn = turns.recv() => turn,
                () = stop.cancelled() => {
                    // Refuse new turns, then record the ones already queued before ending.
                    turns.close();
                    stopping = true;
                    continue;
                }
            }
        };
        let Some(first) = first else {
            break;
        };
        batch.push(first);
        while batch.len() < max {
            match turns.try_recv() {
                Ok(turn) => batch.push(turn),
                Err(_) => break,
            }
        }
        commit_batch(&backend, &cache, &counters, &mut batch).await;
    }
}

/// Records `batch` in one transaction and answers every turn of it; leaves `batch` empty.
async fn commit_batch(
    backend: &Backend,
    cache: &SessionCache,
    counters: &TurnBatchCounters,
    batch: &mut Vec<Queued>,
) {
    let (mut jobs, replies): (Vec<TurnJob>, Vec<_>) = batch
        .drain(..)
        .map(|queued| (queued.job, queued.reply))
        .unzip();
    // Taken before the commit, so a write that commits after this one can never be overwritten by it.
    let tickets: Vec<_> = jobs
        .iter()
        .map(|job| cache.ticket(&job.session_id))
        .collect();
    let started = std::time::Instant::now();
    let result = match backend {
        Backend::Sqlite(store) => store.record_turns(&mut jobs).await,
        Backend::Postgres(store) => store.record_turns(&mut jobs).await,
    };
    tracing::debug!(
        turns = jobs.len(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "group commit"
    );
    match result {
        Ok((outcomes, set_based)) => {
            let counter = if set_based {
                &counters.set_based
            } else {
                &counters.turn_by_turn
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let written: Vec<_> = jobs
                .iter()
                .zip(&tickets)
                .zip(&outcomes)
                .map(|((job, ticket), outcome)| {
                    let row = match outcome {
                        Ok(Some((session, _))) => Some(session),
                        _ => None,
                    };
                    (job.session_id.as_str(), *ticket, row)
                })
                .collect();
            cache.written_many(&written);
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller that went away no longer needs its answer; its turn is stored all the same.
                let _ = reply.send(outcome);
            }
        }
        Err(error) => {
            // Nothing of the batch is stored, unless the commit went through and only its answer was lost.
            let written: Vec<_> = jobs
                .iter()
                .zip(&tickets)
                .map(|(job, ticket)| (job.session_id.as_str(), *ticket, None))
                .collect();
            cache.written_many(&written);
            let error = Arc::new(error);
            for reply in replies {
                let _ = reply.send(Err(StoreError::GroupCommit(error.clone())));
            }
        }
    }
}
