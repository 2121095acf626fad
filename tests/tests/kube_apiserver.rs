//! Against a real kube-apiserver (tests/src/kube.rs; `cargo xtask
//! kube-apiserver` builds it): Ambit's CRDs install and are Established,
//! Istio resources and core objects are created, changed and deleted through
//! kube-rs, and a `watcher` sees each change within a second.
//!
//! The two tests run in parallel, each with its own etcd and API server.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Namespace, Pod, Service, ServiceAccount, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch,
    PatchParams, PostParams,
};
use kube::discovery::{Discovery, Scope};
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Client, Resource, ResourceExt};
use mesh_tests::kube::KubeApiServer;
use serde::Deserialize;
use serde_json::json;

/// How long a watcher may take to report a change.
const EVENT_WITHIN: Duration = Duration::from_secs(1);

const SEED_VS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/istio/07-000-virtualservice-reviews.yaml"
));

type Events<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

async fn start() -> Result<KubeApiServer> {
    let t = Instant::now();
    let server = KubeApiServer::start().await?;
    eprintln!(
        "kube-apiserver at {} ready with {} CRDs Established in {:?}",
        server.url(),
        server.crds().len(),
        t.elapsed()
    );
    Ok(server)
}

/// A watcher on `api` that has finished its initial list.
async fn watch<K>(api: Api<K>) -> Result<Events<K>>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut events = watcher(api, watcher::Config::default()).boxed();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.next().await {
            if matches!(e?, Event::InitDone) {
                return Ok(());
            }
        }
        bail!("watch stream ended during its initial list")
    })
    .await
    .context("watcher: no InitDone within 10 s")??;
    Ok(events)
}

/// Waits for an event that `want` accepts, skipping others, at most
/// [`EVENT_WITHIN`] after `since` (when the change was sent); returns how
/// long after `since` it arrived.
async fn expect<K>(
    events: &mut Events<K>,
    what: &str,
    since: Instant,
    want: impl Fn(&Event<K>) -> bool,
) -> Result<Duration>
where
    K: std::fmt::Debug,
{
    let mut seen = Vec::new();
    let budget = EVENT_WITHIN.saturating_sub(since.elapsed());
    let r = tokio::time::timeout(budget, async {
        while let Some(e) = events.next().await {
            let e = e.context("watch error")?;
            if want(&e) {
                return Ok(());
            }
            seen.push(format!("{e:?}"));
        }
        bail!("watch stream ended")
    })
    .await;
    match r {
        Ok(Ok(())) => {
            eprintln!("  watched {what} {:?} after the request", since.elapsed());
            Ok(since.elapsed())
        }
        Ok(Err(e)) => Err(e.context(format!("waiting for {what}"))),
        Err(_) => {
            bail!("no watch event for {what} within {EVENT_WITHIN:?}; other events: {seen:#?}")
        }
    }
}

fn applied<'a, K: ResourceExt>(
    name: &'a str,
    check: impl Fn(&K) -> bool + 'a,
) -> impl Fn(&Event<K>) -> bool + 'a {
    move |e| matches!(e, Event::Apply(o) if o.name_any() == name && check(o))
}

fn deleted<K: ResourceExt>(name: &str) -> impl Fn(&Event<K>) -> bool + '_ {
    move |e| matches!(e, Event::Delete(o) if o.name_any() == name)
}

fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

/// Creates `obj` through `write`, watches it through `read` (another served
/// version of the same resource, or the same), changes it with a merge
/// `patch` and deletes it; each step must show on the watch within a second.
async fn create_change_delete(
    client: &Client,
    ns: &str,
    write: &ApiResource,
    read: &ApiResource,
    obj: DynamicObject,
    patch: serde_json::Value,
    changed: impl Fn(&DynamicObject) -> bool,
) -> Result<()> {
    let name = obj.name_any();
    let writer: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, write);
    let reader: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, read);
    let mut events = watch(reader.clone()).await?;
    let what = format!("{}/{} {ns}/{name}", write.kind, write.version);

    let t = Instant::now();
    writer
        .create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating {what}"))?;
    expect(
        &mut events,
        &format!("{what} created"),
        t,
        applied(&name, |_| true),
    )
    .await?;
    let got = reader.get(&name).await?;
    assert_eq!(
        got.data["spec"], obj.data["spec"],
        "{what}: spec read back through {}",
        read.version
    );

    let t = Instant::now();
    writer
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("patching {what}"))?;
    expect(
        &mut events,
        &format!("{what} changed"),
        t,
        applied(&name, &changed),
    )
    .await?;

    let t = Instant::now();
    writer
        .delete(&name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting {what}"))?;
    expect(&mut events, &format!("{what} deleted"), t, deleted(&name)).await?;
    assert!(
        reader.get_opt(&name).await?.is_none(),
        "{what} still there after delete"
    );
    Ok(())
}

/// Applies (server-side) every seed config of an Istio or Gateway API group,
/// each file in a namespace of its own; returns how many were applied and
/// the `file: apiVersion kind` of those whose version is not served.
async fn apply_seed_configs(
    server: &KubeApiServer,
    client: &Client,
) -> Result<(usize, Vec<String>)> {
    const GROUPS: &[&str] = &[
        "networking.istio.io",
        "security.istio.io",
        "telemetry.istio.io",
        "gateway.networking.k8s.io",
    ];
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .context("API discovery")?;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/istio");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {dir}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let (mut applied_count, mut not_served) = (0, Vec::new());
    for (i, file) in files.iter().enumerate() {
        let fname = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(file)?;
        let ns = format!("seed-{i}");
        let mut ns_made = false;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value =
                serde_yaml::Value::deserialize(doc).with_context(|| format!("parsing {fname}"))?;
            if value.is_null() {
                continue;
            }
            let mut obj: DynamicObject = serde_yaml::from_value(value)
                .with_context(|| format!("{fname}: not a Kubernetes object"))?;
            let Some(types) = obj.types.clone() else {
                continue;
            };
            let gvk = GroupVersionKind::try_from(&types)?;
            if !GROUPS.contains(&gvk.group.as_str()) {
                continue;
            }
            let Some((ar, caps)) = discovery.resolve_gvk(&gvk) else {
                not_served.push(format!("{fname}: {} {}", types.api_version, types.kind));
                continue;
            };
            if !ns_made {
                server.create_namespace(&ns, &[]).await?;
                ns_made = true;
            }
            let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
                obj.metadata.namespace = Some(ns.clone());
                Api::namespaced_with(client.clone(), &ns, &ar)
            } else {
                Api::all_with(client.clone(), &ar)
            };
            let name = obj.name_any();
            api.patch(
                &name,
                &PatchParams::apply("ambit-test").force(),
                &Patch::Apply(&obj),
            )
            .await
            .with_context(|| {
                format!(
                    "{fname}: applying {} {} {name}",
                    types.api_version, types.kind
                )
            })?;
            applied_count += 1;
        }
    }
    Ok((applied_count, not_served))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_crds_established_and_resources_watched() -> Result<()> {
    let server = start().await?;
    let client = server.client().await?;

    // Every CRD of deploy/crds is there and Established, with the versions it serves.
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for name in [
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
        "gateways.networking.istio.io",
        "serviceentries.networking.istio.io",
        "sidecars.networking.istio.io",
        "envoyfilters.networking.istio.io",
        "peerauthentications.security.istio.io",
        "authorizationpolicies.security.istio.io",
        "requestauthentications.security.istio.io",
        "telemetries.telemetry.istio.io",
        "httproutes.gateway.networking.k8s.io",
        "gateways.gateway.networking.k8s.io",
        "gatewayclasses.gateway.networking.k8s.io",
        "endpointslices.discovery.k8s.io",
    ] {
        assert!(
            server.crds().iter().any(|c| c == name),
            "{name} not installed"
        );
        let crd = crds.get(name).await?;
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            "{name} not Established: {conditions:?}"
        );
    }
    for version in ["v1", "v1beta1", "v1alpha3"] {
        let ar = api_resource(
            "networking.istio.io",
            version,
            "VirtualService",
            "virtualservices",
        );
        Api::<DynamicObject>::all_with(client.clone(), &ar)
            .list(&ListParams::default())
            .await
            .with_context(|| format!("listing VirtualService {version}"))?;
    }

    // The seed VirtualService as operators write it (v1beta1), watched at v1.
    server.create_namespace("bookinfo", &[]).await?;
    let vs: DynamicObject =
        serde_yaml::from_str(SEED_VS).context("parsing the seed VirtualService")?;
    assert_eq!(
        vs.types.as_ref().map(|t| t.api_version.as_str()),
        Some("networking.istio.io/v1beta1")
    );
    create_change_delete(
        &client,
        "bookinfo",
        &api_resource(
            "networking.istio.io",
            "v1beta1",
            "VirtualService",
            "virtualservices",
        ),
        &api_resource(
            "networking.istio.io",
            "v1",
            "VirtualService",
            "virtualservices",
        ),
        vs,
        json!({"spec": {"http": [{"route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 50},
            {"destination": {"host": "reviews", "subset": "v2"}, "weight": 50}
        ]}]}}),
        |o| o.data["spec"]["http"][0]["route"][0]["weight"] == 50,
    )
    .await?;

    let ap_ar = api_resource(
        "security.istio.io",
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
    );
    let ap: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "reviews-viewer", "namespace": "bookinfo"},
        "spec": {
            "selector": {"matchLabels": {"app": "reviews"}},
            "action": "ALLOW",
            "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/bookinfo/sa/bookinfo-productpage"]}}]}]
        }
    }))?;
    create_change_delete(
        &client,
        "bookinfo",
        &ap_ar,
        &ap_ar,
        ap,
        json!({"spec": {"action": "DENY"}}),
        |o| o.data["spec"]["action"] == "DENY",
    )
    .await?;

    let pa_ar = api_resource(
        "security.istio.io",
        "v1beta1",
        "PeerAuthentication",
        "peerauthentications",
    );
    let pa: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1beta1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "bookinfo"},
        "spec": {"mtls": {"mode": "STRICT"}}
    }))?;
    create_change_delete(
        &client,
        "bookinfo",
        &pa_ar,
        &api_resource(
            "security.istio.io",
            "v1",
            "PeerAuthentication",
            "peerauthentications",
        ),
        pa,
        json!({"spec": {"mtls": {"mode": "PERMISSIVE"}}}),
        |o| o.data["spec"]["mtls"]["mode"] == "PERMISSIVE",
    )
    .await?;

    // Every seed config of these groups is accepted as written, except a
    // version Istio does not serve either (EnvoyFilter exists as v1alpha3 only).
    let (n, not_served) = apply_seed_configs(&server, &client).await?;
    eprintln!("  applied {n} seed configs; not served: {not_served:?}");
    assert!(n >= 50, "only {n} seed configs applied");
    for entry in &not_served {
        assert!(
            entry.ends_with(" EnvoyFilter") && !entry.contains("/v1alpha3 "),
            "seed config refused: {entry}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_services_endpointslices() -> Result<()> {
    let server = start().await?;
    let client = server.client().await?;

    // A namespace labelled into the mesh and out again, seen by a watcher.
    let namespaces = Api::<Namespace>::all(client.clone());
    let mut ns_events = watch(namespaces.clone()).await?;
    let t = Instant::now();
    server.create_namespace("demo", &[]).await?;
    expect(
        &mut ns_events,
        "namespace demo created",
        t,
        applied("demo", |_| true),
    )
    .await?;
    const MODE: &str = "istio.io/dataplane-mode";
    let mode = |ns: &Namespace| ns.labels().get(MODE).cloned();
    let t = Instant::now();
    namespaces
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {MODE: "ambient"}}})),
        )
        .await?;
    expect(
        &mut ns_events,
        "namespace demo labelled ambient",
        t,
        applied("demo", |n: &Namespace| {
            mode(n).as_deref() == Some("ambient")
        }),
    )
    .await?;
    let t = Instant::now();
    namespaces
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {MODE: null}}})),
        )
        .await?;
    expect(
        &mut ns_events,
        "namespace demo unlabelled",
        t,
        applied("demo", |n: &Namespace| mode(n).is_none()),
    )
    .await?;

    // A typed Service gets a cluster IP from --service-cluster-ip-range.
    let services = Api::<Service>::namespaced(client.clone(), "demo");
    let mut svc_events = watch(services.clone()).await?;
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("server".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some([("app".to_string(), "server".to_string())].into()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080),
                ),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let t = Instant::now();
    let created = services
        .create(&PostParams::default(), &svc)
        .await
        .context("creating Service")?;
    let ip = created.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    assert!(
        ip.starts_with("10.96."),
        "cluster IP {ip:?} not from 10.96.0.0/16"
    );
    expect(
        &mut svc_events,
        "service demo/server created",
        t,
        applied("server", |_| true),
    )
    .await?;

    // A typed discovery.k8s.io/v1 EndpointSlice (served by the CRD workaround).
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "demo");
    let mut slice_events = watch(slices.clone()).await?;
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some("server-abc12".into()),
            labels: Some(
                [(
                    "kubernetes.io/service-name".to_string(),
                    "server".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![Endpoint {
            addresses: vec!["10.244.1.5".into()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..Default::default()
            }),
            node_name: Some("node-a".into()),
            ..Default::default()
        }]),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
    };
    let t = Instant::now();
    slices
        .create(&PostParams::default(), &slice)
        .await
        .context("creating EndpointSlice")?;
    expect(
        &mut slice_events,
        "endpointslice demo/server-abc12 created",
        t,
        applied("server-abc12", |_| true),
    )
    .await?;
    let listed = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=server"))
        .await?;
    assert_eq!(listed.items.len(), 1);
    assert_eq!(
        listed.items[0].endpoints.as_ref().context("no endpoints")?[0].addresses,
        vec!["10.244.1.5".to_string()]
    );
    assert_eq!(
        listed.items[0].endpoints.as_ref().context("no endpoints")?[0]
            .node_name
            .as_deref(),
        Some("node-a")
    );
    let t = Instant::now();
    slices
        .patch(
            "server-abc12",
            &PatchParams::default(),
            &Patch::Merge(json!({"endpoints": [{"addresses": ["10.244.2.7"], "conditions": {"ready": true}}]})),
        )
        .await?;
    expect(
        &mut slice_events,
        "endpointslice demo/server-abc12 changed",
        t,
        applied("server-abc12", |s: &EndpointSlice| {
            s.endpoints
                .as_ref()
                .and_then(|e| e.first())
                .map(|e| e.addresses.clone())
                == Some(vec!["10.244.2.7".into()])
        }),
    )
    .await?;

    // ServiceAccounts and Pods are accepted without the controllers of a
    // real cluster (no ServiceAccount admission, no scheduler).
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("server".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), "demo")
        .create(&PostParams::default(), &sa)
        .await?;
    let pods = Api::<Pod>::namespaced(client.clone(), "demo");
    let mut pod_events = watch(pods.clone()).await?;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "server-1", "labels": {"app": "server"}},
        "spec": {"serviceAccountName": "server", "nodeName": "node-a",
                 "containers": [{"name": "app", "image": "ambit-probe"}]}
    }))?;
    let t = Instant::now();
    pods.create(&PostParams::default(), &pod)
        .await
        .context("creating Pod")?;
    expect(
        &mut pod_events,
        "pod demo/server-1 created",
        t,
        applied("server-1", |p: &Pod| {
            p.spec
                .as_ref()
                .and_then(|s| s.service_account_name.as_deref())
                == Some("server")
        }),
    )
    .await?;
    // No kubelet confirms a graceful deletion: delete at once.
    let t = Instant::now();
    pods.delete("server-1", &DeleteParams::default().grace_period(0))
        .await?;
    expect(
        &mut pod_events,
        "pod demo/server-1 deleted",
        t,
        deleted("server-1"),
    )
    .await?;
    Ok(())
}
