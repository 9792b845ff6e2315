//! Unit tests of manifest parsing, format decisions and index entry selection.

use super::*;

fn desc(media_type: &str) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: format!("sha256:{}", "0".repeat(64)),
        size: Some(1),
        platform: None,
        annotations: BTreeMap::new(),
    }
}

fn entry(os: &str, arch: &str, digest_char: char) -> Descriptor {
    Descriptor {
        digest: format!("sha256:{}", digest_char.to_string().repeat(64)),
        platform: Some(Platform { os: os.into(), architecture: arch.into() }),
        ..desc(OCI_MANIFEST)
    }
}

#[test]
fn wasm_artifacts_are_recognized() {
    let p = plan(desc(WASM_TO_OCI_CONFIG), vec![desc(WASM_TO_OCI_LAYER)]).unwrap();
    assert!(matches!(p, Plan::WasmLayer { format: ArtifactFormat::WasmToOci, .. }));
    let p = plan(desc(CNCF_WASM_CONFIG), vec![desc(CNCF_WASM_LAYER)]).unwrap();
    assert!(matches!(p, Plan::WasmLayer { format: ArtifactFormat::CncfWasm, .. }));
}

#[test]
fn images_with_tar_layers_are_planned_with_their_compression() {
    let p = plan(
        desc(DOCKER_IMAGE_CONFIG),
        vec![
            desc("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            desc("application/vnd.oci.image.layer.v1.tar"),
        ],
    )
    .unwrap();
    let Plan::Image { layers, .. } = p else { panic!("{p:?}") };
    let kinds: Vec<Compression> = layers.iter().map(|(_, c)| *c).collect();
    assert_eq!(kinds, [Compression::Gzip, Compression::None]);
}

#[test]
fn unsupported_artifacts_name_their_media_types() {
    let cases = [
        (desc(CNCF_WASM_CONFIG), vec![desc("text/plain")], "text/plain"),
        (desc("application/vnd.example+json"), vec![desc("text/plain")], "application/vnd.example+json"),
        (desc(OCI_IMAGE_CONFIG), vec![desc("application/vnd.oci.image.layer.v1.tar+zstd")], "tar+zstd"),
        (desc(CNCF_WASM_CONFIG), vec![desc(CNCF_WASM_LAYER), desc(CNCF_WASM_LAYER)], "exactly one"),
        (desc(OCI_IMAGE_CONFIG), vec![], "supported:"),
    ];
    for (config, layers, want) in cases {
        match plan(config, layers) {
            Err(Rejection::Unsupported(why)) => assert!(why.contains(want), "{why} lacks {want}"),
            other => panic!("expected Unsupported naming {want}, got {other:?}"),
        }
    }
}

#[test]
fn manifests_and_indexes_parse() {
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}",
            "digest":"sha256:{}","size":3,"platform":{{"os":"wasip1","architecture":"wasm"}}}}]}}"#,
        "1".repeat(64)
    );
    assert!(matches!(parse_manifest(index.as_bytes()), Ok(Manifest::Index(e)) if e.len() == 1));
    let image = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"{CNCF_WASM_CONFIG}","digest":"sha256:{}","size":2}},"layers":[]}}"#,
        "2".repeat(64)
    );
    assert!(matches!(parse_manifest(image.as_bytes()), Ok(Manifest::Image { .. })));
    assert!(matches!(parse_manifest(b"{"), Err(Rejection::Malformed(_))));
    assert!(matches!(
        parse_manifest(br#"{"schemaVersion":1,"fsLayers":[]}"#),
        Err(Rejection::Unsupported(_))
    ));
    assert!(matches!(parse_manifest(br#"{"schemaVersion":2}"#), Err(Rejection::Malformed(_))));
}

#[test]
fn index_selection_prefers_wasm_then_the_only_entry() {
    let entries = [entry("linux", "amd64", 'a'), entry("wasip1", "wasm", 'b')];
    assert_eq!(select_entry(&entries).unwrap().digest, entries[1].digest);
    let entries = [entry("linux", "arm64", 'a'), entry("wasi", "wasm32", 'b')];
    assert_eq!(select_entry(&entries).unwrap().digest, entries[1].digest);
    let entries = [entry("linux", "amd64", 'a'), entry("unknown", "unknown", 'c')];
    assert_eq!(select_entry(&entries).unwrap().digest, entries[0].digest);
    let err = select_entry(&[entry("linux", "amd64", 'a'), entry("linux", "arm64", 'b')]).unwrap_err();
    assert_eq!(err, "linux/amd64, linux/arm64");
    assert_eq!(select_entry(&[]).unwrap_err(), "the index is empty");
}
