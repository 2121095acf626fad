//! A real Kubernetes API server for integration tests: etcd and
//! kube-apiserver v1.20.2 on loopback, one pair per [`KubeApiServer`].
//!
//! The binary is built once by `cargo xtask kube-apiserver` (from Debian's
//! `kubernetes` source package; see docs/KUBE-APISERVER.md) and cached at
//! `~/.cache/ambit/bin/kube-apiserver`; `etcd` comes from Debian's
//! `etcd-server`. A missing binary is an error that says how to get it, never
//! a skipped test.
//!
//! Each instance has its own free ports, its own temporary directory (etcd
//! data, TLS certificates, token file, service-account key, kubeconfig, the
//! two processes' logs) and installs Ambit's CRDs from `deploy/crds/` plus a
//! `discovery.k8s.io/v1` EndpointSlice CRD (a 1.20 server serves only
//! v1beta1, which is turned off; k8s-openapi 0.29 knows v1 only). Dropping it
//! kills both processes and removes the directory, also when a test panics;
//! the children also get `SIGKILL` if the thread that started them exits
//! (`PR_SET_PDEATHSIG`), so a killed test run leaves no server behind.
//!
//! What a 1.20 server does not do: no controller manager, scheduler or
//! kubelet, so nothing creates Endpoints, EndpointSlices or pod status (tests
//! create them), and a deleted namespace stays Terminating.
//!
//! Set `AMBIT_KUBE_KEEP=1` to keep the directory (logs) after the test, and
//! `AMBIT_KUBE_APISERVER=<path>` to use another kube-apiserver binary.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ::kube::api::{Api, ObjectMeta, PostParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::{Client, Config};
use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;

/// The version `cargo xtask kube-apiserver` builds.
pub const KUBE_VERSION: &str = "v1.20.2";
/// How long the API server gets to report ready (it takes 4-6 s).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the CRDs get to be Established (about 4 s).
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);

/// `discovery.k8s.io/v1` EndpointSlice as a CRD: the 1.20 workaround. Only
/// for this test server; a real cluster serves EndpointSlice itself.
pub const ENDPOINTSLICE_V1_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: endpointslices.discovery.k8s.io
  annotations:
    api-approved.kubernetes.io: "https://github.com/kubernetes/enhancements/tree/master/keps/sig-network/0752-endpointslices"
spec:
  group: discovery.k8s.io
  names:
    kind: EndpointSlice
    listKind: EndpointSliceList
    plural: endpointslices
    singular: endpointslice
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

/// Ambit's CRD manifests (the Istio and Gateway API resources it reads).
pub fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds")
}

/// The kube-apiserver binary the harness runs.
pub fn apiserver_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AMBIT_KUBE_APISERVER") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/ambit/bin/kube-apiserver")
}

fn etcd_bin() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .context("`etcd` not found (Debian's etcd-server): run `cargo xtask kube-apiserver`")
}

/// etcd and kube-apiserver on loopback, stopped and cleaned up on drop.
pub struct KubeApiServer {
    apiserver: Option<Child>,
    etcd: Child,
    port: u16,
    token: String,
    dir: Option<tempfile::TempDir>,
    /// The CRD names installed at start, all Established.
    crds: Vec<String>,
}

impl KubeApiServer {
    /// Starts etcd and kube-apiserver, waits for `/readyz`, installs the CRDs
    /// of `deploy/crds/` and the EndpointSlice v1 CRD and waits until they are
    /// Established. Ports are picked free; a start that loses a port race is
    /// retried.
    pub async fn start() -> Result<KubeApiServer> {
        let bin = apiserver_bin();
        if !bin.is_file() {
            bail!(
                "kube-apiserver not found at {}: run `cargo xtask kube-apiserver` \
                 (builds {KUBE_VERSION} from Debian's source once, about 9 minutes)",
                bin.display()
            );
        }
        let etcd = etcd_bin()?;
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(&bin, &etcd).await {
                Ok(s) => return Ok(s),
                Err(e) if format!("{e:#}").contains("address already in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("kube-apiserver did not start")))
    }

    async fn start_once(bin: &Path, etcd_bin: &Path) -> Result<KubeApiServer> {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("ambit-kube-")
            .tempdir()
            .context("creating the server's temporary directory")?;
        let d = dir.path();
        let [etcd_port, peer_port, port] = free_ports()?;

        // etcd, loopback only, its own data dir.
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = spawn(
            Command::new(etcd_bin)
                .arg("--name=ambit-test")
                .arg(format!("--data-dir={}", d.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=ambit-test={peer_url}"))
                .arg("--initial-cluster-state=new")
                .arg("--log-level=warn"),
            &d.join("etcd.log"),
        )?;
        // From here on, a failure drops `server`, which kills what runs.
        let mut server = KubeApiServer {
            apiserver: None,
            etcd,
            port,
            token: random_hex(16)?,
            dir: Some(dir),
            crds: Vec::new(),
        };
        let d = server.dir().to_path_buf();

        write_credentials(&d, &server.token)?;
        server.apiserver = Some(spawn(
            Command::new(bin)
                .arg(format!("--etcd-servers={etcd_url}"))
                .arg("--bind-address=127.0.0.1")
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--secure-port={port}"))
                .arg("--insecure-port=0")
                .arg(format!("--cert-dir={}", d.join("certs").display()))
                .arg(format!(
                    "--tls-cert-file={}",
                    d.join("serving.crt").display()
                ))
                .arg(format!(
                    "--tls-private-key-file={}",
                    d.join("serving.key").display()
                ))
                .arg(format!(
                    "--token-auth-file={}",
                    d.join("tokens.csv").display()
                ))
                .arg("--authorization-mode=RBAC")
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!(
                    "--service-account-key-file={}",
                    d.join("sa.pub").display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    d.join("sa.key").display()
                ))
                .arg("--service-cluster-ip-range=10.96.0.0/16")
                .arg("--disable-admission-plugins=ServiceAccount")
                .arg("--runtime-config=discovery.k8s.io/v1beta1=false")
                .arg("--profiling=false")
                .arg("--logtostderr=true"),
            &d.join("kube-apiserver.log"),
        )?);
        server.write_kubeconfig()?;
        server.wait_ready(started).await?;

        let mut crds = vec![ENDPOINTSLICE_V1_CRD.to_string()];
        let mut files: Vec<PathBuf> = fs::read_dir(crds_dir())
            .with_context(|| format!("reading {}", crds_dir().display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        for f in files {
            crds.push(fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?);
        }
        let client = server.client().await?;
        for text in crds {
            let names = install_crds(&client, &text).await?;
            server.crds.extend(names);
        }
        wait_established(&client, &server.crds, ESTABLISHED_TIMEOUT).await?;
        Ok(server)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The admin bearer token (user `admin`, group `system:masters`).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A kubeconfig for this server (admin token, the server's CA), usable
    /// by kube-rs and kubectl alike.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir().join("kubeconfig")
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir().join("ca.crt")
    }

    /// The names of the CRDs installed at start (all Established).
    pub fn crds(&self) -> &[String] {
        &self.crds
    }

    /// The server's temporary directory (logs: `etcd.log`, `kube-apiserver.log`).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/"))
    }

    /// The kube-rs configuration from [`kubeconfig_path`](Self::kubeconfig_path).
    pub async fn config(&self) -> Result<Config> {
        let kc = Kubeconfig::read_from(self.kubeconfig_path()).context("reading the kubeconfig")?;
        Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .context("kube config from the kubeconfig")
    }

    /// A kube-rs client acting as the admin.
    pub async fn client(&self) -> Result<Client> {
        Client::try_from(self.config().await?).context("creating the kube client")
    }

    /// Creates a namespace (tests use one each), with `labels`.
    pub async fn create_namespace(&self, name: &str, labels: &[(&str, &str)]) -> Result<Namespace> {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                labels: (!labels.is_empty()).then(|| {
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client().await?)
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))
    }

    /// Installs more CRDs (a YAML stream) and waits until they are Established.
    pub async fn install_crds(&mut self, yaml: &str) -> Result<Vec<String>> {
        let client = self.client().await?;
        let names = install_crds(&client, yaml).await?;
        wait_established(&client, &names, ESTABLISHED_TIMEOUT).await?;
        self.crds.extend(names.iter().cloned());
        Ok(names)
    }

    fn write_kubeconfig(&self) -> Result<()> {
        let kc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "ambit-test",
                "cluster": {
                    "server": self.url(),
                    "certificate-authority": self.ca_path(),
                },
            }],
            "users": [{ "name": "admin", "user": { "token": self.token } }],
            "contexts": [{
                "name": "ambit-test",
                "context": { "cluster": "ambit-test", "user": "admin", "namespace": "default" },
            }],
            "current-context": "ambit-test",
        });
        let text = serde_yaml::to_string(&kc)?;
        fs::write(self.kubeconfig_path(), text).context("writing the kubeconfig")
    }

    /// Polls `/readyz` until it answers `ok`, failing early (with the logs'
    /// last lines) if a process exits.
    async fn wait_ready(&mut self, started: Instant) -> Result<()> {
        let client = self.client().await?;
        let dir = self.dir().to_path_buf();
        let mut last_err: String;
        loop {
            let procs = [
                ("etcd", Some(&mut self.etcd)),
                ("kube-apiserver", self.apiserver.as_mut()),
            ];
            for (name, child) in procs {
                let Some(child) = child else { continue };
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "{name} exited ({status}) before the API server was ready; \
                         last lines of its log:\n{}",
                        log_tail(&dir.join(format!("{name}.log")))
                    );
                }
            }
            let req = http::Request::get("/readyz").body(Vec::new())?;
            match client.request_text(req).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last_err = body,
                Err(e) => last_err = e.to_string(),
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "kube-apiserver at {} not ready after {READY_TIMEOUT:?} (last answer: {last_err}); \
                     last lines of its log:\n{}",
                    self.url(),
                    log_tail(&self.dir().join("kube-apiserver.log"))
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        for child in self.apiserver.iter_mut().chain([&mut self.etcd]) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("AMBIT_KUBE_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("AMBIT_KUBE_KEEP: kept {}", dir.keep().display());
            }
        }
    }
}

/// Creates every CRD of a YAML stream; returns their names.
async fn install_crds(client: &Client, yaml: &str) -> Result<Vec<String>> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let mut names = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(doc).context("parsing CRD YAML")?;
        if value.is_null() {
            continue;
        }
        let crd: CustomResourceDefinition =
            serde_yaml::from_value(value).context("not a CustomResourceDefinition")?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.create(&PostParams::default(), &crd)
            .await
            .with_context(|| format!("creating CRD {name}"))?;
        names.push(name);
    }
    Ok(names)
}

/// Waits until every named CRD has the condition `Established=True`.
pub async fn wait_established(client: &Client, names: &[String], timeout: Duration) -> Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let deadline = Instant::now() + timeout;
    for name in names {
        loop {
            let crd = api
                .get(name)
                .await
                .with_context(|| format!("reading CRD {name}"))?;
            let established = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            if established {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "CRD {name} not Established after {timeout:?}: {:?}",
                    crd.status
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

fn spawn(cmd: &mut Command, log: &Path) -> Result<Child> {
    let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))
}

/// Three distinct free loopback ports (free when asked; a lost race makes
/// the start fail with "address already in use", and it is retried).
fn free_ports() -> Result<[u16; 3]> {
    let ls = [
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
        TcpListener::bind("127.0.0.1:0")?,
    ];
    Ok([
        ls[0].local_addr()?.port(),
        ls[1].local_addr()?.port(),
        ls[2].local_addr()?.port(),
    ])
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The CA, the serving certificate for 127.0.0.1, the token file and the
/// service-account signing key, all made here (rcgen; no openssl).
fn write_credentials(d: &Path, token: &str) -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ambit-test-kube-ca");
    let ca_cert = ca.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut p = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    p.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let cert = p.signed_by(&key, &ca_cert, &ca_key)?;

    fs::write(d.join("ca.crt"), ca_cert.pem())?;
    fs::write(d.join("serving.crt"), cert.pem())?;
    fs::write(d.join("serving.key"), key.serialize_pem())?;
    let sa = KeyPair::generate()?;
    fs::write(d.join("sa.key"), sa.serialize_pem())?;
    fs::write(d.join("sa.pub"), sa.public_key_pem())?;
    fs::write(
        d.join("tokens.csv"),
        format!("{token},admin,uid-admin,system:masters\n"),
    )?;
    fs::create_dir_all(d.join("certs"))?;
    Ok(())
}

fn log_tail(path: &Path) -> String {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("({}: {e})", path.display()),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(4000)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}
