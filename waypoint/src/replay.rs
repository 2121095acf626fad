//! The request body sent upstream: either complete (buffered, or empty),
//! or the downstream body streamed through while its first `limit` bytes
//! are kept so that a retry can send it again.
//!
//! Streaming is what gRPC client and bidirectional streams need (the
//! request never "ends" before the response starts); keeping a bounded
//! copy is what Envoy's retry buffer does. A body that outgrows the limit
//! goes on streaming but can no longer be replayed, so its request is not
//! retried.
//!
//! Every attempt holds an [`UpstreamBody`] cloned from the first. The
//! attempt that reads past what has been kept takes the downstream body
//! ("the source") out of the shared state and gives it back when dropped;
//! the next attempt replays the kept frames and then reads on from the
//! source. Attempts are sequential: one is retried only when the source is
//! back (or ended), see [`UpstreamBody::can_replay`].

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

use crate::body::BoxError;
use crate::limits::Reservation;

/// The downstream body (hyper's `Incoming` in the proxy).
type Source = BoxBody<Bytes, BoxError>;

/// Why an attempt's body could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the request body is still held by an earlier attempt")]
    SourceBusy,
    #[error("the request body outgrew the retry buffer and cannot be sent again")]
    NotReplayable,
    #[error("reading the request body: {0}")]
    Source(#[source] BoxError),
}

/// What every attempt of one request shares.
#[derive(Debug)]
struct Shared {
    /// The downstream body, while no attempt is reading from it.
    source: Option<Source>,
    /// Data frames read so far (while `kept_all`).
    kept: Vec<Bytes>,
    kept_len: usize,
    /// Every frame read so far is in `kept`.
    kept_all: bool,
    trailers: Option<HeaderMap>,
    /// The source has ended (`None` read, or its end of stream seen).
    ended: bool,
    /// Bytes read from the source in all.
    received: u64,
    /// The exact length of the whole body, when the source announced it.
    exact: Option<u64>,
    limit: usize,
    /// What `kept` holds of the process-wide body budget.
    reservation: Option<Reservation>,
}

impl Shared {
    fn keep(&mut self, data: &Bytes) {
        self.received += data.len() as u64;
        if !self.kept_all {
            return;
        }
        // Over the per-request limit or the shared budget: the body
        // streams on, not kept, and the request is not retried (nothing
        // has to be buffered to serve it, so no 503).
        let within_budget = self.reservation.as_mut().is_none_or(|r| r.grow(data.len()));
        if self.kept_len + data.len() > self.limit || !within_budget {
            self.kept_all = false;
            self.kept = Vec::new();
            self.reservation = None;
            return;
        }
        self.kept_len += data.len();
        self.kept.push(data.clone());
    }
}

enum Kind {
    /// A complete body: its one data frame, until sent, and what it holds
    /// of the body budget (given back when the last attempt drops it).
    Full(Option<Bytes>, Option<Arc<Reservation>>),
    Stream {
        shared: Arc<Mutex<Shared>>,
        /// Index of the next kept frame this attempt sends.
        next: usize,
        /// The source, while this attempt reads from it.
        source: Option<Source>,
        trailers_sent: bool,
        done: bool,
    },
}

/// The body of one upstream attempt (see the module docs).
pub struct UpstreamBody(Kind);

impl UpstreamBody {
    /// A complete body (empty for `Bytes::new()`).
    pub fn full(b: Bytes) -> Self {
        UpstreamBody(Kind::Full((!b.is_empty()).then_some(b), None))
    }

    /// A complete body that holds `reservation` of the body budget.
    pub fn full_within(b: Bytes, reservation: Reservation) -> Self {
        UpstreamBody(Kind::Full(
            (!b.is_empty()).then_some(b),
            Some(Arc::new(reservation)),
        ))
    }

    /// Streams `source`, keeping up to `limit` bytes for replays.
    pub fn streaming<B>(source: B, limit: usize) -> Self
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        Self::streaming_within(source, limit, None)
    }

    /// [`UpstreamBody::streaming`], the kept bytes taken from
    /// `reservation`'s budget too (past it, the body is no longer kept).
    pub fn streaming_within<B>(source: B, limit: usize, reservation: Option<Reservation>) -> Self
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let exact = source.size_hint().exact();
        let ended = source.is_end_stream();
        let source = source.map_err(Into::into).boxed();
        UpstreamBody(Kind::Stream {
            shared: Arc::new(Mutex::new(Shared {
                source: Some(source),
                kept: Vec::new(),
                kept_len: 0,
                kept_all: true,
                trailers: None,
                ended,
                received: 0,
                exact,
                limit,
                reservation,
            })),
            next: 0,
            source: None,
            trailers_sent: false,
            done: false,
        })
    }

    /// A fresh attempt's body: sends everything from the start. Only
    /// meaningful on the body no attempt has used, or when
    /// [`UpstreamBody::can_replay`].
    pub fn replay(&self) -> Self {
        match &self.0 {
            Kind::Full(b, held) => UpstreamBody(Kind::Full(b.clone(), held.clone())),
            Kind::Stream { shared, .. } => UpstreamBody(Kind::Stream {
                shared: shared.clone(),
                next: 0,
                source: None,
                trailers_sent: false,
                done: false,
            }),
        }
    }

    /// Whether another attempt can send this body from the start: all of it
    /// read so far is kept, and no earlier attempt still holds the source.
    pub fn can_replay(&self) -> bool {
        match &self.0 {
            Kind::Full(..) => true,
            Kind::Stream { shared, .. } => shared
                .lock()
                .map(|s| s.kept_all && (s.ended || s.source.is_some()))
                .unwrap_or(false),
        }
    }

    /// The body's length: exact when the downstream announced it or it is
    /// complete, else what has been read so far.
    pub fn len_so_far(&self) -> u64 {
        match &self.0 {
            Kind::Full(b, _) => b.as_ref().map_or(0, |b| b.len() as u64),
            Kind::Stream { shared, .. } => shared
                .lock()
                .map(|s| s.exact.unwrap_or(s.received))
                .unwrap_or(0),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let (shared, next, source, trailers_sent, done) = match &mut this.0 {
            Kind::Full(b, _) => return Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream {
                shared,
                next,
                source,
                trailers_sent,
                done,
            } => (shared, next, source, trailers_sent, done),
        };
        if *done {
            return Poll::Ready(None);
        }
        let Ok(mut s) = shared.lock() else {
            *done = true;
            return Poll::Ready(Some(Err(ReplayError::SourceBusy.into())));
        };
        // What earlier attempts (or this one) already read.
        if source.is_none() {
            // Something was read and not kept: this try cannot start over.
            if !s.kept_all && (*next > 0 || s.received > 0) {
                *done = true;
                return Poll::Ready(Some(Err(ReplayError::NotReplayable.into())));
            }
            if s.kept_all && *next < s.kept.len() {
                let data = s.kept[*next].clone();
                *next += 1;
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if s.ended {
                if let (false, Some(t)) = (*trailers_sent, s.trailers.clone()) {
                    *trailers_sent = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(t))));
                }
                *done = true;
                return Poll::Ready(None);
            }
            match s.source.take() {
                Some(src) => *source = Some(src),
                None => {
                    *done = true;
                    return Poll::Ready(Some(Err(ReplayError::SourceBusy.into())));
                }
            }
        }
        // Read on from the downstream body.
        let Some(src) = source.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(src).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.ended = true;
                s.source = source.take();
                *done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                // The downstream went away: nothing to replay either.
                s.ended = true;
                s.kept_all = false;
                *source = None;
                *done = true;
                Poll::Ready(Some(Err(ReplayError::Source(e).into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    s.keep(data);
                    if s.kept_all {
                        *next = s.kept.len();
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    s.trailers = Some(t.clone());
                    *trailers_sent = true;
                }
                if source.as_ref().is_some_and(Body::is_end_stream) {
                    s.ended = true;
                    s.source = source.take();
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Full(b, _) => b.is_none(),
            Kind::Stream { done, .. } => *done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Full(b, _) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream { shared, next, .. } => {
                let exact = shared.lock().ok().and_then(|s| s.exact);
                // Only a body not started yet knows what is left exactly.
                match (exact, *next) {
                    (Some(n), 0) => SizeHint::with_exact(n),
                    _ => SizeHint::default(),
                }
            }
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Give the source back for the next attempt.
        if let Kind::Stream { shared, source, .. } = &mut self.0 {
            if let (Some(src), Ok(mut s)) = (source.take(), shared.lock()) {
                s.source = Some(src);
            }
        }
    }
}

/// A copy is a fresh attempt's body ([`UpstreamBody::replay`]).
impl Clone for UpstreamBody {
    fn clone(&self) -> Self {
        self.replay()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use super::*;

    /// A downstream body of these frames; `exact` is what it announces.
    struct Frames {
        frames: VecDeque<Frame<Bytes>>,
        exact: Option<u64>,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.get_mut().frames.pop_front().map(Ok))
        }
        fn size_hint(&self) -> SizeHint {
            self.exact
                .map_or_else(SizeHint::default, SizeHint::with_exact)
        }
    }

    fn source(parts: &[&'static str], trailer: bool) -> Frames {
        let mut frames: VecDeque<_> = parts
            .iter()
            .map(|p| Frame::data(Bytes::from_static(p.as_bytes())))
            .collect();
        if trailer {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static("0"));
            frames.push_back(Frame::trailers(t));
        }
        Frames {
            frames,
            exact: None,
        }
    }

    /// Reads `n` frames (all when `None`): data concatenated, trailers'
    /// `grpc-status`, the first error.
    async fn read(
        b: &mut UpstreamBody,
        n: Option<usize>,
    ) -> (String, Option<String>, Option<String>) {
        let (mut data, mut trailer) = (String::new(), None);
        let mut read = 0;
        while n.is_none_or(|n| read < n) {
            match b.frame().await {
                None => break,
                Some(Err(e)) => return (data, trailer, Some(e.to_string())),
                Some(Ok(f)) => {
                    read += 1;
                    if let Some(d) = f.data_ref() {
                        data.push_str(std::str::from_utf8(d).unwrap_or("?"));
                    } else if let Some(t) = f.trailers_ref() {
                        trailer = t
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                    }
                }
            }
        }
        (data, trailer, None)
    }

    #[tokio::test]
    async fn full_bodies_replay_and_empty_ones_end_at_once() {
        let b = UpstreamBody::full(Bytes::from_static(b"hello"));
        assert_eq!(b.size_hint().exact(), Some(5));
        let mut first = b.replay();
        assert_eq!(read(&mut first, None).await.0, "hello");
        assert!(b.can_replay());
        assert_eq!(read(&mut b.replay(), None).await.0, "hello");
        let empty = UpstreamBody::full(Bytes::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn a_stream_is_sent_through_then_replayed_with_its_trailers() {
        let b = UpstreamBody::streaming(source(&["ab", "cd", "ef"], true), 1024);
        let mut first = b.replay();
        assert_eq!(
            read(&mut first, None).await,
            ("abcdef".into(), Some("0".into()), None)
        );
        assert_eq!(b.len_so_far(), 6);
        drop(first);
        assert!(b.can_replay());
        assert_eq!(
            read(&mut b.replay(), None).await,
            ("abcdef".into(), Some("0".into()), None)
        );
    }

    #[tokio::test]
    async fn a_try_cut_short_hands_the_rest_to_the_next() {
        let b = UpstreamBody::streaming(source(&["ab", "cd", "ef"], false), 1024);
        let mut first = b.replay();
        assert_eq!(read(&mut first, Some(1)).await.0, "ab");
        // Still reading: the next try must wait for it to be dropped.
        assert!(!b.can_replay());
        drop(first);
        assert!(b.can_replay());
        let mut second = b.replay();
        assert_eq!(read(&mut second, None).await.0, "abcdef");
        drop(second);
        assert_eq!(read(&mut b.replay(), None).await.0, "abcdef");
    }

    #[tokio::test]
    async fn a_body_over_the_shared_budget_streams_but_is_not_replayed() {
        let metrics = crate::limits::LimitMetrics::register(
            &mut prometheus_client::registry::Registry::default(),
        );
        let budget = crate::limits::BodyBudget::new(6, &metrics);
        // Another request holds 2 of the 6 bytes.
        let mut other = budget.reservation();
        assert!(other.grow(2));
        let b = UpstreamBody::streaming_within(
            source(&["abc", "def"], false),
            1024,
            Some(budget.reservation()),
        );
        let mut first = b.replay();
        assert_eq!(read(&mut first, None).await.0, "abcdef");
        drop(first);
        assert!(!b.can_replay(), "4 bytes of budget cannot keep 6");
        assert_eq!(budget.used(), 2, "what was kept is given back at once");
        drop(other);
        let b = UpstreamBody::streaming_within(
            source(&["abc"], false),
            1024,
            Some(budget.reservation()),
        );
        let mut first = b.replay();
        assert_eq!(read(&mut first, None).await.0, "abc");
        drop(first);
        assert!(b.can_replay());
        assert_eq!(budget.used(), 3);
        drop(b);
        assert_eq!(
            budget.used(),
            0,
            "the last attempt gives the kept bytes back"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_streams_but_is_not_replayed() {
        let b = UpstreamBody::streaming(source(&["abcd", "efgh", "ij"], false), 6);
        let mut first = b.replay();
        assert_eq!(read(&mut first, None).await.0, "abcdefghij");
        drop(first);
        assert!(!b.can_replay());
        let (data, _, err) = read(&mut b.replay(), None).await;
        assert_eq!(data, "");
        assert!(err.is_some_and(|e| e.contains("retry buffer")));
    }

    #[tokio::test]
    async fn an_announced_length_is_passed_on_to_each_try() {
        let mut src = source(&["abc", "de"], false);
        src.exact = Some(5);
        let b = UpstreamBody::streaming(src, 1024);
        let mut first = b.replay();
        assert_eq!(first.size_hint().exact(), Some(5));
        assert_eq!(b.len_so_far(), 5);
        assert_eq!(read(&mut first, None).await.0, "abcde");
        drop(first);
        let second = b.replay();
        assert_eq!(second.size_hint().exact(), Some(5));
    }
}
