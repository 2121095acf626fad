//! Fault injection, after rate limit and before the route's action, as
//! Envoy's fault filter runs before the router: the delay first (the
//! request's response flags get `DI`), then the abort (`FI`), with the
//! route's response header operations.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;

use super::reply::Reply;
use crate::body::{full, local_reply};
use crate::fault::AbortWith;
use crate::routes::Route;
use crate::telemetry::{flagged, RequestMeta, ResponseFlag};

/// Delays or aborts the request as the route's fault policy draws.
pub async fn inject(route: &Route, meta: &mut RequestMeta) -> Result<(), Reply> {
    let Some(f) = &route.fault else {
        return Ok(());
    };
    let d = f.decide(&mut rand::thread_rng());
    if let Some(delay) = d.delay {
        meta.delayed = true;
        tokio::time::sleep(delay).await;
    }
    if let Some(a) = d.abort {
        let mut r = abort_reply(a);
        route.headers.response.apply(r.headers_mut());
        return Err(r);
    }
    Ok(())
}

/// An HTTP status, or a gRPC status as a trailers-only response.
fn abort_reply(a: AbortWith) -> Reply {
    let r = match a {
        AbortWith::Http(code) => local_reply(code, "fault filter abort"),
        AbortWith::Grpc(code) => {
            let mut r = Response::new(full(Bytes::new()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            r.headers_mut()
                .insert("grpc-status", HeaderValue::from(code));
            r.headers_mut().insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            r
        }
    };
    flagged(r, ResponseFlag::FAULT_ABORT)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::StatusCode;

    use super::*;
    use crate::fault::FaultPolicy;

    fn route(fault: FaultPolicy) -> Route {
        let mut r = Route::default_for("svc");
        r.fault = Some(fault);
        r
    }

    #[tokio::test]
    async fn no_fault_passes() {
        let mut meta = RequestMeta::default();
        assert!(inject(&Route::default_for("svc"), &mut meta).await.is_ok());
        assert!(!meta.delayed);
    }

    #[tokio::test]
    async fn a_delay_is_marked_then_an_abort_answers() {
        let r = route(FaultPolicy {
            delay: Some((Duration::from_millis(1), 100.0)),
            abort: Some((AbortWith::Http(StatusCode::IM_A_TEAPOT), 100.0)),
        });
        let mut meta = RequestMeta::default();
        let Err(resp) = inject(&r, &mut meta).await else {
            panic!("a 100% abort")
        };
        assert!(meta.delayed);
        assert_eq!(resp.status(), StatusCode::IM_A_TEAPOT);
        assert_eq!(
            resp.extensions().get::<ResponseFlag>(),
            Some(&ResponseFlag::FAULT_ABORT)
        );
    }

    #[test]
    fn a_grpc_abort_is_a_trailers_only_status() {
        let r = abort_reply(AbortWith::Grpc(14));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "fault filter abort");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/grpc");
    }
}
