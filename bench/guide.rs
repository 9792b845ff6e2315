//! The guide's HTTP server under the provider, for bench/guide.sh: loads the module (the
//! guide's tokio_wasi + warp_wasi program, WasmEdge sockets), runs it as the agent would
//! with a port rule for 8080, and reports when it answers. Prints numbers only.
//!
//! Usage:
//!   bench-guide serve WASM     prints `COMPILED <ms>` (load), then `READY <ms>` (run →
//!                              first `GET /` answered, the artifact already loaded);
//!                              end of stdin stops the run

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use krustlet_wasi_provider::{NetworkPolicy, RunSpec, Runtime};

/// The port the guide's program listens on.
const PORT: u16 = 8080;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.get(1).map(String::as_str) {
        Some("serve") if args.len() == 3 => tokio.block_on(serve(&args[2])),
        _ => bail!("usage: bench-guide serve WASM"),
    }
}

async fn serve(wasm: &str) -> Result<()> {
    let bytes = std::fs::read(wasm).with_context(|| format!("reading {wasm}"))?;
    let runtime = Runtime::builder().build()?;
    let started = Instant::now();
    let artifact = tokio::task::block_in_place(|| runtime.load(&bytes, "bench:guide"))?;
    println!("COMPILED {}", started.elapsed().as_millis());
    let started = Instant::now();
    let spec = RunSpec::new()
        .argv(["http-server.wasm"])
        .memory_limit(512 << 20)
        .network(NetworkPolicy::open([PORT]));
    let mut handle = runtime.run(&artifact, spec)?;
    loop {
        if handle.is_finished() {
            bail!("the guest ended: {}", handle.wait().await);
        }
        if tokio::task::spawn_blocking(answers).await? {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!("READY {:.1}", started.elapsed().as_secs_f64() * 1e3);
    tokio::task::spawn_blocking(|| std::io::stdin().lock().lines().count()).await?;
    handle.shutdown(Duration::from_secs(5));
    handle.wait().await;
    Ok(())
}

/// Whether `GET /` on the port is answered with 200.
fn answers() -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", PORT)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
    let mut reply = String::new();
    stream.write_all(request).is_ok()
        && stream.read_to_string(&mut reply).is_ok()
        && reply.starts_with("HTTP/1.1 200")
}
