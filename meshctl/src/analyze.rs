//! `meshctl analyze <paths...>`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use mesh_api::{Code, Diagnostic, ParsedDocument, Severity};
use serde::Serialize;

use crate::{EXIT_FINDINGS, EXIT_OK, EXIT_USAGE};

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// Files or folders (searched recursively for *.yaml and *.yml).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Human)]
    pub output: Output,
    /// Show only diagnostics at least this severe.
    #[arg(long, value_enum, default_value_t = Level::Info)]
    pub level: Level,
    /// List the diagnostic codes and exit.
    #[arg(long, exclusive = true)]
    pub list_codes: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Human,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    fn shows(self, s: Severity) -> bool {
        match self {
            Level::Info => true,
            Level::Warning => s != Severity::Info,
            Level::Error => s == Severity::Error,
        }
    }
}

#[derive(Debug)]
struct InputError(String);

fn is_yaml(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml") | Some("yml")
    )
}

/// The files to read: explicit files as given, folders walked recursively
/// (sorted, so output is stable).
fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), InputError> {
        let rd = std::fs::read_dir(dir)
            .map_err(|e| InputError(format!("cannot read folder {}: {e}", dir.display())))?;
        let mut entries: Vec<PathBuf> = Vec::new();
        for e in rd {
            let e =
                e.map_err(|e| InputError(format!("cannot read folder {}: {e}", dir.display())))?;
            entries.push(e.path());
        }
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if is_yaml(&p) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p)
            .map_err(|e| InputError(format!("cannot read {}: {e}", p.display())))?;
        if meta.is_dir() {
            let before = out.len();
            walk(p, &mut out)?;
            if out.len() == before {
                return Err(InputError(format!(
                    "{}: no *.yaml or *.yml files in this folder",
                    p.display()
                )));
            }
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

#[derive(Serialize)]
struct Summary {
    files: usize,
    documents: usize,
    errors: usize,
    warnings: usize,
    infos: usize,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    diagnostics: Vec<&'a Diagnostic>,
    summary: Summary,
}

/// `Error [AMB0003] VirtualService default/x (file.yaml): spec.host: unknown field; ...`
pub fn human_line(d: &Diagnostic) -> String {
    let mut s = format!("{} [{}]", d.severity, d.code);
    if let Some(o) = &d.object {
        s.push(' ');
        s.push_str(&o.to_string());
    }
    if let Some(l) = &d.location {
        s.push_str(&format!(" ({l})"));
    }
    s.push_str(": ");
    if !d.field.is_empty() {
        s.push_str(&d.field);
        s.push_str(": ");
    }
    s.push_str(&d.message);
    s
}

fn list_codes() -> ExitCode {
    let mut out = std::io::stdout().lock();
    for c in Code::ALL {
        let _ = writeln!(out, "{}  {:<7}  {}", c, c.default_severity(), c.title());
    }
    ExitCode::from(EXIT_OK)
}

pub fn run(args: &AnalyzeArgs) -> ExitCode {
    if args.list_codes {
        return list_codes();
    }
    let files = match collect(&args.paths) {
        Ok(f) => f,
        Err(InputError(e)) => {
            eprintln!("meshctl analyze: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut docs: Vec<ParsedDocument> = Vec::new();
    for f in &files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("meshctl analyze: cannot read {}: {e}", f.display());
                return ExitCode::from(EXIT_USAGE);
            }
        };
        docs.extend(mesh_api::parse_documents(&text, &f.display().to_string()));
    }
    let diags = mesh_api::analyze(&docs);
    let count = |s: Severity| diags.iter().filter(|d| d.severity == s).count();
    let summary = Summary {
        files: files.len(),
        documents: docs.len(),
        errors: count(Severity::Error),
        warnings: count(Severity::Warning),
        infos: count(Severity::Info),
    };
    let shown: Vec<&Diagnostic> = diags
        .iter()
        .filter(|d| args.level.shows(d.severity))
        .collect();
    let code = if summary.errors > 0 {
        EXIT_FINDINGS
    } else {
        EXIT_OK
    };
    let mut out = std::io::stdout().lock();
    let written = match args.output {
        Output::Json => {
            let report = JsonReport {
                diagnostics: shown,
                summary,
            };
            match serde_json::to_string_pretty(&report) {
                Ok(s) => writeln!(out, "{s}"),
                Err(e) => {
                    eprintln!("meshctl analyze: cannot encode JSON: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        }
        Output::Human => {
            let mut r = Ok(());
            for d in &shown {
                r = r.and_then(|_| writeln!(out, "{}", human_line(d)));
            }
            if r.is_ok() {
                if summary.errors + summary.warnings + summary.infos == 0 {
                    eprintln!(
                        "No issues found in {} documents ({} files).",
                        summary.documents, summary.files
                    );
                } else {
                    eprintln!(
                        "{} error(s), {} warning(s), {} info(s) in {} documents ({} files).",
                        summary.errors,
                        summary.warnings,
                        summary.infos,
                        summary.documents,
                        summary.files
                    );
                }
            }
            r
        }
    };
    if written.is_err() {
        // stdout closed (e.g. piped into `head`): the verdict still stands.
        return ExitCode::from(code);
    }
    ExitCode::from(code)
}
