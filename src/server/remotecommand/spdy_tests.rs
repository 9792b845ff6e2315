//! SPDY exec sessions against a test client that behaves as client-go does: it opens the error
//! stream first, then stdin, stdout, stderr (or resize), each with a `streamtype` header and
//! waiting for the reply, over an in-memory connection.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::remotecommand::{Protocol, RemoteCommandError, Session, TerminalSize, Wanted};
use crate::server::spdy::test_client::{
    Client, Frame, REFUSED_STREAM, SETTINGS_INITIAL_WINDOW_SIZE, encode_block,
};

const ALL: Wanted = Wanted { stdin: true, stdout: true, stderr: true, tty: false };
const MIB: usize = 1 << 20;

/// Starts a session and opens `kinds` in order; returns the client, the session and the ids.
async fn start(
    protocol: Protocol,
    wanted: Wanted,
    kinds: &[&str],
) -> (Client, Session, HashMap<String, u32>) {
    start_buffered(4 * MIB, protocol, wanted, kinds).await
}

/// [`start`] over a connection that buffers `capacity` bytes each way.
async fn start_buffered(
    capacity: usize,
    protocol: Protocol,
    wanted: Wanted,
    kinds: &[&str],
) -> (Client, Session, HashMap<String, u32>) {
    let (client_io, server_io) = tokio::io::duplex(capacity);
    let server = tokio::spawn(super::spdy::spdy_session(server_io, protocol, wanted));
    let mut client = Client::new(client_io);
    let mut ids = HashMap::new();
    for kind in kinds {
        ids.insert(kind.to_string(), client.open(kind).await);
    }
    let session = tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap().unwrap();
    (client, session, ids)
}

fn status(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

#[tokio::test]
async fn stdin_stdout_and_stderr_go_to_the_right_streams_and_success_ends_it() {
    let (mut client, mut session, ids) =
        start(Protocol::V4, ALL, &["error", "stdin", "stdout", "stderr"]).await;
    let guest = tokio::spawn(async move {
        let mut input = String::new();
        session.stdin.take().unwrap().read_to_string(&mut input).await.unwrap();
        session.stdout.take().unwrap().write_all(format!("out:{input}").as_bytes()).await.unwrap();
        session.stderr.take().unwrap().write_all(b"err").await.unwrap();
        session.finish(Ok(0)).await;
    });
    client.data(ids["stdin"], b"hel", false).await;
    client.data(ids["stdin"], b"lo", false).await;
    client.data(ids["stdin"], b"", true).await; // spdystream's Close: an empty DATA with FIN
    let got = client.read_to_fin(&[ids["error"], ids["stdout"], ids["stderr"]]).await;
    assert_eq!(got[&ids["stdout"]], b"out:hello");
    assert_eq!(got[&ids["stderr"]], b"err");
    assert_eq!(status(&got[&ids["error"]]), json!({"metadata": {}, "status": "Success"}));
    drop(client);
    // The client closing is what finish waits for, so it returns well before its grace period.
    tokio::time::timeout(Duration::from_secs(2), guest).await.expect("finish waited too long").unwrap();
}

#[tokio::test]
async fn a_non_zero_exit_is_a_failure_carrying_the_exit_code() {
    let wanted = Wanted { stdout: true, ..Wanted::default() };
    let (mut client, session, ids) = start(Protocol::V4, wanted, &["error", "stdout"]).await;
    assert!(session.stdin.is_none() && session.stderr.is_none());
    tokio::spawn(session.finish(Ok(3)));
    let got = client.read_to_fin(&[ids["error"], ids["stdout"]]).await;
    let status = status(&got[&ids["error"]]);
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"], json!([{"reason": "ExitCode", "message": "3"}]));
    assert!(got.get(&ids["stdout"]).is_none_or(|d| d.is_empty()));
}

#[tokio::test]
async fn errors_are_internal_errors_and_older_versions_get_text() {
    let wanted = Wanted { stdout: true, ..Wanted::default() };
    let (mut client, session, ids) = start(Protocol::V4, wanted, &["error", "stdout"]).await;
    tokio::spawn(session.finish(Err("the module has no _start".into())));
    let got = client.read_to_fin(&[ids["error"]]).await;
    assert_eq!(status(&got[&ids["error"]])["reason"], "InternalError");

    let (mut client, session, ids) = start(Protocol::V2, wanted, &["error", "stdout"]).await;
    tokio::spawn(session.finish(Ok(2)));
    let got = client.read_to_fin(&[ids["error"]]).await;
    assert_eq!(got[&ids["error"]], b"command terminated with non-zero exit code: exit status 2");
}

#[tokio::test]
async fn client_pings_are_echoed() {
    let (mut client, _session, _) = start(Protocol::V4, ALL, &["error", "stdin", "stdout", "stderr"]).await;
    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.frame().await, Frame::Ping { id: 1 });
    client.send(Frame::Ping { id: 2 }).await; // an even id would answer a server ping: not echoed
    client.send(Frame::Ping { id: 3 }).await;
    assert_eq!(client.frame().await, Frame::Ping { id: 3 });
}

/// The guest writes `total` bytes of a known pattern to stdout, then finishes.
fn write_pattern(mut session: Session, total: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pattern: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        session.stdout.take().unwrap().write_all(&pattern).await.unwrap();
        session.finish(Ok(0)).await;
    })
}

#[tokio::test]
async fn output_waits_for_a_flow_controlling_clients_window() {
    let (client_io, server_io) = tokio::io::duplex(4 * MIB);
    let mut client = Client::new(client_io);
    let wanted = Wanted { stdout: true, ..Wanted::default() };
    let server = tokio::spawn(super::spdy::spdy_session(server_io, Protocol::V4, wanted));
    let window = 64 * 1024;
    client.send(Frame::Settings { entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, window as u32)] }).await;
    let error = client.open("error").await;
    let stdout = client.open("stdout").await;
    let _guest = write_pattern(server.await.unwrap().unwrap(), MIB);

    let (mut received, mut granted) = (Vec::new(), window);
    while received.len() < MIB {
        match client.try_frame(Duration::from_millis(300)).await {
            Some(Frame::Data { stream, data, .. }) if stream == stdout => {
                received.extend_from_slice(&data);
                assert!(received.len() <= granted, "{} bytes sent in a window of {granted}", received.len());
            }
            Some(other) => panic!("unexpected {other:?}"),
            // Stalled: only fine when the window is used up. Then grant another window.
            None => {
                assert_eq!(received.len(), granted, "the server stopped with window left");
                client.send(Frame::WindowUpdate { stream: stdout, delta: window as u32 }).await;
                granted += window;
            }
        }
    }
    assert!(granted >= MIB && granted - MIB < window, "the server used every window it was given");
    assert!(received.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8), "the output is intact");
    let got = client.read_to_fin(&[error]).await;
    assert_eq!(status(&got[&error])["status"], "Success");
}

#[tokio::test]
async fn output_flows_unthrottled_for_a_client_without_flow_control() {
    // client-go's spdystream never sends WINDOW_UPDATE; TCP is its only brake.
    let wanted = Wanted { stdout: true, ..Wanted::default() };
    let (mut client, session, ids) = start(Protocol::V4, wanted, &["error", "stdout"]).await;
    let _guest = write_pattern(session, MIB);
    let got = client.read_to_fin(&[ids["stdout"], ids["error"]]).await;
    assert_eq!(got[&ids["stdout"]].len(), MIB);
}

#[tokio::test]
async fn stdin_the_guest_consumes_is_granted_back_as_window() {
    let (mut client, mut session, ids) =
        start(Protocol::V4, ALL, &["error", "stdin", "stdout", "stderr"]).await;
    let mut stdin = session.stdin.take().unwrap();
    for _ in 0..10 {
        client.data(ids["stdin"], &[7u8; 10 * 1024], false).await;
    }
    let mut consumed = vec![0u8; 100 * 1024];
    stdin.read_exact(&mut consumed).await.unwrap();
    let mut granted = 0;
    while granted < consumed.len() {
        match client.frame().await {
            Frame::WindowUpdate { stream, delta } if stream == ids["stdin"] => granted += delta as usize,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(granted, consumed.len());
}

#[tokio::test]
async fn a_client_going_away_resolves_closed_ends_stdin_and_fails_writes() {
    let (client, mut session, _) = start(Protocol::V4, ALL, &["error", "stdin", "stdout", "stderr"]).await;
    assert!(!session.closed.is_cancelled());
    drop(client);
    tokio::time::timeout(Duration::from_secs(2), session.closed.cancelled())
        .await
        .expect("closed never resolved");
    let mut rest = Vec::new();
    assert_eq!(session.stdin.take().unwrap().read_to_end(&mut rest).await.unwrap(), 0);
    assert!(session.stdout.take().unwrap().write_all(b"anyone?").await.is_err());
    tokio::time::timeout(Duration::from_secs(2), session.finish(Ok(0))).await.expect("finish hung");
}

#[tokio::test]
async fn goaway_resolves_closed_and_resets_end_their_streams() {
    let (mut client, mut session, ids) =
        start(Protocol::V4, ALL, &["error", "stdin", "stdout", "stderr"]).await;
    client.send(Frame::RstStream { stream: ids["stdin"], status: 5 }).await;
    client.send(Frame::RstStream { stream: ids["stdout"], status: 5 }).await;
    let mut rest = Vec::new();
    session.stdin.take().unwrap().read_to_end(&mut rest).await.unwrap();
    assert!(session.stdout.take().unwrap().write_all(b"x").await.is_err(), "a reset stream takes no data");
    session.stderr.take().unwrap().write_all(b"still here").await.unwrap();
    client.send(Frame::GoAway { last_good: 0, status: 0 }).await;
    tokio::time::timeout(Duration::from_secs(2), session.closed.cancelled())
        .await
        .expect("closed never resolved");
}

#[tokio::test]
async fn the_session_waits_for_every_expected_stream() {
    let (client_io, server_io) = tokio::io::duplex(MIB);
    let wait = Duration::from_millis(300);
    let server = tokio::spawn(super::spdy::open(server_io, Protocol::V4, ALL, wait));
    let mut client = Client::new(client_io);
    client.open("error").await;
    client.open("stdout").await;
    match server.await.unwrap() {
        Err(RemoteCommandError::StreamsTimedOut { missing, .. }) => assert_eq!(missing, "stdin, stderr"),
        other => panic!("expected a timeout, got {:?}", other.map(|_| "a session")),
    }

    let (client_io, server_io) = tokio::io::duplex(MIB);
    let server = tokio::spawn(super::spdy::spdy_session(server_io, Protocol::V4, ALL));
    let mut client = Client::new(client_io);
    client.open("error").await;
    drop(client);
    let err = server.await.unwrap().err().expect("no session without its streams");
    assert!(matches!(err, RemoteCommandError::ClosedBeforeStreams { .. }), "{err}");
}

#[tokio::test]
async fn unknown_and_duplicate_streams_are_refused() {
    let (client_io, server_io) = tokio::io::duplex(MIB);
    let wanted = Wanted { stdout: true, ..Wanted::default() };
    let server = tokio::spawn(super::spdy::spdy_session(server_io, Protocol::V4, wanted));
    let mut client = Client::new(client_io);
    for (kind, id) in [("bogus", 1), ("error", 3), ("error", 5)] {
        let block = Bytes::from(client.deflater.deflate(&encode_block(&[("streamtype", kind)])).unwrap());
        client.send(Frame::SynStream { stream: id, fin: false, block }).await;
    }
    assert_eq!(client.frame().await, Frame::RstStream { stream: 1, status: REFUSED_STREAM });
    assert!(matches!(client.frame().await, Frame::SynReply { stream: 3, .. }));
    assert_eq!(client.frame().await, Frame::RstStream { stream: 5, status: REFUSED_STREAM });
    client.next_id = 7;
    client.open("stdout").await;
    assert!(server.await.unwrap().is_ok());
}

#[tokio::test]
async fn a_tty_gets_resize_events_and_no_stderr() {
    let wanted = Wanted { stdin: true, stdout: true, stderr: true, tty: true };
    let (mut client, mut session, ids) =
        start(Protocol::V4, wanted, &["error", "stdin", "stdout", "resize"]).await;
    assert!(session.stderr.is_none(), "a tty merges stderr into stdout");
    client.data(ids["resize"], b"{\"Width\":100,\"Height\":30}\n", false).await;
    let size = tokio::time::timeout(Duration::from_secs(2), session.resize.as_mut().unwrap().recv()).await;
    assert_eq!(size.unwrap(), Some(TerminalSize { width: 100, height: 30 }));
}

/// A client that sends PINGs (or anything else that needs an answer) and never reads the
/// answers is held back by TCP once a few dozen answers wait: the server stops reading it
/// instead of queuing answers without end.
#[tokio::test(start_paused = true)]
async fn a_ping_flood_that_reads_no_answer_is_not_read_without_end() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let _server = tokio::spawn(super::spdy::spdy_session(server_io, Protocol::V4, ALL));
    let (_unread, mut w) = tokio::io::split(client_io);
    let mut flood = BytesMut::new();
    for _ in 0..1000 {
        Frame::Ping { id: 1 }.encode(&mut flood);
    }
    let written = Arc::new(AtomicUsize::new(0));
    let counter = written.clone();
    tokio::spawn(async move {
        for _ in 0..1000 {
            if w.write_all(&flood).await.is_err() {
                return;
            }
            counter.fetch_add(flood.len(), Ordering::SeqCst);
        }
    });
    // Until every task waits: the flooder on a full connection, or done.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let written = written.load(Ordering::SeqCst);
    assert!(written < MIB, "the server read {written} bytes of PINGs whose answers nobody read");
}

/// While the client reads nothing, what the guest consumes of stdin is owed as one grant,
/// not queued as one WINDOW_UPDATE per chunk; none of it is lost.
#[tokio::test]
async fn grants_owed_while_the_client_does_not_read_are_sent_as_one() {
    let (mut client, mut session, ids) =
        start_buffered(256, Protocol::V4, ALL, &["error", "stdin", "stdout", "stderr"]).await;
    let mut stdin = session.stdin.take().unwrap();
    let guest = tokio::spawn(async move {
        let mut consumed = vec![0u8; 1000 * 100];
        stdin.read_exact(&mut consumed).await.unwrap();
    });
    for _ in 0..1000 {
        client.data(ids["stdin"], &[7u8; 100], false).await;
    }
    guest.await.unwrap();
    let (mut granted, mut updates) = (0, 0);
    while granted < 1000 * 100 {
        match client.frame().await {
            Frame::WindowUpdate { stream, delta } if stream == ids["stdin"] => {
                granted += delta as usize;
                updates += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(granted, 1000 * 100);
    assert!(updates < 100, "{updates} window updates for 1000 chunks");
}
