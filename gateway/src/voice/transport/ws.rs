//! `WS /ws/realtime`: the client WebSocket of the OKTI protocol.
//!
//! The session reads the client's messages itself ([`ClientMessages`], polled in the session's task: a session
//! busy upstream stops reading, so TCP pushes back on the client; floods are the session's rate guard's to
//! catch), and a writer beside it on the same task drains the session's [`Outbox`], feeding everything queued
//! before one flush (fewer syscalls under load, no added delay), and pings the client. A client frame's relay
//! latency starts when the kernel received it ([`ArrivalClock`]), so time spent waiting for the gateway to read
//! it counts. RFC 6455 violations close with their codes: 1009 for a message over the limit, 1007 for invalid
//! UTF-8, 1002 for protocol errors.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, Stream, StreamExt as _};
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite;

use crate::http::ApiError;
use crate::http::ws::{limit_upgrade, rejected_upgrade, reply_to_close, upgrade_required};
use crate::net::{self, ArrivalClock};
use crate::state::AppState;
use crate::voice::protocol::okti::ServerMessage;
use crate::voice::session::core::{CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN_LATER};
use crate::voice::session::metrics::SessionMetrics;
use crate::voice::session::outbox::{Outbox, Outgoing};
use crate::voice::session::{self, Inbound};

/// Control messages queued for one client before it counts as not reading at all.
const CONTROL_QUEUE: usize = 256;
/// Pings a client may leave unanswered before it is dropped.
const MAX_MISSED_PONGS: u32 = 2;

/// The `GET /ws/realtime` handler.
pub async fn upgrade(
    State(state): State<AppState>,
    arrivals: Option<Extension<ArrivalClock>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            let (status, header) = rejected_upgrade(&rejection);
            let error = ApiError::Client {
                status,
                code: "websocket_required",
                detail: format!(
                    "/ws/realtime speaks WebSocket only: {}",
                    rejection.body_text()
                ),
                field: Some(header.to_owned()),
                retry_after: None,
            };
            return upgrade_required(error.into_response());
        }
    };
    // Served by `server::serve` every connection has one; elsewhere (a router under test) frames are dated
    // when read.
    let arrivals = arrivals.map(|Extension(clock)| clock);
    let permit = state.voice.try_admit();
    let upgrade = limit_upgrade(upgrade, &state.config.limits);
    let tasks = state.tasks.clone();
    upgrade
        .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            tasks.track_future(async move {
                match permit {
                    _ if state.shutdown.is_cancelled() => {
                        refuse(socket, &state, CLOSE_GOING_AWAY, "server shutting down").await;
                    }
                    Some(permit) => serve(socket, state, permit, arrivals).await,
                    None => {
                        state.voice.note_rejected("max_sessions");
                        refuse(
                            socket,
                            &state,
                            CLOSE_TRY_AGAIN_LATER,
                            "too many voice sessions; try again later",
                        )
                        .await;
                    }
                }
            })
        })
}

/// Tells the client why, closes with `code`, and waits briefly for the close reply.
async fn refuse(mut socket: WebSocket, state: &AppState, code: u16, reason: &str) {
    let error = ServerMessage::Error { message: reason }.to_json();
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let close_timeout = state.config.limits.close_timeout;
    let _ = tokio::time::timeout(close_timeout, async {
        socket.send(Message::text(error)).await?;
        socket.send(Message::Close(Some(frame))).await?;
        // Read until the peer's close reply (or anything ends the stream).
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
        Ok::<_, axum::Error>(())
    })
    .await;
}

async fn serve(
    socket: WebSocket,
    state: AppState,
    permit: OwnedSemaphorePermit,
    arrivals: Option<ArrivalClock>,
) {
    let _permit = permit;
    let voice = &state.voice;
    let limits = &state.config.limits;
    let ctx = voice.session_context(&state);
    let metrics = ctx.metrics.clone();
    let outbox = Arc::new(Outbox::new(
        state.config.voice.output_queue_frames,
        CONTROL_QUEUE,
    ));
    let (sink, stream) = socket.split();
    let missed_pongs = Arc::new(AtomicU32::new(0));
    let mut inbound = ClientMessages {
        stream,
        arrivals,
        outbox: Arc::clone(&outbox),
        missed_pongs: Arc::clone(&missed_pongs),
        client: ClientSide::Open,
    };

    let mut actor = Box::pin(session::run(ctx, &mut inbound, Arc::clone(&outbox)));
    let mut writer = Box::pin(write_loop(
        sink,
        Arc::clone(&outbox),
        limits.ping_interval,
        missed_pongs,
        metrics,
    ));
    let mut actor_done = false;
    loop {
        tokio::select! {
            biased;
            () = &mut actor, if !actor_done => {
                actor_done = true;
                outbox.close(1000, "session ended".to_owned());
            }
            () = &mut writer => break,
        }
    }
    if !actor_done {
        // The writer is done (its close frame went out, or the client is gone): a closing outbox ends the
        // client's messages, so the session winds down (closes its upstream, logs its usage) at its next poll.
        outbox.close_now(1000, "client gone".to_owned());
        (&mut actor).await;
    }
    drop(actor);
    // Complete the close handshake, briefly: reply to the client's close frame, or wait for its reply to ours.
    match inbound.client {
        ClientSide::Closed => reply_to_close(&mut inbound.stream, limits.close_timeout).await,
        ClientSide::Open => {
            let _ = tokio::time::timeout(limits.close_timeout, inbound.drain_until_close()).await;
        }
        ClientSide::Gone => {}
    }
}

/// The client's messages as the session reads them, in the session's task: audio and text. Pings, pongs and
/// the close handshake stay here; a protocol violation closes the outbox with its RFC 6455 code. The stream
/// ends when the client closes or breaks the protocol, and once the outbox is closing: the session takes no
/// input after deciding to close.
struct ClientMessages {
    stream: SplitStream<WebSocket>,
    /// When the kernel received what the socket's last read returned; `None`: date frames when read.
    arrivals: Option<ArrivalClock>,
    outbox: Arc<Outbox>,
    missed_pongs: Arc<AtomicU32>,
    /// Whether the client's side has ended, and how.
    client: ClientSide,
}

/// The client's side of the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientSide {
    Open,
    /// Its close frame has been read: the reply is ours to send.
    Closed,
    /// Its socket ended or broke the protocol.
    Gone,
}

impl Stream for ClientMessages {
    type Item = Inbound;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        let this = &mut *self;
        loop {
            if this.client != ClientSide::Open || this.outbox.is_closing() {
                return Poll::Ready(None);
            }
            let Some(message) = ready!(this.stream.poll_next_unpin(cx)) else {
                this.client = ClientSide::Gone;
                return Poll::Ready(None);
            };
            this.missed_pongs.store(0, Ordering::Relaxed);
            return Poll::Ready(Some(match message {
                Ok(Message::Binary(data)) => Inbound::Audio {
                    data,
                    arrived_at: net::arrival(this.arrivals.as_ref()),
                },
                Ok(Message::Text(text)) => Inbound::Text(text.as_str().to_owned()),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) => {
                    this.client = ClientSide::Closed;
                    return Poll::Ready(None);
                }
                Err(error) => {
                    if let Some((code, reason)) = close_code_for(error) {
                        tracing::debug!(code, reason, "client broke the WebSocket protocol");
                        this.outbox.close_now(code, reason.to_owned());
                    }
                    this.client = ClientSide::Gone;
                    return Poll::Ready(None);
                }
            }));
        }
    }
}

impl ClientMessages {
    /// Reads and discards what the client still sends until its close frame.
    async fn drain_until_close(&mut self) {
        while let Some(Ok(message)) = self.stream.next().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    }
}

fn close_code_for(error: axum::Error) -> Option<(u16, &'static str)> {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => Some((1009, "message too big")),
        tungstenite::Error::Utf8(_) => Some((1007, "invalid UTF-8 in a text frame")),
        tungstenite::Error::Protocol(_) => Some((1002, "WebSocket protocol error")),
        _ => None,
    }
}

/// Writes the outbox to the client and keeps the connection alive; returns after the close frame
/// or when the client is gone.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    outbox: Arc<Outbox>,
    ping_interval: Duration,
    missed_pongs: Arc<AtomicU32>,
    metrics: SessionMetrics,
) {
    let mut ping = tokio::time::interval(ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    let mut fed_audio: Vec<(Option<Instant>, Option<Instant>)> = Vec::new();
    loop {
        let mut closing = false;
        while let Some(item) = outbox.pop() {
            let message = match item {
                Outgoing::Text(text) => Message::text(text),
                Outgoing::Audio(audio) => {
                    fed_audio.push((audio.arrived_at, audio.turn_ended_at));
                    Message::Binary(audio.data)
                }
                Outgoing::Close { code, reason } => {
                    closing = true;
                    Message::Close(Some(CloseFrame {
                        code,
                        reason: reason.into(),
                    }))
                }
            };
            if sink.feed(message).await.is_err() {
                return;
            }
            if closing {
                break;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
        // Both latencies end when the frame is written, not when it was queued.
        for (arrived_at, turn_ended_at) in fed_audio.drain(..) {
            if let Some(arrived_at) = arrived_at {
                metrics
                    .relay_latency_out
                    .observe(arrived_at.elapsed().as_secs_f64());
            }
            if let Some(turn_ended_at) = turn_ended_at {
                metrics
                    .time_to_first_audio
                    .observe(turn_ended_at.elapsed().as_secs_f64());
            }
        }
        if closing {
            return;
        }
        tokio::select! {
            () = outbox.wait() => {}
            _ = ping.tick() => {
                if missed_pongs.fetch_add(1, Ordering::Relaxed) >= MAX_MISSED_PONGS {
                    tracing::debug!("client missed two pongs; dropping it");
                    return;
                }
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
            }
        }
    }
}
