//! The `webhook` source plugin (not yet implemented).
