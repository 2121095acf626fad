//! Holds the real `meshctl` binary to the expected verdict of every seed
//! config (tests/seed-verdicts.txt), and checks the output formats and exit
//! codes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/seed-configs");
const VERDICTS: &str = include_str!("seed-verdicts.txt");
const MESHCTL: &str = env!("CARGO_BIN_EXE_meshctl");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Clean,
    Warnings,
    Errors,
}

struct Row {
    file: String,
    verdict: Verdict,
    /// `CODE@field`
    errors: BTreeSet<String>,
}

fn rows() -> Vec<Row> {
    let mut out = Vec::new();
    for (n, line) in VERDICTS.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let file = parts.next().unwrap().to_string();
        let verdict = match parts.next() {
            Some("clean") => Verdict::Clean,
            Some("warnings") => Verdict::Warnings,
            Some("errors") => Verdict::Errors,
            other => panic!("seed-verdicts.txt line {}: bad verdict {other:?}", n + 1),
        };
        let errors: BTreeSet<String> = parts.map(str::to_string).collect();
        assert_eq!(
            verdict == Verdict::Errors,
            !errors.is_empty(),
            "seed-verdicts.txt line {}: list the expected errors exactly for `errors` rows",
            n + 1
        );
        out.push(Row {
            file,
            verdict,
            errors,
        });
    }
    out
}

fn seed_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(SEEDS)
        .expect("shared/seed-configs exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn meshctl(args: &[&str]) -> Output {
    Command::new(MESHCTL)
        .args(args)
        .output()
        .expect("run meshctl")
}

fn json_of(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "meshctl did not print JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn verdict_of(report: &serde_json::Value) -> Verdict {
    let s = &report["summary"];
    if s["errors"].as_u64().unwrap() > 0 {
        Verdict::Errors
    } else if s["warnings"].as_u64().unwrap() > 0 {
        Verdict::Warnings
    } else {
        Verdict::Clean
    }
}

fn errors_of(report: &serde_json::Value) -> BTreeSet<String> {
    report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "Error")
        .map(|d| {
            format!(
                "{}@{}",
                d["code"].as_str().unwrap(),
                d["field"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn the_table_covers_every_seed_and_only_seeds() {
    let files: BTreeSet<String> = seed_files()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = rows().into_iter().map(|r| r.file).collect();
    let missing: Vec<_> = files.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&files).collect();
    assert!(missing.is_empty(), "seeds without a verdict: {missing:?}");
    assert!(
        stale.is_empty(),
        "verdicts for files that do not exist: {stale:?}"
    );
}

#[test]
fn every_seed_gets_its_expected_verdict() {
    let mut failures = Vec::new();
    for row in rows() {
        let path = Path::new(SEEDS).join(&row.file);
        let out = meshctl(&["analyze", "--output", "json", path.to_str().unwrap()]);
        let report = json_of(&out);
        let verdict = verdict_of(&report);
        let expected_exit = if row.verdict == Verdict::Errors { 1 } else { 0 };
        if out.status.code() != Some(expected_exit) {
            failures.push(format!(
                "{}: exit {:?}, expected {expected_exit}",
                row.file,
                out.status.code()
            ));
        }
        if verdict != row.verdict {
            failures.push(format!(
                "{}: verdict {verdict:?}, expected {:?}; diagnostics:\n{}",
                row.file,
                row.verdict,
                serde_json::to_string_pretty(&report["diagnostics"]).unwrap()
            ));
            continue;
        }
        let errors = errors_of(&report);
        if errors != row.errors {
            failures.push(format!(
                "{}: errors {errors:?}, expected {:?}",
                row.file, row.errors
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn all_seeds_together_report_exactly_the_known_errors() {
    let files = seed_files();
    let mut args = vec!["analyze".to_string(), "-o".into(), "json".into()];
    args.extend(files.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = meshctl(&args);
    assert_eq!(out.status.code(), Some(1));
    let report = json_of(&out);
    assert_eq!(report["summary"]["files"], files.len());
    let expected: BTreeSet<String> = rows()
        .into_iter()
        .flat_map(|r| r.errors.into_iter().map(move |e| format!("{}:{e}", r.file)))
        .collect();
    let got: BTreeSet<String> = report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "Error")
        .map(|d| {
            let src = d["location"]["source"].as_str().unwrap();
            let file = Path::new(src).file_name().unwrap().to_string_lossy();
            format!(
                "{file}:{}@{}",
                d["code"].as_str().unwrap(),
                d["field"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(got, expected);
    // Cross-resource checks see the whole set: the gateways referenced in
    // 05, 40 and 41 are defined in 04, 39 and 43.
    let gateway_missing = report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["code"] == "AMB0031")
        .count();
    assert_eq!(gateway_missing, 0, "{report:#}");
}

#[test]
fn seed_28_human_output_names_resource_file_field_and_reason() {
    let path = Path::new(SEEDS).join("28-001-virtualservice-retry-timeout.yaml");
    let out = meshctl(&["analyze", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Error "))
        .unwrap_or_else(|| panic!("no error line in:\n{stdout}"));
    assert!(
        line.starts_with("Error [AMB0003] VirtualService default/retry-timeout ("),
        "{line}"
    );
    assert!(
        line.ends_with(
            "28-001-virtualservice-retry-timeout.yaml): spec.host: unknown field; did you mean spec.hosts?"
        ),
        "{line}"
    );
}

#[test]
fn seed_51_missing_metadata_is_an_error() {
    let path = Path::new(SEEDS).join("51-003-istiooperator-unnamed.yaml");
    let out = meshctl(&["analyze", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("Error [AMB0002] IstioOperator default/<no name>")
            && stdout.contains("metadata.name: missing"),
        "{stdout}"
    );
}

#[test]
fn json_output_has_the_documented_shape() {
    let path = Path::new(SEEDS).join("22-001-multi-reviews.yaml");
    let out = meshctl(&["analyze", "--output", "json", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report = json_of(&out);
    let diags = report["diagnostics"].as_array().unwrap();
    let d = diags
        .iter()
        .find(|d| d["severity"] == "Error")
        .expect("an error");
    assert_eq!(d["code"], "AMB0003");
    assert_eq!(d["object"]["kind"], "VirtualService");
    assert_eq!(d["object"]["namespace"], "bookinfo");
    assert_eq!(d["object"]["name"], "reviews");
    assert_eq!(d["location"]["source"], path.to_str().unwrap());
    assert_eq!(d["location"]["document"], 1);
    assert_eq!(d["field"], "spec.host");
    assert_eq!(d["message"], "unknown field; did you mean spec.hosts?");
    let s = &report["summary"];
    assert_eq!(s["files"], 1);
    assert_eq!(s["documents"], 2);
    assert_eq!(s["errors"], 1);
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshctl-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn exit_codes() {
    let seeds = Path::new(SEEDS);
    let clean = seeds.join("06-000-destinationrule-reviews.yaml");
    let warnings = seeds.join("08-000-destinationrule-productpage.yaml");
    let errors = seeds.join("28-001-virtualservice-retry-timeout.yaml");
    let code = |args: &[&str]| meshctl(args).status.code();

    assert_eq!(code(&["analyze", clean.to_str().unwrap()]), Some(0));
    assert_eq!(code(&["analyze", warnings.to_str().unwrap()]), Some(0));
    assert_eq!(code(&["analyze", errors.to_str().unwrap()]), Some(1));
    assert_eq!(
        code(&["analyze", clean.to_str().unwrap(), errors.to_str().unwrap()]),
        Some(1)
    );
    // usage and I/O problems
    assert_eq!(code(&["analyze"]), Some(2));
    assert_eq!(
        code(&["analyze", "--output", "xml", clean.to_str().unwrap()]),
        Some(2)
    );
    assert_eq!(
        code(&["analyze", "/nonexistent/meshctl/config.yaml"]),
        Some(2)
    );
    assert_eq!(code(&["no-such-command"]), Some(2));
    let empty = temp_dir("empty");
    assert_eq!(code(&["analyze", empty.to_str().unwrap()]), Some(2));

    // folders are searched recursively for *.yaml / *.yml only
    let dir = temp_dir("tree");
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::copy(&clean, dir.join("a/b/dr.yml")).unwrap();
    std::fs::write(dir.join("a/notes.txt"), "not: [yaml").unwrap();
    let out = meshctl(&["analyze", "-o", "json", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json_of(&out)["summary"]["files"], 1);
    std::fs::write(dir.join("a/broken.yaml"), "kind: [unclosed\n").unwrap();
    assert_eq!(code(&["analyze", dir.to_str().unwrap()]), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn level_filters_output_but_not_the_verdict() {
    let path = Path::new(SEEDS).join("01-000-istiooperator-istio-control-plane.yaml");
    let out = meshctl(&[
        "analyze",
        "--level",
        "error",
        "-o",
        "json",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let report = json_of(&out);
    assert!(report["diagnostics"].as_array().unwrap().is_empty());
    assert!(report["summary"]["warnings"].as_u64().unwrap() > 0);
}
