//! The boundary between pod workers and whatever runs containers, cut as CRI cuts it:
//! an image side ([`ImageService`], `images.rs`: pull an image and prepare it to be
//! started) and a runtime side ([`RuntimeService`], `containers.rs`: the runtime's name and
//! version, starting containers, resource groups, a started container's [`Running`]).
//! Unlike CRI's, the two are one object: a prepared image is in the runtime's own form
//! (for Wasmtime, the compiled artifact), so `RuntimeService` extends `ImageService`, and
//! pod workers ask for both through [`ContainerRuntime`].
//!
//! `wasm.rs` is the implementation, and the only place in the agent that drives the
//! Wasmtime host of `providers/wasi`; worker tests use a fake.

mod containers;
mod images;
pub mod wasm;

pub use crate::metrics::{CountersFn, ServeCounters, UsageFn};
pub use containers::{
    ContainerNetwork, ContainerRun, Exit, Group, GroupLimits, Running, RuntimeService, Stopper,
};
pub use images::{ImageKind, ImageRequest, ImageService, PulledImage};

use crate::base::error::BoxError;

/// What a pod worker needs of a runtime: images prepared and containers started from them.
pub trait ContainerRuntime: ImageService + RuntimeService {}

impl<T: ImageService + RuntimeService> ContainerRuntime for T {}

/// Why an image could not be prepared or a container not started: the reason the kubelet
/// would show, and the cause with its whole chain (print it with
/// [`crate::base::error::chain`]).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct RuntimeError {
    /// `ErrImagePull`, `ErrImageNeverPull`, `InvalidImageName` or `CreateContainerError`.
    pub reason: &'static str,
    #[source]
    pub source: BoxError,
}

impl RuntimeError {
    pub fn new(reason: &'static str, source: impl Into<BoxError>) -> Self {
        RuntimeError { reason, source: source.into() }
    }
}
