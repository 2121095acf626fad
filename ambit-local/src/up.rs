//! `cargo xtask up` (after building): bring up the local mesh with the sample app, show
//! it working, and tear everything down on Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::demo;
use crate::progress::spinner;

/// Brings the sample app up, shows it working, waits for Ctrl-C (unless
/// `once`), and tears everything down.
pub fn run(once: bool) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::SeqCst))?;

    let pb = spinner("bringing up the local mesh");
    let mesh = demo::bring_up(&|m| pb.set_message(m.to_string()));
    let mesh = match mesh {
        Ok(m) => {
            pb.finish_with_message(
                "local mesh up: 2 nodes, 7 pods, mesh-node on each node, a waypoint in shop",
            );
            m
        }
        Err(e) => {
            pb.abandon_with_message("bringing up the mesh failed");
            return Err(e);
        }
    };
    println!();
    let report = demo::demonstrate(&mesh, &|l| println!("{l}"))?;
    println!();
    let ok = report.answered_by.len() == 2
        && report.tls_on_wire
        && !report.plaintext_on_wire
        && report.outsider_refused
        && report.l7_routed;
    if ok {
        println!("the mesh works: both replicas answered over mTLS, nothing in plaintext on the wire, STRICT held, the waypoint routed by header.");
    }
    if !once {
        println!(
            "config: {}/  (edit the YAML: mesh-controller pushes changes to the nodes within a second)",
            mesh.folder().display()
        );
        println!(
            "pods: {}",
            mesh.tb
                .pods()
                .iter()
                .map(|p| format!("{} {} (netns {})", p.name, p.ip, p.netns))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("Ctrl-C tears everything down.");
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let pb = spinner("tearing down (processes, namespaces, cgroups, eBPF links)");
    drop(mesh);
    pb.finish_with_message("torn down: nothing left behind");
    if !ok {
        bail!("the demonstration did not show a working mesh (see above)");
    }
    Ok(())
}
