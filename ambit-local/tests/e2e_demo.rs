//! The sample app of `cargo xtask up`, checked: the README's first command
//! must keep showing a working mesh.

use ambit_local::demo;

#[test]
fn the_local_mesh_demo_shows_a_working_mesh() {
    let mesh = demo::bring_up(&|_| {}).expect("bring up (needs root)");
    let lines = std::sync::Mutex::new(Vec::new());
    let report = demo::demonstrate(&mesh, &|l| lines.lock().unwrap().push(l.to_string()))
        .expect("demonstration");
    let out = lines.into_inner().unwrap().join("\n");
    assert_eq!(
        report.answered_by.len(),
        2,
        "both replicas should answer:\n{out}"
    );
    assert!(report.tls_on_wire, "no TLS seen on the wire:\n{out}");
    assert!(!report.plaintext_on_wire, "plaintext on the wire:\n{out}");
    assert!(report.outsider_refused, "STRICT did not hold:\n{out}");
    assert!(
        report
            .identity_lines
            .iter()
            .any(|l| l.contains("src.identity=spiffe://cluster.local/ns/demo/sa/client")),
        "no identity line:\n{out}"
    );
    // The shop's waypoint, configured over xDS, routes by header.
    assert!(report.l7_routed, "L7 routing not shown:\n{out}");
    assert!(
        out.contains("end-user: jason -> reviews-v2 x5; everyone else -> reviews-v1 x5"),
        "no L7 line:\n{out}"
    );
}
