//! The documentation names files that exist: every backticked path in
//! ARCHITECTURE.md (`agent/src/fence.rs`, `plan/view.rs`, `probe.rs`,
//! `rpc/`) is found in the repository.
//!
//! A path is resolved as written from the repository root when it starts
//! with a top-level directory (`agent/`, `coordinator/`, ...); otherwise it
//! is relative to a crate's sources (the document's tables are per crate
//! and per module directory), so it must be the tail of some file's (or
//! directory's) path under the crates and tests. Names the programs create
//! at run time (`fleet.toml`, `journal.redb`, `data/`) are not source paths:
//! only names ending in a source or document suffix, or in `/`, are checked.

use std::path::{Path, PathBuf};

/// The repository root (the tests crate's parent).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository root")
        .to_path_buf()
}

/// The repository's top-level entries a path may start with.
const TOP_LEVEL: [&str; 8] = [
    "agent",
    "certs",
    "coordinator",
    "proto",
    "tests",
    "deploy",
    ".ci",
    ".config",
];

/// Where relative paths are looked for (recursively).
const ROOTS: [&str; 6] = ["agent", "certs", "coordinator", "proto", "tests", "deploy"];

/// Suffixes of the files checked.
const CHECKED: [&str; 6] = [".rs", ".md", ".sh", ".proto", ".py", ".toml"];

/// Directories the programs create at run time (a member's data dir, the
/// sandbox's PKI, the coordinator's survivor and pre-operation snapshots and downloaded
/// backups), named in the document beside source paths.
const RUNTIME_DIRS: [&str; 5] = ["data/", "pki/", "recover/", "snapshots/", "downloads/"];

/// Files the programs or the user create (configs, state), named in the
/// document beside source paths.
const RUNTIME_FILES: [&str; 3] = ["fleet.toml", "sandbox.toml", "agent.toml"];

/// Every backticked span of `text`.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Whether `span` looks like a path this test checks.
fn is_path(span: &str) -> bool {
    let plain = !span.is_empty()
        && span
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '.'))
        && !span.starts_with('/')
        && !span.starts_with('.')
        && !span.contains("..");
    plain
        && (span.ends_with('/') || CHECKED.iter().any(|s| span.ends_with(s)))
        && !RUNTIME_DIRS.contains(&span)
        && !RUNTIME_FILES.contains(&span)
}

/// Every file and directory under `dir`, `target` and hidden ones skipped.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(path.clone());
        if path.is_dir() {
            walk(&path, out);
        }
    }
}

/// Whether `span` names something in the repository (see the module doc).
fn exists(repo: &Path, tree: &[PathBuf], span: &str) -> bool {
    let trimmed = span.trim_end_matches('/');
    let want_dir = span.ends_with('/');
    let first = trimmed.split('/').next().unwrap_or_default();
    if TOP_LEVEL.contains(&first) || !trimmed.contains('/') && repo.join(trimmed).is_file() {
        let path = repo.join(trimmed);
        return if want_dir { path.is_dir() } else { path.exists() };
    }
    let tail = format!("/{trimmed}");
    tree.iter()
        .any(|p| p.to_string_lossy().ends_with(&tail) && (!want_dir || p.is_dir()))
}

#[test]
fn architecture_names_files_that_exist() {
    let repo = repo();
    let text = std::fs::read_to_string(repo.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut tree = Vec::new();
    for root in ROOTS {
        walk(&repo.join(root), &mut tree);
    }
    let spans: Vec<&str> = backticked(&text).into_iter().filter(|s| is_path(s)).collect();
    assert!(
        spans.len() > 50 && spans.contains(&"agent/src/fence.rs"),
        "the scan finds the document's paths: {spans:?}"
    );
    let mut missing: Vec<&str> = spans
        .iter()
        .copied()
        .filter(|s| !exists(&repo, &tree, s))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names files that do not exist (fix the document, or the path): {missing:#?}"
    );
}

#[test]
fn the_scan_tells_paths_from_other_code_spans() {
    let repo = repo();
    let mut tree = Vec::new();
    for root in ROOTS {
        walk(&repo.join(root), &mut tree);
    }
    assert_eq!(
        backticked("a `x.rs` b `y` c `plan/z.rs`"),
        ["x.rs", "y", "plan/z.rs"]
    );
    for path in [
        "agent/src/fence.rs",
        "coordinator/",
        "plan/rule/",
        "exit.rs",
        "deploy/dev/setup.sh",
    ] {
        assert!(is_path(path), "{path}");
        assert!(exists(&repo, &tree, path), "{path}");
    }
    for not_a_path in [
        "--rw=write",
        "etcdops status",
        "fleet.toml",
        "data/",
        "/etc/x.rs",
        "TlsFiles::client",
    ] {
        assert!(!is_path(not_a_path), "{not_a_path}");
    }
    for missing in [
        "agent/src/no_such.rs",
        "plan/no_such.rs",
        "no_such_file.rs",
        "exit.rs/",
        "no_such_dir/",
    ] {
        assert!(!exists(&repo, &tree, missing), "{missing}");
    }
}
