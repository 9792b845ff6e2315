//! UDP peers a pod sent to recently. Their datagrams back are replies, which a pod's
//! ingress policy does not judge, as a CNI plugin's connection tracking lets replies to
//! allowed egress in (TCP needs nothing of the kind: only connections a guest accepts are
//! ingress). Bounded per pod.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{UDP_REPLY_PEERS, UDP_REPLY_WINDOW};

/// The UDP peers one pod sent to, and when it last did.
#[derive(Debug)]
pub struct Replies {
    window: Duration,
    cap: usize,
    peers: HashMap<SocketAddr, Instant>,
}

impl Default for Replies {
    /// [`UDP_REPLY_WINDOW`], [`UDP_REPLY_PEERS`].
    fn default() -> Self {
        Replies::new(UDP_REPLY_WINDOW, UDP_REPLY_PEERS)
    }
}

impl Replies {
    pub fn new(window: Duration, cap: usize) -> Self {
        Replies { window, cap, peers: HashMap::new() }
    }

    /// The pod sent a datagram to `peer` at `now`.
    pub fn sent(&mut self, peer: SocketAddr, now: Instant) {
        if let Some(at) = self.peers.get_mut(&peer) {
            *at = now;
            return;
        }
        if self.peers.len() >= self.cap {
            let window = self.window;
            self.peers.retain(|_, at| now.saturating_duration_since(*at) < window);
        }
        if self.peers.len() >= self.cap
            && let Some(oldest) = self.peers.iter().min_by_key(|(_, at)| **at).map(|(p, _)| *p)
        {
            self.peers.remove(&oldest);
        }
        self.peers.insert(peer, now);
    }

    /// Whether a datagram from `peer` at `now` answers one the pod sent.
    pub fn is_reply(&self, peer: SocketAddr, now: Instant) -> bool {
        self.peers.get(&peer).is_some_and(|at| now.saturating_duration_since(*at) < self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_sent_to_answers_for_a_while_and_the_memory_is_bounded() {
        let mut r = Replies::new(Duration::from_secs(120), 2);
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let (dns, ntp, other) = (
            "10.0.0.10:53".parse().unwrap(),
            "10.0.0.11:123".parse().unwrap(),
            "10.0.0.12:9".parse().unwrap(),
        );
        assert!(!r.is_reply(dns, at(0)));
        r.sent(dns, at(0));
        assert!(r.is_reply(dns, at(119)));
        assert!(!r.is_reply(dns, at(120)), "past the window");
        assert!(!r.is_reply("10.0.0.10:54".parse().unwrap(), at(1)), "another port of the peer");
        r.sent(dns, at(100));
        r.sent(ntp, at(101));
        r.sent(other, at(102));
        assert!(!r.is_reply(dns, at(103)), "the oldest is forgotten past the cap");
        assert!(r.is_reply(ntp, at(103)) && r.is_reply(other, at(103)));
    }
}
