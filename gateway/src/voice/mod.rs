//! The realtime voice path (being written).

pub mod protocol;
pub mod upstream;
