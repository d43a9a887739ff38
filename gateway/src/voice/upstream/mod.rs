//! Upstream realtime engines.

pub mod local;
