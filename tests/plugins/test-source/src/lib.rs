//! Test plugin (not yet implemented).
