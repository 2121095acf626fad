//! One HTTP client for the tests: curl, run inside a pod's (or a node's)
//! network namespace, its answer parsed into status, headers and body.
//!
//! curl is the client an operator would use against a mesh, and it runs in
//! the namespace and cgroup of the pod it speaks for, so its connections
//! are captured like the app's own.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::testbed::Testbed;

/// A request to send with curl: a builder with no side effect until run.
#[derive(Clone, Debug)]
pub struct Curl {
    url: String,
    args: Vec<String>,
    max_time: Duration,
}

/// What curl saw: the final response's status, headers and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// In order; names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Curl {
    /// A GET, unless `args` make it otherwise (`--data-urlencode` posts).
    pub fn new(url: impl Into<String>) -> Self {
        Curl {
            url: url.into(),
            args: Vec::new(),
            max_time: Duration::from_secs(10),
        }
    }

    /// One `Name: value` request header.
    pub fn header(mut self, header: &str) -> Self {
        self.args.extend(["-H".to_string(), header.to_string()]);
        self
    }

    pub fn headers(self, headers: &[&str]) -> Self {
        headers.iter().fold(self, |c, h| c.header(h))
    }

    /// Further curl options, as written on its command line (`--resolve`,
    /// `--cacert`, `--data-urlencode` ...).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// curl's own limit for the whole exchange.
    pub fn max_time(mut self, limit: Duration) -> Self {
        self.max_time = limit;
        self
    }

    /// The command line, without the namespace to run it in.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("curl");
        // -i: the response head comes first on stdout, so one run gives
        // status, headers and body.
        cmd.args(["-sS", "-i", "--max-time"])
            .arg(format!("{:.3}", self.max_time.as_secs_f64()))
            .args(&self.args)
            .arg(&self.url);
        cmd
    }

    /// Runs in pod `pod`; `Err` when curl itself fails (connection refused
    /// or reset, TLS verification, time limit).
    pub fn in_pod(&self, tb: &Testbed, pod: &str) -> Result<Reply> {
        let out = tb.run_in_pod(pod, self.command(), self.max_time * 2)?;
        Reply::parse(&out).with_context(|| format!("curl {}", self.url))
    }

    /// Runs in node `node`'s netns, outside any pod.
    pub fn in_node(&self, tb: &Testbed, node: &str) -> Result<Reply> {
        let out = tb.run_in_node(node, self.command(), self.max_time * 2)?;
        Reply::parse(&out).with_context(|| format!("curl {}", self.url))
    }
}

impl Reply {
    /// Parses `curl -i` output. Interim responses (`100 Continue`) come
    /// first, each with its own head; the last head is the answer.
    pub fn parse(out: &str) -> Result<Reply> {
        let mut rest = out;
        loop {
            let (head, body) = split_head(rest).context("no blank line after the response head")?;
            let mut lines = head.lines();
            let status_line = lines.next().unwrap_or_default();
            let Some(code) = status_line
                .strip_prefix("HTTP/")
                .and_then(|s| s.split_whitespace().nth(1))
            else {
                bail!("not an HTTP status line: {status_line:?}");
            };
            let status: u16 = code
                .parse()
                .with_context(|| format!("status in {status_line:?}"))?;
            if (100..200).contains(&status) && body.starts_with("HTTP/") {
                rest = body;
                continue;
            }
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            return Ok(Reply {
                status,
                headers,
                body: body.to_string(),
            });
        }
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `"<status> <x-served-by>"`: the sample app names the pod that
    /// answered in `x-served-by`.
    pub fn served_by(&self) -> String {
        format!(
            "{} {}",
            self.status,
            self.header("x-served-by").unwrap_or("")
        )
        .trim()
        .to_string()
    }
}

/// One GET of `url` from `pod` with `headers`: `"<status> <x-served-by>"`,
/// or `"error: ..."` when curl fails, so that a poll can compare answers.
pub fn served_by(tb: &Testbed, pod: &str, url: &str, headers: &[&str]) -> String {
    match Curl::new(url)
        .headers(headers)
        .max_time(Duration::from_secs(5))
        .in_pod(tb, pod)
    {
        Ok(r) => r.served_by(),
        Err(e) => format!("error: {e:#}"),
    }
}

/// The head (without its blank line) and what follows it.
fn split_head(s: &str) -> Option<(&str, &str)> {
    let crlf = s.find("\r\n\r\n").map(|i| (i, 4));
    let lf = s.find("\n\n").map(|i| (i, 2));
    let (i, n) = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some((&s[..i], &s[i + n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_carries_headers_args_and_the_url_last() {
        let c = Curl::new("http://10.96.0.1:9080/")
            .headers(&["end-user: jason", "x-a: 1"])
            .args(&["--resolve", "h:443:10.0.0.1"])
            .max_time(Duration::from_millis(2500));
        let cmd = c.command();
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(cmd.get_program(), "curl");
        assert_eq!(
            args,
            [
                "-sS",
                "-i",
                "--max-time",
                "2.500",
                "-H",
                "end-user: jason",
                "-H",
                "x-a: 1",
                "--resolve",
                "h:443:10.0.0.1",
                "http://10.96.0.1:9080/"
            ]
        );
    }

    #[test]
    fn parses_status_headers_and_body() {
        let r = Reply::parse(
            "HTTP/1.1 302 Found\r\nLocation: https://x/\r\nX-Served-By: reviews-v2\r\n\r\n{\"a\":1}\r\n\r\nmore",
        )
        .expect("parses");
        assert_eq!(r.status, 302);
        assert_eq!(r.header("location"), Some("https://x/"));
        assert_eq!(r.served_by(), "302 reviews-v2");
        assert_eq!(r.body, "{\"a\":1}\r\n\r\nmore");
    }

    #[test]
    fn skips_interim_responses_and_reads_http2() {
        let r = Reply::parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/2 503\r\nserver: x\r\n\r\n")
            .expect("parses");
        assert_eq!(r.status, 503);
        assert_eq!(r.served_by(), "503");
        assert_eq!(r.body, "");
    }

    #[test]
    fn refuses_what_is_not_a_response() {
        assert!(Reply::parse("").is_err());
        assert!(Reply::parse("hello\r\n\r\n").is_err());
        assert!(Reply::parse("HTTP/1.1 abc\r\n\r\n").is_err());
    }
}
