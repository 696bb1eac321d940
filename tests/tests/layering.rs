//! Every dependency points down, and stays so: read from the source tree.
//!
//! - The binary crates do not depend on each other (Cargo.toml), and the
//!   shared `etcdops-format` crate depends on nothing heavy.
//! - Within the coordinator and the agent, the imports between top-level
//!   modules (`crate::x`, `use crate::{x, ..}`, `super::` resolved to the
//!   top-level module) form no cycle.
//! - The coordinator's modules keep to a declared layer table ([`LAYERS`]):
//!   a module imports only modules of lower layers; `cli` is the top.
//! - `plan/` is pure: no agents, journal, executor, proto, async runtime,
//!   filesystem or clock ([`plan_is_pure`]).
//!
//! Comments and string literals are blanked before reading, so a doc comment
//! naming `crate::cli` is not an import; line numbers are kept for messages.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The coordinator's layers, lowest first: a module may import only
/// modules of a strictly lower layer. A new top-level module gets a row here.
const LAYERS: &[&[&str]] = &[
    // telemetry: the subscriber and the trace context every agent call carries (agents use it).
    &["duration", "exit", "units", "telemetry"],
    &["fleet"],
    &["plan", "agents"],
    &["journal", "observe"],
    &["output"],
    &["snapshot"],
    &["backup", "sandbox"],
    // Above backup: a snapshot before a disruptive step goes to the cluster's backup target.
    &["exec", "drill"],
    // `etcdops serve`: jobs run plans through the executor, and drills.
    &["serve"],
    &["cli"],
];

/// What `plan/` may not name (besides `crate::` modules other than `plan`
/// and `fleet`): I/O, the async runtime, the wire types and the clock.
const PLAN_FORBIDDEN: &[&str] = &[
    "crate::agents",
    "crate::journal",
    "crate::exec",
    "crate::observe",
    "etcdops_proto",
    "tokio",
    "std::fs",
    "Instant::now",
    "SystemTime",
    "OffsetDateTime::now",
];

/// Crates `etcdops-format` must not depend on: it is linked by both binaries.
const HEAVY: &[&str] = &[
    "tokio",
    "tonic",
    "zbus",
    "zbus_systemd",
    "etcd-client",
    "prometheus-client",
    "sysinfo",
    "etcdops-agent",
    "etcdops-coordinator",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

// ---------------------------------------------------------------------------
// Cargo.toml

/// Every dependency name of a manifest: `[dependencies]`, dev, build, and
/// their `[target.'cfg(..)'.*]` forms.
fn dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let doc: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let kinds = ["dependencies", "dev-dependencies", "build-dependencies"];
    let mut tables: Vec<&toml::Table> = kinds
        .iter()
        .filter_map(|k| doc.get(*k).and_then(toml::Value::as_table))
        .collect();
    if let Some(targets) = doc.get("target").and_then(toml::Value::as_table) {
        for target in targets.values().filter_map(toml::Value::as_table) {
            tables.extend(
                kinds
                    .iter()
                    .filter_map(|k| target.get(*k).and_then(toml::Value::as_table)),
            );
        }
    }
    tables
        .into_iter()
        .flat_map(|t| {
            t.iter().map(|(name, spec)| {
                // `alias = { package = "real-name", .. }`
                spec.get("package")
                    .and_then(toml::Value::as_str)
                    .unwrap_or(name)
                    .to_string()
            })
        })
        .collect()
}

#[test]
fn binary_crates_do_not_depend_on_each_other() {
    let root = root();
    let coordinator = dependencies(&root.join("coordinator/Cargo.toml"));
    assert!(
        !coordinator.contains("etcdops-agent"),
        "coordinator/Cargo.toml depends on etcdops-agent: share through etcdops-format (proto/format) instead"
    );
    assert!(
        coordinator.contains("etcdops-format"),
        "the coordinator reads snapshots through etcdops-format"
    );
    let agent = dependencies(&root.join("agent/Cargo.toml"));
    assert!(
        !agent.contains("etcdops-coordinator"),
        "agent/Cargo.toml depends on etcdops-coordinator"
    );
    let format = dependencies(&root.join("proto/format/Cargo.toml"));
    let heavy: Vec<&&str> = HEAVY.iter().filter(|h| format.contains(**h)).collect();
    assert!(
        heavy.is_empty(),
        "proto/format/Cargo.toml depends on {heavy:?}: the shared crate stays light"
    );
}

// ---------------------------------------------------------------------------
// Reading sources

/// `text` with comments, string and char literals blanked (newlines kept).
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && !chars
                .get(i.wrapping_sub(1))
                .is_some_and(|p| p.is_alphanumeric() || *p == '_')
            && raw_string_start(&chars, if c == 'b' { i + 1 } else { i }).is_some()
        {
            let start = if c == 'b' { i + 1 } else { i };
            let hashes = raw_string_start(&chars, start).unwrap_or(0);
            // r, hashes, quote
            let mut j = start + 1 + hashes + 1;
            while j < chars.len() {
                if chars[j] == '"' && (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &ch in &chars[i..j.min(chars.len())] {
                out.push(blank(ch));
            }
            i = j;
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A char literal (a lifetime is `'a` without a closing quote).
            let mut j = i + 1;
            if chars.get(j) == Some(&'\\') {
                j += 2;
            } else {
                j += 1;
            }
            while j < chars.len() && chars[j] != '\'' && chars[j] != '\n' {
                j += 1;
            }
            for _ in i..=j.min(chars.len() - 1) {
                out.push(' ');
            }
            i = j + 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// At `r`: the number of `#` of a raw string literal starting here.
fn raw_string_start(chars: &[char], at: usize) -> Option<usize> {
    if chars.get(at) != Some(&'r') {
        return None;
    }
    let mut hashes = 0;
    while chars.get(at + 1 + hashes) == Some(&'#') {
        hashes += 1;
    }
    (chars.get(at + 1 + hashes) == Some(&'"')).then_some(hashes)
}

/// One source file: its module path (`["plan", "rule", "lexer"]`) and its
/// stripped text.
struct Source {
    path: PathBuf,
    module: Vec<String>,
    text: String,
}

impl Source {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset].matches('\n').count() + 1
    }

    fn at(&self, offset: usize, src: &Path) -> String {
        let rel = self.path.strip_prefix(src).unwrap_or(&self.path);
        format!("{}:{}", rel.display(), self.line_of(offset))
    }
}

fn sources(src: &Path) -> Vec<Source> {
    let mut files = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(src).expect("under src").with_extension("");
            let mut module: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|m| m == "mod") {
                module.pop();
            }
            if module == ["lib"] || module == ["main"] {
                module.clear();
            }
            let text =
                strip(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
            Source { path, module, text }
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The identifier at `at`, if any.
fn ident_at(text: &str, at: usize) -> Option<&str> {
    let rest = &text[at..];
    let len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
    (len > 0).then(|| &rest[..len])
}

fn skip_ws(text: &str, mut at: usize) -> usize {
    while text[at..].starts_with(char::is_whitespace) {
        at += text[at..].chars().next().map_or(1, char::len_utf8);
    }
    at
}

/// The first path segments named at `at`: `x` of `x::..`, or each `a` of
/// `{a::.., b, ..}` (top level of the braces only).
fn first_segments(text: &str, at: usize) -> Vec<String> {
    let at = skip_ws(text, at);
    if !text[at..].starts_with('{') {
        return ident_at(text, at).map(str::to_string).into_iter().collect();
    }
    let mut names = Vec::new();
    let mut depth = 0;
    let mut expect_name = false;
    for (i, c) in text[at..].char_indices() {
        match c {
            '{' => {
                depth += 1;
                expect_name = depth == 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expect_name = true,
            c if c.is_whitespace() => {}
            _ if expect_name => {
                if let Some(name) = ident_at(text, at + i) {
                    names.push(name.to_string());
                }
                expect_name = false;
            }
            _ => {}
        }
    }
    names
}

/// Inline `mod name {` blocks open at each offset: (name, brace depth
/// inside it) while scanning.
fn inline_mods_at(text: &str) -> Vec<(usize, Vec<String>)> {
    // (offset, the stack of inline modules open there), one entry per change.
    let mut changes = vec![(0, Vec::new())];
    let mut stack: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                depth += 1;
                // `mod name {`: look back for the keyword.
                let before = text[..i].trim_end();
                let name_start = before.rfind(|c: char| !is_ident(c)).map_or(0, |p| p + 1);
                let name = &before[name_start..];
                let kw = before[..name_start].trim_end();
                if !name.is_empty() && kw.ends_with("mod") && !kw[..kw.len() - 3].ends_with(is_ident) {
                    stack.push((name.to_string(), depth));
                    changes.push((i, stack.iter().map(|(n, _)| n.clone()).collect()));
                }
            }
            b'}' => {
                if stack.last().is_some_and(|(_, d)| *d == depth) {
                    stack.pop();
                    changes.push((i, stack.iter().map(|(n, _)| n.clone()).collect()));
                }
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
        i += 1;
    }
    changes
}

/// An import of another top-level module: where, and of what.
#[derive(Debug, Clone)]
struct Import {
    from: String,
    to: String,
    at: String,
}

/// Every reference from one top-level module to another in `src`.
fn imports(src: &Path) -> (BTreeSet<String>, Vec<Import>) {
    let files = sources(src);
    let tops: BTreeSet<String> = files.iter().filter_map(|f| f.module.first().cloned()).collect();
    // Names the crate root re-exports (`pub use exit::ExitStatus;`).
    let mut root_names: BTreeMap<String, String> = BTreeMap::new();
    for f in files.iter().filter(|f| f.module.is_empty()) {
        for stmt in f.text.split(';') {
            let stmt = stmt.trim();
            if let Some(path) = stmt.strip_prefix("pub use ") {
                let parts: Vec<&str> = path.split("::").map(str::trim).collect();
                if let (Some(first), Some(last)) = (parts.first(), parts.last())
                    && tops.contains(*first)
                    && last.chars().all(is_ident)
                {
                    root_names.insert((*last).to_string(), (*first).to_string());
                }
            }
        }
    }
    let resolve = |name: &str| -> Option<String> {
        if tops.contains(name) {
            Some(name.to_string())
        } else {
            root_names.get(name).cloned()
        }
    };
    let mut found = Vec::new();
    for f in files.iter().filter(|f| !f.module.is_empty()) {
        let from = f.module[0].clone();
        let text = &f.text;
        let mods = inline_mods_at(text);
        let mut push = |to: String, offset: usize| {
            if to != from {
                found.push(Import {
                    from: from.clone(),
                    to,
                    at: f.at(offset, src),
                });
            }
        };
        for (offset, _) in text.match_indices("crate::") {
            if offset > 0 && text[..offset].ends_with(|c: char| is_ident(c) || c == ':' || c == '$') {
                continue; // `$crate::`, `etcdops_x::crate::`
            }
            for name in first_segments(text, offset + "crate::".len()) {
                if let Some(to) = resolve(&name) {
                    push(to, offset);
                }
            }
        }
        let mut offset = 0;
        while let Some(found_at) = text[offset..].find("super::") {
            let start = offset + found_at;
            offset = start + "super::".len();
            if start > 0 && text[..start].ends_with(|c: char| is_ident(c) || c == ':') {
                continue; // the second `super::` of a chain: counted with the first
            }
            let mut ups = 1;
            let mut after = offset;
            while text[after..].starts_with("super::") {
                ups += 1;
                after += "super::".len();
            }
            offset = after;
            let inline = mods
                .iter()
                .take_while(|(at, _)| *at <= start)
                .last()
                .map(|(_, stack)| stack.clone())
                .unwrap_or_default();
            let mut module: Vec<String> = f.module.iter().cloned().chain(inline).collect();
            if ups > module.len() {
                continue; // above the crate root: not ours to judge
            }
            module.truncate(module.len() - ups);
            match module.first() {
                Some(top) => push(top.clone(), start),
                None => {
                    for name in first_segments(text, after) {
                        if let Some(to) = resolve(&name) {
                            push(to, start);
                        }
                    }
                }
            }
        }
    }
    (tops, found)
}

/// The import graph: for each edge, the first place it is made.
fn graph(imports: &[Import]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut g: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for i in imports {
        g.entry(i.from.clone())
            .or_default()
            .entry(i.to.clone())
            .or_insert_with(|| i.at.clone());
    }
    g
}

/// A cycle of the graph, if there is one, as its edges.
fn find_cycle(g: &BTreeMap<String, BTreeMap<String, String>>) -> Option<Vec<(String, String, String)>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        node: &str,
        g: &BTreeMap<String, BTreeMap<String, String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for next in g.get(node).into_iter().flat_map(|e| e.keys()) {
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let from = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut cycle = path[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(cycle) = visit(next, g, marks, path) {
                        return Some(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in g.keys() {
        if marks.get(node).copied().unwrap_or(Mark::New) == Mark::New
            && let Some(cycle) = visit(node, g, &mut marks, &mut Vec::new())
        {
            return Some(
                cycle
                    .windows(2)
                    .map(|w| (w[0].clone(), w[1].clone(), g[&w[0]][&w[1]].clone()))
                    .collect(),
            );
        }
    }
    None
}

fn assert_acyclic(crate_dir: &str) {
    let src = root().join(crate_dir).join("src");
    let (_, found) = imports(&src);
    let g = graph(&found);
    if let Some(cycle) = find_cycle(&g) {
        let edges: Vec<String> = cycle
            .iter()
            .map(|(from, to, at)| format!("  {from} -> {to}   ({crate_dir}/src/{at})"))
            .collect();
        panic!(
            "{crate_dir}: the imports between top-level modules form a cycle:\n{}\nmove what the lower module needs down (or take it as a parameter)",
            edges.join("\n")
        );
    }
}

#[test]
fn coordinator_modules_form_no_cycle() {
    assert_acyclic("coordinator");
}

#[test]
fn agent_modules_form_no_cycle() {
    assert_acyclic("agent");
}

#[test]
fn coordinator_keeps_its_layers() {
    let src = root().join("coordinator/src");
    let (tops, found) = imports(&src);
    let layer_of = |m: &str| LAYERS.iter().position(|l| l.contains(&m));
    let unlisted: Vec<&String> = tops.iter().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        unlisted.is_empty(),
        "coordinator modules {unlisted:?} have no layer: add them to LAYERS in tests/tests/layering.rs"
    );
    let mut wrong = Vec::new();
    for i in &found {
        let (Some(from), Some(to)) = (layer_of(&i.from), layer_of(&i.to)) else {
            continue;
        };
        if to >= from {
            let why = if i.to == "cli" {
                "nothing imports the CLI: pass plain parameters in and let cli/ print"
            } else if to == from {
                "modules of one layer do not import each other"
            } else {
                "an upward import"
            };
            wrong.push(format!(
                "  coordinator/src/{}: {} (layer {from}) imports {} (layer {to}): {why}",
                i.at, i.from, i.to
            ));
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "the coordinator's imports must point down (LAYERS in tests/tests/layering.rs):\n{}",
        wrong.join("\n")
    );
}

/// `plan/`'s violations of purity, each naming file:line.
fn plan_impurities() -> Vec<String> {
    let src = root().join("coordinator/src");
    let mut problems = Vec::new();
    for f in sources(&src)
        .iter()
        .filter(|f| f.module.first().is_some_and(|m| m == "plan"))
    {
        for pattern in PLAN_FORBIDDEN {
            for (offset, _) in f.text.match_indices(pattern) {
                let before = f.text[..offset].chars().next_back();
                let after = f.text[offset + pattern.len()..].chars().next();
                if before.is_some_and(is_ident) || after.is_some_and(is_ident) {
                    continue; // part of a longer name
                }
                problems.push(format!(
                    "  coordinator/src/{}: names `{pattern}`",
                    f.at(offset, &src)
                ));
            }
        }
        // `use std::{fs, ..}`
        for (offset, _) in f.text.match_indices("std::") {
            if first_segments(&f.text, offset + "std::".len())
                .iter()
                .any(|s| s == "fs")
            {
                problems.push(format!(
                    "  coordinator/src/{}: names `std::fs`",
                    f.at(offset, &src)
                ));
            }
        }
    }
    let (_, found) = imports(&src);
    for i in found.iter().filter(|i| i.from == "plan" && i.to != "fleet") {
        problems.push(format!(
            "  coordinator/src/{}: imports crate::{} (plan imports only plan and fleet)",
            i.at, i.to
        ));
    }
    problems.sort();
    problems.dedup();
    problems
}

#[test]
fn plan_is_pure() {
    let problems = plan_impurities();
    assert!(
        problems.is_empty(),
        "plan/ must stay pure (no agents, journal, executor, proto, tokio, filesystem or clock):\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// The reader itself

#[test]
fn the_reader_sees_imports_not_comments_or_strings() {
    let text = strip(
        "//! see crate::cli\nuse crate::{fleet::Member, agents, plan::{a, b}};\nlet s = \"crate::journal\";\n\
         let r = r#\"crate::exec \"quoted\"\"#; let c = '{'; let l: &'a str;\n/* crate::output */ crate::units::x();\n",
    );
    assert!(!text.contains("cli") && !text.contains("journal") && !text.contains("exec"));
    assert!(!text.contains("output"), "{text}");
    assert_eq!(text.lines().count(), 5, "lines kept");
    let at = text.find("crate::{").expect("group") + "crate::".len();
    assert_eq!(first_segments(&text, at), ["fleet", "agents", "plan"]);
    assert!(text.contains("crate::units::x"));
    let mods = inline_mods_at("fn a() {}\nmod tests {\n fn b() { x }\n}\n");
    assert_eq!(mods.len(), 3, "{mods:?}");
    assert_eq!(mods[1].1, ["tests"]);
    assert!(mods[2].1.is_empty());
    let cycle = find_cycle(&graph(&[
        Import {
            from: "a".into(),
            to: "b".into(),
            at: "a.rs:1".into(),
        },
        Import {
            from: "b".into(),
            to: "a".into(),
            at: "b.rs:2".into(),
        },
    ]))
    .expect("a cycle");
    assert_eq!(cycle.len(), 2);
    assert_eq!(cycle[0], ("a".into(), "b".into(), "a.rs:1".into()));
}
