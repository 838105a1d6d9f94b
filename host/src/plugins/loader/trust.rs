//! What the loader checks before it opens a plugin file, so that only what an administrator
//! placed ever runs: the plugin folder and each file belong to root or to the user running
//! alertbridge and are writable by nobody else, a symlink may not lead out of the folder, and the
//! file must be an ELF shared library whose dynamic symbol table exports the plugin root module.
//! Only a file that passes every check is handed to `dlopen`, so the constructors of anything
//! else (a stray library, a planted file) never run — under `run`, `check`, `plugins` and reload.
//! A refused file is never opened; its one-line reason says why.

use std::{
    fs::{self, Metadata},
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use alertbridge_plugin_api::abi_stable::library::ROOT_MODULE_LOADER_NAME;
use object::{Object as _, ObjectKind, ObjectSymbol as _, read::ReadCache};

/// The plugin folder cannot be used at all.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot read the plugin folder {}", dir.display())]
    Read {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the plugin folder {} is refused: {reason}", dir.display())]
    Untrusted { dir: PathBuf, reason: String },
}

/// The user alertbridge runs as: the owner of `/proc/self` (its effective uid). `None` when
/// `/proc` is not there, and then only root-owned files are trusted.
pub fn running_uid() -> Option<u32> {
    fs::metadata("/proc/self").map(|m| m.uid()).ok()
}

/// Checks the plugin folder itself (after following any symlink to it) and returns its real
/// path, which every file's real path must stay inside.
pub fn check_dir(dir: &Path) -> Result<PathBuf, DirError> {
    let read = |source| DirError::Read {
        dir: dir.to_owned(),
        source,
    };
    let real = fs::canonicalize(dir).map_err(read)?;
    let meta = fs::metadata(&real).map_err(read)?;
    if !meta.is_dir() {
        return Err(read(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a folder",
        )));
    }
    owner_and_mode(&meta).map_err(|reason| DirError::Untrusted {
        dir: dir.to_owned(),
        reason,
    })?;
    Ok(real)
}

/// Checks one file found in the folder whose real path is `real_dir`; returns the real path
/// to open, or one line saying why it is not opened.
pub fn check_file(real_dir: &Path, path: &Path) -> Result<PathBuf, String> {
    let link = fs::symlink_metadata(path).map_err(|e| format!("cannot read: {}", e.kind()))?;
    let real = if link.file_type().is_symlink() {
        let real = fs::canonicalize(path)
            .map_err(|e| format!("a symlink that leads nowhere ({})", e.kind()))?;
        if real.parent() != Some(real_dir) {
            return Err(format!(
                "a symlink to {}, which is not in the plugin folder itself",
                real.display()
            ));
        }
        real
    } else {
        path.to_owned()
    };
    let meta = fs::metadata(&real).map_err(|e| format!("cannot read: {}", e.kind()))?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    owner_and_mode(&meta)?;
    exports_root_module(&real)?;
    Ok(real)
}

/// Refuses what someone other than root or the running user owns, or may write.
fn owner_and_mode(meta: &Metadata) -> Result<(), String> {
    let uid = meta.uid();
    let me = running_uid();
    if uid != 0 && Some(uid) != me {
        let me = me.map_or_else(|| "unknown".to_owned(), |u| u.to_string());
        return Err(format!(
            "owned by uid {uid}, neither root nor the user alertbridge runs as (uid {me})"
        ));
    }
    let mode = meta.mode();
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (false, false) => return Ok(()),
        (true, false) => "its group",
        (false, true) => "every user",
        (true, true) => "its group and every user",
    };
    Err(format!(
        "writable by {who} (mode {:04o}; chmod go-w it)",
        mode & 0o7777
    ))
}

/// Reads the ELF dynamic symbol table (without loading anything) and refuses a file that is
/// not a shared library exporting the abi_stable root module loader.
fn exports_root_module(path: &Path) -> Result<(), String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot open: {}", e.kind()))?;
    let cache = ReadCache::new(file);
    let elf =
        object::File::parse(&cache).map_err(|e| format!("not an ELF shared library ({e})"))?;
    if elf.kind() != ObjectKind::Dynamic {
        return Err(format!(
            "not a shared library (an ELF {:?} file)",
            elf.kind()
        ));
    }
    let exported = elf.dynamic_symbols().any(|s| {
        s.is_definition() && s.name_bytes().ok() == Some(ROOT_MODULE_LOADER_NAME.as_bytes())
    });
    if exported {
        Ok(())
    } else {
        Err("not an alertbridge plugin (no abi_stable root module)".into())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ab-trust-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn a_file_that_is_not_elf_is_not_opened() {
        let dir = scratch("notelf");
        let file = dir.join("libx.so");
        fs::write(&file, b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let real = check_dir(&dir).unwrap();
        let err = check_file(&real, &file).unwrap_err();
        assert!(err.starts_with("not an ELF shared library"), "{err}");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o664)).unwrap();
        let err = check_file(&real, &file).unwrap_err();
        assert!(err.starts_with("writable by its group (mode 0664"), "{err}");
        fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_writable_folder_is_refused() {
        let dir = scratch("wdir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o757)).unwrap();
        let err = check_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("writable by every user (mode 0757"), "{err}");
        fs::remove_dir_all(dir).ok();
    }
}
