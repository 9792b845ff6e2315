//! The WasmEdge socket ABI's numbers and layouts: WASI errnos, address families, socket
//! types, flags, the two versions of the functions, and plain IP and port conversions
//! (the guest's `address` form in memory is in `address.rs`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A WASI preview1 errno (the guest's std decodes these, never Linux numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Errno(pub(crate) u16);

impl Errno {
    pub(crate) const SUCCESS: Errno = Errno(0);
    pub(crate) const ACCES: Errno = Errno(2);
    pub(crate) const ADDRINUSE: Errno = Errno(3);
    pub(crate) const ADDRNOTAVAIL: Errno = Errno(4);
    pub(crate) const AFNOSUPPORT: Errno = Errno(5);
    pub(crate) const AGAIN: Errno = Errno(6);
    pub(crate) const ALREADY: Errno = Errno(7);
    pub(crate) const BADF: Errno = Errno(8);
    pub(crate) const CONNABORTED: Errno = Errno(13);
    pub(crate) const CONNREFUSED: Errno = Errno(14);
    pub(crate) const CONNRESET: Errno = Errno(15);
    pub(crate) const DESTADDRREQ: Errno = Errno(17);
    pub(crate) const FAULT: Errno = Errno(21);
    pub(crate) const HOSTUNREACH: Errno = Errno(23);
    pub(crate) const INPROGRESS: Errno = Errno(26);
    pub(crate) const INTR: Errno = Errno(27);
    pub(crate) const INVAL: Errno = Errno(28);
    pub(crate) const IO: Errno = Errno(29);
    pub(crate) const ISCONN: Errno = Errno(30);
    pub(crate) const MFILE: Errno = Errno(33);
    pub(crate) const MSGSIZE: Errno = Errno(35);
    pub(crate) const NETDOWN: Errno = Errno(38);
    pub(crate) const NETRESET: Errno = Errno(39);
    pub(crate) const NETUNREACH: Errno = Errno(40);
    pub(crate) const NFILE: Errno = Errno(41);
    pub(crate) const NOBUFS: Errno = Errno(42);
    pub(crate) const NOMEM: Errno = Errno(48);
    pub(crate) const NOPROTOOPT: Errno = Errno(50);
    pub(crate) const NOTCONN: Errno = Errno(53);
    pub(crate) const NOTSOCK: Errno = Errno(57);
    pub(crate) const NOTSUP: Errno = Errno(58);
    pub(crate) const PERM: Errno = Errno(63);
    pub(crate) const PIPE: Errno = Errno(64);
    pub(crate) const PROTOTYPE: Errno = Errno(67);
    pub(crate) const SPIPE: Errno = Errno(70);
    pub(crate) const TIMEDOUT: Errno = Errno(73);
    // WasmEdge's getaddrinfo errnos, beyond preview1.
    pub(crate) const AI_AGAIN: Errno = Errno(78);
    pub(crate) const AI_BADFLAG: Errno = Errno(79);
    pub(crate) const AI_FAIL: Errno = Errno(80);
    pub(crate) const AI_FAMILY: Errno = Errno(81);
    pub(crate) const AI_MEMORY: Errno = Errno(82);
    pub(crate) const AI_NONAME: Errno = Errno(84);
    pub(crate) const AI_SERVICE: Errno = Errno(85);
    pub(crate) const AI_SOCKTYPE: Errno = Errno(86);

    /// What the guest's function returns.
    pub(crate) fn code(self) -> i32 {
        i32::from(self.0)
    }
}

impl From<io::Error> for Errno {
    /// The WASI errno of a host socket call's error (`EIO` for anything unexpected).
    fn from(err: io::Error) -> Errno {
        if err.kind() == io::ErrorKind::WouldBlock {
            return Errno::AGAIN;
        }
        match err.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
            Some(errno) => Errno::from(errno),
            None if err.kind() == io::ErrorKind::TimedOut => Errno::TIMEDOUT,
            None => Errno::IO,
        }
    }
}

impl From<rustix::io::Errno> for Errno {
    fn from(errno: rustix::io::Errno) -> Errno {
        use rustix::io::Errno as E;
        match errno {
            E::ACCESS => Errno::ACCES,
            E::ADDRINUSE => Errno::ADDRINUSE,
            E::ADDRNOTAVAIL => Errno::ADDRNOTAVAIL,
            E::AFNOSUPPORT => Errno::AFNOSUPPORT,
            E::AGAIN => Errno::AGAIN,
            E::ALREADY => Errno::ALREADY,
            E::BADF => Errno::BADF,
            E::CONNABORTED => Errno::CONNABORTED,
            E::CONNREFUSED => Errno::CONNREFUSED,
            E::CONNRESET => Errno::CONNRESET,
            E::DESTADDRREQ => Errno::DESTADDRREQ,
            E::FAULT => Errno::FAULT,
            E::HOSTUNREACH => Errno::HOSTUNREACH,
            E::INPROGRESS => Errno::INPROGRESS,
            E::INTR => Errno::INTR,
            E::INVAL => Errno::INVAL,
            E::ISCONN => Errno::ISCONN,
            E::MFILE => Errno::MFILE,
            E::MSGSIZE => Errno::MSGSIZE,
            E::NETDOWN => Errno::NETDOWN,
            E::NETRESET => Errno::NETRESET,
            E::NETUNREACH => Errno::NETUNREACH,
            E::NFILE => Errno::NFILE,
            E::NOBUFS => Errno::NOBUFS,
            E::NOMEM => Errno::NOMEM,
            E::NOPROTOOPT => Errno::NOPROTOOPT,
            E::NOTCONN => Errno::NOTCONN,
            E::NOTSOCK => Errno::NOTSOCK,
            E::OPNOTSUPP => Errno::NOTSUP,
            E::PERM => Errno::PERM,
            E::PIPE => Errno::PIPE,
            E::PROTOTYPE => Errno::PROTOTYPE,
            E::TIMEDOUT => Errno::TIMEDOUT,
            _ => Errno::IO,
        }
    }
}

/// A result whose error is what the guest's function returns.
pub(crate) type Wasi<T = ()> = Result<T, Errno>;

/// The guest's return value for a result.
pub(crate) fn code(result: Wasi) -> i32 {
    result.err().unwrap_or(Errno::SUCCESS).code()
}

/// `address_family`: 1 INET4, 2 INET6 (0 UNSPEC and 3 AF_UNIX are not opened here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn from_wasi(af: i32) -> Wasi<Family> {
        match af {
            1 => Ok(Family::V4),
            2 => Ok(Family::V6),
            _ => Err(Errno::AFNOSUPPORT),
        }
    }

    pub(crate) fn wasi(self) -> u8 {
        match self {
            Family::V4 => 1,
            Family::V6 => 2,
        }
    }

    pub(crate) fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub(crate) fn unspecified(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }
}

/// `sock_type`: 1 DGRAM, 2 STREAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dgram,
    Stream,
}

impl Kind {
    pub(crate) fn from_wasi(ty: i32) -> Wasi<Kind> {
        match ty {
            1 => Ok(Kind::Dgram),
            2 => Ok(Kind::Stream),
            _ => Err(Errno::PROTOTYPE),
        }
    }

    pub(crate) fn wasi(self) -> u8 {
        match self {
            Kind::Dgram => 1,
            Kind::Stream => 2,
        }
    }

    /// preview1's `filetype` of such a socket: 5 SOCKET_DGRAM, 6 SOCKET_STREAM.
    pub(crate) fn filetype(self) -> u8 {
        match self {
            Kind::Dgram => 5,
            Kind::Stream => 6,
        }
    }
}

/// `riflags` of `sock_recv`: bit 0 PEEK, bit 1 WAITALL.
pub(crate) const RECV_PEEK: i32 = 1;
pub(crate) const RECV_WAITALL: i32 = 2;
/// `roflags`: the datagram was longer than the buffers.
pub(crate) const RECV_DATA_TRUNCATED: u16 = 1;
/// `sdflags` of `sock_shutdown`.
pub(crate) const SHUT_RD: i32 = 1;
pub(crate) const SHUT_WR: i32 = 2;
/// `fdflags`.
pub(crate) const FDFLAGS_NONBLOCK: u16 = 4;
pub(crate) const FDFLAGS_ALL: u16 = 0x1f;

/// Which of WasmEdge's two forms of a function the guest linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// Before WasmEdge 0.12: addresses of 4 or 16 bytes only.
    V1,
    /// Also the 128-byte address storage.
    V2,
}

/// An IP's bytes in network order.
pub(crate) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// The port argument of bind/connect/send_to: the plain number in the low 16 bits.
pub(crate) fn port(arg: i32) -> u16 {
    (arg as u32 & 0xffff) as u16
}

/// The address a guest names, on a socket of `family`: another family → EAFNOSUPPORT.
pub(crate) fn socket_addr(ip: IpAddr, port: u16, family: Family) -> Wasi<SocketAddr> {
    if Family::of(ip) != family {
        return Err(Errno::AFNOSUPPORT);
    }
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_errors_become_wasi_numbers() {
        let wasi = |raw| Errno::from(io::Error::from_raw_os_error(raw)).0;
        assert_eq!(wasi(rustix::io::Errno::AGAIN.raw_os_error()), 6);
        assert_eq!(wasi(rustix::io::Errno::ADDRINUSE.raw_os_error()), 3);
        assert_eq!(wasi(rustix::io::Errno::CONNRESET.raw_os_error()), 15);
        assert_eq!(wasi(rustix::io::Errno::PIPE.raw_os_error()), 64);
        assert_eq!(wasi(rustix::io::Errno::NOTCONN.raw_os_error()), 53);
        assert_eq!(wasi(rustix::io::Errno::LOOP.raw_os_error()), 29);
        assert_eq!(Errno::from(io::Error::from(io::ErrorKind::WouldBlock)), Errno::AGAIN);
    }
}
