//! `WS /ws/realtime`: the client WebSocket of the OKTI protocol.
//!
//! Each connection is split into a reader and a writer that run beside the session actor on one
//! task. The reader forwards every frame at once into the session's bounded input channel (a full
//! channel stops the reading: TCP pushes back on the client; floods are the session's rate guard's to
//! catch); the writer drains the session's [`Outbox`],
//! feeding everything queued before one flush (fewer syscalls under load, no added delay), and
//! pings the client. RFC 6455 violations close with their codes: 1009 for a message over the
//! limit, 1007 for invalid UTF-8, 1002 for protocol errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_tungstenite::tungstenite;

use crate::http::ws::limit_upgrade;
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
pub async fn upgrade(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
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
                    Some(permit) => serve(socket, state, permit).await,
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

async fn serve(socket: WebSocket, state: AppState, permit: OwnedSemaphorePermit) {
    let _permit = permit;
    let voice = &state.voice;
    let limits = &state.config.limits;
    let ctx = voice.session_context(&state);
    let metrics = ctx.metrics.clone();
    let outbox = Arc::new(Outbox::new(
        state.config.voice.output_queue_frames,
        CONTROL_QUEUE,
    ));
    let (tx, rx) = mpsc::channel(state.config.voice.input_queue_frames);
    let (sink, stream) = socket.split();
    let missed_pongs = Arc::new(AtomicU32::new(0));

    let mut actor = Box::pin(session::run(ctx, rx, Arc::clone(&outbox)));
    let mut writer = Box::pin(write_loop(
        sink,
        Arc::clone(&outbox),
        limits.ping_interval,
        Arc::clone(&missed_pongs),
        metrics.clone(),
    ));
    let mut reader = Some(Box::pin(read_loop(
        stream,
        tx,
        Arc::clone(&outbox),
        missed_pongs,
    )));

    let mut actor_done = false;
    loop {
        // Polled in data-flow order, so one wake-up carries a frame all the way: the reader queues it,
        // the actor relays it (or queues the bot audio an upstream event carried), the writer sends it.
        // Any other order leaves the work to a second poll of the task.
        tokio::select! {
            biased;
            () = async { match reader.as_mut() { Some(r) => r.await, None => std::future::pending().await } } => {
                // Dropping the reader drops the input sender: the actor sees the client is gone.
                reader = None;
            }
            () = &mut actor, if !actor_done => {
                actor_done = true;
                // Whatever ended the session, the client gets a close frame after what is queued.
                outbox.close(1000, "session ended".to_owned());
            }
            () = &mut writer => break,
        }
    }
    // The close frame is out (or the socket is dead): give the peer a bounded time to answer. The actor runs
    // on meanwhile: a reader waiting for room in the input queue is released when the actor drops it.
    let reader = async {
        if let Some(reader) = reader {
            let _ = tokio::time::timeout(limits.close_timeout, reader).await;
        }
    };
    let actor = async {
        if !actor_done {
            actor.await;
        }
    };
    tokio::join!(reader, actor);
}

/// Reads client frames into the session; returns when the client closes or breaks the protocol.
async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    tx: mpsc::Sender<Inbound>,
    outbox: Arc<Outbox>,
    missed_pongs: Arc<AtomicU32>,
) {
    while let Some(message) = stream.next().await {
        missed_pongs.store(0, Ordering::Relaxed);
        let inbound = match message {
            Ok(Message::Binary(data)) => Inbound::Audio {
                data,
                read_at: Instant::now(),
            },
            Ok(Message::Text(text)) => Inbound::Text(text.as_str().to_owned()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(Message::Close(_)) => return,
            Err(error) => {
                if let Some((code, reason)) = close_code_for(error) {
                    tracing::debug!(code, reason, "client broke the WebSocket protocol");
                    outbox.close_now(code, reason.to_owned());
                }
                return;
            }
        };
        // A full queue means the session is behind (a slow upstream, a busy core), not that the client floods:
        // stop reading and let TCP push back. A client sending faster than real time is caught by the session's
        // rate guard (`SessionConfig::flood_factor`), which answers `error` and closes with 1008.
        if outbox.is_closing() || tx.send(inbound).await.is_err() {
            return drain_until_close(&mut stream).await;
        }
    }
}

/// Reads and discards what the client still sends until its close reply (the caller bounds the wait with
/// `limits.close_timeout`). Dropping a TCP socket with unread input makes the kernel answer with a reset,
/// which destroys the close frame just queued: a flooding client would see 1006 instead of 1008.
async fn drain_until_close(stream: &mut SplitStream<WebSocket>) {
    while let Some(Ok(message)) = stream.next().await {
        if matches!(message, Message::Close(_)) {
            return;
        }
    }
}

/// The RFC 6455 close code for a read error, if the peer is still there to hear it.
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
    let mut fed_audio: Vec<(Instant, Option<Instant>)> = Vec::new();
    loop {
        let mut closing = false;
        while let Some(item) = outbox.pop() {
            let message = match item {
                Outgoing::Text(text) => Message::text(text),
                Outgoing::Audio(audio) => {
                    fed_audio.push((audio.read_at, audio.turn_ended_at));
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
        for (read_at, turn_ended_at) in fed_audio.drain(..) {
            metrics
                .relay_latency_out
                .observe(read_at.elapsed().as_secs_f64());
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
