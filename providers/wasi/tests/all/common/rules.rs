//! [`TestRules`]: socket rules for tests that allow everything — the node's own loopback
//! included — but what a test switches off, and count what they refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use krustlet_wasi_provider::{NetworkPolicy, SocketRules, Transport, Verdict};

#[derive(Default)]
pub struct TestRules {
    /// Binds to these ports are answered `InUse`.
    pub in_use: Vec<u16>,
    /// Peers refused on accept (connections and datagrams).
    pub refused_peers: Vec<IpAddr>,
    /// Every accept refused.
    pub refuse_every_peer: bool,
    /// Every connection and datagram out refused.
    pub refuse_egress: bool,
    /// How many times each question was answered with a refusal.
    pub refused: AtomicUsize,
}

impl TestRules {
    /// Allows everything.
    pub fn open() -> Self {
        TestRules::default()
    }

    /// TCP, UDP and name lookups on, judged by these rules.
    pub fn policy(self) -> NetworkPolicy {
        NetworkPolicy::with_rules(Arc::new(self))
    }

    fn answer(&self, refuse: bool, refusal: Verdict) -> Verdict {
        if refuse {
            self.refused.fetch_add(1, Ordering::SeqCst);
            refusal
        } else {
            Verdict::Allow
        }
    }
}

impl SocketRules for TestRules {
    fn bind(&self, _: Transport, local: SocketAddr) -> Verdict {
        self.answer(self.in_use.contains(&local.port()), Verdict::InUse)
    }

    fn listen(&self, _: SocketAddr) -> Verdict {
        Verdict::Allow
    }

    fn connect(&self, _: Transport, _: SocketAddr) -> Verdict {
        self.answer(self.refuse_egress, Verdict::Deny)
    }

    fn accept(&self, _: Transport, _: Option<u16>, peer: SocketAddr) -> Verdict {
        self.answer(self.refuse_every_peer || self.refused_peers.contains(&peer.ip()), Verdict::Deny)
    }
}
