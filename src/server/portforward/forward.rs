//! One forwarded connection: dial the pod's port at the address pods listen on (loopback,
//! or `--pod-listen-address` when that is one address: pods use the node's network, so a
//! pod's port is a port of the node), then copy both ways. As containerd does for the
//! kubelet: when the pod's side ends the forward ends; when the client's side ends first, the
//! pod gets its end of file and [`LINGER`] to answer, then the forward ends. Errors on the
//! pod's side (the dial included) are returned, for the error stream; the client's are not
//! (it is gone).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Target;

/// How long dialing the pod's port may take. On loopback a port either answers or refuses
/// at once; only a full accept queue makes a dial wait.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the pod has to finish once the client half-closed: containerd's (`socat -t`
/// has the same idea), so a pod that never closes cannot hold the forward.
pub const LINGER: Duration = Duration::from_secs(1);
/// The copy buffer of each direction.
const BUFFER: usize = 16 * 1024;

/// Why a forwarded connection failed, worded as Go's net package words it (kubectl users
/// know these from the kubelet).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("pod {0} is not running on this node any more")]
    PodGone(String),
    #[error("dial {} {to}: connect: {why}", net(to))]
    Dial { to: SocketAddr, why: String },
    #[error("dial {} {to}: i/o timeout", net(to))]
    DialTimeout { to: SocketAddr },
    #[error("{op} {} {to}: {why}", net(to))]
    Io { op: &'static str, to: SocketAddr, why: String },
}

/// Go's network name for `addr`'s family.
fn net(addr: &SocketAddr) -> &'static str {
    if addr.is_ipv4() { "tcp4" } else { "tcp6" }
}

/// One end of a forward.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Pod,
    Client,
}

/// How a copy failed: on the pod's side (with the operation), or on the client's.
enum Failure {
    Pod { op: &'static str, error: io::Error },
    Client,
}

/// Forwards one connection between the client's stream (`from_client`, `to_client`) and
/// `port` of the pod. `to_client` is half-closed once the pod's side ends.
pub async fn forward<R, W>(
    target: &Target,
    port: u16,
    from_client: &mut R,
    to_client: &mut W,
) -> Result<(), ForwardError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    target.check()?;
    let to = SocketAddr::new(target.address, port);
    let tcp = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(to)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(ForwardError::Dial { to, why: describe(&e) }),
        Err(_) => return Err(ForwardError::DialTimeout { to }),
    };
    let _ = tcp.set_nodelay(true);
    let (mut pod_r, mut pod_w) = tcp.into_split();
    let up = async {
        let copied = pump(from_client, &mut pod_w, End::Client, End::Pod).await;
        let _ = pod_w.shutdown().await;
        copied
    };
    let down = async {
        let copied = pump(&mut pod_r, to_client, End::Pod, End::Client).await;
        let _ = to_client.shutdown().await;
        copied
    };
    tokio::pin!(up, down);
    let result = tokio::select! {
        sent = &mut up => match sent {
            Ok(()) => tokio::time::timeout(LINGER, &mut down).await.unwrap_or(Ok(())),
            Err(e) => Err(e),
        },
        received = &mut down => received,
    };
    match result {
        Err(Failure::Pod { op, error }) => Err(ForwardError::Io { op, to, why: describe(&error) }),
        Ok(()) | Err(Failure::Client) => Ok(()),
    }
}

/// Copies until `r` ends, saying which end an error came from.
async fn pump<R, W>(r: &mut R, w: &mut W, reading: End, writing: End) -> Result<(), Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let failure = |end: End, op: &'static str, error: io::Error| match end {
        End::Pod => Failure::Pod { op, error },
        End::Client => Failure::Client,
    };
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = r.read(&mut buf).await.map_err(|e| failure(reading, "read", e))?;
        if n == 0 {
            return Ok(());
        }
        w.write_all(&buf[..n]).await.map_err(|e| failure(writing, "write", e))?;
    }
}

/// An I/O error as Go prints it: `connection refused`, not `Connection refused (os error 111)`.
fn describe(e: &io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_as_go_prints_them() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let raw = io::Error::from_raw_os_error(111);
        assert_eq!(describe(&raw), "connection refused");
        assert!(!describe(&refused).is_empty());
        let e = ForwardError::Dial { to: "127.0.0.1:8080".parse().unwrap(), why: describe(&raw) };
        assert_eq!(e.to_string(), "dial tcp4 127.0.0.1:8080: connect: connection refused");
        assert_eq!(describe(&io::Error::other("")), "");
    }
}
