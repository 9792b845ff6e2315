//! Finding the Wasm module inside an ordinary image: overlaying its tar layers (later
//! layers win, whiteouts delete, links are followed) and picking the `.wasm` file that
//! Entrypoint/Cmd names, or the only one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;

use super::OciError;
use super::formats::{Compression, ContainerConfig};

/// A downloaded, verified layer blob.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub path: PathBuf,
    pub digest: String,
    pub compression: Compression,
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

fn open_layer(layer: &Layer) -> Result<Box<dyn Read>, OciError> {
    let read_err = |source| OciError::LayerRead { digest: layer.digest.clone(), source };
    let mut file = BufReader::new(File::open(&layer.path).map_err(read_err)?);
    // Some registries label gzip layers as plain tar (and vice versa): trust the magic.
    let magic = std::io::BufRead::fill_buf(&mut file).map_err(read_err)?;
    let gzip =
        magic.starts_with(&[0x1f, 0x8b]) || (magic.is_empty() && layer.compression == Compression::Gzip);
    Ok(if gzip { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) })
}

/// Visits every entry of a layer as (normalized path, entry).
fn each_entry(
    layer: &Layer,
    mut visit: impl FnMut(String, &mut tar::Entry<'_, Box<dyn Read>>) -> Result<bool, std::io::Error>,
) -> Result<(), OciError> {
    let read_err = |source| OciError::LayerRead { digest: layer.digest.clone(), source };
    let mut archive = tar::Archive::new(open_layer(layer)?);
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let path = normalize(&entry.path().map_err(read_err)?.to_string_lossy());
        if !visit(path, &mut entry).map_err(read_err)? {
            break;
        }
    }
    Ok(())
}

/// The overlaid view of every file and link of the image (directories are implied).
fn overlay(layers: &[Layer]) -> Result<BTreeMap<String, (usize, Node)>, OciError> {
    let mut view: BTreeMap<String, (usize, Node)> = BTreeMap::new();
    for (idx, layer) in layers.iter().enumerate() {
        each_entry(layer, |path, entry| {
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
            let link = || -> Result<String, std::io::Error> {
                Ok(entry.link_name()?.map(|l| l.to_string_lossy().into_owned()).unwrap_or_default())
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

fn read_file(layer: &Layer, path: &str) -> Result<Option<Vec<u8>>, OciError> {
    let mut found = None;
    each_entry(layer, |p, entry| {
        if p == path && is_regular(entry.header().entry_type()) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            found = Some(bytes); // keep going: a later entry of the same layer wins
        }
        Ok(true)
    })?;
    Ok(found)
}

/// The module bytes and their path in the image. `config` gives Entrypoint, Cmd and
/// WorkingDir; `reference` names the image in errors.
pub(crate) fn find_module(
    layers: &[Layer],
    config: &ContainerConfig,
    reference: &str,
) -> Result<(Vec<u8>, String), OciError> {
    let not_in_image = |detail: String| OciError::WasmNotInImage { reference: reference.to_string(), detail };
    let argv: Vec<&String> = config.entrypoint.iter().chain(config.cmd.iter()).flatten().collect();
    let named = argv.iter().find(|a| a.to_ascii_lowercase().ends_with(".wasm"));
    let wanted = named.map(|a| {
        let workdir = config.working_dir.as_deref().unwrap_or("/");
        if a.starts_with('/') { normalize(a) } else { normalize(&format!("{workdir}/{a}")) }
    });
    let view = overlay(layers)?;
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
    let bytes = layers
        .get(layer)
        .map(|l| read_file(l, &path))
        .transpose()?
        .flatten()
        .ok_or_else(|| not_in_image(format!("/{path} vanished while reading its layer")))?;
    Ok((bytes, format!("/{path}")))
}

#[cfg(test)]
#[path = "image_tests.rs"]
mod tests;
