//! Connection-level SPDY tests: streams accepted in both directions or refused as the caller
//! decides, a cap on open streams that frees as streams end, and hostile stream ids.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::test_client::{Client, Frame, REFUSED_STREAM};
use super::{Connection, Decision, Headers, Limits};

/// A connection whose caller accepts `kind: both` streams both ways, `kind: out` streams
/// outbound only, and refuses the rest.
fn start(max_streams: usize) -> (Client, Connection) {
    let (client_io, server_io) = tokio::io::duplex(1 << 20);
    let decide = |_: u32, headers: &Headers| match headers.get("kind") {
        Some("both") => Decision::Accept { inbound: Some(64 * 1024), outbound: true },
        Some("out") => Decision::Accept { inbound: None, outbound: true },
        _ => Decision::Refuse,
    };
    let conn = Connection::start(server_io, Limits { max_streams }, decide).unwrap();
    (Client::new(client_io), conn)
}

async fn next(conn: &mut Connection) -> super::Stream {
    tokio::time::timeout(Duration::from_secs(5), conn.accepted.recv()).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_stream_carries_data_both_ways_and_half_closes_each_way() {
    let (mut client, mut conn) = start(8);
    let id = client.open_with(&[("kind", "both"), ("port", "80")]).await;
    let stream = next(&mut conn).await;
    assert_eq!((stream.id, stream.headers.get("port")), (id, Some("80")));
    let (mut input, mut output) = (stream.inbound.unwrap(), stream.outbound.unwrap());
    client.data(id, b"ping", true).await;
    let mut got = Vec::new();
    input.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"ping", "the client's FIN is end of file");
    output.write_all(b"pong").await.unwrap();
    output.shutdown().await.unwrap();
    assert_eq!(client.read_to_fin(&[id]).await[&id], b"pong");
}

#[tokio::test]
async fn refused_and_out_of_order_streams_are_reset() {
    let (mut client, mut conn) = start(8);
    let refused = client.syn(&[("kind", "nope")]).await;
    assert_eq!(client.frame().await, Frame::RstStream { stream: refused, status: REFUSED_STREAM });
    let id = client.open_with(&[("kind", "out")]).await;
    assert!(next(&mut conn).await.inbound.is_none(), "an outbound-only stream has no reader");
    // Data on a stream nobody reads gives the window back.
    client.data(id, b"ignored", false).await;
    assert_eq!(client.frame().await, Frame::WindowUpdate { stream: id, delta: 7 });
    client.next_id = 1; // an id already used
    let again = client.syn(&[("kind", "out")]).await;
    assert_eq!(client.frame().await, Frame::RstStream { stream: again, status: 1 });
    client.next_id = 4; // even ids are the server's
    let even = client.syn(&[("kind", "out")]).await;
    assert_eq!(client.frame().await, Frame::RstStream { stream: even, status: 1 });
}

#[tokio::test]
async fn streams_past_the_cap_are_refused_until_open_ones_end() {
    let (mut client, mut conn) = start(2);
    let first = client.open_with(&[("kind", "both")]).await;
    client.open_with(&[("kind", "both")]).await;
    let third = client.syn(&[("kind", "both")]).await;
    assert_eq!(client.frame().await, Frame::RstStream { stream: third, status: REFUSED_STREAM });
    // The first ends both ways: the client half-closes, this side finishes and drops it.
    let stream = next(&mut conn).await;
    client.data(first, b"", true).await;
    let mut output = stream.outbound.unwrap();
    output.shutdown().await.unwrap();
    drop(stream.inbound);
    assert_eq!(client.read_to_fin(&[first]).await[&first], b"");
    client.open_with(&[("kind", "both")]).await;
}

#[tokio::test]
async fn streams_nobody_takes_any_more_are_refused() {
    let (mut client, conn) = start(8);
    drop(conn.accepted);
    let id = client.syn(&[("kind", "both")]).await;
    assert_eq!(client.frame().await, Frame::RstStream { stream: id, status: REFUSED_STREAM });
}

#[tokio::test]
async fn the_client_going_away_ends_every_stream() {
    let (mut client, mut conn) = start(8);
    client.open_with(&[("kind", "both")]).await;
    let stream = next(&mut conn).await;
    drop(client);
    tokio::time::timeout(Duration::from_secs(2), conn.closed.cancelled()).await.expect("closed resolves");
    let mut rest = Vec::new();
    assert_eq!(stream.inbound.unwrap().read_to_end(&mut rest).await.unwrap(), 0);
    assert!(stream.outbound.unwrap().write_all(b"x").await.is_err());
}
