//! The exec resize stream: JSON terminal sizes one after another, decoded into
//! [`TerminalSize`] events, with a cap on what is held while waiting for the end of one.

use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::server::inbound::InboundReader;

/// The most of the resize stream held while waiting for the end of a size: one is about 30
/// bytes of JSON (`{"Width":80,"Height":24}`), so more than this is not a size at all.
const MAX_RESIZE_PENDING: usize = 4096;

/// A terminal size from the resize stream, as client-go encodes `TerminalSize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Decodes the resize stream (JSON objects one after another, split anywhere) into sizes. Ends
/// when the stream ends, the receiver is dropped, or the client sends something that is not a
/// size (the kubelet stops reading resizes then too), including more than
/// [`MAX_RESIZE_PENDING`] bytes that do not complete one. Sizes wait in a queue of 8 for the
/// receiver; while it is full, the stream is not read (and the client is held back).
pub(super) fn resize_events(mut stream: InboundReader) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            let mut values = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
            let mut used = 0;
            while let Some(value) = values.next() {
                match value {
                    Ok(size) => {
                        used = values.byte_offset();
                        if tx.send(size).await.is_err() {
                            return;
                        }
                    }
                    Err(e) if e.is_eof() => break,
                    Err(_) => return,
                }
            }
            buf.drain(..used);
            if buf.len() > MAX_RESIZE_PENDING {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::server::inbound::inbound;

    const MIB: usize = 1 << 20;

    #[tokio::test]
    async fn resize_events_are_decoded_across_chunk_boundaries() {
        let (tx, rx) = inbound(MIB, None);
        let mut sizes = resize_events(rx);
        assert!(tx.send(Bytes::from_static(b"{\"Width\":80,\"Hei")).await);
        assert!(tx.send(Bytes::from_static(b"ght\":24}\n{\"Width\":120,\"Height\":40}\n")).await);
        assert_eq!(sizes.recv().await, Some(TerminalSize { width: 80, height: 24 }));
        assert_eq!(sizes.recv().await, Some(TerminalSize { width: 120, height: 40 }));
        assert!(tx.send(Bytes::from_static(b"not json")).await);
        assert_eq!(sizes.recv().await, None, "garbage ends the events");
    }

    #[tokio::test]
    async fn a_size_that_never_ends_is_not_buffered_without_end() {
        // Whitespace and an unterminated string are valid JSON prefixes: without a cap they
        // would be kept forever, chunk after chunk.
        for (start, filler) in [(&b" "[..], b' '), (&b"{\"Width\":\""[..], b'a')] {
            let (tx, rx) = inbound(MIB, None);
            let mut sizes = resize_events(rx);
            assert!(tx.send(Bytes::from_static(start)).await);
            for _ in 0..8 {
                assert!(tx.send(Bytes::from(vec![filler; 1024])).await);
            }
            // 8 KiB without a size: the decoder gives up (without the cap it would wait on).
            let ended = tokio::time::timeout(std::time::Duration::from_secs(10), sizes.recv()).await;
            assert_eq!(ended, Ok(None));
            drop(sizes);
        }
    }

    #[tokio::test]
    async fn odd_resize_streams_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..300 {
            let (tx, rx) = inbound(MIB, None);
            let mut sizes = resize_events(rx);
            for _ in 0..(seed % 5) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let pieces: [&[u8]; 8] = [
                    b"{\"Width\":",
                    b"65535",
                    b"99999999",
                    b",\"Height\":1}",
                    b"\xff\xfe",
                    b"]",
                    b"{",
                    b"-1",
                ];
                let chunk = pieces[(seed % 8) as usize];
                if !tx.send(Bytes::copy_from_slice(chunk)).await {
                    break;
                }
            }
            drop(tx);
            while sizes.recv().await.is_some() {}
        }
    }
}
