//! The subcommands and their flags (`push`, `pods`, `logs`, `exec`); `the `cli` module runs them.

use std::path::PathBuf;

/// The arguments of `krustlet-wasi logs` (all but `--data-dir`), named as kubectl names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct LogsArgs {
    /// The pod's name.
    pub pod: String,
    /// The pod's namespace. Default: any namespace (a name found in several is an error).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The container. Default: the pod's only container.
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Keep printing what the run writes until it ends.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Start with the last N lines (across rotated files). Default: the whole log.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// The run before the current one (`--previous` of kubectl).
    #[arg(short = 'p', long)]
    pub previous: bool,
}

/// The arguments of `krustlet-wasi exec` (all but `--data-dir`), named as kubectl names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ExecArgs {
    /// The pod's name.
    pub pod: String,
    /// The pod's namespace. Default: any namespace (a name found in several is an error).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The container. Default: the pod's first container.
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Pass this process's stdin to the command.
    #[arg(short = 'i', long)]
    pub stdin: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Tools besides running the node.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Publish a .wasm module to an OCI registry, e.g.
    /// `krustlet-wasi push app.wasm 127.0.0.1:5000/apps/app:v1 --insecure-registries 127.0.0.1:5000`.
    Push(PushArgs),
    /// List the pods this node runs, as `kubectl get pods -A` shows them, from the state
    /// under --data-dir (works without a cluster and without the agent running).
    Pods,
    /// Print a container's log from the state under --data-dir, e.g.
    /// `krustlet-wasi logs hello-mynode -f --tail 5`.
    Logs(LogsArgs),
    /// Run a command in a pod of the agent on this machine, as `kubectl exec` does, e.g.
    /// `krustlet-wasi exec app-mynode -- app --check`. Needs the agent's kubelet API
    /// open to local clients (--allow-anonymous-localhost, standalone only); exits with the
    /// command's exit code.
    Exec(ExecArgs),
}

/// Arguments of `krustlet-wasi push`.
#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// The .wasm module (core module or component) to publish.
    pub file: PathBuf,
    /// Where to publish it: REGISTRY/REPOSITORY:TAG.
    pub reference: String,
    /// Artifact format: `cncf` (the CNCF Wasm OCI artifact: config
    /// application/vnd.wasm.config.v0+json, layer application/wasm) or `wasm-to-oci`
    /// (layer application/vnd.wasm.content.layer.v1+wasm, what Krustlet ran). Default: cncf.
    #[arg(long, default_value = "cncf", value_parser = ["cncf", "wasm-to-oci"])]
    pub format: String,
    /// Registries (`host[:port]`, comma-separated) reached over plain HTTP. Default: none.
    #[arg(long, env = "KRUSTLET_INSECURE_REGISTRIES", value_name = "HOST[:PORT],...")]
    pub insecure_registries: Option<String>,
}
