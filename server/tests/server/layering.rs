//! The server's module map has layers, and this test keeps them (the server's half of
//! `cli/tests/layering.rs`): a module imports only modules of a strictly lower layer, so
//! there is no import cycle. Paths are read whole (`crate::seams::Publish`,
//! `crate::api::{self, AppState}`, `crate::kafka::Batching` inside an expression), from
//! every line of `server/src` that is not a comment, at any depth of the file tree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Layers, bottom first (see the layout in `server/src/lib.rs`).
const LAYERS: &[&[&str]] = &[
    &["config", "telemetry", "shutdown"],
    &["seams"],
    // The services see only the seams; the adapters implement them. Neither names the
    // other: a module of this layer imports no other module of it.
    &["api", "consumer", "kafka", "store"],
    &["sql_reads"],
    &["seeded"],
    &["wiring"],
    &["cli"],
    &["lib", "main", "bin"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("server/src is readable") {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module of a file: `api/handlers.rs` → `api`, `lib.rs` → `lib`.
fn top_module(file: &Path) -> String {
    let rel = file.strip_prefix(src_dir()).expect("under src");
    let first = rel.iter().next().expect("a path").to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Every module path named after `crate::` in `text` outside comments, whole: the
/// lowercase segments up to the first item (`crate::seams::Publish` → [seams];
/// `crate::api::limits::Limits` → [api, limits]); a brace group gives one per item.
fn paths(text: &str) -> BTreeSet<Vec<String>> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().last();
            rest = &rest[i + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `wiber_model::...crate::`, not ours
            }
            collect(rest, Vec::new(), &mut out);
        }
    }
    out
}

/// Reads `a::b::{c, d::e}` after a `crate::`, adding each module path it names.
fn collect(text: &str, prefix: Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    if let Some(group) = text.strip_prefix('{') {
        let end = group.find('}').unwrap_or(group.len());
        for item in group[..end].split(',') {
            collect(item.trim(), prefix.clone(), out);
        }
        return;
    }
    let name: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let is_module = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name != "self"
        && text[name.len()..].starts_with("::");
    if !is_module {
        // An item (`Publish`, `run_api`, `self`): the path so far is the module.
        if !prefix.is_empty() {
            out.insert(prefix);
        } else if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && name != "self" {
            out.insert(vec![name]); // `crate::{kafka, store}`: modules named whole
        }
        return;
    }
    let mut p = prefix;
    p.push(name.clone());
    collect(&text[name.len() + 2..], p, out);
}

/// The imports of `server/src` that do not go down the layers.
fn violations() -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files.sort();
    let mut bad = Vec::new();
    for f in files {
        let from = top_module(&f);
        let text = std::fs::read_to_string(&f).expect("readable source");
        bad.extend(judge(&from, &text, &f.display().to_string()));
    }
    bad
}

/// What `text` of module `from` imports against the layers.
fn judge(from: &str, text: &str, file: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let Some(a) = layer_of(from) else {
        return vec![format!("{file}: module {from} has no layer in LAYERS")];
    };
    for path in paths(text) {
        let to = &path[0];
        if to == from {
            continue;
        }
        match layer_of(to) {
            None => bad.push(format!(
                "{file}: imports crate::{} (no layer)",
                path.join("::")
            )),
            Some(b) if b >= a => bad.push(format!(
                "{file}: {from} imports crate::{}, which is not below it",
                path.join("::")
            )),
            Some(_) => {}
        }
    }
    bad
}

#[test]
fn server_imports_only_go_down_the_layers() {
    let bad = violations();
    assert!(
        bad.is_empty(),
        "imports that go up or sideways:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_check_sees_whole_paths_groups_and_catches_a_cycle() {
    let p = paths(
        "use crate::api::{self, AppState, limits::Limits};\n\
         let x = crate::kafka::Batching { .. }; // crate::wiring::x in a comment\n\
         use crate::{seams, store::Store};",
    );
    let want: BTreeSet<Vec<String>> = [
        vec!["api"],
        vec!["api", "limits"],
        vec!["kafka"],
        vec!["seams"],
        vec!["store"],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(String::from).collect())
    .collect();
    assert_eq!(p, want);
    // What the server had before the seams moved: kafka named the API's seam types and
    // the API built the kafka publisher. Both directions are refused.
    assert!(!judge("kafka", "use crate::api::{Delivered, Publish};", "kafka.rs").is_empty());
    assert!(!judge("api", "use crate::kafka::Publisher;", "api/mod.rs").is_empty());
    assert!(!judge("config", "crate::kafka::Batching", "config.rs").is_empty());
    assert!(judge("wiring", "use crate::kafka::Publisher;", "wiring.rs").is_empty());
}
