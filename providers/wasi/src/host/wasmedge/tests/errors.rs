//! Bad input and refusals: what the guest gets back, and that nothing reaches the host.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use super::*;

#[tokio::test]
async fn unknown_families_and_types_are_refused() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    for af in [0, 3, 9, -1] {
        assert_eq!(guest.call("sock_open", &[af, 2, OUT.into()]).await, EAFNOSUPPORT, "af {af}");
    }
    for ty in [0, 3, 255] {
        assert_eq!(guest.call("sock_open", &[1, ty, OUT.into()]).await, EPROTOTYPE, "type {ty}");
    }
    assert_eq!(guest.sockets().len(), 0);
}

#[tokio::test]
async fn pointers_outside_memory_are_efault_and_change_nothing() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    assert_eq!(guest.call("sock_open", &[1, 2, FAR.into()]).await, EFAULT);
    assert_eq!(guest.call("sock_open", &[1, 2, (FAR - 2).into()]).await, EFAULT, "straddling the end");
    assert_eq!(guest.sockets().len(), 0, "no socket was made");
    let (listener, port) = guest.listener().await;
    let fd = guest.open(1, 2).await;
    // An address struct, and the bytes it points at, past the end.
    assert_eq!(guest.call("sock_bind", &[fd, FAR.into(), 0]).await, EFAULT);
    guest.put_u32(ADDR, FAR - 2);
    guest.put_u32(ADDR + 4, 4);
    assert_eq!(guest.call("sock_bind", &[fd, ADDR.into(), 0]).await, EFAULT);
    // The new descriptor's slot: the connection stays queued.
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(guest.call("sock_accept", &[listener, FAR.into()]).await, EFAULT);
    let conn = guest.accept(listener).await;
    // iovecs: the list, one buffer, the count out.
    assert_eq!(guest.call("sock_send", &[conn, FAR.into(), 1, 0, OUT.into()]).await, EFAULT);
    guest.put_u32(IOVS, FAR - 1);
    guest.put_u32(IOVS + 4, 2);
    assert_eq!(guest.call("sock_send", &[conn, IOVS.into(), 1, 0, OUT.into()]).await, EFAULT);
    assert_eq!(guest.call("sock_recv", &[conn, IOVS.into(), 1, 0, OUT.into(), OUT2.into()]).await, EFAULT);
    guest.iovec(4);
    assert_eq!(guest.call("sock_recv", &[conn, IOVS.into(), 1, 0, FAR.into(), OUT2.into()]).await, EFAULT);
    assert_eq!(guest.call("sock_send", &[conn, IOVS.into(), 1, 0, FAR.into()]).await, EFAULT);
    assert_eq!(
        guest.call("sock_send", &[conn, IOVS.into(), 1025, 0, OUT.into()]).await,
        EINVAL,
        "too many iovecs"
    );
    assert_eq!(guest.call("sock_getpeeraddr", &[conn, ADDR.into(), FAR.into(), OUT.into()]).await, EFAULT);
    assert_eq!(guest.call("poll_oneoff", &[SUBS.into(), FAR.into(), 1, OUT.into()]).await, EFAULT);
    assert_eq!(guest.call("sock_getsockopt", &[conn, 0, 0, OUT.into(), FAR.into()]).await, EFAULT);
    assert_eq!(guest.call("sock_setsockopt", &[conn, 0, 0, (FAR - 2).into(), 4]).await, EFAULT);
}

#[tokio::test]
async fn closed_and_non_socket_descriptors() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let fd = guest.open(1, 2).await;
    assert_eq!(guest.call("fd_close", &[fd]).await, 0);
    assert_eq!(guest.call("fd_close", &[fd]).await, EBADF, "closed twice");
    assert_eq!(guest.call("sock_listen", &[fd, 1]).await, EBADF);
    assert_eq!(guest.send(fd, b"x").await.0, EBADF);
    assert_eq!(guest.call("sock_listen", &[(1 << 30) + 77, 1]).await, EBADF, "never opened");
    // stdout is preview1's: not a socket.
    assert_eq!(guest.call("sock_listen", &[1, 1]).await, ENOTSOCK);
    assert_eq!(guest.send(1, b"x").await.0, ENOTSOCK);
    assert_eq!(guest.call("sock_accept", &[0, OUT.into()]).await, ENOTSOCK);
    assert_eq!(guest.call("sock_shutdown", &[2, 3]).await, ENOTSOCK);
    assert_eq!(guest.call("sock_accept", &[55, OUT.into()]).await, ENOTSOCK, "a number preview1 never gave");
}

#[tokio::test]
async fn misuse_of_a_socket_is_einval_or_enotconn() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let fd = guest.open(1, 2).await;
    assert_eq!(guest.call("sock_accept", &[fd, OUT.into()]).await, EINVAL, "not listening");
    assert_eq!(guest.recv(fd, 4, 0).await.0, ENOTCONN);
    assert_eq!(guest.send(fd, b"x").await.0, ENOTCONN);
    assert_eq!(guest.recv(fd, 4, 4).await.0, EINVAL, "unknown riflags");
    guest.iovec(1);
    assert_eq!(guest.call("sock_send", &[fd, IOVS.into(), 1, 1, OUT.into()]).await, EINVAL, "siflags");
    for how in [0, 4, -1] {
        assert_eq!(guest.call("sock_shutdown", &[fd, how]).await, EINVAL, "how {how}");
    }
    guest.address(ADDR, "::1".parse().unwrap());
    assert_eq!(guest.call("sock_bind", &[fd, ADDR.into(), 0]).await, EAFNOSUPPORT, "IPv6 on an IPv4 socket");
    guest.put_u32(ADDR + 4, 7);
    assert_eq!(guest.call("sock_bind", &[fd, ADDR.into(), 0]).await, EINVAL, "a 7-byte address");
    guest.put_u32(ADDR + 4, 128);
    assert_eq!(guest.call("sock_bind", &[fd, ADDR.into(), 0]).await, EINVAL, "storage form in v1");
    let udp = guest.open(1, 1).await;
    assert_eq!(guest.call("sock_listen", &[udp, 1]).await, ENOTSUP);
}

#[tokio::test]
async fn without_a_policy_no_socket_opens() {
    let mut guest = Guest::new(NetworkPolicy::default()).await;
    assert_eq!(guest.call("sock_open", &[1, 2, OUT.into()]).await, EACCES);
    assert_eq!(guest.call("sock_open", &[1, 1, OUT.into()]).await, EACCES);
    let mut tcp_only = Rules::allow().policy();
    tcp_only.udp = false;
    let mut guest = Guest::new(tcp_only).await;
    assert_eq!(guest.call("sock_open", &[1, 1, OUT.into()]).await, EACCES);
    assert_eq!(guest.call("sock_open", &[1, 2, OUT.into()]).await, 0);
}

#[tokio::test]
async fn the_rules_refuse_binds_listens_and_connections() {
    let mut guest = Guest::new(Rules { bind: Verdict::Deny, ..Rules::allow() }.policy()).await;
    let fd = guest.open(1, 2).await;
    guest.address(ADDR, "0.0.0.0".parse().unwrap());
    assert_eq!(guest.call("sock_bind", &[fd, ADDR.into(), 18095]).await, EACCES);
    assert_eq!(guest.call("sock_listen", &[fd, 1]).await, EACCES, "the implicit bind is asked too");

    let mut guest = Guest::new(Rules { bind: Verdict::InUse, ..Rules::allow() }.policy()).await;
    let fd = guest.open(1, 2).await;
    guest.address(ADDR, "0.0.0.0".parse().unwrap());
    assert_eq!(guest.call("sock_bind", &[fd, ADDR.into(), 18095]).await, EADDRINUSE);

    let mut guest = Guest::new(Rules { listen: Verdict::Deny, ..Rules::allow() }.policy()).await;
    let (fd, _) = guest.bound(2).await;
    assert_eq!(guest.call("sock_listen", &[fd, 1]).await, EACCES);

    // PortRules refuse egress to the node itself.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut guest = Guest::new(NetworkPolicy::open([])).await;
    for (af, ip) in [(1, "127.0.0.1"), (2, "::ffff:127.0.0.1")] {
        let fd = guest.open(af, 2).await;
        guest.address(ADDR, ip.parse().unwrap());
        let port = server.local_addr().unwrap().port();
        assert_eq!(guest.call("sock_connect", &[fd, ADDR.into(), port.into()]).await, EACCES, "{ip}");
        let udp = guest.open(af, 1).await;
        guest.write(BUF, b"x");
        guest.iovec(1);
        let args = [udp, IOVS.into(), 1, ADDR.into(), 53, 0, OUT.into()];
        assert_eq!(guest.call("sock_send_to", &args).await, EACCES, "{ip}");
    }
    server.set_nonblocking(true).unwrap();
    assert!(server.accept().is_err(), "nothing reached the host's listener");
}

#[tokio::test]
async fn a_port_held_on_the_host_is_eaddrinuse() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let fd = guest.open(1, 2).await;
    guest.address(ADDR, "127.0.0.1".parse().unwrap());
    let port = held.local_addr().unwrap().port();
    assert_eq!(guest.call("sock_bind", &[fd, ADDR.into(), port.into()]).await, EADDRINUSE);
}

#[tokio::test]
async fn a_refused_peer_is_reset_and_never_seen() {
    let mut guest = Guest::new(Rules { accept: Verdict::Deny, ..Rules::allow() }.policy()).await;
    let (listener, port) = guest.listener().await;
    guest.nonblocking(listener).await;
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(guest.call("sock_accept", &[listener, OUT.into()]).await, EAGAIN);
    assert_eq!(guest.sockets().len(), 1, "only the listener");
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let err = (&client).read(&mut [0u8; 1]).expect_err("reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn a_refused_datagram_is_dropped() {
    let mut guest = Guest::new(Rules { accept: Verdict::Deny, ..Rules::allow() }.policy()).await;
    let (fd, port) = guest.bound(1).await;
    guest.nonblocking(fd).await;
    let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.send_to(b"unwanted", ("127.0.0.1", port)).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(guest.recv(fd, 64, 0).await.0, EAGAIN);
    assert_eq!(guest.read(BUF, 8), [0; 8], "nothing was written to the guest");
}

#[tokio::test]
async fn the_handle_cap_counts_files_and_sockets() {
    // stdin, stdout, stderr hold 3 handles of the 6.
    let setup = Setup { max_handles: Some(6), ..Setup::default() };
    let mut guest = Guest::with(Rules::allow().policy(), setup).await;
    assert_eq!(guest.call("fd_fdstat_get", &[1, BUF.into()]).await, 0, "preview1 sets up its descriptors");
    let (listener, port) = guest.listener().await;
    let conn_a = {
        let _c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        guest.accept(listener).await
    };
    let third = guest.open(1, 1).await;
    assert_eq!(guest.call("sock_open", &[1, 2, OUT.into()]).await, EMFILE);
    assert_eq!(guest.call("sock_open", &[2, 1, OUT.into()]).await, EMFILE);
    // A pending connection stays queued while there is no room; EMFILE, not a trap.
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(guest.call("sock_accept", &[listener, OUT.into()]).await, EMFILE);
    // The listener has a connection pending but is not reported while accepting would
    // fail: a guest that retries later does not spin meanwhile.
    super::poll::subscribe(&mut guest, 0, 1, 1, listener as u32);
    guest.write(SUBS + 48, &[0; 48]);
    guest.put_u32(SUBS + 48 + 16, 1);
    guest.put_u64(SUBS + 48 + 24, 20_000_000);
    assert_eq!(guest.call("poll_oneoff", &[SUBS.into(), EVENTS.into(), 2, OUT.into()]).await, 0);
    assert_eq!((guest.u32(OUT), guest.read(EVENTS + 10, 1)), (1, vec![0]), "only the clock");
    assert_eq!(guest.call("fd_close", &[third]).await, 0);
    assert_eq!(guest.call("poll_oneoff", &[SUBS.into(), EVENTS.into(), 2, OUT.into()]).await, 0);
    assert_eq!(
        (guest.u32(OUT), guest.u64(EVENTS), guest.read(EVENTS + 10, 1)),
        (1, 1, vec![1]),
        "readable again"
    );
    let conn_b = guest.accept(listener).await;
    assert_ne!(conn_a, conn_b);
    assert_eq!(guest.sockets().len(), 3);
}

#[tokio::test]
async fn at_most_max_sockets_per_run() {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft: usize = (limits.lines().find(|l| l.starts_with("Max open files")))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0);
    if soft < super::super::table::MAX_SOCKETS + 64 {
        eprintln!("skipped: the soft RLIMIT_NOFILE ({soft}) is below MAX_SOCKETS; raise it with `ulimit -n`");
        return;
    }
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let mut opened = 0;
    while guest.call("sock_open", &[1, 1, OUT.into()]).await == 0 {
        opened += 1;
        assert!(opened <= super::super::table::MAX_SOCKETS, "no cap");
    }
    assert_eq!(opened, super::super::table::MAX_SOCKETS);
    assert_eq!(guest.call("sock_open", &[1, 1, OUT.into()]).await, EMFILE);
}
