//! The layering rules of `docs/architecture.md`, checked over the source:
//! every module of the server crate imports only from its own layer or the
//! layers below it, the modules a layer keeps apart do not import each
//! other, and the client crate never reaches into the server's API.
//!
//! An import is any path `crate::m…` (in a `use`, a `crate::{…}` group or
//! inline) and any `super::…` path that climbs to the crate root, outside
//! comments.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module of `vault/src` and its layer (0 is the bottom).
/// The same table is drawn in docs/architecture.md.
const LAYERS: &[(&str, u8)] = &[
    ("model", 0),
    ("crypto", 1),
    ("store", 1),
    ("error", 2),
    ("schema", 3),
    ("cards", 3),
    ("tokens", 3),
    ("keystore", 3),
    ("audit", 4),
    ("policy", 4),
    ("auth", 5),
    ("throttle", 5),
    ("engine", 6),
    ("config", 7),
    ("backup", 7),
    ("api", 8),
    ("server", 9),
    ("cli", 10),
    ("fuzzing", 10),
];

/// Modules of one layer that must not import each other: ciphers do no
/// I/O, and the trail and the policy know nothing of one another.
const APART: &[(&str, &str)] = &[("crypto", "store"), ("audit", "policy")];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of `text` without comments (line comments and doc comments;
/// the crate has no block comments in code).
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let code = match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        };
        (!code.trim().is_empty()).then_some((i + 1, code))
    })
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules `code` names through `crate::` (or `root`, the
/// `super::` chain that reaches the crate root from this file).
fn imported(code: &str, root: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for prefix in ["crate::", root] {
        if prefix.is_empty() {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            // `super::super::` must not also count as a shorter chain.
            let before = &rest[..at];
            rest = &rest[at + prefix.len()..];
            if prefix != "crate::" && before.ends_with("super::") {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::c, d}`: the first segment of each item at
                // the group's top level.
                let mut depth = 0;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && depth == 0 && !c.is_whitespace() => {
                            found.insert(ident_at(&group[i..]).to_owned());
                            item_start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                found.insert(ident_at(rest).to_owned());
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_from_its_layer_or_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 30, "found the sources");
    let mut problems = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap_or(file);
        let parts: Vec<&str> = rel.iter().filter_map(|p| p.to_str()).collect();
        let Some(first) = parts.first() else { continue };
        if (parts.len() == 1 && *first == "lib.rs") || *first == "bin" {
            continue;
        }
        let module = first.trim_end_matches(".rs");
        let Some(own) = layer(module) else {
            problems.push(format!(
                "{}: module `{module}` has no layer in LAYERS (and docs/architecture.md)",
                rel.display()
            ));
            continue;
        };
        // How many `super::` climb from this file's module to the root.
        let last = parts.last().copied().unwrap_or("");
        let depth = if last == "mod.rs" {
            parts.len() - 1
        } else {
            parts.len()
        };
        let root = "super::".repeat(depth);
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for (line, code) in code_lines(&text) {
            for m in imported(code, &root) {
                if m == module || m.is_empty() {
                    continue;
                }
                let Some(theirs) = layer(&m) else {
                    continue; // a crate-root item (a re-export), not a module
                };
                let apart = APART
                    .iter()
                    .any(|(a, b)| (*a == module && *b == m) || (*b == module && *a == m));
                if theirs > own || apart {
                    problems.push(format!(
                        "{}:{line}: `{module}` (layer {own}) imports `{m}` (layer {theirs}){}",
                        rel.display(),
                        if apart {
                            ", which its layer keeps apart"
                        } else {
                            ""
                        }
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "imports against docs/architecture.md:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_client_never_imports_the_servers_api() {
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("../client/src");
    let mut files = Vec::new();
    rust_files(&client, &mut files);
    assert!(!files.is_empty(), "found the client's sources");
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for (line, code) in code_lines(&text) {
            for banned in ["vault::api", "vault::server", "vault::engine"] {
                if code.contains(banned) {
                    problems.push(format!("{}:{line}: {banned}", file.display()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_every_form_of_import() {
    let got = |code: &str, root: &str| imported(code, root).into_iter().collect::<Vec<_>>();
    assert_eq!(got("use crate::engine::Engine;", "super::"), ["engine"]);
    assert_eq!(
        got("use crate::{audit::X, model::{A, B}, store};", ""),
        ["audit", "model", "store"]
    );
    assert_eq!(got("let x = crate::api::f();", ""), ["api"]);
    assert_eq!(got("use super::engine::Clock;", "super::"), ["engine"]);
    assert_eq!(
        got("use super::Audited;", "super::super::"),
        Vec::<String>::new()
    );
    assert_eq!(got("use super::super::api::X;", "super::super::"), ["api"]);
    assert_eq!(code_lines("// use crate::api;\n").count(), 0);
}
