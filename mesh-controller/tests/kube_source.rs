//! The Kubernetes source against a real kube-apiserver (tests/src/kube.rs;
//! `cargo xtask kube-apiserver` builds it): objects created, changed and
//! deleted through the API appear in the published Snapshot within a
//! second; a bad AuthorizationPolicy is refused with its name and field
//! while the rest keeps serving, and the refusal shows on the controller's
//! `/debug/config_error`. The same for the L7 kinds (Gateway, HTTPRoute,
//! RequestAuthentication, EnvoyFilter, Telemetry, ServiceEntry).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::Client;
use mesh_controller::source::kube::{KubeConfigSource, KubeSource, ISTIO_KINDS};
use mesh_controller::source::Snapshot;
use mesh_controller::{Controller, ControllerOptions};
use mesh_tests::kube::KubeApiServer;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const WITHIN: Duration = Duration::from_secs(1);

/// Waits until the published snapshot satisfies `f`, at most [`WITHIN`]
/// after `since`.
async fn expect(
    rx: &mut watch::Receiver<Arc<Snapshot>>,
    what: &str,
    since: Instant,
    f: impl Fn(&Snapshot) -> bool,
) -> Result<()> {
    let budget = WITHIN.saturating_sub(since.elapsed());
    let r = tokio::time::timeout(budget, rx.wait_for(|s| f(s)))
        .await
        .map(|r| r.map(|_| ()));
    match r {
        Ok(Ok(())) => {
            eprintln!(
                "  {what}: in the snapshot {:?} after the request",
                since.elapsed()
            );
            Ok(())
        }
        Ok(Err(_)) => bail!("{what}: the source stopped"),
        Err(_) => bail!(
            "{what}: not in the snapshot within {WITHIN:?}; last: {:#?}",
            rx.borrow()
        ),
    }
}

fn api<K>(client: &Client, ns: &str) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    Api::namespaced(client.clone(), ns)
}

fn istio(client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    let k = ISTIO_KINDS
        .iter()
        .find(|k| k.kind == kind)
        .expect("a watched kind");
    Api::namespaced_with(client.clone(), ns, &k.api_resource())
}

async fn create_pod(client: &Client, ns: &str, name: &str, ip: &str) -> Result<()> {
    let pods: Api<Pod> = api(client, ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "srv"},
            "annotations": {"ambit.io/netns": format!("/run/netns/{name}")}},
        "spec": {"nodeName": "node-a", "serviceAccountName": "server",
            "containers": [{"name": "app", "image": "srv"}]},
    }))?;
    pods.create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating pod {name}"))?;
    // A 1.20 server without kubelets: the test sets the status.
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"podIP": ip, "phase": "Running"}})),
    )
    .await
    .with_context(|| format!("setting the status of pod {name}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_created_through_the_api_appear_in_the_snapshot() -> Result<()> {
    let server = KubeApiServer::start().await?;
    let client = server.client().await?;
    server
        .create_namespace("demo", &[("istio.io/dataplane-mode", "ambient")])
        .await?;
    let (mut rx, errors) = KubeSource::spawn(client.clone(), KubeSource::DEFAULT_DEBOUNCE).await?;
    assert!(rx.borrow().namespaces["demo"].labels["istio.io/dataplane-mode"] == "ambient");
    let v0 = rx.borrow().version;

    // A pod (status set through the status subresource).
    let t = Instant::now();
    create_pod(&client, "demo", "srv-1", "10.10.1.2").await?;
    expect(&mut rx, "pod srv-1 with its IP", t, |s| {
        s.pods.iter().any(|p| {
            p.name == "srv-1"
                && p.ip.as_deref() == Some("10.10.1.2")
                && p.node.as_deref() == Some("node-a")
                && p.service_account == "server"
                && p.netns.as_deref() == Some("/run/netns/srv-1")
                && p.labels.get("app").map(String::as_str) == Some("srv")
        })
    })
    .await?;
    assert!(rx.borrow().version > v0);

    // A service.
    let t = Instant::now();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "srv", "namespace": "demo"},
        "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "srv"},
            "ports": [{"name": "tcp", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    }))?;
    api::<Service>(&client, "demo")
        .create(&PostParams::default(), &svc)
        .await?;
    expect(&mut rx, "service srv", t, |s| {
        s.services.iter().any(|x| {
            x.name == "srv" && x.addresses == ["10.96.0.10"] && x.ports[0].target_port == Some(8080)
        })
    })
    .await?;

    // Its EndpointSlice; then a second (ready) endpoint: scale-up.
    let slices: Api<EndpointSlice> = api(&client, "demo");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "srv-abc", "namespace": "demo",
            "labels": {"kubernetes.io/service-name": "srv"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.10.1.2"], "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "name": "srv-1", "namespace": "demo"}}],
        "ports": [{"name": "tcp", "port": 8080, "protocol": "TCP"}],
    }))?;
    let t = Instant::now();
    slices.create(&PostParams::default(), &slice).await?;
    expect(&mut rx, "endpoints of srv", t, |s| {
        s.endpoints.get("demo/srv") == Some(&vec!["10.10.1.2".to_string()])
    })
    .await?;
    let t = Instant::now();
    slices
        .patch(
            "srv-abc",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [
                {"addresses": ["10.10.1.2"], "conditions": {"ready": true}},
                {"addresses": ["10.10.1.3"], "conditions": {"ready": true}},
            ]})),
        )
        .await?;
    expect(&mut rx, "srv scaled to two endpoints", t, |s| {
        s.endpoints.get("demo/srv").map(Vec::len) == Some(2)
    })
    .await?;

    // Istio resources: an AuthorizationPolicy (v1) and a PeerAuthentication
    // written at v1beta1 (read at v1).
    let t = Instant::now();
    let ap: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-all", "namespace": "demo"},
        "spec": {"action": "DENY", "rules": [{}]},
    }))?;
    istio(&client, "demo", "AuthorizationPolicy")
        .create(&PostParams::default(), &ap)
        .await?;
    expect(&mut rx, "AuthorizationPolicy deny-all", t, |s| {
        s.policies.iter().any(|(p, _)| p.name() == "deny-all")
    })
    .await?;
    let t = Instant::now();
    let pa_v1beta1 = mesh_controller::source::kube::IstioKind {
        version: "v1beta1",
        ..ISTIO_KINDS[0]
    };
    let pa: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1beta1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "demo"},
        "spec": {"mtls": {"mode": "STRICT"}},
    }))?;
    Api::<DynamicObject>::namespaced_with(client.clone(), "demo", &pa_v1beta1.api_resource())
        .create(&PostParams::default(), &pa)
        .await?;
    expect(&mut rx, "PeerAuthentication default", t, |s| {
        s.policies
            .iter()
            .any(|(p, _)| p.kind() == "PeerAuthentication" && p.name() == "default")
    })
    .await?;

    // Namespace labels: unlabel, then a waypoint label.
    let t = Instant::now();
    Api::<Namespace>::all(client.clone())
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "istio.io/dataplane-mode": null, "istio.io/use-waypoint": "waypoint"}}})),
        )
        .await?;
    expect(&mut rx, "namespace demo relabelled", t, |s| {
        let l = &s.namespaces["demo"].labels;
        !l.contains_key("istio.io/dataplane-mode")
            && l.get("istio.io/use-waypoint").map(String::as_str) == Some("waypoint")
    })
    .await?;

    // Deletions.
    let t = Instant::now();
    istio(&client, "demo", "AuthorizationPolicy")
        .delete("deny-all", &DeleteParams::default())
        .await?;
    api::<Pod>(&client, "demo")
        .delete("srv-1", &DeleteParams::default().grace_period(0))
        .await?;
    expect(&mut rx, "pod and policy deleted", t, |s| {
        !s.pods.iter().any(|p| p.name == "srv-1")
            && !s.policies.iter().any(|(p, _)| p.name() == "deny-all")
    })
    .await?;
    assert_eq!(*errors.borrow(), None, "no config error expected");
    Ok(())
}

/// A Service's own `istio.io/use-waypoint` label, in a namespace without
/// one: kept (alone of its labels), followed through edits, and the
/// waypoint it names is declared (token, identity, workload for every node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_use_waypoint_label_is_kept_and_declares_its_waypoint() -> Result<()> {
    let server = KubeApiServer::start().await?;
    let client = server.client().await?;
    server
        .create_namespace("demo", &[("istio.io/dataplane-mode", "ambient")])
        .await?;
    create_pod(&client, "demo", "reviews-wp", "10.10.1.9").await?;
    let (mut rx, errors) = KubeSource::spawn(client.clone(), KubeSource::DEFAULT_DEBOUNCE).await?;
    assert!(
        rx.borrow().waypoints().is_empty(),
        "nothing names a waypoint yet"
    );

    let t = Instant::now();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "reviews", "namespace": "demo", "labels": {
            "istio.io/use-waypoint": "reviews-wp", "app": "reviews"}},
        "spec": {"clusterIP": "10.96.0.20", "selector": {"app": "reviews"},
            "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}]},
    }))?;
    let services = api::<Service>(&client, "demo");
    services.create(&PostParams::default(), &svc).await?;
    let only_waypoint_label = |value: &str| {
        std::collections::BTreeMap::from([("istio.io/use-waypoint".to_string(), value.to_string())])
    };
    let wanted = only_waypoint_label("reviews-wp");
    expect(&mut rx, "service reviews with its waypoint label", t, |s| {
        s.services
            .iter()
            .any(|x| x.name == "reviews" && x.labels == wanted)
    })
    .await?;
    let declared: Vec<(String, String, String)> = rx
        .borrow()
        .waypoints()
        .into_iter()
        .map(|w| (w.namespace, w.name, w.service_account))
        .collect();
    assert_eq!(
        declared,
        [("demo".into(), "reviews-wp".into(), "server".into())]
    );

    // `none`: the Service opts out; nothing declares the waypoint any more.
    let t = Instant::now();
    services
        .patch(
            "reviews",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"istio.io/use-waypoint": "none"}}})),
        )
        .await?;
    let wanted = only_waypoint_label("none");
    expect(&mut rx, "service reviews opted out", t, |s| {
        s.services
            .iter()
            .any(|x| x.name == "reviews" && x.labels == wanted)
            && s.waypoints().is_empty()
    })
    .await?;

    // Label removed: the Service keeps no labels.
    let t = Instant::now();
    services
        .patch(
            "reviews",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"istio.io/use-waypoint": null}}})),
        )
        .await?;
    expect(&mut rx, "service reviews unlabelled", t, |s| {
        s.services
            .iter()
            .any(|x| x.name == "reviews" && x.labels.is_empty())
    })
    .await?;
    assert_eq!(*errors.borrow(), None, "no config error expected");
    Ok(())
}

/// GET `path` on the status server; the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or(out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_authorization_policy_refused_with_name_and_field_rest_serves() -> Result<()> {
    let server = KubeApiServer::start().await?;
    let client = server.client().await?;
    server
        .create_namespace("demo", &[("istio.io/dataplane-mode", "ambient")])
        .await?;
    create_pod(&client, "demo", "srv-1", "10.10.1.2").await?;
    let mut opts = ControllerOptions::kube(KubeConfigSource::Kubeconfig(server.kubeconfig_path()));
    opts.listen = "127.0.0.1:0".parse()?;
    opts.status_listen = "127.0.0.1:0".parse()?;
    let controller = Controller::start(opts).await?;
    let mut errors = controller.config_errors.clone();
    assert_eq!(*errors.borrow(), None);
    // The same source on its own, to look at what it publishes.
    let (mut rx, _) = KubeSource::spawn(client.clone(), KubeSource::DEFAULT_DEBOUNCE).await?;

    let aps = istio(&client, "demo", "AuthorizationPolicy");
    let good: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "allow-client", "namespace": "demo"},
        "spec": {"action": "ALLOW", "rules": [{"from": [{"source": {
            "principals": ["cluster.local/ns/demo/sa/client"]}}]}]},
    }))?;
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "broken", "namespace": "demo"},
        "spec": {"action": "DENYY", "rules": [{}]},
    }))?;
    let t = Instant::now();
    aps.create(&PostParams::default(), &good).await?;
    aps.create(&PostParams::default(), &bad).await?;
    let msg = tokio::time::timeout(WITHIN, errors.wait_for(|e| e.is_some()))
        .await
        .context("no config error within a second")??
        .clone()
        .unwrap_or_default();
    eprintln!("  refused after {:?}: {msg}", t.elapsed());
    assert!(
        msg.contains("AuthorizationPolicy demo/broken") && msg.contains("field spec.action"),
        "{msg}"
    );
    assert!(!msg.contains("allow-client"), "{msg}");
    let body = http_get(controller.status_addr, "/debug/config_error").await?;
    assert!(body.contains("AuthorizationPolicy demo/broken"), "{body}");

    expect(&mut rx, "the good policy, not the bad one", t, |s| {
        s.policies.iter().any(|(p, _)| p.name() == "allow-client")
            && !s.policies.iter().any(|(p, _)| p.name() == "broken")
    })
    .await?;

    // The rest keeps serving and keeps changing: a new pod still arrives.
    let t = Instant::now();
    create_pod(&client, "demo", "srv-2", "10.10.1.3").await?;
    expect(&mut rx, "pod srv-2 beside the refused policy", t, |s| {
        s.pods.iter().any(|p| p.name == "srv-2")
    })
    .await?;
    // Fixing the bad object clears the error.
    let t = Instant::now();
    aps.patch(
        "broken",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"action": "DENY"}})),
    )
    .await?;
    tokio::time::timeout(WITHIN, errors.wait_for(|e| e.is_none()))
        .await
        .context("error not cleared within a second after the fix")??;
    eprintln!("  cleared after {:?}", t.elapsed());
    expect(&mut rx, "the fixed policy", t, |s| {
        s.policies.iter().any(|(p, _)| p.name() == "broken")
    })
    .await?;
    Ok(())
}

/// Creates `spec` as `kind` written at `version` (the source reads the
/// kind at its own version; the API server converts).
async fn create_l7(
    client: &Client,
    kind: &str,
    version: &'static str,
    name: &str,
    spec: serde_json::Value,
) -> Result<()> {
    let k = mesh_controller::source::kube::IstioKind {
        version,
        ..*ISTIO_KINDS
            .iter()
            .find(|k| k.kind == kind)
            .with_context(|| format!("{kind} is not watched"))?
    };
    let o: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{}/{}", k.group, version), "kind": kind,
        "metadata": {"name": name, "namespace": "demo"},
        "spec": spec,
    }))?;
    Api::<DynamicObject>::namespaced_with(client.clone(), "demo", &k.api_resource())
        .create(&PostParams::default(), &o)
        .await
        .with_context(|| format!("creating {kind} {name}"))?;
    Ok(())
}

fn has_l7(s: &Snapshot, kind: &str, name: &str) -> bool {
    s.l7.iter().any(|o| o.kind == kind && o.name == name)
}

/// The L7 kinds beyond VirtualService/DestinationRule: one of each created
/// through the API (some at an older version) reaches the Snapshot; a bad
/// Telemetry is refused with its name and field while the others stay, and
/// fixing it brings it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_l7_kinds_appear_and_a_bad_one_is_refused_with_name_and_field() -> Result<()> {
    let server = KubeApiServer::start().await?;
    let client = server.client().await?;
    server.create_namespace("demo", &[]).await?;
    let (mut rx, mut errors) =
        KubeSource::spawn(client.clone(), KubeSource::DEFAULT_DEBOUNCE).await?;

    let rate_limit = json!({"configPatches": [{"applyTo": "HTTP_FILTER",
        "match": {"context": "SIDECAR_INBOUND"},
        "patch": {"operation": "INSERT_BEFORE", "value": {
            "name": "envoy.filters.http.local_ratelimit",
            "typed_config": {
                "@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
                "type_url": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                "value": {"stat_prefix": "rl", "token_bucket": {
                    "max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "60s"},
                    "response_headers_to_add": [{"header": {"key": "x-rl", "value": "1"}}]}}}}}]});
    let objects = [
        (
            "Gateway",
            "v1beta1",
            "ingress",
            json!({"selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]}),
        ),
        (
            "HTTPRoute",
            "v1",
            "reviews",
            json!({
            "parentRefs": [{"name": "reviews", "kind": "Service", "group": ""}],
            "rules": [{"backendRefs": [{"name": "reviews", "port": 9080}]}]}),
        ),
        (
            "RequestAuthentication",
            "v1",
            "jwt",
            json!({"jwtRules": [{
            "issuer": "testing@secure.istio.io",
            "jwksUri": "https://keys.example.com/jwks.json",
            "outputPayloadToHeader": "x-jwt-payload"}]}),
        ),
        ("EnvoyFilter", "v1alpha3", "rate-limit", rate_limit),
        (
            "Telemetry",
            "v1alpha1",
            "sampling",
            json!({"tracing": [{"randomSamplingPercentage": 10}],
            "accessLogging": [{"providers": [{"name": "envoy"}]}]}),
        ),
        (
            "ServiceEntry",
            "v1",
            "external",
            json!({"hosts": ["api.example.com"],
            "ports": [{"number": 443, "name": "https", "protocol": "TLS"}], "resolution": "DNS"}),
        ),
    ];
    for (kind, version, name, spec) in objects.iter().cloned() {
        let t = Instant::now();
        create_l7(&client, kind, version, name, spec).await?;
        expect(&mut rx, &format!("{kind} demo/{name}"), t, |s| {
            has_l7(s, kind, name)
        })
        .await?;
    }
    // Read at the watched version, whatever version it was written at.
    {
        let snap = rx.borrow();
        let gw = snap
            .l7
            .iter()
            .find(|o| o.kind == "Gateway")
            .context("Gateway")?;
        assert_eq!(gw.api_version, "networking.istio.io/v1");
        let ef = snap
            .l7
            .iter()
            .find(|o| o.kind == "EnvoyFilter")
            .context("EnvoyFilter")?;
        assert_eq!(ef.api_version, "networking.istio.io/v1alpha3");
    }
    assert_eq!(*errors.borrow(), None, "no config error expected");

    // A bad Telemetry: refused with its name and field, the others stay.
    let t = Instant::now();
    create_l7(
        &client,
        "Telemetry",
        "v1",
        "broken",
        json!({"tracing": [{"randomSamplingPercentage": 150}]}),
    )
    .await?;
    let msg = tokio::time::timeout(WITHIN, errors.wait_for(|e| e.is_some()))
        .await
        .context("no config error within a second")??
        .clone()
        .unwrap_or_default();
    eprintln!("  refused after {:?}: {msg}", t.elapsed());
    assert!(
        msg.contains("Telemetry demo/broken")
            && msg.contains("spec.tracing[0].randomSamplingPercentage"),
        "{msg}"
    );
    assert!(!msg.contains("sampling:"), "{msg}");
    {
        let snap = rx.borrow();
        assert!(!has_l7(&snap, "Telemetry", "broken"));
        for (kind, _, name, _) in &objects {
            assert!(
                has_l7(&snap, kind, name),
                "{kind} {name} dropped beside the bad one"
            );
        }
    }
    // Fixing it clears the error and brings it in.
    let t = Instant::now();
    let telemetry = ISTIO_KINDS
        .iter()
        .find(|k| k.kind == "Telemetry")
        .context("Telemetry watched")?;
    Api::<DynamicObject>::namespaced_with(client.clone(), "demo", &telemetry.api_resource())
        .patch(
            "broken",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"tracing": [{"randomSamplingPercentage": 50}]}})),
        )
        .await?;
    tokio::time::timeout(WITHIN, errors.wait_for(|e| e.is_none()))
        .await
        .context("error not cleared within a second after the fix")??;
    expect(&mut rx, "the fixed Telemetry", t, |s| {
        has_l7(s, "Telemetry", "broken")
    })
    .await?;
    Ok(())
}

/// Kubernetes-mode CA authentication: mesh-node's projected token, bound to
/// its pod, is verified by TokenReview and the pod's node must be the one
/// claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_token_verified_by_token_review() -> Result<()> {
    use k8s_openapi::api::authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec,
    };
    use k8s_openapi::api::core::v1::ServiceAccount;
    use mesh_controller::ca::KubeNodeAuthenticator;

    let server = KubeApiServer::start().await?;
    let client = server.client().await?;
    server.create_namespace("ambit-system", &[]).await?;
    let sas: Api<ServiceAccount> = api(&client, "ambit-system");
    for name in ["mesh-node", "intruder"] {
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        sas.create(&PostParams::default(), &sa).await?;
    }
    let pods: Api<Pod> = api(&client, "ambit-system");
    let mut uids = Vec::new();
    for (name, sa) in [("mesh-node-a", "mesh-node"), ("intruder-a", "intruder")] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": "node-a", "serviceAccountName": sa,
                "containers": [{"name": "n", "image": "mesh-node"}]},
        }))?;
        let created = pods.create(&PostParams::default(), &pod).await?;
        uids.push(created.metadata.uid.unwrap_or_default());
    }
    let token_for = |sa: &'static str, pod: &'static str, uid: String| {
        let sas = sas.clone();
        async move {
            let req = TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences: Some(vec!["ambit".into()]),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(pod.into()),
                        uid: Some(uid),
                    }),
                    expiration_seconds: Some(3600),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let r = sas
                .create_token_request(sa, &PostParams::default(), &req)
                .await
                .with_context(|| format!("TokenRequest for {sa}"))?;
            Ok::<_, anyhow::Error>(r.status.and_then(|s| s.token).unwrap_or_default())
        }
    };
    let token = token_for("mesh-node", "mesh-node-a", uids[0].clone()).await?;
    let intruder = token_for("intruder", "intruder-a", uids[1].clone()).await?;
    let auth = KubeNodeAuthenticator::new(
        client.clone(),
        vec![("ambit-system".into(), "mesh-node".into())],
        vec!["ambit".into()],
    );
    assert_eq!(auth.node_of(&token, "node-a").await?, "node-a");
    let e = auth.node_of(&token, "node-b").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("not on node-b"), "{e:?}");
    let e = auth.node_of(&intruder, "node-a").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = auth.node_of("not-a-token", "node-a").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    Ok(())
}
