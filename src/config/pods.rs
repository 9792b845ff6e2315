//! The pod worker's timings and limits: retries of what a pod references, its first
//! status report and the retries of failed ones, its mirror, its env's size, emptyDir
//! measurements, how often it may crash the agent, and the size of memory-backed volumes.

use std::time::Duration;

/// How long after a mirror pod is deleted (`kubectl delete`) the node makes a new one.
/// Made at once, the new mirror (same name) can appear before `kubectl delete` starts
/// watching for the old one to go, and kubectl then waits on the new one forever.
pub const MIRROR_RECREATE_DELAY: Duration = Duration::from_secs(1);
/// A pod preparation that failed on something that may clear at once (a ConfigMap not
/// yet readable, a token the Node authorizer does not grant yet because it has not seen
/// the pod's binding) is retried after this, doubling up to [`CONFIG_RETRY_MAX`], as the
/// kubelet's volume manager retries mounts. The same back-off applies to
/// `CreateContainerConfigError` at container start.
pub const CONFIG_RETRY_INITIAL: Duration = Duration::from_millis(20);
/// The Node authorizer grants a node a pod's token, ConfigMaps and Secrets only once its
/// own watch has seen the pod bound there, which can be milliseconds after the node's
/// watch did: such a request is refused with "no relationship found". Measured on a
/// 2-core control plane, 5 to 7 of 50 pods started one at a time were refused so, and
/// granted 20 ms later. The request is asked again every this long, for at most
/// [`AUTHORIZER_LAG_WAIT`], before the refusal counts as a failed preparation (retried
/// after [`CONFIG_RETRY_INITIAL`]): a pod pays about one round trip for the lag, not 20 ms.
pub const AUTHORIZER_LAG_POLL: Duration = Duration::from_millis(2);
/// How long a refusal for want of the pod's binding is asked again (see
/// [`AUTHORIZER_LAG_POLL`]): at most about 10 more requests per preparation, so a refusal
/// that lasts costs the API server little more than the retries it gets anyway.
pub const AUTHORIZER_LAG_WAIT: Duration = Duration::from_millis(40);
/// The longest wait between such retries: a ConfigMap created later is found within it.
pub const CONFIG_RETRY_MAX: Duration = Duration::from_secs(10);
/// Such a failure shows in the pod's status and as an Event only once it has lasted this
/// long; until then each retry is a debug log line (a race that clears in milliseconds
/// costs no status write).
pub const CONFIG_RETRY_VISIBLE_AFTER: Duration = Duration::from_secs(1);
/// A pod's first status report waits this long while its first preparation (volumes,
/// images) runs, so a pod that starts by then is reported once, Running, rather than
/// Pending and then Running; one that takes longer (a pull) shows ContainerCreating then.
pub const FIRST_REPORT_DELAY: Duration = Duration::from_millis(500);
/// The longest an env var's value or an argument may be after `$(VAR)` expansion: Linux's
/// `MAX_ARG_STRLEN`, past which a native container's exec fails too. Past it the container
/// waits in `CreateContainerConfigError` naming the variable, and nothing that long is
/// ever built (a `$(VAR)` bomb doubles at each step).
pub const MAX_ENV_VALUE: usize = 128 * 1024;
/// The most a container's environment (names and values), and separately its argv, may
/// hold in all: Linux's default `ARG_MAX` for a process's arguments and environment.
pub const MAX_ENV_TOTAL: usize = 2 * 1024 * 1024;
/// How often the emptyDir volumes that have a `sizeLimit` are measured against it (the
/// kubelet's eviction manager looks every 10 s too). Past its limit the pod is evicted.
pub const DISK_CHECK_PERIOD: Duration = Duration::from_secs(10);
/// How many times the agent may die during one step of a pod (preparing it, starting a
/// container) before the next agent fails the pod (reason `NodeAgentCrashed`) instead of
/// redoing the step: a pod that crashes the agent must not take it down for ever.
pub const CRASH_LIMIT: u32 = 3;
/// A failed status report (the API server unreachable) is retried after this.
pub const PUBLISH_RETRY: Duration = Duration::from_secs(1);
/// The size of the tmpfs of a secret, projected or downwardAPI volume, when the agent
/// may mount (the kubelet would size it to the pod's memory limit or the node's
/// allocatable; this is smaller): these volumes hold only what the agent writes, API
/// objects of at most 1 MiB each. An emptyDir with `medium: Memory` is sized as the
/// kubelet sizes it instead (its `sizeLimit`, the pod's memory limit, or the node's
/// allocatable memory, whichever is least).
pub const MEMORY_VOLUME_SIZE: u64 = 64 * 1024 * 1024;
