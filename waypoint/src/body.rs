//! Body types: what the proxy answers with (upstream bodies streamed
//! through, or local replies) and how an upstream body keeps its pooled
//! connection leased until it ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the proxy returns.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body.
pub fn full(b: impl Into<Bytes>) -> ProxyBody {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A local reply (`status`, plain text body), as Envoy answers: the body
/// says why.
pub fn local_reply(status: http::StatusCode, text: &str) -> http::Response<ProxyBody> {
    let mut r = http::Response::new(full(text.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Something to run when a streamed body ends (`complete == true`) or is
/// dropped before its end.
pub trait OnEnd: Send + 'static {
    fn finish(&mut self, complete: bool);
}

/// An upstream body with a guard that learns how it ended.
pub struct GuardedBody<G: OnEnd> {
    inner: Incoming,
    guard: Option<G>,
}

impl<G: OnEnd> GuardedBody<G> {
    pub fn new(inner: Incoming, guard: G) -> Self {
        GuardedBody {
            inner,
            guard: Some(guard),
        }
    }
}

impl<G: OnEnd + Unpin> Body for GuardedBody<G> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => {
                if let Some(mut g) = this.guard.take() {
                    g.finish(true);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut g) = this.guard.take() {
                    g.finish(false);
                }
            }
            _ => {}
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

impl<G: OnEnd> Drop for GuardedBody<G> {
    fn drop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            // An empty body that nobody polled still ended cleanly.
            let complete = self.inner.is_end_stream();
            g.finish(complete);
        }
    }
}
