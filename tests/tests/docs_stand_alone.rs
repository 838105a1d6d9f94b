//! The repository's documentation stands on its own: no Markdown file (README.md, docs/**,
//! plugins/*/README.md, every other `*.md`) and no Rust comment (`//!`, `///`, `//`) points to
//! a file outside the repository or to design notes that are not in it. A relative Markdown
//! link must name a file or folder that exists inside the repository.

use std::{
    fs,
    path::{Path, PathBuf},
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .canonicalize()
        .expect("the repository")
}

/// Texts that name what lives outside: the shared folder the project grew from, its design
/// file and sections, absolute paths of the machine it was written on.
const OUTSIDE: [&str; 6] = [
    "../shared",
    "shared/reference",
    "shared/DESIGN",
    "DESIGN.md",
    "DESIGN \u{a7}",
    "/work/",
];

/// Every file under `dir` with one of `exts`, leaving out build output and VCS data.
fn files(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(kind) = e.file_type() else { continue };
        if kind.is_dir() {
            if !(name.starts_with('.') || name == "target" || name == "corpus") {
                files(&p, exts, out);
            }
        } else if exts.iter().any(|x| name.ends_with(x)) {
            out.push(p);
        }
    }
}

/// What `text` (one file's lines to check) names outside the repository: `(line, what)`.
fn outside_mentions(text: &str, only_comments: bool) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if only_comments && !line.trim_start().starts_with("//") {
            continue;
        }
        for bad in OUTSIDE {
            if line.contains(bad) {
                found.push((i + 1, format!("mentions {bad:?}: {}", line.trim())));
            }
        }
    }
    found
}

/// The relative link targets of Markdown `[text](target)` links in `text`, with their lines.
fn relative_links(text: &str) -> Vec<(usize, String)> {
    let mut links = Vec::new();
    let mut in_code = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            let is_external = ["http://", "https://", "mailto:", "#"]
                .iter()
                .any(|p| target.starts_with(p));
            if !target.is_empty() && !is_external {
                links.push((i + 1, target.to_owned()));
            }
        }
    }
    links
}

/// Whether the relative link `target` in the file `from` names an existing path inside `repo`.
fn link_problem(repo: &Path, from: &Path, target: &str) -> Option<String> {
    let path = target.split('#').next().unwrap_or(target);
    let base = from.parent().unwrap_or(repo);
    // Lexically first: a link that climbs out leaves whether or not its target exists on
    // this machine (a clean clone may sit at any depth).
    let mut lexical = PathBuf::new();
    for part in base.join(path).components() {
        match part {
            std::path::Component::ParentDir => {
                lexical.pop();
            }
            std::path::Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    if !lexical.starts_with(repo) {
        return Some(format!(
            "{target} leaves the repository ({})",
            lexical.display()
        ));
    }
    match base.join(path).canonicalize() {
        Ok(p) if p.starts_with(repo) => None,
        Ok(p) => Some(format!("{target} leaves the repository ({})", p.display())),
        Err(_) => Some(format!("{target} does not exist")),
    }
}

#[test]
fn no_markdown_file_or_rust_comment_points_outside_the_repository() {
    let repo = repo();
    let mut md = Vec::new();
    files(&repo, &[".md"], &mut md);
    let mut rs = Vec::new();
    files(&repo, &[".rs"], &mut rs);
    assert!(
        md.iter().any(|p| p.ends_with("README.md")) && md.len() > 5 && rs.len() > 50,
        "the walk found the repository's files: {} .md, {} .rs",
        md.len(),
        rs.len()
    );
    let mut problems = Vec::new();
    for (file, only_comments) in md
        .iter()
        .map(|f| (f, false))
        .chain(rs.iter().map(|f| (f, true)))
    {
        let text = fs::read_to_string(file).unwrap_or_default();
        let shown = file.strip_prefix(&repo).unwrap_or(file).display();
        for (line, what) in outside_mentions(&text, only_comments) {
            problems.push(format!("{shown}:{line}: {what}"));
        }
        if !only_comments {
            for (line, target) in relative_links(&text) {
                if let Some(p) = link_problem(&repo, file, &target) {
                    problems.push(format!("{shown}:{line}: link {p}"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "documentation that leaves the repository (bring what it needs into docs/, e.g. docs/design.md, and point there):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_catches_each_form() {
    let repo = repo();
    let readme = repo.join("README.md");
    // Markdown: each outside mention, and links that leave or do not exist.
    for bad in OUTSIDE {
        assert_eq!(
            outside_mentions(&format!("see {bad}x for more"), false).len(),
            1,
            "{bad}"
        );
    }
    let links = relative_links(
        "a [guide](docs/design.md) and [x](../../etc/passwd), [w](https://example.invalid/) [s](#section)\n```\n[code](../nope)\n```\n",
    );
    assert_eq!(
        links,
        [
            (1, "docs/design.md".to_owned()),
            (1, "../../etc/passwd".to_owned())
        ]
    );
    assert_eq!(link_problem(&repo, &readme, "docs/design.md"), None);
    assert_eq!(
        link_problem(&repo, &readme, "docs/design.md#1-workspace"),
        None
    );
    assert!(
        link_problem(&repo, &readme, "../../etc/passwd")
            .is_some_and(|p| p.contains("leaves the repository"))
    );
    assert!(
        link_problem(&repo, &readme, "../no-such-sibling/x.md")
            .is_some_and(|p| p.contains("leaves the repository"))
    );
    assert!(
        link_problem(&repo, &readme, "docs/nothing-here.md")
            .is_some_and(|p| p.contains("does not exist"))
    );
    // Rust: comments are checked, code is not.
    let marker = format!("DESIGN {}5", '\u{a7}');
    assert_eq!(
        outside_mentions(&format!("//! the format of {marker}"), true).len(),
        1
    );
    assert_eq!(
        outside_mentions(&format!("    /// see {marker}"), true).len(),
        1
    );
    assert!(outside_mentions(&format!("const X: &str = \"{marker}\";"), true).is_empty());
}
