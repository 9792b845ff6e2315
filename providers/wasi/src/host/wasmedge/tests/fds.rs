//! The preview1 descriptor functions on sockets, and on everything else still
//! wasmtime-wasi's.

use std::net::TcpListener;

use super::*;

#[tokio::test]
async fn closing_a_listener_frees_its_port() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let (listener, port) = guest.listener().await;
    assert!(TcpListener::bind(("127.0.0.1", port)).is_err(), "the guest holds it");
    assert_eq!(guest.call("fd_close", &[listener]).await, 0);
    TcpListener::bind(("127.0.0.1", port)).expect("free once closed");
}

#[tokio::test]
async fn descriptor_functions_on_a_socket() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let udp = guest.open(1, 1).await;
    assert_eq!(guest.call("fd_filestat_get", &[udp, BUF.into()]).await, 0);
    assert_eq!(guest.read(BUF + 16, 1), [5], "SOCKET_DGRAM");
    assert_eq!(guest.call("fd_fdstat_get", &[udp, BUF.into()]).await, 0);
    assert_eq!(guest.read(BUF, 4), [5, 0, 0, 0], "SOCKET_DGRAM, blocking");
    assert_eq!(guest.call("fd_fdstat_set_flags", &[udp, 4 | 1]).await, 0, "APPEND is ignored");
    assert_eq!(guest.call("fd_fdstat_get", &[udp, BUF.into()]).await, 0);
    assert_eq!(guest.u16(BUF + 2), 4);
    assert_eq!(guest.call("fd_fdstat_set_flags", &[udp, 0x40]).await, EINVAL);
    assert_eq!(guest.call("fd_seek", &[udp, 0, 0, OUT.into()]).await, ESPIPE);
    assert_eq!(guest.call("fd_tell", &[udp, OUT.into()]).await, ESPIPE);
    guest.iovec(4);
    assert_eq!(guest.call("fd_pread", &[udp, IOVS.into(), 1, 0, OUT.into()]).await, ESPIPE);
    assert_eq!(guest.call("fd_pwrite", &[udp, IOVS.into(), 1, 0, OUT.into()]).await, ESPIPE);
    assert_eq!(guest.call("fd_fdstat_get", &[(1 << 30) + 9, BUF.into()]).await, EBADF);
}

#[tokio::test]
async fn renumbering_moves_sockets_among_sockets_only() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let (a, port) = guest.listener().await;
    let b = guest.open(1, 1).await;
    assert_eq!(guest.call("fd_renumber", &[a, b]).await, 0);
    assert_eq!(guest.sockets().len(), 1, "b's old socket was closed");
    assert_eq!(guest.local_port(b).await, port, "the listener now answers to b");
    assert_eq!(guest.call("fd_close", &[a]).await, EBADF);
    assert_eq!(guest.call("fd_renumber", &[b, 1]).await, ENOTSUP, "onto stdout's number");
    assert_eq!(guest.call("fd_renumber", &[1, b]).await, ENOTSUP);
    assert_eq!(guest.call("fd_renumber", &[1, (1 << 30) + 40]).await, EBADF);
}

#[tokio::test]
async fn other_descriptors_are_still_wasmtime_wasis() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup { preopen: Some(dir.path().to_owned()), ..Setup::default() };
    let mut guest = Guest::with(Rules::allow().policy(), setup).await;
    guest.write(BUF, b"new.txt");
    let rights = (1 << 1 | 1 << 6 | 1 << 2) as i64;
    assert_eq!(guest.call("path_open", &[3, 0, BUF.into(), 7, 1, rights, rights, 0, OUT.into()]).await, 0);
    let file = i64::from(guest.u32(OUT));
    assert!(file < 1 << 30);
    guest.write(BUF + 100, b"written");
    guest.put_u32(IOVS, BUF + 100);
    guest.put_u32(IOVS + 4, 7);
    assert_eq!(guest.call("fd_write", &[file, IOVS.into(), 1, OUT.into()]).await, 0);
    assert_eq!(guest.call("fd_tell", &[file, OUT.into()]).await, 0);
    assert_eq!(guest.u64(OUT), 7);
    assert_eq!(guest.call("fd_filestat_get", &[file, BUF.into()]).await, 0);
    assert_eq!(guest.read(BUF + 16, 1), [4], "REGULAR_FILE");
    assert_eq!(guest.call("fd_close", &[file]).await, 0);
    assert_eq!(std::fs::read(dir.path().join("new.txt")).unwrap(), b"written");
    assert_eq!(guest.call("fd_close", &[file]).await, EBADF);
}
