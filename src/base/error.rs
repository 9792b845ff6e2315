//! Errors as users read them: one line with every cause.

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
}
