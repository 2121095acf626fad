//! The testbed itself: pods reach each other across nodes without the mesh,
//! and dropping a testbed leaves no namespace or cgroup behind.

use std::process::Command;
use std::time::Duration;

use mesh_tests::probe::SendReport;
use mesh_tests::testbed::{PodSpec, Testbed};

fn probe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ambit-probe"))
}

#[test]
fn pods_talk_across_nodes_and_everything_is_cleaned_up() {
    let (netns, cgroup) = {
        let mut tb = Testbed::new().expect("testbed (needs root)");
        tb.add_node("node-a").unwrap();
        tb.add_node("node-b").unwrap();
        tb.add_pod("node-a", PodSpec::new("client", "plain", "client"))
            .unwrap();
        let server = tb
            .add_pod("node-b", PodSpec::new("server", "plain", "server"))
            .unwrap();
        let mut serve = probe();
        serve.args(["serve", "--name", "server", "--port", "8080"]);
        let idx = tb.spawn_in_pod("server", "server", serve).unwrap();
        tb.with_proc(idx, |p| {
            p.wait_for_line("listening", Duration::from_secs(5))
        })
        .unwrap()
        .unwrap();
        let mut send = probe();
        send.args([
            "send",
            "--to",
            &format!("{}:8080", server.ip),
            "--bytes",
            "100000",
        ]);
        let out = tb
            .run_in_pod("client", send, Duration::from_secs(20))
            .unwrap();
        let report: SendReport = serde_json::from_str(out.trim()).unwrap();
        assert!(report.intact);
        assert_eq!(report.received, 100_000);
        assert_eq!(report.hello.server, "server");
        // No mesh: the server sees the client pod's own address.
        let client_ip = tb.pod("client").unwrap().ip;
        assert!(
            report.hello.peer.starts_with(&format!("{client_ip}:")),
            "{report:?}"
        );
        (tb.pod("server").unwrap().netns.clone(), tb.cgroup.clone())
    };
    assert!(
        !std::path::Path::new("/run/netns").join(&netns).exists(),
        "netns {netns} left behind"
    );
    assert!(!cgroup.exists(), "cgroup {} left behind", cgroup.display());
}
