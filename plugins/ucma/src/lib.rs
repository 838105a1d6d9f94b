//! The `ucma` sink plugin (not yet implemented).
