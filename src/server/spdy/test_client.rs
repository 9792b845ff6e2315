//! A SPDY client for unit tests that behaves as client-go's does: it opens streams with
//! headers and waits for each reply, over an in-memory connection (or any other), and reads frames with a
//! deadline so a test fails instead of hanging.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

pub(crate) use super::frame::{Frame, REFUSED_STREAM, SETTINGS_INITIAL_WINDOW_SIZE, read_frame};
pub(crate) use super::headers::{Deflater, Inflater, encode_block, parse_block};

/// The client, over an in-memory pipe unless told otherwise.
pub(crate) struct Client<IO = DuplexStream> {
    pub(crate) r: ReadHalf<IO>,
    pub(crate) w: WriteHalf<IO>,
    pub(crate) deflater: Deflater,
    pub(crate) inflater: Inflater,
    pub(crate) next_id: u32,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Client<IO> {
    pub(crate) fn new(io: IO) -> Client<IO> {
        let (r, w) = tokio::io::split(io);
        Client { r, w, deflater: Deflater::new().unwrap(), inflater: Inflater::new(), next_id: 1 }
    }

    pub(crate) async fn send(&mut self, frame: Frame) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        self.w.write_all(&buf).await.unwrap();
    }

    /// The next frame (its header block checked), failing the test after 5 s.
    pub(crate) async fn frame(&mut self) -> Frame {
        self.try_frame(Duration::from_secs(5)).await.expect("no frame from the server in time")
    }

    /// The next frame within `wait`; `None` if none came. Panics if the server closed.
    pub(crate) async fn try_frame(&mut self, wait: Duration) -> Option<Frame> {
        let frame = tokio::time::timeout(wait, read_frame(&mut self.r)).await.ok()?;
        let frame = frame.unwrap().expect("the server closed the connection");
        if let Frame::SynReply { block, .. } = &frame {
            assert_eq!(parse_block(&self.inflater.inflate(block).unwrap()).unwrap(), vec![]);
        }
        Some(frame)
    }

    /// Sends a SYN_STREAM with these headers on the next id, without waiting; returns the id.
    pub(crate) async fn syn(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let block = Bytes::from(self.deflater.deflate(&encode_block(headers)).unwrap());
        self.send(Frame::SynStream { stream: id, fin: false, block }).await;
        id
    }

    /// Opens a stream with these headers and waits for its reply, as client-go's
    /// `CreateStream` does.
    pub(crate) async fn open_with(&mut self, headers: &[(&str, &str)]) -> u32 {
        let id = self.syn(headers).await;
        match self.frame().await {
            Frame::SynReply { stream, fin: false, .. } if stream == id => id,
            other => panic!("expected the reply to stream {id}, got {other:?}"),
        }
    }

    /// Opens an exec stream of this `streamType`.
    pub(crate) async fn open(&mut self, streamtype: &str) -> u32 {
        self.open_with(&[("streamType", streamtype)]).await
    }

    pub(crate) async fn data(&mut self, stream: u32, data: &[u8], fin: bool) {
        self.send(Frame::Data { stream, fin, data: Bytes::copy_from_slice(data) }).await;
    }

    /// Reads until every stream in `ids` ended (FIN), returning what each carried (window
    /// updates and replies to streams opened without waiting are passed over).
    pub(crate) async fn read_to_fin(&mut self, ids: &[u32]) -> HashMap<u32, Vec<u8>> {
        let mut got: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut open: Vec<u32> = ids.to_vec();
        while !open.is_empty() {
            match self.frame().await {
                Frame::Data { stream, fin, data } => {
                    got.entry(stream).or_default().extend_from_slice(&data);
                    if fin {
                        open.retain(|id| *id != stream);
                    }
                }
                Frame::WindowUpdate { .. } | Frame::SynReply { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        got
    }
}
