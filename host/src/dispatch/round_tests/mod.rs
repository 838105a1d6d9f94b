//! Unit tests of the dispatcher rounds (work in progress).
