//! A request body that fails when the client goes silent mid-body.
//!
//! The header timeout stops clients that never finish their request head; this stops the sequel, a client
//! that sends a head announcing a body and then trickles or withholds it ("slow POST"), pinning a
//! connection and a handler. Each gap between body chunks may last at most the idle timeout
//! (`limits.header_timeout`); a slow but steady upload is fine. The handler sees a body read error, which
//! extractors turn into a 4xx.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Wraps the request body with an idle timeout, unless the request has no body.
pub fn with_idle_timeout(request: Request, idle: Duration) -> Request {
    if request.body().is_end_stream() {
        return request;
    }
    request.map(|body| Body::new(IdleTimeoutBody::new(body, idle)))
}

/// The body read error: no bytes for `idle`.
#[derive(Debug)]
pub struct BodyIdleTimeout {
    idle: Duration,
}

impl fmt::Display for BodyIdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request body stalled: no data for {:?}", self.idle)
    }
}

impl std::error::Error for BodyIdleTimeout {}

/// See the module docs.
pub struct IdleTimeoutBody {
    inner: Body,
    idle: Duration,
    /// Boxed so the body stays `Unpin`; one allocation per request that has a body.
    deadline: Pin<Box<Sleep>>,
}

impl IdleTimeoutBody {
    /// Wraps `inner`; the first gap is measured from now.
    pub fn new(inner: Body, idle: Duration) -> Self {
        IdleTimeoutBody {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl HttpBody for IdleTimeoutBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = Instant::now() + this.idle;
                this.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|result| result.map_err(Into::into)))
            }
            Poll::Pending => {
                ready!(this.deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(Box::new(BodyIdleTimeout { idle: this.idle }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_body_fails_and_a_steady_one_does_not() {
        let idle = Duration::from_millis(300);
        // A body that yields a chunk every 100 ms: slow but steady, never idle for 300 ms; 500 ms in total.
        let steady = futures_util::stream::unfold(0u8, |n| async move {
            if n == 5 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"chunk")), n + 1))
        });
        let body = IdleTimeoutBody::new(Body::from_stream(steady), idle);
        let bytes = axum::body::to_bytes(Body::new(body), 1024).await.unwrap();
        assert_eq!(bytes.len(), 25);

        // A body that sends one chunk and then nothing.
        let stalled = futures_util::stream::unfold(0u8, |n| async move {
            if n == 1 {
                std::future::pending::<()>().await;
            }
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), n + 1))
        });
        let body = IdleTimeoutBody::new(Body::from_stream(stalled), idle);
        let started = Instant::now();
        let err = axum::body::to_bytes(Body::new(body), 1024)
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains("BodyIdleTimeout"), "{err:?}");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= idle && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
    }
}
