//! Finding the Wasm module inside an ordinary image: overlaying its tar layers (later
//! layers win, whiteouts delete, links are followed), picking the `.wasm` file that
//! Entrypoint/Cmd names, or the only one, and streaming it into the blob store. Every
//! layer is read through a [`Guarded`] reader: what it unpacks to is capped, and so is
//! each file in it (checked from its header, before it is inflated).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;

use super::OciError;
use super::blobs::Blobs;
use super::formats::{Compression, ContainerConfig};
use super::layer_guard::{Guarded, Report, Violation};
use super::limits::{Limit, MAX_LAYER_PATH, human};

/// A downloaded, verified layer blob.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub path: PathBuf,
    pub digest: String,
    pub compression: Compression,
}

/// How the layers of one image are read: the cap on what each unpacks to (and so on each
/// file), and the image's name for errors.
pub(crate) struct Unpack<'a> {
    pub reference: &'a str,
    pub max_unpacked: u64,
}

/// The module found in an image, stored in the blob store.
#[derive(Debug)]
pub(crate) struct Found {
    pub digest: String,
    pub path: PathBuf,
    /// Where it is in the image (`/app.wasm`).
    pub inner: String,
}

/// What a path is in the final (overlaid) filesystem.
#[derive(Debug, Clone)]
enum Node {
    /// A regular file stored in layer `layer`.
    File { layer: usize },
    /// A symlink; the target is already made absolute and normalized.
    Symlink(String),
    /// A hard link to another path of the image.
    HardLink(String),
}

/// Path without leading `/` or `./`, `.` segments or empty segments; `..` pops.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

fn open_layer(layer: &Layer, cap: u64, report: Report) -> Result<Box<dyn Read>, OciError> {
    let read_err = |source| OciError::LayerRead { digest: layer.digest.clone(), source };
    let mut file = BufReader::new(File::open(&layer.path).map_err(read_err)?);
    // Some registries label gzip layers as plain tar (and vice versa): trust the magic.
    let magic = std::io::BufRead::fill_buf(&mut file).map_err(read_err)?;
    let gzip =
        magic.starts_with(&[0x1f, 0x8b]) || (magic.is_empty() && layer.compression == Compression::Gzip);
    let unpacked: Box<dyn Read> =
        if gzip { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
    Ok(Box::new(Guarded::new(unpacked, cap, report)))
}

/// The error for a layer the guard stopped, or for a plain read failure.
fn layer_error(unpack: &Unpack<'_>, layer: &Layer, report: &Report, source: std::io::Error) -> OciError {
    let reference = unpack.reference.to_string();
    match report.get() {
        Some(Violation::Unpacked) => OciError::TooLarge {
            reference,
            what: format!("layer {}", layer.digest),
            limit: Limit::Unpacked(unpack.max_unpacked),
        },
        Some(Violation::TarHeader { size }) => OciError::TooLarge {
            reference,
            what: format!("a tar long-name or pax header ({}) in layer {}", human(size), layer.digest),
            limit: Limit::TarHeader,
        },
        None => OciError::LayerRead { digest: layer.digest.clone(), source },
    }
}

/// Visits every entry of a layer as (normalized path, entry); stops early when `visit`
/// returns false. A file larger than the cap is refused from its header.
fn each_entry(
    unpack: &Unpack<'_>,
    layer: &Layer,
    mut visit: impl FnMut(String, &mut tar::Entry<'_, Box<dyn Read>>) -> Result<bool, OciError>,
) -> Result<(), OciError> {
    let report = Report::default();
    let fail = |source| layer_error(unpack, layer, &report, source);
    let mut archive = tar::Archive::new(open_layer(layer, unpack.max_unpacked, report.clone())?);
    for entry in archive.entries().map_err(fail)? {
        let mut entry = entry.map_err(fail)?;
        let raw = entry.path().map_err(fail)?.to_string_lossy().into_owned();
        if raw.len() > MAX_LAYER_PATH {
            let detail = format!("a path of {} bytes (more than {MAX_LAYER_PATH})", raw.len());
            return Err(fail(std::io::Error::other(detail)));
        }
        let path = normalize(&raw);
        let size = entry.size();
        if size > unpack.max_unpacked {
            return Err(OciError::TooLarge {
                reference: unpack.reference.to_string(),
                what: format!("/{path} ({}) in layer {}", human(size), layer.digest),
                limit: Limit::Unpacked(unpack.max_unpacked),
            });
        }
        match visit(path, &mut entry) {
            Ok(true) => {}
            Ok(false) => break,
            // A read the guard stopped is reported as the cap it hit.
            Err(e) if report.get().is_some() => return Err(fail(std::io::Error::other(e.to_string()))),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The overlaid view of every file and link of the image (directories are implied).
fn overlay(unpack: &Unpack<'_>, layers: &[Layer]) -> Result<BTreeMap<String, (usize, Node)>, OciError> {
    let mut view: BTreeMap<String, (usize, Node)> = BTreeMap::new();
    for (idx, layer) in layers.iter().enumerate() {
        each_entry(unpack, layer, |path, entry| {
            let name = path.rsplit('/').next().unwrap_or("");
            let dir = parent(&path).to_string();
            if name == ".wh..wh..opq" {
                // Opaque directory: hide everything below `dir` that lower layers put there.
                let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
                view.retain(|k, (from, _)| !(*from < idx && k.starts_with(&prefix)));
                return Ok(true);
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let gone = normalize(&format!("{dir}/{hidden}"));
                let below = format!("{gone}/");
                view.retain(|k, _| *k != gone && !k.starts_with(&below));
                return Ok(true);
            }
            let kind = entry.header().entry_type();
            let link = || -> Result<String, OciError> {
                let name = entry
                    .link_name()
                    .map_err(|source| OciError::LayerRead { digest: layer.digest.clone(), source })?;
                Ok(name.map(|l| l.to_string_lossy().into_owned()).unwrap_or_default())
            };
            let node = if kind.is_symlink() {
                let target = link()?;
                let abs = if target.starts_with('/') { target } else { format!("{dir}/{target}") };
                Some(Node::Symlink(normalize(&abs)))
            } else if kind.is_hard_link() {
                Some(Node::HardLink(normalize(&link()?)))
            } else if is_regular(kind) {
                Some(Node::File { layer: idx })
            } else {
                None
            };
            match node {
                Some(node) => {
                    view.insert(path, (idx, node));
                }
                // A directory (or device, fifo...) replaces a file or link of that name.
                None => {
                    view.remove(&path);
                }
            }
            Ok(true)
        })?;
    }
    Ok(view)
}

fn is_regular(kind: tar::EntryType) -> bool {
    kind.is_file() || kind == tar::EntryType::Continuous
}

/// Follows links (in the path itself or in a parent directory) to a regular file.
fn resolve(view: &BTreeMap<String, (usize, Node)>, path: &str) -> Option<(String, usize)> {
    let mut current = normalize(path);
    for _ in 0..32 {
        match view.get(&current).map(|(_, n)| n) {
            Some(Node::File { layer }) => return Some((current, *layer)),
            Some(Node::Symlink(t)) | Some(Node::HardLink(t)) => current = t.clone(),
            None => {
                // A symlinked parent directory: rewrite the longest linked prefix.
                let segs: Vec<&str> = current.split('/').collect();
                let rewrite = (1..segs.len()).rev().find_map(|i| match view.get(&segs[..i].join("/")) {
                    Some((_, Node::Symlink(t))) => Some(format!("{t}/{}", segs[i..].join("/"))),
                    _ => None,
                })?;
                current = normalize(&rewrite);
            }
        }
    }
    None
}

/// Streams the last regular entry `path` of `layer` into the blob store.
fn store_file(
    unpack: &Unpack<'_>,
    layer: &Layer,
    path: &str,
    blobs: &Blobs,
) -> Result<Option<(String, PathBuf)>, OciError> {
    let mut found = None;
    each_entry(unpack, layer, |p, entry| {
        if p == path && is_regular(entry.header().entry_type()) {
            // The entry's size was checked against the cap; the guard bounds the read too.
            let too_large = || OciError::TooLarge {
                reference: unpack.reference.to_string(),
                what: format!("/{path} in layer {}", layer.digest),
                limit: Limit::Unpacked(unpack.max_unpacked),
            };
            // Keep going: a later entry of the same layer wins.
            found = Some(blobs.ingest(entry, unpack.max_unpacked, too_large)?);
        }
        Ok(true)
    })?;
    Ok(found)
}

/// Finds the module and stores it in `blobs`. `config` gives Entrypoint, Cmd and
/// WorkingDir. Blocking: call it off the runtime.
pub(crate) fn find_module(
    unpack: &Unpack<'_>,
    layers: &[Layer],
    config: &ContainerConfig,
    blobs: &Blobs,
) -> Result<Found, OciError> {
    let reference = unpack.reference;
    let not_in_image = |detail: String| OciError::WasmNotInImage { reference: reference.to_string(), detail };
    let argv: Vec<&String> = config.entrypoint.iter().chain(config.cmd.iter()).flatten().collect();
    let named = argv.iter().find(|a| a.to_ascii_lowercase().ends_with(".wasm"));
    let wanted = named.map(|a| {
        let workdir = config.working_dir.as_deref().unwrap_or("/");
        if a.starts_with('/') { normalize(a) } else { normalize(&format!("{workdir}/{a}")) }
    });
    let view = overlay(unpack, layers)?;
    // Distinct .wasm files, by what they resolve to (a link and its target count once).
    let mut resolved: BTreeMap<(String, usize), String> = BTreeMap::new();
    for key in view.keys().filter(|k| k.to_ascii_lowercase().ends_with(".wasm")) {
        if let Some(target) = resolve(&view, key) {
            resolved.entry(target).or_insert_with(|| key.clone());
        }
    }
    let wasm_files: Vec<String> = resolved.values().map(|k| format!("/{k}")).collect();
    let found = if wasm_files.is_empty() { "none".to_string() } else { wasm_files.join(", ") };
    let (path, layer) = match (&wanted, resolved.keys().collect::<Vec<_>>().as_slice()) {
        (Some(w), _) => resolve(&view, w).ok_or_else(|| {
            not_in_image(format!(
                "Entrypoint/Cmd names /{w}, which is not a file in the image (.wasm files: {found})"
            ))
        })?,
        (None, [only]) => (*only).clone(),
        (None, _) => {
            return Err(not_in_image(format!(
                "Entrypoint/Cmd {argv:?} names no .wasm file and the image does not hold exactly one (.wasm files: {found})"
            )));
        }
    };
    let (digest, stored) = layers
        .get(layer)
        .map(|l| store_file(unpack, l, &path, blobs))
        .transpose()?
        .flatten()
        .ok_or_else(|| not_in_image(format!("/{path} vanished while reading its layer")))?;
    Ok(Found { digest, path: stored, inner: format!("/{path}") })
}

#[cfg(test)]
mod tests;
