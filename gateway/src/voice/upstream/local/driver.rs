//! The thin tokio driver: moves messages between one WebSocket and one [`LocalEngine`], runs the
//! timer the engine asks for, and runs speech synthesis. It decides nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::engine::{EngineMode, EngineSettings, LocalEngine, Output};
use crate::speech::Speech;
use crate::voice::protocol::openai::{self, AudioDeltaIds, ClientEvent, ServerEvent};

/// Test hooks of one connection (see `testkit`): record what the client sends, misbehave on command.
#[derive(Default)]
pub(crate) struct Hooks {
    /// Called with every client event, in order.
    pub record: Option<Recorder>,
    /// Fault commands.
    pub faults: Option<broadcast::Receiver<Fault>>,
    /// When set, the connection is dropped (no close frame) right after the next audio delta.
    pub close_mid_response: Option<Arc<AtomicBool>>,
}

/// Receives every client event of a connection (tests only).
pub(crate) type Recorder = Arc<dyn Fn(&ClientEvent) + Send + Sync>;

/// A misbehaviour ordered by a test.
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Drop the connection now, without a close frame.
    Drop,
    /// Send this event.
    Send(ServerEvent),
    /// Send this event, then close normally.
    SendAndClose(ServerEvent),
}

type Synthesis = Pin<Box<dyn Future<Output = (Arc<str>, Speech)> + Send>>;

/// How a connection ended, for the log.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the fields are read through `Debug` in the end-of-connection log"
)]
enum End {
    ClientClosed,
    Engine,
    Shutdown,
    Fault,
    Socket(String),
}

/// Messages queued between the engine and the socket writer. Normal traffic keeps it nearly
/// empty; it absorbs bursts while the peer is busy writing rather than reading (see [`serve`]).
const OUTGOING_QUEUE: usize = 256;

/// What the reader hands the writer.
enum Outgoing {
    /// Send this message.
    Message(Message),
    /// Send a close frame and stop.
    Close(Option<CloseFrame>),
    /// Flush what was sent and stop without a close frame (a crash, for fault injection).
    Vanish,
}

/// Serves one engine session over `ws` until the client leaves, the engine closes, or `shutdown`.
///
/// Reading and writing run concurrently (a reader loop and a writer loop joined in this one
/// future): the engine keeps reading while its writes wait for the peer. A peer that writes
/// without reading meanwhile (as a relay sending a burst of appends does) would otherwise
/// deadlock with it once both directions' buffers are full.
pub(crate) async fn serve<S>(
    ws: WebSocketStream<S>,
    shared: Arc<Shared>,
    settings: EngineSettings,
    shutdown: CancellationToken,
    hooks: Hooks,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (sink, stream) = ws.split();
    let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
    let writer_done = CancellationToken::new();
    let reader = read_loop(
        stream,
        tx,
        shared,
        settings,
        shutdown,
        hooks,
        writer_done.clone(),
    );
    let writer = write_loop(sink, rx, writer_done);
    let ((end, mode), ()) = tokio::join!(reader, writer);
    tracing::debug!(?end, ?mode, "local engine connection ended");
}

async fn write_loop<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Outgoing>,
    done: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    'run: while let Some(first) = rx.recv().await {
        // Feed everything queued, then flush once: one write for a burst of events.
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match out {
                Outgoing::Message(message) => {
                    if sink.feed(message).await.is_err() {
                        break 'run;
                    }
                }
                Outgoing::Close(frame) => {
                    let _ = sink.send(Message::Close(frame)).await;
                    break 'run;
                }
                Outgoing::Vanish => {
                    let _ = sink.flush().await;
                    break 'run;
                }
            }
            next = rx.try_recv().ok();
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
    done.cancel();
}

#[allow(clippy::too_many_arguments)]
async fn read_loop<S>(
    mut stream: SplitStream<WebSocketStream<S>>,
    tx: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
    settings: EngineSettings,
    shutdown: CancellationToken,
    mut hooks: Hooks,
    writer_done: CancellationToken,
) -> (End, EngineMode)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let origin = Instant::now();
    let seed = shared.next_seed();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut engine = LocalEngine::new(settings, seed, unix);
    let mut synth: FuturesUnordered<Synthesis> = FuturesUnordered::new();
    let mut audio = Vec::new();
    let end = loop {
        if let Some(end) = flush_outputs(&tx, &mut engine, &shared, &mut synth, &hooks).await {
            break end;
        }
        let deadline = engine
            .poll_timeout()
            .map(|d| tokio::time::Instant::from_std(origin + d));
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {
                let frame = CloseFrame { code: CloseCode::Away, reason: "server shutting down".into() };
                let _ = tx.send(Outgoing::Close(Some(frame))).await;
                break End::Shutdown;
            }
            () = writer_done.cancelled() => break End::Socket("write failed".to_owned()),
            fault = recv_fault(&mut hooks.faults) => match fault {
                Fault::Drop => {
                    let _ = tx.send(Outgoing::Vanish).await;
                    break End::Fault;
                }
                Fault::Send(event) => {
                    if tx.send(Outgoing::Message(Message::text(event.to_json()))).await.is_err() {
                        break End::Fault;
                    }
                }
                Fault::SendAndClose(event) => {
                    let _ = tx.send(Outgoing::Message(Message::text(event.to_json()))).await;
                    let _ = tx.send(Outgoing::Close(None)).await;
                    break End::Fault;
                }
            },
            message = stream.next() => match message {
                None => break End::ClientClosed,
                Some(Err(e)) => break End::Socket(e.to_string()),
                Some(Ok(Message::Text(text))) => {
                    handle_text(&mut engine, text.as_str(), &mut audio, origin.elapsed(), &hooks);
                }
                Some(Ok(Message::Binary(_))) => {
                    engine.handle_protocol_error("invalid_request", "Binary frames are not supported; send JSON events.", None);
                }
                // Tungstenite answers pings and close frames itself.
                Some(Ok(_)) => {}
            },
            Some((response_id, speech)) = synth.next(), if !synth.is_empty() => {
                engine.synthesis_done(&response_id, &speech.samples, speech.sample_rate, origin.elapsed());
            }
            () = sleep_until(deadline), if deadline.is_some() => engine.handle_timeout(origin.elapsed()),
        }
    };
    (end, engine.mode())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn recv_fault(faults: &mut Option<broadcast::Receiver<Fault>>) -> Fault {
    let Some(rx) = faults.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(fault) => return fault,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
        }
    }
}

fn handle_text(
    engine: &mut LocalEngine,
    text: &str,
    audio: &mut Vec<u8>,
    now: Duration,
    hooks: &Hooks,
) {
    // Appends are nearly all the traffic: decode them without building the event, unless a test
    // records events (it wants the full event).
    if hooks.record.is_none() {
        match openai::decode_append_event(text, audio) {
            Ok(Some(event_id)) => {
                engine.append_audio(audio, event_id.as_deref(), now);
                return;
            }
            Ok(None) => {}
            Err(e) => {
                let message = format!("Invalid 'input_audio_buffer.append': {e}");
                engine.handle_protocol_error("invalid_value", &message, Some("audio"));
                return;
            }
        }
    }
    match ClientEvent::from_json(text) {
        Ok(event) => {
            if let Some(record) = &hooks.record {
                record(&event);
            }
            engine.handle_event(event, now);
        }
        Err(e) => {
            let message = format!("Invalid client event: {e}");
            if e.is_syntax() || e.is_eof() {
                engine.handle_protocol_error("invalid_json", &message, None);
            } else if e.to_string().contains("unknown variant") {
                engine.handle_protocol_error("invalid_value", &message, Some("type"));
            } else {
                engine.handle_protocol_error("invalid_value", &message, None);
            }
        }
    }
}

/// Queues everything the engine has produced for the writer. Returns how the connection ended,
/// if it did.
async fn flush_outputs(
    tx: &mpsc::Sender<Outgoing>,
    engine: &mut LocalEngine,
    shared: &Arc<Shared>,
    synth: &mut FuturesUnordered<Synthesis>,
    hooks: &Hooks,
) -> Option<End> {
    while let Some(output) = engine.poll_output() {
        let outgoing = match output {
            Output::Event(event) => Outgoing::Message(Message::text(event.to_json())),
            Output::Audio(chunk) => {
                let event_id = engine.next_event_id();
                let ids = AudioDeltaIds {
                    event_id: None,
                    response_id: chunk.response_id.as_ref().into(),
                    item_id: chunk.item_id.as_ref().into(),
                    output_index: 0,
                    content_index: 0,
                };
                let mut text = String::new();
                openai::write_output_audio_delta(&mut text, &event_id, &ids, &chunk.bytes);
                let crash = hooks
                    .close_mid_response
                    .as_ref()
                    .is_some_and(|armed| armed.swap(false, Ordering::SeqCst));
                if crash {
                    // Send this one delta, then vanish like a crashed server: no close frame.
                    let _ = tx.send(Outgoing::Message(Message::text(text))).await;
                    let _ = tx.send(Outgoing::Vanish).await;
                    return Some(End::Fault);
                }
                Outgoing::Message(Message::text(text))
            }
            Output::Synthesize(request) => {
                let shared = Arc::clone(shared);
                synth.push(Box::pin(async move {
                    let speech = shared.synth.speak(&request.text).await;
                    (request.response_id, speech)
                }));
                continue;
            }
            Output::Close { code, reason } => {
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                let _ = tx.send(Outgoing::Close(Some(frame))).await;
                return Some(End::Engine);
            }
        };
        if tx.send(outgoing).await.is_err() {
            return Some(End::Socket("writer gone".to_owned()));
        }
    }
    None
}

impl EngineMode {
    /// The name used in config and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineMode::Voice => "voice",
            EngineMode::Echo => "echo",
        }
    }
}
