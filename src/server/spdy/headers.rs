//! SPDY/3 name/value header blocks: their layout and their zlib compression, one zlib stream per
//! direction for the whole connection, primed with the dictionary the SPDY/3 spec defines.

use std::sync::LazyLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The words the SPDY/3 spec (section 2.6.10.1) puts in the dictionary, each preceded by its
/// length as a 32-bit big-endian integer, as a header block would carry them.
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The rest of the spec's dictionary: status codes, reason phrases, dates and common values,
/// concatenated without lengths.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 zlib dictionary (1423 bytes, Adler-32 0xe3c6a7c2).
pub(super) static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut dict = Vec::with_capacity(1423);
    for word in DICTIONARY_WORDS {
        dict.extend_from_slice(&(word.len() as u32).to_be_bytes());
        dict.extend_from_slice(word.as_bytes());
    }
    dict.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    dict
});

/// The most a decompressed header block may hold; a client-go block is a few dozen bytes.
const MAX_BLOCK: usize = 64 * 1024;

/// Why a header block could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("inflating: {0}")]
    Inflate(String),
    #[error("the decompressed block exceeds {MAX_BLOCK} bytes")]
    TooLarge,
    #[error("deflating: {0}")]
    Deflate(String),
    #[error("the block is truncated")]
    Truncated,
    #[error("a header name or value is not UTF-8")]
    NotUtf8,
}

/// Lays out a name/value block: a 32-bit count, then each name and value with a 32-bit length.
/// Names are lowercased, as SPDY/3 requires.
pub(crate) fn encode_block(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_be_bytes());
    for (name, value) in pairs {
        let name = name.to_ascii_lowercase();
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Reads a name/value block. A value holding several NUL-separated values stays one string.
pub(crate) fn parse_block(mut block: &[u8]) -> Result<Vec<(String, String)>, HeaderError> {
    let count = take_u32(&mut block)?;
    let mut pairs = Vec::new();
    for _ in 0..count {
        let name = take_string(&mut block)?;
        let value = take_string(&mut block)?;
        pairs.push((name.to_ascii_lowercase(), value));
    }
    Ok(pairs)
}

fn take_u32(block: &mut &[u8]) -> Result<u32, HeaderError> {
    let (head, rest) = block.split_first_chunk::<4>().ok_or(HeaderError::Truncated)?;
    *block = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_string(block: &mut &[u8]) -> Result<String, HeaderError> {
    let len = take_u32(block)? as usize;
    if block.len() < len {
        return Err(HeaderError::Truncated);
    }
    let (s, rest) = block.split_at(len);
    *block = rest;
    String::from_utf8(s.to_vec()).map_err(|_| HeaderError::NotUtf8)
}

/// Compresses the blocks this side sends (one zlib stream for the connection).
pub(crate) struct Deflater(Compress);

impl Deflater {
    pub(crate) fn new() -> Result<Deflater, HeaderError> {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(&DICTIONARY).map_err(|e| HeaderError::Deflate(e.to_string()))?;
        Ok(Deflater(z))
    }

    /// One block, ended with a sync flush so the peer can read it without what follows.
    pub(crate) fn deflate(&mut self, block: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let before = self.0.total_in();
            let status = self.0.compress_vec(&block[pos..], &mut out, FlushCompress::Sync);
            pos += (self.0.total_in() - before) as usize;
            status.map_err(|e| HeaderError::Deflate(e.to_string()))?;
            // Done once all input is in and the flush fit with room to spare.
            if pos == block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Decompresses the blocks the peer sends (one zlib stream for the connection).
pub(crate) struct Inflater(Decompress);

impl Inflater {
    pub(crate) fn new() -> Inflater {
        Inflater(Decompress::new(true))
    }

    /// One compressed block as it came in a frame.
    pub(crate) fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_BLOCK {
                    return Err(HeaderError::TooLarge);
                }
                out.reserve(out.len().max(256));
            }
            let (in_before, out_before) = (self.0.total_in(), out.len());
            let result = self.0.decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.0.total_in() - in_before) as usize;
            match result {
                Ok(Status::StreamEnd) => {
                    return Err(HeaderError::Inflate("the peer ended its header stream".into()));
                }
                Ok(_) if pos == input.len() && out.len() < out.capacity() => return Ok(out),
                Ok(_) if self.0.total_in() == in_before && out.len() == out_before => {
                    return Err(HeaderError::Inflate("no progress: the block is cut short".into()));
                }
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(_) => {
                        self.0
                            .set_dictionary(&DICTIONARY)
                            .map_err(|e| HeaderError::Inflate(e.to_string()))?;
                    }
                    None => return Err(HeaderError::Inflate(e.to_string())),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(data: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in data {
            a = (a + byte as u32) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn the_dictionary_is_the_one_the_spec_defines() {
        assert_eq!(DICTIONARY.len(), 1423);
        // The Adler-32 that zlib writes into the stream header and that every SPDY/3 peer checks.
        assert_eq!(adler32(&DICTIONARY), 0xe3c6_a7c2);
    }

    /// Two consecutive blocks of one stream, as a client's first two SYN_STREAMs carry them.
    /// Made by Python's zlib (`compressobj(level=9, zdict=…)` + `Z_SYNC_FLUSH`), not by this
    /// module, so a wrong dictionary or a per-frame reset would show here.
    #[test]
    fn blocks_another_zlib_compressed_are_read_in_sequence() {
        let first = hex("78f9e3c6a7c202a62346703a2b294a4dcc851625aca9a08006000000ffff");
        let second = hex("c22a054ccc29f9a52500000000ffff");
        let mut inflater = Inflater::new();
        let block = inflater.inflate(&first).unwrap();
        assert_eq!(parse_block(&block).unwrap(), vec![("streamtype".to_string(), "error".to_string())]);
        let block = inflater.inflate(&second).unwrap();
        assert_eq!(parse_block(&block).unwrap(), vec![("streamtype".to_string(), "stdout".to_string())]);
    }

    #[test]
    fn what_the_deflater_writes_the_inflater_reads_back_block_by_block() {
        let (mut deflater, mut inflater) = (Deflater::new().unwrap(), Inflater::new());
        for i in 0..5 {
            let value = format!("value-{i}");
            let compressed = deflater.deflate(&encode_block(&[("Name", &value)])).unwrap();
            assert_eq!(&compressed[compressed.len() - 4..], &[0, 0, 0xff, 0xff], "sync-flushed");
            let pairs = parse_block(&inflater.inflate(&compressed).unwrap()).unwrap();
            assert_eq!(pairs, vec![("name".to_string(), value)]);
        }
    }

    #[test]
    fn the_stream_header_names_the_spec_dictionary() {
        let compressed = Deflater::new().unwrap().deflate(&encode_block(&[])).unwrap();
        // FDICT set, then DICTID: the dictionary's Adler-32.
        assert_eq!(compressed[1] & 0x20, 0x20);
        assert_eq!(&compressed[2..6], &0xe3c6_a7c2u32.to_be_bytes());
    }

    #[test]
    fn truncated_and_oversized_blocks_are_refused() {
        assert!(matches!(parse_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']), Err(HeaderError::Truncated)));
        let huge = encode_block(&[("big", &"x".repeat(MAX_BLOCK * 2))]);
        let compressed = Deflater::new().unwrap().deflate(&huge).unwrap();
        assert!(matches!(Inflater::new().inflate(&compressed), Err(HeaderError::TooLarge)));
        assert!(Inflater::new().inflate(&[0x78, 0x9c, 0xff, 0xff, 0xff]).is_err());
    }

    /// Random bytes as compressed blocks (after a valid first block, so the stream is
    /// primed with the dictionary) and as name/value blocks: errors, never a panic.
    #[test]
    fn odd_blocks_never_panic() {
        let first = Deflater::new().unwrap().deflate(&encode_block(&[("streamtype", "error")])).unwrap();
        let mut seed = 0xdead_beef_cafe_f00du64;
        for round in 0..5_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let junk: Vec<u8> =
                seed.to_be_bytes().iter().cycle().take((seed % 64) as usize).copied().collect();
            let mut inflater = Inflater::new();
            if round % 2 == 0 {
                inflater.inflate(&first).unwrap();
            }
            let _ = inflater.inflate(&junk);
            let _ = parse_block(&junk);
            let mut counted = vec![0, 0, 0, 2];
            counted.extend_from_slice(&junk);
            let _ = parse_block(&counted);
        }
    }
}
