//! The shape of `host/src`, kept: no two modules import each other
//! (directly or round a circle), and no file grows past 500 lines. Read from
//! the sources, as a newcomer walks them: every `crate::…` and `super::…`
//! path outside comments and unit tests, resolved to the module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// The most lines a file of `host/src` may have.
const MAX_LINES: usize = 500;

fn sources() -> Vec<(String, String)> {
    let root = crate::support::repo_root().join("host/src");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(&root).unwrap();
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((relative.to_string_lossy().into_owned(), text));
            }
        }
    }
    files.sort();
    files
}

/// `run/dispatch.rs` → `["run", "dispatch"]`; `lib.rs` and `mod.rs` name
/// their directory's module.
fn module_of(file: &str) -> Vec<String> {
    let path = PathBuf::from(file.trim_end_matches(".rs"));
    let mut parts: Vec<String> = path
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The source without comments and without its unit tests.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b` / `super::a` path in `code`, as written.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let at = from + at;
            from = at + start.len();
            if at > 0
                && (bytes[at - 1].is_ascii_alphanumeric() || matches!(bytes[at - 1], b'_' | b':'))
            {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |n| at + n);
            let path: Vec<String> = code[at..end]
                .split("::")
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            found.push(path);
        }
    }
    found
}

/// The module `path` (written in module `here`) points into: its longest
/// prefix that is a module.
fn resolve(
    path: &[String],
    here: &[String],
    modules: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    let (mut base, rest) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("super") => {
            let supers = path.iter().take_while(|p| *p == "super").count();
            let keep = here.len().checked_sub(supers)?;
            (here[..keep].to_vec(), &path[supers..])
        }
        _ => return None,
    };
    let mut best = None;
    for part in rest {
        base.push(part.clone());
        if modules.contains(&base) {
            best = Some(base.clone());
        }
    }
    best
}

/// Which modules each module imports from, parents and children aside
/// (a module and its own submodules are one room).
fn imports() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = sources();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(f, _)| module_of(f)).collect();
    let mut edges = BTreeMap::new();
    for (file, text) in &files {
        let here = module_of(file);
        let targets: BTreeSet<Vec<String>> = paths(&code(text))
            .iter()
            .filter_map(|path| resolve(path, &here, &modules))
            .filter(|to| !to.starts_with(&here) && !here.starts_with(to))
            .collect();
        edges.insert(here, targets);
    }
    edges
}

/// The modules of every import circle (strongly connected component of
/// more than one module).
fn circles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    // Two modules are in one circle when each reaches the other.
    let reach = |from: &Vec<String>| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for to in edges.get(&m).into_iter().flatten() {
                if seen.insert(to.clone()) {
                    todo.push(to.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<_, _> = edges.keys().map(|m| (m.clone(), reach(m))).collect();
    let mut found: Vec<Vec<String>> = Vec::new();
    let mut placed = BTreeSet::new();
    for m in edges.keys() {
        if placed.contains(m) {
            continue;
        }
        let circle: Vec<String> = edges
            .keys()
            .filter(|o| *o == m || (reached[m].contains(*o) && reached[*o].contains(m)))
            .inspect(|o| {
                placed.insert((*o).clone());
            })
            .map(|o| o.join("::"))
            .collect();
        if circle.len() > 1 {
            found.push(circle);
        }
    }
    found
}

#[test]
fn no_module_of_the_host_imports_round_a_circle() {
    let edges = imports();
    assert!(
        edges.len() > 50,
        "read the sources: {} modules",
        edges.len()
    );
    // The check can see an import: dispatch uses the runtime.
    assert!(
        edges[&vec!["run".to_string(), "dispatch".to_string()]]
            .contains(&vec!["run".to_string(), "runtime".to_string()])
    );
    assert_eq!(circles(&edges), Vec::<Vec<String>>::new());
}

#[test]
fn a_circle_is_found_when_there_is_one() {
    let m = |name: &str| vec![name.to_string()];
    let edges = BTreeMap::from([
        (m("a"), BTreeSet::from([m("b")])),
        (m("b"), BTreeSet::from([m("c")])),
        (m("c"), BTreeSet::from([m("a")])),
        (m("d"), BTreeSet::from([m("a")])),
    ]);
    assert_eq!(circles(&edges), [["a", "b", "c"]]);
}

#[test]
fn no_file_of_the_host_is_over_500_lines() {
    let too_long: Vec<(String, usize)> = sources()
        .into_iter()
        .map(|(file, text)| (file, text.lines().count()))
        .filter(|(_, lines)| *lines > MAX_LINES)
        .collect();
    assert!(
        too_long.is_empty(),
        "files over {MAX_LINES} lines: {too_long:?}; split each by idea"
    );
}
