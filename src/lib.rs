//! krustlet-wasi: a Kubernetes node agent that runs WebAssembly pods in Wasmtime.

pub mod agent;
pub mod base;
mod bootstrap;
pub mod certs;
pub mod cli;
pub mod config;
mod events;
mod files;
pub mod logging;
pub mod logs;
mod metrics;
pub mod network;
mod node;
mod objects;
pub mod oci;
mod pods;
mod runtime;
pub mod server;
mod trim;
pub mod volumes;
mod wake;
