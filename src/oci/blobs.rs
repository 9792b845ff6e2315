//! The content-addressed blob directory (`<root>/blobs/sha256/<hex>`): writers that hash
//! and count while writing, stop at a cap, and only publish a verified blob; blobs stored
//! from a reader under their own digest; and atomic writes (temp + rename).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::OciError;

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The hex part of a well-formed `sha256:<64 lowercase hex>` digest.
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hex)
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OciError + use<> {
    let path = path.to_path_buf();
    move |source| OciError::StoreIo { action, path, source }
}

/// A unique temp file name in `<root>/tmp` (unique per process and call).
fn temp_path(root: &Path, hint: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let short: String = hint.chars().filter(|c| c.is_ascii_alphanumeric()).take(16).collect();
    root.join("tmp").join(format!("{short}.{}.{n}", std::process::id()))
}

/// Why [`hash_within`] stopped.
enum Stopped {
    OverCap,
    Read(std::io::Error),
    Sink(std::io::Error),
}

/// Reads `reader` to its end, at most `cap` bytes, handing each chunk to `sink`; returns
/// the `sha256:` digest of what was read.
fn hash_within(
    reader: &mut dyn Read,
    cap: u64,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<String, Stopped> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Stopped::Read(e)),
        };
        total += n as u64;
        if total > cap {
            return Err(Stopped::OverCap);
        }
        hasher.update(&buf[..n]);
        sink(&buf[..n]).map_err(Stopped::Sink)?;
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// Writes `bytes` to `path` through a temp file in `<root>/tmp` and a rename, so readers
/// never see a partial file.
pub(crate) async fn write_atomic(root: &Path, path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    let tmp = temp_path(root, "write");
    if let Some(parent) = tmp.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io_err("creating", parent))?;
    }
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io_err("creating", parent))?;
    }
    tokio::fs::write(&tmp, bytes).await.map_err(io_err("writing", &tmp))?;
    if let Err(e) = tokio::fs::rename(&tmp, path).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(io_err("renaming into", path)(e));
    }
    Ok(())
}

/// The blob directory of a store rooted at `root`.
#[derive(Debug, Clone)]
pub(crate) struct Blobs {
    root: PathBuf,
}

impl Blobs {
    pub(crate) fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Where the blob with this `sha256:` digest lives (whether or not it exists).
    pub(crate) fn path(&self, digest: &str) -> Option<PathBuf> {
        sha256_hex(digest).map(|hex| self.root.join("blobs").join("sha256").join(hex))
    }

    /// True if the verified blob is stored.
    pub(crate) async fn has(&self, digest: &str) -> bool {
        match self.path(digest) {
            Some(p) => tokio::fs::metadata(&p).await.map(|m| m.is_file()).unwrap_or(false),
            None => false,
        }
    }

    /// Stores `bytes` under their own digest; returns the digest and the path.
    pub(crate) async fn put(&self, bytes: &[u8]) -> Result<(String, PathBuf), OciError> {
        let digest = sha256_digest(bytes);
        let mut w = self.writer(&digest, Some(bytes.len() as u64), "blob").await?;
        w.write(bytes).await?;
        let path = w.finish().await?;
        Ok((digest, path))
    }

    /// The stored blob with the digest of what `reader` yields, if there is one; reads at
    /// most `cap` bytes (beyond it: `too_large()`; a read error: `unreadable(error)`) and
    /// writes nothing. Blocking: call it off the runtime.
    pub(crate) fn find(
        &self,
        reader: &mut dyn Read,
        cap: u64,
        too_large: impl FnOnce() -> OciError,
        unreadable: impl FnOnce(std::io::Error) -> OciError,
    ) -> Result<Option<(String, PathBuf)>, OciError> {
        let digest = hash_within(reader, cap, |_| Ok(())).map_err(|stopped| match stopped {
            Stopped::OverCap => too_large(),
            Stopped::Read(e) | Stopped::Sink(e) => unreadable(e),
        })?;
        Ok(self.path(&digest).filter(|p| p.is_file()).map(|p| (digest, p)))
    }

    /// Stores what `reader` yields under its own digest, reading at most `cap` bytes
    /// (beyond it: `too_large()`, and nothing is stored). Blocking: call it off the runtime.
    pub(crate) fn ingest(
        &self,
        reader: &mut dyn Read,
        cap: u64,
        too_large: impl FnOnce() -> OciError,
    ) -> Result<(String, PathBuf), OciError> {
        let tmp = temp_path(&self.root, "ingest");
        let remove_tmp = TempFile(tmp.clone());
        if let Some(parent) = tmp.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        let mut file = std::fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
        let digest =
            hash_within(reader, cap, |chunk| file.write_all(chunk)).map_err(|stopped| match stopped {
                Stopped::OverCap => too_large(),
                Stopped::Read(e) => io_err("reading into", &tmp)(e),
                Stopped::Sink(e) => io_err("writing", &tmp)(e),
            })?;
        file.sync_all().map_err(io_err("syncing", &tmp))?;
        let target = self
            .path(&digest)
            .ok_or_else(|| io_err("naming", &tmp)(std::io::ErrorKind::InvalidData.into()))?;
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        std::fs::rename(&tmp, &target).map_err(io_err("renaming into", &target))?;
        drop(remove_tmp);
        Ok((digest, target))
    }

    /// A writer for the blob `digest` (`expected_size` if the descriptor gave one); `what`
    /// names the blob in errors.
    pub(crate) async fn writer(
        &self,
        digest: &str,
        expected_size: Option<u64>,
        what: &str,
    ) -> Result<BlobWriter, OciError> {
        let target = self.path(digest).ok_or_else(|| OciError::DigestMismatch {
            what: what.to_string(),
            expected: "a sha256:<64 hex> digest".into(),
            actual: digest.to_string(),
        })?;
        let tmp = temp_path(&self.root, digest.strip_prefix("sha256:").unwrap_or(digest));
        for dir in [tmp.parent(), target.parent()].into_iter().flatten() {
            tokio::fs::create_dir_all(dir).await.map_err(io_err("creating", dir))?;
        }
        let file = tokio::fs::File::create(&tmp).await.map_err(io_err("creating", &tmp))?;
        Ok(BlobWriter {
            cap: None,
            file: Some(file),
            hasher: Sha256::new(),
            written: 0,
            tmp,
            target,
            expected_digest: digest.to_string(),
            expected_size,
            what: what.to_string(),
        })
    }
}

/// The error a writer returns once more than `bytes` were written to it.
type TooLarge = Box<dyn Fn() -> OciError + Send + Sync>;

/// Hashes and counts while writing to a temp file; [`BlobWriter::finish`] publishes the
/// blob only if digest and size match. Dropped unfinished, it removes its temp file.
pub(crate) struct BlobWriter {
    cap: Option<(u64, TooLarge)>,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    written: u64,
    tmp: PathBuf,
    target: PathBuf,
    expected_digest: String,
    expected_size: Option<u64>,
    what: String,
}

impl BlobWriter {
    /// Fails the write that takes the blob past `bytes` with `too_large()`, whatever size
    /// the descriptor or the registry declared.
    pub(crate) fn capped(
        mut self,
        bytes: u64,
        too_large: impl Fn() -> OciError + Send + Sync + 'static,
    ) -> Self {
        self.cap = Some((bytes, Box::new(too_large)));
        self
    }

    /// Fails with the cap's error if a blob of `declared` bytes would not fit under it.
    pub(crate) fn admits(&self, declared: u64) -> Result<(), OciError> {
        match self.cap.as_ref() {
            Some((cap, too_large)) if declared > *cap => Err(too_large()),
            _ => Ok(()),
        }
    }

    /// Bytes written so far.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    pub(crate) async fn write(&mut self, chunk: &[u8]) -> Result<(), OciError> {
        self.written += chunk.len() as u64;
        if let Some(expected) = self.expected_size.filter(|e| self.written > *e) {
            return Err(self.size_mismatch(expected));
        }
        if let Some((cap, too_large)) = self.cap.as_ref().filter(|(cap, _)| self.written > *cap) {
            tracing::debug!(digest = %self.expected_digest, cap, "blob is larger than its cap");
            return Err(too_large());
        }
        self.hasher.update(chunk);
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        file.write_all(chunk).await.map_err(io_err("writing", &self.tmp))
    }

    fn size_mismatch(&self, expected: u64) -> OciError {
        OciError::SizeMismatch { digest: self.expected_digest.clone(), expected, actual: self.written }
    }

    /// Verifies size and digest, then renames the temp file to its content address.
    pub(crate) async fn finish(mut self) -> Result<PathBuf, OciError> {
        if let Some(expected) = self.expected_size.filter(|e| self.written != *e) {
            return Err(self.size_mismatch(expected));
        }
        let actual = format!("sha256:{}", hex::encode(std::mem::take(&mut self.hasher).finalize()));
        if actual != self.expected_digest {
            return Err(OciError::DigestMismatch {
                what: self.what.clone(),
                expected: self.expected_digest.clone(),
                actual,
            });
        }
        if let Some(mut file) = self.file.take() {
            file.flush().await.map_err(io_err("writing", &self.tmp))?;
            file.sync_all().await.map_err(io_err("syncing", &self.tmp))?;
        }
        tokio::fs::rename(&self.tmp, &self.target).await.map_err(io_err("renaming into", &self.target))?;
        Ok(self.target.clone())
    }
}

/// Removes a temp file when dropped (a no-op once it was renamed into place).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful rename the temp file no longer exists; this is then a no-op.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verified_blob_is_published_under_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path().to_path_buf());
        let (digest, path) = blobs.put(b"hello").await.unwrap();
        assert_eq!(digest, sha256_digest(b"hello"));
        assert_eq!(path, dir.path().join("blobs/sha256").join(sha256_hex(&digest).unwrap()));
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        assert!(blobs.has(&digest).await);
    }

    #[tokio::test]
    async fn digest_mismatch_is_detected_and_nothing_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path().to_path_buf());
        let claimed = sha256_digest(b"what the manifest promised");
        let mut w = blobs.writer(&claimed, None, "layer").await.unwrap();
        w.write(b"what the registry sent").await.unwrap();
        let err = w.finish().await.unwrap_err();
        assert!(
            matches!(&err, OciError::DigestMismatch { expected, actual, .. }
                if *expected == claimed && *actual == sha256_digest(b"what the registry sent")),
            "{err}"
        );
        assert!(!blobs.has(&claimed).await);
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "temp file left behind");
    }

    #[tokio::test]
    async fn oversized_and_short_blobs_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path().to_path_buf());
        let digest = sha256_digest(b"abc");
        let mut w = blobs.writer(&digest, Some(2), "layer").await.unwrap();
        assert!(matches!(w.write(b"abc").await, Err(OciError::SizeMismatch { expected: 2, actual: 3, .. })));
        let mut w = blobs.writer(&digest, Some(4), "layer").await.unwrap();
        w.write(b"abc").await.unwrap();
        assert!(matches!(w.finish().await, Err(OciError::SizeMismatch { expected: 4, actual: 3, .. })));
        assert!(blobs.path("sha256:short").is_none());
        assert!(blobs.path("sha512:00").is_none());
    }

    #[tokio::test]
    async fn a_capped_writer_stops_at_its_cap_whatever_the_descriptor_says() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path().to_path_buf());
        let digest = sha256_digest(b"abcdef");
        let too_large = || OciError::Registry { reference: "r".into(), detail: "capped".into() };
        // The descriptor claims 6 bytes, within a cap of 4: the cap still holds.
        let mut w = blobs.writer(&digest, Some(6), "layer").await.unwrap().capped(4, too_large);
        w.write(b"abcd").await.unwrap();
        assert_eq!(w.written(), 4);
        let err = w.write(b"ef").await.unwrap_err();
        assert!(err.to_string().contains("capped"), "{err}");
        drop(w);
        assert!(!blobs.has(&digest).await);
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "temp file left behind");
    }

    #[test]
    fn ingest_stores_under_the_content_digest_and_honours_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path().to_path_buf());
        let never = || -> OciError { unreachable!("within the cap") };
        let (digest, path) = blobs.ingest(&mut &b"module bytes"[..], 12, never).unwrap();
        assert_eq!(digest, sha256_digest(b"module bytes"));
        assert_eq!(std::fs::read(path).unwrap(), b"module bytes");
        let mut endless = std::io::repeat(0);
        let too_large = || OciError::Registry { reference: "r".into(), detail: "capped".into() };
        let err = blobs.ingest(&mut endless, 1 << 20, too_large).unwrap_err();
        assert!(err.to_string().contains("capped"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "temp file left behind");
    }
}
