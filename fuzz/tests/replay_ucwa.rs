//! Replays the saved inputs of the ucwa plugin targets (see common/mod.rs).

mod common;

#[path = "../targets/ucwa.rs"]
mod ucwa;

#[path = "../targets/ucwa_batch.rs"]
mod ucwa_batch;

#[test]
fn ucwa_corpus() {
    common::replay("ucwa", ucwa::run);
}

#[test]
fn ucwa_batch_corpus() {
    common::replay("ucwa_batch", ucwa_batch::run);
}
