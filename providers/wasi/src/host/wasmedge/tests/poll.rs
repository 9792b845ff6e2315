//! `poll_oneoff` with sockets: readiness semantics, and sockets, clocks, stdin and files
//! in one call.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::*;

/// Writes subscription `i` at `SUBS`: `tag` 1 FD_READ / 2 FD_WRITE on `fd`.
pub(super) fn subscribe(guest: &mut Guest, i: u32, userdata: u64, tag: u8, fd: u32) {
    let at = SUBS + i * 48;
    guest.write(at, &[0; 48]);
    guest.put_u64(at, userdata);
    guest.write(at + 8, &[tag]);
    guest.put_u32(at + 16, fd);
}

/// Writes a relative monotonic clock subscription `i` of `timeout`.
fn clock(guest: &mut Guest, i: u32, userdata: u64, timeout: Duration) {
    let at = SUBS + i * 48;
    guest.write(at, &[0; 48]);
    guest.put_u64(at, userdata);
    guest.put_u32(at + 16, 1);
    guest.put_u64(at + 24, timeout.as_nanos() as u64);
}

/// Polls `n` subscriptions: the events as (userdata, error, type, flags), sorted.
async fn poll(guest: &mut Guest, n: u32) -> Vec<(u64, u16, u8, u16)> {
    assert_eq!(guest.call("poll_oneoff", &[SUBS.into(), EVENTS.into(), n.into(), OUT.into()]).await, 0);
    let mut events: Vec<_> = (0..guest.u32(OUT))
        .map(|i| {
            let at = EVENTS + i * 32;
            (guest.u64(at), guest.u16(at + 8), guest.read(at + 10, 1)[0], guest.u16(at + 24))
        })
        .collect();
    events.sort();
    events
}

/// A connection accepted by the guest: (guest fd, host end).
async fn connection(guest: &mut Guest) -> (i64, TcpStream) {
    let (listener, port) = guest.listener().await;
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    (guest.accept(listener).await, client)
}

#[tokio::test]
async fn a_socket_a_clock_and_stdin_in_one_call() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let (conn, mut client) = connection(&mut guest).await;
    subscribe(&mut guest, 0, 1, 1, conn as u32);
    subscribe(&mut guest, 1, 2, 1, 0);
    clock(&mut guest, 2, 3, Duration::from_secs(60));
    // Nothing ready but the clock: it fires.
    clock(&mut guest, 3, 4, Duration::from_millis(30));
    assert_eq!(poll(&mut guest, 4).await, [(4, 0, 0, 0)]);
    // Stdin alone ready (wasmtime-wasi's half answers first).
    guest.stdin.write_all(b"line\n").await.unwrap();
    assert_eq!(poll(&mut guest, 3).await, [(2, 0, 1, 0)]);
    // The socket and stdin both ready: both reported.
    client.write_all(b"data").unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(poll(&mut guest, 3).await, [(1, 0, 1, 0), (2, 0, 1, 0)]);
    // The socket alone: it does not wait for stdin.
    guest.iovec(64);
    assert_eq!(guest.call("fd_read", &[0, IOVS.into(), 1, OUT.into()]).await, 0, "stdin drained");
    let started = Instant::now();
    assert_eq!(poll(&mut guest, 3).await, [(1, 0, 1, 0)]);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_socket_and_a_file_in_one_call() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.txt"), b"file").unwrap();
    let setup = Setup { preopen: Some(dir.path().to_owned()), ..Setup::default() };
    let mut guest = Guest::with(Rules::allow().policy(), setup).await;
    guest.write(BUF, b"data.txt");
    let rights = (1 << 1 | 1 << 27) as i64;
    let args = [3, 0, BUF.into(), 8, 0, rights, rights, 0, OUT.into()];
    assert_eq!(guest.call("path_open", &args).await, 0);
    let file = guest.u32(OUT);
    let (conn, mut client) = connection(&mut guest).await;
    subscribe(&mut guest, 0, 1, 1, conn as u32);
    subscribe(&mut guest, 1, 2, 1, file);
    assert_eq!(poll(&mut guest, 2).await, [(2, 0, 1, 0)], "a file is always readable");
    client.write_all(b"x").unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(poll(&mut guest, 2).await, [(1, 0, 1, 0), (2, 0, 1, 0)]);
    // A file descriptor wasmtime-wasi does not know fails the call, as it always did.
    subscribe(&mut guest, 1, 2, 1, 99);
    assert_eq!(guest.call("poll_oneoff", &[SUBS.into(), EVENTS.into(), 2, OUT.into()]).await, EBADF);
}

#[tokio::test]
async fn write_readiness_is_reported_once_until_the_guest_sends() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let (conn, _client) = connection(&mut guest).await;
    subscribe(&mut guest, 0, 1, 2, conn as u32);
    subscribe(&mut guest, 1, 2, 1, conn as u32);
    clock(&mut guest, 2, 3, Duration::from_millis(30));
    assert_eq!(poll(&mut guest, 3).await, [(1, 0, 2, 0)], "writable once");
    assert_eq!(poll(&mut guest, 3).await, [(3, 0, 0, 0)], "then quiet: an idle connection costs nothing");
    assert_eq!(guest.send(conn, b"x").await, (0, 1));
    assert_eq!(poll(&mut guest, 3).await, [(1, 0, 2, 0)], "a send re-arms it");
    assert_eq!(poll(&mut guest, 3).await, [(3, 0, 0, 0)]);
}

#[tokio::test]
async fn write_readiness_is_disarmed_per_socket_whatever_the_userdata() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let (listener, port) = guest.listener().await;
    let _a = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let first = guest.accept(listener).await;
    let mut b = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let second = guest.accept(listener).await;
    // The second's send buffer full: armed (it sent) but not writable.
    guest.nonblocking(second).await;
    let chunk = vec![7u8; 64 * 1024];
    let mut queued = 0usize;
    loop {
        match guest.send(second, &chunk).await {
            (0, n) => queued += n as usize,
            (errno, _) => {
                assert_eq!(errno, EAGAIN);
                break;
            }
        }
    }
    // Both subscribed with one userdata: only the first is writable, and only it is
    // disarmed.
    subscribe(&mut guest, 0, 7, 2, first as u32);
    subscribe(&mut guest, 1, 7, 2, second as u32);
    clock(&mut guest, 2, 3, Duration::from_millis(30));
    assert_eq!(poll(&mut guest, 3).await, [(7, 0, 2, 0)]);
    let drained = tokio::task::spawn_blocking(move || {
        let mut sink = vec![0u8; queued];
        std::io::Read::read_exact(&mut b, &mut sink).map(|()| b)
    });
    let _b = drained.await.unwrap().unwrap();
    // The second becomes writable: reported (a lost wake-up if it had been disarmed).
    clock(&mut guest, 2, 3, Duration::from_secs(10));
    assert_eq!(poll(&mut guest, 3).await, [(7, 0, 2, 0)]);
}

#[tokio::test]
async fn a_fresh_write_subscription_is_reported() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let (conn, _client) = connection(&mut guest).await;
    subscribe(&mut guest, 0, 1, 2, conn as u32);
    clock(&mut guest, 1, 3, Duration::from_millis(30));
    assert_eq!(poll(&mut guest, 2).await, [(1, 0, 2, 0)]);
    // A call without it, then with it again: reported again.
    clock(&mut guest, 0, 3, Duration::from_millis(1));
    assert_eq!(poll(&mut guest, 1).await, [(3, 0, 0, 0)]);
    subscribe(&mut guest, 0, 1, 2, conn as u32);
    clock(&mut guest, 1, 3, Duration::from_millis(30));
    assert_eq!(poll(&mut guest, 2).await, [(1, 0, 2, 0)]);
}

#[tokio::test]
async fn a_listener_is_readable_with_a_connection_pending_and_never_writable() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let (listener, port) = guest.listener().await;
    subscribe(&mut guest, 0, 1, 2, listener as u32);
    subscribe(&mut guest, 1, 2, 1, listener as u32);
    clock(&mut guest, 2, 3, Duration::from_millis(30));
    assert_eq!(poll(&mut guest, 3).await, [(3, 0, 0, 0)]);
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(poll(&mut guest, 3).await, [(2, 0, 1, 0)]);
    guest.accept(listener).await;
    assert_eq!(poll(&mut guest, 3).await, [(3, 0, 0, 0)], "accepted: not readable any more");
}

#[tokio::test]
async fn a_hang_up_is_a_ready_event_without_an_error() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    let (conn, client) = connection(&mut guest).await;
    drop(client);
    subscribe(&mut guest, 0, 1, 1, conn as u32);
    assert_eq!(poll(&mut guest, 1).await, [(1, 0, 1, 1)], "readable with HANGUP");
    assert_eq!(guest.recv(conn, 8, 0).await, (0, Vec::new()));
}

#[tokio::test]
async fn poll_argument_errors() {
    let mut guest = Guest::new(Rules::allow().policy()).await;
    assert_eq!(guest.call("poll_oneoff", &[SUBS.into(), EVENTS.into(), 0, OUT.into()]).await, EINVAL);
    assert_eq!(guest.call("poll_oneoff", &[FAR.into(), EVENTS.into(), 1, OUT.into()]).await, EFAULT);
    assert_eq!(guest.call("poll_oneoff", &[SUBS.into(), EVENTS.into(), 1, FAR.into()]).await, EFAULT);
    subscribe(&mut guest, 0, 1, 9, 0);
    assert_eq!(
        guest.call("poll_oneoff", &[SUBS.into(), EVENTS.into(), 1, OUT.into()]).await,
        EINVAL,
        "unknown tag"
    );
    // A socket number not open: an event with EBADF (the call itself succeeds).
    subscribe(&mut guest, 0, 1, 1, (1 << 30) + 5);
    assert_eq!(poll(&mut guest, 1).await, [(1, EBADF as u16, 1, 0)]);
}
