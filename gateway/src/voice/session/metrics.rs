//! The metric handles one voice session touches, resolved once per session.
//!
//! Label lookups (`with_label_values`) hash and lock, so they happen here at session start, never
//! per frame. The metrics themselves are named and registered in `crate::metrics`.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge};

use crate::metrics::{Metrics, labels};

/// Resolved metric handles (cheap clones of atomics).
#[derive(Debug, Clone)]
pub struct SessionMetrics {
    /// Sessions open on this transport.
    pub active_sessions: IntGauge,
    /// Client -> upstream audio frames and bytes.
    pub frames_in: IntCounter,
    /// Client -> upstream audio bytes.
    pub bytes_in: IntCounter,
    /// Upstream -> client audio frames.
    pub frames_out: IntCounter,
    /// Upstream -> client audio bytes.
    pub bytes_out: IntCounter,
    /// Gateway-added time from socket read to socket write, client -> upstream.
    pub relay_latency_in: Histogram,
    /// Gateway-added time from socket read to socket write, upstream -> client.
    pub relay_latency_out: Histogram,
    /// User turn end to first bot audio frame queued.
    pub time_to_first_audio: Histogram,
    /// Upstream connections opened.
    pub upstream_connects: IntCounter,
    /// Upstream connects that failed.
    pub upstream_errors_connect: IntCounter,
    /// Upstream connections that dropped.
    pub upstream_errors_closed: IntCounter,
    /// Upstream `error` events.
    pub upstream_errors_server: IntCounter,
    /// Upstream reconnects (recoveries and rollovers).
    pub upstream_reconnects: IntCounter,
    /// Barge-ins acted on.
    pub barge_ins: IntCounter,
    /// Bot audio frames dropped because the client read too slowly.
    pub dropped_client_slow: IntCounter,
    /// Client frames refused for their size.
    pub dropped_oversize: IntCounter,
    /// Client frames refused as malformed (odd length, empty).
    pub dropped_invalid: IntCounter,
    /// Client frames that tripped the flood guard.
    pub dropped_flood: IntCounter,
    /// Client frames dropped while the upstream was (re)connecting.
    pub dropped_upstream_unavailable: IntCounter,
}

impl SessionMetrics {
    /// Handles into the gateway's registry for sessions on `transport` (`ws`, `quic`).
    pub fn from_registry(metrics: &Metrics, transport: &str) -> Self {
        let direction = |d: &str| metrics.audio_frames_total.with_label_values(&[d]);
        let bytes = |d: &str| metrics.audio_bytes_total.with_label_values(&[d]);
        let dropped = |reason: &str| metrics.dropped_frames_total.with_label_values(&[reason]);
        let upstream_error = |kind: &str| metrics.upstream_errors_total.with_label_values(&[kind]);
        SessionMetrics {
            active_sessions: metrics.active_sessions.with_label_values(&[transport]),
            frames_in: direction(labels::CLIENT_TO_UPSTREAM),
            bytes_in: bytes(labels::CLIENT_TO_UPSTREAM),
            frames_out: direction(labels::UPSTREAM_TO_CLIENT),
            bytes_out: bytes(labels::UPSTREAM_TO_CLIENT),
            relay_latency_in: metrics.relay_latency_seconds.clone(),
            relay_latency_out: metrics.relay_latency_seconds.clone(),
            time_to_first_audio: metrics.time_to_first_audio_seconds.clone(),
            upstream_connects: metrics.upstream_connects_total.clone(),
            upstream_errors_connect: upstream_error("connect"),
            upstream_errors_closed: upstream_error("closed"),
            upstream_errors_server: upstream_error("server_error"),
            upstream_reconnects: metrics.upstream_reconnects_total.clone(),
            barge_ins: metrics.barge_ins_total.clone(),
            dropped_client_slow: dropped(labels::DROP_CLIENT_SLOW),
            dropped_oversize: dropped(labels::DROP_OVERSIZE),
            dropped_invalid: dropped(labels::DROP_INVALID),
            dropped_flood: dropped(labels::DROP_INPUT_FLOOD),
            dropped_upstream_unavailable: dropped("upstream_unavailable"),
        }
    }

    /// Handles registered nowhere, for unit tests and tools.
    pub fn detached() -> Self {
        // The names are constant and valid, so construction cannot fail.
        let counter = |name: &str| IntCounter::new(name, name).expect("valid metric name");
        let histogram = |name: &str| {
            Histogram::with_opts(HistogramOpts::new(name, name)).expect("valid metric name")
        };
        SessionMetrics {
            active_sessions: IntGauge::new("active", "active").expect("valid metric name"),
            frames_in: counter("frames_in"),
            bytes_in: counter("bytes_in"),
            frames_out: counter("frames_out"),
            bytes_out: counter("bytes_out"),
            relay_latency_in: histogram("relay_in"),
            relay_latency_out: histogram("relay_out"),
            time_to_first_audio: histogram("ttfa"),
            upstream_connects: counter("connects"),
            upstream_errors_connect: counter("errors_connect"),
            upstream_errors_closed: counter("errors_closed"),
            upstream_errors_server: counter("errors_server"),
            upstream_reconnects: counter("reconnects"),
            barge_ins: counter("barge_ins"),
            dropped_client_slow: counter("dropped_client_slow"),
            dropped_oversize: counter("dropped_oversize"),
            dropped_invalid: counter("dropped_invalid"),
            dropped_flood: counter("dropped_flood"),
            dropped_upstream_unavailable: counter("dropped_upstream"),
        }
    }
}
