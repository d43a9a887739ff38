//! Upstream realtime engines: the OpenAI Realtime client and the built-in local engine.

pub mod local;
pub mod openai;

use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream an upstream WebSocket runs over: TCP to the network, or an in-memory duplex to the
/// in-process engine.
pub trait UpstreamIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> UpstreamIo for T {}

/// A boxed [`UpstreamIo`]; one type for every transport keeps one client code path.
pub type BoxedIo = Box<dyn UpstreamIo>;
