//! A streamed response body whose length is observed when it ends (the
//! `istio_response_bytes` of a response whose length the head did not
//! say).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use prometheus_client::metrics::histogram::Histogram;

use crate::body::{BoxError, ProxyBody};

/// A streamed response body that observes its length when it ends.
pub(super) struct CountingBody {
    pub(super) inner: ProxyBody,
    pub(super) bytes: u64,
    pub(super) histogram: Option<Histogram>,
}

impl CountingBody {
    fn finish(&mut self) {
        if let Some(h) = self.histogram.take() {
            h.observe(self.bytes as f64);
        }
    }
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes += d.len() as u64;
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountingBody {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use http::Response;
    use http_body_util::BodyExt;

    use super::*;
    use crate::discovery::StaticDiscovery;
    use crate::telemetry::labels::SourceInfo;
    use crate::telemetry::meta::RequestMeta;
    use crate::telemetry::registry::Telemetry;

    /// A body of chunks with no size hint (as a chunked upstream body).
    struct Chunks(Vec<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if self.0.is_empty() {
                Poll::Ready(None)
            } else {
                let b = self.0.remove(0);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
        }
    }

    #[tokio::test]
    async fn streamed_body_is_counted_when_it_ends() {
        let t = Telemetry::new();
        let body = Chunks(vec![
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"defg"),
        ]);
        let peer: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let resp = t.record(
            &RequestMeta::default(),
            &SourceInfo::default(),
            peer,
            &StaticDiscovery::new(),
            Response::new(body.boxed_unsync()),
            Instant::now(),
        );
        let before = t.metrics_text();
        assert!(
            before
                .lines()
                .any(|l| l.starts_with("istio_response_bytes_count{") && l.ends_with(" 0")),
            "not observed before the end: {before}"
        );
        let got = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&got[..], b"abcdefg");
        let text = t.metrics_text();
        let sum = text
            .lines()
            .find(|l| l.starts_with("istio_response_bytes_sum{"))
            .expect("observed at the end");
        assert!(sum.ends_with(" 7.0"), "{sum}");
    }
}
