//! The chat domain (being written).
