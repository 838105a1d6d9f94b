//! The simulator's state: its configuration, the provisioned users and what they received,
//! issued tokens, and the applications each signed-in client created.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use super::events::Channel;

/// How the simulator behaves; `Default` is a single-pool server with 8-hour tokens.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Where the autodiscover, user and token endpoints listen (and everything else when
    /// `pool_listen` is `None`).
    pub listen: SocketAddr,
    /// A second listener serving `applications`, with tokens of its own (a second pool).
    pub pool_listen: Option<SocketAddr>,
    /// The provisioned users.
    pub users: Vec<UserSpec>,
    /// Lifetime of issued tokens (`expires_in`).
    pub token_lifetime: Duration,
    /// How long a P-GET is parked before it is released empty.
    pub pget_timeout: Duration,
    /// How long a recipient "takes" to answer an invitation.
    pub answer_delay: Duration,
    /// How long an unanswered (ignored) invitation rings before it fails.
    pub invitation_timeout: Duration,
    /// Answer `GET /` with a `redirect` link first (one hop, as hybrid topologies do).
    pub redirect_hop: bool,
    /// With `pool_listen`: the web host's `user` document points at the `user` document of the
    /// pool host (another token needed) instead of naming `applications` itself.
    pub user_hop: bool,
    /// Reject a presented but invalid or expired token with `403` + `Warning: 120 .. "InvalidToken"`
    /// (as SfB Online does) instead of a `401`.
    pub invalid_token_403: bool,
    /// Answer the first this-many UCWA requests with `429 Too Many Requests`.
    pub throttle_first: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            pool_listen: None,
            users: Vec::new(),
            token_lifetime: Duration::from_secs(8 * 3600),
            pget_timeout: Duration::from_secs(180),
            answer_delay: Duration::ZERO,
            invitation_timeout: Duration::from_secs(30),
            redirect_hop: false,
            user_hop: false,
            invalid_token_403: false,
            throttle_first: 0,
        }
    }
}

/// Options beyond [`SimConfig`]: the host names the simulator puts in its links, and HTTP
/// redirects on the way to its documents and its token endpoint.
#[derive(Clone, Debug, Default)]
pub struct SimOptions {
    /// The host name of the web listener in every link and in [`super::SimHandle::discover_url`],
    /// instead of its address. Use a name under `localhost` (e.g. `lyncweb.contoso.localhost`),
    /// which a client resolves to loopback (RFC 6761).
    pub web_host: Option<String>,
    /// The host name of the pool listener in its links.
    pub pool_host: Option<String>,
    /// `GET /` answers `302` to the root document, and the token endpoint answers `307` to a
    /// second path that grants (the POST and its body must be carried over).
    pub http_redirects: bool,
}

/// One provisioned user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSpec {
    /// `alice@contoso.com` (the SIP URI without `sip:`).
    pub user: String,
    pub password: String,
    /// A UCWA availability: Online, Busy, DoNotDisturb, Away, BeRightBack, Offline, ...
    pub availability: String,
}

impl UserSpec {
    pub fn new(user: &str, password: &str, availability: &str) -> Self {
        Self {
            user: normalize(user),
            password: password.to_owned(),
            availability: availability.to_owned(),
        }
    }
}

/// A users file is malformed.
#[derive(Debug, thiserror::Error)]
pub enum UsersFileError {
    /// The file could not be read.
    #[error("read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A line does not have `user password [availability]`.
    #[error("line {line}: expected `user password [availability]`")]
    Line { line: usize },
}

/// Parses a users file: one `user password [availability]` per line, `#` starts a comment.
pub fn parse_users(text: &str) -> Result<Vec<UserSpec>, UsersFileError> {
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            [user, password] => users.push(UserSpec::new(user, password, "Online")),
            [user, password, availability] => {
                users.push(UserSpec::new(user, password, availability))
            }
            _ => return Err(UsersFileError::Line { line: i + 1 }),
        }
    }
    Ok(users)
}

/// Reads and parses a users file.
pub fn load_users(path: &Path) -> Result<Vec<UserSpec>, UsersFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| UsersFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_users(&text)
}

/// `sip:Alice@Contoso.com` → `alice@contoso.com`.
pub fn normalize(user: &str) -> String {
    let user = user.trim();
    let user = user
        .strip_prefix("sip:")
        .or_else(|| user.strip_prefix("SIP:"))
        .unwrap_or(user);
    user.to_ascii_lowercase()
}

/// What a user does with an incoming IM invitation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "behaviour", rename_all = "snake_case")]
pub enum Behaviour {
    /// Accept it (the default).
    Accept,
    /// Decline it; the invitation fails with `RemoteFailure` and this subcode and message.
    Decline {
        #[serde(default = "default_decline_subcode")]
        subcode: String,
        #[serde(default = "default_decline_message")]
        message: String,
    },
    /// Let it ring until `invitation_timeout`, then fail as unanswered.
    Ignore,
}

fn default_decline_subcode() -> String {
    "Declined".into()
}

fn default_decline_message() -> String {
    "Your invitation was declined.".into()
}

impl Behaviour {
    /// A plain decline, as the Lync client sends it.
    pub fn decline() -> Self {
        Self::Decline {
            subcode: default_decline_subcode(),
            message: default_decline_message(),
        }
    }
}

/// One IM a user received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedIm {
    /// SIP URI of the sender.
    pub from: String,
    /// The conversation subject.
    pub subject: String,
    /// Importance of the invitation (Normal, Urgent, Emergency).
    pub importance: String,
    /// `text/plain` or `text/html`.
    pub content_type: String,
    /// The decoded message text.
    pub text: String,
    /// When it arrived, Unix milliseconds.
    pub at_unix_ms: u64,
    /// The conversation it came in (its href as the sender sees it).
    #[serde(default)]
    pub conversation: String,
}

/// A provisioned user's live state.
#[derive(Debug)]
pub struct User {
    pub password: String,
    pub availability: String,
    pub behaviour: Behaviour,
    pub received: Vec<ReceivedIm>,
}

/// An issued token.
#[derive(Debug)]
pub struct Token {
    pub user: String,
    /// The listener that issued it (`false` = web, `true` = pool); tokens are valid only there.
    pub pool: bool,
    pub expires: Instant,
}

/// One conversation of an application: started by it, or by a person (`incoming`).
#[derive(Debug)]
pub struct Conversation {
    /// The other person.
    pub to: String,
    pub subject: String,
    pub importance: String,
    pub connected: bool,
    pub messages: u32,
    /// When it started, Unix milliseconds.
    pub started_ms: u64,
    /// Started by a person: the invitation and its first message.
    pub incoming: Option<IncomingInvite>,
}

/// The incoming invitation of a conversation a person started with the bot.
#[derive(Clone, Debug)]
pub struct IncomingInvite {
    /// The invitation's id.
    pub invitation: String,
    pub text: String,
    pub html: bool,
}

/// One application (a signed-in endpoint of a user).
#[derive(Debug)]
pub struct App {
    pub owner: String,
    pub endpoint_id: String,
    pub user_agent: String,
    pub culture: String,
    pub available: bool,
    pub conversations: HashMap<String, Conversation>,
    pub channel: Channel,
    pub notify: Arc<Notify>,
}

/// Everything behind the simulator's lock.
#[derive(Debug)]
pub struct Inner {
    pub users: HashMap<String, User>,
    pub tokens: HashMap<String, Token>,
    pub apps: HashMap<String, App>,
    /// Ids of applications that were deleted (answered 410, not 404).
    pub gone: Vec<String>,
    pub throttle: u32,
    /// `401` challenges answered so far.
    pub challenges: u64,
    /// Batch requests answered so far.
    pub batches: u64,
    /// P-GETs released with 409 PGetReplaced so far.
    pub replaced_pgets: u64,
    pub throttle_retry_after: Option<u64>,
    pub next_id: u64,
}

/// Shared state of one running simulator.
#[derive(Debug)]
pub struct Sim {
    pub config: SimConfig,
    pub options: SimOptions,
    /// `http://127.0.0.1:PORT` (or `http://NAME:PORT`) of the web listener.
    pub web_base: String,
    /// `http://127.0.0.1:PORT` (or `http://NAME:PORT`) of the listener that serves applications.
    pub pool_base: String,
    /// Port of the pool listener when it is separate.
    pub pool_port: Option<u16>,
    pub inner: Mutex<Inner>,
    /// Flips to `true` when the simulator stops; parked P-GETs are released.
    pub stopping: watch::Receiver<bool>,
}

impl Sim {
    pub fn new(
        config: SimConfig,
        options: SimOptions,
        web: SocketAddr,
        pool: Option<SocketAddr>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        let users = config
            .users
            .iter()
            .map(|u| {
                let user = User {
                    password: u.password.clone(),
                    availability: u.availability.clone(),
                    behaviour: Behaviour::Accept,
                    received: Vec::new(),
                };
                (u.user.clone(), user)
            })
            .collect();
        let throttle = config.throttle_first;
        let base = |addr: SocketAddr, name: &Option<String>| match name {
            Some(name) => format!("http://{name}:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        let web_base = base(web, &options.web_host);
        let pool_base = match pool {
            Some(pool) => base(pool, &options.pool_host),
            None => web_base.clone(),
        };
        Self {
            web_base,
            pool_base,
            options,
            pool_port: pool.map(|p| p.port()),
            inner: Mutex::new(Inner {
                users,
                tokens: HashMap::new(),
                apps: HashMap::new(),
                gone: Vec::new(),
                throttle,
                challenges: 0,
                batches: 0,
                replaced_pgets: 0,
                throttle_retry_after: None,
                next_id: 100,
            }),
            config,
            stopping,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// A fresh id for applications, conversations, invitations and tokens.
    pub fn id(&mut self) -> String {
        self.next_id += 1;
        format!("{:x}{:04x}", self.next_id, rand::random::<u16>())
    }
}

/// Now as Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_lines_parse_with_default_availability() {
        let users = parse_users("# demo\nsip:Alice@contoso.com pw Online\nbob@contoso.com pw2\n\ncarol@contoso.com x Offline # away\n").unwrap();
        assert_eq!(users[0], UserSpec::new("alice@contoso.com", "pw", "Online"));
        assert_eq!(users[1].availability, "Online");
        assert_eq!(users[2].availability, "Offline");
        assert!(matches!(
            parse_users("only-a-name\n"),
            Err(UsersFileError::Line { line: 1 })
        ));
    }
}
