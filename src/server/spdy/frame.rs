//! SPDY/3 frames on the wire: the 8-byte head, each frame type's fields, reading one frame from a
//! byte stream and writing one into a buffer. Header blocks stay compressed here.

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The protocol version every control frame carries.
const VERSION: u16 = 3;
/// FLAG_FIN on DATA, SYN_STREAM, SYN_REPLY and HEADERS: the sender is done with the stream.
pub(super) const FLAG_FIN: u8 = 0x01;
/// SETTINGS id of the initial per-stream window.
pub(crate) const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// RST_STREAM status: the receiver refuses the stream.
pub(crate) const REFUSED_STREAM: u32 = 3;
/// The largest DATA payload this side accepts (the 24-bit length field allows 16 MiB; client-go
/// writes at most 32 KiB).
const MAX_DATA: usize = 1 << 20;
/// The largest control frame this side accepts (header blocks of a few dozen bytes in practice).
const MAX_CONTROL: usize = 64 * 1024;

/// A malformed frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("control frame of version {0}, expected 3")]
    Version(u16),
    #[error("{kind} frame with a payload of {len} bytes")]
    Length { kind: &'static str, len: usize },
    #[error("{0} frame for stream 0")]
    StreamZero(&'static str),
    #[error("reading: {0}")]
    Io(#[from] std::io::Error),
}

/// One frame. Stream ids are 31 bits; header blocks are zlib-compressed name/value blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    SynStream {
        stream: u32,
        fin: bool,
        block: Bytes,
    },
    SynReply {
        stream: u32,
        fin: bool,
        block: Bytes,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    /// (flags, id, value) entries.
    Settings {
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream: u32,
        fin: bool,
        block: Bytes,
    },
    WindowUpdate {
        stream: u32,
        delta: u32,
    },
    /// A control frame type this side does not know; SPDY/3 says to ignore it.
    Unknown {
        kind: u16,
    },
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, FrameError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    r.read_exact(&mut head[1..]).await?;
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let control = head[0] & 0x80 != 0;
    let max = if control { MAX_CONTROL } else { MAX_DATA };
    if len > max {
        return Err(FrameError::Length { kind: if control { "control" } else { "DATA" }, len });
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Frame::parse(head, Bytes::from(payload)).map(Some)
}

impl Frame {
    /// Builds a frame from its 8-byte head and its payload.
    pub(super) fn parse(head: [u8; 8], payload: Bytes) -> Result<Frame, FrameError> {
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        let fin = flags & FLAG_FIN != 0;
        if first & 0x8000_0000 == 0 {
            let stream = first & 0x7fff_ffff;
            if stream == 0 {
                return Err(FrameError::StreamZero("DATA"));
            }
            return Ok(Frame::Data { stream, fin, data: payload });
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let word =
            |i: usize| u32::from_be_bytes([payload[i], payload[i + 1], payload[i + 2], payload[i + 3]]);
        let need = |kind: &'static str, ok: bool| match ok {
            true => Ok(()),
            false => Err(FrameError::Length { kind, len: payload.len() }),
        };
        let frame = match (first & 0xffff) as u16 {
            1 => {
                need("SYN_STREAM", payload.len() >= 10)?;
                Frame::SynStream { stream: word(0) & 0x7fff_ffff, fin, block: payload.slice(10..) }
            }
            2 => {
                need("SYN_REPLY", payload.len() >= 4)?;
                Frame::SynReply { stream: word(0) & 0x7fff_ffff, fin, block: payload.slice(4..) }
            }
            3 => {
                need("RST_STREAM", payload.len() == 8)?;
                Frame::RstStream { stream: word(0) & 0x7fff_ffff, status: word(4) }
            }
            4 => {
                need("SETTINGS", payload.len() >= 4)?;
                let count = word(0) as usize;
                need("SETTINGS", count.checked_mul(8).and_then(|n| n.checked_add(4)) == Some(payload.len()))?;
                let entries = (0..count)
                    .map(|i| {
                        let at = 4 + i * 8;
                        (payload[at], word(at) & 0x00ff_ffff, word(at + 4))
                    })
                    .collect();
                Frame::Settings { entries }
            }
            6 => {
                need("PING", payload.len() == 4)?;
                Frame::Ping { id: word(0) }
            }
            7 => {
                need("GOAWAY", payload.len() == 8)?;
                Frame::GoAway { last_good: word(0) & 0x7fff_ffff, status: word(4) }
            }
            8 => {
                need("HEADERS", payload.len() >= 4)?;
                Frame::Headers { stream: word(0) & 0x7fff_ffff, fin, block: payload.slice(4..) }
            }
            9 => {
                need("WINDOW_UPDATE", payload.len() == 8)?;
                Frame::WindowUpdate { stream: word(0) & 0x7fff_ffff, delta: word(4) & 0x7fff_ffff }
            }
            kind => Frame::Unknown { kind },
        };
        match frame {
            Frame::SynStream { stream: 0, .. } => Err(FrameError::StreamZero("SYN_STREAM")),
            Frame::SynReply { stream: 0, .. } => Err(FrameError::StreamZero("SYN_REPLY")),
            Frame::RstStream { stream: 0, .. } => Err(FrameError::StreamZero("RST_STREAM")),
            Frame::Headers { stream: 0, .. } => Err(FrameError::StreamZero("HEADERS")),
            frame => Ok(frame),
        }
    }

    /// Appends the frame's wire form to `out`.
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        let fin = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match self {
            Frame::Data { stream, fin: f, data } => {
                out.put_u32(stream & 0x7fff_ffff);
                out.put_u32(((fin(*f) as u32) << 24) | data.len() as u32);
                out.put_slice(data);
            }
            Frame::SynStream { stream, fin: f, block } => {
                control(out, 1, fin(*f), 10 + block.len());
                out.put_u32(*stream);
                out.put_u32(0); // associated-to stream
                out.put_u16(0); // priority 0 (highest), slot 0
                out.put_slice(block);
            }
            Frame::SynReply { stream, fin: f, block } => {
                control(out, 2, fin(*f), 4 + block.len());
                out.put_u32(*stream);
                out.put_slice(block);
            }
            Frame::RstStream { stream, status } => {
                control(out, 3, 0, 8);
                out.put_u32(*stream);
                out.put_u32(*status);
            }
            Frame::Settings { entries } => {
                control(out, 4, 0, 4 + 8 * entries.len());
                out.put_u32(entries.len() as u32);
                for (flags, id, value) in entries {
                    out.put_u32(((*flags as u32) << 24) | (id & 0x00ff_ffff));
                    out.put_u32(*value);
                }
            }
            Frame::Ping { id } => {
                control(out, 6, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway { last_good, status } => {
                control(out, 7, 0, 8);
                out.put_u32(*last_good);
                out.put_u32(*status);
            }
            Frame::Headers { stream, fin: f, block } => {
                control(out, 8, fin(*f), 4 + block.len());
                out.put_u32(*stream);
                out.put_slice(block);
            }
            Frame::WindowUpdate { stream, delta } => {
                control(out, 9, 0, 8);
                out.put_u32(*stream);
                out.put_u32(*delta);
            }
            Frame::Unknown { kind } => control(out, *kind, 0, 0),
        }
    }
}

/// The control frame head: C bit, version, type, flags, 24-bit length.
fn control(out: &mut BytesMut, kind: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32(((flags as u32) << 24) | (len as u32 & 0x00ff_ffff));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        let head: [u8; 8] = buf[..8].try_into().unwrap();
        assert_eq!(Frame::parse(head, buf.freeze().slice(8..)).unwrap(), frame);
    }

    #[test]
    fn every_frame_type_reads_back_as_written() {
        let block = Bytes::from_static(b"\x78\xf9block");
        round_trip(Frame::Data { stream: 5, fin: true, data: Bytes::from_static(b"hello") });
        round_trip(Frame::Data { stream: 7, fin: false, data: Bytes::new() });
        round_trip(Frame::SynStream { stream: 1, fin: false, block: block.clone() });
        round_trip(Frame::SynReply { stream: 3, fin: true, block: block.clone() });
        round_trip(Frame::RstStream { stream: 9, status: REFUSED_STREAM });
        round_trip(Frame::Settings { entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 65536), (1, 4, 100)] });
        round_trip(Frame::Ping { id: 1 });
        round_trip(Frame::GoAway { last_good: 11, status: 0 });
        round_trip(Frame::Headers { stream: 13, fin: true, block });
        round_trip(Frame::WindowUpdate { stream: 1, delta: 32768 });
    }

    /// Byte layouts from the SPDY/3 spec, written out by hand.
    #[test]
    fn wire_layout_follows_the_spec() {
        let mut buf = BytesMut::new();
        Frame::Data { stream: 3, fin: true, data: Bytes::from_static(b"ab") }.encode(&mut buf);
        assert_eq!(&buf[..], &[0, 0, 0, 3, 1, 0, 0, 2, b'a', b'b']);
        buf.clear();
        Frame::WindowUpdate { stream: 5, delta: 0x10000 }.encode(&mut buf);
        assert_eq!(&buf[..], &[0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 5, 0, 1, 0, 0]);
        buf.clear();
        Frame::SynReply { stream: 1, fin: false, block: Bytes::from_static(b"z") }.encode(&mut buf);
        assert_eq!(&buf[..], &[0x80, 3, 0, 2, 0, 0, 0, 5, 0, 0, 0, 1, b'z']);
        // A SYN_STREAM with priority bits and an associated stream set still parses.
        let payload = Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 0, 0xe0, 0, b'h']);
        let frame = Frame::parse([0x80, 3, 0, 1, 1, 0, 0, 11], payload).unwrap();
        assert_eq!(frame, Frame::SynStream { stream: 1, fin: true, block: Bytes::from_static(b"h") });
    }

    #[test]
    fn malformed_frames_are_refused() {
        let bad = |head: [u8; 8], payload: &'static [u8]| Frame::parse(head, Bytes::from_static(payload));
        assert!(matches!(bad([0x80, 2, 0, 6, 0, 0, 0, 4], &[0, 0, 0, 1]), Err(FrameError::Version(2))));
        assert!(matches!(bad([0x80, 3, 0, 3, 0, 0, 0, 4], &[0, 0, 0, 1]), Err(FrameError::Length { .. })));
        assert!(matches!(bad([0x80, 3, 0, 4, 0, 0, 0, 4], &[0, 0, 0, 2]), Err(FrameError::Length { .. })));
        assert!(matches!(bad([0, 0, 0, 0, 0, 0, 0, 0], &[]), Err(FrameError::StreamZero(_))));
        assert!(matches!(bad([0x80, 3, 0, 0x42, 0, 0, 0, 0], &[]), Ok(Frame::Unknown { kind: 0x42 })));
    }

    #[tokio::test]
    async fn frames_are_read_from_a_stream_and_oversize_is_refused() {
        let mut buf = BytesMut::new();
        Frame::Ping { id: 7 }.encode(&mut buf);
        Frame::Data { stream: 1, fin: false, data: Bytes::from_static(b"x") }.encode(&mut buf);
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(Frame::Ping { id: 7 }));
        assert!(matches!(read_frame(&mut r).await.unwrap(), Some(Frame::Data { stream: 1, .. })));
        assert_eq!(read_frame(&mut r).await.unwrap(), None);
        let mut cut = &buf[..6];
        assert!(matches!(read_frame(&mut cut).await, Err(FrameError::Io(_))));
        let mut huge: &[u8] = &[0, 0, 0, 1, 0, 0x20, 0, 0];
        assert!(matches!(read_frame(&mut huge).await, Err(FrameError::Length { .. })));
    }

    /// Random heads (control bit, version 3, every type) with payloads of every odd length:
    /// each is a frame or an error, never a panic.
    #[tokio::test]
    async fn odd_frames_never_panic() {
        let mut seed = 0x853c_49e6_748f_ea9bu64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 40) as usize;
            let kind = (next() % 12) as u8;
            let control = next() % 4 != 0;
            let mut wire = vec![if control { 0x80 } else { 0 }, 3, 0, kind, next() as u8, 0, 0, len as u8];
            wire.extend((0..next() % 48).map(|_| next() as u8));
            let head: [u8; 8] = wire[..8].try_into().unwrap();
            let _ = Frame::parse(head, Bytes::copy_from_slice(&wire[8..]));
            let mut r = &wire[..];
            while let Ok(Some(_)) = read_frame(&mut r).await {}
        }
    }
}
