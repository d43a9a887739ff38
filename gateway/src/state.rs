//! The handles every handler and task shares: [`AppState`].
//!
//! `AppState` is cloned into every request (by each extractor and middleware that takes it), so it is one
//! `Arc` around [`Shared`]: a clone is one atomic increment, where a struct of handles cost one per field and a
//! lock for its cancellation token. Subsystems add their service handle to [`Shared`] (`voice`, `chat`) and
//! construct it in `server::build_state`.
//!
//! It also holds the [`HealthRegistry`]: subsystems register a [`HealthCheck`] for the part they own
//! (storage, text model, realtime upstream) and `GET /health` asks all of them, so the HTTP layer never needs to
//! know how a database or a model is probed.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;

/// Shared state of the running gateway: a handle to [`Shared`], whose fields it derefs to.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What every handler and task of the running gateway shares, through [`AppState`].
pub struct Shared {
    /// The configuration the server was started with; never changes while running.
    pub config: Arc<Config>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server starts shutting down. Long-lived tasks and sessions watch it, tell their
    /// clients, and finish within `config.limits.shutdown_drain`.
    pub shutdown: CancellationToken,
    /// Every task spawned on behalf of the server (connections, sessions, background jobs). The server waits
    /// for it to empty on shutdown, so use `state.tasks.spawn(...)` rather than `tokio::spawn`.
    pub tasks: TaskTracker,
    /// Health checks reported by `GET /health`.
    pub health: Arc<HealthRegistry>,
    /// When the server started; `/health` reports the uptime.
    pub started_at: Instant,
    /// The realtime voice path: session cap, upstream client, local engine, ephemeral secrets.
    pub voice: Arc<crate::voice::VoiceService>,
    /// The chat domain: store, text model, streaming replies.
    pub chat: Arc<crate::chat::ChatService>,
    /// The seed API surfaces' own state: JWT verifier, live chat sockets, rate limiter, IntentLayer audio.
    pub api: Arc<crate::api::ApiService>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .field("shutting_down", &self.shutdown.is_cancelled())
            .field("tasks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

/// How much a failing component matters to the overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthImpact {
    /// The gateway cannot do its job without it (storage): down makes the whole status `unhealthy`.
    Critical,
    /// A part that can be down while the rest works (a model): down makes the status `degraded`.
    Optional,
}

/// Overall status of `GET /health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HealthStatus {
    /// Everything checked is up.
    Ok,
    /// An optional component is down.
    Degraded,
    /// A critical component is down.
    Unhealthy,
}

impl HealthStatus {
    /// The wire value: `ok`, `degraded`, `unhealthy`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// What one check found. Rendered as a JSON object: `{"connected": up, ...details, "error": "..."}`.
#[derive(Debug, Clone, Default)]
pub struct ComponentHealth {
    /// Whether the component works.
    pub up: bool,
    /// Extra fields for the section, e.g. `model`, `models`, `sessions` (seed 003 shapes).
    pub details: Map<String, Value>,
    /// Why it is down; shown to the caller, so keep secrets and internals out of it.
    pub error: Option<String>,
}

impl ComponentHealth {
    /// A working component.
    pub fn up() -> Self {
        ComponentHealth {
            up: true,
            ..Default::default()
        }
    }

    /// A failing component with a reason.
    pub fn down(error: impl Into<String>) -> Self {
        ComponentHealth {
            up: false,
            details: Map::new(),
            error: Some(error.into()),
        }
    }

    /// Adds a detail field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("connected".to_owned(), Value::Bool(self.up));
        for (key, value) in &self.details {
            object.insert(key.clone(), value.clone());
        }
        if let Some(error) = &self.error {
            object.insert("error".to_owned(), Value::String(error.clone()));
        }
        Value::Object(object)
    }
}

/// A component probe. Implemented for `Fn() -> impl Future<Output = ComponentHealth>` closures, so
/// `registry.register("database", HealthImpact::Critical, move || { let store = store.clone(); async move { ... } })`
/// works without a new type.
pub trait HealthCheck: Send + Sync + 'static {
    /// Probes the component. Should be quick; the registry gives up after its timeout.
    fn check(&self) -> Pin<Box<dyn Future<Output = ComponentHealth> + Send + '_>>;
}

impl<F, Fut> HealthCheck for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ComponentHealth> + Send + 'static,
{
    fn check(&self) -> Pin<Box<dyn Future<Output = ComponentHealth> + Send + '_>> {
        Box::pin(self())
    }
}

struct HealthEntry {
    impact: HealthImpact,
    check: Arc<dyn HealthCheck>,
}

/// The health checks of the running gateway, by JSON section name (`database`, `ollama`, `realtime`, ...).
///
/// Sections without a registered check are filled with what the configuration tells (`"checked": false`)
/// and do not affect the status.
pub struct HealthRegistry {
    entries: RwLock<BTreeMap<String, HealthEntry>>,
    known: RwLock<BTreeMap<String, Value>>,
    /// Each check gets this long; a slow check counts as down.
    timeout: Duration,
    /// The last report and when it was made. Load balancers poll `/health` often; within
    /// [`HEALTH_CACHE_TTL`] they get the same answer instead of a new database round trip each.
    cached: Mutex<Option<(Instant, HealthReport)>>,
}

/// How long a health report is reused.
pub const HEALTH_CACHE_TTL: Duration = Duration::from_secs(1);

impl std::fmt::Debug for HealthRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sections: Vec<String> = match self.entries.read() {
            Ok(entries) => entries.keys().cloned().collect(),
            Err(_) => Vec::new(),
        };
        f.debug_struct("HealthRegistry")
            .field("sections", &sections)
            .finish()
    }
}

/// The outcome of asking every check.
#[derive(Debug, Clone)]
pub struct HealthReport {
    /// Overall status.
    pub status: HealthStatus,
    /// One JSON object per section.
    pub sections: BTreeMap<String, Value>,
}

impl HealthRegistry {
    /// An empty registry whose checks each get `timeout`.
    pub fn new(timeout: Duration) -> Self {
        HealthRegistry {
            entries: RwLock::new(BTreeMap::new()),
            known: RwLock::new(BTreeMap::new()),
            timeout,
            cached: Mutex::new(None),
        }
    }

    /// Registers (or replaces) the check for a section.
    pub fn register(
        &self,
        section: impl Into<String>,
        impact: HealthImpact,
        check: impl HealthCheck,
    ) {
        let entry = HealthEntry {
            impact,
            check: Arc::new(check),
        };
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(section.into(), entry);
        *self.cache() = None;
    }

    /// Sets what is known about a section that has no check (yet), e.g. from the configuration.
    pub fn set_known(&self, section: impl Into<String>, value: Value) {
        self.known
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(section.into(), value);
        *self.cache() = None;
    }

    /// Runs every check (see [`HealthRegistry::report_uncached`]), or answers from the cache when the
    /// last report is younger than [`HEALTH_CACHE_TTL`].
    pub async fn report(&self) -> HealthReport {
        if let Some((at, report)) = &*self.cache()
            && at.elapsed() < HEALTH_CACHE_TTL
        {
            return report.clone();
        }
        let report = self.report_uncached().await;
        *self.cache() = Some((Instant::now(), report.clone()));
        report
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Option<(Instant, HealthReport)>> {
        self.cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs every check concurrently, each bounded by the registry timeout.
    pub async fn report_uncached(&self) -> HealthReport {
        // Copy the handles out so no lock is held across the awaits below.
        let checks: Vec<(String, HealthImpact, Arc<dyn HealthCheck>)> = self
            .entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(name, entry)| (name.clone(), entry.impact, Arc::clone(&entry.check)))
            .collect();
        let mut sections: BTreeMap<String, Value> = self
            .known
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();

        let timeout = self.timeout;
        let results = futures_util::future::join_all(checks.into_iter().map(
            |(name, impact, check)| async move {
                let health = match tokio::time::timeout(timeout, check.check()).await {
                    Ok(health) => health,
                    Err(_) => {
                        ComponentHealth::down(format!("health check timed out after {timeout:?}"))
                    }
                };
                (name, impact, health)
            },
        ))
        .await;

        let mut status = HealthStatus::Ok;
        for (name, impact, health) in results {
            if !health.up {
                let this = match impact {
                    HealthImpact::Critical => HealthStatus::Unhealthy,
                    HealthImpact::Optional => HealthStatus::Degraded,
                };
                status = status.max(this);
            }
            sections.insert(name, health.to_json());
        }
        HealthReport { status, sections }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn status_follows_the_worst_failing_impact() {
        let registry = HealthRegistry::new(Duration::from_millis(100));
        registry.set_known("database", serde_json::json!({"checked": false}));
        assert_eq!(registry.report().await.status, HealthStatus::Ok);

        registry.register("ollama", HealthImpact::Optional, || async {
            ComponentHealth::down("refused")
        });
        let report = registry.report().await;
        assert_eq!(report.status, HealthStatus::Degraded);
        assert_eq!(report.sections["ollama"]["connected"], false);
        assert_eq!(report.sections["ollama"]["error"], "refused");

        registry.register("database", HealthImpact::Critical, || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            ComponentHealth::up()
        });
        let report = registry.report().await;
        assert_eq!(report.status, HealthStatus::Unhealthy);
        assert!(
            report.sections["database"]["error"]
                .as_str()
                .unwrap()
                .contains("timed out")
        );

        registry.register("database", HealthImpact::Critical, || async {
            ComponentHealth::up().with("sessions", 3)
        });
        let report = registry.report().await;
        assert_eq!(report.status, HealthStatus::Degraded);
        assert_eq!(
            report.sections["database"],
            serde_json::json!({"connected": true, "sessions": 3})
        );
    }

    #[tokio::test]
    async fn reports_are_cached_briefly_and_registration_invalidates_the_cache() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let registry = HealthRegistry::new(Duration::from_millis(100));
        let counter = Arc::clone(&calls);
        registry.register("database", HealthImpact::Critical, move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { ComponentHealth::up() }
        });
        registry.report().await;
        registry.report().await;
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        registry.register("ollama", HealthImpact::Optional, || async {
            ComponentHealth::down("x")
        });
        assert_eq!(registry.report().await.status, HealthStatus::Degraded);
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
