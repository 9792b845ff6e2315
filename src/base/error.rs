//! Errors as users read them: one line with every cause, and none of the values a
//! decoding error would quote from a secret.

use std::error::Error;

/// A boxed error kept as the `source` of another.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// The error and all its causes as one line, `outer: cause: root cause`. A cause whose
/// text its parent already shows is not repeated.
pub fn chain(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}

/// A JSON decoding error without the values it quotes. serde's type and value errors show
/// the offending value (`invalid type: string "user:hunter2", expected a map`), and what a
/// Secret or a manifest's env holds must not reach logs or Events: quoted and backticked
/// values are dropped (`invalid type: string, expected a map at line 1 column 29`).
pub fn json_without_values(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if e.classify() != serde_json::error::Category::Data {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // Debug-quoted: `\"` inside does not end it.
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                trim_space(&mut out);
            }
            '`' => {
                chars.by_ref().find(|c| *c == '`');
                trim_space(&mut out);
            }
            c => out.push(c),
        }
    }
    out
}

fn trim_space(out: &mut String) {
    while out.ends_with(' ') {
        out.pop();
    }
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("failed to link artifact sha256:ab")]
    struct Link(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("reading failed: {0}")]
    struct Shown(#[source] std::io::Error);

    #[test]
    fn every_cause_once() {
        let root = || std::io::Error::other("component imports instance wasi:http/types@0.2.6");
        assert_eq!(
            super::chain(&Link(root())),
            "failed to link artifact sha256:ab: component imports instance wasi:http/types@0.2.6"
        );
        let shown = Shown(root());
        assert_eq!(super::chain(&shown), shown.to_string(), "a cause already in the text is not repeated");
    }

    #[test]
    fn json_errors_lose_the_values_they_quote() {
        let err =
            |json: &str| serde_json::from_str::<std::collections::BTreeMap<String, u32>>(json).unwrap_err();
        assert_eq!(
            super::json_without_values(&err(r#"{"a": "hunter2 \"quoted\" too"}"#)),
            "invalid type: string, expected u32 at line 1 column 30"
        );
        assert_eq!(
            super::json_without_values(&err(r#"{"a": -5}"#)),
            "invalid value: integer, expected u32 at line 1 column 8"
        );
        let syntax = err("{");
        assert_eq!(super::json_without_values(&syntax), syntax.to_string(), "nothing quoted");
    }
}
