//! Test guests: the C programs in examples/guests, compiled with Debian's clang and
//! wasi-libc during test setup, and published to the test registry with `krustlet-wasi push`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use super::{AGENT, REPO};

/// Compiles `examples/guests/<name>.c` once per test process; returns the .wasm path.
/// A component guest (first line `// component: ...`) is built with
/// examples/build-components.sh, which installs its tools on first use.
pub fn build(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let out_dir = Path::new(REPO).join("target/guests");
    std::fs::create_dir_all(&out_dir).unwrap();
    let src = Path::new(REPO).join(format!("examples/guests/{name}.c"));
    let out = out_dir.join(format!("{name}.wasm"));
    let source = std::fs::read_to_string(&src).unwrap_or_else(|err| panic!("{}: {err}", src.display()));
    if source.starts_with("// component: ") {
        let script = Path::new(REPO).join("examples/build-components.sh");
        let run = Command::new("bash").arg(script).arg(&out_dir).output().expect("bash runs");
        assert!(run.status.success(), "build-components.sh: {}", String::from_utf8_lossy(&run.stderr));
        built.insert(name.to_string(), out.clone());
        return out;
    }
    let status = Command::new("clang")
        .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-Wl,--strip-all", "-o"])
        .arg(&out)
        .arg(&src)
        .output()
        .expect("clang runs (bootstrap/cluster.sh install installs it)");
    assert!(
        status.status.success(),
        "compiling {}: {}",
        src.display(),
        String::from_utf8_lossy(&status.stderr)
    );
    built.insert(name.to_string(), out.clone());
    out
}

/// Builds the guest and pushes it as `<registry>/krustlet-test/<name>:<tag>` in the given
/// format (`cncf` or `wasm-to-oci`); returns the reference.
pub fn publish(registry: &str, name: &str, tag: &str, format: &str) -> String {
    let wasm = build(name);
    let reference = format!("{registry}/krustlet-test/{name}:{tag}");
    let out = Command::new(AGENT)
        .args(["push", "--format", format, "--insecure-registries", registry])
        .arg(&wasm)
        .arg(&reference)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "krustlet-wasi push {reference}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    reference
}
