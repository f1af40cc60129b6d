//! The dataplane's folders are layers and imports point down (docs/architecture.md): this reads
//! every source file, resolves each `crate::`, `super::` and `self::` path (in `use` trees and
//! inline) to the module file it names, and fails on an import from a layer above and on any
//! import circle between files.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a failed unwrap is a failed test")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom. Entry points first; a file may import only from its own layer or below.
const LAYERS: &[&[&str]] = &[
    &["cli", "fuzzing", "replay"],
    &["runtime"],
    &["control"],
    &["net"],
    &["log"],
    &["tls"],
    &["inspect"],
    &["phy"],
    // `testutil` is compiled for the unit tests only.
    &["addr", "sys", "testutil"],
];

fn rank(module: &str) -> Option<usize> {
    let top = module.split("::").next()?;
    LAYERS.iter().position(|l| l.contains(&top))
}

/// Module path (`net::leg`) of each file below `src`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("below src").with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            out.insert(parts.join("::"), path);
        }
    }
    out
}

/// Every path a file names through `crate`, `super` or `self`, as (root keyword, segments).
fn paths(text: &str) -> Vec<(String, Vec<String>)> {
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let kw = ["crate::", "super::", "self::"].into_iter().find(|k| rest.starts_with(k));
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
        let Some(kw) = kw.filter(|_| boundary) else {
            i += 1;
            continue;
        };
        let root = kw.trim_end_matches("::").to_string();
        let mut j = i + kw.len();
        // `super::super::x`
        let mut segs = Vec::new();
        loop {
            if code[j..].starts_with("super::") && root == "super" {
                segs.push("super".to_string());
                j += "super::".len();
                continue;
            }
            break;
        }
        if code[j..].starts_with('{') {
            // A use tree: take its first-level items and their leading segments.
            let mut depth = 0;
            let mut end = j;
            for (k, c) in code[j..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = j + k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            for item in split_top(&code[j + 1..end]) {
                let lead: Vec<String> = item
                    .split(['{', ' '])
                    .next()
                    .unwrap_or("")
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                let mut p = segs.clone();
                p.extend(lead);
                out.push((root.clone(), p));
            }
            i = end.max(j + 1);
            continue;
        }
        let ident: String = code[j..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
        segs.extend(ident.split("::").filter(|s| !s.is_empty()).map(str::to_string));
        out.push((root, segs));
        i = j + ident.len().max(1);
    }
    out
}

/// Splits a use tree's items at its top-level commas.
fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur).trim().to_string());
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur.trim().to_string());
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// The module a path lands in: its longest prefix that is a file's module.
fn resolve(mods: &BTreeMap<String, PathBuf>, from: &str, root: &str, segs: &[String]) -> Option<String> {
    let mut full: Vec<String> = match root {
        "crate" => Vec::new(),
        "self" => from.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect(),
        _ => {
            let mut m: Vec<String> = from.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect();
            m.pop();
            m
        }
    };
    for s in segs {
        if s == "super" {
            full.pop();
        } else {
            full.push(s.clone());
        }
    }
    (0..=full.len()).rev().map(|n| full[..n].join("::")).find(|k| mods.contains_key(k))
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, path) in &mods {
        let text = std::fs::read_to_string(path).expect("reading a source file");
        let targets = edges.entry(m.clone()).or_default();
        for (root, segs) in paths(&text) {
            if let Some(t) = resolve(&mods, m, &root, &segs) {
                // The crate root declares the layers; naming it is not an import.
                if t != *m && !t.is_empty() && !m.is_empty() {
                    targets.insert(t);
                }
            }
        }
    }
    edges
}

#[test]
fn no_file_imports_from_a_layer_above_it() {
    let edges = graph();
    assert!(edges.len() > 40, "the scan found {} files: is it reading src?", edges.len());
    assert!(edges.values().map(BTreeSet::len).sum::<usize>() > 100, "the scan found almost no imports");
    let mut upward = Vec::new();
    for (from, targets) in &edges {
        let Some(r) = rank(from) else {
            continue;
        };
        for to in targets {
            if rank(to).is_some_and(|t| t < r) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    for from in edges.keys() {
        assert!(from.is_empty() || rank(from).is_some(), "{from}: a folder that is in no layer (add it to LAYERS and docs/architecture.md)");
    }
    assert!(upward.is_empty(), "imports from a layer above:\n{}", upward.join("\n"));
}

#[test]
fn no_import_circle_between_files() {
    let edges = graph();
    // Kahn's algorithm: what cannot be ordered lies on a circle.
    let mut indegree: BTreeMap<&str, usize> = edges.keys().map(|k| (k.as_str(), 0)).collect();
    for targets in edges.values() {
        for t in targets {
            *indegree.entry(t.as_str()).or_default() += 1;
        }
    }
    let mut ready: Vec<&str> = indegree.iter().filter(|(_, d)| **d == 0).map(|(k, _)| *k).collect();
    let mut seen = 0;
    while let Some(n) = ready.pop() {
        seen += 1;
        for t in edges.get(n).into_iter().flatten() {
            let d = indegree.get_mut(t.as_str()).expect("known");
            *d -= 1;
            if *d == 0 {
                ready.push(t);
            }
        }
    }
    let stuck: Vec<&str> = indegree.iter().filter(|(_, d)| **d > 0).map(|(k, _)| *k).collect();
    assert_eq!(seen, indegree.len(), "files on an import circle (or importing one): {stuck:?}");
}

#[test]
fn the_scanner_resolves_use_trees_and_super() {
    let p = paths("use crate::{net::leg::Leg, tls};\nuse super::super::x::Y;\nfn f() { self::g(); crate::sys::wait(); }\n// crate::ignored::Z");
    assert!(p.contains(&("crate".into(), vec!["net".into(), "leg".into(), "Leg".into()])), "{p:?}");
    assert!(p.contains(&("crate".into(), vec!["tls".into()])), "{p:?}");
    assert!(p.contains(&("super".into(), vec!["super".into(), "x".into(), "Y".into()])), "{p:?}");
    assert!(p.contains(&("crate".into(), vec!["sys".into(), "wait".into()])), "{p:?}");
    assert!(!p.iter().any(|(_, s)| s.first().map(String::as_str) == Some("ignored")), "comments are skipped: {p:?}");
    let mods: BTreeMap<String, PathBuf> = ["", "net", "net::leg", "tls", "x"].iter().map(|m| (m.to_string(), PathBuf::new())).collect();
    assert_eq!(resolve(&mods, "net::leg", "super", &["super".into(), "x".into(), "Y".into()]).as_deref(), Some("x"));
    assert_eq!(resolve(&mods, "net::leg", "super", &["Thing".into()]).as_deref(), Some("net"));
    assert_eq!(resolve(&mods, "net", "crate", &["tls".into(), "Foo".into()]).as_deref(), Some("tls"));
    assert_eq!(rank("cli::args"), Some(0));
    assert!(rank("runtime::worker") < rank("phy::xsk"));
}
