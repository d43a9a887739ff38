//! Audio codecs: Opus (through libopus) and G.711 mu-law / A-law.

pub mod g711;
pub mod opus;
