//! `voxgate-ops loadtest`: N concurrent seed-002 sessions against a gateway whose upstream is an
//! echo engine, measuring what the gateway adds.
//!
//! Each session waits for `ready`, sends `start_conversation`, then streams 20 ms PCM16 24 kHz
//! frames at real-time pace. The first samples of every frame carry a marker (magic, session,
//! sequence number, send time); the echo engine returns each appended chunk byte for byte, so
//! when the marker comes back the round trip is known exactly. Frames are spread evenly over the
//! 20 ms period across sessions, as independent clients would be: one OS thread paces and writes
//! every session's frames with sub-millisecond sleeps (see [`pace`]); a task per session times the
//! echoes.
//!
//! Reported: p50/p99/max round-trip latency (client -> gateway -> echo engine -> gateway ->
//! client), frames sent/received/lost, and, with
//! `--gateway-pid`, the gateway's CPU time (utime + stime from `/proc/PID/stat`, in Linux's
//! USER_HZ = 100 ticks per second) per relayed session-second and its RSS (`VmRSS`, `VmHWM`).
//!
//! The round trip runs from the moment a frame is written (loopback TCP hands it to the gateway's
//! socket within that write) to the moment the kernel received its echo on this tool's socket
//! (`SO_TIMESTAMPNS`, see [`voxgate::net::StampedTcp`]), not the moment this tool got around to reading it: the
//! tool shares its core with the echo engine, and its own wait for that core is not the gateway's.
//! What remains besides the gateway is two loopback hops and the engine's turn-around.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use voxgate::net::{ArrivalClock, StampedTcp};

/// 20 ms of 24 kHz mono.
const FRAME_SAMPLES: usize = 480;
const FRAME_BYTES: usize = FRAME_SAMPLES * 2;
const FRAME_PERIOD: Duration = Duration::from_millis(20);
/// Marker layout (little-endian, at the start of each frame): magic (4 bytes), session (4),
/// sequence (4), send time in µs since the test started (8).
const MAGIC: [u8; 4] = *b"VXLT";
const MARKER_BYTES: usize = 20;
/// The shortest sleep of the pacing thread: frames due sooner are sent at once (see [`pace`]).
const PACING_QUANTUM: Duration = Duration::from_micros(250);
/// Linux reports process CPU times in USER_HZ, which is 100 on every mainstream architecture.
const USER_HZ: f64 = 100.0;

/// `voxgate-ops loadtest` arguments.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The gateway's realtime WebSocket (`ws://host:port/ws/realtime`).
    #[arg(long)]
    url: String,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 10)]
    sessions: usize,
    /// Seconds of audio each session streams.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// WAV file to stream (any rate; looped). Without it, a quiet synthetic signal is used.
    #[arg(long)]
    input: Option<PathBuf>,
    /// PID of the gateway process, to report its CPU and memory.
    #[arg(long)]
    gateway_pid: Option<u32>,
    /// Seconds to wait for `ready` on each session.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Seconds to wait for the last echoes after streaming stops.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Sessions that reached `ready` and streamed.
    pub sessions: usize,
    /// Seconds of audio per session.
    pub duration_s: f64,
    /// Frames sent in total.
    pub frames_sent: u64,
    /// Distinct frames that came back.
    pub frames_received: u64,
    /// Frames that never came back.
    pub frames_lost: u64,
    /// Frames that came back more than once.
    pub frames_duplicated: u64,
    /// Round-trip latency percentiles, in milliseconds.
    pub latency_ms: Latency,
    /// The gateway process, when `--gateway-pid` was given.
    pub gateway: Option<GatewayUsage>,
    /// The gateway's own relay latency histogram over the run, when its `/metrics` could be read.
    pub gateway_relay_ms: Option<RelayQuantiles>,
}

/// Upper bounds, in milliseconds, of the histogram buckets holding the quantiles of
/// `voxgate_relay_latency_seconds` (a frame read off one socket to written on the other, both directions), from
/// the difference of the gateway's `/metrics` before and after streaming. It leaves out the time a frame waits in
/// the kernel before the gateway reads it, which the round trip includes.
#[derive(Debug, Serialize)]
pub struct RelayQuantiles {
    /// Frames observed.
    pub count: u64,
    /// Median's bucket bound.
    pub p50: f64,
    /// 99th percentile's bucket bound.
    pub p99: f64,
    /// 99.9th percentile's bucket bound.
    pub p999: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize, Default)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// CPU and memory of the gateway during the streaming phase.
#[derive(Debug, Serialize)]
pub struct GatewayUsage {
    /// CPU seconds (user + system) used while streaming.
    pub cpu_s: f64,
    /// CPU use as a share of one core while streaming (1.0 = one full core).
    pub cpu_cores: f64,
    /// Milliseconds of CPU per relayed session-second (the issue's cost figure).
    pub cpu_ms_per_session_s: f64,
    /// Resident memory before the sessions connected, in KiB.
    pub rss_before_kib: u64,
    /// Resident memory with every session connected and idle (after `ready`), in KiB.
    pub rss_connected_kib: u64,
    /// Resident memory at the end of streaming, in KiB.
    pub rss_end_kib: u64,
    /// Peak resident memory of the process so far, in KiB.
    pub rss_peak_kib: u64,
    /// (connected - before) / sessions, in KiB: the memory cost of an idle session.
    pub rss_per_session_kib: f64,
}

/// Runs the load test and prints the report.
///
/// # Errors
/// Unreadable input, an unreachable gateway, or sessions that never became ready.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let report = runtime.block_on(execute(args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(())
}

fn print_text(r: &Report) {
    println!("sessions            {}", r.sessions);
    println!("duration            {:.1} s", r.duration_s);
    println!(
        "frames              sent {} received {} lost {} duplicated {}",
        r.frames_sent, r.frames_received, r.frames_lost, r.frames_duplicated
    );
    println!(
        "round trip (ms)     p50 {:.3}  p99 {:.3}  max {:.3}  mean {:.3}",
        r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.max, r.latency_ms.mean
    );
    if let Some(q) = &r.gateway_relay_ms {
        println!(
            "gateway relay (ms)  p50 <= {}  p99 <= {}  p99.9 <= {}  ({} frames, its own histogram)",
            q.p50, q.p99, q.p999, q.count
        );
    }
    if let Some(g) = &r.gateway {
        println!(
            "gateway cpu         {:.2} s = {:.1}% of a core = {:.3} ms per session-second",
            g.cpu_s,
            g.cpu_cores * 100.0,
            g.cpu_ms_per_session_s
        );
        println!(
            "gateway rss (KiB)   before {} connected {} end {} peak {} = {:.1} KiB per idle session",
            g.rss_before_kib,
            g.rss_connected_kib,
            g.rss_end_kib,
            g.rss_peak_kib,
            g.rss_per_session_kib
        );
    }
}

async fn execute(args: &Args) -> anyhow::Result<Report> {
    if args.sessions == 0 {
        bail!("--sessions must be at least 1");
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        bail!("--duration must be a positive number of seconds");
    }
    let audio = Arc::new(match &args.input {
        Some(path) => load_pcm(path)?,
        None => synthetic_pcm(),
    });
    let frames = (args.duration * 50.0).round().max(1.0) as u32;
    let rss_before = args.gateway_pid.map(read_rss).transpose()?;

    // Every session connects and waits for `ready`; then all start streaming together.
    let ready = Arc::new(Barrier::new(args.sessions + 1));
    let mut handles = Vec::with_capacity(args.sessions);
    for index in 0..args.sessions {
        let session = Session {
            index: index as u32,
            url: args.url.clone(),
            frames,
            connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        };
        handles.push(tokio::spawn(session.start(Arc::clone(&ready))));
    }
    ready.wait().await;
    let rss_connected = args.gateway_pid.map(read_rss).transpose()?;
    let metrics_url = metrics_address(&args.url);
    let relay_before = read_relay_histogram(metrics_url.as_deref()).await;
    let cpu_start = args.gateway_pid.map(read_cpu_seconds).transpose()?;
    let wall_start = Instant::now();
    let mut streams = Vec::with_capacity(handles.len());
    for handle in handles {
        streams.push(handle.await.context("session task panicked")??);
    }

    let runtime = tokio::runtime::Handle::current();
    let streams = tokio::task::spawn_blocking(move || pace(&runtime, streams, &audio, frames))
        .await
        .context("the pacing thread panicked")?;
    let drain = Duration::from_secs_f64(args.drain);
    let mut results = Vec::with_capacity(streams.len());
    for stream in streams {
        results.push(stream.finish(drain).await?);
    }
    let wall = wall_start.elapsed().as_secs_f64();
    let relay_after = read_relay_histogram(metrics_url.as_deref()).await;
    let gateway_relay_ms = match (relay_before, relay_after) {
        (Some(before), Some(after)) => relay_quantiles(&before, &after),
        _ => None,
    };
    let gateway = match (args.gateway_pid, cpu_start, rss_before, rss_connected) {
        (Some(pid), Some(cpu_start), Some(before), Some(connected)) => {
            let cpu_s = read_cpu_seconds(pid)? - cpu_start;
            let end = read_rss(pid)?;
            let session_seconds = args.sessions as f64 * args.duration;
            Some(GatewayUsage {
                cpu_s,
                cpu_cores: cpu_s / wall,
                cpu_ms_per_session_s: cpu_s * 1000.0 / session_seconds,
                rss_before_kib: before.current,
                rss_connected_kib: connected.current,
                rss_end_kib: end.current,
                rss_peak_kib: end.peak,
                rss_per_session_kib: connected.current.saturating_sub(before.current) as f64
                    / args.sessions as f64,
            })
        }
        _ => None,
    };
    let mut report = summarize(results, args.duration, gateway);
    report.gateway_relay_ms = gateway_relay_ms;
    Ok(report)
}

fn summarize(
    results: Vec<SessionResult>,
    duration_s: f64,
    gateway: Option<GatewayUsage>,
) -> Report {
    let sessions = results.len();
    let mut latencies: Vec<u32> = Vec::new();
    let (mut sent, mut received, mut duplicated) = (0u64, 0u64, 0u64);
    for r in results {
        sent += u64::from(r.sent);
        received += r.received;
        duplicated += r.duplicated;
        latencies.extend(r.latencies_us);
    }
    latencies.sort_unstable();
    let pick = |q: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let at = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[at]) / 1000.0
    };
    let mean = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|&l| f64::from(l)).sum::<f64>() / latencies.len() as f64 / 1000.0
    };
    Report {
        sessions,
        duration_s,
        frames_sent: sent,
        frames_received: received,
        frames_lost: sent.saturating_sub(received),
        frames_duplicated: duplicated,
        latency_ms: Latency {
            p50: pick(0.5),
            p99: pick(0.99),
            max: pick(1.0),
            mean,
        },
        gateway,
        gateway_relay_ms: None,
    }
}

/// `host:port` of the gateway's HTTP listener, from its `ws://host:port/…` URL (plain `ws` only).
fn metrics_address(url: &str) -> Option<String> {
    let rest = url.strip_prefix("ws://")?;
    Some(rest.split('/').next()?.to_owned())
}

/// Cumulative `(upper bound in seconds, count)` buckets of `voxgate_relay_latency_seconds`, or `None` when
/// `/metrics` cannot be read (another gateway, a proxy in between): the report then goes without them.
async fn read_relay_histogram(address: Option<&str>) -> Option<Vec<(f64, u64)>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = address?;
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        Some(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()??;
    let buckets: Vec<(f64, u64)> = response
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("voxgate_relay_latency_seconds_bucket{le=\"")?;
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" {
                f64::INFINITY
            } else {
                bound.parse().ok()?
            };
            Some((bound, count.trim().parse().ok()?))
        })
        .collect();
    (!buckets.is_empty()).then_some(buckets)
}

/// The quantiles of what was observed between two readings of the same cumulative histogram.
fn relay_quantiles(before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<RelayQuantiles> {
    if before.len() != after.len() {
        return None;
    }
    let delta: Vec<(f64, u64)> = before
        .iter()
        .zip(after)
        .map(|(&(bound, b), &(_, a))| (bound, a.saturating_sub(b)))
        .collect();
    let count = delta.last()?.1;
    if count == 0 {
        return None;
    }
    let bound_of = |q: f64| -> f64 {
        let wanted = (count as f64 * q).ceil() as u64;
        let bound = delta
            .iter()
            .find(|&&(_, cumulative)| cumulative >= wanted)
            .map_or(f64::INFINITY, |&(bound, _)| bound);
        bound * 1000.0
    };
    Some(RelayQuantiles {
        count,
        p50: bound_of(0.5),
        p99: bound_of(0.99),
        p999: bound_of(0.999),
    })
}

/// Sends frame `seq` of stream `i` at `start + seq × 20 ms + i × 20 ms / N`, from this (blocking) thread, at most
/// [`PACING_QUANTUM`] early.
///
/// One OS thread with sub-millisecond sleeps, writing itself: tokio's timer fires in whole milliseconds (it would
/// release every session whose phase shares a millisecond as one burst), and handing each frame to a session task
/// would cost a thread wake-up per frame on the core the load tool shares with the echo engine. It sleeps only
/// when the next frame is at least a quantum away: at 700 sessions frames are 29 µs apart, and a sleep per frame
/// made the load tool spend most of its time switching in and out of that core, starving the echo engine.
fn pace(
    runtime: &tokio::runtime::Handle,
    mut streams: Vec<Streaming>,
    audio: &[u8],
    frames: u32,
) -> Vec<Streaming> {
    let start = Instant::now();
    let count = streams.len() as u32;
    let mut frame = vec![0u8; FRAME_BYTES];
    for seq in 0..frames {
        let period_start = start + FRAME_PERIOD * seq;
        for (slot, stream) in (0u32..).zip(streams.iter_mut()) {
            if stream.failed.is_some() {
                continue;
            }
            let due = period_start + FRAME_PERIOD * slot / count;
            if let Some(wait) = due.checked_duration_since(Instant::now())
                && wait >= PACING_QUANTUM
            {
                std::thread::sleep(wait);
            }
            fill_frame(&mut frame, audio, seq as usize * FRAME_BYTES);
            let sent_us = wall_clock_us();
            frame[0..4].copy_from_slice(&MAGIC);
            frame[4..8].copy_from_slice(&stream.index.to_le_bytes());
            frame[8..12].copy_from_slice(&seq.to_le_bytes());
            frame[12..20].copy_from_slice(&sent_us.to_le_bytes());
            if let Err(error) = runtime.block_on(stream.sink.send(Message::binary(frame.clone()))) {
                stream.failed = Some(
                    anyhow::Error::new(error)
                        .context(format!("session {}: send failed", stream.index)),
                );
            }
        }
    }
    streams
}

/// Fills `frame` with `audio` from byte `offset` on, looping over its end.
fn fill_frame(frame: &mut [u8], audio: &[u8], offset: usize) {
    let mut at = offset % audio.len();
    let mut filled = 0;
    while filled < frame.len() {
        let take = (frame.len() - filled).min(audio.len() - at);
        frame[filled..filled + take].copy_from_slice(&audio[at..at + take]);
        filled += take;
        at = (at + take) % audio.len();
    }
}

struct Session {
    index: u32,
    url: String,
    frames: u32,
    connect_timeout: Duration,
}

/// A session streaming: the pacer writes to its sink while its receiver task times the echoes.
struct Streaming {
    index: u32,
    frames: u32,
    sink: WsSink,
    receiver: tokio::task::JoinHandle<SessionResult>,
    stop: tokio::sync::oneshot::Sender<()>,
    /// Why the pacer stopped sending to it.
    failed: Option<anyhow::Error>,
}

impl Streaming {
    /// Waits at most `drain` for the last echoes, closes the socket and returns what came back.
    async fn finish(mut self, drain: Duration) -> anyhow::Result<SessionResult> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let joined = match tokio::time::timeout(drain, &mut self.receiver).await {
            Ok(joined) => joined,
            // Some frames never came back: stop waiting and count what did.
            Err(_) => {
                let _ = self.stop.send(());
                self.receiver.await
            }
        };
        let mut result = joined.context("receiver task panicked")?;
        result.sent = self.frames;
        let _ = self.sink.send(Message::Close(None)).await;
        Ok(result)
    }
}

struct SessionResult {
    sent: u32,
    received: u64,
    duplicated: u64,
    latencies_us: Vec<u32>,
}

impl Session {
    /// Connects, waits for the others at `ready`, sends `start_conversation` and starts timing echoes.
    async fn start(self, ready: Arc<Barrier>) -> anyhow::Result<Streaming> {
        let connected = self.connect().await;
        // Arrive at the barrier whatever happened, so the other sessions are not left waiting; a failed
        // session is reported once every session has arrived.
        ready.wait().await;
        let (mut sink, stream, received_at) =
            connected.with_context(|| format!("session {}", self.index))?;
        sink.send(Message::text(r#"{"type":"start_conversation"}"#))
            .await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let receiver = tokio::spawn(receive(
            stream,
            stopped,
            self.index,
            self.frames,
            received_at,
        ));
        Ok(Streaming {
            index: self.index,
            frames: self.frames,
            sink,
            receiver,
            stop,
            failed: None,
        })
    }
}

/// Times the echoes of one session's frames until all came back, the stream ends, or `stopped` fires.
/// `received_at` is the kernel's receive time of what the last read of the socket returned.
async fn receive(
    mut stream: WsStream,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
    index: u32,
    frames: u32,
    received_at: ArrivalClock,
) -> SessionResult {
    let mut seen = vec![false; frames as usize];
    let mut result = SessionResult {
        sent: 0,
        received: 0,
        duplicated: 0,
        latencies_us: Vec::with_capacity(frames as usize),
    };
    // Markers could straddle two messages if the gateway re-chunks; keep the tail.
    let mut carry: Vec<u8> = Vec::with_capacity(2 * FRAME_BYTES);
    loop {
        let message = tokio::select! {
            _ = &mut stopped => break,
            message = stream.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let Ok(Message::Binary(data)) = message else {
            if matches!(message, Ok(Message::Close(_)) | Err(_)) {
                break;
            }
            continue;
        };
        // A frame whose bytes came in two reads gets the second read's time: its latency can only be
        // overstated. Without a kernel time (none given yet), the time now.
        let now_us = received_at
            .unix_nanos()
            .map_or_else(wall_clock_us, |nanos| nanos / 1_000);
        carry.extend_from_slice(&data);
        let mut at = 0;
        while at + MARKER_BYTES <= carry.len() {
            if carry[at..at + 4] == MAGIC {
                let field = |o: usize| {
                    u32::from_le_bytes([
                        carry[at + o],
                        carry[at + o + 1],
                        carry[at + o + 2],
                        carry[at + o + 3],
                    ])
                };
                let (session, seq) = (field(4), field(8));
                let sent_us = u64::from(field(12)) | (u64::from(field(16)) << 32);
                if session == index && seq < frames {
                    if seen[seq as usize] {
                        result.duplicated += 1;
                    } else {
                        seen[seq as usize] = true;
                        result.received += 1;
                        result
                            .latencies_us
                            .push(now_us.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32);
                    }
                    at += MARKER_BYTES;
                    continue;
                }
            }
            // PCM16 is sample-aligned: markers start at even offsets.
            at += 2;
        }
        carry.drain(..at.min(carry.len()));
        if result.received == u64::from(frames) {
            break;
        }
    }
    result
}

impl Session {
    /// Connects and waits for `ready`; also returns where the socket's reads leave their kernel receive time.
    async fn connect(&self) -> anyhow::Result<(WsSink, WsStream, ArrivalClock)> {
        // Small buffers, like a browser's: the point is to load the gateway, not this tool.
        let config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .write_buffer_size(0);
        let connect = async {
            let url = url::Url::parse(&self.url)?;
            let host = url.host_str().context("the URL names no host")?;
            let port = url
                .port_or_known_default()
                .context("the URL names no port")?;
            let tcp = tokio::net::TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let stamped = StampedTcp::new(tcp);
            let received_at = stamped.clock();
            let (ws, _) = tokio_tungstenite::client_async_tls_with_config(
                self.url.as_str(),
                stamped,
                Some(config),
                None,
            )
            .await?;
            anyhow::Ok((ws, received_at))
        };
        let (ws, received_at) = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .with_context(|| format!("connecting took longer than {:?}", self.connect_timeout))?
            .with_context(|| format!("cannot connect to {}", self.url))?;
        let (sink, mut stream) = ws.split();
        let wait_ready = async {
            while let Some(message) = stream.next().await {
                if let Message::Text(text) = message? {
                    let value: serde_json::Value = serde_json::from_str(text.as_str())?;
                    match value["type"].as_str() {
                        Some("ready") => return Ok(()),
                        Some("error") => bail!("gateway error before ready: {value}"),
                        _ => {}
                    }
                }
            }
            bail!("the gateway closed before ready")
        };
        tokio::time::timeout(self.connect_timeout, wait_ready)
            .await
            .with_context(|| format!("no ready within {:?}", self.connect_timeout))??;
        Ok((sink, stream, received_at))
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<StampedTcp>>;
type WsSink = futures_util::stream::SplitSink<Ws, Message>;
type WsStream = futures_util::stream::SplitStream<Ws>;

/// Microseconds since the Unix epoch: the clock of the kernel's receive timestamps.
fn wall_clock_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

/// Loads a WAV file as PCM16 24 kHz mono bytes.
fn load_pcm(path: &Path) -> anyhow::Result<Vec<u8>> {
    let (samples, rate) = voxgate_dsp::wav::read_wav_mono(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if samples.is_empty() {
        bail!("{} holds no audio", path.display());
    }
    let samples = if rate == 24_000 {
        samples
    } else {
        let mut resampler = voxgate_dsp::resample::Resampler::new_arbitrary(rate, 24_000)
            .with_context(|| format!("cannot resample {rate} Hz"))?;
        let mut out = resampler.process(&samples);
        out.extend(resampler.flush());
        out
    };
    Ok(voxgate_dsp::pcm::encode_pcm16le(&samples))
}

/// One second of quiet noise-like audio, so frames are not all zeros.
fn synthetic_pcm() -> Vec<u8> {
    let mut state = 0x2545_F491u32;
    let samples: Vec<f32> = (0..24_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 - 0.5) * 0.02
        })
        .collect();
    voxgate_dsp::pcm::encode_pcm16le(&samples)
}

/// utime + stime of `pid`, in seconds.
fn read_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat (is the gateway running?)"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| ticks as f64 / USER_HZ)
        .with_context(|| format!("unexpected /proc/{pid}/stat format"))
}

/// utime + stime (fields 14 and 15) from a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may contain spaces, so fields are counted after the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")" the first field is field 3 (state): utime is field 14, i.e. index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[derive(Debug, Clone, Copy)]
struct Rss {
    current: u64,
    peak: u64,
}

fn read_rss(pid: u32) -> anyhow::Result<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status (is the gateway running?)"))?;
    parse_rss(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

fn parse_rss(status: &str) -> Option<Rss> {
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    let current = field("VmRSS:")?;
    Some(Rss {
        current,
        peak: field("VmHWM:").unwrap_or(current),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_counted_after_the_command_name() {
        let stat = "1234 (voxgate (x) y) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 9 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_is_read_from_status() {
        let status = "Name:\tvoxgate\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        let rss = parse_rss(status).unwrap();
        assert_eq!((rss.current, rss.peak), (10240, 20480));
        assert!(parse_rss("Name: x\n").is_none());
    }

    #[test]
    fn percentiles_and_losses() {
        let result = |sent, latencies: Vec<u32>| SessionResult {
            sent,
            received: latencies.len() as u64,
            duplicated: 0,
            latencies_us: latencies,
        };
        let report = summarize(
            vec![
                result(3, vec![1000, 2000, 3000]),
                result(100, (1..=98).map(|i| i * 100).collect()),
            ],
            2.0,
            None,
        );
        assert_eq!(
            (
                report.frames_sent,
                report.frames_received,
                report.frames_lost
            ),
            (103, 101, 2)
        );
        assert_eq!(report.latency_ms.max, 9.8);
        assert_eq!(report.latency_ms.p50, 4.8);
        assert_eq!(report.latency_ms.p99, 9.7);
    }

    #[test]
    fn relay_quantiles_come_from_the_difference_of_two_readings() {
        let before = [
            (0.000_01, 100),
            (0.000_05, 150),
            (0.001, 160),
            (f64::INFINITY, 160),
        ];
        // 1000 new frames: 900 under 10 µs, 95 more under 50 µs, 4 more under 1 ms, 1 slower.
        let after = [
            (0.000_01, 1000),
            (0.000_05, 1145),
            (0.001, 1159),
            (f64::INFINITY, 1160),
        ];
        let q = relay_quantiles(&before, &after).expect("frames were observed");
        assert_eq!(q.count, 1000);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(
            near(q.p50, 0.01) && near(q.p99, 0.05) && near(q.p999, 1.0),
            "{q:?}"
        );
        let all_slow = [
            (0.000_01, 100),
            (0.000_05, 150),
            (0.001, 160),
            (f64::INFINITY, 170),
        ];
        let q = relay_quantiles(&before, &all_slow).expect("frames were observed");
        assert!(q.p50.is_infinite());
        assert!(
            relay_quantiles(&before, &before).is_none(),
            "nothing observed"
        );
        assert!(
            relay_quantiles(&before, &after[..3]).is_none(),
            "different bucket sets"
        );
    }

    #[test]
    fn the_metrics_address_is_the_websocket_host() {
        assert_eq!(
            metrics_address("ws://127.0.0.1:8080/ws/realtime").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(metrics_address("wss://example.com/ws/realtime"), None);
    }
}
