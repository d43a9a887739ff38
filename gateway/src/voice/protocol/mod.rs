//! Sans-IO protocol code: the client dialect and the OpenAI Realtime events.

pub mod okti;
pub mod openai;
