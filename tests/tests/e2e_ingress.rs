//! The ingress gateway end to end on the testbed: `waypoint --role
//! gateway` in the `istio-ingressgateway` pod (`istio-system`, labels
//! `istio: ingressgateway`, not enrolled) on node-a, the backends on
//! node-b in ambient namespaces, and an `outside` client pod in a namespace
//! that has not opted in, sending plain HTTP/HTTPS to the gateway pod's IP
//! as traffic entering the cluster would. The gateway applies the seeds'
//! Gateways and VirtualServices and reaches the pods over HBONE with its
//! own identity, through their node proxy.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use mesh_tests::bookinfo::{ingress_pod, Backend, Bookinfo, INGRESS_POD};
use mesh_tests::curl::{Curl, Reply};
use mesh_tests::http_app::Answer;
use mesh_tests::mesh::Service;
use mesh_tests::seed;
use mesh_tests::testbed::PodSpec;

const OUTSIDE: &str = "outside";
const GATEWAY_IDENTITY: &str =
    "src.identity=spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway";

/// One request per upstream connection for `host`: the node proxy logs a
/// tunnel (with its source identity) when it ends, and the gateway would
/// otherwise keep it pooled. Not part of the seeds; it changes no routing.
fn one_request_per_connection(host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata: {{name: {host}-per-request}}\nspec:\n  host: {host}\n  \
         trafficPolicy:\n    connectionPool:\n      http: {{maxRequestsPerConnection: 1}}\n"
    )
}

/// Bookinfo with `backends`, the ingress pod on node-a, the outside client
/// on node-b and `extra` pods.
fn start(backends: &[Backend], extra: &[(&str, PodSpec, bool)]) -> Bookinfo {
    let mut pods = vec![
        ("node-a", ingress_pod(), false),
        ("node-b", PodSpec::new(OUTSIDE, OUTSIDE, "client"), false),
    ];
    pods.extend(extra.iter().cloned());
    Bookinfo::start_with(backends, &pods).expect("bookinfo testbed (needs root)")
}

fn gateway_ip(b: &Bookinfo) -> Ipv4Addr {
    b.mesh.tb.pod(INGRESS_POD).expect("ingress pod").ip
}

/// The pod the sample app says answered, from its JSON body.
fn served_by(r: &Reply) -> String {
    serde_json::from_str::<Answer>(&r.body)
        .map(|a| a.served_by)
        .unwrap_or_else(|e| panic!("not an app answer ({e}): {r:?}"))
}

/// curl in `pod` with `args`, the URL last; `Err` when curl itself fails
/// (connection, TLS verification).
fn curl_in(b: &Bookinfo, pod: &str, args: &[&str]) -> anyhow::Result<Reply> {
    let (url, opts) = args.split_last().expect("a URL");
    Curl::new(*url).args(opts).in_pod(&b.mesh.tb, pod)
}

fn curl(b: &Bookinfo, args: &[&str]) -> Reply {
    curl_in(b, OUTSIDE, args).unwrap_or_else(|e| panic!("curl {args:?}: {e:#}"))
}

/// Requests `pod`'s app logged, once its output has been read (the log
/// reader runs behind the answer by a moment).
fn seen(b: &Bookinfo, pod: &str) -> usize {
    std::thread::sleep(Duration::from_millis(300));
    b.requests_seen(pod).expect("server log")
}

/// The gateway process's log lines.
fn gateway_log(b: &Bookinfo, idx: usize) -> Vec<String> {
    b.mesh.tb.with_proc(idx, |p| p.lines()).expect("gateway")
}

/// SIGTERM: the gateway drains and exits.
fn stop_gateway(b: &Bookinfo, idx: usize) {
    let status = b
        .mesh
        .tb
        .with_proc(idx, |p| {
            p.signal(libc::SIGTERM);
            p.wait_timeout(Duration::from_secs(10))
        })
        .expect("gateway");
    assert!(status.is_some(), "the gateway did not exit on SIGTERM");
}

/// Waits for productpage's node proxy to log a tunnel from the gateway.
fn assert_tunnel_from_gateway(b: &Bookinfo, gw: usize) {
    let line = b
        .mesh
        .wait_node_log("node-b", GATEWAY_IDENTITY, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e:#}\ngateway log:\n{}", gateway_log(b, gw).join("\n")));
    // A tunnel the gateway ends by resetting the stream once it has its
    // response (the HBONE client does not half-close) is logged as a failed
    // relay; either way the node proxy accepted it from that identity.
    assert!(
        line.contains("inbound connection complete") || line.contains("inbound relay failed"),
        "{line}"
    );
}

/// The admin server of the gateway, from inside its pod.
fn admin(b: &Bookinfo, path: &str) -> Reply {
    let url = format!("http://127.0.0.1:15020{path}");
    curl_in(b, INGRESS_POD, &[&url]).unwrap_or_else(|e| panic!("admin {path}: {e:#}"))
}

/// Seeds 04+05 (bookinfo-gateway, `*` on port 80): the productpage paths
/// reach productpage on the other node over HBONE from the gateway's
/// identity; other paths are 404 at the gateway.
#[test]
fn bookinfo_gateway_routes_productpage_over_hbone() {
    let b = start(&[Backend::new("productpage", "v1", "node-b")], &[]);
    let creds = b.mesh.dir().join("credentials");
    std::fs::create_dir_all(&creds).expect("credentials dir");
    let l7 = format!(
        "{}---\n{}---\n{}",
        seed("04-"),
        seed("05-"),
        one_request_per_connection("productpage")
    );
    let gw = b
        .start_ingress(&l7, "bookinfo", &creds, &[])
        .expect("ingress gateway");
    let ip = gateway_ip(&b);

    for path in ["/productpage", "/static/x"] {
        let r = curl(&b, &[&format!("http://{ip}{path}")]);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(served_by(&r), "productpage-v1", "{path}");
        let a: Answer = serde_json::from_str(&r.body).expect("answer");
        assert_eq!(a.path, path);
    }
    let before = seen(&b, "productpage-v1");
    let r = curl(&b, &[&format!("http://{ip}/other")]);
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(
        seen(&b, "productpage-v1"),
        before,
        "/other must not reach productpage"
    );

    // One admin server for the gateway: ready, and the requests counted.
    assert_eq!(admin(&b, "/healthz/ready").status, 200);
    let m = admin(&b, "/metrics");
    assert_eq!(m.status, 200);
    let counted = |code: &str| {
        m.body
            .lines()
            .filter(|l| l.starts_with("istio_requests_total{"))
            .filter(|l| l.contains(&format!("response_code=\"{code}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(counted("200"), 2.0, "{}", m.body);
    assert_eq!(counted("404"), 1.0, "{}", m.body);

    // productpage's node proxy received the tunnel from the gateway's
    // identity (logged when it ends: one request per connection).
    assert_tunnel_from_gateway(&b, gw);
    stop_gateway(&b, gw);
}

/// Seeds 39+40 (my-gateway, example.com): HTTP is redirected to https,
/// HTTPS with SNI example.com presents the certificate of `credentialName:
/// tls-secret` and reaches `myapp`; a host the servers do not name is 404.
///
/// The seeds have no namespace: they are applied in `web`, where the test
/// creates the `myapp` service (port 80, as the VirtualService says, to the
/// app's 9080) and its pod.
#[test]
fn my_gateway_redirects_and_terminates_tls_for_example_com() {
    let myapp_pod = PodSpec::new("myapp", "web", "myapp").label("app", "myapp");
    let mut b = start(&[], &[("node-b", myapp_pod, true)]);
    b.mesh.add_service(Service {
        name: "myapp".into(),
        namespace: "web".into(),
        vip: Ipv4Addr::new(10, 96, 0, 50),
        port: 80,
        target_port: 9080,
        selector: BTreeMap::from([("app".into(), "myapp".into())]),
        labels: BTreeMap::new(),
    });
    b.mesh.write_config().expect("config");
    b.serve_http("myapp", &Backend::new("myapp", "v1", "node-b"))
        .expect("myapp");

    // A CA and example.com's certificate as the `tls-secret` Secret.
    let creds = b.mesh.dir().join("credentials");
    let ca_pem = b.mesh.dir().join("example-ca.pem");
    write_tls_secret(&creds.join("tls-secret"), "example.com", &ca_pem);
    let l7 = format!(
        "{}---\n{}---\n{}",
        seed("39-"),
        seed("40-"),
        one_request_per_connection("myapp")
    );
    let gw = b
        .start_ingress(&l7, "web", &creds, &[])
        .expect("ingress gateway");
    let ip = gateway_ip(&b);
    let resolve = format!("example.com:443:{ip}");
    let ca = ca_pem.display().to_string();

    // HTTP: 301 to https, same host and path; the app is not reached.
    let r = curl(
        &b,
        &["-H", "Host: example.com", &format!("http://{ip}/a?b=1")],
    );
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.header("location"), Some("https://example.com/a?b=1"));
    assert_eq!(seen(&b, "myapp"), 0);

    // HTTPS: curl verifies the chain against the test CA and the name
    // example.com, so the gateway presented the configured certificate.
    let r = curl(
        &b,
        &[
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "https://example.com/x",
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(served_by(&r), "myapp");
    assert_eq!(seen(&b, "myapp"), 1);
    // Not a certificate the system trusts: without the CA, curl refuses.
    let untrusted = curl_in(
        &b,
        OUTSIDE,
        &["--resolve", &resolve, "https://example.com/x"],
    );
    assert!(untrusted.is_err(), "{untrusted:?}");

    // A host no server names: 404 on both ports.
    let r = curl(&b, &["-H", "Host: other.com", &format!("http://{ip}/")]);
    assert_eq!(r.status, 404, "{r:?}");
    let r = curl(
        &b,
        &[
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-H",
            "Host: other.com",
            "https://example.com/",
        ],
    );
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(seen(&b, "myapp"), 1);

    // myapp was reached over HBONE from the gateway's identity.
    assert_tunnel_from_gateway(&b, gw);
    stop_gateway(&b, gw);
}

/// A DENY AuthorizationPolicy selecting the gateway workload (`istio:
/// ingressgateway` in the root namespace) is enforced at the gateway: 403
/// for `/admin*`, before routing; the rest still reaches productpage.
#[test]
fn authorization_policy_selecting_the_gateway_is_enforced_there() {
    let b = start(&[Backend::new("productpage", "v1", "node-b")], &[]);
    let creds = b.mesh.dir().join("credentials");
    std::fs::create_dir_all(&creds).expect("credentials dir");
    let deny = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
"#;
    let l7 = format!("{}---\n{}---\n{deny}", seed("04-"), seed("05-"));
    b.start_ingress(&l7, "bookinfo", &creds, &[])
        .expect("ingress gateway");
    let ip = gateway_ip(&b);
    let r = curl(&b, &[&format!("http://{ip}/admin/users")]);
    assert_eq!(r.status, 403, "{r:?}");
    let r = curl(&b, &[&format!("http://{ip}/productpage")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(served_by(&r), "productpage-v1");
    assert_eq!(seen(&b, "productpage-v1"), 1);
}

/// Writes `<dir>/tls.crt` and `tls.key` (a `kubernetes.io/tls` Secret as
/// mounted) for `host`, signed by a fresh CA written to `ca_pem`.
fn write_tls_secret(dir: &Path, host: &str, ca_pem: &Path) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ingress test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec![host.to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("leaf");
    std::fs::create_dir_all(dir).expect("secret dir");
    std::fs::write(dir.join("tls.crt"), leaf.pem()).expect("tls.crt");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("tls.key");
    std::fs::write(ca_pem, ca.pem()).expect("ca");
}
