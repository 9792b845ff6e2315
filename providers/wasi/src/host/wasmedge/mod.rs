//! The WasmEdge socket ABI (`sock_*` in `wasi_snapshot_preview1`, both versions) on
//! wasmtime, for preview1 modules such as the guide's tokio + warp server.
//!
//! [`link`] gives a module that imports socket functions its own linker: the runtime's
//! preview1 linker, plus each `sock_*` import defined with the form its declared type
//! asks for (v1 or v2, as WasmEdge chooses per import), plus the preview1 functions a
//! socket descriptor can reach (`fd.rs`, `poll.rs`) shadowed to answer socket numbers and
//! hand every other descriptor to wasmtime-wasi. A module without socket imports links
//! exactly as before. A run's sockets live in [`Sockets`] in its store; every bind,
//! listen, connection, datagram and accepted peer is put to the run's `SocketRules`.

mod abi;
mod address;
mod addrinfo;
mod fd;
mod memory;
mod poll;
mod sock;
mod socket;
mod sockopt;
mod table;
#[cfg(test)]
mod tests;

use wasmtime::{AsContextMut, Caller, Extern, ExternType, Linker, Module};

use crate::host::Host;
use abi::{Version, code};
use addrinfo::Query;
use memory::Mem;
use sock::AddrOut;
pub(crate) use table::Sockets;

/// The import module of every function here.
const MODULE: &str = "wasi_snapshot_preview1";

/// Whether `import` is one of the socket functions (any name or shape).
fn is_socket_import(import: &wasmtime::ImportType<'_>) -> bool {
    import.module() == MODULE && import.name().starts_with("sock_")
}

/// Whether `module` imports socket functions (then it links with [`link`]'s linker).
pub(crate) fn imports_sockets(module: &Module) -> bool {
    module.imports().any(|import| is_socket_import(&import))
}

/// A linker for `module` when it imports socket functions; `None` when the runtime's
/// linker serves it as it is.
pub(crate) fn link(base: &Linker<Host>, module: &Module) -> wasmtime::Result<Option<Linker<Host>>> {
    let imports: Vec<(String, usize)> = module
        .imports()
        .filter(is_socket_import)
        .filter_map(|import| match import.ty() {
            ExternType::Func(ty) => Some((import.name().to_owned(), ty.params().len())),
            _ => None,
        })
        .collect();
    if imports.is_empty() {
        return Ok(None);
    }
    let mut linker = base.clone();
    linker.allow_shadowing(true);
    shadow_descriptors(&mut linker)?;
    for (name, params) in &imports {
        // An import of another shape stays undefined: the link error names it.
        define_socket_function(&mut linker, name, *params)?;
    }
    Ok(Some(linker))
}

/// The guest's memory and the store's host state, and the store's host-call fuel. The
/// memory export is looked up once per store (a module's store holds one instance).
fn parts<'a>(caller: &'a mut Caller<'_, Host>) -> wasmtime::Result<(Mem<'a>, &'a mut Host, usize)> {
    let fuel = caller.as_context_mut().hostcall_fuel();
    let memory = match caller.data().sockets.memory {
        Some(memory) => memory,
        None => match caller.get_export("memory") {
            Some(Extern::Memory(memory)) => {
                caller.data_mut().sockets.memory = Some(memory);
                memory
            }
            Some(Extern::SharedMemory(_)) => {
                let message = "WasmEdge sockets are not supported for modules with a shared memory";
                return Err(wasmtime::Error::msg(message));
            }
            _ => return Err(wasmtime::Error::msg("the module exports no `memory`, which WASI needs")),
        },
    };
    let (data, host) = memory.data_and_store_mut(caller);
    Ok((Mem::new(data), host, fuel))
}

/// Defines `$name` taking i32 arguments (or the types given), its body an async block
/// with `$mem`, `$host` and `$fuel` in scope, returning `wasmtime::Result<i32>`.
macro_rules! define {
    ($linker:expr, $name:expr, |$mem:ident, $host:ident, $fuel:ident; $($arg:ident: $ty:ty),*| $body:expr) => {
        $linker.func_wrap_async(
            MODULE,
            $name,
            move |mut caller: Caller<'_, Host>, ($($arg,)*): ($($ty,)*)| {
                Box::new(async move {
                    #[allow(unused_mut, unused_variables)]
                    let (mut $mem, $host, $fuel) = parts(&mut caller)?;
                    let result: wasmtime::Result<i32> = $body;
                    result
                })
            },
        )?
    };
}

/// The preview1 functions that answer socket numbers themselves.
fn shadow_descriptors(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    define!(linker, "fd_close", |mem, host, fuel; fd: i32| fd::close(&mut mem, host, fuel, fd).await);
    define!(linker, "fd_read", |mem, host, fuel; fd: i32, iovs: i32, n: i32, nread: i32| {
        fd::read(&mut mem, host, fuel, fd, iovs, n, nread).await
    });
    define!(linker, "fd_write", |mem, host, fuel; fd: i32, iovs: i32, n: i32, nwritten: i32| {
        fd::write(&mut mem, host, fuel, fd, iovs, n, nwritten).await
    });
    define!(linker, "fd_pread", |mem, host, fuel; fd: i32, iovs: i32, n: i32, offset: i64, nread: i32| {
        fd::pread(&mut mem, host, fuel, fd, iovs, n, offset, nread).await
    });
    define!(linker, "fd_pwrite", |mem, host, fuel; fd: i32, iovs: i32, n: i32, offset: i64, nwritten: i32| {
        fd::pwrite(&mut mem, host, fuel, fd, iovs, n, offset, nwritten).await
    });
    define!(linker, "fd_seek", |mem, host, fuel; fd: i32, offset: i64, whence: i32, newoffset: i32| {
        fd::seek(&mut mem, host, fuel, fd, offset, whence, newoffset).await
    });
    define!(linker, "fd_tell", |mem, host, fuel; fd: i32, offset: i32| fd::tell(&mut mem, host, fuel, fd, offset).await);
    define!(linker, "fd_fdstat_get", |mem, host, fuel; fd: i32, stat: i32| {
        fd::fdstat_get(&mut mem, host, fuel, fd, stat).await
    });
    define!(linker, "fd_fdstat_set_flags", |mem, host, fuel; fd: i32, flags: i32| {
        fd::fdstat_set_flags(&mut mem, host, fuel, fd, flags).await
    });
    define!(linker, "fd_filestat_get", |mem, host, fuel; fd: i32, stat: i32| {
        fd::filestat_get(&mut mem, host, fuel, fd, stat).await
    });
    define!(linker, "fd_renumber", |mem, host, fuel; from: i32, to: i32| {
        fd::renumber(&mut mem, host, fuel, from, to).await
    });
    define!(linker, "poll_oneoff", |mem, host, fuel; input: i32, out: i32, n: i32, nevents: i32| {
        Ok(code(poll::poll_oneoff(&mut mem, host, input, out, n, nevents, fuel).await?))
    });
    Ok(())
}

/// Defines the socket function `name` in the form a `params`-argument import needs.
/// Returns whether there is such a form.
fn define_socket_function(linker: &mut Linker<Host>, name: &str, params: usize) -> wasmtime::Result<bool> {
    let (base, version) = match name.strip_suffix("_v2") {
        Some(base) => (base, Version::V2),
        None => (name, Version::V1),
    };
    // Where the two forms differ in arity, the declared type picks (as WasmEdge does).
    let v2 = |v1_params: usize| version == Version::V2 || params != v1_params;
    match (base, params) {
        ("sock_open", 3) => define!(linker, name, |mem, host, _fuel; af: i32, ty: i32, fd: i32| {
            Ok(code(sock::open(&mut mem, host, af, ty, fd)))
        }),
        ("sock_bind", 3) => define!(linker, name, |mem, host, _fuel; fd: i32, addr: i32, port: i32| {
            Ok(code(sock::bind(&mut mem, &mut host.sockets, fd, addr, port, version)))
        }),
        ("sock_connect", 3) => define!(linker, name, |mem, host, _fuel; fd: i32, addr: i32, port: i32| {
            Ok(code(sock::connect(&mut mem, &mut host.sockets, fd, addr, port, version).await))
        }),
        ("sock_listen", 2) => define!(linker, name, |mem, host, _fuel; fd: i32, backlog: i32| {
            Ok(code(sock::listen(&mut host.sockets, fd, backlog)))
        }),
        ("sock_accept", 2) if !v2(2) => define!(linker, name, |mem, host, _fuel; fd: i32, new_fd: i32| {
            Ok(code(sock::accept(&mut mem, host, fd, None, new_fd).await))
        }),
        ("sock_accept", 3) => define!(linker, name, |mem, host, _fuel; fd: i32, flags: i32, new_fd: i32| {
            Ok(code(sock::accept(&mut mem, host, fd, Some(flags), new_fd).await))
        }),
        ("sock_recv", 6) => {
            define!(linker, name, |mem, host, _fuel; fd: i32, iovs: i32, n: i32, flags: i32, len: i32, oflags: i32| {
                Ok(code(recv(&mut mem, host, fd, Recv { iovs, n, flags, len, oflags, from: None, port: None }).await))
            })
        }
        ("sock_recv_from", 7) if !v2(7) => {
            define!(linker, name, |mem, host, _fuel; fd: i32, iovs: i32, n: i32, addr: i32, flags: i32, len: i32, oflags: i32| {
                Ok(code(recv(&mut mem, host, fd, Recv { iovs, n, flags, len, oflags, from: Some(addr), port: None }).await))
            })
        }
        ("sock_recv_from", 8) => {
            define!(linker, name, |mem, host, _fuel; fd: i32, iovs: i32, n: i32, addr: i32, flags: i32, port: i32, len: i32, oflags: i32| {
                Ok(code(recv(&mut mem, host, fd, Recv { iovs, n, flags, len, oflags, from: Some(addr), port: Some(port) }).await))
            })
        }
        ("sock_send", 5) => {
            define!(linker, name, |mem, host, _fuel; fd: i32, iovs: i32, n: i32, flags: i32, len: i32| {
                Ok(code(send(&mut mem, host, fd, iovs, n, flags, None, len).await))
            })
        }
        ("sock_send_to", 7) => {
            define!(linker, name, |mem, host, _fuel; fd: i32, iovs: i32, n: i32, addr: i32, port: i32, flags: i32, len: i32| {
                Ok(code(send(&mut mem, host, fd, iovs, n, flags, Some((addr, port, version)), len).await))
            })
        }
        ("sock_shutdown", 2) => define!(linker, name, |mem, host, _fuel; fd: i32, how: i32| {
            Ok(code(sock::shutdown(&host.sockets, fd, how)))
        }),
        ("sock_getlocaladdr" | "sock_getpeeraddr", 4) if !v2(4) => {
            let peer = base == "sock_getpeeraddr";
            define!(linker, name, |mem, host, _fuel; fd: i32, addr: i32, ty: i32, port: i32| {
                let out = AddrOut { addr, addr_type: Some(ty), port };
                Ok(code(sock::address(&mut mem, &host.sockets, fd, peer, out)))
            })
        }
        ("sock_getlocaladdr" | "sock_getpeeraddr", 3) => {
            let peer = base == "sock_getpeeraddr";
            define!(linker, name, |mem, host, _fuel; fd: i32, addr: i32, port: i32| {
                let out = AddrOut { addr, addr_type: None, port };
                Ok(code(sock::address(&mut mem, &host.sockets, fd, peer, out)))
            })
        }
        ("sock_getsockopt", 5) if version == Version::V1 => {
            define!(linker, name, |mem, host, _fuel; fd: i32, level: i32, opt: i32, flag: i32, size: i32| {
                Ok(code(sockopt::get(&mut mem, &host.sockets, fd, level, opt, flag, size)))
            })
        }
        ("sock_setsockopt", 5) if version == Version::V1 => {
            define!(linker, name, |mem, host, _fuel; fd: i32, level: i32, opt: i32, flag: i32, size: i32| {
                Ok(code(sockopt::set(&mem, &mut host.sockets, fd, level, opt, flag, size)))
            })
        }
        ("sock_getaddrinfo", 8) if version == Version::V1 => {
            define!(linker, name, |mem, host, _fuel; node: i32, node_len: i32, service: i32, service_len: i32, hints: i32, res: i32, max_res_len: i32, res_len: i32| {
                let query = Query { node, node_len, service, service_len, hints, res, max_res_len, res_len };
                Ok(code(addrinfo::getaddrinfo(&mut mem, &host.sockets, query).await))
            })
        }
        _ => return Ok(false),
    };
    Ok(true)
}

/// Where `sock_recv` / `sock_recv_from` write.
struct Recv {
    iovs: i32,
    n: i32,
    flags: i32,
    len: i32,
    oflags: i32,
    /// `sock_recv_from`: the address buffer for the sender.
    from: Option<i32>,
    /// `sock_recv_from` v2: the sender's port (`u16`, the plain number).
    port: Option<i32>,
}

async fn recv(mem: &mut Mem<'_>, host: &mut Host, fd: i32, out: Recv) -> abi::Wasi {
    let bufs = mem.iovecs(out.iovs, out.n)?;
    mem.check(out.len, 4)?;
    mem.check(out.oflags, 2)?;
    let from = out.from.map(|ptr| address::Address::read(mem, ptr)).transpose()?;
    if let Some(port) = out.port {
        mem.check(port, 2)?;
    }
    let got = sock::receive(mem, &host.sockets, fd, &bufs, out.flags).await?;
    if let (Some(addr), Some(sender)) = (from, got.from) {
        // v1 copies the IP when the buffer is large enough; v2 writes the storage form.
        let ip_len = if sender.is_ipv4() { 4 } else { 16 };
        if addr.len == address::STORAGE_LEN || addr.len >= ip_len {
            addr.write_ip(mem, sender.ip())?;
        }
        if let Some(port) = out.port {
            mem.put_u16(port, sender.port())?;
        }
    }
    mem.put_u32(out.len, got.bytes as u32)?;
    mem.put_u16(out.oflags, if got.truncated { abi::RECV_DATA_TRUNCATED } else { 0 })
}

#[allow(clippy::too_many_arguments, reason = "the ABI's arguments, and the call's memory and host")]
async fn send(
    mem: &mut Mem<'_>,
    host: &mut Host,
    fd: i32,
    iovs: i32,
    n: i32,
    flags: i32,
    to: Option<(i32, i32, Version)>,
    len: i32,
) -> abi::Wasi {
    if flags != 0 {
        return Err(abi::Errno::INVAL);
    }
    let bufs = mem.iovecs(iovs, n)?;
    mem.check(len, 4)?;
    let to = match to {
        None => None,
        Some((addr, port, version)) => {
            let ip = address::Address::read(mem, addr)?.ip(mem, version)?;
            let family = host.sockets.socket(fd)?.family;
            Some(abi::socket_addr(ip, abi::port(port), family)?)
        }
    };
    let sent = sock::send(mem, &mut host.sockets, fd, &bufs, to).await?;
    mem.put_u32(len, sent as u32)
}
