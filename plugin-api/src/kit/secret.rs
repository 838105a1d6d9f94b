//! Secrets in a plugin's config: a value that never prints, and the one way every plugin reads
//! it (inline, from a file, or from the environment) with errors that name the key, never the value.

use std::{fmt, path::Path};

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::config_error;
use crate::PluginError;

/// A password, token or key. `Debug` shows `Secret(..)`; there is no `Display`, so a secret
/// reaches text only through [`Secret::expose`]. Deserializes from a TOML string only, and a
/// value of another type is refused without echoing it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret's text, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

/// The error for a secret of the wrong type: says what was expected, never what was there.
fn not_a_string<E: de::Error>() -> E {
    E::custom("expected a string (the value is not shown)")
}

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secret, E> {
        Ok(Secret(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Secret, E> {
        Ok(Secret(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
        Err(not_a_string())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
        Err(not_a_string())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
        Err(not_a_string())
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Secret, E> {
        Err(not_a_string())
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Secret, E> {
        Err(not_a_string())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
        Err(not_a_string())
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Secret, E> {
        Err(not_a_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Secret, E> {
        Err(not_a_string())
    }
    fn visit_none<E: de::Error>(self) -> Result<Secret, E> {
        Err(not_a_string())
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Err(not_a_string())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Secret, A::Error> {
        Err(not_a_string())
    }
}

/// Reads a secret given as exactly one of `<key>` (inline), `<key>_file` (the file's first
/// line) or `<key>_env` (an environment variable). Every error names the key and, for a file
/// or a variable, where it looked; none shows any part of the value.
pub fn resolve_secret(
    key: &str,
    inline: Option<&Secret>,
    file: Option<&Path>,
    env: Option<&str>,
) -> Result<Secret, PluginError> {
    let file_key = format!("{key}_file");
    let env_key = format!("{key}_env");
    let value = match (inline, file, env) {
        (Some(secret), None, None) => Ok(secret.clone()),
        (None, Some(path), None) => read_file(&file_key, path),
        (None, None, Some(name)) => read_env(&env_key, name),
        _ => Err(config_error(
            key,
            format!("set exactly one of `{key}`, `{file_key}` and `{env_key}`"),
        )),
    }?;
    if value.is_empty() {
        let given = match (inline, file) {
            (Some(_), _) => key,
            (_, Some(_)) => &file_key,
            _ => &env_key,
        };
        return Err(config_error(given, "is empty"));
    }
    Ok(value)
}

fn read_file(key: &str, path: &Path) -> Result<Secret, PluginError> {
    let bytes = std::fs::read(path)
        .map_err(|e| config_error(key, format!("{}: {}", path.display(), e.kind())))?;
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let text = std::str::from_utf8(first).map_err(|_| {
        config_error(
            key,
            format!("{}: the first line is not UTF-8 text", path.display()),
        )
    })?;
    Ok(Secret(text.to_owned()))
}

fn read_env(key: &str, name: &str) -> Result<Secret, PluginError> {
    match std::env::var_os(name) {
        None => Err(config_error(
            key,
            format!("environment variable `{name}` is not set"),
        )),
        Some(value) => value.into_string().map(Secret).map_err(|_| {
            config_error(
                key,
                format!("environment variable `{name}` is not UTF-8 text"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLANTED: &str = "PLANTED-s3cret-9f81";

    #[derive(Debug, serde::Deserialize)]
    struct Conf {
        #[allow(dead_code)]
        password: Secret,
    }

    #[test]
    fn debug_never_shows_the_value() {
        assert_eq!(format!("{:?}", Secret::new(PLANTED)), "Secret(..)");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_not_echoed() {
        for text in [
            "password = 12345678",
            "password = 1.5e9",
            "password = true",
            "password = [\"PLANTED\"]",
            "password = { PLANTED = 1 }",
        ] {
            // `Display` of a TOML error quotes the source line; `Setup::config` uses the
            // message alone, which must not carry the value.
            let err = toml::from_str::<Conf>(text).unwrap_err();
            let shown = err.message();
            assert!(shown.contains("expected a string"), "{shown}");
            assert!(
                !shown.contains("12345678") && !shown.contains("PLANTED"),
                "{shown}"
            );
        }
        let ok: Conf = toml::from_str("password = \"x\"").unwrap();
        assert_eq!(ok.password.expose(), "x");
    }

    #[test]
    fn file_and_env_errors_name_the_key_not_the_value() {
        let dir = tempfile_dir();
        let bad = dir.join("bad");
        std::fs::write(&bad, [b'P', 0xff, b'x', b'\n']).unwrap();
        let err = resolve_secret("password", None, Some(&bad), None).unwrap_err();
        assert!(err.to_string().contains("`password_file`"), "{err}");
        let good = dir.join("good");
        std::fs::write(&good, format!("{PLANTED}\r\nsecond line\n")).unwrap();
        let s = resolve_secret("password", None, Some(&good), None).unwrap();
        assert_eq!(s.expose(), PLANTED);

        let var = "ALERTBRIDGE_KIT_SECRET_TEST_UNSET";
        let err = resolve_secret("password", None, None, Some(var)).unwrap_err();
        assert!(err.to_string().contains(var), "{err}");
        let err =
            resolve_secret("password", Some(&Secret::new("a")), Some(&good), None).unwrap_err();
        assert!(err.to_string().contains("exactly one"), "{err}");
        let err = resolve_secret("password", Some(&Secret::new("")), None, None).unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[cfg(unix)]
    #[test]
    fn an_env_value_that_is_not_utf8_is_not_printed() {
        use std::os::unix::ffi::OsStrExt;
        let var = "ALERTBRIDGE_KIT_SECRET_TEST_BAD_BYTES";
        let value = std::ffi::OsStr::from_bytes(b"PLANTED-\xff-value");
        set_var(var, value);
        let err = resolve_secret("password", None, None, Some(var)).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(
            shown.contains("not UTF-8") && !shown.contains("PLANTED"),
            "{shown}"
        );
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ab-kit-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[allow(unsafe_code)]
    fn set_var(var: &str, value: &std::ffi::OsStr) {
        // SAFETY: set before any thread of this test reads the environment variable it names.
        unsafe { std::env::set_var(var, value) }
    }
}
