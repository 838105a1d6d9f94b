//! The loader opens only what an administrator placed (issue 11 §4), replayed with real files:
//! a shared library with an ELF constructor planted in `plugin_dir` never runs under `plugins`,
//! `check`, `run` and a SIGHUP reload; a plugin owned by another user, a group-writable one, a
//! world-writable folder and a symlink out of the folder are each refused with their reason.

use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, chown, symlink},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use alertbridge_testbed::harness::{Host, cli, free_port, plugin_file, wait_until};

/// A folder holding copies of the test source and sink plugins, mode 0755, owned by us.
fn plugin_folder(root: &Path) -> PathBuf {
    let dir = root.join("plugins");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["test_source", "test_sink"] {
        let to = dir.join(format!("libalertbridge_{name}.so"));
        fs::copy(plugin_file(name), &to).unwrap();
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// Builds `dir/<name>`: a shared library whose ELF constructor appends a line to `marker`
/// as soon as anything `dlopen`s it.
fn planted_library(dir: &Path, name: &str, marker: &Path) -> PathBuf {
    let src = dir.with_file_name(format!("{name}.c"));
    fs::write(
        &src,
        format!(
            "#include <stdio.h>\n\
             __attribute__((constructor)) static void planted(void) {{\n\
               FILE *f = fopen(\"{}\", \"a\");\n\
               if (f) {{ fputs(\"constructor ran\\n\", f); fclose(f); }}\n\
             }}\n\
             int planted_symbol(void) {{ return 42; }}\n",
            marker.display()
        ),
    )
    .unwrap();
    let out = dir.join(name);
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed");
    fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
    out
}

fn config(root: &Path, plugins: &Path, admin: u16, control: u16) -> String {
    let d = root.display();
    format!(
        r#"
[host]
data_dir = "{d}/data"
plugin_dir = "{}"
admin_listen = "127.0.0.1:{admin}"

[[source]]
name = "src"
plugin = "test-source"
[source.config]
control_listen = "127.0.0.1:{control}"

[[sink]]
name = "sink"
plugin = "test-sink"
[sink.config]
record_file = "{d}/delivered.jsonl"

[groups]
ops = ["sip:alice@x"]

[[route]]
name = "r"
groups = ["ops"]
sinks = ["sink"]
"#,
        plugins.display()
    )
}

/// The line `alertbridge plugins` printed for `file`.
fn line_for<'a>(listing: &'a str, file: &str) -> &'a str {
    listing
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{file} ")))
        .unwrap_or_else(|| panic!("no line for {file} in:\n{listing}"))
}

#[test]
fn a_planted_library_never_runs_under_plugins_check_run_or_reload() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_folder(root.path());
    let marker = root.path().join("constructor-ran");
    planted_library(&plugins, "libplanted.so", &marker);

    let dir = plugins.display().to_string();
    let (ok, listing) = cli(&["plugins", "--dir", &dir]);
    assert!(ok, "{listing}");
    assert!(
        !marker.exists(),
        "`plugins` ran the planted library's constructor:\n{listing}"
    );
    let line = line_for(&listing, "libplanted.so");
    assert!(
        line.ends_with("refused: not an alertbridge plugin (no abi_stable root module)"),
        "{line}"
    );
    assert!(line_for(&listing, "libalertbridge_test_sink.so").contains("sink test-sink"));

    let (admin, control) = (free_port(), free_port());
    let config_path = root.path().join("alertbridge.toml");
    fs::write(&config_path, config(root.path(), &plugins, admin, control)).unwrap();
    let (ok, out) = cli(&["check", "--config", &config_path.display().to_string()]);
    assert!(ok, "{out}");
    assert!(!marker.exists(), "`check` ran the constructor:\n{out}");

    let host = Host::start(
        root.path(),
        admin,
        &config(root.path(), &plugins, admin, control),
    );
    assert!(!marker.exists(), "`run` ran the constructor");
    // A second library planted while the bridge runs, then a reload (SIGHUP) that scans again.
    planted_library(&plugins, "libplanted2.so", &marker);
    host.signal("HUP");
    wait_until("the SIGHUP reload", Duration::from_secs(30), || {
        host.log().contains("Config reloaded.")
    });
    let log = host.log();
    assert!(!marker.exists(), "a reload ran the constructor:\n{log}");
    assert!(
        log.lines().any(|l| l.contains("libplanted2.so")
            && l.contains("Plugin file refused")
            && l.contains("not an alertbridge plugin")),
        "{log}"
    );
}

#[test]
fn a_plugin_owned_by_another_user_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_folder(root.path());
    let file = plugins.join("libalertbridge_test_sink.so");
    // `nobody`: tests run as root in CI, so the chown works.
    chown(&file, Some(65534), Some(65534)).expect("chown to nobody (run the tests as root)");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, listing) = cli(&["plugins", "--dir", &plugins.display().to_string()]);
    assert!(ok, "{listing}");
    let line = line_for(&listing, "libalertbridge_test_sink.so");
    assert!(
        line.contains("refused: owned by uid 65534, neither root nor the user alertbridge runs as"),
        "{line}"
    );
    assert!(line_for(&listing, "libalertbridge_test_source.so").contains("source test-source"));
}

#[test]
fn a_group_writable_plugin_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_folder(root.path());
    let file = plugins.join("libalertbridge_test_sink.so");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o664)).unwrap();
    let (ok, listing) = cli(&["plugins", "--dir", &plugins.display().to_string()]);
    assert!(ok, "{listing}");
    let line = line_for(&listing, "libalertbridge_test_sink.so");
    assert!(
        line.contains("refused: writable by its group (mode 0664; chmod go-w it)"),
        "{line}"
    );
}

#[test]
fn a_world_writable_plugin_folder_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_folder(root.path());
    fs::set_permissions(&plugins, fs::Permissions::from_mode(0o777)).unwrap();
    let dir = plugins.display().to_string();
    let (ok, out) = cli(&["plugins", "--dir", &dir]);
    assert!(!ok, "a world-writable folder was used:\n{out}");
    assert!(
        out.contains(&format!(
            "the plugin folder {dir} is refused: writable by its group and every user (mode 0777; chmod go-w it)"
        )),
        "{out}"
    );
    assert!(!out.contains("sink test-sink"), "{out}");

    // `check` refuses it too, and says so in one line.
    let config_path = root.path().join("alertbridge.toml");
    fs::write(
        &config_path,
        config(root.path(), &plugins, free_port(), free_port()),
    )
    .unwrap();
    let (ok, out) = cli(&["check", "--config", &config_path.display().to_string()]);
    assert!(!ok && out.contains("is refused: writable by"), "{out}");
}

#[test]
fn a_symlink_out_of_the_plugin_folder_is_refused_one_inside_is_followed() {
    let root = tempfile::tempdir().unwrap();
    let plugins = plugin_folder(root.path());
    let elsewhere = root.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let outside = elsewhere.join("libalertbridge_test_sink.so");
    fs::rename(plugins.join("libalertbridge_test_sink.so"), &outside).unwrap();
    symlink(&outside, plugins.join("libalertbridge_test_sink.so")).unwrap();
    symlink(
        "libalertbridge_test_source.so",
        plugins.join("libsource-link.so"),
    )
    .unwrap();
    let (ok, listing) = cli(&["plugins", "--dir", &plugins.display().to_string()]);
    assert!(ok, "{listing}");
    let line = line_for(&listing, "libalertbridge_test_sink.so");
    assert!(
        line.contains(&format!(
            "refused: a symlink to {}, which is not in the plugin folder itself",
            fs::canonicalize(&outside).unwrap().display()
        )),
        "{line}"
    );
    assert!(line_for(&listing, "libsource-link.so").contains("source test-source"));
}
