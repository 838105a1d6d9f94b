//! Template tests.
