//! Host-function tests: a guest (tests/fixtures/wasmedge_abi.wat) that re-exports every
//! socket function and the preview1 functions a socket reaches, linked as the runtime
//! links modules with socket imports, called directly with chosen arguments.

mod errors;
mod fds;
mod options;
mod poll;
mod sockets;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use tokio::io::DuplexStream;
use wasmtime::{Instance, Linker, Memory, Module, Store, Val, ValType};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::AsyncStdinStream;

use super::Sockets;
use crate::host::{Host, MemoryLimiter, SyncReader};
use crate::net::{NetworkPolicy, SocketRules, Transport, Verdict};
use crate::outgoing::Outgoing;
use crate::runtime::Runtime;

/// Where tests put things in the guest's memory (2 pages).
pub(super) const OUT: u32 = 0x100;
pub(super) const OUT2: u32 = 0x104;
pub(super) const OUT3: u32 = 0x108;
pub(super) const ADDR: u32 = 0x200;
pub(super) const IOVS: u32 = 0x300;
pub(super) const BUF: u32 = 0x1000;
pub(super) const SUBS: u32 = 0x4000;
pub(super) const EVENTS: u32 = 0x8000;
/// Past the end of memory.
pub(super) const FAR: u32 = 0x2_0000;

/// WASI errnos the tests expect.
pub(super) const EACCES: i32 = 2;
pub(super) const EADDRINUSE: i32 = 3;
pub(super) const EAFNOSUPPORT: i32 = 5;
pub(super) const EAGAIN: i32 = 6;
pub(super) const EBADF: i32 = 8;
pub(super) const EFAULT: i32 = 21;
pub(super) const EINPROGRESS: i32 = 26;
pub(super) const EINVAL: i32 = 28;
pub(super) const EMFILE: i32 = 33;
pub(super) const ENOTCONN: i32 = 53;
pub(super) const ENOTSOCK: i32 = 57;
pub(super) const ENOTSUP: i32 = 58;
pub(super) const EPERM: i32 = 63;
pub(super) const EPROTOTYPE: i32 = 67;
pub(super) const ESPIPE: i32 = 70;

/// Rules answering every question of a kind the same way.
pub(super) struct Rules {
    pub(super) bind: Verdict,
    pub(super) listen: Verdict,
    pub(super) connect: Verdict,
    pub(super) accept: Verdict,
}

impl Rules {
    pub(super) fn allow() -> Rules {
        Rules {
            bind: Verdict::Allow,
            listen: Verdict::Allow,
            connect: Verdict::Allow,
            accept: Verdict::Allow,
        }
    }

    pub(super) fn policy(self) -> NetworkPolicy {
        NetworkPolicy::with_rules(Arc::new(self))
    }
}

impl SocketRules for Rules {
    fn bind(&self, _: Transport, _: SocketAddr) -> Verdict {
        self.bind
    }
    fn listen(&self, _: SocketAddr) -> Verdict {
        self.listen
    }
    fn connect(&self, _: Transport, _: SocketAddr) -> Verdict {
        self.connect
    }
    fn accept(&self, _: Transport, _: Option<u16>, _: SocketAddr) -> Verdict {
        self.accept
    }
}

/// What a test guest gets besides its network policy.
#[derive(Default)]
pub(super) struct Setup {
    pub(super) max_handles: Option<usize>,
    /// A preopened directory (fd 3).
    pub(super) preopen: Option<std::path::PathBuf>,
}

/// The instantiated test guest.
pub(super) struct Guest {
    store: Store<Host>,
    instance: Instance,
    memory: Memory,
    /// The writing end of the guest's stdin.
    pub(super) stdin: DuplexStream,
}

impl Guest {
    pub(super) async fn new(policy: NetworkPolicy) -> Guest {
        Guest::with(policy, Setup::default()).await
    }

    pub(super) async fn with(policy: NetworkPolicy, setup: Setup) -> Guest {
        let runtime = Runtime::builder().build().expect("runtime");
        let engine = runtime.inner.engine.clone();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wasmedge_abi.wat");
        let module =
            Module::from_binary(&engine, &wat::parse_file(&path).expect("fixture")).expect("compiles");
        let mut base = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut base, |host: &mut Host| &mut host.wasi)
            .expect("preview1");
        let linker =
            super::link(&base, &module).expect("links").expect("socket imports get their own linker");
        let (stdin, guest_stdin) = tokio::io::duplex(1024);
        let mut policy = policy;
        if policy.name_lookup && policy.lookups.is_none() {
            policy = policy.lookups(runtime.lookups(2));
        }
        let mut builder = WasiCtxBuilder::new();
        let net = policy.apply(&mut builder);
        builder.stdin(AsyncStdinStream::new(SyncReader::new(Box::pin(guest_stdin))));
        if let Some(dir) = &setup.preopen {
            builder.preopened_dir(dir, "/data", wasmtime_wasi::FsPerms::ReadWrite).expect("preopen");
        }
        let mut wasi = builder.build_p1();
        if let Some(max) = setup.max_handles {
            wasmtime_wasi::WasiView::ctx(&mut wasi).table.set_max_capacity(max);
        }
        let mut host =
            Host::new(wasi, Outgoing::new(net), MemoryLimiter::new(None), runtime.inner.ticker.activity());
        host.sockets = Sockets::new(&policy, setup.max_handles);
        let mut store = Store::new(&engine, host);
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = linker.instantiate_async(&mut store, &module).await.expect("instantiates");
        let memory = instance.get_memory(&mut store, "memory").expect("memory");
        Guest { store, instance, memory, stdin }
    }

    /// Calls the guest's export `name` (each argument converted to its parameter's type).
    pub(super) async fn call(&mut self, name: &str, args: &[i64]) -> i32 {
        let func =
            self.instance.get_func(&mut self.store, name).unwrap_or_else(|| panic!("no export {name}"));
        let ty = func.ty(&self.store);
        assert_eq!(ty.params().len(), args.len(), "{name} takes {} arguments", ty.params().len());
        let params: Vec<Val> = ty
            .params()
            .zip(args)
            .map(|(ty, &arg)| match ty {
                ValType::I64 => Val::I64(arg),
                _ => Val::I32(arg as i32),
            })
            .collect();
        let mut results = [Val::I32(0)];
        func.call_async(&mut self.store, &params, &mut results)
            .await
            .unwrap_or_else(|err| panic!("{name} trapped: {err:?}"));
        results[0].unwrap_i32()
    }

    pub(super) fn write(&mut self, at: u32, bytes: &[u8]) {
        self.memory.data_mut(&mut self.store)[at as usize..][..bytes.len()].copy_from_slice(bytes);
    }

    pub(super) fn read(&self, at: u32, len: usize) -> Vec<u8> {
        self.memory.data(&self.store)[at as usize..][..len].to_vec()
    }

    pub(super) fn u16(&self, at: u32) -> u16 {
        u16::from_le_bytes(self.read(at, 2).try_into().unwrap())
    }

    pub(super) fn u32(&self, at: u32) -> u32 {
        u32::from_le_bytes(self.read(at, 4).try_into().unwrap())
    }

    pub(super) fn u64(&self, at: u32) -> u64 {
        u64::from_le_bytes(self.read(at, 8).try_into().unwrap())
    }

    pub(super) fn put_u32(&mut self, at: u32, value: u32) {
        self.write(at, &value.to_le_bytes());
    }

    pub(super) fn put_u64(&mut self, at: u32, value: u64) {
        self.write(at, &value.to_le_bytes());
    }

    /// An `address` at `at` whose bytes follow it (at `at + 8`).
    pub(super) fn address(&mut self, at: u32, ip: IpAddr) {
        let bytes = super::abi::ip_bytes(ip);
        self.put_u32(at, at + 8);
        self.put_u32(at + 4, bytes.len() as u32);
        self.write(at + 8, &bytes);
    }

    /// One iovec at `IOVS` for `len` bytes at `BUF`.
    pub(super) fn iovec(&mut self, len: u32) {
        self.put_u32(IOVS, BUF);
        self.put_u32(IOVS + 4, len);
    }

    /// A new socket (1 INET4 / 2 INET6, 1 DGRAM / 2 STREAM).
    pub(super) async fn open(&mut self, af: i64, ty: i64) -> i64 {
        assert_eq!(self.call("sock_open", &[af, ty, OUT.into()]).await, 0, "sock_open");
        i64::from(self.u32(OUT))
    }

    /// A socket of `ty` bound to 127.0.0.1 on an ephemeral port: (fd, port).
    pub(super) async fn bound(&mut self, ty: i64) -> (i64, u16) {
        let fd = self.open(1, ty).await;
        self.address(ADDR, "127.0.0.1".parse().unwrap());
        assert_eq!(self.call("sock_bind", &[fd, ADDR.into(), 0]).await, 0, "sock_bind");
        let port = self.local_port(fd).await;
        (fd, port)
    }

    /// A TCP listener on 127.0.0.1: (fd, port).
    pub(super) async fn listener(&mut self) -> (i64, u16) {
        let (fd, port) = self.bound(2).await;
        assert_eq!(self.call("sock_listen", &[fd, 16]).await, 0, "sock_listen");
        (fd, port)
    }

    /// The socket's local port, by `sock_getlocaladdr` (v1).
    pub(super) async fn local_port(&mut self, fd: i64) -> u16 {
        self.put_u32(ADDR + 32, ADDR + 48);
        self.put_u32(ADDR + 36, 16);
        assert_eq!(
            self.call("sock_getlocaladdr", &[fd, (ADDR + 32).into(), OUT2.into(), OUT3.into()]).await,
            0
        );
        self.u32(OUT3) as u16
    }

    /// Accepts one connection (the listener's blocking mode applies).
    pub(super) async fn accept(&mut self, listener: i64) -> i64 {
        assert_eq!(self.call("sock_accept", &[listener, OUT.into()]).await, 0, "sock_accept");
        i64::from(self.u32(OUT))
    }

    /// Makes `fd` non-blocking.
    pub(super) async fn nonblocking(&mut self, fd: i64) {
        assert_eq!(self.call("fd_fdstat_set_flags", &[fd, 4]).await, 0);
    }

    /// Sends `data` from `BUF`: the errno and bytes sent.
    pub(super) async fn send(&mut self, fd: i64, data: &[u8]) -> (i32, u32) {
        self.write(BUF, data);
        self.iovec(data.len() as u32);
        let errno = self.call("sock_send", &[fd, IOVS.into(), 1, 0, OUT.into()]).await;
        (errno, self.u32(OUT))
    }

    /// Receives up to `len` bytes into `BUF`: the errno and the bytes.
    pub(super) async fn recv(&mut self, fd: i64, len: u32, flags: i64) -> (i32, Vec<u8>) {
        self.iovec(len);
        self.put_u32(OUT, 0);
        let errno = self.call("sock_recv", &[fd, IOVS.into(), 1, flags, OUT.into(), OUT2.into()]).await;
        let n = self.u32(OUT) as usize;
        (errno, self.read(BUF, n))
    }

    /// The run's sockets.
    pub(super) fn sockets(&self) -> &Sockets {
        &self.store.data().sockets
    }
}
