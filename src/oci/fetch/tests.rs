//! Unit tests of the bounded registry GETs, against a registry on loopback that lies:
//! endless or oversized manifests, sizes that disagree, bodies longer than announced.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::oci::blobs::{Blobs, sha256_digest};

/// What the fake registry answers to one path.
#[derive(Clone)]
enum Reply {
    /// A status, extra headers and a body (Content-Length is the body's unless given).
    Body { status: u16, headers: Vec<(&'static str, String)>, body: Vec<u8> },
    /// A body that never ends (no Content-Length: it is delimited by closing).
    Endless { status: u16 },
}

fn ok(body: &[u8]) -> Reply {
    Reply::Body { status: 200, headers: Vec::new(), body: body.to_vec() }
}

/// Serves `reply(path)` on a loopback port; returns `host:port`.
async fn registry(reply: impl Fn(&str) -> Reply + Send + Sync + 'static) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let reply = Arc::new(reply);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).await.unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                match reply(&path) {
                    Reply::Body { status, headers, body } => {
                        let mut out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
                        if !headers.iter().any(|(k, _)| *k == "Content-Length") {
                            out += &format!("Content-Length: {}\r\n", body.len());
                        }
                        for (k, v) in headers {
                            out += &format!("{k}: {v}\r\n");
                        }
                        out += "\r\n";
                        let _ = conn.write_all(out.as_bytes()).await;
                        let _ = conn.write_all(&body).await;
                    }
                    Reply::Endless { status } => {
                        let out = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n\r\n");
                        let _ = conn.write_all(out.as_bytes()).await;
                        let chunk = vec![b' '; 64 * 1024];
                        while conn.write_all(&chunk).await.is_ok() {}
                    }
                }
            });
        }
    });
    addr
}

fn http(addr: &str) -> Http {
    let reference: Reference = format!("{addr}/app:v1").parse().unwrap();
    Http::new(&reference, &format!("{addr}/app:v1"), &[addr.to_string()]).unwrap()
}

fn desc(digest: &str, size: Option<u64>) -> Descriptor {
    serde_json::from_value(
        serde_json::json!({"mediaType": "application/wasm", "digest": digest, "size": size}),
    )
    .unwrap()
}

#[tokio::test]
async fn an_endless_manifest_stops_at_four_mebibytes() {
    let addr = registry(|_| Reply::Endless { status: 200 }).await;
    let err = http(&addr).manifest("v1", None).await.unwrap_err();
    assert!(matches!(err, OciError::TooLarge { limit: Limit::Manifest, .. }), "{err:?}");
    assert!(err.to_string().contains("the manifest v1 of image"), "{err}");
    assert!(err.to_string().contains("exceeds 4Mi, the cap on manifests and image configs"), "{err}");
}

#[tokio::test]
async fn a_manifest_announced_too_large_is_refused_before_it_is_read() {
    let headers = vec![("Content-Length", (1u64 << 30).to_string())];
    let addr =
        registry(move |_| Reply::Body { status: 200, headers: headers.clone(), body: Vec::new() }).await;
    let err = http(&addr).manifest("v1", None).await.unwrap_err();
    assert!(err.to_string().contains("(Content-Length 1Gi)"), "{err}");
}

#[tokio::test]
async fn a_manifest_within_the_cap_is_read_with_its_announced_digest() {
    let manifest = br#"{"schemaVersion":2}"#.to_vec();
    let digest = sha256_digest(&manifest);
    let headers = vec![("Docker-Content-Digest", digest.clone())];
    let body = manifest.clone();
    let addr =
        registry(move |_| Reply::Body { status: 200, headers: headers.clone(), body: body.clone() }).await;
    let (got, announced) = http(&addr).manifest("v1", None).await.unwrap();
    assert_eq!((got, announced), (manifest, Some(digest)));
}

#[tokio::test]
async fn blob_sizes_that_disagree_or_exceed_the_cap_are_refused() {
    let blob = vec![7u8; 4096];
    let digest = sha256_digest(&blob);
    let body = blob.clone();
    let addr = registry(move |_| ok(&body)).await;
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::new(dir.path().to_path_buf());
    let too_large = || OciError::Registry { reference: "r".into(), detail: "over the cap".into() };
    let h = http(&addr);

    // The descriptor says 100 bytes; the registry announces 4096.
    let w = blobs.writer(&digest, Some(100), "layer").await.unwrap();
    let err = h.blob(&desc(&digest, Some(100)), None, w).await.unwrap_err();
    assert!(
        err.to_string().contains("100 bytes by its descriptor, but the registry announced 4096"),
        "{err}"
    );

    // No size in the descriptor; the announced length is over the cap: refused unread.
    let w = blobs.writer(&digest, None, "layer").await.unwrap().capped(1024, too_large);
    let err = h.blob(&desc(&digest, None), None, w).await.unwrap_err();
    assert!(err.to_string().contains("over the cap"), "{err}");

    // Within the cap, the same blob is stored and counted.
    let w = blobs.writer(&digest, None, "layer").await.unwrap().capped(8192, too_large);
    let (path, written) = h.blob(&desc(&digest, None), None, w).await.unwrap();
    assert_eq!((std::fs::read(path).unwrap(), written), (blob, 4096));
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "temp file left behind");
}

#[tokio::test]
async fn an_endless_blob_stops_at_its_cap_and_a_wrong_one_at_its_digest() {
    let addr = registry(|path: &str| {
        if path.ends_with(&"1".repeat(64)) {
            Reply::Endless { status: 200 }
        } else {
            ok(b"not what was promised")
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let blobs = Blobs::new(dir.path().to_path_buf());
    let too_large = || OciError::Registry { reference: "r".into(), detail: "over the cap".into() };
    let h = http(&addr);
    let endless = format!("sha256:{}", "1".repeat(64));
    let w = blobs.writer(&endless, None, "layer").await.unwrap().capped(1 << 20, too_large);
    let err = h.blob(&desc(&endless, None), None, w).await.unwrap_err();
    assert!(err.to_string().contains("over the cap"), "{err}");

    let promised = sha256_digest(b"what the manifest promised");
    let w = blobs.writer(&promised, None, "layer").await.unwrap().capped(1 << 20, too_large);
    let err = h.blob(&desc(&promised, None), None, w).await.unwrap_err();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err:?}");
    assert!(!blobs.has(&promised).await);
}

#[tokio::test]
async fn error_responses_are_read_only_in_part_and_mapped() {
    let addr = registry(|path: &str| {
        if path.contains("manifests/missing") {
            let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
            Reply::Body { status: 404, headers: Vec::new(), body: body.to_vec() }
        } else {
            Reply::Endless { status: 500 }
        }
    })
    .await;
    let h = http(&addr);
    let err = h.manifest("missing", None).await.unwrap_err();
    assert!(err.is_not_found() && err.to_string().contains("manifest unknown"), "{err}");
    let err = h.manifest("v1", None).await.unwrap_err();
    assert!(matches!(&err, OciError::Registry { detail, .. } if detail.contains("HTTP 500")), "{err:?}");
}
