//! voxgate: the realtime audio gateway library.
