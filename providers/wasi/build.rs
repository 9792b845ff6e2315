//! Build script: exports the resolved `wasmtime` version from the workspace `Cargo.lock`
//! as `KRUSTLET_WASMTIME_VERSION`, so `WASMTIME_VERSION` names the engine actually linked.

use std::path::PathBuf;

/// Used when no lock file is found or it names no `wasmtime` package.
const FALLBACK: &str = "48.0";

fn main() {
    let lock =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default()).join("../../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    println!("cargo:rerun-if-changed=build.rs");
    let version = std::fs::read_to_string(&lock)
        .ok()
        .and_then(|text| locked_version(&text, "wasmtime"))
        .unwrap_or_else(|| FALLBACK.to_owned());
    println!("cargo:rustc-env=KRUSTLET_WASMTIME_VERSION={version}");
}

/// Finds `version = "..."` in the `[[package]]` block whose `name` is `package`.
fn locked_version(lock: &str, package: &str) -> Option<String> {
    let wanted = format!("name = \"{package}\"");
    lock.split("[[package]]").find_map(|block| {
        let mut lines = block.lines().map(str::trim);
        lines.clone().any(|line| line == wanted).then_some(())?;
        lines.find_map(|line| {
            line.strip_prefix("version = \"").and_then(|rest| rest.strip_suffix('"')).map(str::to_owned)
        })
    })
}
