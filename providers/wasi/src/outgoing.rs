//! Outgoing `wasi:http` requests from any guest: the host resolved through the run's
//! [`Lookups`](crate::Lookups), each address put to the run's rules (only allowed ones are
//! dialled, in order), then HTTP/1.1 over TCP, or over rustls (ring) checked against the
//! system's root certificates, with connect and read timeouts.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::net::{GuestNet, LookupError, allowed_destinations};

/// Connecting (TCP and TLS) gives up after this unless the guest asks otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Waiting for the response head, then for each body frame, gives up after this unless
/// the guest asks otherwise.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The hooks every guest store uses: wasi:http defaults, plus [`send`] for requests,
/// judged by the store's networking (its run's rules and lookups).
#[derive(Clone)]
pub(crate) struct Outgoing {
    pub(crate) net: GuestNet,
}

impl Outgoing {
    pub(crate) fn new(net: GuestNet) -> Self {
        Outgoing { net }
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type Sent = Result<(http::Response<WasiBody>, IoFuture), Error>;

impl WasiHttpHooks for Outgoing {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_done: IoFuture,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        Box::new(send(request, options.unwrap_or_default(), self.net.clone()))
    }
}

/// The client TLS configuration, built on first use: ring, TLS 1.2 and 1.3, HTTP/1.1
/// over ALPN, and every root certificate the system's trust store holds.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static TLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    Arc::clone(TLS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for err in &loaded.errors {
            tracing::warn!(%err, "could not read a system root certificate");
        }
        let mut roots = rustls::RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
        if added == 0 {
            tracing::warn!("no system root certificates: HTTPS requests from guests will fail");
        }
        tracing::debug!(added, ignored, "loaded system root certificates for guest HTTPS");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
            // ring supports the default versions; this arm is unreachable in practice.
            Err(err) => {
                tracing::error!(%err, "TLS setup failed; guest HTTPS uses rustls defaults");
                rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth()
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }))
}

/// Sends one request on a new connection and returns its response once the head has
/// arrived, with the future that drives the rest of the connection.
async fn send(mut request: http::Request<WasiBody>, options: RequestOptions, net: GuestNet) -> Sent {
    let connect_timeout = options.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let first_byte = options.first_byte_timeout.unwrap_or(DEFAULT_READ_TIMEOUT);
    let between_bytes = options.between_bytes_timeout.unwrap_or(DEFAULT_READ_TIMEOUT);
    let uri = request.uri();
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let tls = uri.scheme() == Some(&Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });

    let stream = within(connect_timeout, Error::ConnectionTimeout, connect(&host, port, &net)).await??;
    // Nagle would hold small request writes back for a round trip.
    let _ = stream.set_nodelay(true);
    let io: Box<dyn Stream> = if tls {
        let name = server_name(&host)?;
        let handshake = TlsConnector::from(tls_config()).connect(name, stream);
        Box::new(within(connect_timeout, Error::ConnectionTimeout, handshake).await?.map_err(tls_error)?)
    } else {
        Box::new(stream)
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;

    // The request line carries only the path: we talk to the origin, not to a proxy.
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;

    // The connection must be polled for the response to arrive.
    let mut connection = Some(Box::pin(connection));
    let response = within(first_byte, Error::ConnectionReadTimeout, async {
        let response = sender.send_request(request);
        tokio::pin!(response);
        loop {
            let Some(driving) = connection.as_mut() else { break response.await };
            tokio::select! {
                response = &mut response => break response,
                closed = driving => {
                    connection = None;
                    closed?;
                }
            }
        }
    })
    .await??;
    let response = response.map(|incoming| ReadTimeout::new(incoming, between_bytes).boxed_unsync());
    let rest: IoFuture = Box::new(async move {
        match connection {
            Some(connection) => connection.await.map_err(Error::from),
            None => Ok(()),
        }
    });
    Ok((response, rest))
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Stream for T {}

/// Resolves `host` (an IP address is taken as is) and connects to the first address the
/// rules allow that answers. Every address refused: `HTTP-request-denied`.
async fn connect(host: &str, port: u16, net: &GuestNet) -> Result<TcpStream, Error> {
    let ips = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match net.lookups() {
            Some(lookups) => lookups.resolve(host).await.map_err(dns_error)?,
            None => return Err(dns_error(LookupError::NotAllowed)),
        },
    };
    let allowed = allowed_destinations(&*net.rules, ips.iter().copied(), port);
    if allowed.is_empty() {
        tracing::debug!(host, port, ?ips, "outgoing HTTP request denied: no address is allowed");
        return Err(if ips.is_empty() { Error::DestinationNotFound } else { Error::HttpRequestDenied });
    }
    let mut last = None;
    for addr in allowed {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some((addr, err)),
        }
    }
    Err(last.map_or(Error::DestinationNotFound, |(addr, err): (SocketAddr, _)| {
        tracing::debug!(%addr, %err, "outgoing HTTP connection failed");
        Error::Connect(err)
    }))
}

/// A failed lookup as wasi:http says it.
fn dns_error(err: LookupError) -> Error {
    match err {
        LookupError::TimedOut => Error::DnsTimeout,
        err => Error::DnsError { rcode: Some(err.to_string()), info_code: None },
    }
}

/// The name the server's certificate must carry: an IP address or a DNS name.
fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(host.to_owned()).map_err(|_| Error::DnsError {
        rcode: Some(format!("{host:?} is not a valid DNS name")),
        info_code: None,
    })
}

/// A failed handshake: a certificate the system roots do not vouch for (or that names
/// another host) is `tls-certificate-error`; anything else `tls-protocol-error`.
fn tls_error(err: std::io::Error) -> Error {
    let rustls_error = err.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidCertificate(reason)) => {
            tracing::debug!(?reason, "guest HTTPS: server certificate refused");
            Error::TlsCertificateError
        }
        _ => Error::Tls(err),
    }
}

async fn within<T>(limit: Duration, timeout: Error, work: impl Future<Output = T>) -> Result<T, Error> {
    tokio::time::timeout(limit, work).await.map_err(|_| timeout)
}

/// A response body that fails when no frame arrives within its timeout.
struct ReadTimeout {
    body: Incoming,
    limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl ReadTimeout {
    fn new(body: Incoming, limit: Duration) -> Self {
        ReadTimeout { body, limit, timer: Box::pin(tokio::time::sleep(limit)) }
    }
}

impl Body for ReadTimeout {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + this.limit;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(frame.map(|frame| frame.map_err(Error::from)))
            }
            Poll::Pending => {
                ready!(this.timer.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_for_ips_and_hosts() {
        assert_eq!(server_name("127.0.0.1").unwrap(), ServerName::from(IpAddr::from([127, 0, 0, 1])));
        assert!(matches!(server_name("::1").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(server_name("example.com").unwrap(), ServerName::DnsName(_)));
        assert!(server_name("bad name!").is_err());
    }

    /// Debian's ca-certificates is on every machine this runs on.
    #[test]
    fn system_roots_are_loaded() {
        let config = tls_config();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(rustls_native_certs::load_native_certs().certs.len() > 10);
    }
}
