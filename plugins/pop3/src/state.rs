//! What the source keeps on disk under `state_dir`: the per-mailbox lock file (so two hosts
//! cannot drain one mailbox), in keep mode the UIDLs already turned into alerts, and the UIDLs
//! of quarantined mails; each UIDL file is written atomically (temp file, fsync, rename, fsync
//! of the directory) after every change.

use std::{
    collections::HashSet,
    fs::{self, File, OpenOptions, TryLockError},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

/// Why the state could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Another process (or instance) holds the mailbox lock.
    #[error("mailbox is locked by another instance ({})", .0.display())]
    Locked(PathBuf),
    #[error("state file {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A file name for a mailbox: `user@host:port` with anything unusual replaced.
fn file_stem(mailbox: &str) -> String {
    mailbox
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An exclusive lock on one mailbox, held until dropped (an OS file lock: it goes away with the
/// process, even after SIGKILL).
#[derive(Debug)]
pub struct MailboxLock {
    _file: File,
    path: PathBuf,
}

impl MailboxLock {
    /// Takes the lock without waiting; [`StateError::Locked`] if someone else holds it.
    pub fn acquire(dir: &Path, mailbox: &str) -> Result<Self, StateError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let path = dir.join(format!("{}.lock", file_stem(mailbox)));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(StateError::Locked(path)),
            Err(TryLockError::Error(source)) => return Err(StateError::Io { path, source }),
        }
        // For people looking at the file; the lock itself is what counts.
        let _ = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(Self { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

const SEEN_HEADER: &str =
    "# alertbridge pop3: UIDLs already turned into alerts (keep mode), one per line";
const QUARANTINE_HEADER: &str =
    "# alertbridge pop3: UIDLs of quarantined mails (not fetched again), one per line";

/// A set of UIDLs kept in a file: the mails left on the server that already became alerts
/// (keep mode), or the quarantined ones.
#[derive(Debug)]
pub struct SeenUids {
    path: PathBuf,
    uids: HashSet<String>,
    header: &'static str,
}

impl SeenUids {
    /// Loads the keep-mode state of `mailbox`; a missing file is an empty state.
    pub fn load(dir: &Path, mailbox: &str) -> Result<Self, StateError> {
        Self::load_file(dir, mailbox, "uidl", SEEN_HEADER)
    }

    /// Loads the quarantined UIDLs of `mailbox`; a missing file is an empty set.
    pub fn load_quarantine(dir: &Path, mailbox: &str) -> Result<Self, StateError> {
        Self::load_file(dir, mailbox, "quarantine", QUARANTINE_HEADER)
    }

    fn load_file(
        dir: &Path,
        mailbox: &str,
        ext: &str,
        header: &'static str,
    ) -> Result<Self, StateError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let path = dir.join(format!("{}.{ext}", file_stem(mailbox)));
        let uids = match fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashSet::new(),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        Ok(Self { path, uids, header })
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.uids.contains(uid)
    }

    pub fn len(&self) -> usize {
        self.uids.len()
    }

    /// Records `uid` and writes the state before returning.
    pub fn insert(&mut self, uid: &str) -> Result<(), StateError> {
        if self.uids.insert(uid.to_owned()) {
            self.save()
        } else {
            Ok(())
        }
    }

    /// Forgets UIDLs no longer on the server (so the file does not grow forever).
    pub fn retain_present(&mut self, present: &HashSet<&str>) -> Result<(), StateError> {
        let before = self.uids.len();
        self.uids.retain(|u| present.contains(u.as_str()));
        if self.uids.len() != before {
            self.save()
        } else {
            Ok(())
        }
    }

    fn save(&self) -> Result<(), StateError> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp.{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let mut text = String::with_capacity(self.header.len() + 1 + self.uids.len() * 17);
        text.push_str(self.header);
        text.push('\n');
        let mut sorted: Vec<&String> = self.uids.iter().collect();
        sorted.sort();
        for uid in sorted {
            text.push_str(uid);
            text.push('\n');
        }
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(io_error(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = MailboxLock::acquire(dir.path(), "alerts@127.0.0.1:110").expect("first");
        assert!(lock.path().ends_with("alerts@127.0.0.1_110.lock"));
        let second = MailboxLock::acquire(dir.path(), "alerts@127.0.0.1:110").unwrap_err();
        assert!(matches!(second, StateError::Locked(_)), "{second}");
        assert!(MailboxLock::acquire(dir.path(), "other@127.0.0.1:110").is_ok());
        drop(lock);
        assert!(MailboxLock::acquire(dir.path(), "alerts@127.0.0.1:110").is_ok());
    }

    #[test]
    fn seen_uids_survive_a_reload_and_are_pruned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut seen = SeenUids::load(dir.path(), "a@h:1").expect("load");
        assert_eq!(seen.len(), 0);
        seen.insert("000000016b0c2efa").expect("save");
        seen.insert("000000026b0c2efa").expect("save");
        let mut again = SeenUids::load(dir.path(), "a@h:1").expect("reload");
        assert!(again.contains("000000016b0c2efa") && again.contains("000000026b0c2efa"));
        again
            .retain_present(&HashSet::from(["000000026b0c2efa"]))
            .expect("prune");
        let last = SeenUids::load(dir.path(), "a@h:1").expect("reload");
        assert_eq!((last.len(), last.contains("000000026b0c2efa")), (1, true));
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "temp files left behind: {leftovers:?}");
    }
}
