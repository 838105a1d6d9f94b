//! A route's grouping keys (`group_by`, `group_wait_ms`, `group_interval_ms`; issue 16): checked
//! and turned into the router's [`Grouping`].

use std::time::Duration;

use serde_spanned::Spanned;

use super::error::Collector;
use crate::router::{GroupField, Grouping};

/// `group_wait_ms` when a grouped route does not say.
pub const DEFAULT_GROUP_WAIT_MS: u64 = 30_000;
/// `group_interval_ms` when a grouped route does not say.
pub const DEFAULT_GROUP_INTERVAL_MS: u64 = 300_000;
/// The most `group_by` entries a route may name.
pub const MAX_GROUP_BY: usize = 16;
/// The longest `group_wait_ms`: an hour.
pub const MAX_GROUP_WAIT_MS: u64 = 3_600_000;
/// `group_interval_ms` lies within these (a second to a day).
pub const GROUP_INTERVAL_MS: std::ops::RangeInclusive<u64> = 1_000..=86_400_000;

/// The raw grouping keys of one route.
pub struct RawGrouping {
    pub group_by: Option<Spanned<Vec<Spanned<String>>>>,
    pub group_wait_ms: Option<Spanned<u64>>,
    pub group_interval_ms: Option<Spanned<u64>>,
}

/// Checks route `route`'s grouping keys; `None` for an ungrouped route (or one in error).
pub fn grouping(c: &mut Collector<'_>, route: &str, raw: RawGrouping) -> Option<Grouping> {
    let Some(by) = raw.group_by else {
        for (key, given) in [
            ("group_wait_ms", raw.group_wait_ms.as_ref()),
            ("group_interval_ms", raw.group_interval_ms.as_ref()),
        ] {
            if let Some(v) = given {
                c.at(
                    Some(v.span()),
                    format!("route `{route}`: `{key}` needs `group_by`"),
                );
            }
        }
        return None;
    };
    let span = by.span();
    let by = by.into_inner();
    let mut ok = true;
    if by.is_empty() {
        c.at(
            Some(span.clone()),
            format!("route `{route}`: `group_by` is empty (leave it out for no grouping)"),
        );
        ok = false;
    }
    if by.len() > MAX_GROUP_BY {
        c.at(
            Some(span),
            format!(
                "route `{route}`: `group_by` names {} fields; at most {MAX_GROUP_BY}",
                by.len()
            ),
        );
        ok = false;
    }
    let mut fields: Vec<GroupField> = Vec::new();
    for name in &by {
        let field = GroupField::parse(name.get_ref());
        let bad = match &field {
            GroupField::Label(l) => l.is_empty() || l.len() > 256,
            _ => false,
        };
        if bad {
            c.at(
                Some(name.span()),
                format!("route `{route}`: group_by: a label name is 1 to 256 bytes"),
            );
            ok = false;
        } else if fields.contains(&field) {
            c.at(
                Some(name.span()),
                format!(
                    "route `{route}`: group_by: `{}` is named twice",
                    name.get_ref()
                ),
            );
            ok = false;
        } else {
            fields.push(field);
        }
    }
    let wait = raw.group_wait_ms.map_or(DEFAULT_GROUP_WAIT_MS, |w| {
        if *w.get_ref() > MAX_GROUP_WAIT_MS {
            c.at(
                Some(w.span()),
                format!(
                    "route `{route}`: `group_wait_ms` is at most {MAX_GROUP_WAIT_MS} (an hour)"
                ),
            );
            ok = false;
        }
        *w.get_ref()
    });
    let interval = raw.group_interval_ms.map_or(DEFAULT_GROUP_INTERVAL_MS, |i| {
        if !GROUP_INTERVAL_MS.contains(i.get_ref()) {
            c.at(
                Some(i.span()),
                format!(
                    "route `{route}`: `group_interval_ms` lies within {} and {} (a second to a day)",
                    GROUP_INTERVAL_MS.start(),
                    GROUP_INTERVAL_MS.end()
                ),
            );
            ok = false;
        }
        *i.get_ref()
    });
    ok.then(|| Grouping {
        by: fields,
        wait: Duration::from_millis(wait),
        interval: Duration::from_millis(interval),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{
        config::Config,
        router::{GroupField, Grouping},
    };

    const BASE: &str = r#"
[host]
data_dir = "/var/lib/alertbridge"

[[sink]]
name = "lync"
plugin = "ucwa"

[[route]]
name = "r"
users = ["sip:a@x"]
sinks = ["lync"]
"#;

    fn parse(extra: &str) -> Result<Option<Grouping>, Vec<String>> {
        Config::parse(Path::new("t.toml"), &format!("{BASE}{extra}"))
            .map(|c| c.router.routes[0].grouping.clone())
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn group_by_names_labels_and_alert_fields_with_defaults_for_the_times() {
        assert_eq!(parse(""), Ok(None), "no group_by: no grouping");
        let g = parse("group_by = [\"alertname\", \"source\", \"labels.severity\"]\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            g.by,
            [
                GroupField::Label("alertname".into()),
                GroupField::Source,
                GroupField::Label("severity".into()),
            ]
        );
        assert_eq!(
            (g.wait.as_millis(), g.interval.as_millis()),
            (30_000, 300_000)
        );
        let g = parse("group_by = [\"cluster\"]\ngroup_wait_ms = 0\ngroup_interval_ms = 1000\n")
            .unwrap()
            .unwrap();
        assert_eq!((g.wait.as_millis(), g.interval.as_millis()), (0, 1_000));
    }

    #[test]
    fn mistakes_are_reported_at_their_place_all_at_once() {
        let errors = parse(
            "group_by = [\"cluster\", \"cluster\", \"labels.\"]\ngroup_wait_ms = 3600001\ngroup_interval_ms = 999\n",
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "t.toml:13:24: route `r`: group_by: `cluster` is named twice",
                "t.toml:13:35: route `r`: group_by: a label name is 1 to 256 bytes",
                "t.toml:14:17: route `r`: `group_wait_ms` is at most 3600000 (an hour)",
                "t.toml:15:21: route `r`: `group_interval_ms` lies within 1000 and 86400000 (a second to a day)",
            ]
        );
        assert_eq!(
            parse("group_by = []\n").unwrap_err(),
            ["t.toml:13:12: route `r`: `group_by` is empty (leave it out for no grouping)"]
        );
        assert_eq!(
            parse("group_wait_ms = 10\n").unwrap_err(),
            ["t.toml:13:17: route `r`: `group_wait_ms` needs `group_by`"]
        );
        let many: Vec<String> = (0..17).map(|i| format!("\"l{i}\"")).collect();
        let errors = parse(&format!("group_by = [{}]\n", many.join(", "))).unwrap_err();
        assert_eq!(
            errors,
            ["t.toml:13:12: route `r`: `group_by` names 17 fields; at most 16"]
        );
        assert_eq!(
            parse("group_by = \"cluster\"\n").map_err(|e| e.len()),
            Err(1),
            "a list is needed"
        );
    }
}
