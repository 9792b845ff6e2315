//! The CRI log line: `<RFC3339Nano> <stdout|stderr> <F|P>[:more tags] <text>`, one per
//! record, newline-terminated; `P` marks a partial record continued by the next one.

use k8s_openapi::jiff::Timestamp;

use super::Stream;

/// One parsed line (without its newline). Borrowed, so reading costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record<'a> {
    /// The timestamp as written; parse it with [`parse_time`] only when needed.
    pub time: &'a [u8],
    pub stream: Stream,
    /// `F`: the record ends a line. `P`: the line continues in the next record.
    pub full: bool,
    pub text: &'a [u8],
}

/// Parses one line; `None` for a line that is not a CRI record (skipped, as the kubelet does).
pub(super) fn parse(line: &[u8]) -> Option<Record<'_>> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = fields.next()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tags = fields.next()?;
    let first_tag = tags.split(|b| *b == b':').next().unwrap_or_default();
    let text = fields.next().unwrap_or_default();
    Some(Record { time, stream, full: first_tag != b"P", text })
}

/// Whether a line is a record that ends a line of output (an `F` record).
pub(super) fn ends_line(line: &[u8]) -> bool {
    parse(line).is_some_and(|r| r.full)
}

/// Appends one record, newline included, to `out`. `time` is already formatted.
pub(super) fn encode(out: &mut Vec<u8>, time: &str, stream: Stream, full: bool, text: &[u8]) {
    out.reserve(time.len() + text.len() + 12);
    out.extend_from_slice(time.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.tag().as_bytes());
    out.extend_from_slice(if full { b" F " } else { b" P " });
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// `now` as written into records: UTC with all nine fractional digits, so records sort as text.
pub(super) fn format_record_time(now: Timestamp) -> String {
    format!("{now:.9}")
}

/// A record's timestamp (any RFC 3339 offset is accepted).
pub(super) fn parse_time(time: &[u8]) -> Option<Timestamp> {
    std::str::from_utf8(time).ok()?.parse().ok()
}

/// A timestamp as the kubelet prints it for `--timestamps` (Go's `RFC3339Nano`: UTC,
/// trailing zeros of the fraction dropped).
pub(super) fn format_output_time(time: Timestamp) -> String {
    time.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_foreign_tags_parse() {
        let mut line = Vec::new();
        encode(&mut line, "2024-01-02T03:04:05.000000007Z", Stream::Stderr, false, b"a b  c");
        assert_eq!(line, b"2024-01-02T03:04:05.000000007Z stderr P a b  c\n");
        let r = parse(&line[..line.len() - 1]).unwrap();
        assert_eq!((r.stream, r.full, r.text), (Stream::Stderr, false, &b"a b  c"[..]));
        let r = parse(b"2024-01-02T03:04:05Z stdout F:x ").unwrap();
        assert_eq!((r.stream, r.full, r.text), (Stream::Stdout, true, &b""[..]));
        assert_eq!(parse(b"2024-01-02T03:04:05Z stdin F x"), None);
        assert_eq!(parse(b"garbage"), None);
    }

    #[test]
    fn times_are_written_fixed_and_printed_as_go_rfc3339nano() {
        let t: Timestamp = "2024-01-02T03:04:05.120000000Z".parse().unwrap();
        assert_eq!(format_record_time(t), "2024-01-02T03:04:05.120000000Z");
        assert_eq!(format_output_time(t), "2024-01-02T03:04:05.12Z");
        let whole: Timestamp = "2024-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(format_output_time(whole), "2024-01-02T03:04:05Z");
        assert_eq!(parse_time(b"2024-01-02T05:04:05.12+02:00"), Some(t));
    }
}
