//! Replays the saved inputs of the ucma plugin targets (see common/mod.rs).

mod common;

#[path = "../targets/ucma.rs"]
mod ucma;

#[test]
fn ucma_corpus() {
    common::replay("ucma", ucma::run);
}
