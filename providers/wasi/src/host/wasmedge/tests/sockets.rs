//! Every socket function doing its job: open, bind, listen, accept (both forms),
//! connect, send/recv, send_to/recv_from (both forms), shutdown, local and peer address.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};

use super::*;

#[tokio::test]
async fn open_numbers_sockets_above_every_preview1_descriptor() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let first = guest.open(1, 2).await;
    let second = guest.open(2, 1).await;
    assert_eq!(first, 1 << 30);
    assert_eq!(second, (1 << 30) + 1);
    assert_eq!(guest.call("sock_open_v2", &[1, 2, OUT.into()]).await, 0);
    assert_eq!(guest.u32(OUT), (1 << 30) + 2);
    assert_eq!(guest.call("fd_close", &[first]).await, 0);
    assert_eq!(guest.open(1, 2).await, first, "the lowest free number is reused");
}

#[tokio::test]
async fn a_listener_accepts_with_v1_and_reports_both_addresses() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let (listener, port) = guest.listener().await;
    assert_ne!(port, 0);
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let conn = guest.accept(listener).await;
    // v1 addresses: the IP bytes, the type as 4, the plain port.
    guest.put_u32(ADDR, ADDR + 16);
    guest.put_u32(ADDR + 4, 16);
    assert_eq!(guest.call("sock_getpeeraddr", &[conn, ADDR.into(), OUT2.into(), OUT3.into()]).await, 0);
    assert_eq!(guest.read(ADDR + 16, 4), [127, 0, 0, 1]);
    assert_eq!(guest.u32(OUT2), 4);
    assert_eq!(guest.u32(OUT3), u32::from(client.local_addr().unwrap().port()));
    assert_eq!(guest.local_port(conn).await, port);
    // Nagle is off: the guest cannot turn it off itself (no IPPROTO_TCP options).
    let host_fd = guest.sockets().get(conn as i32).unwrap().fd();
    assert!(rustix::net::sockopt::tcp_nodelay(host_fd).unwrap());
    // The accepted socket is blocking (v1), a stream, with read and write rights.
    assert_eq!(guest.call("fd_fdstat_get", &[conn, BUF.into()]).await, 0);
    assert_eq!(guest.read(BUF, 4), [6, 0, 0, 0]);
    assert_eq!(guest.u64(BUF + 8) & (1 << 1 | 1 << 6), 1 << 1 | 1 << 6);
}

#[tokio::test]
async fn accept_v2_honours_nonblock_and_v2_addresses_use_the_storage_form() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let (listener, port) = guest.listener().await;
    guest.nonblocking(listener).await;
    assert_eq!(guest.call("sock_accept_v2", &[listener, 4, OUT.into()]).await, EAGAIN, "nothing pending");
    assert_eq!(guest.call("sock_accept_v2", &[listener, 0x100, OUT.into()]).await, EINVAL, "unknown fdflags");
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut accepted = EAGAIN;
    for _ in 0..200 {
        accepted = guest.call("sock_accept_v2", &[listener, 4, OUT.into()]).await;
        if accepted != EAGAIN {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(accepted, 0);
    let conn = i64::from(guest.u32(OUT));
    assert_eq!(guest.call("fd_fdstat_get", &[conn, BUF.into()]).await, 0);
    assert_eq!(guest.u16(BUF + 2), 4, "NONBLOCK");
    // v2: a 128-byte storage, family 1 then the IP; the port plain.
    guest.put_u32(ADDR, ADDR + 16);
    guest.put_u32(ADDR + 4, 128);
    assert_eq!(guest.call("sock_getlocaladdr_v2", &[conn, ADDR.into(), OUT2.into()]).await, 0);
    assert_eq!(guest.read(ADDR + 16, 6), [1, 0, 127, 0, 0, 1]);
    assert_eq!(guest.u32(OUT2), u32::from(port));
    guest.put_u32(ADDR + 4, 16);
    assert_eq!(
        guest.call("sock_getpeeraddr_v2", &[conn, ADDR.into(), OUT2.into()]).await,
        EINVAL,
        "v2 wants 128"
    );
}

#[tokio::test]
async fn a_connection_carries_bytes_both_ways_and_shuts_down() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let (listener, port) = guest.listener().await;
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let conn = guest.accept(listener).await;
    client.write_all(b"ping").unwrap();
    assert_eq!(guest.recv(conn, 2, 1).await, (0, b"pi".to_vec()), "PEEK leaves the bytes");
    assert_eq!(guest.recv(conn, 64, 0).await, (0, b"ping".to_vec()), "blocking recv waits for data");
    assert_eq!(guest.send(conn, b"pong").await, (0, 4));
    let mut reply = [0u8; 4];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"pong");
    // fd_read and fd_write work on the socket too.
    client.write_all(b"via fd_read").unwrap();
    guest.iovec(64);
    assert_eq!(guest.call("fd_read", &[conn, IOVS.into(), 1, OUT.into()]).await, 0);
    assert_eq!(guest.read(BUF, guest.u32(OUT) as usize), b"via fd_read");
    guest.write(BUF, b"via fd_write");
    guest.iovec(12);
    assert_eq!(guest.call("fd_write", &[conn, IOVS.into(), 1, OUT.into()]).await, 0);
    let mut got = [0u8; 12];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"via fd_write");
    // Two iovecs, gathered and scattered.
    guest.write(BUF, b"ab");
    guest.write(BUF + 100, b"cd");
    guest.write(
        IOVS,
        &[BUF.to_le_bytes(), 2u32.to_le_bytes(), (BUF + 100).to_le_bytes(), 2u32.to_le_bytes()].concat(),
    );
    assert_eq!(guest.call("sock_send", &[conn, IOVS.into(), 2, 0, OUT.into()]).await, 0);
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"abcd");
    client.write_all(b"wxyz").unwrap();
    guest.write(
        IOVS,
        &[BUF.to_le_bytes(), 1u32.to_le_bytes(), (BUF + 100).to_le_bytes(), 3u32.to_le_bytes()].concat(),
    );
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(guest.call("sock_recv", &[conn, IOVS.into(), 2, 0, OUT.into(), OUT2.into()]).await, 0);
    assert_eq!(guest.u32(OUT), 4);
    assert_eq!((guest.read(BUF, 1), guest.read(BUF + 100, 3)), (b"w".to_vec(), b"xyz".to_vec()));
    // Shutting down the write side gives the peer its end of file.
    assert_eq!(guest.call("sock_shutdown", &[conn, 2]).await, 0);
    assert_eq!(client.read(&mut reply).unwrap(), 0);
    drop(client);
    assert_eq!(guest.recv(conn, 64, 0).await, (0, Vec::new()), "the peer closed: 0 bytes");
}

#[tokio::test]
async fn a_blocking_connect_reaches_a_host_listener() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let fd = guest.open(1, 2).await;
    guest.address(ADDR, "127.0.0.1".parse().unwrap());
    let port = server.local_addr().unwrap().port();
    assert_eq!(guest.call("sock_connect", &[fd, ADDR.into(), port.into()]).await, 0);
    let (mut peer, from) = server.accept().unwrap();
    assert_eq!(guest.local_port(fd).await, from.port());
    assert_eq!(guest.send(fd, b"hello").await, (0, 5));
    let mut got = [0u8; 5];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
}

#[tokio::test]
async fn a_nonblocking_connect_is_in_progress_until_writable() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let fd = guest.open(1, 2).await;
    guest.nonblocking(fd).await;
    guest.address(ADDR, "127.0.0.1".parse().unwrap());
    let port = server.local_addr().unwrap().port();
    let connected = guest.call("sock_connect_v2", &[fd, ADDR.into(), port.into()]).await;
    assert!(connected == 0 || connected == EINPROGRESS, "{connected}");
    // Writable once connected; SO_ERROR then says no error.
    poll::subscribe(&mut guest, 0, 7, 2, fd as u32);
    assert_eq!(guest.call("poll_oneoff", &[SUBS.into(), EVENTS.into(), 1, OUT.into()]).await, 0);
    assert_eq!((guest.u32(OUT), guest.u64(EVENTS), guest.read(EVENTS + 8, 3)), (1, 7, vec![0, 0, 2]));
    guest.put_u32(OUT2, 4);
    assert_eq!(guest.call("sock_getsockopt", &[fd, 0, 2, OUT.into(), OUT2.into()]).await, 0);
    assert_eq!((guest.u32(OUT), guest.u32(OUT2)), (0, 4));
    server.accept().unwrap();
}

#[tokio::test]
async fn datagrams_go_out_with_send_to_and_come_in_with_recv_from() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let peer_port = peer.local_addr().unwrap().port();
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let (fd, port) = guest.bound(1).await;
    // send_to (v1): address and plain port.
    guest.write(BUF, b"to the peer");
    guest.iovec(11);
    guest.address(ADDR, "127.0.0.1".parse().unwrap());
    assert_eq!(
        guest.call("sock_send_to", &[fd, IOVS.into(), 1, ADDR.into(), peer_port.into(), 0, OUT.into()]).await,
        0
    );
    assert_eq!(guest.u32(OUT), 11);
    let mut got = [0u8; 64];
    let (n, from) = peer.recv_from(&mut got).unwrap();
    assert_eq!((&got[..n], from.port()), (&b"to the peer"[..], port));
    // recv_from v1: the sender's IP bytes, no port.
    peer.send_to(b"back", ("127.0.0.1", port)).unwrap();
    guest.iovec(64);
    guest.put_u32(ADDR, ADDR + 16);
    guest.put_u32(ADDR + 4, 16);
    assert_eq!(
        guest.call("sock_recv_from", &[fd, IOVS.into(), 1, ADDR.into(), 0, OUT.into(), OUT2.into()]).await,
        0
    );
    assert_eq!(
        (guest.read(BUF, guest.u32(OUT) as usize), guest.read(ADDR + 16, 4)),
        (b"back".to_vec(), vec![127, 0, 0, 1])
    );
    // recv_from v2: storage form, the port as a plain u16; a short buffer truncates.
    peer.send_to(b"longer than four", ("127.0.0.1", port)).unwrap();
    guest.iovec(4);
    guest.put_u32(ADDR + 4, 128);
    let args = [fd, IOVS.into(), 1, ADDR.into(), 0, OUT3.into(), OUT.into(), OUT2.into()];
    assert_eq!(guest.call("sock_recv_from_v2", &args).await, 0);
    assert_eq!(guest.read(BUF, guest.u32(OUT) as usize), b"long");
    assert_eq!(guest.u16(OUT2), 1, "RECV_DATA_TRUNCATED");
    assert_eq!(guest.read(ADDR + 16, 6), [1, 0, 127, 0, 0, 1]);
    assert_eq!(guest.u16(OUT3), peer_port, "the plain number, not network order");
}

#[tokio::test]
async fn a_connected_datagram_socket_sends_without_an_address() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let fd = guest.open(1, 1).await;
    assert_eq!(guest.send(fd, b"x").await.0, 17, "EDESTADDRREQ before connect");
    guest.address(ADDR, "127.0.0.1".parse().unwrap());
    let port = peer.local_addr().unwrap().port();
    assert_eq!(guest.call("sock_connect", &[fd, ADDR.into(), port.into()]).await, 0);
    assert_eq!(guest.send(fd, b"hi").await, (0, 2));
    let mut got = [0u8; 8];
    assert_eq!(peer.recv(&mut got).unwrap(), 2);
}

#[tokio::test(flavor = "current_thread")]
async fn a_guest_blocked_in_accept_holds_no_thread() {
    // One thread for everything: if the blocked accept held it, the second guest could
    // never run.
    let mut waiting = Guest::new(Rules::allow().policy()).await;
    let (listener, _) = waiting.listener().await;
    let blocked = tokio::spawn(async move { waiting.call("sock_accept", &[listener, OUT.into()]).await });
    let mut serving = Guest::new(Rules::allow().policy()).await;
    let (listener, port) = serving.listener().await;
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let conn = serving.accept(listener).await;
    client.write_all(b"still served").unwrap();
    assert_eq!(serving.recv(conn, 64, 0).await, (0, b"still served".to_vec()));
    assert!(!blocked.is_finished(), "the first guest still waits for a connection");
    blocked.abort();
}

/// Allows everything and remembers the addresses binds were asked for.
#[derive(Default)]
struct BindLog(std::sync::Mutex<Vec<SocketAddr>>);

impl SocketRules for BindLog {
    fn bind(&self, _: Transport, local: SocketAddr) -> Verdict {
        self.0.lock().unwrap().push(local);
        Verdict::Allow
    }
    fn listen(&self, _: SocketAddr) -> Verdict {
        Verdict::Allow
    }
    fn connect(&self, _: Transport, _: SocketAddr) -> Verdict {
        Verdict::Allow
    }
    fn accept(&self, _: Transport, _: Option<u16>, _: SocketAddr) -> Verdict {
        Verdict::Allow
    }
}

#[tokio::test]
async fn a_wildcard_bind_goes_to_the_policys_address_of_its_family() {
    let log = Arc::new(BindLog::default());
    let to: IpAddr = "127.0.0.2".parse().unwrap();
    let policy = NetworkPolicy::with_rules(log.clone()).bind_wildcard_to(to);
    let mut guest = Guest::new(policy).await;
    let port = TcpListener::bind((to, 0)).unwrap().local_addr().unwrap().port();
    let fd = guest.open(1, 2).await;
    guest.address(ADDR, "0.0.0.0".parse().unwrap());
    assert_eq!(guest.call("sock_bind", &[fd, ADDR.into(), port.into()]).await, 0);
    assert_eq!(guest.call("sock_listen", &[fd, 16]).await, 0);
    assert_eq!(guest.local_port(fd).await, port);
    assert_eq!(guest.read(ADDR + 48, 4), [127, 0, 0, 2], "sock_getlocaladdr reports where it is bound");
    TcpStream::connect((to, port)).expect("listening at the policy's address");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "not on every address");
    // A client's ephemeral bind, and a wildcard of the other family, stay as asked.
    let client = guest.open(1, 2).await;
    assert_eq!(guest.call("sock_bind", &[client, ADDR.into(), 0]).await, 0);
    let v6_port = TcpListener::bind("[::]:0").unwrap().local_addr().unwrap().port();
    let v6 = guest.open(2, 2).await;
    guest.address(ADDR, "::".parse().unwrap());
    assert_eq!(guest.call("sock_bind", &[v6, ADDR.into(), v6_port.into()]).await, 0);
    let asked = log.0.lock().unwrap().clone();
    let v6_wildcard = SocketAddr::new("::".parse().unwrap(), v6_port);
    assert_eq!(asked, [SocketAddr::new(to, port), "0.0.0.0:0".parse().unwrap(), v6_wildcard]);
}
