//! A damaged queue file at start, through the real binary and a real queue file written by
//! it: truncated, corrupted bytes in one record, emptied (0 bytes), deleted. Each start is one
//! readable line and exit 1 (never a panic, never a silent fresh start); `alertbridge queue
//! check` says what is wrong; `alertbridge queue salvage` brings back every readable alert,
//! keeping the damaged file aside; one undecodable record is set aside while the rest flow.
//!
//! On the segment log (`[queue] backend = "log"`): a segment cut short, a damaged frame after
//! a SIGKILL, an undecodable document and a deleted log, each refused (or set aside) the same
//! way and named by `queue check`. Salvage is redb's alone (a redb file's pages are rewritten
//! in place, so it scans them; a log is append-only and a start refuses damage with the
//! segment and byte), so the salvage scenarios stay redb-only.
//!
//! Needs the built workspace (`cargo build --workspace`).

mod queue_support;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use alertbridge_testbed::harness::{free_port, wait_until};
use queue_support::*;

const SEEDED: usize = 60;

struct Seeded {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    data: PathBuf,
    config: PathBuf,
    admin: u16,
    seqs: Vec<String>,
}

impl Seeded {
    fn file(&self) -> PathBuf {
        self.data.join("queue.redb")
    }

    fn config_arg(&self) -> String {
        self.config.display().to_string()
    }

    fn start(&self) -> Bridge {
        Bridge::start(&self.config, self.admin, &self.dir.join("host.log"), None)
    }
}

/// A queue file holding `SEEDED` unfinished alerts (the recipient is offline, so they are
/// held), written by the real host and closed cleanly.
fn seeded() -> Seeded {
    seeded_then(Backend::Redb, Bridge::stop)
}

/// The same, the host ended by `end` (e.g. a SIGKILL: the file is not closed cleanly).
fn seeded_then(backend: Backend, end: impl FnOnce(&mut Bridge)) -> Seeded {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let data = dir.join("data");
    let (admin, hook) = (free_port(), free_port());
    let config = webhook_config_on(backend, &dir, &data, admin, hook, "");
    set_online(&dir, false);
    let mut b = Bridge::start(&config, admin, &dir.join("host.log"), None);
    let mut seqs = Vec::new();
    for i in 0..SEEDED {
        let seq = format!("d{i}");
        let (status, _, body) = post_alert(hook, &alert(&seq, 300));
        assert_eq!(status, 202, "{body}");
        seqs.push(seq);
    }
    // Let the dispatcher route them (held: a second version of each record).
    std::thread::sleep(Duration::from_millis(800));
    end(&mut b);
    Seeded {
        _dir: tmp,
        dir,
        data,
        config,
        admin,
        seqs,
    }
}

/// Runs `alertbridge ARGS`, which must exit within 30 s (a start that carries on is a
/// failure): exit code and stderr.
fn must_exit(args: &[&str], log: &Path) -> (Option<i32>, String) {
    let _ = fs::remove_file(log);
    let mut child = spawn(args, log, None);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`alertbridge {}` started instead of refusing; log:\n{}",
                args.join(" "),
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), fs::read_to_string(log).unwrap_or_default())
}

/// The refusal is one line saying `expect`, exit code 1, and no panic.
fn assert_one_line_refusal(code: Option<i32>, stderr: &str, expect: &[&str]) {
    assert_eq!(code, Some(1), "exit code; stderr:\n{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "a panic instead of an error:\n{stderr}"
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("alertbridge:"))
        .collect();
    assert_eq!(lines.len(), 1, "want one error line:\n{stderr}");
    for e in expect {
        assert!(lines[0].contains(e), "`{e}` missing from: {}", lines[0]);
    }
}

/// Ends the host with SIGKILL.
fn kill(b: &mut Bridge) {
    if let Some(mut c) = b.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Sets byte 5 of every stored version of alert d7 to a control character (inside a JSON key),
/// in `bytes`; how many it found.
fn spoil_d7(bytes: &mut [u8]) -> usize {
    let needle = br#"{"subject":"queue test d7","#;
    let mut hits = 0;
    let mut i = 0;
    while let Some(p) = bytes[i..].windows(needle.len()).position(|w| w == needle) {
        let at = i + p;
        bytes[at + 5] = 0x01;
        hits += 1;
        i = at + needle.len();
    }
    hits
}

fn run_refused(s: &Seeded) -> (Option<i32>, String) {
    must_exit(
        &["run", "--config", &s.config_arg()],
        &s.dir.join("refused.log"),
    )
}

#[test]
fn a_truncated_queue_file_is_one_line_at_start_and_salvage_brings_back_what_is_readable() {
    let s = seeded();
    let len = fs::metadata(s.file()).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(s.file())
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let (code, stderr) = run_refused(&s);
    assert_one_line_refusal(
        code,
        &stderr,
        &["queue.redb", "damaged", "alertbridge queue salvage"],
    );

    let (status, out, err) = run_cli(&["queue", "check", "--config", &s.config_arg()]);
    assert_eq!(status.code(), Some(1), "check: {out}{err}");
    assert!(out.contains("problem:"), "{out}");

    let (status, out, err) = run_cli(&["queue", "salvage", "--config", &s.config_arg()]);
    assert_eq!(status.code(), Some(0), "salvage: {out}{err}");
    let unfinished: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("recovered "))
        .and_then(|l| l.split_once('(').map(|(_, r)| r))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no recovered count in: {out}"));
    assert!(unfinished > 0, "nothing recovered: {out}");
    let kept: Vec<_> = fs::read_dir(&s.data)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("queue.redb.damaged-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "the damaged file is kept aside");
    assert_eq!(kept[0].metadata().unwrap().len(), len / 2, "kept as it was");
    let (status, out, _) = run_cli(&["queue", "check", "--config", &s.config_arg()]);
    assert_eq!(
        status.code(),
        Some(0),
        "the salvaged file checks clean: {out}"
    );

    // The salvaged queue starts, and every recovered alert goes out once.
    set_online(&s.dir, true);
    let b = s.start();
    wait_until("the recovered alerts at the sink", LONG, || {
        delivered_seqs(&s.dir).len() >= unfinished
    });
    std::thread::sleep(Duration::from_millis(500));
    let got = delivered_seqs(&s.dir);
    assert_eq!(got.len(), unfinished, "{got:?}; log:\n{}", b.log());
    assert!(got.iter().all(|g| s.seqs.contains(g)), "{got:?}");
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "one alert went out twice: {got:?}");
}

#[test]
fn one_undecodable_record_is_set_aside_and_reported_while_the_rest_flow() {
    undecodable_set_aside(Backend::Redb);
}

#[test]
fn one_undecodable_document_in_the_log_is_set_aside_and_reported_while_the_rest_flow() {
    undecodable_set_aside(Backend::Log);
}

fn undecodable_set_aside(backend: Backend) {
    let s = seeded_then(backend, Bridge::stop);
    let files = match backend {
        Backend::Redb => vec![s.file()],
        Backend::Log => log_segments(&s.data),
    };
    let mut hits = 0;
    for f in &files {
        let mut bytes = fs::read(f).unwrap();
        hits += spoil_d7(&mut bytes);
        if backend == Backend::Log {
            // Written whole (good checksums) by something else than this host.
            reseal_log_frames(&mut bytes);
        }
        fs::write(f, &bytes).unwrap();
    }
    assert!(hits > 0, "alert d7 not found in the queue file");

    let (status, out, err) = run_cli(&["queue", "check", "--config", &s.config_arg()]);
    assert_eq!(status.code(), Some(1), "check: {out}{err}");
    assert!(out.contains("undecodable record: alert"), "{out}");

    set_online(&s.dir, true);
    let mut b = s.start();
    assert_eq!(b.metric("alertbridge_queue_set_aside"), Some(1.0));
    assert_eq!(b.metric("alertbridge_queue_set_aside_total"), Some(1.0));
    assert!(b.log().contains("set aside"), "{}", b.log());
    let rest: Vec<String> = s.seqs.iter().filter(|q| *q != "d7").cloned().collect();
    wait_delivered_once(&s.dir, &rest, || b.log());
    assert!(!delivered_seqs(&s.dir).contains(&"d7".to_owned()));
    b.stop();

    let (status, out, _) = run_cli(&["queue", "check", "--config", &s.config_arg()]);
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(
        out.contains("records set aside at earlier starts (undecodable): 1"),
        "{out}"
    );
}

#[test]
fn an_emptied_or_deleted_queue_file_is_refused_unless_the_operator_accepts_it() {
    let s = seeded();
    fs::write(s.file(), b"").unwrap();
    let (code, stderr) = run_refused(&s);
    assert_one_line_refusal(code, &stderr, &["is empty", "--accept-empty-queue"]);
    let (status, out, _) = run_cli(&["queue", "check", "--config", &s.config_arg()]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("empty"), "{out}");

    fs::remove_file(s.file()).unwrap();
    let (code, stderr) = run_refused(&s);
    assert_one_line_refusal(code, &stderr, &["is missing", "--accept-empty-queue"]);
    let (status, out, _) = run_cli(&["queue", "check", "--config", &s.config_arg()]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("missing"), "{out}");
    accepted_empty_then_started(&s);
}

#[test]
fn a_deleted_log_is_refused_unless_the_operator_accepts_it() {
    let s = seeded_then(Backend::Log, Bridge::stop);
    fs::remove_dir_all(s.data.join("queue-log")).unwrap();
    let (code, stderr) = run_refused(&s);
    assert_one_line_refusal(
        code,
        &stderr,
        &["queue-log", "holds no log segment", "--accept-empty-queue"],
    );
    let (status, out, _) = run_cli(&["queue", "check", "--config", &s.config_arg()]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("holds no log segment"), "{out}");
    accepted_empty_then_started(&s);
}

/// The operator says so: a fresh queue, and the next plain start is fine.
fn accepted_empty_then_started(s: &Seeded) {
    let log = s.dir.join("accepted.log");
    let mut child = spawn(
        &["run", "--config", &s.config_arg(), "--accept-empty-queue"],
        &log,
        None,
    );
    let admin = format!("http://127.0.0.1:{}/healthz", s.admin);
    wait_until("the accepted start", LONG, || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        alertbridge_testbed::harness::get(&admin).is_some()
    });
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let b = s.start();
    assert_eq!(b.metric("alertbridge_queue_up"), Some(1.0));
}

/// Salvages, then starts the salvaged queue with the recipient online: every alert in `want`
/// goes out exactly once.
fn salvage_and_deliver(s: &Seeded, want: &[String]) {
    let (status, out, err) = run_cli(&["queue", "salvage", "--config", &s.config_arg()]);
    assert_eq!(status.code(), Some(0), "salvage: {out}{err}");
    assert!(
        out.contains("not finished") && out.contains("kept at"),
        "{out}"
    );
    let (status, out, _) = run_cli(&["queue", "check", "--config", &s.config_arg()]);
    assert_eq!(
        status.code(),
        Some(0),
        "the salvaged file checks clean: {out}"
    );
    set_online(&s.dir, true);
    let b = s.start();
    wait_delivered_once(&s.dir, want, || b.log());
    std::thread::sleep(Duration::from_millis(300));
    let got = delivered_seqs(&s.dir);
    assert_eq!(got.len(), want.len(), "{got:?}");
}

#[test]
fn corrupt_bytes_in_the_file_header_are_one_line_at_start_and_salvage_recovers_every_alert() {
    let s = seeded();
    let mut bytes = fs::read(s.file()).unwrap();
    for b in &mut bytes[..4096] {
        *b = 0x5a;
    }
    fs::write(s.file(), &bytes).unwrap();

    let (code, stderr) = run_refused(&s);
    assert_one_line_refusal(
        code,
        &stderr,
        &["queue.redb", "damaged", "alertbridge queue check"],
    );
    let (status, out, _) = run_cli(&["queue", "check", "--config", &s.config_arg()]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("problem:") && out.contains("damaged"), "{out}");
    // Only the header was hit: every alert document is still in the file.
    salvage_and_deliver(&s, &s.seqs);
}

#[test]
fn a_corrupt_record_in_a_file_left_by_a_crash_is_refused_then_salvage_keeps_the_rest() {
    // After a SIGKILL redb verifies every page at the next open, so a damaged record makes
    // the whole file unreadable to it: the start is refused; salvage scans the bytes.
    let s = seeded_then(Backend::Redb, kill);
    let mut bytes = fs::read(s.file()).unwrap();
    assert!(
        spoil_d7(&mut bytes) > 0,
        "alert d7 not found in the queue file"
    );
    fs::write(s.file(), &bytes).unwrap();

    let (code, stderr) = run_refused(&s);
    assert_one_line_refusal(code, &stderr, &["queue.redb", "damaged"]);
    let rest: Vec<String> = s.seqs.iter().filter(|q| *q != "d7").cloned().collect();
    salvage_and_deliver(&s, &rest);
}

#[test]
fn a_log_segment_cut_short_is_one_line_at_start_and_check_names_it() {
    let s = seeded_then(Backend::Log, Bridge::stop);
    let segment = &log_segments(&s.data)[0];
    let bytes = fs::read(segment).unwrap();
    // Cut in the middle of the frame halfway through the segment: a cut on a frame boundary
    // would look like a shorter log, which no reader can tell from one.
    let frames = log_frames(&bytes);
    let middle = &frames[frames.len() / 2];
    let cut = middle.start + LOG_FRAME_HEADER + (middle.len() - LOG_FRAME_HEADER) / 2;
    fs::write(segment, &bytes[..cut]).unwrap();

    let (code, stderr) = run_refused(&s);
    assert_one_line_refusal(
        code,
        &stderr,
        &[
            "queue-log",
            "damaged",
            "cut short",
            "alertbridge queue check",
        ],
    );
    let (status, out, err) = run_cli(&["queue", "check", "--config", &s.config_arg()]);
    assert_eq!(status.code(), Some(1), "check: {out}{err}");
    assert!(
        out.contains("problem:") && out.contains("cut short"),
        "{out}"
    );
    assert_eq!(fs::read(segment).unwrap(), bytes[..cut], "nothing changed");
}

#[test]
fn a_damaged_frame_in_a_log_left_by_a_crash_is_one_line_at_start_and_check_names_it() {
    let s = seeded_then(Backend::Log, kill);
    let segment = &log_segments(&s.data)[0];
    let mut bytes = fs::read(segment).unwrap();
    assert!(spoil_d7(&mut bytes) > 0, "alert d7 not found in the log");
    fs::write(segment, &bytes).unwrap();

    let (code, stderr) = run_refused(&s);
    assert_one_line_refusal(
        code,
        &stderr,
        &["queue-log", "damaged", "fails its checksum"],
    );
    let (status, out, _) = run_cli(&["queue", "check", "--config", &s.config_arg()]);
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(out.contains("fails its checksum"), "{out}");
    assert_eq!(fs::read(segment).unwrap(), bytes, "nothing changed");
}
