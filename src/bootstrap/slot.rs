//! The on-disk journal of one identity's certificate request, and the steps that install an
//! issued certificate, so that an agent stopped at any point goes on from what is on disk
//! and never loses an issued certificate.
//!
//! Each identity has one file, `<config-dir>/<slot>.pending.pem` (0600), always rewritten
//! whole (temp file, fsync, rename, fsync of the directory): absent (nothing pending), key
//! and CSR (requested), or key, CSR and certificate (issued). The certificate is recorded
//! there as soon as the CSR carries it, before anything else changes; then the target files
//! are written one by one, each atomically; the pending file goes last. A restart that
//! finds an issued bundle installs it again: every step may be repeated.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tracing::warn;

use crate::certs::{self, Bundle, CertInfo};
use crate::files::{self, FileError};

/// The journal file of one identity.
#[derive(Debug, Clone)]
pub struct Pending {
    path: PathBuf,
}

impl Pending {
    /// `slot` is `client` or `serving`.
    pub fn new(config_dir: &Path, slot: &str) -> Self {
        Pending { path: config_dir.join(format!("{slot}.pending.pem")) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pending bundle, if any. A file that cannot be read as one (edited by hand, or
    /// damaged) is set aside with a warning: the request starts over with a new key.
    pub fn load(&self) -> Result<Option<Bundle>, FileError> {
        let Some(bytes) = files::read_if_exists(&self.path)? else { return Ok(None) };
        let what = self.path.display().to_string();
        match Bundle::parse(&String::from_utf8_lossy(&bytes), &what) {
            Ok(bundle) => Ok(Some(bundle)),
            Err(e) => {
                warn!(error = %e, "the pending certificate request cannot be read; starting a new one");
                self.clear()?;
                Ok(None)
            }
        }
    }

    pub fn save(&self, bundle: &Bundle) -> Result<(), FileError> {
        files::write_atomic(&self.path, bundle.render().as_bytes(), 0o600)
    }

    pub fn clear(&self) -> Result<(), FileError> {
        files::remove_if_exists(&self.path)
    }
}

/// One atomic change on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Write { path: PathBuf, bytes: Vec<u8>, mode: u32 },
    Remove(PathBuf),
}

/// Runs the steps in order; the first failure stops them (what ran stays done).
pub fn apply(steps: &[Step]) -> Result<(), FileError> {
    for step in steps {
        match step {
            Step::Write { path, bytes, mode } => files::write_atomic(path, bytes, *mode)?,
            Step::Remove(path) => files::remove_if_exists(path)?,
        }
    }
    Ok(())
}

/// Where an issued identity is installed.
#[derive(Debug, Clone)]
pub enum Target {
    /// The node's kubeconfig, with the cluster's server and CA and the pair embedded.
    Kubeconfig { path: PathBuf, server: String, ca_pem: Vec<u8> },
    /// The serving pair (`--cert-file`, `--private-key-file`).
    Pair { cert_file: PathBuf, key_file: PathBuf },
}

impl Target {
    /// The writes that put `cert_pem` and `key_pem` in place. The pair's key goes first: a
    /// reader between the two writes sees the old certificate, which the new key does not
    /// match, and keeps what it had (see `server::tls`).
    fn steps(&self, cert_pem: &[u8], key_pem: &[u8]) -> Vec<Step> {
        match self {
            Target::Kubeconfig { path, server, ca_pem } => {
                let yaml = certs::render_kubeconfig(server, ca_pem, cert_pem, key_pem);
                vec![Step::Write { path: path.clone(), bytes: yaml.into_bytes(), mode: 0o600 }]
            }
            Target::Pair { cert_file, key_file } => vec![
                Step::Write { path: key_file.clone(), bytes: key_pem.to_vec(), mode: 0o600 },
                Step::Write { path: cert_file.clone(), bytes: cert_pem.to_vec(), mode: 0o644 },
            ],
        }
    }
}

/// Every step from "the CSR carries a certificate" to "installed, nothing pending": record
/// the certificate in the journal, write the target, remove the journal.
pub fn install_steps(pending: &Pending, bundle: &Bundle, target: &Target) -> Vec<Step> {
    let cert = bundle.cert_pem.as_deref().unwrap_or_default().as_bytes();
    let mut steps =
        vec![Step::Write { path: pending.path.clone(), bytes: bundle.render().into_bytes(), mode: 0o600 }];
    steps.extend(target.steps(cert, bundle.key_pem.as_bytes()));
    steps.push(Step::Remove(pending.path.clone()));
    steps
}

/// What [`recover`] found.
#[derive(Debug)]
pub enum Recovered {
    /// Nothing pending.
    Nothing,
    /// A request whose certificate has not come yet: go on waiting for it.
    Requested,
    /// An issued certificate a crash had not finished installing, now installed.
    Installed(CertInfo),
}

/// At start: finishes the installation a crash interrupted. An issued certificate that no
/// longer fits (expired, not this key's, refused by `fits`) is dropped with a warning, and
/// the identity is requested again as if nothing were pending.
pub fn recover(
    pending: &Pending,
    target: &Target,
    now: SystemTime,
    fits: impl Fn(&CertInfo) -> bool,
) -> Result<Recovered, FileError> {
    let Some(bundle) = pending.load()? else { return Ok(Recovered::Nothing) };
    let Some(cert_pem) = bundle.cert_pem.as_deref() else { return Ok(Recovered::Requested) };
    let what = pending.path.display().to_string();
    let checked = certs::inspect(cert_pem.as_bytes(), &what).and_then(|info| {
        let ours = certs::key_matches(cert_pem.as_bytes(), bundle.key_pem.as_bytes())?;
        Ok((info, ours))
    });
    match checked {
        Ok((info, true)) if !info.expired(now) && fits(&info) => {
            let steps = install_steps(pending, &bundle, target);
            // The journal already holds this bundle: skip rewriting it.
            apply(&steps[1..])?;
            Ok(Recovered::Installed(info))
        }
        other => {
            let why = match other {
                Err(e) => e.to_string(),
                Ok((_, false)) => "the certificate is not for the pending key".into(),
                Ok((info, _)) if info.expired(now) => "the certificate has expired".into(),
                Ok(_) => "the certificate does not name this node".into(),
            };
            warn!(file = %what, why, "dropping an issued certificate that was never installed");
            pending.clear()?;
            Ok(Recovered::Nothing)
        }
    }
}

#[cfg(test)]
mod tests;
