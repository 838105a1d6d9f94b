//! The text of a digest IM (issue 16 §1): "[FIRING ×12] HighCPU on eu-1: web01, web02, … (+7
//! more)" as the subject, a bounded list of the alerts it carries as the text, and the link to
//! the full list. One pure function, so the message templates can take it over.

use std::collections::BTreeMap;

/// The alerts a digest line names by their own labels, in this order of preference.
const ITEM_LABELS: [&str; 5] = ["instance", "host", "pod", "service", "job"];
/// Items named in the subject before "… (+N more)".
const SUBJECT_ITEMS: usize = 3;
/// Alerts listed one per line in the text before "… and N more".
const BODY_LINES: usize = 10;
/// Longest piece of an alert's own text (subject, item) the digest quotes.
const QUOTE_CHARS: usize = 120;

/// What a digest says about one alert it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub id: u64,
    pub subject: String,
    pub labels: BTreeMap<String, String>,
    pub resolved: bool,
}

/// A digest's subject and text. `group` is the group's name (its `group_by` values; empty for
/// what waited out a rate limit), `grouped_labels` the labels that make the group (not repeated
/// per alert), `items` the alerts in accept order, `link` where the full list is.
pub fn digest_text(
    group: &[String],
    grouped_labels: &[String],
    items: &[Item],
    link: &str,
) -> (String, String) {
    let resolved = items.iter().filter(|i| i.resolved).count();
    let firing = items.len() - resolved;
    let tag = match (firing, resolved) {
        (f, 0) => format!("[FIRING ×{f}]"),
        (0, r) => format!("[RESOLVED ×{r}]"),
        (f, r) => format!("[FIRING ×{f}, RESOLVED ×{r}]"),
    };
    let values: Vec<&str> = group
        .iter()
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .collect();
    let name = match values.split_first() {
        Some((first, [])) => quote(first),
        Some((first, rest)) => format!("{} on {}", quote(first), quote(&rest.join(", "))),
        None if items.iter().all(|i| i.subject == items[0].subject) && !items.is_empty() => {
            quote(&items[0].subject)
        }
        None => "alerts held by the rate limit".to_owned(),
    };
    let mut names: Vec<String> = Vec::new();
    for item in items {
        let n = item_name(item, grouped_labels, &name);
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let mut subject = format!("{tag} {name}");
    // Nothing to add when the only name is the group's own.
    if names.first().is_some_and(|n| names.len() > 1 || *n != name) {
        let shown = names
            .iter()
            .take(SUBJECT_ITEMS)
            .cloned()
            .collect::<Vec<_>>();
        subject.push_str(": ");
        subject.push_str(&shown.join(", "));
        if names.len() > SUBJECT_ITEMS {
            subject.push_str(&format!(", … (+{} more)", names.len() - SUBJECT_ITEMS));
        }
    }
    let mut body = String::new();
    for item in items.iter().take(BODY_LINES) {
        let state = if item.resolved { "resolved" } else { "firing" };
        let own: Vec<String> = item
            .labels
            .iter()
            .filter(|(k, _)| !grouped_labels.contains(k))
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect();
        body.push_str(&format!("#{} {state}: {}", item.id, quote(&item.subject)));
        if !own.is_empty() {
            body.push_str(&format!(" ({})", quote(&own.join(", "))));
        }
        body.push('\n');
    }
    if items.len() > BODY_LINES {
        body.push_str(&format!("… and {} more\n", items.len() - BODY_LINES));
    }
    body.push_str(&format!("Full list: {link}"));
    (subject, body)
}

/// How the subject names one alert: a label that tells it apart (instance, host, …), else
/// its subject when that says more than the group's name, else its id.
fn item_name(item: &Item, grouped_labels: &[String], group_name: &str) -> String {
    ITEM_LABELS
        .iter()
        .filter(|l| !grouped_labels.iter().any(|g| g == *l))
        .find_map(|l| item.labels.get(*l).filter(|v| !v.is_empty()))
        .map(|v| quote(v))
        .or_else(|| {
            let s = quote(&item.subject);
            (s != group_name).then_some(s)
        })
        .unwrap_or_else(|| format!("#{}", item.id))
}

/// At most [`QUOTE_CHARS`] characters of `text`, on one line.
fn quote(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut chars = one_line.chars();
    let head: String = chars.by_ref().take(QUOTE_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: u64, subject: &str, instance: &str, resolved: bool) -> Item {
        let mut labels = BTreeMap::from([
            ("alertname".to_owned(), "HighCPU".to_owned()),
            ("cluster".to_owned(), "eu-1".to_owned()),
        ]);
        if !instance.is_empty() {
            labels.insert("instance".into(), instance.into());
        }
        Item {
            id,
            subject: subject.into(),
            labels,
            resolved,
        }
    }

    fn grouped() -> (Vec<String>, Vec<String>) {
        (
            vec!["HighCPU".into(), "eu-1".into()],
            vec!["alertname".into(), "cluster".into()],
        )
    }

    #[test]
    fn a_group_names_its_values_and_the_first_few_alerts() {
        let (group, labels) = grouped();
        let items: Vec<Item> = (1..=12)
            .map(|n| item(n, "CPU above 90%", &format!("web{n:02}"), false))
            .collect();
        let (subject, body) = digest_text(&group, &labels, &items, "http://h/x?digest=1");
        assert_eq!(
            subject,
            "[FIRING ×12] HighCPU on eu-1: web01, web02, web03, … (+9 more)"
        );
        assert_eq!(body.lines().count(), 12, "{body}");
        assert!(body.starts_with("#1 firing: CPU above 90% (instance=web01)\n"));
        assert!(body.contains("… and 2 more\n"));
        assert!(body.ends_with("Full list: http://h/x?digest=1"));
    }

    #[test]
    fn resolved_alerts_are_counted_apart() {
        let (group, labels) = grouped();
        let all: Vec<Item> = (1..=12)
            .map(|n| item(n, "CPU ok", &format!("web{n:02}"), true))
            .collect();
        let (subject, _) = digest_text(&group, &labels, &all, "l");
        assert!(
            subject.starts_with("[RESOLVED ×12] HighCPU on eu-1: "),
            "{subject}"
        );
        let mixed = vec![item(1, "a", "web01", false), item(2, "b", "web02", true)];
        let (subject, body) = digest_text(&group, &labels, &mixed, "l");
        assert_eq!(
            subject,
            "[FIRING ×1, RESOLVED ×1] HighCPU on eu-1: web01, web02"
        );
        assert!(body.contains("#2 resolved: b"), "{body}");
    }

    #[test]
    fn without_a_group_the_subjects_name_the_alerts_and_text_is_bounded() {
        let items = vec![
            item(5, "Disk full", "", false),
            item(6, "Disk full", "", false),
        ];
        let (subject, _) = digest_text(&[], &[], &items, "l");
        assert_eq!(subject, "[FIRING ×2] Disk full: #5, #6");
        let long = "x".repeat(10_000);
        let items = vec![item(1, &long, "", false), item(2, "line\nbreak", "", false)];
        let (subject, body) = digest_text(&[], &["alertname".into()], &items, "l");
        assert!(subject.starts_with("[FIRING ×2] alerts held by the rate limit: "));
        assert!(subject.chars().count() < 400, "{}", subject.len());
        assert!(body.contains("#2 firing: line break"), "{body}");
        assert!(body.len() < 2_000);
    }
}
