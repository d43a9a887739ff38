//! voxgate: the realtime audio gateway library.
//!
//! The binary (`src/main.rs`) is a thin shell over [`server::run`]; everything it does, tests can start
//! in-process on `127.0.0.1:0`.
//!
//! # Layout
//! - [`config`]: one `Config` from CLI flags, environment and an optional TOML file.
//! - [`server`]: the accept loop, shutdown and draining; [`state`]: the handles every handler shares.
//! - [`http`]: router assembly, the HTTP error type, `/health` and `/metrics`.
//! - [`metrics`]: every Prometheus metric, named in one place.
//! - [`voice`]: the realtime voice path (client dialect, session actor, transports, upstreams, local engine).
//! - [`chat`]: the one chat domain: storage, text models, streaming replies.
//! - [`api`]: one thin adapter per seed API surface.
//! - [`speech`]: espeak-ng as a library, shared by the local engine's voice mode and IntentLayer's answers.

pub mod api;
pub mod chat;
pub mod config;
pub mod http;
pub mod metrics;
pub mod net;
pub mod server;
pub mod speech;
pub mod state;
#[doc(hidden)]
pub mod testing;
pub mod voice;
