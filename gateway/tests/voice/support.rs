//! A real WebSocket client of `/ws/realtime` and a spoken fixture, shared by the voice tests.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use voxgate_dsp::resample::Resampler;

/// 20 ms of PCM16 24 kHz mono.
pub const FRAME_BYTES: usize = 960;

/// What the client received.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A JSON control message.
    Json(Value),
    /// Bot audio.
    Audio(Bytes),
    /// The server closed: code and reason.
    Close(u16, String),
}

impl Frame {
    /// The `type` of a JSON frame.
    pub fn kind(&self) -> Option<&str> {
        match self {
            Frame::Json(value) => value["type"].as_str(),
            _ => None,
        }
    }
}

/// A client of `/ws/realtime`.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket handshake");
        Client { ws }
    }

    /// Sends a JSON control message.
    pub async fn send_json(&mut self, value: Value) {
        self.ws
            .send(Message::text(value.to_string()))
            .await
            .expect("send json");
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send text");
    }

    /// Sends one binary frame; false if the socket is gone.
    pub async fn send_audio(&mut self, pcm: &[u8]) -> bool {
        self.ws
            .send(Message::binary(Bytes::copy_from_slice(pcm)))
            .await
            .is_ok()
    }

    /// The next frame within `timeout` (`None` on timeout; `Close` when the stream ends).
    pub async fn next(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Frame::Close(1006, "stream ended".into())),
                Ok(Some(Err(error))) => return Some(Frame::Close(1006, error.to_string())),
                Ok(Some(Ok(message))) => message,
            };
            return Some(match message {
                Message::Text(text) => {
                    Frame::Json(serde_json::from_str(text.as_str()).expect("server sends JSON"))
                }
                Message::Binary(data) => Frame::Audio(data),
                Message::Close(frame) => {
                    let (code, reason) = frame
                        .map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    Frame::Close(code, reason)
                }
                _ => continue,
            });
        }
    }

    /// Waits for a JSON message of `kind`, returning it and every frame skipped before it.
    pub async fn expect_json(&mut self, kind: &str, timeout: Duration) -> (Value, Vec<Frame>) {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Frame::Json(value)) if value["type"] == kind => return (value, skipped),
                Some(Frame::Close(code, reason)) => {
                    panic!(
                        "closed ({code} {reason}) while waiting for {kind}; before: {}",
                        summary(&skipped)
                    )
                }
                Some(frame) => skipped.push(frame),
                None => panic!("no {kind} within {timeout:?}; got: {}", summary(&skipped)),
            }
        }
    }

    /// Waits for the close frame, returning its code and reason and the frames before it.
    pub async fn expect_close(&mut self, timeout: Duration) -> (u16, String, Vec<Frame>) {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(Frame::Close(code, reason)) => return (code, reason, skipped),
                Some(frame) => skipped.push(frame),
                None => panic!("no close within {timeout:?}; got: {}", summary(&skipped)),
            }
        }
    }

    /// Streams `pcm` in 20 ms frames at real-time pace while collecting what arrives.
    pub async fn stream_realtime(&mut self, pcm: &[u8], received: &mut Vec<Frame>) {
        let start = tokio::time::Instant::now();
        for (i, frame) in pcm.chunks(FRAME_BYTES).enumerate() {
            assert!(
                self.send_audio(frame).await,
                "socket closed while streaming"
            );
            let due = start + Duration::from_millis(20 * (i as u64 + 1));
            while let Some(left) = due.checked_duration_since(tokio::time::Instant::now()) {
                match self.next(left).await {
                    Some(frame) => received.push(frame),
                    None => break,
                }
            }
        }
    }

    /// Closes politely.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Closes with 1000 and returns the code of the gateway's close reply (1006 if the socket ended without
    /// one), which RFC 6455 asks it to send.
    pub async fn close_and_await_reply(mut self, timeout: Duration) -> u16 {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        };
        self.ws
            .close(Some(frame))
            .await
            .expect("send the close frame");
        match self.next(timeout).await {
            Some(Frame::Close(code, _)) => code,
            other => panic!("no close reply within {timeout:?}: {other:?}"),
        }
    }
}

/// A short description of frames for assertion messages.
pub fn summary(frames: &[Frame]) -> String {
    let audio = frames
        .iter()
        .filter(|f| matches!(f, Frame::Audio(_)))
        .count();
    let json: Vec<String> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Json(v) => Some(v.to_string()),
            _ => None,
        })
        .collect();
    format!("{audio} audio frames, json {json:?}")
}

/// Speech synthesized by espeak-ng, resampled to PCM16 24 kHz, with `silence_ms` of silence after.
///
/// # Panics
/// When espeak-ng is missing: the voice tests need real speech.
pub fn speech_pcm(dir: &Path, text: &str, silence_ms: usize) -> Vec<u8> {
    let path = dir.join(format!("speech-{}.wav", text.len()));
    let status = std::process::Command::new("espeak-ng")
        .args(["-v", "en", "-s", "170", "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .expect("espeak-ng must be installed for the voice tests (apt-get install espeak-ng)");
    assert!(status.success(), "espeak-ng failed: {status}");
    let reader = voxgate_dsp::wav::WavReader::open(&path).expect("espeak-ng writes a WAV");
    let rate = reader.sample_rate();
    let samples = reader.read_to_end().expect("readable WAV");
    let mut resampler = Resampler::new(rate, 24_000).expect("supported rate");
    let mut out = resampler.process(&samples);
    out.extend(resampler.flush());
    out.extend(std::iter::repeat_n(0.0, silence_ms * 24));
    voxgate_dsp::pcm::encode_pcm16le(&out)
}

/// Silence of `ms` milliseconds.
pub fn silence(ms: usize) -> Vec<u8> {
    vec![0; ms * 48]
}

/// `GET url` as text.
pub async fn http_get(url: &str) -> String {
    // reqwest is built without a default crypto provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(url)
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

/// Opens `/ws/realtime` over a raw TCP socket, writes `frame` as is, and returns the code of the
/// close frame the server answers with (frames before it, such as `ready`, are skipped).
pub async fn raw_close_code(addr: std::net::SocketAddr, frame: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /ws/realtime HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .expect("write handshake");
    let mut data = Vec::new();
    let mut buf = vec![0u8; 4096];
    let head_end = loop {
        let n = tcp.read(&mut buf).await.expect("read handshake");
        assert!(n > 0, "no handshake answer");
        data.extend_from_slice(&buf[..n]);
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    assert!(
        data.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&data)
    );
    data.drain(..head_end);
    tcp.write_all(frame).await.expect("write frame");
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            // Server frames are unmasked: 2-byte header, or 4 with a 16-bit length.
            let mut at = 0;
            while at + 2 <= data.len() {
                let (header, len) = match (data[at + 1] & 0x7f) as usize {
                    126 if at + 4 <= data.len() => {
                        (4, u16::from_be_bytes([data[at + 2], data[at + 3]]) as usize)
                    }
                    126 => break,
                    127 => panic!("unexpected 64-bit frame length"),
                    len => (2, len),
                };
                if at + header + len > data.len() {
                    break;
                }
                if data[at] & 0x0f == 0x8 {
                    return u16::from_be_bytes([data[at + header], data[at + header + 1]]);
                }
                at += header + len;
            }
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed without a close frame");
            data.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("close frame in time")
}
