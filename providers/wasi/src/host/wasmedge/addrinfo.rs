//! `sock_getaddrinfo`: a name and service resolved into result records the guest
//! provides (chained through `ai_next`, each pointing at its `sockaddr` and its buffers).
//! Every write is bounded by the length the guest declared for that buffer — WasmEdge
//! does not bound the canonical name and `sa_data` writes; here a record whose buffer is
//! too small is `EAI_MEMORY`.
//!
//! Numeric hosts need no resolver. Names are resolved only when the run's policy allows
//! name lookups (else `EACCES`), on the pod's [`Lookups`] budget (none: `EAI_FAIL`). The
//! address actually dialled is judged at connect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::abi::{Errno, Family, Wasi};
use super::memory::Mem;
use super::table::Sockets;
use crate::net::{LookupError, Lookups};

/// `ai_flags` bits (WasmEdge's bit set).
const AI_PASSIVE: u16 = 1;
const AI_CANONNAME: u16 = 2;
const AI_NUMERICHOST: u16 = 4;
const AI_NUMERICSERV: u16 = 8;
const AI_ALL_FLAGS: u16 = 0x7f;

/// `addrinfo` is 28 bytes: flags u16 @0, family u8 @2, socktype u8 @3, protocol u8 @4,
/// addrlen u32 @8, addr u32 @12, canonname u32 @16, canonname_len u32 @20, next u32 @24.
const ADDRINFO: u32 = 28;
/// `sockaddr` is 12 bytes: family u8 @0, data_len u32 @4, data u32 @8.
const SOCKADDR: u32 = 12;

/// The arguments of `sock_getaddrinfo`, as pointers into guest memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Query {
    pub(crate) node: i32,
    pub(crate) node_len: i32,
    pub(crate) service: i32,
    pub(crate) service_len: i32,
    pub(crate) hints: i32,
    pub(crate) res: i32,
    pub(crate) max_res_len: i32,
    pub(crate) res_len: i32,
}

/// One result: an address for one socket type.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Found {
    ip: IpAddr,
    socktype: u8,
}

pub(crate) async fn getaddrinfo(mem: &mut Mem<'_>, sockets: &Sockets, q: Query) -> Wasi {
    let node = text(mem, q.node, q.node_len)?;
    let service = text(mem, q.service, q.service_len)?;
    mem.check(q.res_len, 4)?;
    let first = mem.u32(q.res)? as i32;
    if node.is_empty() && service.is_empty() {
        return Err(Errno::AI_NONAME);
    }
    if q.max_res_len < 1 {
        return Err(Errno::AI_MEMORY);
    }
    let hints = mem.bytes(q.hints, ADDRINFO)?;
    let flags = u16::from_le_bytes([hints[0], hints[1]]);
    let (family, socktype, protocol) = (hints[2], hints[3], hints[4]);
    if flags & !AI_ALL_FLAGS != 0 || (flags & AI_CANONNAME != 0 && node.is_empty()) {
        return Err(Errno::AI_BADFLAG);
    }
    let family = match family {
        0 => None,
        af => Some(Family::from_wasi(i32::from(af)).map_err(|_| Errno::AI_FAMILY)?),
    };
    if socktype > 2 || protocol > 2 {
        return Err(Errno::AI_SOCKTYPE);
    }
    let port = service_port(&service, flags)?;
    let lookups = sockets.name_lookup.then_some(sockets.lookups.as_ref());
    let ips = addresses(&node, flags, family, lookups).await?;
    // With no socket type asked for, each address comes as a stream and a datagram.
    let types: &[u8] = match (socktype, protocol) {
        (0, 0) => &[2, 1],
        (0, 1) | (2, _) => &[2],
        _ => &[1],
    };
    let found: Vec<Found> =
        ips.iter().flat_map(|&ip| types.iter().map(move |&socktype| Found { ip, socktype })).collect();
    let mut record = first;
    let mut written = 0u32;
    for (i, result) in found.iter().take(q.max_res_len as u32 as usize).enumerate() {
        let canonical = (i == 0 && flags & AI_CANONNAME != 0).then_some(node.as_str());
        write_record(mem, record, result, port, flags, canonical)?;
        written += 1;
        record = mem.u32(record + 24)? as i32;
    }
    mem.put_u32(q.res_len, written)
}

/// A guest string without the NULs the crate appends.
fn text(mem: &Mem<'_>, ptr: i32, len: i32) -> Wasi<String> {
    let bytes = mem.bytes(ptr, len as u32)?;
    let bytes = bytes.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8(bytes.to_vec()).map_err(|_| Errno::AI_NONAME)
}

/// A numeric service, or one of the few names every `/etc/services` has.
fn service_port(service: &str, flags: u16) -> Wasi<u16> {
    if service.is_empty() {
        return Ok(0);
    }
    if let Ok(port) = service.parse() {
        return Ok(port);
    }
    if flags & AI_NUMERICSERV != 0 {
        return Err(Errno::AI_NONAME);
    }
    match service {
        "http" => Ok(80),
        "https" => Ok(443),
        "domain" => Ok(53),
        "ssh" => Ok(22),
        _ => Err(Errno::AI_SERVICE),
    }
}

/// The addresses `node` stands for, of `family` if one is asked for. `lookups`: `None`
/// when the policy switched lookups off, `Some(None)` when the run has no budget.
async fn addresses(
    node: &str,
    flags: u16,
    family: Option<Family>,
    lookups: Option<Option<&Lookups>>,
) -> Wasi<Vec<IpAddr>> {
    let ips: Vec<IpAddr> = if node.is_empty() {
        if flags & AI_PASSIVE != 0 {
            vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()]
        } else {
            vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()]
        }
    } else if let Ok(ip) = node.parse::<IpAddr>() {
        vec![ip]
    } else if flags & AI_NUMERICHOST != 0 {
        return Err(Errno::AI_NONAME);
    } else {
        match lookups {
            None => return Err(Errno::ACCES),
            Some(None) => return Err(Errno::AI_FAIL),
            Some(Some(lookups)) => lookups.resolve(node).await.map_err(lookup_errno)?,
        }
    };
    let mut wanted: Vec<IpAddr> = Vec::new();
    for ip in ips {
        if family.is_none_or(|f| Family::of(ip) == f) && !wanted.contains(&ip) {
            wanted.push(ip);
        }
    }
    if wanted.is_empty() {
        return Err(Errno::AI_NONAME);
    }
    Ok(wanted)
}

/// What the guest is told when a lookup fails.
fn lookup_errno(err: LookupError) -> Errno {
    match err {
        LookupError::InvalidName | LookupError::NameUnresolvable => Errno::AI_NONAME,
        LookupError::NotAllowed | LookupError::PermanentFailure => Errno::AI_FAIL,
        LookupError::TemporaryFailure | LookupError::Busy | LookupError::TimedOut => Errno::AI_AGAIN,
    }
}

/// Fills the guest's record at `at` and its `sockaddr`, within their declared sizes.
fn write_record(
    mem: &mut Mem<'_>,
    at: i32,
    found: &Found,
    port: u16,
    flags: u16,
    canonical: Option<&str>,
) -> Wasi {
    mem.check(at, ADDRINFO)?;
    let sockaddr = mem.u32(at + 12)? as i32;
    mem.check(sockaddr, SOCKADDR)?;
    let data_room = mem.u32(sockaddr + 4)?;
    let data_at = mem.u32(sockaddr + 8)? as i32;
    // The host's sockaddr from the port on: port (BE), then the address.
    let mut data = port.to_be_bytes().to_vec();
    match found.ip {
        IpAddr::V4(v4) => {
            data.extend_from_slice(&v4.octets());
            data.extend_from_slice(&[0; 8]);
        }
        IpAddr::V6(v6) => {
            data.extend_from_slice(&[0; 4]); // flow info
            data.extend_from_slice(&v6.octets());
            data.extend_from_slice(&[0; 4]); // scope id
        }
    }
    if (data_room as usize) < data.len() {
        return Err(Errno::AI_MEMORY);
    }
    mem.write(data_at, &data)?;
    let family = Family::of(found.ip).wasi();
    mem.put_u8(sockaddr, family)?;
    mem.put_u32(sockaddr + 4, data.len() as u32)?;
    mem.put_u16(at, flags)?;
    mem.put_u8(at + 2, family)?;
    mem.put_u8(at + 3, found.socktype)?;
    mem.put_u8(at + 4, if found.socktype == 2 { 1 } else { 2 })?;
    mem.put_u32(at + 8, if found.ip.is_ipv4() { 16 } else { 28 })?;
    let name_at = mem.u32(at + 16)? as i32;
    let name_room = mem.u32(at + 20)?;
    match canonical {
        Some(name) if (name.len() as u64) < u64::from(name_room) => {
            mem.write(name_at, name.as_bytes())?;
            mem.put_u8(name_at + name.len() as i32, 0)?;
            mem.put_u32(at + 20, name.len() as u32)
        }
        _ => mem.put_u32(at + 20, 0),
    }
}
