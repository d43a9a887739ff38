//! voxgate-dsp: the audio building blocks of voxgate.
//!
//! Pure computation: nothing here knows of tokio, sockets or clocks.
