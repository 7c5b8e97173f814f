//! The repository's tidy rules, in the manner of rust-analyzer's `xtask tidy` and TigerBeetle's
//! `tidy.zig`: rules about the tree that the compiler does not check, run by `cargo test`
//! (`tests/tidy.rs`) over the whole repository.
//!
//! ```text
//!   Tree::load(root) ──► every rule ──► Vec<Violation> (file:line: what is wrong)
//! ```
//!
//! Each rule is a plain function over a [`Tree`] (file path → text), so its own tests plant a
//! violation in a small tree and show that the rule catches it.
#![warn(missing_docs, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

/// The only crate that may depend on RocksDB.
pub const ROCKSDB_CRATE: &str = "crates/storage-rocks/";
/// Crates below the node assembly: none of them may depend on `hotlake-node`.
pub const BELOW_THE_NODE: &[&str] = &["crates/", "proto/", "client/", "tools/tsbs/"];
/// Longest function, in lines, that needs no reason.
pub const FUNCTION_LINES_MAX: usize = 100;
/// Marks a reason for an exception to a rule, in a comment: `// tidy: long (why)`.
pub const REASON_MARK: &str = "tidy:";
/// Library sources whose `pub` items must have a caller somewhere in the repository. The
/// client library and the proto contract are public APIs for applications, so they are
/// exempt; binaries have no `pub` API.
pub const LIBRARY_SOURCES: &[&str] = &["crates/", "node/src/"];
/// Tests that run in real time, where a fixed sleep is a race: the simulator's tests sleep
/// in simulated time and are not covered.
pub const REAL_TIME_TESTS: &[&str] = &["node/tests/", "crates/", "tools/"];

/// This crate: its sources and tests spell out the very things the rules forbid.
pub const TIDY_CRATE: &str = "tools/tidy/";

/// The repository's text files that rules read: Rust sources and Cargo manifests, by path
/// relative to the root, with `/` separators (this crate's own files left out).
#[derive(Debug, Default)]
pub struct Tree {
    files: BTreeMap<String, String>,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path relative to the root.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The rule and what breaks it.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.what)
    }
}

impl Tree {
    /// Reads every `.rs` file and `Cargo.toml` under `root`, skipping build output and VCS data.
    pub fn load(root: &Path) -> std::io::Result<Tree> {
        let mut tree = Tree::default();
        let mut pending = vec![root.to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if path.is_dir() {
                    if !name.starts_with('.') && name != "target" {
                        pending.push(path);
                    }
                } else if name.ends_with(".rs") || name == "Cargo.toml" {
                    let rel = path.strip_prefix(root).expect("under the root").to_string_lossy().replace('\\', "/");
                    if !rel.starts_with(TIDY_CRATE) {
                        tree.files.insert(rel, std::fs::read_to_string(&path)?);
                    }
                }
            }
        }
        Ok(tree)
    }

    /// A tree of the given files, for the rules' own tests.
    pub fn of(files: &[(&str, &str)]) -> Tree {
        Tree { files: files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect() }
    }

    fn sources(&self) -> impl Iterator<Item = (&str, &str)> {
        self.files.iter().filter(|(p, _)| p.ends_with(".rs")).map(|(p, t)| (p.as_str(), t.as_str()))
    }

    fn manifests(&self) -> impl Iterator<Item = (&str, &str)> {
        self.files.iter().filter(|(p, _)| p.ends_with("Cargo.toml")).map(|(p, t)| (p.as_str(), t.as_str()))
    }
}

/// Every rule over `tree`.
pub fn check_all(tree: &Tree) -> Vec<Violation> {
    let mut out = rocksdb_only_in_its_crate(tree);
    out.extend(nothing_below_imports_the_node(tree));
    out.extend(long_functions_say_why(tree));
    out.extend(no_fixed_sleeps_in_tests(tree));
    out.extend(pub_items_have_callers(tree));
    out
}

fn violation(file: &str, line: usize, what: impl Into<String>) -> Violation {
    Violation { file: file.to_string(), line, what: what.into() }
}

/// Lines of a manifest that declare a dependency on `krate` (outside the workspace's
/// `[workspace.dependencies]` table, which only names versions).
fn dependency_lines<'a>(manifest: &'a str, krate: &'a str) -> impl Iterator<Item = usize> + 'a {
    let mut section = String::new();
    manifest.lines().enumerate().filter_map(move |(i, line)| {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
            return None;
        }
        let key = line.split(['=', ' ']).next().unwrap_or_default();
        let declares = key == krate || line.contains(&format!("package = \"{krate}\""));
        (declares && section.contains("dependencies") && section != "[workspace.dependencies]").then_some(i + 1)
    })
}

/// Only `hotlake-storage-rocks` names RocksDB, in its manifest or its code.
pub fn rocksdb_only_in_its_crate(tree: &Tree) -> Vec<Violation> {
    let mut out = Vec::new();
    for (path, text) in tree.manifests().filter(|(p, _)| !p.starts_with(ROCKSDB_CRATE)) {
        for line in dependency_lines(text, "rocksdb") {
            out.push(violation(path, line, format!("depends on rocksdb; only {ROCKSDB_CRATE} may")));
        }
    }
    for (path, text) in tree.sources().filter(|(p, _)| !p.starts_with(ROCKSDB_CRATE)) {
        for (i, line) in text.lines().enumerate() {
            if line.contains("rocksdb::") && !line.trim_start().starts_with("//") {
                out.push(violation(path, i + 1, format!("names rocksdb; only {ROCKSDB_CRATE} may")));
            }
        }
    }
    out
}

/// Crates below the node assembly neither depend on `hotlake-node` nor name `hotlake_node`.
pub fn nothing_below_imports_the_node(tree: &Tree) -> Vec<Violation> {
    let below = |p: &str| BELOW_THE_NODE.iter().any(|b| p.starts_with(b));
    let mut out = Vec::new();
    for (path, text) in tree.manifests().filter(|(p, _)| below(p)) {
        for line in dependency_lines(text, "hotlake-node") {
            out.push(violation(path, line, "depends on hotlake-node, the assembly above it"));
        }
    }
    for (path, text) in tree.sources().filter(|(p, _)| below(p)) {
        for (i, line) in text.lines().enumerate() {
            if line.contains("hotlake_node::") {
                out.push(violation(path, i + 1, "imports hotlake_node, the assembly above it"));
            }
        }
    }
    out
}

/// Spans of the functions in `text`: (name, first line, last line), 0-based, found by
/// counting braces from each `fn` line (strings holding braces inside a body can shift a
/// span; the sources keep such strings rare and balanced).
fn function_spans(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some(name) = function_name(line) else { continue };
        let (mut depth, mut opened) = (0i64, false);
        for (end, body) in lines.iter().enumerate().skip(start) {
            for ch in body.chars() {
                match ch {
                    '{' => (depth, opened) = (depth + 1, true),
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth <= 0 {
                out.push((name.to_string(), start, end));
                break;
            }
            if !opened && body.trim_end().ends_with(';') {
                break;
            }
        }
    }
    out
}

/// The name declared by a `fn` line (`pub(crate) async fn name(` and the like).
fn function_name(line: &str) -> Option<&str> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return None;
    }
    let at = code.find("fn ")?;
    let before = &code[..at];
    let qualifiers_only = before.split_whitespace().all(|w| {
        matches!(w, "pub" | "async" | "const" | "unsafe" | "extern") || w.starts_with("pub(") || w.starts_with('"')
    });
    if !qualifiers_only {
        return None;
    }
    let rest = &code[at + 3..];
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// Whether one of the `lookback` lines above `line` (0-based), or the line itself, gives a
/// reason with `mark`.
fn has_reason(lines: &[&str], line: usize, lookback: usize, mark: &str) -> bool {
    let first = line.saturating_sub(lookback);
    lines[first..=line].iter().any(|l| l.contains("//") && l.contains(REASON_MARK) && l.contains(mark))
}

/// A function longer than [`FUNCTION_LINES_MAX`] says why in a `// tidy: long …` comment
/// just above it.
pub fn long_functions_say_why(tree: &Tree) -> Vec<Violation> {
    let mut out = Vec::new();
    for (path, text) in tree.sources() {
        let lines: Vec<&str> = text.lines().collect();
        for (name, start, end) in function_spans(text) {
            let length = end - start + 1;
            if length > FUNCTION_LINES_MAX && !has_reason(&lines, start, 4, "long") {
                out.push(violation(
                    path,
                    start + 1,
                    format!("fn {name} has {length} lines (> {FUNCTION_LINES_MAX}) and no `// tidy: long` reason"),
                ));
            }
        }
    }
    out
}

/// In real-time tests, a sleep waits on a condition with a deadline (a `deadline` in the
/// lines just above it) or says why it is a fixed pause (`// tidy: sleep …`).
pub fn no_fixed_sleeps_in_tests(tree: &Tree) -> Vec<Violation> {
    let is_test = |p: &str| REAL_TIME_TESTS.iter().any(|t| p.starts_with(t)) && p.contains("/tests/");
    let mut out = Vec::new();
    for (path, text) in tree.sources().filter(|(p, _)| is_test(p)) {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if !line.contains("sleep(") || line.trim_start().starts_with("//") {
                continue;
            }
            let waits = lines[i.saturating_sub(8)..i].iter().any(|l| l.contains("deadline"));
            if !waits && !has_reason(&lines, i, 2, "sleep") {
                out.push(violation(path, i + 1, "a fixed sleep in a test: wait on a condition with a deadline"));
            }
        }
    }
    out
}

/// Every `pub` item of the library crates is named somewhere besides its definition.
pub fn pub_items_have_callers(tree: &Tree) -> Vec<Violation> {
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for (_, text) in tree.sources() {
        for word in text.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|w| !w.is_empty()) {
            *uses.entry(word).or_default() += 1;
        }
    }
    let library = |p: &str| LIBRARY_SOURCES.iter().any(|l| p.starts_with(l)) && p.contains("/src/");
    let mut out = Vec::new();
    for (path, text) in tree.sources().filter(|(p, _)| library(p)) {
        for (i, line) in text.lines().enumerate() {
            let Some(name) = pub_item_name(line) else { continue };
            if uses.get(name).copied().unwrap_or(0) <= 1 {
                out.push(violation(path, i + 1, format!("pub item `{name}` has no caller")));
            }
        }
    }
    out
}

/// The name a `pub` item line declares (`pub fn x`, `pub struct X`, `pub const X`, ...).
fn pub_item_name(line: &str) -> Option<&str> {
    let mut words = line.trim_start().strip_prefix("pub ")?.split_whitespace();
    let mut kind = words.next()?;
    while matches!(kind, "async" | "const" | "unsafe") {
        let next = words.next()?;
        if kind == "const" && !matches!(next, "fn" | "unsafe") {
            return ident(next);
        }
        kind = next;
    }
    match kind {
        "fn" | "struct" | "enum" | "type" | "trait" | "static" | "mod" => ident(words.next()?),
        _ => None,
    }
}

fn ident(word: &str) -> Option<&str> {
    let end = word.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(word.len());
    (end > 0).then(|| &word[..end])
}
