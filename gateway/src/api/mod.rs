//! Seed API surfaces (being written).
