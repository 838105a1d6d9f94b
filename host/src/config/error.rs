//! Config errors that point at a file, line and column, and the list of all of them.

use std::{fmt, ops::Range, path::Path};

/// One mistake in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the mistake has no place in the file (e.g. a missing file).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// Every mistake found in one config file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} error{} in config:", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// Collects errors while a file is checked, turning byte spans into lines and columns.
pub struct Collector<'a> {
    file: String,
    text: &'a str,
    pub errors: Vec<ConfigError>,
}

impl<'a> Collector<'a> {
    pub fn new(path: &Path, text: &'a str) -> Self {
        Self {
            file: path.display().to_string(),
            text,
            errors: Vec::new(),
        }
    }

    /// Records an error at byte span `span` (or at no place).
    pub fn at(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let (line, column) = span.map_or((0, 0), |s| line_col(self.text, s.start));
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        });
    }

    /// Records an error at a known line and column.
    pub fn at_line(&mut self, (line, column): (usize, usize), message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            message: message.into(),
        });
    }

    /// Records a toml_edit deserialization error (its message only: the `Display` form quotes
    /// the source line), without the value it found.
    pub fn de(&mut self, context: &str, e: &toml_edit::de::Error) {
        let mut message = without_value(e.message().trim_end());
        // A type error does not say which key it is about: name it (the value stays out).
        if is_value_error(&message)
            && let Some(key) = e.span().and_then(|s| key_at(self.text, s.start))
        {
            message = format!("`{key}`: {message}");
        }
        let message = message.as_str();
        let message = if context.is_empty() {
            message.to_owned()
        } else {
            format!("{context}: {message}")
        };
        self.at(e.span(), message);
    }

    pub fn finish<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(self.fail())
        }
    }

    /// The errors recorded so far, in file order.
    pub fn fail(mut self) -> ConfigErrors {
        self.errors.sort_by_key(|e| (e.line, e.column));
        ConfigErrors(self.errors)
    }
}

/// serde's "invalid type: integer `12345678`, expected a string" quotes the value it found,
/// which may be a password typed into the wrong key or without quotes: the value is left out
/// ("invalid type: integer, expected a string"); the line and column still point at it.
pub fn without_value(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = ["invalid type: ", "invalid value: "]
        .iter()
        .filter_map(|p| rest.find(p).map(|i| i + p.len()))
        .min()
    {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        // The kind of value ("integer", "floating point", "string", ...), then its quoted text.
        let Some(quote) = rest.find(['`', '"']) else {
            break;
        };
        let kind = &rest[..quote];
        if kind.contains(',') {
            // No value is quoted in this message ("invalid type: map, expected ...").
            continue;
        }
        out.push_str(kind.trim_end());
        let open = rest.as_bytes()[quote];
        let body = &rest[quote + 1..];
        let end = if open == b'`' {
            body.find('`')
        } else {
            // A Rust-escaped string: the first quote not preceded by a backslash.
            let mut escaped = false;
            body.char_indices().find_map(|(i, c)| {
                let end = c == '"' && !escaped;
                escaped = c == '\\' && !escaped;
                end.then_some(i)
            })
        };
        match end {
            Some(end) => rest = &body[end + 1..],
            // Unterminated: drop everything after the kind rather than risk the value.
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// Whether a message is about a key's value ("invalid type: integer, expected a string"), and
/// so needs the key's name to be understood without the value.
pub fn is_value_error(message: &str) -> bool {
    ["invalid type", "invalid value", "expected a string"]
        .iter()
        .any(|p| message.starts_with(p))
}

/// The key written at the start of the line holding byte `offset` (`key = value`).
pub fn key_at(text: &str, offset: usize) -> Option<&str> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let key = line.split_once('=')?.0.trim().trim_matches(['"', '\'']);
    (!key.is_empty() && !key.starts_with(['[', '#'])).then_some(key)
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::{line_col, without_value};

    #[test]
    fn found_values_are_not_echoed() {
        for (given, shown) in [
            (
                "invalid type: integer `12345678`, expected path string",
                "invalid type: integer, expected path string",
            ),
            (
                r#"invalid type: string "PLANTED \", expected x", expected a sequence"#,
                "invalid type: string, expected a sequence",
            ),
            (
                "invalid value: floating point `1.5`, expected u64",
                "invalid value: floating point, expected u64",
            ),
            (
                "invalid type: map, expected a string",
                "invalid type: map, expected a string",
            ),
            (
                r#"invalid type: string "unterminated"#,
                "invalid type: string",
            ),
            (
                "unknown field `x`, expected `y`",
                "unknown field `x`, expected `y`",
            ),
        ] {
            assert_eq!(without_value(given), shown);
        }
    }

    #[test]
    fn lines_and_columns_are_one_based() {
        let t = "ab\ncdé\nf";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, t.find('f').unwrap()), (3, 1));
        assert_eq!(line_col(t, t.len()), (3, 2));
    }
}
