//! Writes the seed corpora that are made from other inputs
//! (`cargo run -p mesh-fuzz --example write_seeds`):
//!
//! - `xds_resources`: the messages of each config-file seed (the file mode
//!   converts its file to exactly the messages the controller sends);
//! - `hbone_connect`: CONNECT heads as mesh-hbone's client sends them;
//! - `hbone_h2`: the bytes an h2 client writes for those requests.
//!
//! The `config_file` seeds are copies of the repository's own YAML (the
//! config docs and tests, Istio fixtures); see docs/FUZZING.md.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use mesh_fuzz::corpus::{fuzz_dir, inputs};
use mesh_fuzz::xds::XdsInput;
use mesh_model::build::Resources;
use mesh_model::config;
use prost::Message;
use tokio::io::AsyncReadExt;

fn write(target: &str, name: &str, data: &[u8]) -> std::io::Result<()> {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), data)?;
    println!("{target}/{name}: {} bytes", data.len());
    Ok(())
}

fn xds_seeds() -> std::io::Result<()> {
    for file in inputs("config_file")? {
        let text = std::fs::read_to_string(&file)?;
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("seed");
        let resources = if let Ok(cfg) = config::parse(&text) {
            config::to_proto::resources(&cfg)
        } else if let Ok(policies) = config::parse_policies(&text) {
            Resources {
                policies: policies
                    .iter()
                    .map(config::to_proto::policy_to_message)
                    .collect(),
                ..Default::default()
            }
        } else {
            println!("{}: neither a config nor policies, skipped", file.display());
            continue;
        };
        let input = XdsInput::from_resources(&resources);
        write(
            "xds_resources",
            &format!("{stem}.pb"),
            &input.encode_to_vec(),
        )?;
    }
    Ok(())
}

/// A request head, named as its seed files are.
struct Head {
    name: &'static str,
    method: &'static str,
    target: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

/// CONNECTs as mesh-hbone's client sends them (`build_request` in
/// mesh-hbone/src/client.rs), and two the server refuses.
const HEADS: &[Head] = &[
    Head {
        name: "connect-v4",
        method: "CONNECT",
        target: "10.0.0.2:8080",
        headers: &[
            (
                "forwarded",
                "for=\"10.0.0.1:40000\";host=web.demo.svc.cluster.local",
            ),
            ("baggage", "k8s.cluster.name=c1"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ],
    },
    Head {
        name: "connect-v6",
        method: "CONNECT",
        target: "[fd00::2]:8080",
        headers: &[("forwarded", "for=\"[fd00::1]:5555\"")],
    },
    Head {
        name: "connect-odd-port",
        method: "CONNECT",
        target: "10.0.0.2:8081",
        headers: &[],
    },
    Head {
        name: "get",
        method: "GET",
        target: "http://10.0.0.2:8080/",
        headers: &[],
    },
    Head {
        name: "connect-hostname",
        method: "CONNECT",
        target: "web.demo.svc.cluster.local:80",
        headers: &[],
    },
];

fn connect_seeds() -> std::io::Result<()> {
    for head in HEADS {
        let mut text = format!("{}\n{}\n", head.method, head.target);
        for (n, v) in head.headers {
            text.push_str(&format!("{n}: {v}\n"));
        }
        write(
            "hbone_connect",
            &format!("{}.txt", head.name),
            text.as_bytes(),
        )?;
    }
    Ok(())
}

/// What an h2 client writes on a connection carrying `heads`, each with a
/// few bytes of tunnel data and END_STREAM.
async fn record_h2(heads: &[&Head]) -> std::io::Result<Vec<u8>> {
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let (mut send, conn) = h2::client::handshake(client)
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    // Held to the end: a stream dropped early is sent as RST_STREAM.
    let mut open = Vec::new();
    for head in heads {
        let mut request = Request::builder()
            .method(Method::from_bytes(head.method.as_bytes()).map_err(std::io::Error::other)?)
            .uri(head.target);
        for (n, v) in head.headers {
            request = request.header(*n, *v);
        }
        let request = request.body(()).map_err(std::io::Error::other)?;
        let (response, mut body) = send
            .send_request(request, false)
            .map_err(std::io::Error::other)?;
        body.send_data(Bytes::from_static(b"ping\n"), true)
            .map_err(std::io::Error::other)?;
        open.push((response, body));
    }
    // Everything is written well before this; the server end never answers.
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(Ok(n)) =
        tokio::time::timeout(Duration::from_millis(300), server.read(&mut buf)).await
    {
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    drop(open);
    Ok(bytes)
}

async fn h2_seeds() -> std::io::Result<()> {
    for head in HEADS {
        let bytes = record_h2(&[head]).await?;
        write("hbone_h2", &format!("{}.h2", head.name), &bytes)?;
    }
    let all: Vec<_> = HEADS.iter().collect();
    write(
        "hbone_h2",
        "all-on-one-connection.h2",
        &record_h2(&all).await?,
    )?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    xds_seeds()?;
    connect_seeds()?;
    h2_seeds().await
}
