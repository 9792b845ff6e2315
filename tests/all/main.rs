//! The root crate's integration tests, in one binary (one link of wasmtime instead of one
//! per file): a module per area, run one with `cargo test --test all <module>::`. The
//! tests of every module run in parallel with each other; what they share on this machine
//! (the cluster, ports, network namespaces, port 8080) is described in `common`.

#[macro_use]
mod common;

mod attach;
mod certs;
mod examples;
mod exec;
mod guide;
mod hostile;
mod hostile_api;
mod hostile_images;
mod join;
mod logs;
mod oci;
mod pods;
mod pods_images;
mod port_forward;
mod probes;
mod remotecommand;
mod runtimeclass;
mod server;
mod serving;
mod serving_http;
mod static_pods;
mod stats;
mod tenancy;
mod volumes;
