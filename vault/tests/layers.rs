//! The layering rules of `docs/architecture.md`, checked over the source:
//! every module of the server crate imports only from its own layer or the
//! layers below it, the modules a layer keeps apart do not import each
//! other, and the client crate never reaches into the server's API.
//!
//! An import is any path `crate::m…` (in a `use`, a `crate::{…}` group or
//! inline) and any `super::…` path that climbs to the crate root, outside
//! comments.

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

/// `text` with comments blanked out (line, doc and block comments; string
/// and character literals kept), so that offsets still give line numbers.
fn strip_comments(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' && i + 1 < b.len() {
                out.push(c as char);
                out.push(b[i + 1] as char);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            out.push(c as char);
            i += 1;
        } else if c == b'"' {
            in_str = true;
            out.push('"');
            i += 1;
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                out.push(' ');
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            while i < b.len() && !b[i..].starts_with(b"*/") {
                out.push(if b[i] == b'\n' { '\n' } else { ' ' });
                i += 1;
            }
            out.push_str("  ");
            i += 2;
        } else {
            // Keep multi-byte characters whole.
            let ch = text[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first path segment of each item of the `{…}` group at the start of
/// `group` (after its `{`), at the group's top level.
fn group_heads(group: &str, found: &mut Vec<(String, usize)>, at: usize) {
    let mut depth = 0;
    let mut item_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && depth == 0 && !c.is_whitespace() => {
                found.push((ident_at(&group[i..]).to_owned(), at));
                item_start = false;
            }
            _ => {}
        }
    }
}

/// The top-level modules `code` (comments stripped) names through each of
/// `prefixes` (`crate::`, the `super::` chain that reaches the crate root
/// from this file, or another crate's name), with the byte offset of each.
fn imported(code: &str, prefixes: &[&str]) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for prefix in prefixes.iter().filter(|p| !p.is_empty()) {
        let mut from = 0;
        while let Some(rel) = code[from..].find(prefix) {
            let at = from + rel;
            from = at + prefix.len();
            let before = &code[..at];
            // A longer `super::` chain, or a path like `foo::crate::` (not
            // a crate root), is not this prefix.
            if before.ends_with("::")
                || before
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                continue;
            }
            let rest = &code[from..];
            if let Some(group) = rest.strip_prefix('{') {
                group_heads(group, &mut found, at);
            } else {
                found.push((ident_at(rest).to_owned(), at));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

fn line_of(code: &str, at: usize) -> usize {
    code[..at].matches('\n').count() + 1
}

/// What the crate root re-exports, by name → the module it comes from
/// (`pub use server::{StartError, run};` makes `crate::run` a `server`
/// import).
fn root_reexports(lib: &str) -> Vec<(String, String)> {
    let code = strip_comments(lib);
    let mut out = Vec::new();
    for stmt in code.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = ident_at(rest).to_owned();
        let names = rest[module.len()..].trim_start_matches("::");
        let names = names.trim_start_matches('{').trim_end_matches('}');
        for n in names.split(',') {
            let n = n.trim();
            let n = n.rsplit("::").next().unwrap_or(n);
            let n = n.rsplit(" as ").next().unwrap_or(n).trim();
            if !n.is_empty() {
                out.push((n.to_owned(), module.clone()));
            }
        }
    }
    out
}

#[test]
fn every_module_imports_only_from_its_layer_or_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 30, "found the sources");
    let reexports =
        root_reexports(&std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default());
    assert!(
        reexports
            .iter()
            .any(|(n, m)| n == "Config" && m == "config"),
        "read the crate root's re-exports"
    );
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
        let code = strip_comments(&text);
        let via_crate = imported(&code, &["crate::"]);
        // A `super::` chain as long as this file's depth reaches the crate
        // root only outside inline modules (`mod tests { use super::… }`
        // climbs one less): its names count only where they are modules.
        let via_super = imported(&code, &[&root])
            .into_iter()
            .filter(|(n, _)| layer(n).is_some());
        for (name, at) in via_crate.into_iter().chain(via_super) {
            // A crate-root item counts as the module it is re-exported from.
            let m = reexports
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(name.as_str(), |(_, m)| m.as_str());
            if m == module || m.is_empty() {
                continue;
            }
            let Some(theirs) = layer(m) else {
                problems.push(format!(
                    "{}:{}: `{module}` imports `crate::{name}`, which has no layer",
                    rel.display(),
                    line_of(&code, at)
                ));
                continue;
            };
            let apart = APART
                .iter()
                .any(|(a, b)| (*a == module && *b == m) || (*b == module && *a == m));
            if theirs > own || apart {
                problems.push(format!(
                    "{}:{}: `{module}` (layer {own}) imports `{m}` (layer {theirs}){}",
                    rel.display(),
                    line_of(&code, at),
                    if apart {
                        ", which its layer keeps apart"
                    } else {
                        ""
                    }
                ));
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
        let code = strip_comments(&std::fs::read_to_string(file).unwrap_or_default());
        for (m, at) in imported(&code, &["vault::"]) {
            if ["api", "server", "engine"].contains(&m.as_str()) {
                problems.push(format!(
                    "{}:{}: vault::{m}",
                    file.display(),
                    line_of(&code, at)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checker_sees_every_form_of_import() {
    let got = |code: &str, root: &str| {
        imported(&strip_comments(code), &["crate::", root])
            .into_iter()
            .map(|(m, _)| m)
            .collect::<Vec<_>>()
    };
    assert_eq!(got("use crate::engine::Engine;", "super::"), ["engine"]);
    assert_eq!(
        got("use crate::{audit::X, model::{A, B}, store};", ""),
        ["audit", "model", "store"]
    );
    // A group that rustfmt wrapped over several lines.
    assert_eq!(
        got(
            "use crate::{\n    api::X,\n    engine::{\n        Y,\n    },\n};",
            ""
        ),
        ["api", "engine"]
    );
    assert_eq!(got("let x = crate::api::f();", ""), ["api"]);
    assert_eq!(got("use super::engine::Clock;", "super::"), ["engine"]);
    assert!(got("use super::Audited;", "super::super::").is_empty());
    assert_eq!(got("use super::super::api::X;", "super::super::"), ["api"]);
    assert!(got("// use crate::api;\n/* crate::engine */", "").is_empty());
    // `//` inside a string is not a comment.
    assert_eq!(got("let u = \"http://x\"; crate::api::f();", ""), ["api"]);
    assert_eq!(line_of("a\nb\ncrate::x", 4), 3);
    assert_eq!(
        root_reexports("pub use config::Config;\npub use server::{StartError, run};"),
        [
            ("Config".to_owned(), "config".to_owned()),
            ("StartError".to_owned(), "server".to_owned()),
            ("run".to_owned(), "server".to_owned()),
        ]
    );
}
