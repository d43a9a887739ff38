//! The chat API surfaces over real sockets: seed 004 (chatbot WebSocket client) and seed 000 (IntentLayer
//! sessions), against the in-process server with the local text engine and SQLite.

#[path = "chat/common.rs"]
mod common;

#[path = "chat/chatbot.rs"]
mod chatbot;

#[path = "chat/intentlayer.rs"]
mod intentlayer;
