//! Bearer tokens: reading the token list and checking a presented token in constant time.
//!
//! Each accepted token is kept only as its SHA-256 digest. A presented token is hashed and
//! compared with every digest using `subtle`'s constant-time equality, without stopping at a
//! match, so neither the time taken nor the token's length tells a caller how close it came.

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// The accepted bearer tokens, as digests.
#[derive(Default)]
pub struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} redacted)", self.digests.len())
    }
}

impl Tokens {
    /// Adds the tokens of a tokens file: one per line; `#` starts a comment, blank lines are
    /// skipped, surrounding whitespace is not part of a token.
    pub fn add_lines(&mut self, text: &str) {
        for line in text.lines() {
            let token = line.split('#').next().unwrap_or("").trim();
            self.add(token);
        }
    }

    /// Adds tokens separated by commas or whitespace (the `tokens_env` format).
    pub fn add_list(&mut self, text: &str) {
        for token in text.split(|c: char| c == ',' || c.is_whitespace()) {
            self.add(token);
        }
    }

    fn add(&mut self, token: &str) {
        if !token.is_empty() {
            self.digests.push(Sha256::digest(token.as_bytes()).into());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// True if and only if `token` is one of the accepted tokens.
    pub fn check(&self, token: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = Choice::from(0);
        for digest in &self.digests {
            found |= digest.ct_eq(&presented);
        }
        bool::from(found)
    }

    /// True if and only if an `Authorization` header value carries an accepted bearer token.
    pub fn check_header(&self, value: Option<&[u8]>) -> bool {
        let Some(value) = value.and_then(|v| std::str::from_utf8(v).ok()) else {
            return false;
        };
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer") && self.check(token.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::Tokens;

    #[test]
    fn lists_and_headers() {
        let mut t = Tokens::default();
        t.add_list("alpha, beta\tgamma,,\n");
        assert!(t.check("alpha") && t.check("beta") && t.check("gamma"));
        assert!(!t.check("") && !t.check("alph") && !t.check("alpha "));
        assert!(t.check_header(Some(b"Bearer beta")));
        assert!(t.check_header(Some(b"bearer  gamma ")));
        assert!(!t.check_header(Some(b"Basic YWxwaGE6")));
        assert!(!t.check_header(Some(b"Bearer")));
        assert!(!t.check_header(Some(b"Bearer delta")));
        assert!(!t.check_header(Some(b"Bearer \xffalpha")));
        assert!(!t.check_header(None));
    }
}
