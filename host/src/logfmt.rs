//! How the binary writes an event's fields: like tracing-subscriber's default (`message`
//! first, then `name=value`), except that every control character in a value — newline,
//! carriage return, ESC and the rest — is written escaped (`\n`, `\u{1b}`), as are Unicode
//! line separators and bidi overrides. A log line is therefore always one line and carries no
//! terminal control sequence, whatever an alert's text or a plugin's log message holds: no
//! sender can forge a log line or repaint an operator's terminal.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing_subscriber::{
    field::RecordFields,
    fmt::{FormatFields, format::Writer},
};

/// The field formatter of the binary's log subscriber.
#[derive(Debug, Default)]
pub struct EscapedFields;

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Visitor {
            writer,
            empty: true,
            result: Ok(()),
            scratch: String::new(),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Visitor<'w> {
    writer: Writer<'w>,
    empty: bool,
    result: fmt::Result,
    scratch: String,
}

impl Visitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        let name = field.name();
        // Metadata of records re-emitted from the `log` crate (plugins): shown elsewhere.
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        self.scratch.clear();
        let _ = self.scratch.write_fmt(value);
        let sep = if self.empty { "" } else { " " };
        self.empty = false;
        self.result = if name == "message" {
            write!(self.writer, "{sep}{}", Escaped(&self.scratch))
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.writer, "{sep}{name}={}", Escaped(&self.scratch))
        };
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

/// Text with every character that could break or recolour a log line escaped.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(needs_escape) {
            f.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or_default();
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c => write!(f, "\\u{{{:x}}}", u32::from(c))?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        let text =
            "disk full\n2026-12-07T00:00:00Z  INFO forged\r\x1b[2J\u{85}\u{2028}\u{202e}é\tend";
        assert_eq!(
            Escaped(text).to_string(),
            "disk full\\n2026-12-07T00:00:00Z  INFO forged\\r\\u{1b}[2J\\u{85}\\u{2028}\\u{202e}é\\tend"
        );
        assert_eq!(Escaped("plain").to_string(), "plain");
    }

    #[test]
    fn every_field_of_an_event_is_escaped() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields)
            .with_ansi(false)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let subject = "a\nb\x1b[31m";
            tracing::warn!(subject = %subject, quoted = subject, "msg\nforged");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains(r#"msg\nforged subject=a\nb\u{1b}[31m quoted="a\nb\u{1b}[31m""#),
            "{text}"
        );
    }
}
