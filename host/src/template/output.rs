//! A render's output: written into a bounded buffer (a render stops when it is full), then
//! cleaned — control characters out, trailing blanks off, line breaks as `<br/>` in HTML — and
//! the extra filters templates may use.

use std::io;

use alertbridge_plugin_api::kit::format::unix_ms_rfc3339;
use minijinja::{Error, ErrorKind, Value};

/// What a cut text ends with.
pub const CUT_MARK: &str = " … (cut)";

/// A writer that takes at most `limit` bytes and then fails (which stops the render).
pub struct Bounded {
    buf: Vec<u8>,
    limit: usize,
    full: bool,
}

impl Bounded {
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
            full: false,
        }
    }

    /// True once more was offered than fits.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// The text written, cleaned (see [`clean`]), cut and marked if it overflowed; in HTML,
    /// line breaks become `<br/>`. The result stays within the limit.
    pub fn finish(self, html: bool) -> String {
        let text = String::from_utf8_lossy(&self.buf);
        let mut text = clean(&text);
        if html {
            text = text.replace('\n', "<br/>");
        }
        if self.full || text.len() > self.limit {
            let keep = floor_char_boundary(&text, self.limit.saturating_sub(CUT_MARK.len()));
            // In HTML, a cut entity or tag would show as garbage: cut before it.
            let keep = if html {
                text[..keep]
                    .rfind(['&', '<'])
                    .filter(|&i| !text[i..keep].contains(';') && !text[i..keep].contains('>'))
                    .unwrap_or(keep)
            } else {
                keep
            };
            text.truncate(keep);
            text.push_str(CUT_MARK);
        }
        text
    }
}

impl io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.limit - self.buf.len();
        if data.len() > room {
            self.buf.extend_from_slice(&data[..room]);
            self.full = true;
            return Err(io::Error::other("the rendered message is too long"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `text` without control characters (tab and line feed stay; CR LF becomes LF) and without
/// trailing white space.
pub fn clean(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let mut out: String = text
        .chars()
        .filter(|&c| c == '\n' || c == '\t' || !c.is_control())
        .collect();
    out.truncate(out.trim_end().len());
    out
}

/// The largest char boundary of `s` at or below `at`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut at = at.min(s.len());
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// `{{ text | truncate(80) }}`: at most `length` characters (default 255), the last one `…`
/// when cut.
pub fn truncate(value: &Value, length: Option<usize>) -> Result<Value, Error> {
    let length = length.unwrap_or(255);
    let s = value.to_string();
    if s.chars().count() <= length {
        return Ok(Value::from(s));
    }
    let mut out: String = s.chars().take(length.saturating_sub(1)).collect();
    out.push('…');
    Ok(Value::from(out))
}

/// `{{ received_ms | datetime }}`: Unix milliseconds as RFC 3339 in UTC.
pub fn datetime(value: &Value) -> Result<Value, Error> {
    let ms = i64::try_from(value.clone()).map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            "datetime takes Unix milliseconds",
        )
    })?;
    Ok(Value::from(unix_ms_rfc3339(ms)))
}
