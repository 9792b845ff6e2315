//! Running one probe once: an HTTP GET, a TCP connect, or a new instance of the
//! container's module, each bounded by the probe's timeout. The result says what a
//! failure was, in the kubelet's words where it has them.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;

use super::spec::Handler;
use crate::config::PROBE_OUTPUT_LIMIT;
use crate::pods::directory::ContainerEntry;

/// What a probe runs against: the pod's IP (the node's), and for exec probes the
/// container's module, env and mounts.
#[derive(Clone)]
pub struct Target {
    pub pod_ip: IpAddr,
    pub container: Option<ContainerEntry>,
}

/// One probe's result: success, or why not.
pub type Outcome = Result<(), String>;

/// Runs `handler` once against `target`, for at most `timeout`.
pub async fn run(handler: &Handler, target: &Target, client: &reqwest::Client, timeout: Duration) -> Outcome {
    match handler {
        Handler::Http { https, host, port, path, headers } => {
            let host = host.clone().unwrap_or_else(|| target.pod_ip.to_string());
            let host = if host.contains(':') { format!("[{host}]") } else { host };
            let url = format!("{}://{host}:{port}{path}", if *https { "https" } else { "http" });
            let mut request = client.get(&url).timeout(timeout);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            match request.send().await {
                Ok(r) if (200..400).contains(&r.status().as_u16()) => Ok(()),
                Ok(r) => Err(format!("HTTP probe failed with statuscode: {}", r.status().as_u16())),
                Err(e) if e.is_timeout() => Err(format!(
                    "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                )),
                Err(e) => Err(format!("Get {url:?}: {}", crate::base::error::chain(&e))),
            }
        }
        Handler::Tcp { host, port } => {
            let host = host.clone().unwrap_or_else(|| target.pod_ip.to_string());
            let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
            match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: connect: {e}")),
                Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
            }
        }
        Handler::Exec { command } => exec(command, target, timeout).await,
        Handler::Unsupported(why) => Err(why.clone()),
    }
}

/// A new instance of the container's module with `command` as argv; exit 0 is success,
/// and its output (stdout then stderr, at most [`PROBE_OUTPUT_LIMIT`]) says why not.
async fn exec(command: &[String], target: &Target, timeout: Duration) -> Outcome {
    let Some(entry) = target.container.as_ref() else { return Err("the container is not running".into()) };
    let output = Output::default();
    let (stdout, stderr) = (Box::new(output.clone()), Box::new(output.clone()));
    let mut running = entry
        .start_instance(command.to_vec(), None, stdout, stderr)
        .map_err(|e| crate::base::error::chain(&e))?;
    let stop = running.stopper();
    let exit = match tokio::time::timeout(timeout, running.wait()).await {
        Ok(exit) => exit,
        Err(_) => {
            stop(Duration::ZERO);
            return Err(format!("command {command:?} timed out"));
        }
    };
    if exit.code == 0 {
        return Ok(());
    }
    let text = output.text();
    Err(match text.trim().is_empty() {
        true => format!("command {command:?} exited with {}", exit.code),
        false => text,
    })
}

/// An exec probe's output, kept up to [`PROBE_OUTPUT_LIMIT`] bytes; the rest is dropped.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl Output {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl AsyncWrite for Output {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = PROBE_OUTPUT_LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..buf.len().min(room)]);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
