//! The server: builds the shared state, runs the accept loop, and drains on shutdown.
//!
//! We run our own accept loop over hyper's HTTP/1 connection builder rather than `axum::serve`, because the
//! gateway needs what `axum::serve` does not offer:
//! - a **header read timeout** (slowloris defence; it also bounds idle keep-alive connections),
//! - a cap on open connections **overall** and **per client IP**, counted for the whole life of the socket,
//!   including after a WebSocket upgrade (the count travels with the socket, see `CountedStream`),
//! - `TCP_NODELAY` on every socket (small audio frames must not wait for Nagle),
//! - metrics for open and refused connections,
//! - a bounded drain: on shutdown we stop accepting, ask every connection to finish (hyper graceful
//!   shutdown: in-flight requests complete, idle keep-alive connections close), let subsystems tell their live
//!   sessions (they watch `state.shutdown`), and return after at most `limits.shutdown_drain`.
//!
//! A failing connection is logged and never stops the loop; an accept error (e.g. out of file descriptors)
//! backs off briefly and retries.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use crate::config::Config;
use crate::metrics::{Metrics, labels};
use crate::net::{GATEWAY_STAMP_EVERY, StampedTcp};
use crate::state::{AppState, HealthRegistry};

/// How long one health check may take before `/health` reports it as down.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds `config.http_addr` and runs until SIGTERM or ctrl-c, then drains. This is what the binary runs.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("failed to bind {}", config.http_addr))?;
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    // Not tracked: it only waits for a signal and must not hold up the drain.
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown_signal() => {
                tracing::info!("shutdown signal received, draining");
                signal_token.cancel();
            }
            () = signal_token.cancelled() => {}
        }
    });
    run(config, listener, shutdown).await
}

/// Resolves on SIGTERM or ctrl-c (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Builds the state and serves `listener` until `shutdown` is cancelled, then drains and returns `Ok`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = build_state(config, shutdown, TaskTracker::new()).await?;
    run_with_state(state, listener).await
}

/// Builds [`AppState`]: creates the data directory, the metrics and health registries, and every subsystem
/// service.
pub async fn build_state(
    config: Config,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> anyhow::Result<AppState> {
    tokio::fs::create_dir_all(&config.data_dir)
        .await
        .with_context(|| {
            format!(
                "failed to create data directory {}",
                config.data_dir.display()
            )
        })?;
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(HealthRegistry::new(HEALTH_CHECK_TIMEOUT));
    describe_unchecked_components(&health, &config);

    // Subsystem services. Each owner adds its constructor here and its field in `AppState`, e.g.
    //   let voice = Arc::new(crate::voice::VoiceService::new(&config, Arc::clone(&metrics))?);
    //   let chat = Arc::new(crate::chat::ChatService::connect(&config, Arc::clone(&metrics)).await?);
    // and registers its health checks: `health.register("database", HealthImpact::Critical, ...)`.

    let voice = Arc::new(crate::voice::VoiceService::new(
        &config,
        Arc::clone(&metrics),
    )?);
    voice.register_health(&health);
    let chat = Arc::new(crate::chat::ChatService::connect(&config, Arc::clone(&metrics)).await?);
    chat.register_health(&health);
    let api = Arc::new(crate::api::ApiService::new(&config, &metrics)?);

    Ok(AppState::new(crate::state::Shared {
        config,
        metrics,
        shutdown,
        tasks,
        health,
        started_at: Instant::now(),
        voice,
        chat,
        api,
    }))
}

/// What the configuration tells about components before (or without) a registered health check.
fn describe_unchecked_components(health: &HealthRegistry, config: &Config) {
    let backend = match config.database_url().as_str().split(':').next() {
        Some("postgres" | "postgresql") => "postgres",
        _ => "sqlite",
    };
    health.set_known("database", json!({ "backend": backend, "checked": false }));
    let (kind, model) = match &config.chat.llm_url {
        Some(_) => (labels::MODEL_OPENAI_COMPAT, config.chat.llm_model.as_str()),
        None => (labels::MODEL_LOCAL, "local"),
    };
    // Seed 003 names its text model section `ollama`; its clients read that key.
    health.set_known(
        "ollama",
        json!({ "kind": kind, "model": model, "checked": false }),
    );
    let kind = if config.voice.realtime_url.is_some() {
        labels::MODEL_OPENAI_COMPAT
    } else {
        labels::MODEL_LOCAL
    };
    health.set_known(
        "realtime",
        json!({ "kind": kind, "model": config.voice.realtime_model, "checked": false }),
    );
}

/// Serves `listener` with an already built state until `state.shutdown` is cancelled, then drains.
pub async fn run_with_state(state: AppState, listener: TcpListener) -> anyhow::Result<()> {
    if state.config.chat.jwt_secret_ephemeral {
        tracing::warn!(
            "VOXGATE_JWT_SECRET is not set: using a random per-process secret; chatbot tokens will not survive a restart"
        );
    }
    let app = crate::http::app(state.clone());
    // API housekeeping (IntentLayer session expiry, audio orphans); tracked by `state.tasks`.
    crate::api::spawn_background(&state);
    run_with_router(state, listener, app).await
}

/// The accept loop and drain for any router: what [`run_with_state`] does with [`crate::http::app`].
/// Public so tests can put an extra route (e.g. a WebSocket echo) behind the real transport limits.
#[doc(hidden)]
pub async fn run_with_router(
    state: AppState,
    listener: TcpListener,
    app: Router,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("listener has no local address")?;
    tracing::info!("listening on http://{addr}");

    let limits = Arc::new(ConnectionLimits::new(&state));
    // Forced close of connections still open when the drain time is up.
    let force_close = CancellationToken::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.limits.header_timeout)
        // A request head (start line and headers) over 32 KiB gets 431 and a close: ample for real clients
        // (cookies and tokens included), and it bounds what one connection can make us buffer.
        .max_header_size(32 * 1024)
        .keep_alive(true);
    let builder = Arc::new(builder);

    accept_loop(&listener, &state, &limits, &app, &builder, &force_close).await;
    drop(listener);

    // Drain: connections got `graceful_shutdown` from their own tasks when the token was cancelled;
    // subsystems saw the same token and are closing their sessions.
    let drain = state.config.limits.shutdown_drain;
    state.tasks.close();
    let started = Instant::now();
    if tokio::time::timeout(drain, state.tasks.wait())
        .await
        .is_ok()
    {
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "drained, shutting down"
        );
    } else {
        tracing::warn!(
            remaining_tasks = state.tasks.len(),
            "drain time ({drain:?}) is up; closing the remaining connections"
        );
        force_close.cancel();
        // Connection tasks end as soon as they see `force_close`; other tasks were told long ago.
        let _ = tokio::time::timeout(Duration::from_millis(200), state.tasks.wait()).await;
    }
    // The store last: its writers record the turns already queued, then the pools close (SQLite checkpoints).
    if tokio::time::timeout(drain, state.chat.store().close())
        .await
        .is_err()
    {
        tracing::warn!("the store did not close within {drain:?}");
    }
    Ok(())
}

async fn accept_loop(
    listener: &TcpListener,
    state: &AppState,
    limits: &Arc<ConnectionLimits>,
    app: &Router,
    builder: &Arc<http1::Builder>,
    force_close: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            biased;
            () = state.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff = Duration::from_millis(5);
                accepted
            }
            Err(err) if is_per_connection_error(&err) => {
                tracing::debug!(%err, "accept failed for one connection");
                continue;
            }
            Err(err) => {
                // Typically EMFILE/ENFILE: back off so we do not spin, and keep serving what is open.
                tracing::warn!(%err, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    () = state.shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };

        let guard = match limits.try_admit(peer.ip().to_canonical()) {
            Ok(guard) => guard,
            Err(reason) => {
                state
                    .metrics
                    .connections_rejected_total
                    .with_label_values(&[reason])
                    .inc();
                tracing::debug!(%peer, reason, "connection refused");
                refuse(stream);
                continue;
            }
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, %peer, "cannot set TCP_NODELAY");
        }
        let stream = CountedStream {
            inner: StampedTcp::sampled(stream, GATEWAY_STAMP_EVERY),
            _guard: guard,
        };
        let span = tracing::info_span!("conn", %peer);
        state.tasks.spawn(
            serve_connection(
                stream,
                peer,
                Arc::clone(builder),
                app.clone(),
                state.shutdown.clone(),
                force_close.clone(),
            )
            .instrument(span),
        );
    }
}

/// Errors that concern only the connection being accepted (it was reset before we got it).
fn is_per_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Best effort 503 on a refused connection, without awaiting: a fresh socket's send buffer is empty, so the
/// write normally completes at once; if not, the peer just sees the close. Never blocks the accept loop.
fn refuse(stream: TcpStream) {
    static RESPONSE: LazyLock<Vec<u8>> = LazyLock::new(|| {
        let body = r#"{"type":"urn:voxgate:problem:unavailable","title":"Service Unavailable","status":503,"detail":"too many connections"}"#;
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nconnection: close\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    });
    let _ = stream.try_write(&RESPONSE);
    drop(stream);
}

async fn serve_connection(
    stream: CountedStream,
    peer: SocketAddr,
    builder: Arc<http1::Builder>,
    app: Router,
    shutdown: CancellationToken,
    force_close: CancellationToken,
) {
    // Handlers can extract `ConnectInfo<SocketAddr>` (per-IP rate limits) as with `axum::serve`, and the
    // connection's `ArrivalClock` (when the kernel received what was last read: the voice relay's latency).
    let arrivals = stream.inner.clock();
    let service = app.map_request(move |mut request: http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(arrivals.clone());
        request
    });
    let connection = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            // Finish the request in flight (if any), then close; idle connections close at once.
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection.as_mut() => result,
                () = force_close.cancelled() => {
                    tracing::debug!("connection closed at the end of the drain");
                    return;
                }
            }
        }
    };
    if let Err(err) = result {
        // Client-side trouble (header timeout, reset, malformed request) is routine on the internet.
        tracing::debug!(error = %err, timeout = err.is_timeout(), "connection ended with an error");
    }
}

/// Counts open connections overall (semaphore) and per client IP (map), and refuses past the caps.
struct ConnectionLimits {
    overall: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl ConnectionLimits {
    fn new(state: &AppState) -> Self {
        ConnectionLimits {
            overall: Arc::new(Semaphore::new(state.config.limits.max_connections)),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: state.config.limits.max_connections_per_ip,
            metrics: Arc::clone(&state.metrics),
            shutdown: state.shutdown.clone(),
        }
    }

    /// Admits a connection from `ip`, or names the reason (a `connections_rejected_total` label) it is refused.
    fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionGuard, &'static str> {
        if self.shutdown.is_cancelled() {
            return Err(labels::CONN_REJECT_SHUTTING_DOWN);
        }
        let permit = Arc::clone(&self.overall)
            .try_acquire_owned()
            .map_err(|_| labels::CONN_REJECT_MAX_CONNECTIONS)?;
        {
            let mut per_ip = self
                .per_ip
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let count = per_ip.entry(ip).or_insert(0);
            if *count >= self.max_per_ip {
                return Err(labels::CONN_REJECT_PER_IP);
            }
            *count += 1;
        }
        self.metrics.connections_open.inc();
        Ok(ConnectionGuard {
            limits: Arc::clone(self),
            ip,
            _permit: permit,
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut per_ip = self
            .per_ip
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                // Forget idle addresses so the map does not grow with every client ever seen.
                per_ip.remove(&ip);
            }
        }
        drop(per_ip);
        self.metrics.connections_open.dec();
    }
}

/// One admitted connection; releasing it (on drop) frees its slot overall and for its IP.
struct ConnectionGuard {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.limits.release(self.ip);
    }
}

/// A TCP stream that holds its connection slot. Hyper hands the stream over to the WebSocket on upgrade, so
/// the slot stays taken until the socket itself is dropped, however long the session lasts.
struct CountedStream {
    inner: StampedTcp,
    _guard: ConnectionGuard,
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
