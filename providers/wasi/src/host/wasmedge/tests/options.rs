//! Socket options, name resolution, and how a module's imports pick the functions.

use std::time::{Duration, Instant};

use wasmtime::{Engine, Linker, Module};

use super::*;

/// Sets option `name` to the bytes `value`.
async fn set(guest: &mut Guest, fd: i64, name: i64, value: &[u8]) -> i32 {
    guest.write(BUF, value);
    guest.call("sock_setsockopt", &[fd, 0, name, BUF.into(), value.len() as i64]).await
}

/// Reads option `name`: the errno and the bytes.
async fn get(guest: &mut Guest, fd: i64, name: i64) -> (i32, Vec<u8>) {
    guest.put_u32(OUT, 16);
    let errno = guest.call("sock_getsockopt", &[fd, 0, name, BUF.into(), OUT.into()]).await;
    (errno, guest.read(BUF, guest.u32(OUT) as usize))
}

fn int(value: i32) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

#[tokio::test]
async fn options_the_guides_stack_sets_and_those_refused() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let fd = guest.open(1, 2).await;
    assert_eq!(set(&mut guest, fd, 0, &int(1)).await, 0, "SO_REUSEADDR");
    assert_eq!(get(&mut guest, fd, 0).await, (0, int(1)));
    assert_eq!(set(&mut guest, fd, 7, &int(1)).await, 0, "SO_KEEPALIVE");
    assert_eq!(get(&mut guest, fd, 1).await, (0, int(2)), "SO_TYPE: STREAM");
    assert_eq!(get(&mut guest, fd, 13).await, (0, int(0)), "SO_ACCEPTCONN");
    assert_eq!(set(&mut guest, fd, 14, b"eth0\0").await, EPERM, "SO_BINDTODEVICE");
    assert_eq!(set(&mut guest, fd, 3, &int(1)).await, EPERM, "SO_DONTROUTE");
    assert_eq!(set(&mut guest, fd, 9, &[int(1), int(30)].concat()).await, EPERM, "a lingering close");
    assert_eq!(set(&mut guest, fd, 9, &[int(1), int(0)].concat()).await, 0, "reset on close");
    assert_eq!(set(&mut guest, fd, 1, &int(1)).await, 50, "SO_TYPE is read-only: ENOPROTOOPT");
    assert_eq!(set(&mut guest, fd, 5, &int(i32::MAX)).await, 0, "SO_SNDBUF, capped");
    let (errno, sndbuf) = get(&mut guest, fd, 5).await;
    assert_eq!(errno, 0);
    // Linux doubles what it is given; at most twice the cap.
    assert!(i32::from_le_bytes(sndbuf.try_into().unwrap()) <= 2 * super::super::sockopt::MAX_BUFFER as i32);
    assert_eq!(guest.call("sock_setsockopt", &[fd, 1, 0, BUF.into(), 4]).await, EINVAL, "level 1");
    assert_eq!(guest.call("sock_setsockopt", &[fd, 0, 15, BUF.into(), 4]).await, EINVAL, "name 15");
    assert_eq!(set(&mut guest, fd, 0, &[1]).await, EINVAL, "too short for an int");
    guest.put_u32(OUT, 2);
    assert_eq!(guest.call("sock_getsockopt", &[fd, 0, 0, BUF.into(), OUT.into()]).await, EINVAL, "no room");
}

#[tokio::test]
async fn a_receive_timeout_ends_a_blocking_receive() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let (fd, _) = guest.bound(1).await;
    let timeval = [0i64.to_le_bytes(), 100_000i64.to_le_bytes()].concat();
    assert_eq!(set(&mut guest, fd, 11, &timeval).await, 0);
    assert_eq!(get(&mut guest, fd, 11).await, (0, timeval));
    let started = Instant::now();
    assert_eq!(guest.recv(fd, 8, 0).await.0, EAGAIN);
    assert!(started.elapsed() >= Duration::from_millis(90));
}

/// Lays out `n` result records at `BUF` (each with a 26-byte `sa_data` and a 32-byte name
/// buffer), chained, and the hints at `ADDR`.
fn results(guest: &mut Guest, n: u32, data_room: u32) {
    guest.write(ADDR, &[0; 28]);
    for i in 0..n {
        let record = BUF + i * 128;
        guest.write(record, &[0; 128]);
        guest.put_u32(record + 12, record + 28);
        guest.put_u32(record + 16, record + 80);
        guest.put_u32(record + 20, 32);
        guest.put_u32(record + 24, if i + 1 < n { record + 128 } else { 0 });
        guest.put_u32(record + 28 + 4, data_room);
        guest.put_u32(record + 28 + 8, record + 40);
    }
    guest.put_u32(OUT, BUF);
}

async fn getaddrinfo(guest: &mut Guest, node: &str, service: &str, max: u32) -> i32 {
    guest.write(SUBS, format!("{node}\0").as_bytes());
    guest.write(SUBS + 256, format!("{service}\0").as_bytes());
    let args = [
        SUBS.into(),
        node.len() as i64 + 1,
        (SUBS + 256).into(),
        service.len() as i64 + 1,
        ADDR.into(),
        OUT.into(),
        max.into(),
        OUT2.into(),
    ];
    guest.call("sock_getaddrinfo", &args).await
}

#[tokio::test]
async fn getaddrinfo_fills_the_guests_records_within_their_sizes() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    results(&mut guest, 4, 26);
    assert_eq!(getaddrinfo(&mut guest, "10.1.2.3", "8080", 4).await, 0);
    assert_eq!(guest.u32(OUT2), 2, "a stream and a datagram result");
    // First record: INET4, STREAM, TCP, addrlen 16; sa_data = port BE, address, zeros.
    assert_eq!(guest.read(BUF + 2, 3), [1, 2, 1]);
    assert_eq!(guest.u32(BUF + 8), 16);
    assert_eq!(guest.read(BUF + 28, 1), [1]);
    assert_eq!(guest.u32(BUF + 32), 14);
    assert_eq!(guest.read(BUF + 40, 6), [0x1f, 0x90, 10, 1, 2, 3]);
    assert_eq!(guest.read(BUF + 128 + 3, 2), [1, 2], "then DGRAM, UDP");
    // IPv6, with the socket type asked for.
    results(&mut guest, 4, 26);
    guest.write(ADDR + 3, &[2]);
    assert_eq!(getaddrinfo(&mut guest, "2001:db8::1", "", 4).await, 0);
    assert_eq!(guest.u32(OUT2), 1);
    assert_eq!((guest.read(BUF + 2, 1), guest.u32(BUF + 8), guest.u32(BUF + 32)), (vec![2], 28, 26));
    assert_eq!(guest.read(BUF + 40 + 6, 2), [0x20, 0x01]);
    // A sa_data buffer too small is refused, never overrun.
    results(&mut guest, 1, 8);
    guest.write(BUF + 40 + 8, &[0xaa; 4]);
    assert_eq!(getaddrinfo(&mut guest, "10.1.2.3", "80", 1).await, 82, "EAI_MEMORY");
    assert_eq!(guest.read(BUF + 40 + 8, 4), [0xaa; 4]);
}

#[tokio::test]
async fn getaddrinfo_errors() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    results(&mut guest, 2, 26);
    assert_eq!(getaddrinfo(&mut guest, "", "", 2).await, 84, "EAI_NONAME");
    assert_eq!(getaddrinfo(&mut guest, "10.0.0.1", "80", 0).await, 82, "EAI_MEMORY");
    assert_eq!(getaddrinfo(&mut guest, "10.0.0.1", "no-such-service", 2).await, 85, "EAI_SERVICE");
    guest.write(ADDR, &4u16.to_le_bytes());
    assert_eq!(getaddrinfo(&mut guest, "example.invalid", "80", 2).await, 84, "NUMERICHOST and a name");
    guest.write(ADDR, &0x100u16.to_le_bytes());
    assert_eq!(getaddrinfo(&mut guest, "10.0.0.1", "80", 2).await, 79, "EAI_BADFLAG");
    guest.write(ADDR, &[0, 0, 7]);
    assert_eq!(getaddrinfo(&mut guest, "10.0.0.1", "80", 2).await, 81, "EAI_FAMILY");
    guest.write(ADDR, &[0, 0, 0, 9]);
    assert_eq!(getaddrinfo(&mut guest, "10.0.0.1", "80", 2).await, 86, "EAI_SOCKTYPE");
    guest.write(ADDR, &[0; 5]);
    guest.put_u32(OUT, FAR);
    assert_eq!(getaddrinfo(&mut guest, "10.0.0.1", "80", 2).await, EFAULT, "records outside memory");
    // Names need the policy's name lookups.
    let mut no_lookups = Rules::allow().policy();
    no_lookups.name_lookup = false;
    let mut guest = Guest::new(no_lookups).await;
    results(&mut guest, 2, 26);
    assert_eq!(getaddrinfo(&mut guest, "localhost", "80", 2).await, EACCES);
    assert_eq!(getaddrinfo(&mut guest, "127.0.0.1", "80", 2).await, 0, "numbers need no lookup");
}

#[tokio::test]
async fn getaddrinfo_resolves_names() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    results(&mut guest, 4, 26);
    guest.write(ADDR + 2, &[1, 2]);
    assert_eq!(getaddrinfo(&mut guest, "localhost", "http", 4).await, 0);
    assert!(guest.u32(OUT2) >= 1);
    assert_eq!(guest.read(BUF + 40, 6), [0, 80, 127, 0, 0, 1]);
}

fn module(engine: &Engine, imports: &str) -> Module {
    let text = format!("(module {imports} (memory (export \"memory\") 1) (func (export \"_start\")))");
    Module::new(engine, text).expect("test module")
}

#[test]
fn each_import_gets_the_form_its_type_asks_for() {
    let engine = Engine::default();
    let mut base: Linker<Host> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut base, |host: &mut Host| &mut host.wasi).expect("preview1");
    let plain = module(
        &engine,
        r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
    );
    assert!(super::super::link(&base, &plain).unwrap().is_none(), "no socket imports: the runtime's linker");
    let i = "(param i32 i32 i32) (result i32)";
    let v2_by_type =
        module(&engine, &format!(r#"(import "wasi_snapshot_preview1" "sock_accept" (func {i}))"#));
    let linker = super::super::link(&base, &v2_by_type).unwrap().expect("own linker");
    linker.instantiate_pre(&v2_by_type).expect("a 3-argument sock_accept is v2");
    let odd =
        module(&engine, r#"(import "wasi_snapshot_preview1" "sock_accept" (func (param i32) (result i32)))"#);
    let linker = super::super::link(&base, &odd).unwrap().expect("own linker");
    let err = linker.instantiate_pre(&odd).err().expect("no form takes one argument").to_string();
    assert!(err.contains("sock_accept"), "{err}");
    let unknown =
        module(&engine, &format!(r#"(import "wasi_snapshot_preview1" "sock_teleport" (func {i}))"#));
    let linker = super::super::link(&base, &unknown).unwrap().expect("own linker");
    let err = linker.instantiate_pre(&unknown).err().expect("unknown").to_string();
    assert!(err.contains("sock_teleport"), "{err}");
}
