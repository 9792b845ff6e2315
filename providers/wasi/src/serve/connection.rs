//! One client connection: HTTP/1.1 with keep-alive and a header timeout, closed after the
//! request in flight once the server drains, dropped at once when it cuts.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::{Server, request};

/// A client must send a request's whole head within this long, also to keep an idle
/// keep-alive connection open.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Request heads larger than this get a 431.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Writing the 503 to a refused connection gives up after this long.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves requests on `stream` until the client closes it, the server drains (after
/// the request in flight) or the server cuts (at once).
pub(crate) async fn serve(server: Arc<Server>, stream: TcpStream, _permit: OwnedSemaphorePermit) {
    // Small guest writes should leave at once, not wait a round trip.
    let _ = stream.set_nodelay(true);
    let handler = Arc::clone(&server);
    let service = service_fn(move |req| {
        let server = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(request::handle(&server, req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        biased;
        () = server.cut.cancelled() => return,
        () = server.draining.cancelled() => {}
        served = connection.as_mut() => return log_end(served),
    }
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        biased;
        () = server.cut.cancelled() => {}
        served = connection => log_end(served),
    }
}

fn log_end(served: Result<(), hyper::Error>) {
    if let Err(err) = served {
        tracing::debug!(%err, "HTTP connection ended with an error");
    }
}

/// Answers 503 on a connection over the cap, without reading the request, and closes it.
pub(crate) async fn refuse(server: Arc<Server>, mut stream: TcpStream) {
    const BODY: &str = "too many connections\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    tracing::debug!("connection refused: the connection cap is reached");
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    tokio::select! {
        () = server.cut.cancelled() => {}
        _ = tokio::time::timeout(REFUSE_TIMEOUT, write) => {}
    }
}
