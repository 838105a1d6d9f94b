//! The 1.x promise, checked where it could be broken: today's interface types must keep the
//! layouts of the frozen 1.0 interface (`tests/compat/api-1.0/abi`). The check is abi_stable's
//! own, the one the host's loader runs on every plugin file, taken on a fixture built against
//! the frozen copy (outside the workspace, `cargo build --locked`). A field appended to a
//! struct, a method appended to a trait, a changed type: this test fails, loudly, before any
//! plugin author meets a refusal.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use abi_stable::{
    StableAbi, abi_stability::abi_checking::check_layout_compatibility,
    library::lib_header_from_path, type_layout::TypeLayout,
};
use alertbridge_plugin_abi::{API_VERSION, abi::PluginModRef};

/// Builds the compat fixture `lib` of `tests/compat/<workspace>` into the target folder the
/// compat fixtures share (`target/compat`), and returns its file.
fn fixture(workspace: &str, lib: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("plugin-abi/ lives in the repository");
    let manifest = repo.join("tests/compat").join(workspace).join("Cargo.toml");
    // This test runs as target/<profile>/deps/<binary>.
    let target = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("compat")))
        .expect("the test binary lives in target/<profile>/deps");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["build", "--locked", "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(
        out.status.success(),
        "cargo build --locked on {} failed:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let file = target.join("debug").join(format!("lib{lib}.so"));
    assert!(
        file.exists(),
        "{} is missing after the build",
        file.display()
    );
    file
}

/// The layout abi_stable checks at load for a plugin file: its root module's, which reaches
/// every type of the interface (the traits through the constructors, the data through them).
fn root_layout(file: &Path) -> &'static TypeLayout {
    let header = lib_header_from_path(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    header
        .layout()
        .unwrap_or_else(|| panic!("{} exports no layout", file.display()))
}

#[test]
fn todays_interface_keeps_the_frozen_1_0_layouts() {
    let frozen = root_layout(&fixture("api-1.0", "alertbridge_compat_v1_0"));
    let today = <PluginModRef as StableAbi>::LAYOUT;
    if let Err(e) = check_layout_compatibility(today, frozen) {
        panic!(
            "\n\nPLUGIN API {API_VERSION} NO LONGER MATCHES THE FROZEN 1.0 INTERFACE \
             (tests/compat/api-1.0/abi): every plugin built against 1.0 would be refused.\n\
             Within 1.x no type in plugin-abi/ may change layout: add capabilities through \
             `call` by versioned name and data through `attributes` (docs/writing-a-plugin.md \
             §9).\n\nabi_stable's report:\n{e}\n"
        );
    }
}

#[test]
fn the_check_refuses_a_lengthened_table_and_accepts_a_newer_minor() {
    let frozen = root_layout(&fixture("api-1.0", "alertbridge_compat_v1_0"));
    let preview = root_layout(&fixture("api-1.1-preview", "alertbridge_compat_v1_1"));
    let today = <PluginModRef as StableAbi>::LAYOUT;
    assert!(
        check_layout_compatibility(today, preview).is_ok(),
        "a plugin built against a newer minor (tables grown after their last prefix field) loads"
    );
    // Taken as a host's, the 1.1 preview's longer tables refuse the 1.0 plugin (abi_stable
    // #118): the failure the test above guards against, so it can fail.
    assert!(
        check_layout_compatibility(preview, frozen).is_err(),
        "a host whose tables grew must refuse 1.0 plugins"
    );
}
