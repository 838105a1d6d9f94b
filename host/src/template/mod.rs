//! Message templates: the IM text of a route's (or else a sink's) messages rendered from a
//! minijinja template, in plain text and in HTML; without one, the message is the alert's own
//! subject and text, as it always was.
//!
//! A template comes from outside (the config) and renders what comes from outside (alerts), so
//! both are bounded: a render runs on [`FUEL`] and stops writing at [`MAX_RENDERED_BYTES`]
//! (the text is then cut and marked); a render that fails falls back to the alert's own text,
//! so no message is lost to a template. Plain output is not HTML-escaped but loses control
//! characters (tab and line feed stay); HTML output escapes every value and turns line breaks
//! into `<br/>`.

mod context;
mod output;

use std::{borrow::Cow, collections::BTreeSet, sync::Arc};

use minijinja::{AutoEscape, Environment, ErrorKind};

pub use self::context::{AlertView, Context, MAX_GROUP_ALERTS, alert_url};
use self::{context::Root, output::Bounded};

/// The longest rendered text (plain or HTML), in bytes; longer is cut and marked.
pub const MAX_RENDERED_BYTES: usize = 16 * 1024;

/// The instructions one render may run (minijinja fuel): enough to list hundreds of alerts,
/// not enough for a loop to spin.
pub const FUEL: u64 = 100_000;

/// The longest template source, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// Whose template it is: a route's, or a sink instance's (used when the route has none).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    Route(String),
    Sink(String),
}

impl Owner {
    fn key(&self) -> String {
        match self {
            Self::Route(n) => format!("route:{n}"),
            Self::Sink(n) => format!("sink:{n}"),
        }
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Route(n) => write!(f, "route `{n}`"),
            Self::Sink(n) => write!(f, "sink `{n}`"),
        }
    }
}

/// A template that does not compile, at its line and column (1-based, in the template's own
/// text).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{owner}: template error at line {line}, column {column}: {message}")]
pub struct TemplateError {
    pub owner: Owner,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// What a message says: the subject, the plain text, and (only when a template made it) the
/// HTML form of the text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// The template used, or `None` for the built-in default (the alert's own text).
    pub template: Option<Owner>,
    /// Why the template's render failed (the default text was used instead).
    pub error: Option<String>,
}

/// The compiled templates of one config and the status page's public address.
#[derive(Clone, Debug, Default)]
pub struct Templates {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    env: Environment<'static>,
    owners: BTreeSet<Owner>,
    public_url: String,
}

/// A template's name in the environment, for one output mode.
fn name(owner: &Owner, html: bool) -> String {
    format!("{}{}", owner.key(), if html { ".html" } else { ".txt" })
}

impl Templates {
    /// Compiles `templates` (each checked by a trial render against a sample alert for unknown
    /// filters, tests and functions); `public_url` is the status page's address (or empty).
    /// Answers every template's first error.
    pub fn compile(
        templates: Vec<(Owner, String)>,
        public_url: &str,
    ) -> Result<Self, Vec<TemplateError>> {
        let mut env = environment();
        let mut errors = Vec::new();
        let mut owners = BTreeSet::new();
        for (owner, source) in templates {
            if source.len() > MAX_TEMPLATE_BYTES {
                errors.push(TemplateError {
                    owner,
                    line: 1,
                    column: 1,
                    message: format!(
                        "the template is {} bytes long; the limit is {MAX_TEMPLATE_BYTES}",
                        source.len()
                    ),
                });
                continue;
            }
            let added = env
                .add_template_owned(name(&owner, false), source.clone())
                .and_then(|()| env.add_template_owned(name(&owner, true), source.clone()));
            if let Err(e) = added.and_then(|()| trial(&env, &owner)) {
                errors.push(position(owner, &source, &e));
                continue;
            }
            owners.insert(owner);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                env,
                owners,
                public_url: public_url.trim_end_matches('/').to_owned(),
            }),
        })
    }

    /// The status page's public address (`[host] public_url`), or empty.
    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }

    /// The template that applies to messages of `route` through `sink`: the route's, else the
    /// sink's, else none (the built-in default).
    pub fn applies(&self, route: &str, sink: &str) -> Option<Owner> {
        [Owner::Route(route.to_owned()), Owner::Sink(sink.to_owned())]
            .into_iter()
            .find(|o| self.inner.owners.contains(o))
    }

    /// The message of `ctx` for recipients of `route` through `sink`. Never fails: a template
    /// that cannot render gives the default text, with the reason in [`Rendered::error`].
    pub fn render(&self, route: &str, sink: &str, ctx: &Context) -> Rendered {
        let default = Rendered {
            subject: ctx.subject.clone(),
            text: ctx.text.clone(),
            ..Rendered::default()
        };
        let Some(owner) = self.applies(route, sink) else {
            return default;
        };
        let ctx = self.with_urls(ctx);
        let root = Root::new(&ctx, route, sink, &self.inner.public_url);
        let run = |html: bool| -> Result<String, minijinja::Error> {
            let template = self.inner.env.get_template(&name(&owner, html))?;
            let mut out = Bounded::new(MAX_RENDERED_BYTES);
            match template.render_captured_to(&root, &mut out) {
                Ok(_) => {}
                // Full: what was written is kept, cut and marked.
                Err(_) if out.is_full() => {}
                Err(e) => return Err(e),
            }
            Ok(out.finish(html))
        };
        match run(false).and_then(|text| Ok((text, run(true)?))) {
            Ok((text, html)) => Rendered {
                text,
                html: Some(html),
                template: Some(owner),
                ..default
            },
            Err(e) => {
                let error = format!("{owner}: {}", message(&e));
                tracing::warn!(alert = ctx.alert.id, route, sink, error = %error, "Template failed to render; the alert's own text is sent.");
                Rendered {
                    template: Some(owner),
                    error: Some(error),
                    ..default
                }
            }
        }
    }

    /// `ctx` with each alert's status page address filled in (when there is a public URL).
    fn with_urls<'c>(&self, ctx: &'c Context) -> Cow<'c, Context> {
        let base = &self.inner.public_url;
        if base.is_empty() {
            return Cow::Borrowed(ctx);
        }
        let mut ctx = ctx.clone();
        for a in std::iter::once(&mut ctx.alert).chain(ctx.alerts.iter_mut()) {
            a.url = alert_url(base, a.id);
        }
        Cow::Owned(ctx)
    }
}

/// The environment every config's templates live in: HTML escaping for the `.html` names,
/// fuel, no loading of other templates, and the extra filters.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    env.set_debug(true);
    env.add_filter("truncate", output::truncate);
    env.add_filter("datetime", output::datetime);
    env
}

/// Renders both forms of `owner`'s template against a sample alert; only mistakes in the
/// template itself count (unknown filters, tests, functions, methods; syntax), not what a
/// particular alert's values would do.
fn trial(env: &Environment<'static>, owner: &Owner) -> Result<(), minijinja::Error> {
    let ctx = Context::default();
    let root = Root::new(&ctx, "route", "sink", "");
    for html in [false, true] {
        let template = env.get_template(&name(owner, html))?;
        let mut out = Bounded::new(MAX_RENDERED_BYTES);
        if let Err(e) = template.render_captured_to(&root, &mut out)
            && matches!(
                e.kind(),
                ErrorKind::UnknownFilter
                    | ErrorKind::UnknownTest
                    | ErrorKind::UnknownFunction
                    | ErrorKind::UnknownMethod
                    | ErrorKind::SyntaxError
                    | ErrorKind::TemplateNotFound
            )
        {
            return Err(e);
        }
    }
    Ok(())
}

/// A minijinja error as one line, without the template's internal name.
fn message(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    }
}

/// `e` at its line and column in `source` (column from the error's byte range when known).
fn position(owner: Owner, source: &str, e: &minijinja::Error) -> TemplateError {
    let line = e.line().unwrap_or(1);
    let column = e
        .range()
        .and_then(|r| {
            let before = source.get(..r.start)?;
            let start = before.rfind('\n').map_or(0, |i| i + 1);
            Some(before[start..].chars().count() + 1)
        })
        .unwrap_or(1);
    TemplateError {
        owner,
        line,
        column,
        message: message(e),
    }
}

#[cfg(test)]
mod tests;
