//! Finding and loading plugin files: each file is first checked without being opened
//! ([`trust`]: owner, mode, symlinks, the ELF symbol table), then loaded once, checked by
//! abi_stable, and asked what kinds it provides. A file that cannot be used is refused with one
//! readable line while the others still load. Libraries are never unloaded.

mod trust;

use std::path::{Path, PathBuf};

use alertbridge_plugin_api::{
    API_VERSION, Role,
    abi::PluginModRef,
    abi_stable::{
        library::{LibHeader, LibraryError, RootModule, RootModuleError, lib_header_from_path},
        sabi_types::VersionNumber,
    },
};
pub use trust::DirError;

/// One loaded plugin file.
#[derive(Clone)]
pub struct Plugin {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub api_version: String,
    pub kinds: Vec<(String, Role)>,
    pub module: PluginModRef,
}

/// A file that was not loaded, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    pub path: PathBuf,
    pub reason: Refusal,
}

/// Why a plugin file was not loaded; each shows as one line an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A check made before anything is opened failed (owner, mode, symlink, ELF symbols); the
    /// text says which.
    #[error("{0}")]
    Untrusted(String),
    #[error("not an alertbridge plugin (no abi_stable root module)")]
    NotAPlugin,
    #[error("cannot open: {0}")]
    Open(String),
    #[error("unreadable API version: {0}")]
    UnreadableVersion(String),
    /// Another major version of the plugin API (docs/writing-a-plugin.md §9).
    #[error(
        "built against plugin API {plugin}, this host speaks {host}: rebuild the plugin with this release"
    )]
    OtherMajor { plugin: String, host: String },
    #[error("built with an incompatible abi_stable version: rebuild the plugin with this release")]
    OtherAbiStable,
    /// Same major, but the types differ: built against a modified copy of the interface.
    #[error(
        "its plugin API types do not match this host's (API {API_VERSION}): it was built against a modified plugin interface; rebuild it against alertbridge-plugin-api {}.x",
        API_VERSION.split('.').next().unwrap_or(API_VERSION)
    )]
    ModifiedInterface,
    #[error("its root module failed: {0}")]
    RootModuleFailed(String),
    #[error("its root module panicked while loading")]
    RootModulePanicked,
    #[error("kind `{kind}` has a role this host does not know ({role})")]
    UnknownRole { kind: String, role: Role },
    /// A failure abi_stable reports that none of the above names.
    #[error("{0}")]
    Other(String),
}

/// Every plugin file found in a folder.
#[derive(Clone, Default)]
pub struct Plugins {
    pub loaded: Vec<Plugin>,
    pub refused: Vec<Refused>,
}

impl Plugins {
    /// The plugin providing `kind` in `role`.
    pub fn find(&self, kind: &str, role: Role) -> Option<&Plugin> {
        self.loaded
            .iter()
            .find(|p| p.kinds.iter().any(|(k, r)| k == kind && *r == role))
    }

    /// Every kind in `role`, for error messages.
    pub fn kinds(&self, role: Role) -> Vec<String> {
        let mut out: Vec<String> = self
            .loaded
            .iter()
            .flat_map(|p| {
                p.kinds
                    .iter()
                    .filter(|(_, r)| *r == role)
                    .map(|(k, _)| k.clone())
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The folder plugins are looked for in when the config names none: the executable's own.
pub fn default_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_owned))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Loads every `*.so` file in `dir` (not recursing) that passes the [`trust`] checks.
pub fn load_dir(dir: &Path) -> Result<Plugins, DirError> {
    let mut plugins = Plugins::default();
    plugins.scan(dir)?;
    Ok(plugins)
}

impl Plugins {
    /// Loads the files in `dir` not loaded yet (a reload picks up new plugin files; a loaded
    /// library is never loaded twice, and refused files are tried again). A folder that
    /// others could write to is refused as a whole.
    pub fn scan(&mut self, dir: &Path) -> Result<(), DirError> {
        let real_dir = trust::check_dir(dir)?;
        let entries = std::fs::read_dir(&real_dir).map_err(|source| DirError::Read {
            dir: dir.to_owned(),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
            .map(|e| dir.join(e.file_name()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == std::env::consts::DLL_EXTENSION)
            })
            .filter(|p| !self.loaded.iter().any(|l| l.path == *p))
            .collect();
        files.sort();
        self.refused.clear();
        for path in files {
            match trust::check_file(&real_dir, &path)
                .map_err(Refusal::Untrusted)
                .and_then(|real| open(&path, &real))
            {
                Ok(p) => {
                    for (kind, role) in &p.kinds {
                        if let Some(first) = self.find(kind, *role) {
                            tracing::warn!(kind, file = %path.display(), first = %first.path.display(), "Kind provided twice; the first file wins.");
                        }
                    }
                    let kinds: Vec<String> =
                        p.kinds.iter().map(|(k, r)| format!("{r} {k}")).collect();
                    tracing::info!(plugin = %p.name, version = %p.version, api = %p.api_version, kinds = %kinds.join(", "), file = %path.display(), "Plugin loaded.");
                    self.loaded.push(p);
                }
                Err(reason) => {
                    tracing::warn!(file = %path.display(), %reason, "Plugin file refused.");
                    self.refused.push(Refused { path, reason });
                }
            }
        }
        Ok(())
    }
}

/// `dlopen`s a file that passed the checks (at its real path) and reads its root module.
fn open(path: &Path, real: &Path) -> Result<Plugin, Refusal> {
    let header = lib_header_from_path(real).map_err(|e| summarize(&e))?;
    let module = header
        .init_root_module::<PluginModRef>()
        .map_err(|e| summarize(&e))?;
    log_newer_minor(path, header);
    let info = (module.info())();
    let kinds: Vec<(String, Role)> = info
        .kinds
        .iter()
        .map(|k| (k.name.to_string(), k.role))
        .collect();
    if let Some((k, r)) = kinds.iter().find(|(_, r)| !r.is_known()) {
        return Err(Refusal::UnknownRole {
            kind: k.clone(),
            role: *r,
        });
    }
    Ok(Plugin {
        path: path.to_owned(),
        name: info.name.to_string(),
        version: info.version.to_string(),
        api_version: info.api_version.to_string(),
        kinds,
        module,
    })
}

/// The API version rule of 1.x (docs/writing-a-plugin.md §9), after abi_stable's checks: a
/// plugin of another major was refused (one line naming both versions), one built against
/// 1.x ≤ this host's 1.y loads as is, and one built against a newer minor loads and runs
/// without the capabilities added after this host's API, which is worth an info line.
fn log_newer_minor(path: &Path, header: &LibHeader) {
    let host = VersionNumber::new(PluginModRef::VERSION_STRINGS);
    let plugin = VersionNumber::new(header.version_strings());
    if let (Ok(host), Ok(plugin)) = (host, plugin)
        && plugin.major == host.major
        && plugin.minor > host.minor
    {
        tracing::info!(file = %path.display(), plugin_api = %plugin, host_api = %host, "Plugin built for a newer plugin API; it runs without the capabilities added after this host's.");
    }
}

/// What a load failure means for the operator; the full layout report goes to the debug log.
fn summarize(e: &LibraryError) -> Refusal {
    let refusal = match e {
        LibraryError::OpenError { err, .. } => {
            Refusal::Open(first_line(&err.to_string()).to_owned())
        }
        LibraryError::GetSymbolError { .. } => Refusal::NotAPlugin,
        LibraryError::ParseVersionError(err) => Refusal::UnreadableVersion(err.to_string()),
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => Refusal::OtherMajor {
            plugin: actual_version.to_string(),
            host: expected_version.to_string(),
        },
        LibraryError::InvalidAbiHeader(_) => Refusal::OtherAbiStable,
        LibraryError::AbiInstability(_) => Refusal::ModifiedInterface,
        LibraryError::RootModule { err, .. } => match err {
            RootModuleError::Returned(e) => {
                Refusal::RootModuleFailed(first_line(&e.to_string()).to_owned())
            }
            RootModuleError::Unwound => Refusal::RootModulePanicked,
        },
        other => Refusal::Other(first_line(&other.to_string()).to_owned()),
    };
    tracing::debug!(report = %e, "Full plugin load report.");
    refusal
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_typed_and_read_as_one_line() {
        let other = Refusal::OtherMajor {
            plugin: "2.0.0".into(),
            host: "1.0.0".into(),
        };
        assert_eq!(
            other.to_string(),
            "built against plugin API 2.0.0, this host speaks 1.0.0: rebuild the plugin with this release"
        );
        assert!(
            Refusal::ModifiedInterface
                .to_string()
                .ends_with("rebuild it against alertbridge-plugin-api 1.x")
        );
        let role = Refusal::UnknownRole {
            kind: "pager".into(),
            role: Role(9),
        };
        assert_eq!(
            role.to_string(),
            "kind `pager` has a role this host does not know (unknown(9))"
        );
        for r in [
            other,
            Refusal::NotAPlugin,
            Refusal::RootModulePanicked,
            role,
        ] {
            assert!(!r.to_string().contains('\n'), "{r}");
        }
    }
}
