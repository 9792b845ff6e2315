//! What `kubectl logs` asks for ([`LogOptions`]) and what it gets ([`LogStream`]); the
//! [`Output`] that turns records into that output under the options, for the reader and
//! the follower alike.

use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::BoxStream;
use k8s_openapi::jiff::Timestamp;

use super::{Result, cri};

/// The `kubectl logs` options, as the kubelet's `containerLogs` handler receives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming what the run writes until it ends.
    pub follow: bool,
    /// Start with the last N full lines (across rotated files); `None`: from the start.
    pub tail_lines: Option<u64>,
    /// Only records stamped at or after this time (`sinceSeconds`/`sinceTime`).
    pub since: Option<SystemTime>,
    /// Prefix each line with its record's RFC3339Nano time and a space.
    pub timestamps: bool,
    /// End the output after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// The output of [`stream`](super::stream): chunks of log text, ready for `axum::body::Body::from_stream`.
pub type LogStream = BoxStream<'static, Result<Bytes>>;

/// Turns records into output under the options: `since`, `timestamps`, `limit_bytes`.
pub(super) struct Output {
    timestamps: bool,
    since: Option<Timestamp>,
    /// Bytes still allowed out (`None`: no limit).
    remaining: Option<u64>,
    /// The last record ended a line, so the next one gets a timestamp prefix.
    at_line_start: bool,
}

impl Output {
    pub(super) fn new(opts: &LogOptions) -> Output {
        // A `since` beyond what jiff represents filters nothing out or everything.
        let since = opts.since.map(|t| {
            Timestamp::try_from(t).unwrap_or(if t < SystemTime::UNIX_EPOCH {
                Timestamp::MIN
            } else {
                Timestamp::MAX
            })
        });
        Output { timestamps: opts.timestamps, since, remaining: opts.limit_bytes, at_line_start: true }
    }

    /// The byte limit is reached.
    pub(super) fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Moves the whole records at the start of `carry` into `out` as output.
    pub(super) fn records(&mut self, carry: &mut Vec<u8>, out: &mut Vec<u8>) {
        let mut start = 0;
        while !self.exhausted()
            && let Some(len) = carry[start..].iter().position(|b| *b == b'\n')
        {
            self.record(&carry[start..start + len], out);
            start += len + 1;
        }
        carry.drain(..start);
    }

    /// One record, as the kubelet's log writer: skip it if before `since` (or not a record),
    /// prefix a line's first record with its time, cut at the byte limit.
    fn record(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let Some(record) = cri::parse(line) else { return };
        let at_line_start = std::mem::replace(&mut self.at_line_start, record.full);
        let time = match (self.since, self.timestamps && at_line_start) {
            (None, false) => None,
            _ => match cri::parse_time(record.time) {
                Some(time) => Some(time),
                None => return,
            },
        };
        if let (Some(since), Some(time)) = (self.since, time)
            && time < since
        {
            return;
        }
        let start = out.len();
        if let Some(time) = time.filter(|_| self.timestamps && at_line_start) {
            out.extend_from_slice(cri::format_output_time(time).as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(record.text);
        if record.full {
            out.push(b'\n');
        }
        if let Some(remaining) = &mut self.remaining {
            let written = (out.len() - start) as u64;
            if written >= *remaining {
                out.truncate(start + *remaining as usize);
                *remaining = 0;
            } else {
                *remaining -= written;
            }
        }
    }
}
