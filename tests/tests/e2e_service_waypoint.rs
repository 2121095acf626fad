//! A Service picks its waypoint with its own `istio.io/use-waypoint`
//! label, end to end on the testbed with mesh-controller (folder source,
//! xDS, CA) and the waypoint binary in xDS mode:
//!
//! * namespace `plain` names no waypoint; its Service `reviews` is labelled
//!   `istio.io/use-waypoint: plain-wp` and goes through that waypoint (the
//!   VirtualService's header routing, which only the waypoint applies,
//!   proves it), while `details` beside it goes direct (its VirtualService
//!   would abort every request with 418 if the waypoint saw it);
//! * namespace `shop` names `shop-wp`; `cart` goes through it (418 from its
//!   abort fault) and `orders`, labelled `istio.io/use-waypoint: none`, goes
//!   direct (200 from the pod, despite the same fault).
//!
//! The client's node proxy log says which path each connection took
//! ("outbound connection complete (HBONE via waypoint)" or "(HBONE)"), and
//! the waypoint's log lists every tunnel it accepted, by target VIP.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use mesh_tests::curl;
use mesh_tests::mesh::{binary, LocalMesh, Service};
use mesh_tests::testbed::PodSpec;
use mesh_tests::wait::{eventually, within};

const PORT: u16 = 9080;
/// How long a waypoint may take, once ready, to apply its first L7 config.
const IN_FORCE_WITHIN: Duration = Duration::from_secs(5);
/// Answers in a row that make routing "in force": with two reviews pods,
/// balancing alone gives ten in a row from one of them with p = 2^-10.
const IN_A_ROW: usize = 10;

/// One Service of a scenario: its pods (name, node, version) are labelled
/// `app: <name>`.
struct Svc {
    name: &'static str,
    vip: Ipv4Addr,
    use_waypoint: Option<&'static str>,
    pods: &'static [(&'static str, &'static str, &'static str)],
}

struct Scenario {
    mesh: LocalMesh,
    waypoint: usize,
}

/// Namespace `ns` (ambient; labelled `istio.io/use-waypoint:
/// <ns_waypoint>` when given) with the `client` pod on node-a, the
/// waypoint pod `waypoint` on node-b (not enrolled, as waypoints are), the
/// services and their HTTP pods, the L7 resources in the controller's
/// folder, and the waypoint running in xDS mode.
fn start(
    ns: &str,
    ns_waypoint: Option<&str>,
    waypoint: &str,
    services: &[Svc],
    l7: &str,
) -> Scenario {
    let mut mesh = LocalMesh::new(&["node-a", "node-b"]).expect("testbed (needs root)");
    mesh.namespace(ns, true);
    if let Some(wp) = ns_waypoint {
        mesh.namespace_label(ns, "istio.io/use-waypoint", wp);
    }
    mesh.add_pod("node-a", PodSpec::new("client", ns, "client"))
        .expect("client pod");
    mesh.add_pod(
        "node-b",
        PodSpec::new(waypoint, ns, waypoint)
            .label("istio.io/dataplane-mode", "none")
            .label("gateway.istio.io/managed", "istio.io-mesh-controller"),
    )
    .expect("waypoint pod");
    for s in services {
        for (pod, node, version) in s.pods {
            mesh.add_pod(
                node,
                PodSpec::new(pod, ns, s.name)
                    .label("app", s.name)
                    .label("version", version),
            )
            .expect("service pod");
        }
        mesh.add_service(Service {
            name: s.name.into(),
            namespace: ns.into(),
            vip: s.vip,
            port: PORT,
            target_port: PORT,
            selector: BTreeMap::from([("app".into(), s.name.into())]),
            labels: s
                .use_waypoint
                .map(|wp| ("istio.io/use-waypoint".to_string(), wp.to_string()))
                .into_iter()
                .collect(),
        });
    }
    mesh.write_folder_file("l7.yaml", l7)
        .expect("L7 into the folder");
    mesh.use_controller().expect("mesh-controller");
    mesh.start_node("node-a", &[]).expect("mesh-node on node-a");
    mesh.start_node("node-b", &[]).expect("mesh-node on node-b");
    for s in services {
        for (pod, _, _) in s.pods {
            let mut cmd = Command::new(binary("ambit-probe").expect("ambit-probe built"));
            cmd.args(["http", "--name", pod, "--port", &PORT.to_string()]);
            let idx = mesh
                .tb
                .spawn_in_pod(pod, &format!("{pod}:http"), cmd)
                .expect("spawn the HTTP app");
            mesh.tb
                .with_proc(idx, |p| {
                    p.wait_for_line("listening", Duration::from_secs(10))
                })
                .expect("proc")
                .expect("the HTTP app listens");
        }
    }
    // Waits for the token the controller issues only to the waypoints it
    // finds declared: for `plain-wp`, by the Service label alone.
    let waypoint = mesh
        .start_waypoint_xds(waypoint, ns, &[])
        .unwrap_or_else(|e| panic!("waypoint {ns}/{waypoint}: {e:#}"));
    Scenario { mesh, waypoint }
}

impl Scenario {
    /// One GET from the client: `"<status> <x-served-by>"`, or the error.
    fn get(&self, vip: Ipv4Addr, headers: &[&str]) -> String {
        curl::served_by(
            &self.mesh.tb,
            "client",
            &format!("http://{vip}:{PORT}/"),
            headers,
        )
    }

    /// Polls until [`IN_A_ROW`] answers in a row are `want`, starting within
    /// [`IN_FORCE_WITHIN`]; panics with the last answer and the logs.
    fn until_in_a_row(&self, vip: Ipv4Addr, headers: &[&str], want: &str) {
        let mut last = String::new();
        if within(IN_FORCE_WITHIN, || {
            last = self.get(vip, headers);
            last == want && (1..IN_A_ROW).all(|_| self.get(vip, headers) == want)
        })
        .is_some()
        {
            return;
        }
        panic!(
            "{vip} with {headers:?}: never {IN_A_ROW} × {want:?} in a row; last {last:?}\n\
             waypoint:\n{}",
            self.waypoint_log().join("\n")
        );
    }

    /// `n` answers, every one `want`.
    fn all(&self, vip: Ipv4Addr, headers: &[&str], want: &str, n: usize) {
        for i in 0..n {
            assert_eq!(self.get(vip, headers), want, "request {i} to {vip}");
        }
    }

    fn waypoint_log(&self) -> Vec<String> {
        self.mesh
            .tb
            .with_proc(self.waypoint, |p| p.lines())
            .unwrap_or_default()
    }

    /// Node-a's (the client's) outbound completions for `host`.
    fn outbound_lines(&self, host: &str) -> Vec<String> {
        self.mesh
            .node_log("node-a")
            .expect("node-a log")
            .into_iter()
            .filter(|l| l.contains("outbound connection complete") && l.contains(host))
            .collect()
    }

    /// The client's node proxy sent `host` to `waypoint` (`ns/name`), and
    /// never directly.
    fn assert_via_waypoint(&self, host: &str, waypoint: &str) {
        let lines = self.wait_outbound(host);
        assert!(
            lines
                .iter()
                .all(|l| l.contains("(HBONE via waypoint)") && l.contains(waypoint)),
            "{host}: expected every connection via {waypoint}:\n{}",
            lines.join("\n")
        );
    }

    /// The client's node proxy sent `host` straight to a pod (HBONE), never
    /// to a waypoint, and the waypoint accepted no tunnel to `vip`.
    fn assert_direct(&self, host: &str, vip: Ipv4Addr) {
        let lines = self.wait_outbound(host);
        assert!(
            lines
                .iter()
                .all(|l| l.contains("outbound connection complete (HBONE)")),
            "{host}: expected every connection direct:\n{}",
            lines.join("\n")
        );
        let target = format!("target={vip}:{PORT}");
        let seen: Vec<String> = self
            .waypoint_log()
            .into_iter()
            .filter(|l| l.contains(&target))
            .collect();
        assert!(
            seen.is_empty(),
            "the waypoint saw {vip}:\n{}",
            seen.join("\n")
        );
    }

    /// The outbound lines for `host`, waiting (a connection is logged as it
    /// ends) until there is at least one.
    fn wait_outbound(&self, host: &str) -> Vec<String> {
        eventually(Duration::from_secs(5), || {
            Some(self.outbound_lines(host)).filter(|l| !l.is_empty())
        })
        .unwrap_or_else(|| panic!("node-a logged no outbound connection to {host}"))
        .0
    }
}

const PLAIN_REVIEWS: Ipv4Addr = Ipv4Addr::new(10, 96, 2, 1);
const PLAIN_DETAILS: Ipv4Addr = Ipv4Addr::new(10, 96, 2, 2);

/// reviews: jason → v2, everyone else → v1. details: every request aborted
/// with 418 — by a waypoint; a direct call never sees it.
const PLAIN_L7: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: plain}
spec:
  hosts: [reviews.plain.svc.cluster.local]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews.plain.svc.cluster.local, subset: v2}
  - route:
    - destination: {host: reviews.plain.svc.cluster.local, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: plain}
spec:
  host: reviews.plain.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: details, namespace: plain}
spec:
  hosts: [details.plain.svc.cluster.local]
  http:
  - fault:
      abort: {percentage: {value: 100}, httpStatus: 418}
    route:
    - destination: {host: details.plain.svc.cluster.local}
"#;

#[test]
fn service_label_in_an_unlabelled_namespace_uses_the_waypoint_its_neighbour_does_not() {
    let s = start(
        "plain",
        None,
        "plain-wp",
        &[
            Svc {
                name: "reviews",
                vip: PLAIN_REVIEWS,
                use_waypoint: Some("plain-wp"),
                pods: &[
                    ("reviews-v1", "node-a", "v1"),
                    ("reviews-v2", "node-b", "v2"),
                ],
            },
            Svc {
                name: "details",
                vip: PLAIN_DETAILS,
                use_waypoint: None,
                pods: &[("details-v1", "node-b", "v1")],
            },
        ],
        PLAIN_L7,
    );
    // Header routing: only the waypoint does it.
    s.until_in_a_row(PLAIN_REVIEWS, &["end-user: jason"], "200 reviews-v2");
    s.all(PLAIN_REVIEWS, &[], "200 reviews-v1", IN_A_ROW);
    s.assert_via_waypoint("reviews.plain.svc.cluster.local", "plain/plain-wp");
    // The waypoint has plain's L7 resources (details' abort among them),
    // yet details answers from its pod: the waypoint is not on its path.
    s.all(PLAIN_DETAILS, &[], "200 details-v1", IN_A_ROW);
    s.assert_direct("details.plain.svc.cluster.local", PLAIN_DETAILS);
}

const SHOP_CART: Ipv4Addr = Ipv4Addr::new(10, 96, 3, 1);
const SHOP_ORDERS: Ipv4Addr = Ipv4Addr::new(10, 96, 3, 2);

/// Both services abort every request with 418 — when a waypoint serves them.
const SHOP_L7: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart.shop.svc.cluster.local]
  http:
  - fault:
      abort: {percentage: {value: 100}, httpStatus: 418}
    route:
    - destination: {host: cart.shop.svc.cluster.local}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: shop}
spec:
  hosts: [orders.shop.svc.cluster.local]
  http:
  - fault:
      abort: {percentage: {value: 100}, httpStatus: 418}
    route:
    - destination: {host: orders.shop.svc.cluster.local}
"#;

#[test]
fn service_label_none_opts_out_of_the_namespace_waypoint() {
    let s = start(
        "shop",
        Some("shop-wp"),
        "shop-wp",
        &[
            Svc {
                name: "cart",
                vip: SHOP_CART,
                use_waypoint: None,
                pods: &[("cart-v1", "node-b", "v1")],
            },
            Svc {
                name: "orders",
                vip: SHOP_ORDERS,
                use_waypoint: Some("none"),
                pods: &[("orders-v1", "node-b", "v1")],
            },
        ],
        SHOP_L7,
    );
    // The namespace's waypoint serves cart: its fault applies.
    s.until_in_a_row(SHOP_CART, &[], "418");
    s.assert_via_waypoint("cart.shop.svc.cluster.local", "shop/shop-wp");
    // orders opted out: straight to its pod, the fault never applied.
    s.all(SHOP_ORDERS, &[], "200 orders-v1", IN_A_ROW);
    s.assert_direct("orders.shop.svc.cluster.local", SHOP_ORDERS);
}
