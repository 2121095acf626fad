use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use super::*;
use crate::config;

const CFG: &str = r#"
namespaces:
- name: demo
  labels: {istio.io/dataplane-mode: ambient}
- name: plain
workloads:
- {name: client, namespace: demo, serviceAccount: client, node: node-a, ip: 10.10.1.2, netns: /run/netns/client, labels: {app: client}}
- {name: server-1, namespace: demo, serviceAccount: server, node: node-b, ip: 10.10.2.2, labels: {app: server}}
- {name: server-2, namespace: demo, serviceAccount: server, node: node-a, ip: 10.10.2.3, labels: {app: server}}
- {name: server-x, namespace: plain, serviceAccount: server, node: node-a, ip: 10.10.3.3, labels: {app: server}}
- {name: opted-out, namespace: demo, node: node-a, ip: 10.10.1.9, labels: {istio.io/dataplane-mode: none}}
- {name: opted-in, namespace: plain, node: node-a, ip: 10.10.3.9, labels: {istio.io/dataplane-mode: ambient}}
- {name: v6, namespace: demo, node: node-a, ip: "fd00::5", labels: {app: v6}}
services:
- name: server
  namespace: demo
  addresses: [10.96.0.10, "fd00:96::10"]
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: grpc, port: 9090}
  - {name: dns, port: 53, protocol: UDP}
  selector: {app: server}
- name: empty
  namespace: demo
  addresses: [10.96.0.11]
  ports: [{port: 80}]
  selector: {app: nobody}
"#;

fn state() -> ProxyState {
    config::parse_state(CFG).unwrap_or_else(|e| panic!("{e}"))
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn workloads_by_ip_and_node() {
    let s = state();
    let w = s.workload_by_ip("10.10.2.2".parse().unwrap()).unwrap();
    assert_eq!(w.name, "server-1");
    assert_eq!(
        s.identity_of(w).to_string(),
        "spiffe://cluster.local/ns/demo/sa/server"
    );
    assert_eq!(
        w.identity("example.org").principal(),
        "example.org/ns/demo/sa/server"
    );
    let v6: IpAddr = "fd00::5".parse().unwrap();
    assert_eq!(s.workload_by_ip(v6).unwrap().service_account, "default");
    assert!(s.workload_by_ip("10.9.9.9".parse().unwrap()).is_none());
    let names: Vec<String> = s
        .local_workloads("node-b")
        .map(|w| w.name.clone())
        .collect();
    assert_eq!(names, ["server-1"]);
    assert_eq!(s.local_workloads("node-a").count(), 6);
    assert_eq!(
        s.workload("demo", "client").unwrap().netns.as_deref(),
        Some(std::path::Path::new("/run/netns/client"))
    );
}

#[test]
fn ambient_membership() {
    let s = state();
    let by = |ip: &str| s.workload_by_ip(ip.parse().unwrap()).unwrap();
    assert!(s.is_ambient(by("10.10.1.2")), "namespace label");
    assert!(!s.is_ambient(by("10.10.3.3")), "namespace without label");
    assert!(!s.is_ambient(by("10.10.1.9")), "pod opted out");
    assert!(s.is_ambient(by("10.10.3.9")), "pod opted in");
}

#[test]
fn service_vip_spreads_over_endpoints() {
    let s = state();
    let mut seen = HashSet::new();
    for _ in 0..4 {
        let up = s.resolve(sa("10.96.0.10:80")).expect("endpoint");
        assert_eq!(up.target.port(), 8080);
        assert_eq!(up.target.ip(), up.workload.ip);
        assert_eq!(
            up.service_host.as_deref(),
            Some("server.demo.svc.cluster.local")
        );
        assert_eq!(
            up.identity.to_string(),
            "spiffe://cluster.local/ns/demo/sa/server"
        );
        assert_eq!(
            up.workload.namespace, "demo",
            "selector is namespace-scoped"
        );
        seen.insert(up.workload.name.clone());
    }
    assert_eq!(seen.len(), 2, "both endpoints used: {seen:?}");
    // targetPort defaults to port; the IPv6 VIP works the same.
    assert_eq!(
        s.resolve(sa("[fd00:96::10]:9090")).unwrap().target.port(),
        9090
    );
}

#[test]
fn pod_ip_unknown_and_empty_services() {
    let s = state();
    let up = s.resolve(sa("10.10.1.2:5000")).unwrap();
    assert_eq!(up.workload.name, "client");
    assert_eq!(up.target, sa("10.10.1.2:5000"));
    assert_eq!(up.service_host, None);
    assert!(s.resolve(sa("1.1.1.1:443")).is_none(), "passthrough");
    assert!(
        s.resolve(sa("10.96.0.10:81")).is_none(),
        "not a service port"
    );
    assert!(
        s.resolve(sa("10.96.0.10:53")).is_none(),
        "UDP ports are not proxied"
    );
    assert!(s.resolve(sa("10.96.0.11:80")).is_none(), "no endpoints");
    assert_eq!(s.service_by_vip(sa("10.96.0.11:80")).unwrap().name, "empty");
    assert!(s
        .warnings()
        .iter()
        .any(|w| w.contains("services[1] (demo/empty): selector matches no workload")));
    assert!(s
        .warnings()
        .iter()
        .any(|w| w.contains("53/Udp is not proxied")));
}

#[test]
fn certificate_paths_are_exposed() {
    let s = config::parse_state(
        "certificates:\n  roots: /etc/ambit/root.pem\n  identities:\n  - {identity: spiffe://cluster.local/ns/demo/sa/client, certChain: /c.pem, key: /k.pem}\n",
    )
    .unwrap();
    let c = s.certificates().unwrap();
    assert_eq!(c.roots, std::path::Path::new("/etc/ambit/root.pem"));
    let id = mesh_identity::Identity::new("cluster.local", "demo", "client");
    assert_eq!(
        c.for_identity(&id).unwrap().key,
        std::path::Path::new("/k.pem")
    );
    assert!(state().certificates().is_none());
    assert!(ProxyState::empty().workloads().is_empty());
}
