//! Image references: parsing (registry or `file://`), the default-tag rule, registry host
//! normalization shared by credentials and the insecure-registry list.

use std::path::PathBuf;

use oci_client::Reference;

use super::OciError;

/// What an image string points at.
#[derive(Debug, Clone)]
pub(crate) enum ImageRef {
    /// An image in a registry (`docker.io` is the default registry, `latest` the default tag).
    Registry(Reference),
    /// `file:///abs/path/app.wasm`: a module on this node.
    LocalFile(PathBuf),
}

/// Parses `image` as a `file://` URL or a registry reference.
pub(crate) fn parse(image: &str) -> Result<ImageRef, OciError> {
    let bad = |why: String| OciError::BadReference { reference: image.to_string(), why };
    if let Some(rest) = image.strip_prefix("file://") {
        let path = PathBuf::from(rest);
        if !path.is_absolute() {
            return Err(bad("a file:// reference needs an absolute path (file:///path/app.wasm)".into()));
        }
        return Ok(ImageRef::LocalFile(path));
    }
    if image.trim() != image || image.is_empty() {
        return Err(bad("empty or surrounded by whitespace".into()));
    }
    let reference: Reference = image.parse().map_err(|e: oci_client::ParseError| bad(e.to_string()))?;
    if reference.repository().chars().any(|c| c.is_ascii_uppercase()) {
        return Err(bad("repository name must be lowercase".into()));
    }
    if let Some(digest) = reference.digest()
        && !digest.starts_with("sha256:")
    {
        return Err(bad(format!("only sha256 digests are supported, not {digest}")));
    }
    Ok(ImageRef::Registry(reference))
}

/// Compiles the reference parser's regular expression now, on a thread of its own, so that
/// the first pull after the agent starts does not. oci-spec builds it on first use, and its
/// `\w{0,127}` tag (Unicode classes, repeated) makes it a large automaton: 30-35 ms of CPU
/// (perf, `regex_automata`'s compiler), which was most of a cached pod's start after an agent
/// restart. A failure to start the thread only leaves that cost where it was.
pub fn warm_parser() {
    let warm = || {
        let _ = "warm/up:latest".parse::<Reference>();
    };
    if let Err(e) = std::thread::Builder::new().name("oci-warm".into()).spawn(warm) {
        tracing::debug!(error = %e, "reference parser not warmed");
    }
}

/// True if the reference has no digest and its tag is `latest` or absent (the rule that
/// makes Kubernetes default `imagePullPolicy` to `Always`).
pub(crate) fn tag_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    // The tag is after the last ':' of the last path segment (a ':' before it is a port).
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

/// The registry key used for credentials and the insecure list: lowercase `host[:port]`,
/// without scheme or path; every Docker Hub alias becomes `docker.io`.
pub(crate) fn normalize_host(key: &str) -> String {
    let key = key.trim();
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".into(),
        _ => host,
    }
}

/// The name the registry is reached by, as oci-client resolves it (Docker Hub's API host
/// is `index.docker.io`); insecure-registry entries are compared with this.
pub(crate) fn client_registry(reference: &Reference) -> String {
    reference.resolve_registry().to_string()
}

/// The insecure-registry list as oci-client's `HttpsExcept` wants it: `host:port` only.
pub(crate) fn insecure_hosts(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|entry| {
            let e = entry.trim();
            let e = e.strip_prefix("https://").or_else(|| e.strip_prefix("http://")).unwrap_or(e);
            e.split('/').next().unwrap_or(e).to_ascii_lowercase()
        })
        .filter(|e| !e.is_empty())
        .collect()
}

/// `<registry>/<repository>@<digest>`: the imageID the kubelet reports.
pub(crate) fn image_id(reference: &Reference, manifest_digest: &str) -> String {
    format!("{}/{}@{}", reference.registry(), reference.repository(), manifest_digest)
}

/// The key under which a pull of `reference` is remembered: its normalized full form, so
/// `host/app` and `host/app:latest` are one entry.
pub(crate) fn index_key(reference: &Reference) -> String {
    reference.whole()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_registry_and_file_references() {
        let ImageRef::Registry(r) = parse("127.0.0.1:5000/team/app:v1").unwrap() else { panic!() };
        assert_eq!((r.registry(), r.repository(), r.tag()), ("127.0.0.1:5000", "team/app", Some("v1")));
        let ImageRef::Registry(r) = parse("app").unwrap() else { panic!() };
        assert_eq!(index_key(&r), "docker.io/library/app:latest");
        assert_eq!(client_registry(&r), "index.docker.io");
        let ImageRef::LocalFile(p) = parse("file:///opt/app.wasm").unwrap() else { panic!() };
        assert_eq!(p, PathBuf::from("/opt/app.wasm"));
    }

    #[test]
    fn rejects_bad_references() {
        for bad in ["", "UPPER/case", "file://relative.wasm", " app", "app@md5:abcd"] {
            let err = parse(bad).unwrap_err();
            assert!(matches!(err, OciError::BadReference { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn latest_tag_detection_ignores_ports() {
        assert!(tag_is_latest("localhost:5000/app"));
        assert!(tag_is_latest("app:latest"));
        assert!(!tag_is_latest("localhost:5000/app:1.0"));
        assert!(!tag_is_latest("app@sha256:00"));
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_host("Registry.Example.com:5000"), "registry.example.com:5000");
        assert_eq!(normalize_host("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(insecure_hosts(&["http://127.0.0.1:5000/".into(), " ".into()]), vec!["127.0.0.1:5000"]);
    }
}
