//! Pod start benchmark against a running node: bind -> Running latency (as a watching
//! client sees both), a burst of pods at once, and many idle guests. Prints numbers only.
//! Sequential and burst runs are made twice: with default pods (the API server's
//! admission adds the projected service-account token volume, as for every pod users
//! create) and with `automountServiceAccountToken: false`.
//!
//! Usage (bench/pods.sh sets it up): bench-pods NODE HELLO_IMAGE SLEEP_IMAGE [SEQ] [BURST] [IDLE]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde_json::json;

fn pod(name: &str, node: &str, image: &str, token: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"bench": "krustlet"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"key": "kubernetes.io/arch", "operator": "Exists"}],
            "automountServiceAccountToken": token,
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "IfNotPresent"}],
        },
    }))
    .expect("valid pod")
}

/// Watches bench pods; returns per pod (bind seen, Running seen).
async fn observe(
    api: Api<Pod>,
    want: usize,
    timeout: Duration,
) -> HashMap<String, (Option<Instant>, Option<Instant>)> {
    let mut seen: HashMap<String, (Option<Instant>, Option<Instant>)> = HashMap::new();
    if want == 0 {
        return seen;
    }
    let cfg = watcher::Config::default().labels("bench=krustlet");
    let mut stream = watcher::watcher(api, cfg).boxed();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        let ev = tokio::select! { e = stream.next() => e, _ = &mut deadline => break };
        let Some(Ok(Event::Apply(p) | Event::InitApply(p))) = ev else { continue };
        let name = p.metadata.name.clone().unwrap_or_default();
        let entry = seen.entry(name).or_default();
        let now = Instant::now();
        if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() && entry.0.is_none() {
            entry.0 = Some(now);
        }
        if p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && entry.1.is_none() {
            entry.1 = Some(now);
        }
        if seen.values().filter(|v| v.1.is_some()).count() >= want {
            break;
        }
    }
    seen
}

/// Creates `n` pods; returns how many the API server gave a projected service-account
/// token volume (its ServiceAccount admission does, for a pod that does not opt out).
async fn create_all(api: &Api<Pod>, prefix: &str, n: usize, node: &str, image: &str, token: bool) -> usize {
    // At most 50 requests at once: the API server's in-flight limit answers 429 beyond
    // a few hundred.
    let creates = futures::stream::iter(0..n).map(|i| {
        let p = pod(&format!("{prefix}-{i}"), node, image, token);
        async move { api.create(&PostParams::default(), &p).await }
    });
    let results: Vec<_> = creates.buffer_unordered(50).collect().await;
    results.into_iter().map(|r| r.expect("create pod")).filter(has_token_volume).count()
}

fn has_token_volume(p: &Pod) -> bool {
    let volumes = p.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes
        .filter_map(|v| v.projected.as_ref())
        .any(|p| p.sources.iter().flatten().any(|s| s.service_account_token.is_some()))
}

/// Waits until the namespace's `default` ServiceAccount exists: until then the API server
/// refuses pods that would mount its token.
async fn wait_for_default_service_account(client: Client) -> anyhow::Result<()> {
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client, "default");
    for _ in 0..120 {
        if sa.get_opt("default").await?.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("no default ServiceAccount in namespace default after 60 s")
}

async fn delete_all(api: &Api<Pod>) {
    let dp = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
    let _ = api.delete_collection(&dp, &kube::api::ListParams::default().labels("bench=krustlet")).await;
    for _ in 0..120 {
        let left =
            api.list(&kube::api::ListParams::default().labels("bench=krustlet")).await.map(|l| l.items.len());
        if left.unwrap_or(0) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let (node, hello, sleep) = (&args[1], &args[2], &args[3]);
    let num = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (seq, burst, idle) = (num(4, 30), num(5, 100), num(6, 500));
    let client = Client::try_default().await?;
    wait_for_default_service_account(client.clone()).await?;
    let api: Api<Pod> = Api::namespaced(client, "default");
    delete_all(&api).await;

    // Warm the image cache (pull + compile) once.
    let warm = tokio::spawn(observe(api.clone(), 1, Duration::from_secs(120)));
    create_all(&api, "warm", 1, node, hello, false).await;
    warm.await?;
    delete_all(&api).await;
    // The script reads the warm agent's RSS now (one pod run and gone).
    handshake("WARM_READY");

    for token in [true, false] {
        let kind = if token { "default pods (SA token)" } else { "pods without SA token" };
        // The script reads the control plane's counters around the default pods' run.
        if token {
            handshake("SEQ_START");
        }
        sequential(&api, node, hello, seq, token, kind).await?;
        if token {
            handshake("SEQ_END");
        }
        burst_of(&api, node, hello, burst, token, kind).await?;
    }

    if idle == 0 {
        return Ok(());
    }
    let obs = tokio::spawn(observe(api.clone(), idle, Duration::from_secs(600)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    create_all(&api, "idle", idle, node, sleep, false).await;
    let seen = obs.await?;
    let running = seen.values().filter(|v| v.1.is_some()).count();
    println!("{idle} idle guests: {running} Running after {:.1} s", t0.elapsed().as_secs_f64());
    // The script reads the agent's RSS now; wait for it before cleaning up.
    handshake("IDLE_READY");
    delete_all(&api).await;
    Ok(())
}

/// Tells the script (`bench/pods.sh`) the agent is ready to be measured: prints `marker`
/// and waits for the line the script sends once it has read what it wanted.
fn handshake(marker: &str) {
    println!("{marker}");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// `n` pods one after another: bind -> Running p50/p99/max.
async fn sequential(
    api: &Api<Pod>,
    node: &str,
    image: &str,
    n: usize,
    token: bool,
    kind: &str,
) -> anyhow::Result<()> {
    let (mut lat, mut with_token) = (Vec::new(), 0);
    for i in 0..n {
        let obs = tokio::spawn(observe(api.clone(), 1, Duration::from_secs(60)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        with_token += create_all(api, &format!("seq{i}"), 1, node, image, token).await;
        if let Some((Some(b), Some(r))) = obs.await?.into_values().next() {
            lat.push(r.duration_since(b).as_secs_f64() * 1000.0);
        }
        delete_all(api).await;
    }
    lat.sort_by(f64::total_cmp);
    if !lat.is_empty() {
        println!(
            "{kind}, {} one at a time ({with_token} with the token volume): bind -> Running p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.9),
            pct(&lat, 0.99),
            lat[lat.len() - 1]
        );
    }
    Ok(())
}

/// `n` pods created at once: when all run, after the last bind, and each pod's bind -> Running.
async fn burst_of(
    api: &Api<Pod>,
    node: &str,
    image: &str,
    n: usize,
    token: bool,
    kind: &str,
) -> anyhow::Result<()> {
    let obs = tokio::spawn(observe(api.clone(), n, Duration::from_secs(300)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = Instant::now();
    let with_token = create_all(api, "burst", n, node, image, token).await;
    let seen = obs.await?;
    let running = seen.values().filter(|v| v.1.is_some()).count();
    let last_bind = seen.values().filter_map(|v| v.0).max();
    let last_run = seen.values().filter_map(|v| v.1).max();
    let mut each: Vec<f64> = seen
        .values()
        .filter_map(|v| Some(v.1?.saturating_duration_since(v.0?).as_secs_f64() * 1000.0))
        .collect();
    each.sort_by(f64::total_cmp);
    let over = each.iter().filter(|ms| **ms > 300.0).count();
    println!(
        "{kind}, {n} at once ({with_token} with the token volume): {running} Running; create -> all Running {:.2} s; last bind -> last Running {:.0} ms; \
         per pod bind -> Running p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, {over} over 300 ms",
        last_run.map(|r| r.duration_since(t0).as_secs_f64()).unwrap_or(f64::NAN),
        match (last_bind, last_run) {
            (Some(b), Some(r)) => r.saturating_duration_since(b).as_secs_f64() * 1000.0,
            _ => f64::NAN,
        },
        if each.is_empty() { f64::NAN } else { pct(&each, 0.5) },
        if each.is_empty() { f64::NAN } else { pct(&each, 0.99) },
        each.last().copied().unwrap_or(f64::NAN),
    );
    delete_all(api).await;
    Ok(())
}
