//! A loopback OpenAI Realtime server for tests: the real local engine on `127.0.0.1:0`, plus
//! faults on command (drop mid-response, `session_expired`, arbitrary errors, refused
//! handshakes) and a record of every client event it received.
//!
//! It runs its own small accept loop on a plain `TcpListener` (no axum, no gateway), so a test can
//! point a gateway's `voice.realtime_url` at [`FaultyServer::url`] and drive the upstream's
//! behaviour from outside.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::driver::{self, Fault, Hooks};
use super::{LocalEngineConfig, LocalEngineServer};
use crate::voice::protocol::openai::{ClientEvent, ServerEvent};

/// A client event as the server received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// Which connection (0 for the first accepted, 1 for the next, ...).
    pub conn: usize,
    /// The event.
    pub event: ClientEvent,
}

#[derive(Default)]
struct Record {
    events: Mutex<Vec<Received>>,
    changed: Notify,
}

/// The real engine on a loopback port, misbehaving on command. Dropping it stops everything.
pub struct FaultyServer {
    addr: SocketAddr,
    record: Arc<Record>,
    faults: broadcast::Sender<Fault>,
    close_mid_response: Arc<AtomicBool>,
    /// 0 accepts handshakes; any other value is the HTTP status handshakes are refused with.
    reject_status: Arc<AtomicU16>,
    connections: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl std::fmt::Debug for FaultyServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FaultyServer {
    /// Starts the engine built from `config` on `127.0.0.1:0`. No authentication is checked.
    ///
    /// # Panics
    /// If no loopback port can be bound (a broken test machine).
    pub async fn start(config: LocalEngineConfig) -> FaultyServer {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound address");
        let engine = LocalEngineServer::new(config);
        let (faults, _) = broadcast::channel(64);
        let server = FaultyServer {
            addr,
            record: Arc::new(Record::default()),
            faults,
            close_mid_response: Arc::new(AtomicBool::new(false)),
            reject_status: Arc::new(AtomicU16::new(0)),
            connections: Arc::new(AtomicUsize::new(0)),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let accept = AcceptLoop {
            listener,
            engine,
            record: Arc::clone(&server.record),
            faults: server.faults.clone(),
            close_mid_response: Arc::clone(&server.close_mid_response),
            reject_status: Arc::clone(&server.reject_status),
            connections: Arc::clone(&server.connections),
            shutdown: server.shutdown.clone(),
            tasks: server.tasks.clone(),
        };
        server.tasks.spawn(accept.run());
        server
    }

    /// `ws://127.0.0.1:PORT/v1/realtime`.
    pub fn url(&self) -> String {
        format!("ws://{}/v1/realtime", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// WebSocket sessions accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every client event received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.record
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until a received event matches `pred` (including ones already received); `None`
    /// after `timeout`.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&Received) -> bool,
        timeout: Duration,
    ) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.record.changed.notified();
            if let Some(found) = self.received().into_iter().find(|r| pred(r)) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// Arms a crash: the next audio delta any connection sends is its last, and the TCP
    /// connection is then dropped without a close frame.
    pub fn close_mid_response(&self) {
        self.close_mid_response.store(true, Ordering::SeqCst);
    }

    /// Drops every live connection now, without a close frame.
    pub fn close_all(&self) {
        let _ = self.faults.send(Fault::Drop);
    }

    /// Sends `error` with code `session_expired` to every live connection and closes it, as
    /// OpenAI does when a session reaches its maximum duration.
    pub fn expire_session(&self) {
        let event = ServerEvent::error(
            "invalid_request_error",
            Some("session_expired"),
            "Your session hit the maximum duration of 60 minutes.",
            None,
            None,
        );
        let _ = self.faults.send(Fault::SendAndClose(event));
    }

    /// Sends an `error` event with `code` to every live connection (which stays open).
    pub fn send_error(&self, code: &str, message: &str) {
        let event = ServerEvent::error("invalid_request_error", Some(code), message, None, None);
        let _ = self.faults.send(Fault::Send(event));
    }

    /// Sends any event to every live connection.
    pub fn inject(&self, event: ServerEvent) {
        let _ = self.faults.send(Fault::Send(event));
    }

    /// Refuses the following WebSocket handshakes with HTTP `status` (401 for a bad key).
    pub fn reject_handshakes(&self, status: u16) {
        self.reject_status.store(status, Ordering::SeqCst);
    }

    /// Accepts handshakes again.
    pub fn accept_handshakes(&self) {
        self.reject_status.store(0, Ordering::SeqCst);
    }

    /// Stops accepting, closes every connection and waits for the tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for FaultyServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

struct AcceptLoop {
    listener: TcpListener,
    engine: LocalEngineServer,
    record: Arc<Record>,
    faults: broadcast::Sender<Fault>,
    close_mid_response: Arc<AtomicBool>,
    reject_status: Arc<AtomicU16>,
    connections: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl AcceptLoop {
    async fn run(self) {
        loop {
            let stream = tokio::select! {
                () = self.shutdown.cancelled() => return,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "testkit accept failed");
                        continue;
                    }
                },
            };
            let reject = self.reject_status.load(Ordering::SeqCst);
            let shared = Arc::clone(&self.engine.shared);
            let record = Arc::clone(&self.record);
            let faults = self.faults.subscribe();
            let close_mid_response = Arc::clone(&self.close_mid_response);
            let connections = Arc::clone(&self.connections);
            let shutdown = self.shutdown.clone();
            self.tasks.spawn(async move {
                // The callback's signature is tungstenite's; its error type is large by design.
                #[allow(clippy::result_large_err)]
                let callback = |_request: &Request, response: Response| -> Result<Response, ErrorResponse> {
                    if reject == 0 {
                        return Ok(response);
                    }
                    let mut refused = ErrorResponse::new(Some(
                        r#"{"error":{"type":"invalid_request_error","code":"invalid_api_key","message":"Incorrect API key provided."}}"#
                            .to_owned(),
                    ));
                    *refused.status_mut() = StatusCode::from_u16(reject).unwrap_or(StatusCode::UNAUTHORIZED);
                    Err(refused)
                };
                let config = shared.ws;
                let ws = match tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await {
                    Ok(ws) => ws,
                    Err(e) => {
                        tracing::debug!(error = %e, "testkit handshake ended");
                        return;
                    }
                };
                let conn = connections.fetch_add(1, Ordering::SeqCst);
                let hooks = Hooks {
                    record: Some(Arc::new(move |event: &ClientEvent| {
                        let mut events = record.events.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        events.push(Received { conn, event: event.clone() });
                        drop(events);
                        record.changed.notify_waiters();
                    })),
                    faults: Some(faults),
                    close_mid_response: Some(close_mid_response),
                };
                let settings = shared.settings.clone();
                driver::serve(ws, shared, settings, shutdown, hooks).await;
            });
        }
    }
}
