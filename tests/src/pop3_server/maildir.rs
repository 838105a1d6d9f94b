//! The Maildir side: listing a mailbox (`new/` and `cur/`), delivering into it the Maildir way
//! (write in `tmp/`, rename into `new/`), and turning a stored mail into its wire form.

use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// One mail of a mailbox, as a session sees it at login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct StoredMail {
    /// The file's base name before any `:2,` info suffix.
    pub uidl: String,
    pub path: PathBuf,
    /// Octets on the wire: line ends counted as CRLF, before dot-stuffing (RFC 1939 §11).
    pub size: u64,
}

/// Creates `new/`, `cur/` and `tmp/` when missing.
pub(super) fn ensure(maildir: &Path) -> io::Result<()> {
    for sub in ["new", "cur", "tmp"] {
        fs::create_dir_all(maildir.join(sub))?;
    }
    Ok(())
}

/// Every mail in `new/` and `cur/`, oldest first (modification time, then name).
pub(super) fn scan(maildir: &Path) -> io::Result<Vec<StoredMail>> {
    let mut found = Vec::new();
    for sub in ["new", "cur"] {
        for entry in fs::read_dir(maildir.join(sub))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !entry.file_type()?.is_file() {
                continue;
            }
            let path = entry.path();
            let raw = match fs::read(&path) {
                Ok(raw) => raw,
                // Deleted by another process between the listing and the read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let modified = entry.metadata()?.modified()?;
            found.push((
                modified,
                StoredMail {
                    uidl: uidl_of(&name).to_owned(),
                    path,
                    size: wire_len(&raw),
                },
            ));
        }
    }
    found.sort_by(|(ta, a), (tb, b)| ta.cmp(tb).then_with(|| a.uidl.cmp(&b.uidl)));
    Ok(found.into_iter().map(|(_, mail)| mail).collect())
}

/// Mails in `new/` and `cur/`.
pub(super) fn count(maildir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for sub in ["new", "cur"] {
        for entry in fs::read_dir(maildir.join(sub))? {
            let entry = entry?;
            if !entry.file_name().to_string_lossy().starts_with('.') && entry.file_type()?.is_file()
            {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Writes `raw` into `tmp/` and renames it into `new/`; returns its UIDL (the file name).
pub(super) fn deliver(maildir: &Path, raw: &[u8]) -> io::Result<String> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!(
        "{}.M{:06}P{}Q{:06}.alertbridge-test",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = maildir.join("tmp").join(&name);
    fs::write(&tmp, raw)?;
    fs::rename(&tmp, maildir.join("new").join(&name))?;
    Ok(name)
}

/// The UIDL of a Maildir file name: everything before the `:2,` (or `:1,`) info.
pub(super) fn uidl_of(file_name: &str) -> &str {
    file_name
        .split_once(':')
        .map_or(file_name, |(base, _)| base)
}

/// The wire length of a stored mail: bare LFs become CRLF, and a missing final line end is
/// added.
pub(super) fn wire_len(raw: &[u8]) -> u64 {
    let bare_lf = raw
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || raw[i - 1] != b'\r'))
        .count();
    let tail = if raw.is_empty() || raw.ends_with(b"\n") {
        0
    } else {
        2
    };
    (raw.len() + bare_lf + tail) as u64
}

/// The lines of a stored mail without their line ends (CRLF or LF).
fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = raw.strip_suffix(b"\n").unwrap_or(raw);
    body.split(|&b| b == b'\n')
        .filter(move |_| !raw.is_empty())
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// A multi-line response body: each line dot-stuffed and ended by CRLF, then `.` CRLF.
pub(super) fn multiline<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The RETR body of a stored mail.
pub(super) fn retr_body(raw: &[u8]) -> Vec<u8> {
    multiline(lines(raw))
}

/// The TOP body: the header, the blank line, and the first `k` lines of the body.
pub(super) fn top_body(raw: &[u8], k: u32) -> Vec<u8> {
    let mut in_header = true;
    let mut body_lines = 0u32;
    multiline(lines(raw).take_while(|line| {
        if in_header {
            in_header = !line.is_empty();
            return true;
        }
        body_lines += 1;
        body_lines <= k
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIL: &[u8] = b"Subject: a\nFrom: x@y\n\n.dot\nline 2\n..two\nlast";

    #[test]
    fn retr_is_crlf_and_dot_stuffed_and_its_size_is_the_unstuffed_crlf_size() {
        let body = retr_body(MAIL);
        assert_eq!(
            body,
            b"Subject: a\r\nFrom: x@y\r\n\r\n..dot\r\nline 2\r\n...two\r\nlast\r\n.\r\n"
        );
        let unstuffed = b"Subject: a\r\nFrom: x@y\r\n\r\n.dot\r\nline 2\r\n..two\r\nlast\r\n";
        assert_eq!(wire_len(MAIL), unstuffed.len() as u64);
        assert_eq!(wire_len(unstuffed), unstuffed.len() as u64);
        assert_eq!(retr_body(unstuffed), body);
        assert_eq!(retr_body(b""), b".\r\n");
        assert_eq!(wire_len(b""), 0);
    }

    #[test]
    fn top_sends_the_header_and_k_body_lines() {
        assert_eq!(top_body(MAIL, 0), b"Subject: a\r\nFrom: x@y\r\n\r\n.\r\n");
        assert_eq!(
            top_body(MAIL, 2),
            b"Subject: a\r\nFrom: x@y\r\n\r\n..dot\r\nline 2\r\n.\r\n"
        );
        assert_eq!(top_body(MAIL, 99), retr_body(MAIL));
        assert_eq!(
            top_body(b"Subject: only a header\r\n", 5),
            b"Subject: only a header\r\n.\r\n"
        );
    }

    #[test]
    fn uidl_is_the_base_name_before_the_info() {
        assert_eq!(
            uidl_of("1700000000.M1P2Q3.host:2,S"),
            "1700000000.M1P2Q3.host"
        );
        assert_eq!(uidl_of("1700000000.M1P2Q3.host"), "1700000000.M1P2Q3.host");
    }

    #[test]
    fn delivered_mail_is_listed_in_order_with_cur_and_new() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure(dir.path()).expect("ensure");
        fs::write(dir.path().join("cur").join("0000000001.seen:2,S"), b"old\n").expect("seed");
        let a = deliver(dir.path(), b"first\n").expect("deliver");
        let b = deliver(dir.path(), b"second\r\n").expect("deliver");
        let mails = scan(dir.path()).expect("scan");
        let uidls: Vec<&str> = mails.iter().map(|m| m.uidl.as_str()).collect();
        assert_eq!(uidls, ["0000000001.seen", a.as_str(), b.as_str()]);
        assert_eq!(mails.iter().map(|m| m.size).collect::<Vec<_>>(), [5, 7, 8]);
        assert_eq!(count(dir.path()).expect("count"), 3);
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
    }
}
