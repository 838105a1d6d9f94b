//! Replays saved fuzz inputs through a target's plain (non-afl) function: every file of
//! `corpus/<target>/` (what afl found interesting, minimized) and of `regressions/<target>/`
//! (inputs that once crashed or hung a target, kept after the fix).
//!
//! A panic fails the replay even when the code under test catches it (as afl's hook would
//! abort), and so does an input that takes longer than [`SLOW`].

use std::{
    cell::Cell,
    path::{Path, PathBuf},
    sync::Once,
    time::{Duration, Instant},
};

/// Longer than any input may take in a debug build (afl's own limit, release build, is 1 s).
const SLOW: Duration = Duration::from_secs(10);

thread_local! {
    static PANICKED: Cell<bool> = const { Cell::new(false) };
}

fn hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.with(|p| p.set(true));
            previous(info);
        }));
    });
}

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                files.push(e.path());
            }
        }
    }
    files.sort();
    files
}

/// Runs `run` on every saved input of `target`; fails naming each input that panicked or was
/// too slow. There must be saved inputs: a target without any tests nothing.
pub fn replay(target: &str, run: fn(&[u8])) {
    hook();
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no saved inputs for target `{target}` under fuzz/corpus/{target}"
    );
    let started = Instant::now();
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).expect("read a saved input");
        PANICKED.with(|p| p.set(false));
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(|| run(&data));
        let took = t.elapsed();
        if outcome.is_err() || PANICKED.with(Cell::get) {
            failed.push(format!("{}: panicked", path.display()));
        } else if took > SLOW {
            failed.push(format!("{}: took {took:?}", path.display()));
        }
    }
    eprintln!(
        "{target}: {} inputs replayed in {:?}",
        files.len(),
        started.elapsed()
    );
    assert!(
        failed.is_empty(),
        "{} of {} saved inputs of `{target}` fail:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}
