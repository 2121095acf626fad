//! The mesh driven by the Kubernetes API: a real kube-apiserver (the
//! objects an operator and the cluster's controllers would write), the
//! namespace testbed, mesh-controller in Kubernetes mode (`--kubeconfig`)
//! and mesh-node on each node over xDS. Each change made through the API
//! must reach a mesh-node within a second, asserted on what the node does:
//! connections allowed or denied, plaintext refused under STRICT, pods
//! captured or not, endpoints used or not.
//!
//! Networking: the API server listens on 127.0.0.1 in the root netns, the
//! nodes live on the testbed's wire. The controller runs in the root netns
//! (it reaches the API server on loopback) and serves xDS and the CA on
//! 192.168.77.254, an address on a veth whose peer is a port of the wire
//! bridge; the veth goes away with the wire netns.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::Client;
use mesh_tests::kube::KubeApiServer;
use mesh_tests::mesh::{binary, LocalMesh, CONTROLLER_IP, CONTROLLER_PORT};
use mesh_tests::probe::Hello;
use mesh_tests::sys::ip_in;
use mesh_tests::testbed::PodSpec;
use mesh_tests::wait::within;
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(1);
const VIP: &str = "10.96.0.10";

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

struct Env {
    rt: tokio::runtime::Runtime,
    client: Client,
    mesh: LocalMesh,
    controller: usize,
    /// Keeps the API server (and etcd) running.
    _server: KubeApiServer,
}

impl Env {
    fn block<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        self.rt.block_on(f)
    }

    fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn istio(&self, ns: &str, group: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &ar(group, "v1", kind, plural))
    }

    /// The Pod object of testbed pod `name`: its node, service account,
    /// labels, netns (annotation) and IP (status, set through the status
    /// subresource as a kubelet would).
    fn create_pod(&self, name: &str) -> Result<()> {
        let p = self.mesh.tb.pod(name)?.clone();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels,
                "annotations": {"ambit.io/netns": p.netns_path().display().to_string()}},
            "spec": {"nodeName": p.node, "serviceAccountName": p.service_account,
                "containers": [{"name": "app", "image": "ambit-probe"}]},
        }))?;
        let api = self.pods(&p.namespace);
        self.block(async {
            api.create(&PostParams::default(), &pod)
                .await
                .with_context(|| format!("creating pod {name}"))?;
            api.patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Running", "podIP": p.ip.to_string()}})),
            )
            .await
            .with_context(|| format!("pod {name} status"))?;
            Ok(())
        })
    }

    /// The EndpointSlice of service srv, as the endpoint-slice controller
    /// would write it for these pods.
    fn set_endpoints(&self, pods: &[&str]) -> Result<()> {
        let mut endpoints = Vec::new();
        for name in pods {
            let p = self.mesh.tb.pod(name)?;
            endpoints.push(
                json!({"addresses": [p.ip.to_string()], "conditions": {"ready": true},
                "nodeName": p.node,
                "targetRef": {"kind": "Pod", "name": p.name, "namespace": p.namespace}}),
            );
        }
        let slice: EndpointSlice = serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "srv-x1", "namespace": "demo",
                "labels": {"kubernetes.io/service-name": "srv"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "tcp", "port": 8080, "protocol": "TCP"}],
        }))?;
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), "demo");
        self.block(async {
            api.patch(
                "srv-x1",
                &PatchParams::apply("e2e-kube").force(),
                &Patch::Apply(&slice),
            )
            .await
            .context("applying the EndpointSlice")?;
            Ok(())
        })
    }

    fn controller_log(&self) -> Vec<String> {
        self.mesh
            .tb
            .with_proc(self.controller, |p| p.lines())
            .unwrap_or_default()
    }

    fn controller_logged(&self, a: &str, b: &str) -> bool {
        self.controller_log()
            .iter()
            .any(|l| l.contains(a) && l.contains(b))
    }

    /// The peer pod `to` saw for a connection from `from` (None: no answer).
    /// The greeting of `to`'s server to a call from `from` (the peer it saw,
    /// and whether its node proxy delivered the call).
    fn peer_seen(&self, from: &str, to: &str) -> Option<Hello> {
        let ip = self.mesh.tb.pod(to).ok()?.ip;
        match self.mesh.send(from, SocketAddr::from((ip, 8080)), 64, "p") {
            Ok(r) if r.intact => Some(r.hello),
            _ => None,
        }
    }

    /// Which replica answered a call from `from` to the service VIP.
    fn replica(&self, from: &str) -> Option<String> {
        let to: SocketAddr = format!("{VIP}:80").parse().ok()?;
        match self.mesh.send(from, to, 64, "v") {
            Ok(r) if r.intact => Some(r.hello.server),
            _ => None,
        }
    }
}

/// Adds a veth from the root netns to the wire bridge, with CONTROLLER_IP
/// on the root side.
fn root_to_wire(mesh: &LocalMesh) -> Result<()> {
    let host = format!("akc{}", std::process::id() % 1_000_000);
    let status = Command::new("ip")
        .args(["link", "add", &host, "type", "veth", "peer", "name", "ctl0"])
        .args(["netns", &mesh.tb.wire_netns])
        .status()?;
    anyhow::ensure!(status.success(), "ip link add {host}");
    ip_in(
        &mesh.tb.wire_netns,
        &["link", "set", "ctl0", "master", "br0"],
    )?;
    ip_in(&mesh.tb.wire_netns, &["link", "set", "ctl0", "up"])?;
    for args in [
        vec!["addr", "add", &format!("{CONTROLLER_IP}/24"), "dev", &host],
        vec!["link", "set", &host, "up"],
    ] {
        let status = Command::new("ip").args(&args).status()?;
        anyhow::ensure!(status.success(), "ip {args:?}");
    }
    Ok(())
}

fn setup() -> Result<Env> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server = rt.block_on(KubeApiServer::start())?;
    let client = rt.block_on(server.client())?;

    let mut mesh = LocalMesh::new(&["node-a", "node-b"])?;
    mesh.add_pod("node-a", PodSpec::new("client", "demo", "client"))?;
    mesh.add_pod("node-a", PodSpec::new("outsider", "legacy", "default"))?;
    mesh.add_pod(
        "node-b",
        PodSpec::new("srv-1", "demo", "server").label("app", "srv"),
    )?;
    mesh.add_pod(
        "node-a",
        PodSpec::new("srv-2", "demo", "server").label("app", "srv"),
    )?;
    root_to_wire(&mesh)?;

    let mut env = Env {
        rt,
        client,
        mesh,
        controller: usize::MAX,
        _server: server,
    };
    env.block(async {
        env._server
            .create_namespace("demo", &[("istio.io/dataplane-mode", "ambient")])
            .await?;
        env._server.create_namespace("legacy", &[]).await?;
        Ok(())
    })?;
    // srv-2 exists in the testbed but not (yet) in the cluster: scale-up later.
    for p in ["client", "outsider", "srv-1"] {
        env.create_pod(p)?;
    }
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "srv", "namespace": "demo"},
        "spec": {"clusterIP": VIP, "selector": {"app": "srv"},
            "ports": [{"name": "tcp", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    }))?;
    let services: Api<Service> = Api::namespaced(env.client.clone(), "demo");
    env.block(async {
        services.create(&PostParams::default(), &svc).await?;
        Ok(())
    })?;
    env.set_endpoints(&["srv-1"])?;

    // mesh-controller in Kubernetes mode, in the root netns.
    let dir: PathBuf = env.mesh.dir().to_path_buf();
    let mut cmd = Command::new(binary("mesh-controller")?);
    cmd.arg("--kubeconfig")
        .arg(env._server.kubeconfig_path())
        .args(["--listen", &format!("{CONTROLLER_IP}:{CONTROLLER_PORT}")])
        .args(["--status-listen", &format!("{CONTROLLER_IP}:15014")])
        .arg("--ca-dir")
        .arg(dir.join("ca"))
        .arg("--bootstrap-dir")
        .arg(dir.join("bootstrap"))
        .env(
            "RUST_LOG",
            std::env::var("AMBIT_LOG").unwrap_or_else(|_| "info".into()),
        );
    env.controller = env.mesh.tb.spawn("mesh-controller", cmd, None, None)?;
    env.mesh.tb.with_proc(env.controller, |p| {
        p.wait_for_line("mesh-controller serving", Duration::from_secs(30))
    })??;

    // mesh-node on each node, over xDS with the node's bootstrap token.
    for node in ["node-a", "node-b"] {
        let n = env.mesh.tb.node(node)?.clone();
        let boot = dir.join("bootstrap");
        let mut cmd = Command::new(binary("mesh-node")?);
        cmd.args([
            "--xds-address",
            &format!("http://{CONTROLLER_IP}:{CONTROLLER_PORT}"),
        ])
        .arg("--bootstrap-token")
        .arg(boot.join(format!("{node}.token")))
        .arg("--xds-roots")
        .arg(boot.join("root-cert.pem"))
        .args(["--node", node, "--cgroup"])
        .arg(&n.cgroup)
        .arg("--pin-dir")
        .arg(env.mesh.tb.pin_dir(node))
        .env(
            "RUST_LOG",
            std::env::var("AMBIT_LOG").unwrap_or_else(|_| "info".into()),
        );
        let idx = env
            .mesh
            .tb
            .spawn_in_node(node, &format!("mesh-node@{node}"), cmd, None)?;
        env.mesh.tb.with_proc(idx, |p| {
            p.wait_for_line("mesh-node ready", Duration::from_secs(20))
        })??;
    }
    env.mesh.serve("srv-1", 8080, false)?;
    env.mesh.serve("srv-2", 8080, false)?;
    Ok(env)
}

/// Asserts that `f` holds within a second of the change; prints how long.
fn reaches_node(what: &str, f: impl FnMut() -> bool) {
    match within(WITHIN, f) {
        Some(d) => eprintln!("  {what}: in effect after {d:?}"),
        None => panic!("{what}: not in effect within {WITHIN:?}"),
    }
}

#[test]
fn changes_through_the_kubernetes_api_reach_the_nodes() {
    let env = setup().expect("setup (needs root and the kube-apiserver binary)");
    let client_ip = env.mesh.tb.pod("client").unwrap().ip.to_string();

    // Baseline: the client is captured (its node proxy delivers the call,
    // from the client's address) and the service answers from srv-1.
    let peer = within(Duration::from_secs(5), || {
        env.peer_seen("client", "srv-1")
            .is_some_and(|h| h.via_node_proxy() && h.peer.starts_with(&format!("{client_ip}:")))
    });
    assert!(
        peer.is_some(),
        "client not captured to srv-1: {:?}",
        env.peer_seen("client", "srv-1")
    );
    assert_eq!(env.replica("client").as_deref(), Some("srv-1"));

    // AuthorizationPolicy: create (deny all), change (deny only a caller
    // that does not exist), change back, delete.
    let aps = env.istio(
        "demo",
        "security.istio.io",
        "AuthorizationPolicy",
        "authorizationpolicies",
    );
    let deny_all: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny", "namespace": "demo"},
        "spec": {"action": "DENY", "rules": [{}]},
    }))
    .unwrap();
    env.block(async {
        aps.create(&PostParams::default(), &deny_all).await?;
        Ok(())
    })
    .unwrap();
    reaches_node("AuthorizationPolicy created (deny all)", || {
        !env.mesh.reaches("client", "srv-1", 8080)
    });
    let patch = |spec: Value| {
        env.block(async {
            aps.patch(
                "deny",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await?;
            Ok(())
        })
        .unwrap()
    };
    patch(
        json!({"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/demo/sa/nobody"]}}]}]}),
    );
    reaches_node("AuthorizationPolicy changed (deny nobody)", || {
        env.mesh.reaches("client", "srv-1", 8080)
    });
    patch(json!({"rules": [{}]}));
    reaches_node("AuthorizationPolicy changed back (deny all)", || {
        !env.mesh.reaches("client", "srv-1", 8080)
    });
    env.block(async {
        aps.delete("deny", &DeleteParams::default()).await?;
        Ok(())
    })
    .unwrap();
    reaches_node("AuthorizationPolicy deleted", || {
        env.mesh.reaches("client", "srv-1", 8080)
    });

    // PeerAuthentication: plaintext from outside the mesh is let in by
    // default, refused under STRICT, let in under PERMISSIVE and after delete.
    assert!(env.mesh.reaches("outsider", "srv-1", 8080));
    let pas = env.istio(
        "demo",
        "security.istio.io",
        "PeerAuthentication",
        "peerauthentications",
    );
    let strict: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "demo"},
        "spec": {"mtls": {"mode": "STRICT"}},
    }))
    .unwrap();
    env.block(async {
        pas.create(&PostParams::default(), &strict).await?;
        Ok(())
    })
    .unwrap();
    reaches_node("PeerAuthentication STRICT", || {
        !env.mesh.reaches("outsider", "srv-1", 8080)
    });
    assert!(
        env.mesh.reaches("client", "srv-1", 8080),
        "mTLS client refused under STRICT"
    );
    let set_mode = |mode: &str| {
        env.block(async {
            pas.patch(
                "default",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"mtls": {"mode": mode}}})),
            )
            .await?;
            Ok(())
        })
        .unwrap()
    };
    set_mode("PERMISSIVE");
    reaches_node("PeerAuthentication changed to PERMISSIVE", || {
        env.mesh.reaches("outsider", "srv-1", 8080)
    });
    set_mode("STRICT");
    reaches_node("PeerAuthentication changed back to STRICT", || {
        !env.mesh.reaches("outsider", "srv-1", 8080)
    });
    env.block(async {
        pas.delete("default", &DeleteParams::default()).await?;
        Ok(())
    })
    .unwrap();
    reaches_node("PeerAuthentication deleted", || {
        env.mesh.reaches("outsider", "srv-1", 8080)
    });

    // VirtualService (L7): accepted and reported by the controller on
    // create, change and delete; the nodes keep serving the service (they
    // do not act on L7 routing: that is a waypoint's job).
    let vss = env.istio(
        "demo",
        "networking.istio.io",
        "VirtualService",
        "virtualservices",
    );
    let vs: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "srv", "namespace": "demo"},
        "spec": {"hosts": ["srv"], "http": [{"timeout": "5s",
            "route": [{"destination": {"host": "srv"}}]}]},
    }))
    .unwrap();
    env.block(async {
        vss.create(&PostParams::default(), &vs).await?;
        Ok(())
    })
    .unwrap();
    reaches_node("VirtualService created: accepted by the controller", || {
        env.controller_logged("L7 resource accepted", "VirtualService demo/srv")
    });
    env.block(async {
        vss.patch(
            "srv",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"http": [{"timeout": "2s",
                "route": [{"destination": {"host": "srv"}}]}]}})),
        )
        .await?;
        Ok(())
    })
    .unwrap();
    reaches_node("VirtualService changed: accepted by the controller", || {
        env.controller_logged("L7 resource changed", "VirtualService demo/srv")
    });
    assert_eq!(env.replica("client").as_deref(), Some("srv-1"));
    env.block(async {
        vss.delete("srv", &DeleteParams::default()).await?;
        Ok(())
    })
    .unwrap();
    reaches_node("VirtualService deleted: removed in the controller", || {
        env.controller_logged("L7 resource removed", "VirtualService demo/srv")
    });
    assert_eq!(env.replica("client").as_deref(), Some("srv-1"));

    // Namespace label: off (pods released: the client's connection reaches
    // the server directly) and on again (captured: the node proxy delivers it).
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let label = |v: Value| {
        env.block(async {
            namespaces
                .patch(
                    "demo",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {"istio.io/dataplane-mode": v}}})),
                )
                .await?;
            Ok(())
        })
        .unwrap()
    };
    label(Value::Null);
    reaches_node("namespace demo unlabelled: pods not captured", || {
        env.peer_seen("client", "srv-1")
            .is_some_and(|h| !h.via_node_proxy() && h.peer.starts_with(&format!("{client_ip}:")))
    });
    label(json!("ambient"));
    reaches_node("namespace demo labelled ambient: pods captured", || {
        env.peer_seen("client", "srv-1")
            .is_some_and(|h| h.via_node_proxy() && h.peer.starts_with(&format!("{client_ip}:")))
    });

    // Scale up: pod srv-2 appears (with its EndpointSlice entry) and gets
    // calls to the service; scale down: srv-1 goes and gets none.
    env.create_pod("srv-2").unwrap();
    env.set_endpoints(&["srv-1", "srv-2"]).unwrap();
    reaches_node("scale up: srv-2 answers calls to the service", || {
        env.replica("client").as_deref() == Some("srv-2")
    });
    env.block(async {
        env.pods("demo")
            .delete("srv-1", &DeleteParams::default().grace_period(0))
            .await?;
        Ok(())
    })
    .unwrap();
    env.set_endpoints(&["srv-2"]).unwrap();
    reaches_node("scale down: srv-1 no longer used", || {
        (0..6).all(|_| env.replica("client").as_deref() == Some("srv-2"))
    });
}
