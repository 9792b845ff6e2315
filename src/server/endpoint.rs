//! `<data-dir>/kubelet-api.json`: where this agent serves the kubelet API, so local tools
//! (`krustlet-wasi exec`) can find it without being told: the listen address and port,
//! the serving certificate's file (clients pin it), whether loopback clients need no
//! certificate (`--allow-anonymous-localhost`, standalone only), and the agent's pid.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name under the data dir.
pub const FILE_NAME: &str = "kubelet-api.json";

/// What the agent records about its kubelet API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
    pub cert_file: PathBuf,
    pub anonymous_localhost: bool,
    pub pid: u32,
}

impl Endpoint {
    /// Where a client on this machine connects: the listen address, or loopback when the
    /// agent listens on every address.
    pub fn local_socket(&self) -> SocketAddr {
        let ip = match self.addr {
            IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            a => a,
        };
        SocketAddr::new(ip, self.port)
    }

    /// Writes the record (atomically) into `data_dir`.
    pub fn write(&self, data_dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::files::write_atomic(&data_dir.join(FILE_NAME), &text, 0o644).map_err(std::io::Error::other)
    }

    /// Reads the record from `data_dir`.
    pub fn read(data_dir: &Path) -> std::io::Result<Endpoint> {
        let bytes = std::fs::read(data_dir.join(FILE_NAME))?;
        serde_json::from_slice(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_points_at_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let e = Endpoint {
            addr: "0.0.0.0".parse().unwrap(),
            port: 10250,
            cert_file: "/x/krustlet.crt".into(),
            anonymous_localhost: true,
            pid: 7,
        };
        e.write(dir.path()).unwrap();
        assert_eq!(Endpoint::read(dir.path()).unwrap(), e);
        assert_eq!(e.local_socket(), "127.0.0.1:10250".parse().unwrap());
        let v6 = Endpoint { addr: "::".parse().unwrap(), ..e.clone() };
        assert_eq!(v6.local_socket(), "[::1]:10250".parse().unwrap());
        let fixed = Endpoint { addr: "127.0.0.7".parse().unwrap(), ..e };
        assert_eq!(fixed.local_socket(), "127.0.0.7:10250".parse().unwrap());
    }
}
