//! The reply grammar (issue 14 §2): what a person paged may type back — `ack [N]`/`a [N]`,
//! `resolve [N]`/`r [N]`, `esc [N]`, `status`, `help` — parsed by a pure, bounded function.
//!
//! Case does not matter, the number may be written `42` or `#42`, and whitespace or punctuation
//! around the words is tolerated (`Ack #42!`, ` r 7. `). Anything else is [`Command::Usage`].

use super::IncidentId;

/// Inputs longer than this are not commands (a pasted log, a chat message): usage.
pub const MAX_COMMAND_LEN: usize = 64;

/// What a reply asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Acknowledge: stop the escalation.
    Ack(Option<IncidentId>),
    /// Resolve: the incident is over.
    Resolve(Option<IncidentId>),
    /// Page the next level now.
    Escalate(Option<IncidentId>),
    /// `silence [N] 2h`: silence alerts like the incident's for this long (ms); the incident
    /// itself is not changed.
    Silence(Option<IncidentId>, i64),
    /// List my open incidents.
    Status,
    /// Explain the commands.
    Help,
    /// Not a command: answer with [`USAGE`].
    Usage,
}

impl Command {
    /// The incident number given, if any.
    pub fn id(self) -> Option<IncidentId> {
        match self {
            Self::Ack(n) | Self::Resolve(n) | Self::Escalate(n) | Self::Silence(n, _) => n,
            Self::Status | Self::Help | Self::Usage => None,
        }
    }
}

/// The answer to anything that is not a command.
pub const USAGE: &str = "Commands: `ack [N]` (or `a`), `resolve [N]` (or `r`), `esc [N]`, \
`silence [N] 2h` (silence alerts like it for 2 hours), `status`, `help` — N is the incident number, e.g. `ack 42`; without it the incident of this \
conversation, or your only open one.";

/// Parses one reply. Pure; looks at no more than [`MAX_COMMAND_LEN`] bytes of trimmed text.
pub fn parse(text: &str) -> Command {
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || is_punct(c));
    if trimmed.len() > MAX_COMMAND_LEN {
        return Command::Usage;
    }
    let mut words = trimmed
        .split(|c: char| c.is_whitespace() || (is_punct(c) && c != '#'))
        .filter(|w| !w.is_empty());
    let Some(verb) = words.next() else {
        return Command::Usage;
    };
    if verb.eq_ignore_ascii_case("silence") {
        return parse_silence(words.collect());
    }
    let number = match words.next() {
        None => None,
        Some(w) => match parse_number(w) {
            Some(n) => Some(n),
            None => return Command::Usage,
        },
    };
    if words.next().is_some() {
        return Command::Usage;
    }
    let verb = verb.to_ascii_lowercase();
    match (verb.as_str(), number) {
        ("ack" | "a", n) => Command::Ack(n),
        ("resolve" | "r", n) => Command::Resolve(n),
        ("esc", n) => Command::Escalate(n),
        ("status", None) => Command::Status,
        ("help", None) => Command::Help,
        _ => Command::Usage,
    }
}

/// Punctuation tolerated around words (not `#`, which marks a number).
fn is_punct(c: char) -> bool {
    matches!(
        c,
        '.' | ',' | '!' | '?' | ';' | ':' | '\'' | '"' | '`' | '(' | ')' | '[' | ']' | '-'
    )
}

/// The rest of `silence [N] DURATION`: an optional number, then a duration (`2h`, `1h30m`).
fn parse_silence(rest: Vec<&str>) -> Command {
    let (number, duration) = match rest.as_slice() {
        [d] => (None, *d),
        [n, d] => match parse_number(n) {
            Some(n) => (Some(n), *d),
            None => return Command::Usage,
        },
        _ => return Command::Usage,
    };
    match crate::silences::parse_duration(duration) {
        Ok(ms) => Command::Silence(number, ms),
        Err(_) => Command::Usage,
    }
}

/// `42` or `#42`: 1..=18 digits, not zero.
fn parse_number(w: &str) -> Option<IncidentId> {
    let digits = w.strip_prefix('#').unwrap_or(w);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match digits.parse::<u64>() {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(IncidentId(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::{Command::*, *};

    fn n(x: u64) -> Option<IncidentId> {
        Some(IncidentId(x))
    }

    #[test]
    fn table() {
        let long = format!("ack {}", " ".repeat(100));
        let cases: &[(&str, Command)] = &[
            ("ack", Ack(None)),
            ("ACK", Ack(None)),
            ("a", Ack(None)),
            ("ack 42", Ack(n(42))),
            ("ack #42", Ack(n(42))),
            ("  Ack #42!  ", Ack(n(42))),
            ("a 7", Ack(n(7))),
            ("ack, 42.", Ack(n(42))),
            ("\tack\n", Ack(None)),
            ("resolve", Resolve(None)),
            ("Resolve #3", Resolve(n(3))),
            ("r 3", Resolve(n(3))),
            ("R", Resolve(None)),
            ("esc", Escalate(None)),
            ("ESC 9", Escalate(n(9))),
            ("status", Status),
            ("Status?", Status),
            ("help", Help),
            ("HELP!", Help),
            ("", Usage),
            ("   ", Usage),
            ("!!!", Usage),
            ("ack 42 now", Usage),
            ("ack me", Usage),
            ("ack 0", Usage),
            ("ack #", Usage),
            ("ack -5", Ack(n(5))),
            ("ack 99999999999999999999", Usage),
            ("acknowledge", Usage),
            ("status 4", Usage),
            ("help 4", Usage),
            ("hello, are you a bot?", Usage),
            ("silence 2h", Silence(None, 7_200_000)),
            ("Silence #42 1h30m.", Silence(n(42), 5_400_000)),
            ("silence 7 45m", Silence(n(7), 2_700_000)),
            ("silence", Usage),
            ("silence 42", Usage),
            ("silence 2x", Usage),
            ("silence 0m", Usage),
            ("silence 400d", Usage),
            ("silence 42 2h now", Usage),
            ("silence me 2h", Usage),
            ("ack#42", Usage),
            ("ａｃｋ", Usage),
            ("ack 4２", Usage),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), *want, "{text:?}");
        }
        // Surrounding whitespace is trimmed before the bound.
        assert_eq!(parse(&long), Ack(None));
    }

    #[test]
    fn bounded() {
        let big = format!("ack 1 {}", "x".repeat(1 << 20));
        assert_eq!(parse(&big), Usage);
        assert_eq!(parse(&"a".repeat(MAX_COMMAND_LEN + 1)), Usage);
        assert_eq!(Command::Ack(n(4)).id(), n(4));
        assert_eq!(Command::Status.id(), None);
    }
}
