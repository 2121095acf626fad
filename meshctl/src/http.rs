//! A small HTTP/1.1 GET over hyper's client connection, for the plaintext
//! debug endpoints of the controller (`/debug/syncz`) and of a node's admin
//! server (`/config_dump`). Only `http://` (both servers are plaintext and
//! local or port-forwarded).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a GET failed.
#[derive(Debug)]
pub enum HttpError {
    /// The address is not something we can connect to.
    BadAddress(String),
    /// Nothing answered (refused, timed out, reset).
    Unreachable(String),
    /// It answered, but not with 200.
    Status(u16, String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::BadAddress(m) | HttpError::Unreachable(m) => f.write_str(m),
            HttpError::Status(code, body) => {
                let body = body.trim();
                if body.is_empty() {
                    write!(f, "HTTP {code}")
                } else {
                    write!(f, "HTTP {code}: {body}")
                }
            }
        }
    }
}

/// `http://host:port[/prefix]`, `host:port` or `:port` -> (`host:port`,
/// path prefix without a trailing slash).
pub fn parse_base(s: &str) -> Result<(String, String), HttpError> {
    let s = s.trim();
    let rest = if let Some(r) = s.strip_prefix("http://") {
        r
    } else if s.starts_with("https://") {
        return Err(HttpError::BadAddress(format!(
            "{s}: https is not supported (the status and admin servers are plaintext)"
        )));
    } else if s.contains("://") {
        return Err(HttpError::BadAddress(format!(
            "{s}: expected http://host:port or host:port"
        )));
    } else {
        s
    };
    let (authority, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    let authority = if let Some(port) = authority.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else {
        authority.to_string()
    };
    // host:port, [v6]:port; the port is required (no well-known default here).
    let port = authority.rsplit_once(':').map(|(_, p)| p);
    let valid_port = port.is_some_and(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if authority.is_empty() || !valid_port || authority.ends_with(']') {
        return Err(HttpError::BadAddress(format!(
            "{s}: expected host:port (for example 127.0.0.1:15000)"
        )));
    }
    Ok((authority, prefix.to_string()))
}

/// `GET http://{authority}{path}`; the body of a 200 response.
pub fn get(authority: &str, path: &str) -> Result<Bytes, HttpError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| HttpError::Unreachable(format!("starting the I/O runtime: {e}")))?;
    rt.block_on(async {
        match tokio::time::timeout(REQUEST_TIMEOUT, get_async(authority, path)).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Unreachable(format!(
                "http://{authority}{path}: no answer within {}s",
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    })
}

async fn get_async(authority: &str, path: &str) -> Result<Bytes, HttpError> {
    let url = format!("http://{authority}{path}");
    let unreachable = |what: &str, e: &dyn std::fmt::Display| {
        HttpError::Unreachable(format!("{url}: {what}: {e}"))
    };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(authority))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(unreachable("cannot connect", &e)),
        Err(_) => {
            return Err(HttpError::Unreachable(format!(
                "{url}: cannot connect: timed out after {}s",
                CONNECT_TIMEOUT.as_secs()
            )))
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| unreachable("HTTP handshake", &e))?;
    let conn = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::USER_AGENT, "meshctl")
        .body(Empty::<Bytes>::new())
        .map_err(|e| HttpError::BadAddress(format!("{url}: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable("request failed", &e))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable("reading the response", &e))?
        .to_bytes();
    conn.abort();
    if status != http::StatusCode::OK {
        return Err(HttpError::Status(
            status.as_u16(),
            String::from_utf8_lossy(&body).chars().take(500).collect(),
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        let ok = |s: &str| parse_base(s).unwrap();
        assert_eq!(
            ok("http://127.0.0.1:15014"),
            ("127.0.0.1:15014".into(), "".into())
        );
        assert_eq!(
            ok("http://127.0.0.1:15014/"),
            ("127.0.0.1:15014".into(), "".into())
        );
        assert_eq!(ok("127.0.0.1:15000"), ("127.0.0.1:15000".into(), "".into()));
        assert_eq!(ok(":15000"), ("127.0.0.1:15000".into(), "".into()));
        assert_eq!(ok("localhost:1/x/"), ("localhost:1".into(), "/x".into()));
        assert_eq!(ok("[::1]:15000"), ("[::1]:15000".into(), "".into()));
        for bad in [
            "",
            "127.0.0.1",
            "https://a:1",
            "ftp://a:1",
            "a:0",
            "a:99999",
            "[::1]",
        ] {
            assert!(parse_base(bad).is_err(), "{bad}");
        }
    }
}
