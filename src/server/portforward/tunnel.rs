//! SPDY tunnelled in a WebSocket (`SPDY/3.1+portforward.k8s.io`): client-go writes the SPDY
//! byte stream in binary messages and reads this side's the same way. This bridge turns the
//! WebSocket back into a byte stream for the SPDY code, through an in-memory pipe of
//! [`BUFFER`] bytes each way: when the SPDY side does not read, the WebSocket is not read.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tracing::debug;

/// What the pipe holds each way.
const BUFFER: usize = 64 * 1024;
/// The most one message this side sends carries.
const CHUNK: usize = 32 * 1024;
/// How long one side may take to end once the other has.
const GRACE: Duration = Duration::from_secs(5);

/// The WebSocket's bytes as a stream; a task carries them until either side ends.
pub fn bridge(socket: WebSocket) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(BUFFER);
    tokio::spawn(pump(socket, theirs));
    ours
}

async fn pump(socket: WebSocket, pipe: DuplexStream) {
    let (mut sink, mut messages) = socket.split();
    let (mut from_spdy, mut to_spdy) = tokio::io::split(pipe);
    let inbound = async {
        while let Some(message) = messages.next().await {
            match message {
                Ok(Message::Binary(bytes)) => {
                    if to_spdy.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) => break,
                Ok(Message::Text(_)) => {
                    debug!("a text message in a SPDY tunnel: ending it");
                    break;
                }
                Ok(_) => {} // pings are answered by the library
                Err(e) => {
                    debug!(error = %e, "the SPDY tunnel's WebSocket failed");
                    break;
                }
            }
        }
        // End of file for the SPDY reader: the session ends.
        let _ = to_spdy.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from_spdy.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
    };
    // Each side ends the other: the client closing ends the SPDY session, whose end closes
    // the WebSocket (and the client answers that close), each within a grace period.
    tokio::pin!(inbound, outbound);
    tokio::select! {
        _ = &mut inbound => {
            let _ = tokio::time::timeout(GRACE, &mut outbound).await;
        }
        _ = &mut outbound => {
            let _ = tokio::time::timeout(GRACE, &mut inbound).await;
        }
    }
}
