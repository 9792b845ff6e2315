//! Test registries and raw images: the shared plain-HTTP registry, private
//! `docker-registry` processes on loopback (optionally htpasswd-protected), and images,
//! Docker v2 manifests and indexes pushed byte for byte, as docker or oras would.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::REPO;

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// The only user of an authenticated [`OwnRegistry`], and its password.
pub const USER: &str = "tester";
pub const PASSWORD: &str = "s3cret";
/// bcrypt (cost 4) of [`PASSWORD`], for the htpasswd file of the authenticated registry.
const HTPASSWD: &str = "tester:$2a$04$NJOjND86e/qUKzSu2JbsM.1P2SgOdQ8qWYqxe2LM.byzwNYS3i5kC\n";

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// GET `path` on `addr` over plain HTTP; the status code, or `None` if nothing answers.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Skips (outside CI) or fails (in CI) with a message naming how to get a registry.
pub fn unavailable<T>(why: &str) -> Option<T> {
    if super::in_ci() {
        panic!("CI=true but {why} (bootstrap/cluster.sh install && bootstrap/cluster.sh up)");
    }
    eprintln!("SKIPPED: {why}. Enable these tests with: bootstrap/cluster.sh up");
    None
}

/// The shared registry's `host:port`; in CI it is started if it does not answer.
pub fn shared_registry() -> Option<String> {
    let addr = std::env::var("KRUSTLET_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    if http_status(&addr, "/v2/").is_some() {
        return Some(addr);
    }
    if super::in_ci() {
        let _ = Command::new("bash").arg(Path::new(REPO).join("bootstrap/cluster.sh")).arg("up").status();
        if http_status(&addr, "/v2/").is_some() {
            return Some(addr);
        }
    }
    unavailable(&format!("no OCI registry answers at {addr}"))
}

/// A private `docker-registry` on a free loopback port; killed when dropped.
pub struct OwnRegistry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl OwnRegistry {
    /// Starts one (with `with_auth`, only [`USER`]/[`PASSWORD`] may pull or push) and waits
    /// until it answers; `None` (skipped) outside CI when docker-registry is not installed.
    pub fn start(with_auth: bool) -> Option<OwnRegistry> {
        if !Path::new(REGISTRY_BIN).exists() {
            return unavailable(&format!("{REGISTRY_BIN} is not installed"));
        }
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {addr}}}\n",
            dir.path().join("data").display()
        );
        if with_auth {
            std::fs::write(dir.path().join("htpasswd"), HTPASSWD).unwrap();
            config += &format!(
                "auth: {{htpasswd: {{realm: test, path: {}}}}}\n",
                dir.path().join("htpasswd").display()
            );
        }
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .unwrap();
        let mut reg = OwnRegistry { child, addr, _dir: dir };
        let start = Instant::now();
        while http_status(&reg.addr, "/v2/").is_none() {
            if let Ok(Some(status)) = reg.child.try_wait() {
                panic!("docker-registry exited ({status}) before answering on {}", reg.addr);
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not answer on {}",
                reg.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(reg)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A repository name unique to this test run.
pub fn unique_repo(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("oci-test/{name}-{}-{nanos}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// A tar layer (gzip if `gzip`) of `(path, bytes)` files.
pub fn tar_layer(files: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        builder.append_data(&mut h, path, *data).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    if !gzip {
        return tar;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

/// Which media types [`RawPusher::image`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    Oci,
    DockerV2,
}

/// An index entry: a pushed manifest's descriptor and its platform (`os`, `architecture`).
pub fn platform_entry(manifest: &Value, os: &str, architecture: &str) -> Value {
    let mut e = manifest.clone();
    e["platform"] = json!({ "os": os, "architecture": architecture });
    e
}

/// Pushes arbitrary blobs and manifests, as another tool (docker, oras) would have.
pub struct RawPusher {
    client: oci_client::Client,
    registry: String,
}

impl RawPusher {
    /// An anonymous pusher for the plain-HTTP registry at `registry` (`host:port`).
    pub fn new(registry: &str) -> RawPusher {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::HttpsExcept(vec![registry.to_string()]),
            ..Default::default()
        };
        RawPusher { client: oci_client::Client::new(config), registry: registry.to_string() }
    }

    /// A pusher that logs in to an authenticated [`OwnRegistry`] as [`USER`].
    pub async fn login(registry: &str) -> RawPusher {
        let p = RawPusher::new(registry);
        let auth = oci_client::secrets::RegistryAuth::Basic(USER.into(), PASSWORD.into());
        p.client.store_auth_if_needed(registry, &auth).await;
        p
    }

    fn reference(&self, repo_and_tag: &str) -> oci_client::Reference {
        format!("{}/{repo_and_tag}", self.registry).parse().unwrap()
    }

    /// Uploads `bytes` to `repo`; returns the descriptor (with `media_type`).
    pub async fn blob(&self, repo: &str, media_type: &str, bytes: &[u8]) -> Value {
        let digest = sha256(bytes);
        self.client.push_blob(&self.reference(repo), bytes.to_vec(), &digest).await.unwrap();
        json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() })
    }

    /// Uploads `manifest` as `repo:tag`; returns its descriptor.
    pub async fn manifest(&self, repo: &str, tag: &str, media_type: &str, manifest: &Value) -> Value {
        let body = serde_json::to_vec(manifest).unwrap();
        let reference = self.reference(&format!("{repo}:{tag}"));
        let content_type = http::HeaderValue::from_str(media_type).unwrap();
        self.client.push_manifest_raw(&reference, body.clone(), content_type).await.unwrap();
        json!({ "mediaType": media_type, "digest": sha256(&body), "size": body.len() })
    }

    /// Pushes an image of `kind` with `layers` (each labelled gzip; the agent sniffs) and
    /// `config` (e.g. `{"config": {"Entrypoint": [..], "Cmd": [..]}}`) as `repo:tag`;
    /// returns the manifest's descriptor.
    pub async fn image(
        &self,
        repo: &str,
        tag: &str,
        kind: ImageKind,
        layers: &[Vec<u8>],
        config: Value,
    ) -> Value {
        let (manifest_type, config_type, layer_type) = match kind {
            ImageKind::DockerV2 => (
                DOCKER_MANIFEST,
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
            ImageKind::Oci => (
                OCI_MANIFEST,
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            ),
        };
        let mut descs = Vec::new();
        for layer in layers {
            descs.push(self.blob(repo, layer_type, layer).await);
        }
        let config = self.blob(repo, config_type, &serde_json::to_vec(&config).unwrap()).await;
        let manifest =
            json!({ "schemaVersion": 2, "mediaType": manifest_type, "config": config, "layers": descs });
        self.manifest(repo, tag, manifest_type, &manifest).await
    }

    /// Pushes an OCI image index of `entries` (see [`platform_entry`]) as `repo:tag`;
    /// returns its descriptor.
    pub async fn index(&self, repo: &str, tag: &str, entries: &[Value]) -> Value {
        let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries });
        self.manifest(repo, tag, OCI_INDEX, &index).await
    }
}
