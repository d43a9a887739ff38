//! One voice session: the actor that owns the decision core and the upstream connection.
//!
//! The client transport hands the session a stream of [`Inbound`] messages, polled in the session's own task
//! (no queue between them: while the session waits, for example on an upstream send, the client socket is not
//! read and TCP pushes back on the client), and writes whatever the session puts in its [`Outbox`]. The actor turns inbound messages, upstream events, timers
//! and shutdown into [`Event`]s for [`SessionCore`] and carries out the [`Action`]s it returns:
//! this task only moves data; every decision is in [`core`].

pub mod convert;
pub mod core;
pub mod metrics;
pub mod outbox;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use self::core::{Action, Event, SessionConfig, SessionCore, UpstreamCommand};
use self::metrics::SessionMetrics;
use self::outbox::{BotAudio, Outbox};
use crate::voice::upstream::openai::{
    ConnectError, Decoded, Incoming, UpstreamClient, UpstreamConnection,
};

/// A message from the client, as the transport read it.
#[derive(Debug)]
pub enum Inbound {
    /// A text frame.
    Text(String),
    /// A binary frame and when it reached the socket (for the relay latency metric).
    Audio {
        /// The frame.
        data: Bytes,
        /// When the kernel received it ([`crate::net::ArrivalClock`]); `None` for an undated read, which the
        /// relay latency histogram leaves out (it samples).
        arrived_at: Option<Instant>,
    },
}

/// What a session needs from its service.
#[derive(Debug, Clone)]
pub struct SessionContext {
    /// Session id for logs.
    pub id: String,
    /// Decision tuning.
    pub config: SessionConfig,
    /// Metric handles.
    pub metrics: SessionMetrics,
    /// The upstream endpoint.
    pub upstream: Arc<UpstreamClient>,
    /// Server shutdown.
    pub shutdown: CancellationToken,
    /// Keepalive period for the upstream; two silent periods mean it is dead.
    pub ping_interval: Duration,
    /// How long to wait for the upstream's close reply.
    pub close_timeout: Duration,
    /// Where the session spawns its helper tasks (polite upstream closes), so shutdown waits.
    pub tasks: tokio_util::task::TaskTracker,
    /// Where connect outcomes are recorded for `GET /health`.
    pub upstream_health: Arc<crate::voice::UpstreamHealth>,
}

type Connecting = Pin<Box<dyn Future<Output = Result<UpstreamConnection, ConnectError>> + Send>>;

/// Runs the session until the client goes away (`inbound` ends) or the session closes it; logs the usage at
/// the end.
pub async fn run<S>(ctx: SessionContext, inbound: &mut S, outbox: Arc<Outbox>)
where
    S: Stream<Item = Inbound> + Unpin,
{
    let span = tracing::info_span!("voice_session", session_id = %ctx.id);
    Actor::new(ctx, outbox).run(inbound).instrument(span).await;
}

struct Actor {
    ctx: SessionContext,
    core: SessionCore,
    outbox: Arc<Outbox>,
    upstream: Option<UpstreamConnection>,
    connecting: Option<Connecting>,
    /// When the last client frame arrived, for the inbound relay latency.
    last_arrived_at: Option<Instant>,
    /// When the upstream message being handled arrived, for the outbound relay latency.
    pending_arrived_at: Option<Instant>,
    /// When the upstream last showed signs of life, and whether a ping is outstanding.
    upstream_seen: Instant,
    upstream_pinged: bool,
    shutdown_seen: bool,
}

impl Actor {
    fn new(ctx: SessionContext, outbox: Arc<Outbox>) -> Self {
        let now = Instant::now();
        let core = SessionCore::new(ctx.config.clone(), ctx.metrics.clone(), now, rand::random());
        Actor {
            ctx,
            core,
            outbox,
            upstream: None,
            connecting: None,
            last_arrived_at: None,
            pending_arrived_at: None,
            upstream_seen: now,
            upstream_pinged: false,
            shutdown_seen: false,
        }
    }

    async fn run<S>(mut self, inbound: &mut S)
    where
        S: Stream<Item = Inbound> + Unpin,
    {
        let started = Instant::now();
        self.ctx.metrics.active_sessions.inc();
        let mut keepalive = tokio::time::interval(self.ctx.ping_interval);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.reset();
        // Long-lived timer and shutdown futures: re-creating them per frame would register and
        // deregister them with the runtime on every relayed message.
        let shutdown = self.ctx.shutdown.clone().cancelled_owned();
        tokio::pin!(shutdown);
        let timer = tokio::time::sleep(Duration::from_secs(3_600));
        tokio::pin!(timer);
        let mut armed: Option<tokio::time::Instant> = None;
        loop {
            self.execute_actions().await;
            if self.core.is_closed() {
                break;
            }
            // The idle deadline moves with every frame; a timer armed earlier than needed just
            // fires, finds nothing due, and is re-armed. So only an earlier deadline resets it.
            let deadline = self
                .core
                .next_deadline()
                .map(tokio::time::Instant::from_std);
            if let Some(deadline) = deadline
                && armed.is_none_or(|at| deadline < at)
            {
                timer.as_mut().reset(deadline);
                armed = Some(deadline);
            }
            tokio::select! {
                biased;
                () = &mut shutdown, if !self.shutdown_seen => {
                    self.shutdown_seen = true;
                    self.core.handle(Event::Shutdown, Instant::now());
                }
                message = inbound.next() => match message {
                    Some(Inbound::Text(text)) => self.core.handle(Event::ClientText(&text), Instant::now()),
                    Some(Inbound::Audio { data, arrived_at }) => {
                        self.ctx.metrics.frames_in.inc();
                        self.ctx.metrics.bytes_in.inc_by(data.len() as u64);
                        self.last_arrived_at = arrived_at;
                        self.core.handle(Event::ClientAudio(data), Instant::now());
                    }
                    None => {
                        tracing::debug!("client gone");
                        break;
                    }
                },
                incoming = recv_upstream(&mut self.upstream) => self.on_upstream(incoming),
                result = poll_connecting(&mut self.connecting) => self.on_connected(result),
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.core.handle(Event::Timer, Instant::now());
                }
                _ = keepalive.tick() => self.keepalive().await,
            }
        }
        if let Some(connection) = self.upstream.take() {
            connection.close(self.ctx.close_timeout).await;
        }
        self.ctx.metrics.active_sessions.dec();
        let usage = self.core.usage();
        tracing::info!(
            duration_s = started.elapsed().as_secs_f64(),
            total_tokens = usage.total_tokens,
            input_tokens = usage.input_tokens,
            output_tokens = usage.output_tokens,
            input_audio_tokens = usage.input_token_details.audio_tokens,
            output_audio_tokens = usage.output_token_details.audio_tokens,
            "voice session ended"
        );
    }

    fn on_upstream(&mut self, incoming: Incoming) {
        let now = Instant::now();
        self.upstream_seen = now;
        self.upstream_pinged = false;
        match incoming {
            Incoming::Text(text) => {
                let decoded = Decoded::parse(text.as_str());
                if let Decoded::Malformed(reason) = &decoded {
                    tracing::warn!(%reason, "malformed upstream event skipped");
                }
                // Audio this event produces is stamped with its arrival (relay latency).
                self.pending_arrived_at = self
                    .upstream
                    .as_ref()
                    .map_or(Some(now), UpstreamConnection::arrived_at);
                self.core.handle(Event::Model(decoded.event()), now);
            }
            Incoming::Other => {}
            Incoming::Closed(reason) => {
                self.upstream = None;
                self.core
                    .handle(Event::UpstreamClosed { reason: &reason }, now);
            }
        }
    }

    fn on_connected(&mut self, result: Result<UpstreamConnection, ConnectError>) {
        let now = Instant::now();
        match result {
            Ok(connection) => {
                self.ctx.metrics.upstream_connects.inc();
                self.ctx.upstream_health.connected();
                self.upstream = Some(connection);
                self.upstream_seen = now;
                self.upstream_pinged = false;
                self.core.handle(Event::UpstreamConnected, now);
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::warn!(%reason, "upstream connect failed");
                self.ctx.upstream_health.failed(&reason);
                self.core.handle(
                    Event::UpstreamConnectFailed {
                        fatal: error.is_fatal(),
                        reason: &reason,
                    },
                    now,
                );
            }
        }
    }

    async fn keepalive(&mut self) {
        let Some(connection) = self.upstream.as_mut() else {
            return;
        };
        if self.upstream_seen.elapsed() < self.ctx.ping_interval {
            return;
        }
        if self.upstream_pinged {
            self.upstream = None;
            self.core.handle(
                Event::UpstreamClosed {
                    reason: "upstream stopped answering pings",
                },
                Instant::now(),
            );
            return;
        }
        self.upstream_pinged = true;
        if let Err(error) = connection.ping().await {
            let reason = format!("upstream ping failed: {error}");
            self.upstream = None;
            self.core
                .handle(Event::UpstreamClosed { reason: &reason }, Instant::now());
        }
    }

    async fn execute_actions(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Upstream(command) => self.send_upstream(command).await,
                Action::ConnectUpstream { delay } => {
                    let client = Arc::clone(&self.ctx.upstream);
                    let tasks = self.ctx.tasks.clone();
                    self.connecting = Some(Box::pin(async move {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        client.connect(&tasks).await
                    }));
                }
                Action::DisconnectUpstream => {
                    self.connecting = None;
                    if let Some(connection) = self.upstream.take() {
                        // Closing politely must not hold up the session: give it its own task.
                        let timeout = self.ctx.close_timeout;
                        self.ctx.tasks.spawn(connection.close(timeout));
                    }
                }
                Action::ClientControl(text) => {
                    if self.outbox.push_control(text).is_err() && !self.outbox.is_closing() {
                        // The client has not read its control messages for a long time.
                        self.outbox.close_now(1008, "client not reading".to_owned());
                        self.core.handle(Event::Shutdown, Instant::now());
                    }
                }
                Action::ClientAudio {
                    data,
                    samples,
                    turn_ended_at,
                } => {
                    self.ctx.metrics.frames_out.inc();
                    self.ctx.metrics.bytes_out.inc_by(data.len() as u64);
                    let pushed = self.outbox.push_audio(BotAudio {
                        data,
                        samples,
                        arrived_at: self.pending_arrived_at,
                        turn_ended_at,
                    });
                    if pushed.dropped_frames > 0 {
                        self.ctx
                            .metrics
                            .dropped_client_slow
                            .inc_by(pushed.dropped_frames);
                        self.core.handle(
                            Event::ClientAudioDropped {
                                samples: pushed.dropped_samples,
                            },
                            Instant::now(),
                        );
                    }
                }
                Action::FlushClientAudio => {
                    self.outbox.flush_audio();
                }
                Action::CloseClient { code, reason } => self.outbox.close(code, reason),
            }
        }
        self.pending_arrived_at = None;
    }

    async fn send_upstream(&mut self, command: UpstreamCommand) {
        let Some(connection) = self.upstream.as_mut() else {
            // The core learns of the loss from the close event; nothing to send on.
            return;
        };
        let is_append = matches!(command, UpstreamCommand::Append(_));
        if let Err(error) = connection.send(&command).await {
            let reason = format!("upstream send failed: {error}");
            self.upstream = None;
            self.core
                .handle(Event::UpstreamClosed { reason: &reason }, Instant::now());
            return;
        }
        if is_append && let Some(arrived_at) = self.last_arrived_at.take() {
            self.ctx
                .metrics
                .relay_latency_in
                .observe(arrived_at.elapsed().as_secs_f64());
        }
    }
}

async fn recv_upstream(upstream: &mut Option<UpstreamConnection>) -> Incoming {
    match upstream {
        Some(connection) => connection.recv().await,
        None => std::future::pending().await,
    }
}

async fn poll_connecting(
    connecting: &mut Option<Connecting>,
) -> Result<UpstreamConnection, ConnectError> {
    let Some(future) = connecting.as_mut() else {
        return std::future::pending().await;
    };
    let result = future.await;
    *connecting = None;
    result
}
