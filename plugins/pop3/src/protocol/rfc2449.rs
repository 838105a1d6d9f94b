//! RFC 2449: the CAPA listing and the bracketed response codes of `-ERR` replies.
//! <https://www.rfc-editor.org/rfc/rfc2449>

/// What the server said it supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub top: bool,
    pub uidl: bool,
    pub user: bool,
    pub pipelining: bool,
    pub stls: bool,
    pub resp_codes: bool,
    /// SASL mechanisms, upper-case.
    pub sasl: Vec<String>,
    /// Every capability line as sent, for logs.
    pub lines: Vec<String>,
}

impl Capabilities {
    /// Parses the data of a `+OK` answer to CAPA.
    pub fn parse(data: &[u8]) -> Self {
        let mut caps = Self::default();
        for line in String::from_utf8_lossy(data).lines() {
            let line = line.trim();
            let mut words = line.split_ascii_whitespace();
            let Some(name) = words.next() else { continue };
            match name.to_ascii_uppercase().as_str() {
                "TOP" => caps.top = true,
                "UIDL" => caps.uidl = true,
                "USER" => caps.user = true,
                "PIPELINING" => caps.pipelining = true,
                "STLS" => caps.stls = true,
                "RESP-CODES" => caps.resp_codes = true,
                "SASL" => caps.sasl.extend(words.map(str::to_ascii_uppercase)),
                _ => {}
            }
            caps.lines.push(line.to_owned());
        }
        caps
    }

    /// True if and only if the server offers this SASL mechanism.
    pub fn has_sasl(&self, mechanism: &str) -> bool {
        self.sasl.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }
}

/// The response code at the start of a `-ERR` text (RFC 2449 §8, RFC 3206).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseCode {
    /// `[IN-USE]`: another session holds the mailbox lock.
    InUse,
    /// `[LOGIN-DELAY]`: logged in too recently.
    LoginDelay,
    /// `[SYS/TEMP]`: a temporary server-side problem.
    SysTemp,
    /// `[SYS/PERM]`: a permanent server-side problem.
    SysPerm,
    /// `[AUTH]`: the credentials are wrong.
    Auth,
    Other(String),
}

impl ResponseCode {
    /// The code at the start of `text`, if there is one.
    pub fn parse(text: &[u8]) -> Option<Self> {
        let inner = text.strip_prefix(b"[")?;
        let end = inner.iter().position(|&b| b == b']')?;
        let code = String::from_utf8_lossy(&inner[..end]).to_ascii_uppercase();
        Some(match code.as_str() {
            "IN-USE" => Self::InUse,
            "LOGIN-DELAY" => Self::LoginDelay,
            "SYS/TEMP" => Self::SysTemp,
            "SYS/PERM" => Self::SysPerm,
            "AUTH" => Self::Auth,
            _ => Self::Other(code),
        })
    }

    /// True if and only if the same command may succeed later without any change on our side.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Self::InUse | Self::LoginDelay | Self::SysTemp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dovecot_capabilities_before_login() {
        let data = b"CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n";
        let caps = Capabilities::parse(data);
        assert!(
            caps.top && caps.uidl && caps.pipelining && caps.stls && caps.user && caps.resp_codes
        );
        assert!(caps.has_sasl("plain") && caps.has_sasl("LOGIN") && !caps.has_sasl("CRAM-MD5"));
        assert_eq!(caps.lines.len(), 9);
        assert_eq!(
            Capabilities::parse(b"USER\r\n"),
            Capabilities {
                user: true,
                lines: vec!["USER".into()],
                ..Default::default()
            }
        );
    }

    #[test]
    fn response_codes() {
        assert_eq!(
            ResponseCode::parse(b"[AUTH] Authentication failed."),
            Some(ResponseCode::Auth)
        );
        assert_eq!(
            ResponseCode::parse(b"[in-use] locked"),
            Some(ResponseCode::InUse)
        );
        assert!(ResponseCode::parse(b"[SYS/TEMP] try later").is_some_and(|c| c.is_temporary()));
        assert_eq!(
            ResponseCode::parse(b"[X-FOO] bar"),
            Some(ResponseCode::Other("X-FOO".into()))
        );
        assert_eq!(ResponseCode::parse(b"no code [AUTH]"), None);
    }
}
