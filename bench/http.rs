//! HTTP serving benchmark helper (bench/http.sh drives it): serves one wasi:http component
//! through the provider the way the agent does, and reports what the load generator
//! cannot see. Prints numbers only.
//!
//! Usage:
//!   bench-http serve WASM ADDR [POOL]
//!                                 serves WASM on ADDR (POOL: the runtime's HTTP instance
//!                                 pool, 0 for none; default the runtime's); each line on
//!                                 stdin prints the instances created and their mean
//!                                 instantiation time since the last line; end of stdin stops
//!   bench-http idle WASM N        serves WASM N times on N loopback ports, idle, and
//!                                 prints the RSS they add, per served artifact
//!
//! With BENCH_LOG set, the provider's warnings (a failed request and why) go to stderr;
//! BENCH_LANES=N serves with N lanes per artifact (0: no bound) instead of the default.

use std::io::BufRead;
use std::net::TcpListener;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use krustlet_wasi_provider::{HttpLimits, RunSpec, Runtime};

fn main() -> Result<()> {
    // As the agent's main does (logging::default_lib_backtrace): no backtrace per request.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    // BENCH_LOG=1: the provider's warnings (failed requests and why) on stderr.
    if std::env::var_os("BENCH_LOG").is_some() {
        tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(tracing::Level::WARN).init();
    }
    let args: Vec<String> = std::env::args().collect();
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.get(1).map(String::as_str) {
        Some("serve") if args.len() == 4 || args.len() == 5 => {
            let pool = args.get(4).map(|pool| pool.parse()).transpose()?;
            tokio.block_on(serve(&args[2], &args[3], pool))
        }
        Some("idle") if args.len() == 4 => tokio.block_on(idle(&args[2], args[3].parse()?)),
        _ => bail!("usage: bench-http serve WASM ADDR [POOL] | bench-http idle WASM N"),
    }
}

fn load(wasm: &str, pool: Option<u32>) -> Result<(Runtime, krustlet_wasi_provider::Artifact)> {
    let bytes = std::fs::read(wasm).with_context(|| format!("reading {wasm}"))?;
    let mut builder = Runtime::builder();
    if let Some(pool) = pool {
        builder = builder.http_pool(pool);
    }
    // BENCH_LANES=N: N lanes per served artifact (0: unbounded) instead of the default.
    if let Some(lanes) = std::env::var_os("BENCH_LANES") {
        let lanes = lanes.to_str().and_then(|lanes| lanes.parse().ok()).context("BENCH_LANES: a number")?;
        builder = builder.http_lanes(lanes);
    }
    let runtime = builder.build()?;
    let artifact = runtime.load(&bytes, "bench:http")?;
    Ok((runtime, artifact))
}

fn spec(listener: TcpListener) -> RunSpec {
    // The agent's defaults: a memory limit per instance, a request timeout, a cap.
    RunSpec::new()
        .argv(["http_hello.wasm"])
        .memory_limit(128 << 20)
        .http(HttpLimits { request_timeout: Duration::from_secs(30), max_concurrent: 100 })
        .stdout(tokio::io::sink())
        .listeners(vec![listener])
}

async fn serve(wasm: &str, addr: &str, pool: Option<u32>) -> Result<()> {
    let (runtime, artifact) = load(wasm, pool)?;
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    let mut handle = runtime.run(&artifact, spec(listener))?;
    let stats = handle.http_stats().context("an HTTP run has stats")?;
    println!("READY {addr}");
    let mut last = stats.snapshot();
    let (lines, mut next) = tokio::sync::mpsc::channel(1);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() || lines.blocking_send(()).is_err() {
                break;
            }
        }
    });
    while next.recv().await.is_some() {
        let now = stats.snapshot();
        let instances = now.instantiated - last.instantiated;
        let nanos = now.instantiate_nanos - last.instantiate_nanos;
        let mean_us = if instances == 0 { 0.0 } else { nanos as f64 / instances as f64 / 1000.0 };
        println!(
            "instances {instances} mean-instantiate-us {mean_us:.1} 500s {} 503s {}",
            (now.trapped + now.out_of_memory + now.timed_out)
                - (last.trapped + last.out_of_memory + last.timed_out),
            now.over_capacity - last.over_capacity
        );
        last = now;
    }
    handle.shutdown(Duration::from_secs(5));
    handle.wait().await;
    Ok(())
}

fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

async fn idle(wasm: &str, count: usize) -> Result<()> {
    let (runtime, artifact) = load(wasm, None)?;
    // One request first, so that one-time costs (the pool, code pages) are not counted.
    let (warm_listener, warm_addr) = {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        (listener, addr)
    };
    let warm = runtime.run(&artifact, spec(warm_listener))?;
    warm_request(warm_addr).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib()?;
    let mut handles = Vec::with_capacity(count);
    for _ in 0..count {
        handles.push(runtime.run(&artifact, spec(TcpListener::bind("127.0.0.1:0")?))?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib()?;
    println!(
        "idle served artifacts {count}: RSS {before} KiB -> {after} KiB, {:.1} KiB each",
        (after.saturating_sub(before)) as f64 / count as f64
    );
    drop(handles);
    drop(warm);
    Ok(())
}

async fn warm_request(addr: std::net::SocketAddr) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(b"GET / HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n").await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    if !reply.starts_with(b"HTTP/1.1 200") {
        bail!("warm-up request failed: {}", String::from_utf8_lossy(&reply));
    }
    Ok(())
}
