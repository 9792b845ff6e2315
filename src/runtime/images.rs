//! The image side of the boundary (CRI's ImageService): what a container needs pulled,
//! and the pulled image in a form the runtime can start.

use futures::future::BoxFuture;

use super::RuntimeError;
use crate::oci::{FileImages, PullPolicy, RegistryAuth};

/// What a container needs pulled: the image, how to pull it, and with which credentials.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    pub image: String,
    pub pull_policy: PullPolicy,
    /// The pod's usable `imagePullSecrets`, merged.
    pub auth: RegistryAuth,
    /// Whether `file://` images may be read from the node's disk: only for static pods,
    /// whose manifests the node's admin wrote (default: refused).
    pub file_images: FileImages,
}

/// A pulled and compiled image, ready to start containers from.
#[derive(Clone)]
pub struct PulledImage<I> {
    /// Digest reference reported as `imageID`.
    pub image_id: String,
    /// Entrypoint of a plain OCI image (empty for Wasm artifacts).
    pub entrypoint: Vec<String>,
    /// Cmd of a plain OCI image (empty for Wasm artifacts).
    pub cmd: Vec<String>,
    /// argv[0] when neither the pod nor the image names a command.
    pub module_path: String,
    /// What runs: a command, or a server the runtime serves requests to.
    pub kind: ImageKind,
    /// The runtime's own form of the image (for Wasmtime: the compiled artifact).
    pub image: I,
}

/// What kind of program an image holds, as far as the node must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A program with `main` and no socket API (a WASI preview1 module that imports no
    /// socket function): it cannot listen.
    Command,
    /// A program with `main` that may use sockets (a `wasi:cli/command` component, or a
    /// preview1 module importing WasmEdge's socket functions, as the guide's server does).
    SocketCommand,
    /// A request handler (a `wasi:http/proxy` component): the runtime listens for it.
    HttpServer,
}

impl ImageKind {
    /// What its program can do with the network.
    pub fn guest(self) -> crate::network::Guest {
        match self {
            ImageKind::Command => crate::network::Guest::NoSockets,
            ImageKind::SocketCommand => crate::network::Guest::Sockets,
            ImageKind::HttpServer => crate::network::Guest::Http,
        }
    }
}

/// Pulls images and prepares them to be started (for Wasmtime: compiles them).
pub trait ImageService: Send + Sync + 'static {
    /// A pulled image in the runtime's own form.
    type Image: Clone + Send + Sync + 'static;

    /// Pulls `request.image` as its pull policy says and makes it startable.
    fn prepare(&self, request: ImageRequest)
    -> BoxFuture<'_, Result<PulledImage<Self::Image>, RuntimeError>>;

    /// Forgets the runtime's own form of an image whose content image garbage collection
    /// removed (`digest` names the removed module); containers running it keep running.
    fn remove(&self, _digest: &str) {}
}
