//! `cargo xtask modules`: module cycles inside each crate.
//!
//! Every crate of the workspace (the root manifest's `members`, plus its
//! `exclude`d ones such as `mesh-ebpf`) is read target by target (the
//! library, each binary, test, bench, example and the build script: each is
//! a crate root with a module tree of its own). From the root file the
//! module tree is built out of `mod x;` (`x.rs` or `x/mod.rs`, or the
//! file `#[path]` names) and inline `mod x { .. }`. An edge `a -> b` is
//! every `use` tree and every path (expression, type, pattern, trait bound,
//! and paths in macro arguments) in module `a` that begins with `crate::`,
//! `super::` or `self::` and lands in module `b`: the longest prefix of the
//! path that names a module, so a path to an item lands in the module that
//! holds it. An edge from a module to its own descendant counts like any
//! other; an edge of a module to itself is ignored. A cycle is a strongly
//! connected component of more than one module; each is reported with one
//! example (file:line) for each of its edges.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// A module path below the crate root (`[]` is the root, `["xds", "client"]`
/// is `crate::xds::client`).
type ModPath = Vec<String>;

/// One crate root: a package's target.
#[derive(Debug, Clone)]
pub struct Target {
    /// `mesh-node (lib)`, `mesh-node (bin mesh-node)`, `mesh-node (test hbone_tls)`.
    pub name: String,
    pub root: PathBuf,
}

/// A `use` or path that leaves its module, before resolution.
#[derive(Debug)]
struct Reference {
    from: ModPath,
    /// `crate`, `super` or `self` first.
    segments: Vec<String>,
    file: PathBuf,
    line: usize,
    /// What it looked like in the source (`use crate::a::b`).
    text: String,
}

/// One edge's first example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub file: PathBuf,
    pub line: usize,
    pub text: String,
}

/// A cycle: its modules and, for every edge between them, one example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    pub modules: Vec<String>,
    pub edges: Vec<(String, String, Example)>,
}

/// What one target holds.
#[derive(Debug)]
pub struct Report {
    pub target: String,
    pub modules: usize,
    pub edges: usize,
    pub cycles: Vec<Cycle>,
    /// `mod x;` whose file was not found.
    pub missing: Vec<String>,
}

/// Shows a module path as `crate::a::b`.
fn show(m: &[String]) -> String {
    if m.is_empty() {
        "crate".to_string()
    } else {
        format!("crate::{}", m.join("::"))
    }
}

// ------------------------------------------------------------ manifests --

/// The string items of the array `key = [ ... ]` in the `[workspace]`
/// table of a manifest's text.
fn workspace_array(manifest: &str, key: &str) -> Vec<String> {
    let mut in_workspace = false;
    let mut collecting = false;
    let mut body = String::new();
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if !collecting && line.starts_with('[') {
            in_workspace = line == "[workspace]";
            continue;
        }
        if !in_workspace {
            continue;
        }
        if !collecting {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if k.trim() != key {
                continue;
            }
            collecting = true;
            body.push_str(v);
        } else {
            body.push_str(line);
        }
        if body.contains(']') {
            break;
        }
    }
    body.split(['[', ']', ','])
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// An explicit target of a manifest: its kind (`lib`, `bin`, ...), its
/// `name` if given, and its root file's `path`.
type ExplicitTarget = (String, Option<String>, String);

/// The package name and the explicit target roots (`path = ".."` in
/// `[lib]`, `[[bin]]`, `[[test]]`, `[[bench]]`, `[[example]]`) of a
/// package manifest.
fn package_targets(manifest: &str) -> (Option<String>, Vec<ExplicitTarget>) {
    let mut package = None;
    let mut section = String::new();
    let mut explicit = Vec::new();
    let mut current: Option<(String, Option<String>, Option<String>)> = None;
    let flush = |c: &mut Option<(String, Option<String>, Option<String>)>,
                 out: &mut Vec<ExplicitTarget>| {
        if let Some((kind, name, Some(path))) = c.take() {
            out.push((kind, name, path));
        }
    };
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            flush(&mut current, &mut explicit);
            section = line.trim_matches(['[', ']']).to_string();
            if matches!(
                section.as_str(),
                "lib" | "bin" | "test" | "bench" | "example"
            ) {
                current = Some((section.clone(), None, None));
            }
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim().trim_matches('"').to_string());
        if section == "package" && k == "name" {
            package = Some(v);
        } else if let Some((_, name, path)) = current.as_mut() {
            match k {
                "name" => *name = Some(v),
                "path" => *path = Some(v),
                _ => {}
            }
        }
    }
    flush(&mut current, &mut explicit);
    (package, explicit)
}

/// The `.rs` files directly in `dir` (sorted), and `dir/<x>/main.rs`.
fn roots_in(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.filter_map(Result::ok) {
        let p = e.path();
        let Some(stem) = p.file_stem().and_then(|s| s.to_str()).map(String::from) else {
            continue;
        };
        if p.is_file() && p.extension().is_some_and(|x| x == "rs") {
            out.push((stem, p));
        } else if p.join("main.rs").is_file() {
            out.push((stem, p.join("main.rs")));
        }
    }
    out.sort();
    out
}

/// Every target of the package in `dir`: the conventional ones and those
/// the manifest names.
pub fn targets_of(dir: &Path) -> Result<Vec<Target>> {
    let manifest_path = dir.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let (package, explicit) = package_targets(&manifest);
    let package = package.unwrap_or_else(|| {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    let mut add = |name: String, root: PathBuf| {
        if root.is_file() && !found.iter().any(|(_, r)| *r == root) {
            found.push((name, root));
        }
    };
    for (kind, name, path) in explicit {
        let name = name.unwrap_or_else(|| package.clone());
        let label = if kind == "lib" {
            "lib".to_string()
        } else {
            format!("{kind} {name}")
        };
        add(label, dir.join(path));
    }
    add("lib".into(), dir.join("src/lib.rs"));
    add(format!("bin {package}"), dir.join("src/main.rs"));
    for (sub, kind) in [
        ("src/bin", "bin"),
        ("tests", "test"),
        ("benches", "bench"),
        ("examples", "example"),
    ] {
        for (name, root) in roots_in(&dir.join(sub)) {
            add(format!("{kind} {name}"), root);
        }
    }
    add("build script".into(), dir.join("build.rs"));
    Ok(found
        .into_iter()
        .map(|(label, root)| Target {
            name: format!("{package} ({label})"),
            root,
        })
        .collect())
}

/// The crate folders: the workspace's members and its excluded crates.
pub fn crate_dirs(workspace: &Path) -> Result<Vec<PathBuf>> {
    let manifest_path = workspace.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let mut dirs: Vec<PathBuf> = workspace_array(&manifest, "members")
        .into_iter()
        .chain(workspace_array(&manifest, "exclude"))
        .map(|m| workspace.join(m))
        .filter(|d| d.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    dirs.dedup();
    Ok(dirs)
}

// ------------------------------------------------------------- parsing --

/// The module tree and references of one target.
#[derive(Default)]
struct Tree {
    modules: BTreeSet<ModPath>,
    references: Vec<Reference>,
    files: BTreeSet<PathBuf>,
    missing: Vec<String>,
}

/// Where a file's outline child modules live: the directory, and whether
/// it is the file's own directory (`lib.rs`, `main.rs`, `mod.rs`, a
/// `#[path]` file) rather than `<dir>/<stem>/`.
#[derive(Clone)]
struct FileDir {
    /// The directory for `mod x;` in the file's top level.
    children: PathBuf,
    /// The directory `#[path]` is relative to at the top level.
    file_dir: PathBuf,
}

impl Tree {
    fn parse_file(&mut self, file: &Path, module: ModPath, dirs: FileDir) -> Result<()> {
        if !self.files.insert(file.to_path_buf()) {
            return Ok(());
        }
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        self.modules.insert(module.clone());
        let mut v = Walker {
            tree: self,
            file: file.to_path_buf(),
            module,
            children: dirs.children,
            path_base: dirs.file_dir,
            outline: Vec::new(),
        };
        v.visit_file(&ast);
        let outline = std::mem::take(&mut v.outline);
        for (child, dirs) in outline {
            let Some((path, dirs)) = dirs else {
                self.missing.push(show(&child));
                continue;
            };
            self.parse_file(&path, child, dirs)?;
        }
        Ok(())
    }
}

struct Walker<'a> {
    tree: &'a mut Tree,
    file: PathBuf,
    module: ModPath,
    /// Where `mod x;` files of the current (possibly inline) module are.
    children: PathBuf,
    /// What `#[path]` in the current module is relative to.
    path_base: PathBuf,
    /// Outline modules found: their path, and their file and directories
    /// (None when no file exists).
    outline: Vec<(ModPath, Option<(PathBuf, FileDir)>)>,
}

/// The string of `#[path = ".."]` among `attrs`.
fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| {
        if !a.path().is_ident("path") {
            return None;
        }
        let syn::Meta::NameValue(nv) = &a.meta else {
            return None;
        };
        match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        }
    })
}

impl Walker<'_> {
    fn reference(&mut self, segments: Vec<String>, line: usize, text: String) {
        if matches!(
            segments.first().map(String::as_str),
            Some("crate" | "super" | "self")
        ) {
            self.tree.references.push(Reference {
                from: self.module.clone(),
                segments,
                file: self.file.clone(),
                line,
                text,
            });
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree, line: usize) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree, line);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.use_leaf(prefix, &n.ident, line),
            syn::UseTree::Rename(r) => self.use_leaf(prefix, &r.ident, line),
            syn::UseTree::Glob(_) => {
                let text = format!("use {}::*", prefix.join("::"));
                self.reference(prefix.clone(), line, text);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t, line);
                }
            }
        }
    }

    fn use_leaf(&mut self, prefix: &[String], ident: &syn::Ident, line: usize) {
        let mut segments = prefix.to_vec();
        // `use a::{self}` names `a`.
        if ident != "self" || segments.is_empty() {
            segments.push(ident.to_string());
        }
        let text = format!("use {}", segments.join("::"));
        self.reference(segments, line, text);
    }

    /// Paths of `crate`/`super`/`self` in a macro's tokens.
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id)
                    if (id == "crate" || id == "super" || id == "self")
                        && !preceded_by_colons(&trees, i) =>
                {
                    let line = id.span().start().line;
                    let mut segments = vec![id.to_string()];
                    let mut j = i + 1;
                    while j + 2 < trees.len() && is_colons(&trees, j) {
                        match &trees[j + 2] {
                            TokenTree::Ident(next) => {
                                segments.push(next.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    if segments.len() > 1 {
                        let text = segments.join("::");
                        self.reference(segments, line, text);
                    }
                    i = j.max(i + 1);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

/// `trees[j]` and `trees[j + 1]` are `::`.
fn is_colons(trees: &[TokenTree], j: usize) -> bool {
    matches!(
        (trees.get(j), trees.get(j + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && b.as_char() == ':'
    )
}

/// The token before `i` is the second `:` of a `::` (so `trees[i]` is not
/// the start of a path).
fn preceded_by_colons(trees: &[TokenTree], i: usize) -> bool {
    i >= 2 && is_colons(trees, i - 2)
}

impl<'ast> Visit<'ast> for Walker<'_> {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        let name = m.ident.to_string();
        let mut child = self.module.clone();
        child.push(name.clone());
        self.tree.modules.insert(child.clone());
        // Attributes (`#[cfg(..)]`, `#[path]`) hold no module paths.
        match &m.content {
            Some((_, items)) => {
                let children = self.children.clone();
                let path_base = self.path_base.clone();
                let module = std::mem::replace(&mut self.module, child);
                // Inside an inline module, `#[path]` and `mod x;` are
                // relative to `<dir>/<name>/`.
                self.children = children.join(&name);
                self.path_base = self.children.clone();
                for item in items {
                    self.visit_item(item);
                }
                self.module = module;
                self.children = children;
                self.path_base = path_base;
            }
            None => {
                let found = if let Some(p) = path_attr(&m.attrs) {
                    let file = self.path_base.join(p);
                    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
                    file.is_file().then(|| {
                        (
                            file,
                            FileDir {
                                children: dir.clone(),
                                file_dir: dir,
                            },
                        )
                    })
                } else {
                    let flat = self.children.join(format!("{name}.rs"));
                    let nested = self.children.join(&name).join("mod.rs");
                    if flat.is_file() {
                        Some((
                            flat,
                            FileDir {
                                children: self.children.join(&name),
                                file_dir: self.children.clone(),
                            },
                        ))
                    } else if nested.is_file() {
                        Some((
                            nested,
                            FileDir {
                                children: self.children.join(&name),
                                file_dir: self.children.join(&name),
                            },
                        ))
                    } else {
                        None
                    }
                };
                self.outline.push((child, found));
            }
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let line = u.use_token.span.start().line;
        let mut prefix = Vec::new();
        self.use_tree(&mut prefix, &u.tree, line);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() {
            if let Some(first) = p.segments.first() {
                let segments: Vec<String> =
                    p.segments.iter().map(|s| s.ident.to_string()).collect();
                let line = first.ident.span().start().line;
                let text = segments.join("::");
                self.reference(segments, line, text);
            }
        }
        syn::visit::visit_path(self, p);
    }

    // `pub(in crate::a)` restricts visibility; it uses nothing.
    fn visit_vis_restricted(&mut self, _: &'ast syn::VisRestricted) {}

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.visit_path(&m.path);
        self.tokens(m.tokens.clone());
    }
}

// ---------------------------------------------------------- resolution --

/// The module `segments` (beginning with `crate`, `super` or `self`)
/// lands in, seen from `from`: the longest prefix that names a module.
fn resolve(modules: &BTreeSet<ModPath>, from: &[String], segments: &[String]) -> Option<ModPath> {
    let mut base: ModPath = from.to_vec();
    let mut rest = segments;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {}
        _ => return None,
    }
    while let Some("super") = rest.first().map(String::as_str) {
        base.pop()?;
        rest = &rest[1..];
    }
    for seg in rest {
        let mut next = base.clone();
        next.push(seg.clone());
        if modules.contains(&next) {
            base = next;
        } else {
            break;
        }
    }
    Some(base)
}

/// Strongly connected components (Tarjan), each sorted, of more than one
/// node.
fn cycles_of(
    nodes: &[ModPath],
    edges: &BTreeMap<(ModPath, ModPath), Example>,
) -> Vec<Vec<ModPath>> {
    let index_of: BTreeMap<&ModPath, usize> =
        nodes.iter().enumerate().map(|(i, n)| (n, i)).collect();
    let mut adj: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (a, b) in edges.keys() {
        if let (Some(&i), Some(&j)) = (index_of.get(a), index_of.get(b)) {
            adj[i].push(j);
        }
    }
    struct State {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn strong(v: usize, adj: &[Vec<usize>], s: &mut State) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &adj[v] {
            match s.index[w] {
                None => {
                    strong(w, adj, s);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(comp);
        }
    }
    let n = nodes.len();
    let mut s = State {
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            strong(v, &adj, &mut s);
        }
    }
    let mut out: Vec<Vec<ModPath>> = s
        .out
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut c: Vec<ModPath> = c.into_iter().map(|i| nodes[i].clone()).collect();
            c.sort();
            c
        })
        .collect();
    out.sort();
    out
}

/// The module tree, edges and cycles of one target; `base` is what
/// example file names are shown relative to.
pub fn check_target(target: &Target, base: &Path) -> Result<Report> {
    let mut tree = Tree::default();
    let dir = target
        .root
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    tree.parse_file(
        &target.root,
        Vec::new(),
        FileDir {
            children: dir.clone(),
            file_dir: dir,
        },
    )?;
    let mut edges: BTreeMap<(ModPath, ModPath), Example> = BTreeMap::new();
    for r in &tree.references {
        let Some(to) = resolve(&tree.modules, &r.from, &r.segments) else {
            continue;
        };
        if to == r.from {
            continue;
        }
        let file = r.file.strip_prefix(base).unwrap_or(&r.file).to_path_buf();
        let example = Example {
            file,
            line: r.line,
            text: r.text.clone(),
        };
        // The first in file order, then line order.
        edges
            .entry((r.from.clone(), to))
            .and_modify(|e| {
                if (&example.file, example.line) < (&e.file, e.line) {
                    *e = example.clone();
                }
            })
            .or_insert(example);
    }
    let nodes: Vec<ModPath> = tree.modules.iter().cloned().collect();
    let cycles = cycles_of(&nodes, &edges)
        .into_iter()
        .map(|members| {
            let set: BTreeSet<&ModPath> = members.iter().collect();
            let edges = edges
                .iter()
                .filter(|((a, b), _)| set.contains(a) && set.contains(b))
                .map(|((a, b), e)| (show(a), show(b), e.clone()))
                .collect();
            Cycle {
                modules: members.iter().map(|m| show(m)).collect(),
                edges,
            }
        })
        .collect();
    Ok(Report {
        target: target.name.clone(),
        modules: tree.modules.len(),
        edges: edges.len(),
        cycles,
        missing: tree.missing,
    })
}

/// Every target of every crate of the workspace at `workspace`.
pub fn check_workspace(workspace: &Path) -> Result<Vec<Report>> {
    let mut out = Vec::new();
    for dir in crate_dirs(workspace)? {
        for t in targets_of(&dir)? {
            out.push(check_target(&t, workspace)?);
        }
    }
    Ok(out)
}

/// The report as text: a line per target with cycles, then each cycle.
pub fn render(reports: &[Report]) -> String {
    let mut s = String::new();
    let mut cycles = 0;
    for r in reports {
        for m in &r.missing {
            let _ = writeln!(s, "{}: no file for module {m}", r.target);
        }
        if r.cycles.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "{}: {} cycle(s) ({} modules, {} edges)",
            r.target,
            r.cycles.len(),
            r.modules,
            r.edges
        );
        for c in &r.cycles {
            cycles += 1;
            let _ = writeln!(
                s,
                "  cycle of {}: {}",
                c.modules.len(),
                c.modules.join(", ")
            );
            for (a, b, e) in &c.edges {
                let _ = writeln!(
                    s,
                    "    {a} -> {b}    {}:{}  {}",
                    e.file.display(),
                    e.line,
                    e.text
                );
            }
        }
    }
    let clean = reports.iter().filter(|r| r.cycles.is_empty()).count();
    let _ = writeln!(
        s,
        "{cycles} cycle(s); {clean} of {} targets without one",
        reports.len()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate in a tempdir with `files` (path, text) under it.
    fn krate(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        dir
    }

    fn check(dir: &tempfile::TempDir) -> Report {
        let t = Target {
            name: "t (lib)".into(),
            root: dir.path().join("src/lib.rs"),
        };
        check_target(&t, dir.path()).expect("check")
    }

    const MANIFEST: &str = "[package]\nname = \"t\"\nversion = \"0.1.0\"\n";

    #[test]
    fn a_crate_without_a_cycle_has_none() {
        let d = krate(&[
            ("Cargo.toml", MANIFEST),
            ("src/lib.rs", "pub mod a;\npub mod b;\npub use a::A;\n"),
            (
                "src/a.rs",
                "pub struct A;\nuse crate::b::B;\nfn f(_: B) {}\n",
            ),
            ("src/b.rs", "pub struct B;\n"),
        ]);
        let r = check(&d);
        assert_eq!(r.modules, 3);
        assert_eq!(r.edges, 1, "a -> b only");
        assert!(r.cycles.is_empty(), "{:?}", r.cycles);
        assert!(r.missing.is_empty());
    }

    #[test]
    fn a_two_module_cycle_is_reported_with_an_example_per_edge() {
        let d = krate(&[
            ("Cargo.toml", MANIFEST),
            ("src/lib.rs", "mod a;\nmod b;\n"),
            ("src/a.rs", "pub struct A;\nuse crate::b::B;\n"),
            (
                "src/b.rs",
                "pub struct B;\nfn f() -> super::a::A {\n    super::a::A\n}\n",
            ),
        ]);
        let r = check(&d);
        assert_eq!(r.cycles.len(), 1);
        let c = &r.cycles[0];
        assert_eq!(c.modules, ["crate::a", "crate::b"]);
        let shown: Vec<String> = c
            .edges
            .iter()
            .map(|(a, b, e)| format!("{a}->{b} {}:{} {}", e.file.display(), e.line, e.text))
            .collect();
        assert_eq!(
            shown,
            [
                "crate::a->crate::b src/a.rs:2 use crate::b::B",
                "crate::b->crate::a src/b.rs:2 super::a::A",
            ]
        );
        let text = render(&[r]);
        assert!(text.contains("t (lib): 1 cycle(s)"), "{text}");
        assert!(text.contains("1 cycle(s); 0 of 1 targets"), "{text}");
    }

    #[test]
    fn self_loops_are_ignored_and_descendant_edges_count() {
        // `a` uses itself (ignored) and its child `a::inner` (inline), and
        // `a::inner` uses `a` back: a cycle through a descendant.
        let d = krate(&[
            ("Cargo.toml", MANIFEST),
            ("src/lib.rs", "mod a;\n"),
            (
                "src/a.rs",
                "pub struct A;\nuse self::A as Same;\nuse crate::a::A as Also;\n\
                 fn f() { let _ = inner::g(); let _ = self::inner::g(); }\n\
                 mod inner { pub fn g() -> super::A { super::A } }\n",
            ),
        ]);
        let r = check(&d);
        assert_eq!(r.cycles.len(), 1, "{:?}", r.cycles);
        assert_eq!(r.cycles[0].modules, ["crate::a", "crate::a::inner"]);
        // Only the `self::inner` path counts, not the relative `inner::g`.
        assert_eq!(r.cycles[0].edges[0].2.text, "self::inner::g");

        let d = krate(&[
            ("Cargo.toml", MANIFEST),
            ("src/lib.rs", "mod a;\npub struct R;\nuse self::R as S;\n"),
            ("src/a.rs", "use crate::a as me;\nuse super::R;\n"),
        ]);
        assert!(check(&d).cycles.is_empty());
    }

    #[test]
    fn mod_rs_path_attributes_groups_globs_and_macros() {
        let d = krate(&[
            ("Cargo.toml", MANIFEST),
            (
                "src/lib.rs",
                "mod x;\n#[path = \"other/y_impl.rs\"]\nmod y;\nmod z {\n    pub mod w;\n}\n",
            ),
            // x/mod.rs with a child x/deep.rs; `use` groups and `self` in them.
            ("src/x/mod.rs", "pub mod deep;\npub fn fx() {}\n"),
            ("src/x/deep.rs", "use crate::{y::{self}, z::w::*};\n"),
            // The #[path] file; its children would sit beside it.
            ("src/other/y_impl.rs", "pub fn fy() {}\n"),
            // Inline `z` puts `w` at src/z/w.rs; a path only inside a macro.
            (
                "src/z/w.rs",
                "pub fn fw() { assert_eq!(crate::x::deep::F, 1); }\n",
            ),
        ]);
        let r = check(&d);
        assert!(r.missing.is_empty(), "{:?}", r.missing);
        assert_eq!(r.modules, 6, "root, x, x::deep, y, z, z::w");
        // deep -> y, deep -> z::w, z::w -> x::deep: a cycle deep <-> w.
        assert_eq!(r.edges, 3);
        assert_eq!(r.cycles.len(), 1);
        assert_eq!(r.cycles[0].modules, ["crate::x::deep", "crate::z::w"]);
        let texts: Vec<&str> = r.cycles[0]
            .edges
            .iter()
            .map(|e| e.2.text.as_str())
            .collect();
        assert_eq!(texts, ["use crate::z::w::*", "crate::x::deep::F"]);
    }

    #[test]
    fn a_missing_module_file_is_reported() {
        let d = krate(&[("Cargo.toml", MANIFEST), ("src/lib.rs", "mod gone;\n")]);
        let r = check(&d);
        assert_eq!(r.missing, ["crate::gone"]);
        assert!(render(&[r]).contains("no file for module crate::gone"));
    }

    #[test]
    fn workspace_members_excludes_and_targets_are_found() {
        let d = krate(&[
            (
                "Cargo.toml",
                "[workspace]\nresolver = \"2\"\nmembers = [\"a\",\n  \"b\"]\n# x\nexclude = [\"k\"]\n\n[workspace.package]\nedition = \"2021\"\n",
            ),
            ("a/Cargo.toml", "[package]\nname = \"pa\"\n"),
            ("a/src/lib.rs", ""),
            ("a/src/main.rs", "fn main() {}\n"),
            ("a/src/bin/tool.rs", "fn main() {}\n"),
            ("a/tests/it.rs", ""),
            ("a/build.rs", "fn main() {}\n"),
            ("b/Cargo.toml", "[package]\nname = \"pb\"\n[[bin]]\nname = \"bee\"\npath = \"src/bee.rs\"\n"),
            ("b/src/bee.rs", "mod m { use super::super::nothing; }\nfn main() {}\n"),
            ("k/Cargo.toml", "[package]\nname = \"pk\"\n"),
            ("k/src/main.rs", "fn main() {}\n"),
        ]);
        let dirs = crate_dirs(d.path()).expect("dirs");
        assert_eq!(dirs.len(), 3);
        let reports = check_workspace(d.path()).expect("check");
        let names: Vec<&str> = reports.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(
            names,
            [
                "pa (lib)",
                "pa (bin pa)",
                "pa (bin tool)",
                "pa (test it)",
                "pa (build script)",
                "pb (bin bee)",
                "pk (bin pk)",
            ]
        );
        assert!(reports.iter().all(|r| r.cycles.is_empty()));
    }
}
