//! Holds the real `meshctl` binary to the expected verdict of every seed
//! config (tests/seed-verdicts.txt), and checks the output formats and exit
//! codes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/istio");
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
    /// `CODE@field`: the errors of an `errors` row, the warnings of a
    /// `warnings` row.
    expected: BTreeSet<String>,
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
        let expected: BTreeSet<String> = parts.map(str::to_string).collect();
        assert_eq!(
            verdict != Verdict::Clean,
            !expected.is_empty(),
            "seed-verdicts.txt line {}: list the expected errors (warnings) exactly for `errors` (`warnings`) rows",
            n + 1
        );
        out.push(Row {
            file,
            verdict,
            expected,
        });
    }
    out
}

fn seed_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(SEEDS)
        .expect("tests/fixtures/istio exists")
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
    diagnostics_of(report, "Error")
}

/// `CODE@field` of the diagnostics at `severity`.
fn diagnostics_of(report: &serde_json::Value, severity: &str) -> BTreeSet<String> {
    report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == severity)
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
        let (what, got) = match row.verdict {
            Verdict::Errors => ("errors", errors_of(&report)),
            _ => ("warnings", diagnostics_of(&report, "Warning")),
        };
        if got != row.expected {
            failures.push(format!(
                "{}: {what} {got:?}, expected {:?}",
                row.file, row.expected
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
        .filter(|r| r.verdict == Verdict::Errors)
        .flat_map(|r| {
            r.expected
                .into_iter()
                .map(move |e| format!("{}:{e}", r.file))
        })
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

/// One of each L7 kind the waypoint and gateway serve, written as Ambit
/// implements it: clean in both output forms; then the same set with one
/// broken field and one unimplemented one per kind: errors and warnings
/// named by kind, name and field, exit 1.
#[test]
fn l7_kinds_in_both_output_forms() {
    const GOOD: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: demo}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [demo.example.com]
    tls: {mode: SIMPLE, credentialName: demo-tls}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: route, namespace: demo}
spec:
  parentRefs: [{name: reviews, kind: Service, group: ""}]
  rules: [{backendRefs: [{name: reviews, port: 9080}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: demo}
spec:
  jwtRules:
  - issuer: testing@secure.istio.io
    jwksUri: https://keys.example.com/jwks.json
    outputPayloadToHeader: x-jwt-payload
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: demo}
spec:
  action: AUDIT
  rules: [{to: [{operation: {paths: [/admin/*]}}]}]
---
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: rl, namespace: demo}
spec:
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          '@type': type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: rl
            token_bucket: {max_tokens: 10, tokens_per_fill: 10, fill_interval: 60s}
            enable_x_ratelimit_headers: DRAFT_VERSION_03
            response_headers_to_add: [{header: {key: x-rl, value: '1'}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: tel, namespace: demo}
spec:
  tracing: [{randomSamplingPercentage: 5}]
  accessLogging: [{providers: [{name: envoy}]}]
"#;
    let dir = temp_dir("l7-kinds");
    let good = dir.join("good.yaml");
    std::fs::write(&good, GOOD).unwrap();
    let out = meshctl(&["analyze", "-o", "json", good.to_str().unwrap()]);
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(verdict_of(&report), Verdict::Clean, "{report:#}");
    assert_eq!(report["summary"]["documents"], 6);
    let out = meshctl(&["analyze", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));

    let bad_text = GOOD
        .replace("mode: SIMPLE", "mode: MUTUAL")
        .replace("port: 9080", "port: 0")
        .replace("https://keys.example.com/jwks.json", "keys.example.com")
        .replace(
            "outputPayloadToHeader: x-jwt-payload",
            "fromCookies: [session]",
        )
        .replace("max_tokens: 10", "max_tokens: 0")
        .replace(
            "randomSamplingPercentage: 5",
            "randomSamplingPercentage: 500",
        )
        .replace(
            "action: AUDIT",
            "action: CUSTOM\n  provider: {name: ext-authz}",
        );
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, bad_text).unwrap();
    let out = meshctl(&["analyze", "-o", "json", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report = json_of(&out);
    let of = |sev: &str| -> BTreeSet<String> {
        report["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["severity"] == sev)
            .map(|d| {
                format!(
                    "{} {}@{}",
                    d["object"]["kind"].as_str().unwrap(),
                    d["code"].as_str().unwrap(),
                    d["field"].as_str().unwrap()
                )
            })
            .collect()
    };
    let rl = "spec.configPatches[0].patch.value.typed_config.value";
    let want_errors: BTreeSet<String> = [
        "HTTPRoute AMB0011@spec.rules[0].backendRefs[0].port".to_string(),
        "RequestAuthentication AMB0013@spec.jwtRules[0].jwksUri".to_string(),
        format!("EnvoyFilter AMB0013@{rl}.token_bucket.max_tokens"),
        "Telemetry AMB0009@spec.tracing[0].randomSamplingPercentage".to_string(),
    ]
    .into_iter()
    .collect();
    assert_eq!(of("Error"), want_errors, "{report:#}");
    let want_warnings: BTreeSet<String> = [
        "Gateway AMB0021@spec.servers[0].tls.mode",
        "RequestAuthentication AMB0021@spec.jwtRules[0].fromCookies",
        "AuthorizationPolicy AMB0021@spec.action",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(of("Warning"), want_warnings, "{report:#}");
    // The human form names the same: kind ns/name (file), field, reason.
    let out = meshctl(&["analyze", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    for line in [
        "Warning [AMB0021] Gateway demo/gw (",
        "Error [AMB0009] Telemetry demo/tel (",
    ] {
        assert!(stdout.contains(line), "{line} not in:\n{stdout}");
    }
    assert!(
        stdout.contains("spec.servers[0].tls.mode: MUTUAL is not implemented by Ambit's gateway"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
