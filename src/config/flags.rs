//! The command line: every flag with its `KRUSTLET_*` environment variable and documented
//! default, as clap parses it. Validation and host-dependent defaults are in
//! [`Config::resolve`](super::Config::resolve).

use std::path::PathBuf;

use clap::Parser;

use super::{ApiFlags, CertFlags, LimitFlags, NetworkFlags, ReservedFlags, ServingFlags, commands};

/// Command-line flags. Each has an environment variable `KRUSTLET_*`; defaults that depend
/// on the host are resolved in [`Config::resolve`].
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "krustlet-wasi",
    version,
    about = "A Kubernetes node that runs WebAssembly pods in Wasmtime"
)]
pub struct Flags {
    #[command(subcommand)]
    pub command: Option<commands::Command>,

    /// IP address the node reports as its InternalIP (and puts in its serving certificate).
    /// Default: the first non-loopback address of the host.
    #[arg(long, env = "KRUSTLET_NODE_IP", value_name = "IP")]
    pub node_ip: Option<String>,

    /// Name of the Node object. Default: the hostname, lowercased.
    #[arg(long, env = "KRUSTLET_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,

    /// Hostname reported in the node's Hostname address, its `kubernetes.io/hostname` label
    /// and its serving certificate. Default: the host's hostname, lowercased.
    #[arg(long, env = "KRUSTLET_HOSTNAME", value_name = "HOSTNAME")]
    pub hostname: Option<String>,

    /// Bootstrap kubeconfig (a token user) used when no valid kubeconfig exists yet.
    /// Default: /etc/kubernetes/bootstrap-kubelet.conf.
    #[arg(long, env = "KRUSTLET_BOOTSTRAP_FILE", value_name = "FILE")]
    pub bootstrap_file: Option<PathBuf>,

    /// Kubeconfig the node uses (written by the TLS bootstrap).
    /// Default: $KUBECONFIG if set, else <data-dir>/config/kubeconfig.
    #[arg(long, env = "KRUSTLET_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Serving certificate of the kubelet API (PEM). Default: <data-dir>/config/krustlet.crt.
    #[arg(long, env = "KRUSTLET_CERT_FILE", value_name = "FILE")]
    pub cert_file: Option<PathBuf>,

    /// Private key of the serving certificate (PEM). Default: <data-dir>/config/krustlet.key.
    #[arg(long, env = "KRUSTLET_PRIVATE_KEY_FILE", value_name = "FILE")]
    pub private_key_file: Option<PathBuf>,

    /// Directory for credentials, images, compiled modules, volumes and logs; also where
    /// `pods`, `logs` and `exec` find the node's state. Default: ~/.krustlet.
    #[arg(long, global = true, env = "KRUSTLET_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address the kubelet API listens on. Default: 0.0.0.0.
    #[arg(long, env = "KRUSTLET_ADDR", value_name = "IP")]
    pub addr: Option<String>,

    /// Port of the kubelet API, advertised in the node's daemonEndpoints. Default: 10250.
    #[arg(long, env = "KRUSTLET_PORT", value_name = "PORT")]
    pub port: Option<String>,

    /// Maximum number of pods on this node (the node's `pods` capacity). Default: 110.
    #[arg(long, env = "KRUSTLET_MAX_PODS", value_name = "N")]
    pub max_pods: Option<String>,

    /// Extra node labels, `key=value,key2=value2`. Default: none.
    #[arg(long, env = "KRUSTLET_NODE_LABELS", value_name = "K=V,...")]
    pub node_labels: Option<String>,

    /// Registries (`host[:port]`, comma-separated) reached over plain HTTP. Default: none.
    #[arg(long, env = "KRUSTLET_INSECURE_REGISTRIES", value_name = "HOST[:PORT],...")]
    pub insecure_registries: Option<String>,

    /// Port of the plain-HTTP `/healthz` on 127.0.0.1; 0 disables it. Default: 10248.
    #[arg(long, env = "KRUSTLET_HEALTHZ_PORT", value_name = "PORT")]
    pub healthz_port: Option<String>,

    /// A container log file is rotated when it grows past this size (a quantity such as
    /// `10Mi`). Default: 10Mi.
    #[arg(long, env = "KRUSTLET_CONTAINER_LOG_MAX_SIZE", value_name = "SIZE")]
    pub container_log_max_size: Option<String>,

    /// Log files kept per container run, the current one included (at least 2). Default: 5.
    #[arg(long, env = "KRUSTLET_CONTAINER_LOG_MAX_FILES", value_name = "N")]
    pub container_log_max_files: Option<String>,

    /// Largest image a pull may download (its layers together; manifests and image
    /// configs have a fixed cap of 4Mi, as in containerd) and largest content one layer, or
    /// a `file://` module, may unpack to (a quantity such as `256Mi`, at least 1Mi). A pull
    /// beyond it fails with ErrImagePull naming this flag. Default: 256Mi.
    #[arg(long, env = "KRUSTLET_IMAGE_MAX_SIZE", value_name = "SIZE")]
    pub image_max_size: Option<String>,

    /// How often a running pod's configMap, secret, downwardAPI and projected volumes are
    /// rewritten from the API (a Go-style duration: `90s`, `1m30s`; at least 1s).
    /// Service account tokens are renewed at 80% of their lifetime regardless. Default: 1m.
    #[arg(long, env = "KRUSTLET_SYNC_FREQUENCY", value_name = "DURATION")]
    pub sync_frequency: Option<String>,

    /// Free memory, disk, inodes or PIDs below which the node reports MemoryPressure,
    /// DiskPressure or PIDPressure (and the cluster stops scheduling here), in the
    /// kubelet's syntax: `memory.available<100Mi,nodefs.available<10%`. Signals:
    /// memory.available, nodefs.available, imagefs.available, nodefs.inodesFree,
    /// imagefs.inodesFree, pid.available (disk ones: the --data-dir filesystem). Default:
    /// memory.available<100Mi,nodefs.available<1Gi,nodefs.inodesFree<5%,pid.available<10%.
    #[arg(long, env = "KRUSTLET_EVICTION_HARD", value_name = "THRESHOLDS")]
    pub eviction_hard: Option<String>,

    /// Directory of static pod manifests (Pod YAML/JSON), or one manifest file, run by this
    /// node and watched for changes. With no kubeconfig and no bootstrap file the node runs
    /// standalone with only these. Default: none.
    #[arg(long, env = "KRUSTLET_POD_MANIFEST_PATH", value_name = "DIR|FILE")]
    pub pod_manifest_path: Option<PathBuf>,

    /// Standalone only: let clients on 127.0.0.1/::1 use the kubelet API without a client
    /// certificate (there is no cluster CA or RBAC to ask). Default: off.
    #[arg(long, env = "KRUSTLET_ALLOW_ANONYMOUS_LOCALHOST")]
    pub allow_anonymous_localhost: bool,

    /// Certificate rotation (`--rotate-certificates`, see `certs.rs`).
    #[command(flatten)]
    pub certs: CertFlags,

    /// Format of the agent's own log on stderr: `text` for people, or `json`, one object
    /// per line (timestamp, level, target, namespace, pod, message, fields) for log
    /// pipelines. Default: text.
    #[arg(long, env = "KRUSTLET_LOG_FORMAT", value_name = "text|json")]
    pub log_format: Option<String>,

    /// Connection limits of the kubelet API (`--api-*`, see `api.rs`).
    #[command(flatten)]
    pub api: ApiFlags,

    /// What each pod may use by default (see `limits.rs`).
    #[command(flatten)]
    pub limits: LimitFlags,

    /// How pods serve traffic (see `serving.rs`).
    #[command(flatten)]
    pub serving: ServingFlags,

    /// What pods' sockets may reach (see `network.rs`).
    #[command(flatten)]
    pub network: NetworkFlags,
    /// What the node keeps for itself (`--system-reserved`, `--kube-reserved`, see
    /// `reserved.rs`).
    #[command(flatten)]
    pub reserved: ReservedFlags,
}
