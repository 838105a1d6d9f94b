//! The `hello-file` sink: "delivers" a message by appending one line per recipient to a file,
//! and answers presence from its config, like a chat server whose users never change status.
//!
//! Deliveries are idempotent by the host's `alert_uid` attribute: a line already in the file
//! for (alert uid, user) is not written again, so a redelivery after a host crash — the host
//! may resend what it had sent but not yet recorded — leaves no second line.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    path::PathBuf,
    sync::{Mutex as StdMutex, PoisonError},
};

use alertbridge_plugin_api::{
    DeliveryStatus, Health, HealthState, Message, PluginError, Presence, PresenceState,
    RecipientResult,
    kit::{Setup, Sink, config_error},
};
use serde::Deserialize;
use tokio::{io::AsyncWriteExt as _, sync::Mutex};

/// The `[sink.config]` table of a `hello-file` sink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The file messages are appended to; absolute, in a folder that exists.
    path: PathBuf,
    /// Presence per user, e.g. `{ "sip:bob@contoso.com" = "offline" }`.
    #[serde(default)]
    presence: BTreeMap<String, String>,
    /// Presence of every user not in `presence`.
    #[serde(default = "default_presence")]
    default_presence: String,
    /// Users that do not exist: a delivery to them is reported as `not_found`.
    #[serde(default)]
    unknown_users: Vec<String>,
}

fn default_presence() -> String {
    "available".into()
}

/// A `hello-file` sink instance.
pub struct HelloFile {
    path: PathBuf,
    presence: BTreeMap<String, PresenceState>,
    default_presence: PresenceState,
    unknown_users: HashSet<String>,
    /// (alert uid, user) pairs in the file; read from it on the first delivery. A tokio mutex:
    /// it is held across the write, so concurrent deliveries append one after the other.
    written: Mutex<Option<HashSet<(String, String)>>>,
    health: StdMutex<Health>,
}

/// A file operation that failed, with the file's name; the `io::Error` stays its source.
#[derive(Debug)]
struct FileError {
    action: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {} {}", self.action, self.path.display())
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn presence_state(key: &str, name: &str) -> Result<PresenceState, PluginError> {
    PresenceState::from_name(name).ok_or_else(|| {
        config_error(key, format!("unknown presence state `{name}` (expected available, busy, do_not_disturb, away, offline or unknown)"))
    })
}

impl HelloFile {
    /// Reads and checks the config. Touches nothing: `alertbridge check` calls this too.
    pub fn new(setup: Setup) -> Result<Self, PluginError> {
        let config: Config = setup.config()?;
        if !config.path.is_absolute() || config.path.file_name().is_none() {
            return Err(config_error("path", "must be the absolute path of a file"));
        }
        if let Some(dir) = config.path.parent().filter(|d| !d.is_dir()) {
            return Err(config_error(
                "path",
                format!("folder {} does not exist", dir.display()),
            ));
        }
        let default_presence = presence_state("default_presence", &config.default_presence)?;
        let presence = config
            .presence
            .iter()
            .map(|(user, name)| {
                Ok((
                    user.clone(),
                    presence_state(&format!("presence.{user}"), name)?,
                ))
            })
            .collect::<Result<_, PluginError>>()?;
        tracing::debug!(instance = %setup.instance, path = %config.path.display(), "Sink configured.");
        Ok(Self {
            path: config.path,
            presence,
            default_presence,
            unknown_users: config.unknown_users.into_iter().collect(),
            written: Mutex::new(None),
            health: StdMutex::new(Health::ok()),
        })
    }

    fn presence_of(&self, user: &str) -> PresenceState {
        if self.unknown_users.contains(user) {
            return PresenceState::UNKNOWN;
        }
        self.presence
            .get(user)
            .copied()
            .unwrap_or(self.default_presence)
    }

    fn set_health(&self, health: Health) {
        *self.health.lock().unwrap_or_else(PoisonError::into_inner) = health;
    }

    /// The (uid, user) pairs already in the file.
    async fn read_written(&self) -> Result<HashSet<(String, String)>, FileError> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(FileError {
                    action: "read",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        Ok(text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split('\t');
                Some((fields.next()?.to_owned(), fields.next()?.to_owned()))
            })
            .collect())
    }

    /// Appends `lines` in one write.
    async fn append(&self, lines: &str) -> Result<(), FileError> {
        let error = |source| FileError {
            action: "append to",
            path: self.path.clone(),
            source,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .await
            .map_err(error)?;
        file.write_all(lines.as_bytes()).await.map_err(error)?;
        file.flush().await.map_err(error)
    }

    /// Writes the lines `message` still needs and says what became of each recipient.
    async fn write(&self, message: &Message) -> Result<Vec<RecipientResult>, FileError> {
        // The host sets `alert_uid` on every message: unique per alert, stable across retries.
        let uid = message
            .attributes
            .get("alert_uid")
            .cloned()
            .unwrap_or_else(|| format!("id-{}", message.alert_id));
        let mut guard = self.written.lock().await;
        let written = match guard.as_mut() {
            Some(set) => set,
            None => guard.insert(self.read_written().await?),
        };
        let mut lines = String::new();
        let mut fresh = Vec::new();
        let mut results = Vec::with_capacity(message.recipients.len());
        for user in &message.recipients {
            let result = if self.unknown_users.contains(user) {
                RecipientResult::new(user, DeliveryStatus::NOT_FOUND, "no such user")
            } else if self.presence_of(user) == PresenceState::OFFLINE {
                RecipientResult::new(user, DeliveryStatus::OFFLINE, "signed out")
            } else {
                let key = (uid.clone(), user.clone());
                if !written.contains(&key) && !fresh.contains(&key) {
                    lines.push_str(&line(&uid, user, message));
                    fresh.push(key);
                }
                RecipientResult::delivered(user)
            };
            results.push(result);
        }
        if !lines.is_empty() {
            self.append(&lines).await?;
        }
        tracing::info!(
            alert = message.alert_id,
            attempt = message.attempt,
            written = fresh.len(),
            "Message written."
        );
        written.extend(fresh);
        Ok(results)
    }
}

/// One line of the file: `uid TAB user TAB severity TAB subject TAB body`.
fn line(uid: &str, user: &str, m: &Message) -> String {
    let clean = |s: &str| s.replace(['\t', '\r', '\n'], " ");
    format!(
        "{uid}\t{user}\t{}\t{}\t{}\n",
        m.severity,
        clean(&m.subject),
        clean(&m.body)
    )
}

impl Sink for HelloFile {
    // `run` keeps its default (wait for shutdown): this sink has no connection to keep up.

    async fn presence(&self, users: Vec<String>) -> Result<Vec<Presence>, PluginError> {
        Ok(users
            .into_iter()
            .map(|user| {
                let state = self.presence_of(&user);
                Presence::new(user, state)
            })
            .collect())
    }

    async fn deliver(&self, message: Message) -> Result<Vec<RecipientResult>, PluginError> {
        match self.write(&message).await {
            Ok(results) => {
                self.set_health(Health::ok());
                Ok(results)
            }
            Err(e) => {
                // The whole call fails: no recipient's outcome is known, the host retries them all.
                let error = PluginError::transient(&e);
                self.set_health(Health::new(HealthState::DEGRADED, error.message.clone()));
                Err(error)
            }
        }
    }

    fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use alertbridge_plugin_api::testing::TestHost;

    use super::*;

    fn setup(config_toml: &str) -> Setup {
        Setup {
            instance: "im".into(),
            kind: "hello-file".into(),
            config_toml: config_toml.into(),
            host: TestHost::new("im").host(),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hello-plugin-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    }

    fn sink(path: &Path, extra: &str) -> HelloFile {
        HelloFile::new(setup(&format!(
            "path = {:?}\n{extra}",
            path.display().to_string()
        )))
        .expect("valid config")
    }

    fn message(uid: &str, recipients: &[&str]) -> Message {
        Message {
            alert_id: 7,
            attempt: 1,
            subject: "Disk full\ton db01".into(),
            body: "/var is at 98%".into(),
            recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
            attributes: [("alert_uid".to_owned(), uid.to_owned())].into(),
            ..Message::default()
        }
    }

    #[test]
    fn config_errors_name_their_key() {
        let err = |text: &str| HelloFile::new(setup(text)).err().expect("refused").to_string();
        assert_eq!(
            err("path = \"relative.log\"\n"),
            "`path`: must be the absolute path of a file"
        );
        assert_eq!(
            err("path = \"/nonexistent-folder/x.log\"\n"),
            "`path`: folder /nonexistent-folder does not exist"
        );
        assert!(
            err("path = \"/tmp/x.log\"\ncolour = \"red\"\n")
                .starts_with("`colour`: unknown field `colour`")
        );
        assert!(
            err("path = \"/tmp/x.log\"\n[presence]\n\"sip:a@x\" = \"gone\"\n")
                .starts_with("`presence.sip:a@x`: unknown presence state `gone`")
        );
    }

    #[tokio::test]
    async fn writes_a_line_per_recipient_once_and_reports_each_outcome() {
        let dir = scratch("deliver");
        let path = dir.join("im.log");
        let extra = "unknown_users = [\"sip:nobody@x\"]\n[presence]\n\"sip:bob@x\" = \"offline\"\n";
        let s = sink(&path, extra);
        let users = ["sip:alice@x", "sip:bob@x", "sip:nobody@x"];
        let presence: Vec<PresenceState> = s
            .presence(users.map(String::from).to_vec())
            .await
            .unwrap()
            .iter()
            .map(|p| p.state)
            .collect();
        assert_eq!(
            presence,
            [
                PresenceState::AVAILABLE,
                PresenceState::OFFLINE,
                PresenceState::UNKNOWN
            ]
        );

        let results = s.deliver(message("u1", &users)).await.unwrap();
        let statuses: Vec<DeliveryStatus> = results.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [
                DeliveryStatus::DELIVERED,
                DeliveryStatus::OFFLINE,
                DeliveryStatus::NOT_FOUND
            ]
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "u1\tsip:alice@x\tnormal\tDisk full on db01\t/var is at 98%\n"
        );

        // A redelivery, even by a new instance (a restarted host), writes nothing twice.
        s.deliver(message("u1", &["sip:alice@x"])).await.unwrap();
        let again = sink(&path, extra);
        assert_eq!(
            again
                .deliver(message("u1", &["sip:alice@x"]))
                .await
                .unwrap()[0]
                .status,
            DeliveryStatus::DELIVERED
        );
        again
            .deliver(message("u2", &["sip:alice@x"]))
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_fails_the_call_and_degrades_health() {
        let dir = scratch("fail");
        let path = dir.join("im.log");
        let s = sink(&path, "");
        std::fs::create_dir(&path).unwrap(); // a folder where the file should be
        let e = s
            .deliver(message("u1", &["sip:alice@x"]))
            .await
            .unwrap_err();
        assert_eq!(e.kind, alertbridge_plugin_api::ErrorKind::TRANSIENT);
        assert!(
            e.message
                .starts_with(&format!("cannot read {}: ", path.display())),
            "{}",
            e.message
        );
        assert_eq!(s.health().state, HealthState::DEGRADED);
        std::fs::remove_dir(&path).unwrap();
        assert_eq!(
            s.deliver(message("u1", &["sip:alice@x"])).await.unwrap()[0].status,
            DeliveryStatus::DELIVERED
        );
        assert_eq!(s.health(), Health::ok());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
