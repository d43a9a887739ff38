//! Client transports: they move frames between a socket and a session and decide nothing.

pub mod ws;
