//! What the host keeps on disk (alerts, incidents, silences) is readable by its own user only,
//! whatever the umask it was started under: files 0600, the data folder 0700.

use std::{fs, io, os::unix::fs::PermissionsExt as _, path::Path};

/// Mode of every file the host writes in its data folder.
pub const FILE_MODE: u32 = 0o600;

/// Sets `path` to `mode` (e.g. [`FILE_MODE`]).
pub fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}
