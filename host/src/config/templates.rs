//! The template keys: `[host] public_url`, and `template` / `template_file` of a `[[route]]`
//! or a `[[sink]]`. Each template is compiled here, so a broken one is reported at its place:
//! an inline template at the key's line plus the error's line within it, a template file at
//! the file's own line and column.

use std::{
    ops::Range,
    path::{Path, PathBuf},
};

use toml_edit::{Item, Table};

use super::error::{Collector, ConfigError, line_col};
use crate::template::{MAX_TEMPLATE_BYTES, Owner, TemplateError, Templates};

/// Where a template's text starts: in the config file (line, column of its first character
/// and the quote it is written in), or in its own file.
enum Origin {
    Inline { line: usize, column: usize },
    File(PathBuf),
}

/// Reads and compiles every template of the file; mistakes go to `c`.
pub(super) fn templates(c: &mut Collector<'_>, root: &Table, text: &str, path: &Path) -> Templates {
    let public_url = public_url(c, root);
    let base = path.parent().unwrap_or(Path::new("."));
    let mut found: Vec<(Owner, String, Origin)> = Vec::new();
    for (kind, tables) in ["route", "sink", "source"]
        .into_iter()
        .filter_map(|kind| Some((kind, root.get(kind)?.as_array_of_tables()?)))
    {
        for table in tables {
            let Some(name) = table.get("name").and_then(Item::as_str) else {
                continue;
            };
            let inline = table.get("template");
            let file = table.get("template_file");
            let key_span = |key: &str| table.key(key).and_then(|k| k.span());
            if kind == "source" {
                for key in ["template", "template_file"]
                    .into_iter()
                    .filter(|k| table.contains_key(k))
                {
                    c.at(
                        key_span(key),
                        format!("source `{name}`: `{key}` is for routes and sinks (a source sends no messages)"),
                    );
                }
                continue;
            }
            let owner = if kind == "route" {
                Owner::Route(name.to_owned())
            } else {
                Owner::Sink(name.to_owned())
            };
            match (inline, file) {
                (None, None) => {}
                (Some(_), Some(_)) => c.at(
                    key_span("template_file"),
                    format!("{owner}: give `template` or `template_file`, not both"),
                ),
                (Some(item), None) => match (item.as_str(), item.span()) {
                    (Some(source), Some(span)) => {
                        let origin = inline_origin(text, span);
                        found.push((owner, source.to_owned(), origin));
                    }
                    _ => c.at(item.span(), format!("{owner}: `template` must be a string")),
                },
                (None, Some(item)) => match item.as_str() {
                    Some(f) => {
                        let file = base.join(f);
                        match read_template(&file) {
                            Ok(source) => found.push((owner, source, Origin::File(file))),
                            Err(why) => c.at(
                                item.span(),
                                format!("{owner}: template_file {}: {why}", file.display()),
                            ),
                        }
                    }
                    None => c.at(
                        item.span(),
                        format!("{owner}: `template_file` must be a string"),
                    ),
                },
            }
        }
    }
    let sources = found
        .iter()
        .map(|(o, s, _)| (o.clone(), s.clone()))
        .collect();
    match Templates::compile(sources, &public_url) {
        Ok(t) => t,
        Err(errors) => {
            for e in errors {
                let origin = found
                    .iter()
                    .find(|(o, _, _)| *o == e.owner)
                    .map(|(_, _, origin)| origin);
                if let Some(origin) = origin {
                    c.errors.push(located(path, origin, &e));
                }
            }
            Templates::default()
        }
    }
}

/// The template file's text: UTF-8, at most [`MAX_TEMPLATE_BYTES`].
fn read_template(file: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(file).map_err(|e| e.to_string())?;
    if meta.len() > MAX_TEMPLATE_BYTES as u64 {
        return Err(format!(
            "{} bytes long; the limit is {MAX_TEMPLATE_BYTES}",
            meta.len()
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())
}

/// Where an inline template's first character is, given the span of its TOML string: after
/// the quote, or at the start of the next line for a multi-line string that begins with a
/// line break (TOML drops that one).
fn inline_origin(text: &str, span: Range<usize>) -> Origin {
    let raw = text.get(span.clone()).unwrap_or("");
    let quote = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
        3
    } else {
        1
    };
    let after = &raw[quote.min(raw.len())..];
    let skip = if quote == 3 && after.starts_with("\r\n") {
        quote + 2
    } else if quote == 3 && after.starts_with('\n') {
        quote + 1
    } else {
        quote
    };
    let (line, column) = line_col(text, span.start + skip.min(raw.len()));
    Origin::Inline { line, column }
}

/// A template error placed in the config file or the template file.
fn located(config: &Path, origin: &Origin, e: &TemplateError) -> ConfigError {
    let message = format!("{}: template: {}", e.owner, e.message);
    match origin {
        Origin::Inline { line, column } => ConfigError {
            file: config.display().to_string(),
            line: line + e.line - 1,
            column: if e.line == 1 {
                column + e.column - 1
            } else {
                e.column
            },
            message,
        },
        Origin::File(file) => ConfigError {
            file: file.display().to_string(),
            line: e.line,
            column: e.column,
            message,
        },
    }
}

/// `[host] public_url`: an absolute http(s) URL with a host, without query or fragment; empty
/// when not set (or wrong, which is reported).
fn public_url(c: &mut Collector<'_>, root: &Table) -> String {
    let Some(item) = root.get("host").and_then(|h| h.get("public_url")) else {
        return String::new();
    };
    let Some(url) = item.as_str() else {
        c.at(item.span(), "[host] public_url: must be a string");
        return String::new();
    };
    match check_public_url(url) {
        Ok(()) => url.trim_end_matches('/').to_owned(),
        Err(why) => {
            c.at(item.span(), format!("[host] public_url: {why}"));
            String::new()
        }
    }
}

/// Why `url` is not an absolute http(s) URL of the status page, if it is not.
pub fn check_public_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') || host.contains('@') {
        return Err("must name a host (and no user)");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters");
    }
    if url.contains(['?', '#']) {
        return Err("must not have a query or a fragment (the alert's is added)");
    }
    if url.len() > 2048 {
        return Err("is longer than 2048 bytes");
    }
    Ok(())
}
