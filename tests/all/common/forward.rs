//! `kubectl port-forward` as a user runs it: started in the background, ready once it prints
//! that it forwards, stopped when dropped.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `kubectl port-forward`, killed when dropped.
pub struct Forward(Child);

impl Forward {
    /// Starts `kubectl port-forward pod/POD LOCAL:REMOTE` in the default namespace and waits
    /// (at most a minute) until it says that it listens.
    pub fn start(kubectl: &Path, kubeconfig: &Path, pod: &str, local: u16, remote: u16) -> Forward {
        let mut child = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["port-forward", "-n", "default", &format!("pod/{pod}"), &format!("{local}:{remote}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl starts");
        let mut out = child.stdout.take().expect("piped stdout");
        let start = Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("Forwarding from") {
            let n = out.read(&mut buf).unwrap_or(0);
            assert!(
                n > 0 && start.elapsed() < Duration::from_secs(60),
                "{} port-forward did not start: {}",
                kubectl.display(),
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Forward(child)
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
