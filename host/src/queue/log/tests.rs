//! The log queue: the backend contract ([`crate::queue::contract_tests`]) and recovery.

use super::*;

crate::queue::contract_tests::contract_tests!(|dir, options, metrics, on_commit| {
    LogQueue::open_with(dir, options, metrics, on_commit).map(|q| Box::new(q) as _)
});
