//! Every Prometheus metric of the gateway, named in one place.
//!
//! Why one place: names, label sets and buckets are part of the operational contract (dashboards and alert
//! rules depend on them), so they are declared together and reviewed together. Subsystems only increment.
//!
//! Conventions: prefix `voxgate_`, base units (`_seconds`, `_bytes`), `_total` on counters, labels from small
//! closed sets (transport, direction, reason, kind, route template), never session or user ids.
//! The metrics live in their own [`prometheus::Registry`] rather than the process-global one, so every
//! in-process test server has independent counters.
//!
//! Label values used by more than one module are constants in [`labels`]; known label values are
//! pre-initialised to zero so that dashboards and `rate()` see the series before the first event.

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Label values shared between modules.
pub mod labels {
    /// `transport` of `voxgate_active_sessions`: a voice session over a client WebSocket.
    pub const TRANSPORT_WS: &str = "ws";
    /// `transport`: a voice session over QUIC.
    pub const TRANSPORT_QUIC: &str = "quic";
    /// `transport`: a chat WebSocket (seed 004).
    pub const TRANSPORT_CHAT_WS: &str = "chat_ws";
    /// `direction` of the audio counters: from the client towards the model.
    pub const CLIENT_TO_UPSTREAM: &str = "client_to_upstream";
    /// `direction`: from the model towards the client.
    pub const UPSTREAM_TO_CLIENT: &str = "upstream_to_client";
    /// `reason` of `voxgate_dropped_frames_total`: the client reads too slowly, oldest output dropped.
    pub const DROP_CLIENT_SLOW: &str = "client_slow";
    /// `reason`: the client sends faster than the upstream takes it.
    pub const DROP_INPUT_FLOOD: &str = "input_flood";
    /// `reason`: a frame larger than allowed.
    pub const DROP_OVERSIZE: &str = "oversize";
    /// `reason`: a frame that does not parse (odd byte count, bad JSON, ...).
    pub const DROP_INVALID: &str = "invalid";
    /// `reason` of `voxgate_connections_rejected_total`: the overall connection cap.
    pub const CONN_REJECT_MAX_CONNECTIONS: &str = "max_connections";
    /// `reason`: the per-IP connection cap.
    pub const CONN_REJECT_PER_IP: &str = "per_ip";
    /// `reason`: the server is shutting down.
    pub const CONN_REJECT_SHUTTING_DOWN: &str = "shutting_down";
    /// `model_kind` of `voxgate_model_latency_seconds`: the built-in local model.
    pub const MODEL_LOCAL: &str = "local";
    /// `model_kind`: an OpenAI-compatible HTTP model.
    pub const MODEL_OPENAI_COMPAT: &str = "openai_compat";
    /// `phase` of `voxgate_model_latency_seconds`: request to first token.
    pub const PHASE_FIRST_TOKEN: &str = "first_token";
    /// `phase`: request to last token.
    pub const PHASE_TOTAL: &str = "total";
    /// `kind` of `voxgate_chat_tokens_total`.
    pub const TOKENS_PROMPT: &str = "prompt";
    /// `kind` of `voxgate_chat_tokens_total`.
    pub const TOKENS_COMPLETION: &str = "completion";
    /// `surface` of `voxgate_chat_requests_total` and `voxgate_rate_limited_total`: seed 004's chatbot.
    pub const SURFACE_CHATBOT: &str = "chatbot";
    /// `surface`: seed 000's IntentLayer API.
    pub const SURFACE_INTENTLAYER: &str = "intentlayer";
    /// `result` of `voxgate_history_page_lookups_total`: the page was served from the cache.
    pub const LOOKUP_HIT: &str = "hit";
    /// `result`: the page was read from the store (absent, or its session changed since).
    pub const LOOKUP_MISS: &str = "miss";
}

/// All gateway metrics. Cheap to share as `Arc<Metrics>`; every field is a handle into the registry.
pub struct Metrics {
    registry: Registry,
    /// `voxgate_build_info{version}`: always 1; carries the version as a label.
    pub build_info: IntGaugeVec,
    /// `voxgate_active_sessions{transport}`: live sessions (`ws`, `quic`, `chat_ws`).
    pub active_sessions: IntGaugeVec,
    /// `voxgate_audio_frames_total{direction}`: audio frames relayed.
    pub audio_frames_total: IntCounterVec,
    /// `voxgate_audio_bytes_total{direction}`: PCM bytes relayed.
    pub audio_bytes_total: IntCounterVec,
    /// `voxgate_relay_latency_seconds`: time a frame spends in the gateway, from the kernel's receipt of its bytes
    /// (so the wait in the socket for the gateway to read it counts: a saturated gateway shows here) to its write.
    pub relay_latency_seconds: Histogram,
    /// `voxgate_time_to_first_audio_seconds`: end of user speech to the first model audio sent to the client.
    pub time_to_first_audio_seconds: Histogram,
    /// `voxgate_upstream_connects_total`: upstream realtime connections opened.
    pub upstream_connects_total: IntCounter,
    /// `voxgate_upstream_errors_total{kind}`: upstream failures (`connect`, `handshake`, `protocol`,
    /// `closed`, `timeout`, `server_error`, ...).
    pub upstream_errors_total: IntCounterVec,
    /// `voxgate_upstream_reconnects_total`: reconnects and rollovers to a fresh upstream session.
    pub upstream_reconnects_total: IntCounter,
    /// `voxgate_barge_ins_total`: model replies interrupted by user speech.
    pub barge_ins_total: IntCounter,
    /// `voxgate_dropped_frames_total{reason}`: `client_slow`, `input_flood`, `oversize`, `invalid`.
    pub dropped_frames_total: IntCounterVec,
    /// `voxgate_sessions_rejected_total{reason}`: sessions refused (`max_sessions`, `shutting_down`,
    /// `upstream_unavailable`, ...).
    pub sessions_rejected_total: IntCounterVec,
    /// `voxgate_http_requests_total{route,method,status}`, by matched route template.
    pub http_requests_total: IntCounterVec,
    /// `voxgate_http_request_duration_seconds{route,method}`: time to the response head.
    pub http_request_duration_seconds: HistogramVec,
    /// `voxgate_connections_open`: open TCP connections.
    pub connections_open: IntGauge,
    /// `voxgate_connections_rejected_total{reason}`: `max_connections`, `per_ip`, `shutting_down`.
    pub connections_rejected_total: IntCounterVec,
    /// `voxgate_chat_requests_total{surface}`: chat turns by API surface (`chatbot`, `intentlayer`, ...).
    pub chat_requests_total: IntCounterVec,
    /// `voxgate_chat_tokens_total{kind}`: `prompt` and `completion` tokens.
    pub chat_tokens_total: IntCounterVec,
    /// `voxgate_rate_limited_total{surface}`: requests (or chat messages) refused by a surface's rate limit.
    pub rate_limited_total: IntCounterVec,
    /// `voxgate_model_latency_seconds{model_kind,phase}`: text model latency; `model_kind` is `local` or
    /// `openai_compat`, `phase` is `first_token` or `total`.
    pub model_latency_seconds: HistogramVec,
    /// `voxgate_store_errors_total`: storage operations that failed.
    pub store_errors_total: IntCounter,
    /// `voxgate_history_page_lookups_total{result}`: IntentLayer history reads, by whether the rendered page
    /// cache had the page (`hit`) or the store was read (`miss`).
    pub history_page_lookups_total: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// 10 µs to 100 ms: a relay hop should take microseconds; anything near 100 ms is a stall.
const RELAY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1,
];
/// 10 ms to 10 s: conversational latency.
const FIRST_AUDIO_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
];
/// 1 ms to 10 s: HTTP handlers, most of which answer in well under 10 ms.
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// 5 ms to 60 s: text models, from a local engine's first token to a long remote completion.
const MODEL_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

impl Metrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Self {
        Self::try_new().expect("metric definitions are static and valid")
    }

    fn try_new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let metric = IntCounter::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let counter_vec =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let gauge_vec =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
                let metric = IntGaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let histogram =
            |name: &str, help: &str, buckets: &[f64]| -> prometheus::Result<Histogram> {
                let metric =
                    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
                registry.register(Box::new(metric.clone()))?;
                Ok(metric)
            };
        let histogram_vec = |name: &str,
                             help: &str,
                             labels: &[&str],
                             buckets: &[f64]|
         -> prometheus::Result<HistogramVec> {
            let metric = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };

        let connections_open = IntGauge::new("voxgate_connections_open", "Open TCP connections.")?;
        registry.register(Box::new(connections_open.clone()))?;

        let metrics = Metrics {
            build_info: gauge_vec(
                "voxgate_build_info",
                "Build information; always 1.",
                &["version"],
            )?,
            active_sessions: gauge_vec(
                "voxgate_active_sessions",
                "Live sessions by transport.",
                &["transport"],
            )?,
            audio_frames_total: counter_vec(
                "voxgate_audio_frames_total",
                "Audio frames relayed, by direction.",
                &["direction"],
            )?,
            audio_bytes_total: counter_vec(
                "voxgate_audio_bytes_total",
                "PCM audio bytes relayed, by direction.",
                &["direction"],
            )?,
            relay_latency_seconds: histogram(
                "voxgate_relay_latency_seconds",
                "Time an audio frame spends in the gateway, from its arrival on the socket to its write.",
                RELAY_BUCKETS,
            )?,
            time_to_first_audio_seconds: histogram(
                "voxgate_time_to_first_audio_seconds",
                "End of user speech to the first model audio sent to the client.",
                FIRST_AUDIO_BUCKETS,
            )?,
            upstream_connects_total: counter(
                "voxgate_upstream_connects_total",
                "Upstream realtime connections opened.",
            )?,
            upstream_errors_total: counter_vec(
                "voxgate_upstream_errors_total",
                "Upstream realtime failures, by kind.",
                &["kind"],
            )?,
            upstream_reconnects_total: counter(
                "voxgate_upstream_reconnects_total",
                "Upstream reconnects and session rollovers.",
            )?,
            barge_ins_total: counter(
                "voxgate_barge_ins_total",
                "Model replies interrupted by user speech.",
            )?,
            dropped_frames_total: counter_vec(
                "voxgate_dropped_frames_total",
                "Audio frames dropped, by reason.",
                &["reason"],
            )?,
            sessions_rejected_total: counter_vec(
                "voxgate_sessions_rejected_total",
                "Sessions refused, by reason.",
                &["reason"],
            )?,
            http_requests_total: counter_vec(
                "voxgate_http_requests_total",
                "HTTP requests by route template, method and status.",
                &["route", "method", "status"],
            )?,
            http_request_duration_seconds: histogram_vec(
                "voxgate_http_request_duration_seconds",
                "HTTP request duration to the response head, by route template and method.",
                &["route", "method"],
                HTTP_BUCKETS,
            )?,
            connections_open,
            connections_rejected_total: counter_vec(
                "voxgate_connections_rejected_total",
                "TCP connections refused, by reason.",
                &["reason"],
            )?,
            chat_requests_total: counter_vec(
                "voxgate_chat_requests_total",
                "Chat turns by API surface.",
                &["surface"],
            )?,
            chat_tokens_total: counter_vec(
                "voxgate_chat_tokens_total",
                "Text model tokens, by kind (prompt or completion).",
                &["kind"],
            )?,
            rate_limited_total: counter_vec(
                "voxgate_rate_limited_total",
                "Requests refused by a rate limit, by API surface.",
                &["surface"],
            )?,
            model_latency_seconds: histogram_vec(
                "voxgate_model_latency_seconds",
                "Text model latency by model kind and phase (first_token or total).",
                &["model_kind", "phase"],
                MODEL_BUCKETS,
            )?,
            store_errors_total: counter(
                "voxgate_store_errors_total",
                "Storage operations that failed.",
            )?,
            history_page_lookups_total: counter_vec(
                "voxgate_history_page_lookups_total",
                "IntentLayer history reads, by whether the page came from the page cache (hit) or the store (miss).",
                &["result"],
            )?,
            registry,
        };

        metrics
            .build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for transport in [
            labels::TRANSPORT_WS,
            labels::TRANSPORT_QUIC,
            labels::TRANSPORT_CHAT_WS,
        ] {
            metrics.active_sessions.with_label_values(&[transport]);
        }
        for direction in [labels::CLIENT_TO_UPSTREAM, labels::UPSTREAM_TO_CLIENT] {
            metrics.audio_frames_total.with_label_values(&[direction]);
            metrics.audio_bytes_total.with_label_values(&[direction]);
        }
        for reason in [
            labels::DROP_CLIENT_SLOW,
            labels::DROP_INPUT_FLOOD,
            labels::DROP_OVERSIZE,
            labels::DROP_INVALID,
        ] {
            metrics.dropped_frames_total.with_label_values(&[reason]);
        }
        for reason in [
            labels::CONN_REJECT_MAX_CONNECTIONS,
            labels::CONN_REJECT_PER_IP,
            labels::CONN_REJECT_SHUTTING_DOWN,
        ] {
            metrics
                .connections_rejected_total
                .with_label_values(&[reason]);
        }
        for surface in [labels::SURFACE_CHATBOT, labels::SURFACE_INTENTLAYER] {
            metrics.rate_limited_total.with_label_values(&[surface]);
        }
        for result in [labels::LOOKUP_HIT, labels::LOOKUP_MISS] {
            metrics
                .history_page_lookups_total
                .with_label_values(&[result]);
        }
        for kind in [labels::TOKENS_PROMPT, labels::TOKENS_COMPLETION] {
            metrics.chat_tokens_total.with_label_values(&[kind]);
        }
        for model_kind in [labels::MODEL_LOCAL, labels::MODEL_OPENAI_COMPAT] {
            for phase in [labels::PHASE_FIRST_TOKEN, labels::PHASE_TOTAL] {
                metrics
                    .model_latency_seconds
                    .with_label_values(&[model_kind, phase]);
            }
        }
        Ok(metrics)
    }

    /// The registry, for subsystems that want to register a collector of their own. Prefer adding the
    /// metric here so it is named with the others.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        // Encoding to a Vec cannot fail for I/O reasons; a failure would be an invalid metric, which the
        // constructor rules out. Report it in the output rather than panic in a scrape.
        if let Err(err) = TextEncoder::new().encode(&families, &mut buffer) {
            return format!("# voxgate: failed to encode metrics: {err}\n");
        }
        String::from_utf8(buffer)
            .unwrap_or_else(|err| format!("# voxgate: metrics are not UTF-8: {err}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_family_with_help_and_type() {
        let metrics = Metrics::new();
        metrics
            .http_request_duration_seconds
            .with_label_values(&["/health", "GET"])
            .observe(0.002);
        metrics
            .http_requests_total
            .with_label_values(&["/health", "GET", "200"])
            .inc();
        metrics.relay_latency_seconds.observe(0.000_02);
        metrics.time_to_first_audio_seconds.observe(0.4);
        let text = metrics.render();
        for name in [
            "voxgate_build_info",
            "voxgate_active_sessions",
            "voxgate_audio_frames_total",
            "voxgate_audio_bytes_total",
            "voxgate_relay_latency_seconds",
            "voxgate_time_to_first_audio_seconds",
            "voxgate_upstream_connects_total",
            "voxgate_upstream_reconnects_total",
            "voxgate_barge_ins_total",
            "voxgate_dropped_frames_total",
            "voxgate_http_requests_total",
            "voxgate_http_request_duration_seconds",
            "voxgate_connections_open",
            "voxgate_connections_rejected_total",
            "voxgate_chat_tokens_total",
            "voxgate_rate_limited_total",
            "voxgate_model_latency_seconds",
            "voxgate_store_errors_total",
            "voxgate_history_page_lookups_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing:\n{text}"
            );
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{name} help missing"
            );
        }
        assert!(text.contains(&format!(
            "voxgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
    }
}
