//! UCWA server simulator (not yet implemented).
