//! One HTTP request: a place under the concurrency cap (else 503), a new store and
//! instance (the spare made ahead of it, if there is one), metered into the run's usage and cgroup, and the guest's response (else a
//! 500 or 503 saying why there is none).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::{WasiBody, WasiHttpView};

use super::instance::{self, Outcome};
use super::spare::Ready;
use super::{HttpStats, Server};
use tracing::instrument::WithSubscriber;

use crate::usage::Metered;

/// Answers one request.
pub(crate) async fn handle(server: &Arc<Server>, request: hyper::Request<Incoming>) -> Response<WasiBody> {
    HttpStats::count(&server.stats.requests);
    let Ok(slot) = Arc::clone(&server.slots).try_acquire_owned() else {
        HttpStats::count(&server.stats.over_capacity);
        tracing::debug!(digest = %server.digest, "HTTP request refused: the concurrency cap is reached");
        let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, "too many requests in flight\n");
        response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return response;
    };
    let deadline = Instant::now() + server.limits.request_timeout;
    // Its turn to start (see `lanes`): until then it holds no instance.
    let Ok(lane) = tokio::time::timeout_at(deadline.into(), server.lanes.enter()).await else {
        HttpStats::count(&server.stats.timed_out);
        tracing::warn!(digest = %server.digest, timeout = ?server.limits.request_timeout,
            "HTTP request failed: it waited for its turn past the request timeout");
        return plain(StatusCode::INTERNAL_SERVER_ERROR, Outcome::TimedOut.explain());
    };
    let started = Instant::now();
    let (mut store, ready) = match server.spare.take().await {
        Some(Ready { mut store, proxy, took }) => {
            store.data_mut().deadline = deadline;
            (store, Some((proxy, took)))
        }
        None => match server.template.store(server.pre.engine(), deadline) {
            Ok(store) => (store, None),
            Err(err) => return failed(server, &format!("setting up the instance: {err}")),
        },
    };
    let (sender, receiver) = oneshot::channel();
    let resources = {
        let mut http = store.data_mut().http();
        http.new_incoming_request(Scheme::Http, request)
            .and_then(|request| Ok((request, http.new_response_outparam(sender)?)))
    };
    let (request, response) = match resources {
        Ok(resources) => resources,
        Err(err) => return failed(server, &format!("passing the request to the guest: {err:?}")),
    };
    let instance = instance::run(Arc::clone(server), store, ready, request, response, started, (slot, lane));
    let metered = Metered::new(instance, server.template.meter.clone());
    let guest = server.tracker.spawn(metered.with_current_subscriber());
    match receiver.await {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => guest_error(server, &code),
        Err(_no_response) => {
            let outcome = guest.await.unwrap_or(Outcome::Cut);
            if outcome == Outcome::Finished {
                HttpStats::count(&server.stats.trapped);
                tracing::warn!(digest = %server.digest, "HTTP request failed: the guest sent no response");
            }
            let status = match outcome {
                Outcome::Cut | Outcome::PoolFull | Outcome::OverMemory(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            plain(status, outcome.explain())
        }
    }
}

/// The host could not hand the request to a guest: a 500, counted with the traps.
fn failed(server: &Server, why: &str) -> Response<WasiBody> {
    HttpStats::count(&server.stats.trapped);
    tracing::warn!(digest = %server.digest, "HTTP request failed: {why}");
    plain(StatusCode::INTERNAL_SERVER_ERROR, "the guest could not be started\n")
}

/// The guest answered with an error code instead of a response: a 500 naming it (the
/// guest chose this; it is not counted as a failure).
fn guest_error(server: &Server, code: &ErrorCode) -> Response<WasiBody> {
    tracing::debug!(digest = %server.digest, ?code, "the guest answered with an error code");
    plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("the guest answered with an error: {code:?}\n"))
}

/// A short text response from the host.
fn plain(status: StatusCode, text: &str) -> Response<WasiBody> {
    let body = Full::new(Bytes::from(text.to_owned())).map_err(|never| match never {}).boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    response
}
