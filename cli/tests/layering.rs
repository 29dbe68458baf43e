//! The module map of `wiberctl` has layers, and this test keeps them: a module may import
//! only modules of a lower layer, and sibling submodules (e.g. `runtime::docker` and
//! `runtime::stack`) may not import each other in a cycle. It reads the `use` paths of
//! `cli/src` (`crate::x`, `crate::{x, y}`, `super::x`), so a new upward import or cycle
//! fails CI with the file that made it.
//!
//! Why a test and not a tool: `cargo-modules` would be one more binary to install in CI
//! for a check that fits in a page, and the layer table below doubles as documentation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, bottom first. A module imports only modules of a strictly lower layer.
const LAYERS: &[&[&str]] = &[
    // Leaves: adapters (HTTP, Kafka, provisioning) and small shared pieces.
    &[
        "units",
        "exit",
        "heap",
        "output",
        "events",
        "runfile",
        "kafka",
        "pg",
        "client",
        "provision",
    ],
    // The runtime seam (owns the stack) and the report writers.
    &["runtime", "report"],
    // Delivery invariants at the sink; the store at scale (fixture fill, setup check,
    // read plans), which uses `pg` and the runtime's endpoints but no load or scenario.
    &["verify", "store"],
    // The load generator.
    &["bench"],
    // Scenario files and the fault timeline (also what `chaos` runs).
    &["scenario"],
    // Live views of a running stack: the `top` dashboard and the message tail.
    &["top", "tail"],
    // One module per command.
    &["commands"],
    // The command line.
    &["app"],
    // lib.rs / main.rs.
    &["lib", "main"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("cli/src is readable") {
        let p = e.expect("a directory entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Module path of a file: `runtime/docker/mod.rs` → ["runtime", "docker"].
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src_dir()).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// The first segment after each `prefix` (`crate::`, `super::`), including every item of
/// a brace group (`crate::{a, b::c}` → a, b).
fn heads(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        // `super::super::x` is counted from its last `super::`; `a::super::` is no path.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != "super" {
                out.insert(name);
            }
        }
    }
    out
}

/// Every import edge of the crate: (importing file's module path, imported module path).
fn edges() -> Vec<(Vec<String>, Vec<String>, PathBuf)> {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("readable source");
        let from = module_path(&f);
        for h in heads(&text, "crate::") {
            out.push((from.clone(), vec![h], f.clone()));
        }
        // `super::x` in module a::b::c (a/b/c.rs) names a::b::x; in a::b (a/b.rs or
        // a/b/mod.rs) it names a::x: the module's parent either way.
        let parent: Vec<String> = from[..from.len().saturating_sub(1)].to_vec();
        for h in heads(&text, "super::") {
            let mut to = parent.clone();
            to.push(h);
            out.push((from.clone(), to, f.clone()));
        }
    }
    out
}

#[test]
fn every_top_level_module_has_a_layer() {
    let mut missing = Vec::new();
    for (from, _, file) in edges() {
        if layer_of(&from[0]).is_none() {
            missing.push(format!("{} ({})", from[0], file.display()));
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "modules without a layer in cli/tests/layering.rs: {missing:?}; add each to LAYERS"
    );
}

#[test]
fn imports_only_go_down_the_layers() {
    let mut upward = Vec::new();
    for (from, to, file) in edges() {
        let (Some(a), Some(b)) = (layer_of(&from[0]), layer_of(&to[0])) else {
            continue; // a type at the crate root, or a module without a layer (other test)
        };
        if from[0] != to[0] && b >= a {
            upward.push(format!(
                "{} imports {} ({} is not below {})",
                file.display(),
                to[0],
                to[0],
                from[0]
            ));
        }
    }
    upward.sort();
    upward.dedup();
    assert!(
        upward.is_empty(),
        "imports that go up or sideways:\n{}",
        upward.join("\n")
    );
}

#[test]
fn sibling_submodules_have_no_cycles() {
    // Graph over sibling submodules: runtime::docker → runtime::stack, etc. A child using
    // its parent's items (`super::Type` from a child of mod.rs) is not a sibling edge.
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut all = BTreeSet::new();
    for (from, _, _) in edges() {
        all.insert(from);
    }
    for (from, to, _) in edges() {
        // Resolve to the sibling: the longest existing module path that is a prefix of `to`.
        let target = (1..=to.len())
            .rev()
            .map(|n| to[..n].to_vec())
            .find(|p| all.contains(p));
        let Some(target) = target else { continue };
        if from.len() < 2 || target.len() != from.len() {
            continue;
        }
        if from[..from.len() - 1] == target[..target.len() - 1] && from != target {
            graph.entry(from).or_default().insert(target);
        }
    }
    let cycle = find_cycle(&graph);
    assert!(
        cycle.is_none(),
        "import cycle between sibling modules: {}",
        cycle
            .unwrap_or_default()
            .iter()
            .map(|p| p.join("::"))
            .collect::<Vec<_>>()
            .join(" → ")
    );
}

type Graph = BTreeMap<Vec<String>, BTreeSet<Vec<String>>>;

fn find_cycle(graph: &Graph) -> Option<Vec<Vec<String>>> {
    fn visit(
        n: &Vec<String>,
        graph: &Graph,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.clone());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.clone());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.clone());
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(c) = visit(n, graph, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

/// The checks can fail: an upward import and a sibling cycle are found in a made-up graph.
#[test]
fn the_checks_catch_what_they_check_for() {
    assert!(layer_of("scenario") > layer_of("runtime"));
    assert_eq!(
        heads(
            "use crate::{bench::x, runtime};\nlet a = crate::verify::run;",
            "crate::"
        ),
        ["bench", "runtime", "verify"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    let p = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let mut g = Graph::new();
    g.entry(p("runtime::docker"))
        .or_default()
        .insert(p("runtime::stack"));
    g.entry(p("runtime::stack"))
        .or_default()
        .insert(p("runtime::docker"));
    assert!(find_cycle(&g).is_some());
    g.remove(&p("runtime::docker"));
    assert!(find_cycle(&g).is_none());
}
