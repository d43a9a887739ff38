//! OpenAI Realtime events (being written).
