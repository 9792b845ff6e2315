//! Defaults of container probes: the Kubernetes API's own (the API server fills them in
//! for pods it stores; static pods get them here), and what the node adds to bound a
//! probe's cost in the shared process.

use std::time::Duration;

/// `periodSeconds` when unset: 10 s.
pub const PROBE_PERIOD: Duration = Duration::from_secs(10);
/// `timeoutSeconds` when unset: 1 s.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// `successThreshold` when unset: 1 (and always 1 for liveness and startup probes).
pub const PROBE_SUCCESS_THRESHOLD: u32 = 1;
/// `failureThreshold` when unset: 3.
pub const PROBE_FAILURE_THRESHOLD: u32 = 3;
/// The shortest period a probe runs at, whatever the pod says: 1 s, the API's minimum
/// (a static pod could ask for 0).
pub const PROBE_MIN_PERIOD: Duration = Duration::from_secs(1);
/// How much of an exec probe's output, or an HTTP probe's body, is kept for the
/// `Unhealthy` Event: 10 KiB, the kubelet's limit.
pub const PROBE_OUTPUT_LIMIT: usize = 10 * 1024;
