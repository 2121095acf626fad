//! mesh-node's command line, by running the binary: a flag it cannot use
//! ends the process with clap's usage error naming the flag (exit code 2),
//! never a panic (exit code 101) and never a silent rewrite.

use std::process::Command;

/// Runs mesh-node with otherwise valid flags plus `extra`; the cgroup does
/// not exist, so a command line that parses fails later, harmlessly.
fn run(extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-node"))
        .args(["--config", "/nonexistent/mesh.yaml", "--node", "n"])
        .args(["--cgroup", "/nonexistent/ambit-flags-test"])
        .args(extra)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running mesh-node");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_refused(flag: &str, value: &str) {
    let (code, stderr) = run(&[&format!("{flag}={value}")]);
    assert!(
        !stderr.contains("panicked"),
        "{flag}={value} panicked:\n{stderr}"
    );
    assert_eq!(code, Some(2), "{flag}={value}: exit {code:?}:\n{stderr}");
    assert!(
        stderr.contains(&format!("invalid value '{value}' for '{flag}")),
        "{flag}={value}: the error does not name the flag:\n{stderr}"
    );
}

#[test]
fn drain_timeout_that_is_no_duration_is_a_usage_error() {
    for value in ["inf", "-inf", "infinity", "NaN", "1e400", "-1", "abc", ""] {
        assert_refused("--drain-timeout-secs", value);
    }
}

#[test]
fn worker_threads_out_of_range_is_a_usage_error() {
    for value in ["0", "1025", "100000", "-1", "two"] {
        assert_refused("--worker-threads", value);
    }
}

#[test]
fn other_unparsable_flags_are_usage_errors() {
    assert_refused("--admin", "localhost");
    assert_refused("--admin", "127.0.0.1:99999");
}

#[test]
fn usable_values_parse_and_the_run_fails_later_without_a_panic() {
    for extra in [
        ["--drain-timeout-secs=0", "--worker-threads=1"],
        ["--drain-timeout-secs=2.5", "--worker-threads=1024"],
    ] {
        let (code, stderr) = run(&extra);
        assert!(!stderr.contains("panicked"), "{extra:?}:\n{stderr}");
        assert_eq!(code, Some(1), "{extra:?}: exit {code:?}:\n{stderr}");
        assert!(
            stderr.contains("joining cgroup /nonexistent/ambit-flags-test"),
            "{extra:?}:\n{stderr}"
        );
    }
}

#[test]
fn node_name_that_could_leave_the_pin_root_is_a_usage_error() {
    // The node name names a directory under the pin root.
    for value in ["..", "../etc", "a/b", "/abs", "Node-A", "-a", "a..b", ""] {
        assert_refused("--node", value);
    }
}
