//! Voice integration tests: real sockets on 127.0.0.1:0, the real server, real speech.
//!
//! - `flow`: the seed 002 client flow and the client-facing rules of `/ws/realtime` (in-process engine).
//! - `faults`: barge-in, upstream drops, rollover and fatal errors (fault-injectable upstream).
//! - `engine`: the built-in engine's own protocol tests (local-engine helper).

#[path = "voice/support.rs"]
mod support;

#[path = "voice/flow.rs"]
mod flow;

#[path = "voice/faults.rs"]
mod faults;

#[path = "voice/engine.rs"]
mod engine;
