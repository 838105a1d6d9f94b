//! The log queue: the backend contract ([`crate::queue::contract_tests`]) and recovery.

use super::*;

crate::queue::contract_tests::contract_tests!(|dir, options, metrics, on_commit| {
    LogQueue::open_with(dir, options, metrics, on_commit).map(|q| Box::new(q) as _)
});

mod recovery {
    use std::{
        path::{Path, PathBuf},
        time::{Duration, Instant},
    };

    use super::{
        segments::{self, failpoint, segment_path},
        *,
    };

    fn options() -> QueueOptions {
        QueueOptions {
            dedup_window: Duration::from_secs(3600),
            ..QueueOptions::default()
        }
    }

    fn open(dir: &Path) -> Result<LogQueue, QueueError> {
        LogQueue::open_with(
            dir,
            &options(),
            Arc::new(Metrics::default()),
            Box::new(drop),
        )
    }

    fn keyed(subject: &str, key: &str) -> Alert {
        let mut a = Alert::new(subject);
        a.dedup_key = Some(key.into());
        a
    }

    fn subjects(q: &LogQueue) -> Vec<String> {
        q.unfinished()
            .unwrap()
            .into_iter()
            .map(|a| a.alert.subject)
            .collect()
    }

    /// The first segment's path and bytes.
    fn first_segment(dir: &Path) -> (PathBuf, Vec<u8>) {
        let path = segment_path(&dir.join(segments::DIR), 1);
        let bytes = std::fs::read(&path).unwrap();
        (path, bytes)
    }

    /// Where each frame of `bytes` starts and ends.
    fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut at = format::HEADER_BYTES;
        while let format::Frame::Good { end, .. } = format::frame_at(bytes, at) {
            out.push((at, end));
            at = end;
        }
        out
    }

    /// Three alerts, each in a frame of its own.
    async fn three(dir: &Path) {
        let q = open(dir).unwrap();
        for s in ["one", "two", "three"] {
            q.enqueue("s", Alert::new(s)).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_torn_last_frame_is_dropped_and_the_log_goes_on_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        three(dir.path()).await;
        let (path, mut bytes) = first_segment(dir.path());
        let f = frames(&bytes);
        assert_eq!(f.len(), 3);
        // The last write got only its first half to disk (the rest is the zero-fill).
        let (start, end) = f[2];
        bytes[(start + end) / 2..end].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        {
            let q = open(dir.path()).expect("a torn last write is not damage");
            assert_eq!(subjects(&q), ["one", "two"]);
            q.enqueue("s", Alert::new("four")).await.unwrap();
        }
        // The torn bytes were cleared: the frame written over them reads back.
        let q = open(dir.path()).unwrap();
        assert_eq!(subjects(&q), ["one", "two", "four"]);
    }

    #[tokio::test]
    async fn a_segment_cut_short_inside_a_frame_is_refused_not_taken_for_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        three(dir.path()).await;
        let (path, bytes) = first_segment(dir.path());
        let (start, end) = frames(&bytes)[1];
        // Cut inside the second frame: the third, acknowledged, is gone with it.
        std::fs::write(&path, &bytes[..(start + end) / 2]).unwrap();
        let e = open(dir.path()).err().expect("refused");
        let text = e.to_string();
        assert!(matches!(e, QueueError::Damaged { .. }), "{text}");
        assert!(text.contains("cut short"), "{text}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes[..(start + end) / 2]);
    }

    #[tokio::test]
    async fn a_checksum_mismatch_mid_log_is_refused_with_one_line_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        three(dir.path()).await;
        let (path, mut bytes) = first_segment(dir.path());
        let (start, _) = frames(&bytes)[0];
        bytes[start + format::FRAME_HEADER + 20] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let Err(e) = open(dir.path()) else {
            panic!("a damaged log must not open")
        };
        let text = e.to_string();
        assert!(matches!(e, QueueError::Damaged { .. }), "{text}");
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("fails its checksum"), "{text}");
        assert!(text.contains("alertbridge queue check"), "{text}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "nothing is dropped or rewritten"
        );
    }

    #[tokio::test]
    async fn a_crash_between_write_and_fdatasync_gives_no_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join(segments::DIR);
        let q = open(dir.path()).unwrap();
        q.enqueue("s", Alert::new("one")).await.unwrap();
        failpoint::set(&log_dir, Some(failpoint::Fail::BeforeSync));
        let refused = q.enqueue("s", Alert::new("two")).await;
        failpoint::set(&log_dir, None);
        assert!(
            matches!(refused, Err(QueueError::Unavailable { .. })),
            "{refused:?}"
        );
        drop(q);
        // The process died there: the frame may have reached the disk whole, torn, or not at
        // all. Torn (the worst case) is dropped; "one" is there either way.
        let (path, mut bytes) = first_segment(dir.path());
        let f = frames(&bytes);
        let (start, end) = f[f.len() - 1];
        assert_eq!(f.len(), 2, "the refused frame was written, not synced");
        bytes[start + 30..end].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let q = open(dir.path()).unwrap();
        assert_eq!(subjects(&q), ["one"]);
    }

    #[tokio::test]
    async fn a_full_disk_makes_the_queue_unavailable_keeps_saves_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join(segments::DIR);
        let metrics = Arc::new(Metrics::default());
        let q = LogQueue::open_with(dir.path(), &options(), Arc::clone(&metrics), Box::new(drop))
            .unwrap();
        let a = q.enqueue("s", Alert::new("a")).await.unwrap().id;
        failpoint::set(&log_dir, Some(failpoint::Fail::Full));
        let mut doc = q.get(a).unwrap().unwrap();
        doc.routed = true;
        doc.finished_ms = Some(1);
        let saved = q.save(&doc).await;
        assert!(
            matches!(saved, Err(QueueError::Unavailable { .. })),
            "{saved:?}"
        );
        let refused = q.enqueue("s", Alert::new("b")).await;
        assert!(
            matches!(&refused, Err(e) if e.retry_after_ms().is_some()),
            "{refused:?}"
        );
        assert!(
            metrics
                .queue_fault()
                .is_some_and(|r| r.contains("os error 28"))
        );
        failpoint::set(&log_dir, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        let b = loop {
            match q.enqueue("s", Alert::new("b")).await {
                Ok(t) => break t.id,
                Err(QueueError::Unavailable { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the queue did not come back: {e}"),
            }
        };
        assert_eq!(b, a + 1);
        assert!(metrics.queue_fault().is_none());
        assert!(
            q.get(a).unwrap().unwrap().is_finished(),
            "the save refused while down was kept and written after the reopen"
        );
        drop(q);
        let q = open(dir.path()).unwrap();
        assert_eq!(subjects(&q), ["b"]);
    }

    #[tokio::test]
    async fn dedup_keys_and_documents_survive_compaction_and_a_leftover_old_segment() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = open(dir.path()).unwrap();
            let a = q.enqueue("s", keyed("a", "k1")).await.unwrap().id;
            q.enqueue("s", keyed("b", "k2")).await.unwrap();
            let mut doc = q.get(a).unwrap().unwrap();
            doc.finished_ms = Some(1);
            q.save(&doc).await.unwrap();
        }
        let old = std::fs::read(segment_path(&dir.path().join(segments::DIR), 1)).unwrap();
        {
            let mut l = segments::open(dir.path(), false, 3_600_000, 100).unwrap();
            // "a" is pushed out of the history; its key stays for the window.
            l.view.docs.remove(&1);
            let view = l.log.compact(&l.view, &l.dedup, l.next_id).unwrap();
            assert_eq!(view.docs.len(), 1);
        }
        // A compaction that stopped before removing the old segment: the base wins.
        std::fs::write(segment_path(&dir.path().join(segments::DIR), 1), &old).unwrap();
        let q = open(dir.path()).unwrap();
        assert_eq!(subjects(&q), ["b"]);
        assert!(q.get(1).unwrap().is_none());
        assert!(
            q.enqueue("s", keyed("a again", "k1"))
                .await
                .unwrap()
                .duplicate
        );
        assert!(
            q.enqueue("s", keyed("b again", "k2"))
                .await
                .unwrap()
                .duplicate
        );
        let c = q.enqueue("s", Alert::new("c")).await.unwrap().id;
        assert_eq!(c, 3, "ids never go back");
        assert!(
            !segment_path(&dir.path().join(segments::DIR), 1).exists(),
            "the obsolete segment is removed at start"
        );
    }

    /// `doc` routed to one recipient, with `outcome`.
    fn routed(mut doc: StoredAlert, outcome: crate::model::Outcome) -> StoredAlert {
        doc.routed = true;
        doc.recipients = vec![crate::model::RecipientRecord {
            route: "r".into(),
            sink: "s".into(),
            user: "u".into(),
            outcome,
            reason: String::new(),
            attempts: 1,
            held_since_ms: None,
            not_before_ms: None,
            updated_ms: 5,
            sending: outcome == crate::model::Outcome::Pending,
            repeat: false,
            digest: None,
            silence: None,
        }];
        doc.finished_ms = outcome.is_final().then_some(6);
        doc
    }

    /// Whether frame `f` of segment bytes `bytes` is one state record.
    fn is_state(bytes: &[u8], (start, end): (usize, usize)) -> bool {
        let body = &bytes[start + format::FRAME_HEADER..end];
        matches!(
            format::records(body).as_deref(),
            Ok([format::Record::State { .. }])
        )
    }

    /// An alert with a long text, sent (a `sending` mark) and delivered: two saves of its
    /// state. Returns the two documents saved.
    async fn sent_and_delivered(q: &LogQueue) -> (StoredAlert, StoredAlert) {
        let mut alert = Alert::new("big");
        alert.body = "x".repeat(2000);
        let id = q.enqueue("s", alert).await.unwrap().id;
        let sending = routed(q.get(id).unwrap().unwrap(), crate::model::Outcome::Pending);
        q.save(&sending).await.unwrap();
        let delivered = routed(sending.clone(), crate::model::Outcome::Delivered);
        q.save(&delivered).await.unwrap();
        (sending, delivered)
    }

    #[tokio::test]
    async fn a_save_of_the_state_only_is_a_small_record_and_reads_back_as_saved() {
        let dir = tempfile::tempdir().unwrap();
        let delivered = {
            let q = open(dir.path()).unwrap();
            let (_, delivered) = sent_and_delivered(&q).await;
            assert_eq!(q.get(delivered.id).unwrap().unwrap(), delivered);
            assert!(q.unfinished().unwrap().is_empty());
            delivered
        };
        let (_, bytes) = first_segment(dir.path());
        let f = frames(&bytes);
        assert_eq!(f.len(), 3);
        for &(start, end) in &f[1..] {
            assert!(is_state(&bytes, (start, end)));
            assert!(end - start < 500, "a save wrote {} bytes", end - start);
        }
        let q = open(dir.path()).unwrap();
        assert_eq!(q.recent(1).unwrap(), std::slice::from_ref(&delivered));
        assert!(q.unfinished().unwrap().is_empty());
        // A save that changes the head is written whole, and later states go on it.
        let mut changed = delivered;
        changed.alert.subject = "renamed".into();
        q.save(&changed).await.unwrap();
        let again = routed(changed.clone(), crate::model::Outcome::Failed);
        q.save(&again).await.unwrap();
        drop(q);
        let q = open(dir.path()).unwrap();
        assert_eq!(q.get(again.id).unwrap().unwrap(), again);
    }

    #[tokio::test]
    async fn a_torn_state_record_leaves_the_alert_as_saved_before() {
        let dir = tempfile::tempdir().unwrap();
        let sending = {
            let q = open(dir.path()).unwrap();
            sent_and_delivered(&q).await.0
        };
        let (path, mut bytes) = first_segment(dir.path());
        let (start, end) = frames(&bytes)[2];
        assert!(is_state(&bytes, (start, end)));
        bytes[(start + end) / 2..end].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        let q = open(dir.path()).expect("a torn last write is not damage");
        assert_eq!(q.get(sending.id).unwrap().unwrap(), sending);
        assert_eq!(q.unfinished().unwrap(), std::slice::from_ref(&sending));
        let delivered = routed(sending, crate::model::Outcome::Delivered);
        q.save(&delivered).await.unwrap();
        drop(q);
        let q = open(dir.path()).unwrap();
        assert_eq!(q.get(delivered.id).unwrap().unwrap(), delivered);
    }

    #[tokio::test]
    async fn a_damaged_state_record_mid_log_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = open(dir.path()).unwrap();
            sent_and_delivered(&q).await;
        }
        let (path, mut bytes) = first_segment(dir.path());
        let (start, end) = frames(&bytes)[1];
        assert!(is_state(&bytes, (start, end)));
        bytes[end - 3] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let e = open(dir.path()).err().expect("refused");
        let text = e.to_string();
        assert!(matches!(e, QueueError::Damaged { .. }), "{text}");
        assert!(
            text.contains(&format!("fails its checksum at byte {start}")),
            "{text}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[tokio::test]
    async fn an_alert_whose_state_record_is_on_another_head_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = open(dir.path()).unwrap();
            sent_and_delivered(&q).await;
        }
        let (path, mut bytes) = first_segment(dir.path());
        let f = frames(&bytes);
        // The last frame again, its state record naming another head (a whole frame, good
        // checksum): written by something else than this code.
        let (start, end) = f[2];
        let body = &bytes[start + format::FRAME_HEADER..end];
        let records = format::records(body).unwrap();
        let [
            format::Record::State {
                id, head_crc, tail, ..
            },
        ] = records[..]
        else {
            panic!("the delivered save is one state record")
        };
        let mut frame = Vec::new();
        let at = format::open_frame(&mut frame);
        let record = format::Record::State {
            id,
            head_crc: head_crc ^ 1,
            tail,
            at: 0,
        };
        format::put(&mut frame, &record);
        format::seal_frame(&mut frame, at, 3);
        assert_eq!(frame.len(), end - start);
        bytes[start..start + frame.len()].copy_from_slice(&frame);
        std::fs::write(&path, &bytes).unwrap();
        let q = open(dir.path()).expect("one alert set aside, the others go on");
        assert!(q.get(id).unwrap().is_none());
        let aside = dir.path().join(segments::DIR).join("set-aside");
        assert!(aside.join(format!("{id}.json")).exists());
    }

    #[tokio::test]
    async fn compaction_writes_documents_whole() {
        let dir = tempfile::tempdir().unwrap();
        let delivered = {
            let q = open(dir.path()).unwrap();
            sent_and_delivered(&q).await.1
        };
        {
            let mut l = segments::open(dir.path(), false, 3_600_000, 100).unwrap();
            assert!(l.view.docs[&delivered.id].state.is_some());
            let view = l.log.compact(&l.view, &l.dedup, l.next_id).unwrap();
            assert!(view.docs[&delivered.id].state.is_none());
        }
        let q = open(dir.path()).unwrap();
        assert_eq!(q.get(delivered.id).unwrap().unwrap(), delivered);
        let failed = routed(delivered, crate::model::Outcome::Failed);
        q.save(&failed).await.unwrap();
        drop(q);
        let q = open(dir.path()).unwrap();
        assert_eq!(q.get(failed.id).unwrap().unwrap(), failed);
    }

    #[test]
    fn a_vanished_log_is_refused_unless_accepted_empty() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        std::fs::remove_dir_all(dir.path().join(segments::DIR)).unwrap();
        let e = open(dir.path()).err().expect("refused");
        assert!(matches!(e, QueueError::Vanished { .. }), "{e}");
        let accept = QueueOptions {
            accept_empty_queue: true,
            ..options()
        };
        LogQueue::open_with(dir.path(), &accept, Arc::default(), Box::new(drop)).unwrap();
    }

    #[test]
    fn a_header_that_is_not_a_segments_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        let (path, mut bytes) = first_segment(dir.path());
        bytes[3] = b'X';
        std::fs::write(&path, &bytes).unwrap();
        let e = open(dir.path()).err().expect("refused");
        assert!(matches!(e, QueueError::Damaged { .. }), "{e}");
    }
}
