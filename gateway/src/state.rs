//! Shared state (being written).
