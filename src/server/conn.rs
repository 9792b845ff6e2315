//! One kubelet API connection from accept to close: the TLS handshake (within the
//! read-header timeout), who the client is, the cap on connections without a verified client
//! certificate (answered 503 beyond it), and HTTP/1.1 served by hyper under the read-header
//! and idle timeouts that [`Activity`] keeps. hyper runs without a timer of its own: its
//! header timeout would also close idle kept-alive connections at the same deadline.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use http::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use super::Caller;
use super::activity::{Activity, Watched, after, tracked};
use super::tls::Authenticator;
use crate::config::ApiLimits;

/// What every connection of one listener shares.
pub(super) struct Shared {
    pub(super) acceptor: TlsAcceptor,
    pub(super) app: Router,
    pub(super) authn: Authenticator,
    pub(super) limits: ApiLimits,
    anonymous: Anonymous,
}

impl Shared {
    pub(super) fn new(acceptor: TlsAcceptor, app: Router, authn: Authenticator, limits: ApiLimits) -> Self {
        let anonymous = Anonymous {
            slots: Arc::new(Semaphore::new(limits.max_anonymous_connections as usize)),
            refusing: AtomicBool::new(false),
            refused: AtomicU64::new(0),
        };
        Shared { acceptor, app, authn, limits, anonymous }
    }
}

/// The slots for connections without a verified client certificate.
struct Anonymous {
    slots: Arc<Semaphore>,
    /// Refusing since the last admission: a flood is logged when it starts and ends.
    refusing: AtomicBool,
    refused: AtomicU64,
}

impl Anonymous {
    fn admit(&self, limit: u32) -> Option<OwnedSemaphorePermit> {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => {
                if self.refusing.swap(false, Ordering::AcqRel) {
                    let refused = self.refused.swap(0, Ordering::AcqRel);
                    info!(refused, "kubelet API: admitting connections without a client certificate again");
                }
                Some(slot)
            }
            Err(_) => {
                self.refused.fetch_add(1, Ordering::AcqRel);
                if !self.refusing.swap(true, Ordering::AcqRel) {
                    warn!(
                        limit,
                        "kubelet API: too many connections without a verified client certificate \
                         (--api-max-anonymous-connections); answering 503 until some close"
                    );
                }
                None
            }
        }
    }
}

/// Serves one accepted connection; `slot` is its place under `--api-max-connections`, kept
/// (with its anonymous one) by the connection's stream, so an upgraded exec stream keeps
/// them until it ends.
pub(super) async fn serve(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, slot: OwnedSemaphorePermit) {
    let limits = shared.limits;
    // The handshake counts against the first request's header deadline, as in Go.
    let activity = Activity::new(limits.read_header_timeout, limits.idle_timeout);
    let deadline = after(Instant::now(), limits.read_header_timeout);
    let tls = match tokio::time::timeout_at(deadline, shared.acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => return debug!(%peer, "TLS handshake not done within the read-header timeout"),
    };
    let certs: Vec<_> =
        (tls.get_ref().1.peer_certificates().into_iter().flatten()).map(|c| c.clone().into_owned()).collect();
    let identity = shared.authn.authenticate(&certs);
    let mut slots = vec![slot];
    if identity.is_err() {
        match shared.anonymous.admit(limits.max_anonymous_connections) {
            Some(anonymous) => slots.push(anonymous),
            None => return refuse(tls, deadline, limits.max_anonymous_connections).await,
        }
    }
    let caller = Caller(identity, peer);
    let (app, watch) = (shared.app.clone(), activity.clone());
    let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let request = watch.begin();
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(caller.clone());
        let (app, watch) = (app.clone(), watch.clone());
        async move {
            let res = app.oneshot(req).await?;
            if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                watch.upgraded();
            }
            Ok::<_, Infallible>(res.map(|body| tracked(body, request)))
        }
    });
    let io = TokioIo::new(Watched::new(tls, activity.clone(), slots));
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).with_upgrades();
    tokio::select! {
        ended = conn => if let Err(e) = ended {
            debug!(%peer, error = %e, "connection ended with an error");
        },
        why = activity.expired() => debug!(%peer, ?why, "closing the connection: timed out"),
    }
}

/// Answers a connection over the anonymous cap with a 503 and closes it, reading (and
/// dropping) what the client sent meanwhile so the close does not reset the connection
/// before the client has read the answer.
async fn refuse(mut tls: TlsStream<TcpStream>, deadline: Instant, limit: u32) {
    let body = format!(
        "too many connections without a client certificate signed by the cluster CA (at most {limit}); try again later\n"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let send = async {
        tls.write_all(answer.as_bytes()).await?;
        tls.shutdown().await?;
        let mut drained = [0u8; 4096];
        let mut total = 0;
        while total < 64 * 1024 {
            match tls.read(&mut drained).await? {
                0 => break,
                n => total += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout_at(deadline, send).await;
}
