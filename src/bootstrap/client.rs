//! The node's one kube `Client`, whose transport is replaced in place when the client
//! certificate is renewed: every holder (the pod watch, the heartbeat and Lease, events,
//! the authorizer, the object cache) keeps its clone and sends its next request with the
//! new certificate. Nothing has to be rebuilt or told.
//!
//! The `Client` everyone holds dispatches each request to the current inner `Client`:
//! kube's own stack, built from the kubeconfig (TLS, timeouts, retries, auth). Replacing the
//! inner one changes where new requests go. A request in flight (a watch) finishes on the
//! connection it started on (the API server authenticated it when it began) and the one
//! after it starts on a new connection. The old inner client and its connections go once
//! its last request has ended.
//!
//! At most [`crate::config::API_CLIENT_MAX_IN_FLIGHT`] requests are in flight at once
//! (watches aside): each is a connection, and a burst must not open hundreds.

use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use tokio::sync::Semaphore;
use tower::BoxError;

/// Replaces the transport of the client [`ClientSwap::new`] returned.
#[derive(Clone)]
pub struct ClientSwap {
    current: Arc<RwLock<Client>>,
    /// Permits for requests in flight.
    in_flight: Arc<Semaphore>,
}

impl ClientSwap {
    /// The client to hand to every part of the agent, sending through `first` until
    /// [`ClientSwap::replace`] is called, and the handle that replaces it.
    pub fn new(first: Client) -> (Client, ClientSwap) {
        let namespace = first.default_namespace().to_string();
        let in_flight = Arc::new(Semaphore::new(crate::config::API_CLIENT_MAX_IN_FLIGHT));
        let swap = ClientSwap { current: Arc::new(RwLock::new(first)), in_flight };
        (Client::new(Dispatch(swap.clone()), namespace), swap)
    }

    /// From now on, every request of every clone goes through `next`.
    pub fn replace(&self, next: Client) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
    }

    fn current(&self) -> Client {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The service inside the shared client: one request, sent through the current client.
struct Dispatch(ClientSwap);

impl tower::Service<Request<Body>> for Dispatch {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The inner client queues its own requests.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let client = self.0.current();
        // A watch holds its connection for minutes: it takes no permit.
        let limit = (!is_watch(&request)).then(|| self.0.in_flight.clone());
        // Status codes pass through as responses; the outer client turns them into the
        // same `kube::Error::Api` as before, and unwraps a transport error back into the
        // `kube::Error` the inner one returned.
        Box::pin(async move {
            let _permit = match &limit {
                Some(limit) => Some(limit.acquire().await.map_err(BoxError::from)?),
                None => None,
            };
            client.send(request).await.map_err(BoxError::from)
        })
    }
}

/// A `?watch=true` (or `watch=1`) request: a stream that stays open.
fn is_watch<B>(request: &Request<B>) -> bool {
    let query = request.uri().query().unwrap_or("");
    query.split('&').any(|p| p == "watch=true" || p == "watch=1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Api;
    use tokio::sync::oneshot;

    /// Holds a request: says when it arrived, answers when opened.
    type Gate = (oneshot::Sender<()>, oneshot::Receiver<()>);

    /// A client answering every request with `tag` in a header (and status `code`); the
    /// first request waits on `gate` if one is given.
    fn tagged(tag: &'static str, code: u16, gate: Option<Gate>) -> Client {
        let gate = Arc::new(std::sync::Mutex::new(gate));
        let svc = tower::service_fn(move |_req: Request<Body>| {
            let gate = gate.lock().unwrap().take();
            async move {
                if let Some((arrived, open)) = gate {
                    let _ = arrived.send(());
                    let _ = open.await;
                }
                let body = if code == 200 {
                    br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#.to_vec()
                } else {
                    format!(r#"{{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":{code}}}"#)
                        .into_bytes()
                };
                Ok::<_, std::convert::Infallible>(
                    Response::builder().status(code).header("x-inner", tag).body(Body::from(body)).unwrap(),
                )
            }
        });
        Client::new(svc, "default")
    }

    async fn inner_of(client: &Client) -> String {
        let response =
            client.send(Request::get("/api/v1/namespaces").body(Body::from(Vec::new())).unwrap()).await;
        response.unwrap().headers()["x-inner"].to_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn every_clone_sends_through_the_new_client_once_replaced() {
        let (client, swap) = ClientSwap::new(tagged("old", 200, None));
        let held = client.clone(); // e.g. the heartbeat's, taken at start
        assert_eq!(inner_of(&held).await, "old");
        swap.replace(tagged("new", 200, None));
        assert_eq!(inner_of(&held).await, "new");
        assert_eq!(inner_of(&client).await, "new");
        let cm: ConfigMap = Api::default_namespaced(held).get("x").await.unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("x"));
    }

    #[tokio::test]
    async fn a_request_in_flight_finishes_on_the_client_it_started_on() {
        let (open, gate) = oneshot::channel();
        let (arrived_tx, arrived) = oneshot::channel();
        let (client, swap) = ClientSwap::new(tagged("old", 200, Some((arrived_tx, gate))));
        let in_flight = tokio::spawn({
            let client = client.clone();
            async move { inner_of(&client).await }
        });
        arrived.await.unwrap(); // a long request (a watch) is under way on the old client
        swap.replace(tagged("new", 200, None));
        assert_eq!(inner_of(&client).await, "new", "new requests do not wait for the old one");
        open.send(()).unwrap();
        assert_eq!(in_flight.await.unwrap(), "old");
    }

    #[tokio::test]
    async fn requests_past_the_cap_wait_their_turn_and_watches_do_not_count() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::Duration;
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let release = Arc::new(Semaphore::new(0));
        let svc = {
            let (now, peak, release) = (now.clone(), peak.clone(), release.clone());
            tower::service_fn(move |req: Request<Body>| {
                let (now, peak, release) = (now.clone(), peak.clone(), release.clone());
                async move {
                    if !is_watch(&req) {
                        peak.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                        release.acquire().await.unwrap().forget();
                        now.fetch_sub(1, Ordering::SeqCst);
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(Body::from(b"{}".to_vec())))
                }
            })
        };
        let (client, _swap) = ClientSwap::new(Client::new(svc, "default"));
        let send = |uri: &'static str| {
            let client = client.clone();
            tokio::spawn(
                async move { client.send(Request::get(uri).body(Body::from(Vec::new())).unwrap()).await },
            )
        };
        let cap = crate::config::API_CLIENT_MAX_IN_FLIGHT;
        let held: Vec<_> = (0..cap + 8).map(|_| send("/api/v1/namespaces")).collect();
        while now.load(Ordering::SeqCst) < cap {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(peak.load(Ordering::SeqCst), cap, "the rest wait");
        let watch =
            tokio::time::timeout(Duration::from_secs(5), send("/api/v1/pods?watch=true&resourceVersion=1"));
        assert!(watch.await.expect("a watch is not held back").unwrap().is_ok());
        release.add_permits(cap + 8);
        for request in held {
            assert!(request.await.unwrap().is_ok());
        }
        assert_eq!(peak.load(Ordering::SeqCst), cap);
    }

    #[tokio::test]
    async fn api_errors_reach_the_caller_as_before() {
        let (client, _swap) = ClientSwap::new(tagged("old", 404, None));
        match Api::<ConfigMap>::default_namespaced(client).get("x").await {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 404),
            other => panic!("expected a 404 Api error, got {other:?}"),
        }
    }
}
