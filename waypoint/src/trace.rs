//! Trace context propagation: W3C Trace Context (`traceparent`, with
//! `tracestate` passed through untouched) and B3 (multi-header
//! `x-b3-traceid` / `x-b3-spanid` / `x-b3-parentspanid` / `x-b3-sampled`,
//! and single-header `b3`).
//!
//! The waypoint is one hop of the trace: when the request carries a trace,
//! the upstream request carries the same trace id with a new span id whose
//! parent is the incoming span, and the incoming sampling decision. Each
//! format present is rewritten in its own form (W3C wins as the source of
//! the trace id when both are present and disagree). When the request
//! carries none, the waypoint starts a trace: a random 128-bit trace id,
//! sampled with the Telemetry `randomSamplingPercentage` (Istio's default
//! 1% when unset), sent as both `traceparent` and B3 headers so either kind
//! of application library continues it. Spans are not reported (no
//! tracing provider yet): this is propagation only.
//!
//! The headers are set once on the upstream request before tries and
//! mirrors copy it, so retries and mirrors keep the trace id.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::Rng;

/// Istio's default `randomSamplingPercentage`.
pub const DEFAULT_SAMPLING_PERCENT: f64 = 1.0;

/// The trace this hop belongs to, as sent upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// The waypoint's span (the upstream's parent).
    pub span_id: u64,
    /// The incoming span, when the request carried a trace.
    pub parent_id: Option<u64>,
    pub sampled: bool,
}

impl TraceContext {
    /// The trace id as 32 hex digits (for logs).
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

fn hex_u128(s: &str) -> Option<u128> {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok().filter(|v| *v != 0)
}

fn hex_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok().filter(|v| *v != 0)
}

/// `version-traceid-parentid-flags`, version `00` (later versions are read
/// by the same first four fields, as the spec asks).
fn parse_traceparent(v: &str) -> Option<(u128, u64, bool)> {
    let mut it = v.trim().split('-');
    let version = it.next()?;
    let trace = it.next()?;
    let span = it.next()?;
    let flags = it.next()?;
    if version.len() != 2
        || version == "ff"
        || !version.bytes().all(|b| b.is_ascii_hexdigit())
        || trace.len() != 32
        || span.len() != 16
    {
        return None;
    }
    if version == "00" && it.next().is_some() {
        return None;
    }
    let flags = u8::from_str_radix(flags.get(..2)?, 16).ok()?;
    Some((hex_u128(trace)?, hex_u64(span)?, flags & 1 == 1))
}

/// B3 sampling state: `1`/`true`/`d` (debug) sampled, `0`/`false` not.
fn b3_sampled(s: &str) -> Option<bool> {
    match s {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// `b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]` or just `{sampled}`.
fn parse_b3_single(v: &str) -> Option<(u128, u64, Option<bool>)> {
    let mut it = v.trim().split('-');
    let trace = it.next()?;
    let span = it.next()?;
    let sampled = it.next().and_then(b3_sampled);
    Some((hex_u128(trace)?, hex_u64(span)?, sampled))
}

// Parsed once: a `&str` name is parsed and checked at every lookup.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

fn header<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A header value formatted on the stack (the longest is a 68-byte `b3`).
struct StackValue {
    buf: [u8; 80],
    len: usize,
}

impl std::fmt::Write for StackValue {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn set(h: &mut HeaderMap, name: HeaderName, value: std::fmt::Arguments<'_>) {
    let mut v = StackValue {
        buf: [0; 80],
        len: 0,
    };
    if std::fmt::write(&mut v, value).is_ok() {
        if let Ok(v) = HeaderValue::from_bytes(&v.buf[..v.len]) {
            h.insert(name, v);
        }
    }
}

/// Rewrites the trace headers of an upstream request (see the module
/// doc) and returns the context sent.
pub fn propagate(h: &mut HeaderMap, sampling_percent: f64, rng: &mut impl Rng) -> TraceContext {
    let w3c = header(h, &TRACEPARENT).and_then(parse_traceparent);
    let b3_single = header(h, &B3).and_then(parse_b3_single);
    let b3_multi = match (
        header(h, &B3_TRACE_ID).and_then(|t| Some((hex_u128(t)?, t.len() > 16))),
        header(h, &B3_SPAN_ID).and_then(hex_u64),
    ) {
        (Some((t, wide)), Some(s)) => Some((t, wide, s)),
        _ => None,
    };
    let b3_flag = header(h, &B3_SAMPLED)
        .and_then(b3_sampled)
        .or_else(|| (header(h, &B3_FLAGS) == Some("1")).then_some(true));

    let span_id: u64 = loop {
        let s = rng.gen();
        if s != 0 {
            break s;
        }
    };
    let incoming = w3c
        .map(|(t, s, sampled)| (t, s, Some(sampled)))
        .or(b3_single)
        .or(b3_multi.map(|(t, _, s)| (t, s, b3_flag)));
    let ctx = match incoming {
        Some((trace_id, parent, sampled)) => TraceContext {
            trace_id,
            span_id,
            parent_id: Some(parent),
            // No decision upstream of us: we make it.
            sampled: sampled.unwrap_or_else(|| sample(sampling_percent, rng)),
        },
        None => TraceContext {
            trace_id: loop {
                let t: u128 = rng.gen();
                if t != 0 {
                    break t;
                }
            },
            span_id,
            parent_id: None,
            sampled: sample(sampling_percent, rng),
        },
    };
    let fresh = incoming.is_none();
    let flag = if ctx.sampled { "1" } else { "0" };

    if w3c.is_some() || fresh {
        set(
            h,
            TRACEPARENT,
            format_args!("00-{:032x}-{:016x}-0{}", ctx.trace_id, ctx.span_id, flag),
        );
    }
    if b3_single.is_some() {
        match ctx.parent_id {
            Some(p) => set(
                h,
                B3,
                format_args!("{:032x}-{:016x}-{flag}-{p:016x}", ctx.trace_id, ctx.span_id),
            ),
            None => set(
                h,
                B3,
                format_args!("{:032x}-{:016x}-{flag}", ctx.trace_id, ctx.span_id),
            ),
        }
    }
    if b3_multi.is_some() || fresh {
        // An incoming B3 trace id keeps its width (64- or 128-bit).
        let wide = b3_multi.is_none_or(|(_, wide, _)| wide);
        if wide {
            set(h, B3_TRACE_ID, format_args!("{:032x}", ctx.trace_id));
        } else {
            set(h, B3_TRACE_ID, format_args!("{:016x}", ctx.trace_id as u64));
        }
        set(h, B3_SPAN_ID, format_args!("{:016x}", ctx.span_id));
        match ctx.parent_id {
            Some(p) => set(h, B3_PARENT_SPAN_ID, format_args!("{p:016x}")),
            None => {
                h.remove(B3_PARENT_SPAN_ID);
            }
        }
        set(h, B3_SAMPLED, format_args!("{flag}"));
    }
    ctx
}

fn sample(percent: f64, rng: &mut impl Rng) -> bool {
    percent >= 100.0 || (percent > 0.0 && rng.gen::<f64>() * 100.0 < percent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pairs: &[(&'static str, &str)], pct: f64) -> (HeaderMap, TraceContext) {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        let c = propagate(&mut h, pct, &mut rand::thread_rng());
        (h, c)
    }

    fn get<'a>(h: &'a HeaderMap, k: &str) -> &'a str {
        h.get(k).and_then(|v| v.to_str().ok()).expect(k)
    }

    #[test]
    fn traceparent_keeps_trace_new_span_parent_is_incoming() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (h, c) = run(
            &[("traceparent", tp), ("tracestate", "congo=t61rcWkgMzE")],
            0.0,
        );
        let out: Vec<&str> = get(&h, "traceparent").split('-').collect();
        assert_eq!(out[0], "00");
        assert_eq!(out[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(out[2], "00f067aa0ba902b7");
        assert_eq!(out[3], "01", "incoming sampled flag kept");
        assert_eq!(c.parent_id, Some(0x00f067aa0ba902b7));
        assert_eq!(get(&h, "tracestate"), "congo=t61rcWkgMzE");
        assert!(
            h.get("x-b3-traceid").is_none(),
            "no B3 invented for a W3C trace"
        );
    }

    #[test]
    fn b3_multi_and_single() {
        let (h, c) = run(
            &[
                ("x-b3-traceid", "463ac35c9f6413ad"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
                ("x-b3-sampled", "1"),
            ],
            0.0,
        );
        assert_eq!(
            get(&h, "x-b3-traceid"),
            "463ac35c9f6413ad",
            "64-bit id kept 64-bit"
        );
        assert_ne!(get(&h, "x-b3-spanid"), "a2fb4a1d1a96d312");
        assert_eq!(get(&h, "x-b3-parentspanid"), "a2fb4a1d1a96d312");
        assert_eq!(get(&h, "x-b3-sampled"), "1");
        assert!(c.sampled);

        let (h, _) = run(
            &[(
                "b3",
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90",
            )],
            100.0,
        );
        let parts: Vec<&str> = get(&h, "b3").split('-').collect();
        assert_eq!(parts[0], "80f198ee56343ba864fe8b2a57d3eff7");
        assert_ne!(parts[1], "e457b5a2e4d86bd1");
        assert_eq!(
            parts[2], "0",
            "incoming not-sampled kept over 100% sampling"
        );
        assert_eq!(parts[3], "e457b5a2e4d86bd1");
    }

    #[test]
    fn no_trace_starts_one_with_sampling() {
        let (h, c) = run(&[], 100.0);
        assert!(c.sampled && c.parent_id.is_none());
        let tp = get(&h, "traceparent");
        assert_eq!(parse_traceparent(tp), Some((c.trace_id, c.span_id, true)));
        assert_eq!(get(&h, "x-b3-traceid"), c.trace_id_hex());
        assert!(h.get("x-b3-parentspanid").is_none());
        let (_, c) = run(&[], 0.0);
        assert!(!c.sampled);
    }

    #[test]
    fn malformed_incoming_starts_a_new_trace() {
        let (h, c) = run(
            &[(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )],
            0.0,
        );
        assert!(c.parent_id.is_none());
        assert_ne!(
            get(&h, "traceparent").split('-').nth(1),
            Some("00000000000000000000000000000000")
        );
        assert!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7").is_none()
        );
        assert!(
            parse_traceparent("zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none()
        );
    }
}
