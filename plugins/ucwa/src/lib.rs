//! The `ucwa` sink plugin (not yet implemented).
