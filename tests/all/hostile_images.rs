//! End to end, on the real control plane and registry: hostile images (issue 12, items 2
//! and 6). API pods naming `file://` host files, a gzip layer that inflates to 1 GiB, a
//! manifest far over 4 MiB from a registry that lies, and a large image within the cap,
//! whose pull must not cost the agent its size in memory. Each beside a bystander pod
//! that must keep running.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Duration;

use common::bystander::Bystander;
use common::node::{TestNode, main_status, phase, pod};
use common::registry::{ImageKind, RawPusher, http_status, sha256, tar_layer, unique_repo};
use common::{Cluster, guests};
use serde_json::{Value, json};

const PORT: u16 = 10361;
/// The hostile registry this test process serves (plain HTTP, loopback).
const HOSTILE_REGISTRY: &str = "127.0.0.1:10362";
/// The agent's peak memory must stay under this while it refuses or pulls large images
/// (a 1 GiB layer inflated in memory, as before the caps, goes far past it).
const RSS_CEILING: u64 = 512 << 20;
const WAIT: Duration = Duration::from_secs(90);

/// The node of this test binary: it also trusts the hostile registry over plain HTTP.
fn node(cluster: &Cluster) -> &'static TestNode {
    hostile_registry();
    let insecure = format!("{},{HOSTILE_REGISTRY}", cluster.registry);
    common::shared_node_with("hostile-images", PORT, &insecure).unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn tool(cluster: &Cluster) -> String {
    guests::publish(&cluster.registry, "tool", "v1", "cncf")
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// The pod's first container is waiting with `reason`; its message.
fn waiting_message(cluster: &Cluster, name: &str, reasons: &[&str]) -> String {
    let p = cluster.wait_pod(name, &format!("waiting {reasons:?}"), WAIT, |p| {
        let reason = main_status(p)["state"]["waiting"]["reason"].as_str().unwrap_or("");
        reasons.contains(&reason)
    });
    main_status(&p)["state"]["waiting"]["message"].as_str().unwrap_or("").to_string()
}

/// The agent still answers on healthz and has not used more than [`RSS_CEILING`].
fn assert_agent_small_and_alive(node: &TestNode) -> u64 {
    assert_eq!(http_status(&format!("127.0.0.1:{}", PORT + 1000), "/healthz"), Some(200), "agent healthz");
    let peak = node.agent.peak_rss().expect("the agent process exists");
    assert!(peak < RSS_CEILING, "agent peak RSS {} MiB", peak >> 20);
    peak
}

fn delete(cluster: &Cluster, names: &[&str]) {
    let mut args = vec!["delete", "pod", "-n", "default", "--wait=false", "--ignore-not-found"];
    args.extend_from_slice(names);
    cluster.kubectl(&args);
}

/// Item 2: API pods naming host files, plain and with a forged `config.source: file`
/// annotation, are refused as invalid images, at once, without the file being read: no
/// Event or status carries its hash and nothing lands in the image store.
#[test]
fn file_images_from_the_api_server_are_refused_unread() {
    let cluster = require_cluster!();
    let node = node(cluster);
    let bystander = Bystander::start(cluster, node, &tool(cluster), "file");
    let hostname_hash = sha256(&std::fs::read("/etc/hostname").unwrap());
    let (host, zero, forged) = (unique("file-hostname"), unique("file-zero"), unique("file-forged"));
    cluster.apply(&pod(&host, &node.name, "file:///etc/hostname"));
    cluster.apply(&pod(&zero, &node.name, "file:///dev/zero"));
    let mut p = pod(&forged, &node.name, "file:///etc/hostname");
    p["metadata"]["annotations"] = json!({"kubernetes.io/config.source": "file"});
    cluster.apply(&p);

    for name in [&host, &zero, &forged] {
        let message = waiting_message(cluster, name, &["InvalidImageName"]);
        assert!(message.contains("file:// images may only be used by static pods"), "{name}: {message}");
        let events = cluster.pod_events(name);
        assert!(
            events.iter().any(|(r, m)| r == "Failed" && m.contains("static pods")),
            "{name}: an Event says why: {events:?}"
        );
        let hex = hostname_hash.trim_start_matches("sha256:");
        assert!(!events.iter().any(|(_, m)| m.contains(hex)), "{name}: the file's hash in {events:?}");
        let p = cluster.get_json(&["pod", name, "-n", "default"]).unwrap();
        assert!(!p["status"].to_string().contains(hex), "{name}: the file's hash in {}", p["status"]);
    }
    let stored =
        node.data_dir().join("images/blobs/sha256").join(hostname_hash.trim_start_matches("sha256:"));
    assert!(!stored.exists(), "/etc/hostname was copied into the image store: {}", stored.display());
    assert_agent_small_and_alive(node);
    bystander.assert_unharmed(cluster);
    delete(cluster, &[&host, &zero, &forged]);
    bystander.delete(cluster);
}

/// Deflates `input` (raw, no header), ending with `flush`.
fn deflate(c: &mut flate2::Compress, input: &[u8], flush: flate2::FlushCompress) -> Vec<u8> {
    let mut out = Vec::new();
    let mut consumed = 0;
    loop {
        out.reserve(64 * 1024);
        let before = c.total_in();
        let status = c.compress_vec(&input[consumed..], &mut out, flush).unwrap();
        consumed += (c.total_in() - before) as usize;
        let done = match flush {
            flate2::FlushCompress::Finish => status == flate2::Status::StreamEnd,
            _ => consumed == input.len() && out.len() < out.capacity(),
        };
        if done {
            return out;
        }
    }
}

/// A gzip tar layer holding `/app.wasm` of 1 GiB of zeros, about 1 MB compressed. After
/// a full flush deflate starts afresh, so one compressed MiB of zeros repeats verbatim.
fn gzip_bomb() -> Vec<u8> {
    let size: u64 = 1 << 30;
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_path("app.wasm").unwrap();
    header.set_cksum();
    let zeros = vec![0u8; 1 << 20];
    let full = flate2::FlushCompress::Full;
    let mut c = flate2::Compress::new(flate2::Compression::best(), false);
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 0xff];
    out.extend(deflate(&mut c, header.as_bytes(), full));
    let chunk = deflate(&mut c, &zeros, full);
    assert_eq!(chunk, deflate(&mut c, &zeros, full), "a flushed chunk repeats");
    for _ in 0..(size >> 20) {
        out.extend_from_slice(&chunk);
    }
    out.extend(deflate(&mut c, &[0u8; 1024], flate2::FlushCompress::Finish)); // end of archive
    let mut crc = flate2::Crc::new();
    crc.update(header.as_bytes());
    let mut chunk_crc = flate2::Crc::new();
    chunk_crc.update(&zeros);
    for _ in 0..(size >> 20) {
        crc.combine(&chunk_crc);
    }
    crc.update(&[0u8; 1024]);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(crc.amount()).to_le_bytes());
    out
}

/// Item 6: the 1 MB layer whose app.wasm inflates to 1 GiB fails the pull with
/// ErrImagePull naming the file, the cap and its flag; the agent's memory stays low.
#[test]
fn a_gzip_layer_inflating_to_a_gibibyte_is_refused_and_costs_no_memory() {
    let cluster = require_cluster!();
    let node = node(cluster);
    let bystander = Bystander::start(cluster, node, &tool(cluster), "bomb");
    let bomb = gzip_bomb();
    assert!(bomb.len() < 4 << 20, "the layer is small: {} bytes", bomb.len());
    let repo = unique_repo("gzip-bomb");
    let config = json!({"config": {"Cmd": ["/app.wasm"]}});
    block_on(RawPusher::new(&cluster.registry).image(&repo, "v1", ImageKind::Oci, &[bomb], config));
    let name = unique("bomb");
    cluster.apply(&pod(&name, &node.name, &format!("{}/{repo}:v1", cluster.registry)));

    let message = waiting_message(cluster, &name, &["ErrImagePull", "ImagePullBackOff"]);
    assert!(message.contains("/app.wasm (1Gi) in layer sha256:"), "{message}");
    assert!(message.contains("exceeds --image-max-size=256Mi"), "{message}");
    let peak = assert_agent_small_and_alive(node);
    eprintln!("agent peak RSS after refusing the 1 GiB layer: {} MiB", peak >> 20);
    bystander.assert_unharmed(cluster);
    delete(cluster, &[&name]);
    bystander.delete(cluster);
}

/// Item 6: a manifest of 64 MiB with no Content-Length, from a registry that serves
/// anything asked of it, is refused at 4 MiB with the cap named.
#[test]
fn a_manifest_over_four_mebibytes_is_refused() {
    let cluster = require_cluster!();
    let node = node(cluster);
    let bystander = Bystander::start(cluster, node, &tool(cluster), "manifest");
    let name = unique("huge-manifest");
    cluster.apply(&pod(&name, &node.name, &format!("{HOSTILE_REGISTRY}/evil/app:huge")));
    let message = waiting_message(cluster, &name, &["ErrImagePull", "ImagePullBackOff"]);
    assert!(message.contains("the manifest huge of image"), "{message}");
    assert!(message.contains("exceeds 4Mi, the cap on manifests and image configs"), "{message}");
    assert_agent_small_and_alive(node);
    bystander.assert_unharmed(cluster);
    delete(cluster, &[&name]);
    bystander.delete(cluster);
}

/// A large image within the cap (a 150 MiB plain layer, and a gzip layer unpacking to
/// 50 MiB beside the module) runs, and pulling it does not cost its size in memory. The
/// same image with another 120 MiB layer goes past the cap: refused, the cap named.
#[test]
fn a_large_image_streams_to_disk_and_a_larger_one_is_refused() {
    let cluster = require_cluster!();
    let node = node(cluster);
    let module = std::fs::read(guests::build("exit")).unwrap();
    let plain = tar_layer(&[("data/filler", &vec![0u8; 150 << 20])], false);
    let packed = tar_layer(&[("app.wasm", &module), ("data/padding", &vec![0u8; 50 << 20])], true);
    let extra = tar_layer(&[("data/more", &vec![1u8; 120 << 20])], false);
    let (fits, too_big) = (unique_repo("large"), unique_repo("too-large"));
    let config = json!({"config": {"Cmd": ["/app.wasm", "0"]}});
    let pusher = RawPusher::new(&cluster.registry);
    block_on(pusher.image(&fits, "v1", ImageKind::Oci, &[plain.clone(), packed.clone()], config.clone()));
    block_on(pusher.image(&too_big, "v1", ImageKind::Oci, &[plain, extra, packed], config));

    let before = node.agent.peak_rss().unwrap();
    let (ok, refused) = (unique("large"), unique("too-large"));
    let mut p = pod(&ok, &node.name, &format!("{}/{fits}:v1", cluster.registry));
    p["spec"]["restartPolicy"] = json!("Never");
    cluster.apply(&p);
    let done = cluster.wait_pod(&ok, "Succeeded", WAIT, |p| phase(p) == "Succeeded");
    assert_eq!(main_status(&done)["state"]["terminated"]["exitCode"], 0, "{}", done["status"]);
    let peak = assert_agent_small_and_alive(node);
    eprintln!(
        "agent peak RSS: {} MiB before, {} MiB after pulling a 200 MiB image",
        before >> 20,
        peak >> 20
    );

    cluster.apply(&pod(&refused, &node.name, &format!("{}/{too_big}:v1", cluster.registry)));
    let message = waiting_message(cluster, &refused, &["ErrImagePull", "ImagePullBackOff"]);
    assert!(message.contains("layer sha256:") && message.contains("(120.0Mi) of image"), "{message}");
    assert!(
        message.contains("exceeds --image-max-size=256Mi, the cap on one image's layers together"),
        "{message}"
    );
    assert_agent_small_and_alive(node);
    delete(cluster, &[&ok, &refused]);
}

/// Serves, on [`HOSTILE_REGISTRY`], `/v2/` and a 64 MiB manifest for any tag, without a
/// Content-Length (the body ends when the connection closes).
fn hostile_registry() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let listener = TcpListener::bind(HOSTILE_REGISTRY).expect("the hostile registry's port is free");
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || serve(conn));
            }
        });
    });
}

fn serve(mut conn: std::net::TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head.split(' ').nth(1).unwrap_or("");
    if path == "/v2/" {
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        return;
    }
    if !path.contains("/manifests/") {
        let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let manifest: Value = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(b"{}"), "size": 2},
        "layers": [],
        "annotations": {"pad": "PAD"},
    });
    let text = manifest.to_string();
    let (before, after) = text.split_once("PAD").unwrap();
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n";
    let pad = vec![b'x'; 1 << 20];
    let _ = (|| -> std::io::Result<()> {
        conn.write_all(head.as_bytes())?;
        conn.write_all(before.as_bytes())?;
        for _ in 0..64 {
            conn.write_all(&pad)?;
        }
        conn.write_all(after.as_bytes())
    })();
}
