//! The built-in local realtime engine (being written).
