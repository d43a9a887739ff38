//! WebSocket limits from one source, [`LimitsConfig`], for every socket the gateway opens or accepts.
//!
//! Why: each WebSocket library defaults to 64 MiB messages and 128 KiB buffers per socket. With thousands of
//! sockets that is both a memory hazard and an easy denial of service, so every client-facing upgrade goes
//! through [`limit_upgrade`] and every outgoing (upstream) connection uses [`upstream_config`].

use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::response::Response;
use futures_util::{Stream, StreamExt as _};
use http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::LimitsConfig;

/// Largest message accepted from an upstream realtime server. Upstreams are trusted more than clients and
/// send larger events (a `response.done` carries the whole reply transcript), so this is above the client
/// limit; it still bounds memory if an upstream misbehaves.
pub const UPSTREAM_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Applies the client-socket limits to an axum upgrade: message and frame size caps, small buffers, a
/// bounded write buffer (backpressure instead of unbounded growth) and RFC 6455 masking enforced.
pub fn limit_upgrade<F>(
    upgrade: WebSocketUpgrade<F>,
    limits: &LimitsConfig,
) -> WebSocketUpgrade<F> {
    upgrade
        .max_message_size(limits.ws_max_message_bytes)
        .max_frame_size(limits.ws_max_frame_bytes)
        .read_buffer_size(limits.ws_read_buffer_bytes)
        .write_buffer_size(limits.ws_write_buffer_bytes)
        .max_write_buffer_size(max_write_buffer(limits, limits.ws_max_message_bytes))
        .accept_unmasked_frames(false)
}

/// Why a request to a WebSocket route is not a WebSocket handshake: the status to answer and the header at
/// fault, for the route's own JSON error. A request that does not ask for an upgrade at all gets 426 Upgrade
/// Required (with [`upgrade_required`]), as the local engine's `/v1/realtime` answers; a handshake with a bad
/// header gets 400.
pub fn rejected_upgrade(rejection: &WebSocketUpgradeRejection) -> (StatusCode, &'static str) {
    use WebSocketUpgradeRejection as R;
    match rejection {
        R::InvalidConnectionHeader(_) => (StatusCode::UPGRADE_REQUIRED, "Connection"),
        R::InvalidUpgradeHeader(_) => (StatusCode::UPGRADE_REQUIRED, "Upgrade"),
        R::InvalidWebSocketVersionHeader(_) => (StatusCode::BAD_REQUEST, "Sec-WebSocket-Version"),
        R::WebSocketKeyHeaderMissing(_) => (StatusCode::BAD_REQUEST, "Sec-WebSocket-Key"),
        R::InvalidProtocolPseudoheader(_) => (StatusCode::BAD_REQUEST, ":protocol"),
        R::MethodNotGet(_) | R::MethodNotConnect(_) => (StatusCode::METHOD_NOT_ALLOWED, "method"),
        // The connection cannot be taken over (not HTTP/1.1 upgradable): nothing the client can fix by a header.
        _ => (rejection.status(), "Connection"),
    }
}

/// Sends the reply to the close frame a client sent, within `timeout`. Tungstenite queues that reply when it
/// reads the client's close frame but writes it only on the socket's next read, write or close (and a write of
/// a close frame of our own then fails as a send after closing), so a handler that drops the socket right after
/// reading the client's close frame leaves the client with 1006 (abnormal closure) instead of a clean close.
/// One more read writes the reply and then meets the end of the stream, once the client shuts its side.
pub async fn reply_to_close<S>(stream: &mut S, timeout: Duration)
where
    S: Stream + Unpin,
{
    let _ = tokio::time::timeout(timeout, stream.next()).await;
}

/// Adds `Upgrade: websocket` to a 426 response, which RFC 9110 requires to name the protocol to upgrade to.
pub fn upgrade_required(mut response: Response) -> Response {
    if response.status() == StatusCode::UPGRADE_REQUIRED {
        response
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    response
}

/// The tungstenite configuration for client sockets the gateway opens itself (upstream realtime servers,
/// test clients), with the same buffer limits as accepted sockets.
pub fn upstream_config(limits: &LimitsConfig) -> WebSocketConfig {
    let max_message = UPSTREAM_MAX_MESSAGE_BYTES.max(limits.ws_max_message_bytes);
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .read_buffer_size(limits.ws_read_buffer_bytes)
        .write_buffer_size(limits.ws_write_buffer_bytes)
        .max_write_buffer_size(max_write_buffer(limits, limits.ws_max_message_bytes))
        .accept_unmasked_frames(false)
}

/// Tungstenite requires the write buffer cap to exceed the flush threshold by at least one message; beyond
/// that the send fails instead of buffering without bound.
fn max_write_buffer(limits: &LimitsConfig, largest_message: usize) -> usize {
    limits
        .ws_write_buffer_bytes
        .saturating_add(largest_message)
        .saturating_mul(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_config_follows_the_limits() {
        let limits = LimitsConfig::default();
        let config = upstream_config(&limits);
        assert_eq!(config.read_buffer_size, limits.ws_read_buffer_bytes);
        assert_eq!(config.write_buffer_size, limits.ws_write_buffer_bytes);
        assert_eq!(config.max_message_size, Some(UPSTREAM_MAX_MESSAGE_BYTES));
        assert!(
            config.max_write_buffer_size > config.write_buffer_size + limits.ws_max_message_bytes
        );
        assert!(!config.accept_unmasked_frames);
    }
}
