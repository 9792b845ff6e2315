//! krustlet-wasi: a Kubernetes node agent that runs WebAssembly pods in Wasmtime.

pub mod agent;
pub mod base;
pub mod bootstrap;
pub mod certs;
pub mod cli;
pub mod config;
pub mod events;
pub mod files;
pub mod logging;
pub mod logs;
pub mod metrics;
pub mod network;
pub mod node;
pub mod objects;
pub mod oci;
pub mod pods;
pub mod server;
pub mod trim;
pub mod volumes;
pub mod wake;
