//! HTTP test helpers: the component guests built by examples/build-components.sh, a
//! served proxy on a loopback listener, and a small hyper client.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use krustlet_wasi_provider::{Artifact, HttpStatsSnapshot, RunHandle, RunSpec, Runtime};

use super::digest;

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the component guests once per test process (installing wit-bindgen and
/// wasm-tools on first use) and returns `examples/guests/<name>.c`'s component.
pub fn component(name: &str) -> Vec<u8> {
    static OUT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let out = OUT.get_or_init(|| {
        let out = repo().join("target/guests");
        let run = Command::new("bash")
            .arg(repo().join("examples/build-components.sh"))
            .arg(&out)
            .output()
            .map_err(|err| format!("bash: {err}"))?;
        if run.status.success() {
            Ok(out)
        } else {
            Err(format!("build-components.sh failed:\n{}", String::from_utf8_lossy(&run.stderr)))
        }
    });
    let path = match out {
        Ok(dir) => dir.join(format!("{name}.wasm")),
        Err(err) => panic!("{err}"),
    };
    std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// The HTTP hello-world component, loaded.
pub fn hello(runtime: &Runtime) -> Artifact {
    let bytes = component("http_hello");
    runtime.load(&bytes, &digest(&bytes)).expect("http_hello loads")
}

/// A listener on an ephemeral loopback port.
pub fn listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Serves `artifact` with `spec` on a fresh loopback listener.
pub fn serve(runtime: &Runtime, artifact: &Artifact, spec: RunSpec) -> (RunHandle, SocketAddr) {
    let (listener, addr) = listener();
    let handle = runtime.run(artifact, spec.listeners(vec![listener])).expect("server starts");
    (handle, addr)
}

/// A response as the test reads it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// One GET on a new connection. Panics when the connection fails.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    try_get(addr, path).await.unwrap_or_else(|err| panic!("GET {path}: {err}"))
}

/// One GET on a new connection, bounded by 30 s.
pub async fn try_get(addr: SocketAddr, path: &str) -> Result<Reply, String> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|err| format!("connect: {err}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| format!("handshake: {err}"))?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|err| err.to_string())?;
        let response = sender.send_request(request).await.map_err(|err| format!("request: {err}"))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|err| format!("body: {err}"))?;
        Ok(Reply { status, body: String::from_utf8_lossy(&body.to_bytes()).into_owned() })
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "no answer within 30 s".to_owned())?
}

/// Polls `stats` of `handle` until `ready` holds (failing after 30 s).
pub async fn until(handle: &RunHandle, what: &str, ready: impl Fn(&HttpStatsSnapshot) -> bool) {
    let stats = handle.http_stats().expect("an HTTP run has stats");
    for _ in 0..3000 {
        if ready(&stats.snapshot()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not reached within 30 s; stats {:?}", stats.snapshot());
}
