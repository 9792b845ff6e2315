//! Unit tests of module extraction from tar layers.

use super::*;

enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
}

/// Writes a layer (gzip when `gzip`) holding `entries` into `dir`.
fn layer(dir: &std::path::Path, n: usize, gzip: bool, entries: &[E]) -> Layer {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        match e {
            E::File(path, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                builder.append_data(&mut h, path, *data).unwrap();
            }
            E::Dir(path) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                builder.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            E::Symlink(path, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                builder.append_link(&mut h, path, target).unwrap();
            }
        }
    }
    let tar = builder.into_inner().unwrap();
    let bytes = if gzip {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        gz.finish().unwrap()
    } else {
        tar
    };
    let path = dir.join(format!("layer{n}"));
    std::fs::write(&path, bytes).unwrap();
    // Declared compression is deliberately "None": the gzip magic must be detected.
    Layer { path, digest: format!("sha256:layer{n}"), compression: Compression::None }
}

/// Finds the module with a cap of `cap` bytes per layer; its bytes and path in the image.
fn find_capped(layers: &[Layer], config: &ContainerConfig, cap: u64) -> Result<(Vec<u8>, String), OciError> {
    let store = tempfile::tempdir().unwrap();
    let blobs = Blobs::new(store.path().to_path_buf());
    let found = find_module(&Unpack { reference: "img", max_unpacked: cap }, layers, config, &blobs)?;
    assert_eq!(found.path, blobs.path(&found.digest).unwrap(), "stored under its digest");
    assert_eq!(std::fs::read_dir(store.path().join("tmp")).unwrap().count(), 0, "temp file left behind");
    Ok((std::fs::read(&found.path).unwrap(), found.inner))
}

fn find(layers: &[Layer], config: &ContainerConfig) -> Result<(Vec<u8>, String), OciError> {
    find_capped(layers, config, 1 << 20)
}

fn cmd(args: &[&str]) -> ContainerConfig {
    ContainerConfig { cmd: Some(args.iter().map(|s| s.to_string()).collect()), ..Default::default() }
}

#[test]
fn the_entrypoint_file_from_the_topmost_layer_wins() {
    let dir = tempfile::tempdir().unwrap();
    let layers = [
        layer(dir.path(), 0, true, &[E::File("./http-server.wasm", b"old"), E::File("other.wasm", b"x")]),
        layer(dir.path(), 1, false, &[E::File("http-server.wasm", b"new")]),
    ];
    let (bytes, path) = find(&layers, &cmd(&["/http-server.wasm", "--port", "8080"])).unwrap();
    assert_eq!((bytes.as_slice(), path.as_str()), (&b"new"[..], "/http-server.wasm"));
}

#[test]
fn entrypoint_relative_to_working_dir_and_through_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let layers = [layer(
        dir.path(),
        0,
        true,
        &[E::Dir("opt/"), E::File("opt/real/app.bin", b"module"), E::Symlink("app", "opt/real")],
    )];
    let config = ContainerConfig {
        entrypoint: Some(vec!["bin/app.wasm".into()]),
        working_dir: Some("/srv".into()),
        ..Default::default()
    };
    let err = find(&layers, &config).unwrap_err().to_string();
    assert!(err.contains("names /srv/bin/app.wasm"), "{err}");
    let layers = [
        layers[0].clone(),
        layer(dir.path(), 1, false, &[E::Symlink("srv/bin/app.wasm", "../../app/app.bin")]),
    ];
    let (bytes, path) = find(&layers, &config).unwrap();
    assert_eq!((bytes.as_slice(), path.as_str()), (&b"module"[..], "/opt/real/app.bin"));
}

#[test]
fn whiteouts_delete_files_from_lower_layers() {
    let dir = tempfile::tempdir().unwrap();
    let layers = [
        layer(dir.path(), 0, true, &[E::File("app.wasm", b"a"), E::File("lib/b.wasm", b"b")]),
        layer(dir.path(), 1, true, &[E::File(".wh.app.wasm", b"")]),
    ];
    let err = find(&layers, &cmd(&["/app.wasm"])).unwrap_err().to_string();
    assert!(err.contains("not a file in the image (.wasm files: /lib/b.wasm)"), "{err}");
    let layers = [
        layers[0].clone(),
        layer(dir.path(), 2, true, &[E::File("lib/.wh..wh..opq", b""), E::File("lib/c.wasm", b"c")]),
    ];
    // lib/b.wasm is hidden by the opaque whiteout; two files remain, so none is chosen.
    let err = find(&layers, &ContainerConfig::default()).unwrap_err().to_string();
    assert!(err.contains("(.wasm files: /app.wasm, /lib/c.wasm)"), "{err}");
}

#[test]
fn the_only_wasm_file_is_used_when_no_entrypoint_names_one() {
    let dir = tempfile::tempdir().unwrap();
    let layers =
        [layer(dir.path(), 0, false, &[E::File("usr/bin/tool.wasm", b"only"), E::File("etc/x", b"")])];
    let (bytes, path) = find(&layers, &cmd(&["--serve"])).unwrap();
    assert_eq!((bytes.as_slice(), path.as_str()), (&b"only"[..], "/usr/bin/tool.wasm"));

    let layers = [layer(dir.path(), 1, false, &[E::File("etc/x", b"")])];
    let err = find(&layers, &cmd(&["--serve"])).unwrap_err();
    assert!(
        matches!(&err, OciError::WasmNotInImage { detail, .. } if detail.contains(".wasm files: none")),
        "{err}"
    );
}

#[test]
fn a_corrupt_layer_is_a_layer_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad");
    std::fs::write(&path, [0x1f, 0x8b, 0, 1, 2, 3]).unwrap();
    let layers = [Layer { path, digest: "sha256:bad".into(), compression: Compression::Gzip }];
    let err = find(&layers, &cmd(&["/a.wasm"])).unwrap_err();
    assert!(matches!(&err, OciError::LayerRead { digest, .. } if digest == "sha256:bad"), "{err}");
}

/// A gzip layer whose tar header declares `/app.wasm` of `declared` bytes, followed by only
/// a little of that data: the header alone must be enough to refuse it.
fn bomb(dir: &std::path::Path, declared: u64) -> Layer {
    use std::io::Write;
    let mut h = tar::Header::new_gnu();
    h.set_size(declared);
    h.set_mode(0o644);
    h.set_path("app.wasm").unwrap();
    h.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(h.as_bytes()).unwrap();
    gz.write_all(&[0; 64 * 1024]).unwrap();
    let path = dir.join("bomb");
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    Layer { path, digest: "sha256:bomb".into(), compression: Compression::Gzip }
}

#[test]
fn a_file_larger_than_the_cap_is_refused_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let err = find_capped(&[bomb(dir.path(), 1 << 30)], &cmd(&["/app.wasm"]), 256 << 20).unwrap_err();
    assert!(matches!(&err, OciError::TooLarge { limit: Limit::Unpacked(_), .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("/app.wasm (1Gi) in layer sha256:bomb"), "{text}");
    assert!(text.contains("--image-max-size=256Mi"), "{text}");
}

#[test]
fn a_layer_that_unpacks_past_the_cap_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Each file is within the cap; together they are not.
    let files: Vec<(String, Vec<u8>)> = (0..4).map(|i| (format!("f{i}"), vec![7u8; 400 * 1024])).collect();
    let entries: Vec<E> = files.iter().map(|(p, d)| E::File(p, d)).chain([E::File("a.wasm", b"m")]).collect();
    let layers = [layer(dir.path(), 0, true, &entries)];
    let err = find_capped(&layers, &cmd(&["/a.wasm"]), 1 << 20).unwrap_err();
    assert!(matches!(&err, OciError::TooLarge { limit: Limit::Unpacked(_), .. }), "{err:?}");
    assert!(
        err.to_string().contains("layer sha256:layer0 of image \"img\" exceeds --image-max-size=1Mi"),
        "{err}"
    );
    // With room for it, the same layer yields its module.
    let (bytes, _) = find_capped(&layers, &cmd(&["/a.wasm"]), 2 << 20).unwrap();
    assert_eq!(bytes, b"m");
}

#[test]
fn the_module_streams_into_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let module: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let layers = [layer(dir.path(), 0, true, &[E::File("app.wasm", &module)])];
    let (bytes, path) = find_capped(&layers, &cmd(&["/app.wasm"]), 4 << 20).unwrap();
    assert_eq!((bytes == module, path.as_str()), (true, "/app.wasm"));
}
