//! The `pop3` source plugin (not yet implemented).
