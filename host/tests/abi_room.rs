//! The plugin ABI has one room in the host: only `host/src/plugins/` may name abi_stable,
//! async-ffi or the FFI types. Everything else (dispatcher, admin, queue, app) works with the
//! plain-Rust handles and `Ingest`, so it can be tested without a loaded `.so` and does not
//! change when the FFI side does.
//!
//! Refused outside `host/src/plugins/` (in code; comment lines are not looked at):
//! - the FFI crates by name: `abi_stable`, `async_ffi`, `alertbridge_plugin_abi`, and the
//!   kit's re-export of the frozen interface, `alertbridge_plugin_api::abi` (`abi::…`);
//! - abi_stable's std types: `RResult`, `ROk`, `RErr`, `RVec`, `RString`, `RStr`, `ROption`,
//!   `RSome`, `RNone`, `RBox`, `RArc`, `RSlice`, `RHashMap`;
//! - the crossing structs and futures, `Ffi…` (`FfiMessage`, `FfiError`, `FfiFuture`, `FfiPairs`…);
//! - the trait objects and their tables: `SinkBox`, `SourceBox`, `HostBox`, `SinkFfi`,
//!   `SourceFfi`, `HostFfi` (and their `_TO`), `PluginModRef`, `TD_Opaque`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use regex::Regex;

/// The names that only `host/src/plugins/` may use.
fn pattern() -> Regex {
    Regex::new(concat!(
        r"\b(abi_stable|async_ffi|alertbridge_plugin_abi)\b",
        r"|\babi::",
        r"|\bR(Result|Ok|Err|Vec|String|Str|Option|Some|None|Box|Arc|Slice|HashMap)\b",
        r"|\bFfi[A-Z]\w*",
        r"|\b(Sink|Source|Host)(Box|Ffi|Ffi_TO)\b",
        r"|\b(PluginModRef|TD_Opaque)\b",
    ))
    .expect("pattern")
}

/// `(line number, line)` of each code line of `text` naming one of the FFI names.
fn hits(text: &str, re: &Regex) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter(|(_, l)| re.is_match(l))
        .map(|(i, l)| (i + 1, l.trim().to_owned()))
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn only_host_src_plugins_names_the_ffi() {
    let (src, re) = (src(), pattern());
    let room = src.join("plugins");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let outside: Vec<&PathBuf> = files.iter().filter(|f| !f.starts_with(&room)).collect();
    assert!(
        outside.len() > 20,
        "the host's sources were not found under {}",
        src.display()
    );
    let mut leaks = Vec::new();
    for f in outside {
        let text = fs::read_to_string(f).expect("read source");
        for (line, code) in hits(&text, &re) {
            leaks.push(format!(
                "{}:{line}: {code}",
                f.strip_prefix(&src).unwrap_or(f).display()
            ));
        }
    }
    assert!(
        leaks.is_empty(),
        "FFI names outside host/src/plugins/ (use the plain-Rust handles, Ingest and the \
         model types of alertbridge_plugin_api instead):\n{}",
        leaks.join("\n")
    );
}

/// The check sees what it must: the room itself does name the FFI (so a scan that read
/// nothing, or a pattern that matches nothing, fails here), and each refused form is caught.
#[test]
fn the_check_catches_each_form_and_skips_comments() {
    let re = pattern();
    let mut room = Vec::new();
    rust_files(&src().join("plugins"), &mut room);
    let named: usize = room
        .iter()
        .map(|f| hits(&fs::read_to_string(f).expect("read"), &re).len())
        .sum();
    assert!(named > 10, "host/src/plugins/ names the FFI {named} times");
    for leak in [
        "use alertbridge_plugin_api::abi_stable::std_types::RResult;",
        "let f: async_ffi::FfiFuture<()> = todo!();",
        "use alertbridge_plugin_api::abi::SinkBox;",
        "fn f(x: RVec<RString>) {}",
        "match r { ROk(v) => v, RErr(e) => e }",
        "let m = FfiMessage::from(&message);",
        "handle: Arc<SinkBox>,",
        "HostFfi_TO::from_ptr(x, TD_Opaque)",
        "let o: ROption<u8> = RNone;",
        "use alertbridge_plugin_abi::types::Receipt;",
    ] {
        assert_eq!(hits(leak, &re).len(), 1, "not caught: {leak}");
    }
    for fine in [
        "// a comment may say RResult or SinkBox",
        "    /// docs too: FfiMessage",
        "let result: Result<Vec<RecipientResult>, PluginError> = Ok(vec![]);",
        "let sink: Arc<dyn SinkPort> = handle;",
        "struct Ffix; let rstring = String::new(); let host = HostHandle;",
    ] {
        assert!(hits(fine, &re).is_empty(), "caught wrongly: {fine}");
    }
}
