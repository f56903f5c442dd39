//! The shape of the code, checked: the library's modules depend on each
//! other without cycles (data flows one way: endpoint -> listener ->
//! connection -> framing -> service -> reply, see docs/architecture.md),
//! and no source file grows past about 400 lines unless it is one
//! cohesive thing, named here with the reason.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files allowed past the limit, each with its reason.
const LONG_FILES: &[(&str, &str)] = &[(
    "src/cli/bench.rs",
    "the load generator: one loop per scenario and its report",
)];
const MAX_LINES: usize = 420;

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(root).unwrap().display().to_string();
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

/// The library module a file belongs to: src/listener/accept.rs -> listener.
fn module_of(file: &str) -> Option<String> {
    let rest = file.strip_prefix("src/")?;
    let first = rest.split('/').next()?;
    let module = first.trim_end_matches(".rs");
    (!matches!(module, "lib" | "main" | "cli")).then(|| module.to_string())
}

/// The modules a file names as `crate::module`, outside comments.
fn uses(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + 7..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.insert(name);
            }
        }
    }
    used
}

#[test]
fn library_modules_depend_on_each_other_without_cycles() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, text) in sources() {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(uses(&text).into_iter().filter(|m| *m != module));
    }
    // Depth-first search for a path back to where it started.
    fn cycle_from(
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        let last = path.last().unwrap().clone();
        for next in graph.get(&last).into_iter().flatten() {
            if *next == path[0] {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if !path.contains(next) && graph.contains_key(next) {
                path.push(next.clone());
                if let Some(cycle) = cycle_from(graph, path) {
                    return Some(cycle);
                }
                path.pop();
            }
        }
        None
    }
    for module in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, &mut vec![module.clone()]) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
    // The flow itself: nothing lower reaches back up.
    let flow = [
        "server",
        "listener",
        "stream",
        "connection",
        "framing",
        "service",
        "clock",
    ];
    for (i, upper) in flow.iter().enumerate() {
        for lower in &flow[i + 1..] {
            let reaches_up = graph.get(*lower).is_some_and(|e| e.contains(*upper));
            assert!(!reaches_up, "{lower} imports {upper}, which is above it");
        }
    }
}

#[test]
fn source_files_stay_short_unless_named_as_one_cohesive_thing() {
    for (file, text) in sources() {
        let lines = text.lines().count();
        let allowed = LONG_FILES.iter().any(|(name, _)| *name == file);
        assert!(
            lines <= MAX_LINES || allowed,
            "{file} has {lines} lines: split it, or name it in LONG_FILES with the reason"
        );
    }
}
