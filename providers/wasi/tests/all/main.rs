//! The runtime's integration tests through its public API, in one binary (one link of
//! wasmtime instead of one per file): a module per area, run one with
//! `cargo test -p krustlet-wasi-provider --test all <module>::`.

mod common;

mod cgroup;
mod component;
mod egress;
mod exit;
mod http;
mod http_lanes;
mod load;
mod preopen;
mod scale;
mod sockets;
mod stdio;
mod wasmedge;
