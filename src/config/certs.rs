//! Flags and defaults of certificate rotation: when the node's client and serving
//! certificates are renewed while the agent runs, and how often a renewal that waits for a
//! human is announced again.

use std::time::Duration;

/// The node's client and serving certificates are renewed while the agent runs, starting
/// at a random point of this window of their lifetime (from `notBefore`), as the kubelet
/// renews its own: 70% to 90%. Until the new one is issued the old one stays in use.
/// Failed attempts (API errors, a denied or deleted CSR) are retried with kube-runtime's
/// default back-off: 0.8 s doubling to 30 s, jittered.
pub const CERT_ROTATION_WINDOW: (f64, f64) = (0.7, 0.9);
/// A renewal CSR that waits for a human (the serving certificate's: nobody approves those
/// automatically) is announced again (a log line, and the count of its Event) after this,
/// the wait doubling each time up to [`CERT_APPROVAL_REMINDER_MAX`].
pub const CERT_APPROVAL_REMINDER: Duration = Duration::from_secs(60);
/// The longest wait between two reminders of a CSR waiting for approval.
pub const CERT_APPROVAL_REMINDER_MAX: Duration = Duration::from_secs(60 * 60);

/// Certificate flags (flattened into [`super::Flags`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CertFlags {
    /// Renew the client and serving certificates while running, from a random point of
    /// [`CERT_ROTATION_WINDOW`] of their lifetime, as the kubelet's `--rotate-certificates`.
    /// `false`: the certificates found at start are used until a restart. Default: true.
    #[arg(long, env = "KRUSTLET_ROTATE_CERTIFICATES", value_name = "BOOL")]
    pub rotate_certificates: Option<bool>,
}
