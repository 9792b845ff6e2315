//! Events about pods' network use (a port claimed, a connection refused), sent from socket
//! checks without waiting and published by one task through the node's recorder; and the
//! per-pod limiter that keeps a guest retrying in a loop, or scanning, from flooding the
//! API server: one Event per destination per [`NETWORK_EVENT_INTERVAL`], at most
//! [`NETWORK_EVENT_DESTINATIONS`] destinations at a time, then one Event saying the rest
//! are only counted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use tokio::sync::{broadcast, mpsc};

use super::ports::PodId;
use crate::config::{NETWORK_EVENT_DESTINATIONS, NETWORK_EVENT_INTERVAL};
use crate::events::{Kind, Recorder};

/// One Event to publish about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub pod: PodId,
    pub kind: Kind,
    pub reason: &'static str,
    pub message: String,
}

/// Where socket checks send notices; never waits (a full queue drops the notice).
#[derive(Debug, Clone)]
pub struct Notices(mpsc::Sender<Notice>);

impl Notices {
    /// A sender and the receiving end [`publish`] reads.
    pub fn channel(capacity: usize) -> (Notices, mpsc::Receiver<Notice>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Notices(tx), rx)
    }

    pub fn send(&self, notice: Notice) {
        if let Err(e) = self.0.try_send(notice) {
            tracing::debug!(error = %e, "a network Event was dropped: the queue is full");
        }
    }
}

/// Publishes notices until shutdown (or until every sender is gone).
pub async fn publish(
    mut rx: mpsc::Receiver<Notice>,
    recorder: Recorder,
    mut shutdown: broadcast::Receiver<()>,
) {
    loop {
        let notice = tokio::select! {
            _ = shutdown.recv() => return,
            n = rx.recv() => match n {
                Some(n) => n,
                None => return,
            },
        };
        let object = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(notice.pod.name.clone()),
            namespace: Some(notice.pod.namespace.clone()),
            uid: Some(notice.pod.uid.clone()),
            ..ObjectReference::default()
        };
        recorder.publish(&object, notice.kind, notice.reason, &notice.message).await;
    }
}

/// What the limiter says about one more notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Publish it.
    Report,
    /// Too many destinations: publish one notice saying the rest are only counted.
    Overflow,
    /// Reported recently, or past the cap: count it only.
    Quiet,
}

/// One pod's memory of what it was told about recently.
#[derive(Debug)]
pub struct Limiter {
    interval: Duration,
    cap: usize,
    seen: HashMap<String, Instant>,
    overflowed: Option<Instant>,
}

impl Default for Limiter {
    /// [`NETWORK_EVENT_INTERVAL`], [`NETWORK_EVENT_DESTINATIONS`].
    fn default() -> Self {
        Limiter::new(NETWORK_EVENT_INTERVAL, NETWORK_EVENT_DESTINATIONS)
    }
}

impl Limiter {
    pub fn new(interval: Duration, cap: usize) -> Self {
        Limiter { interval, cap, seen: HashMap::new(), overflowed: None }
    }

    /// Whether a notice about `key` (a destination, peer or port) is published `now`.
    pub fn admit(&mut self, key: &str, now: Instant) -> Admit {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < self.interval;
        if let Some(at) = self.seen.get_mut(key) {
            if fresh(at) {
                return Admit::Quiet;
            }
            *at = now;
            return Admit::Report;
        }
        if self.seen.len() >= self.cap {
            self.seen.retain(|_, at| fresh(at));
        }
        if self.seen.len() >= self.cap {
            if self.overflowed.as_ref().is_some_and(fresh) {
                return Admit::Quiet;
            }
            self.overflowed = Some(now);
            return Admit::Overflow;
        }
        self.seen.insert(key.to_string(), now);
        Admit::Report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_notice_per_destination_per_interval_and_a_cap_on_destinations() {
        let mut l = Limiter::new(Duration::from_secs(60), 3);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(l.admit("a", at(0)), Admit::Report);
        assert_eq!(l.admit("a", at(1)), Admit::Quiet);
        assert_eq!(l.admit("a", at(59)), Admit::Quiet);
        assert_eq!(l.admit("a", at(60)), Admit::Report, "again after the interval");
        assert_eq!(l.admit("b", at(61)), Admit::Report);
        assert_eq!(l.admit("c", at(62)), Admit::Report);
        assert_eq!(l.admit("d", at(63)), Admit::Overflow, "past the cap: one notice says so");
        assert_eq!(l.admit("e", at(64)), Admit::Quiet);
        assert_eq!(l.admit("f", at(100)), Admit::Quiet);
        assert_eq!(l.admit("b", at(100)), Admit::Quiet, "known destinations keep their interval");
        // Once the first ones expire there is room again.
        assert_eq!(l.admit("g", at(121)), Admit::Report);
        assert_eq!(l.admit("h", at(123)), Admit::Report);
        assert_eq!(l.admit("i", at(124)), Admit::Report, "c expired too");
        assert_eq!(
            l.admit("j", at(125)),
            Admit::Overflow,
            "full again, a minute after the last overflow notice"
        );
    }
}
