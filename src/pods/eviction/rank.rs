//! Which pod goes first under pressure, and what its status says, as the kubelet's
//! eviction manager ranks and writes them: pods whose use of the starved resource exceeds
//! their requests first (a BestEffort pod requests nothing, so any use exceeds), then by
//! priority (lowest first), then by how far their use exceeds their requests (most first).
//! Pure.

use crate::base::quantity::format_bytes;

/// A resource the node runs short of, as the kubelet names it in its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Starved {
    Memory,
    EphemeralStorage,
    Inodes,
}

impl Starved {
    pub fn name(self) -> &'static str {
        match self {
            Starved::Memory => "memory",
            Starved::EphemeralStorage => "ephemeral-storage",
            Starved::Inodes => "inodes",
        }
    }

    /// An amount of this resource as a quantity: bytes in binary units, inodes as a count.
    pub fn quantity(self, n: u64) -> String {
        match self {
            Starved::Inodes => n.to_string(),
            _ => format_bytes(n),
        }
    }
}

/// A pod that may be evicted, with its use and requests of the starved resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub uid: String,
    pub priority: i32,
    pub usage: u64,
    pub request: u64,
    /// Each container's (name, usage, request) of the resource.
    pub containers: Vec<(String, u64, u64)>,
}

impl Candidate {
    fn exceeds(&self) -> bool {
        self.usage > self.request
    }
}

/// The pod to evict first, if any.
pub fn first(candidates: &[Candidate]) -> Option<&Candidate> {
    candidates.iter().min_by(|a, b| {
        b.exceeds()
            .cmp(&a.exceeds())
            .then(a.priority.cmp(&b.priority))
            .then(
                (i128::from(b.usage) - i128::from(b.request))
                    .cmp(&(i128::from(a.usage) - i128::from(a.request))),
            )
            .then(a.uid.cmp(&b.uid))
    })
}

/// The evicted pod's status message, as the kubelet writes it: the resource, the
/// threshold and what was available, then each container using more than it requests.
pub fn message(starved: Starved, threshold: u64, available: u64, pod: &Candidate) -> String {
    let q = |n| starved.quantity(n);
    let mut out = format!(
        "The node was low on resource: {}. Threshold quantity: {}, available: {}. ",
        starved.name(),
        q(threshold),
        q(available)
    );
    for (name, usage, request) in pod.containers.iter().filter(|(_, u, r)| u > r) {
        out.push_str(&format!(
            "Container {name} was using {}, request is {}, has larger consumption of {}. ",
            q(*usage),
            q(*request),
            starved.name()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, priority: i32, usage: u64, request: u64) -> Candidate {
        Candidate {
            uid: uid.into(),
            priority,
            usage,
            request,
            containers: vec![("c".into(), usage, request)],
        }
    }

    const MI: u64 = 1 << 20;

    #[test]
    fn pods_over_their_requests_go_first_then_low_priority_then_the_most_over() {
        let guaranteed = pod("guaranteed", 0, 380 * MI, 400 * MI);
        let best_effort = pod("best-effort", 0, 10 * MI, 0);
        assert_eq!(first(&[guaranteed.clone(), best_effort.clone()]).unwrap().uid, "best-effort");
        // Both over: the lower priority first, however little it uses.
        let important = pod("important", 1000, 900 * MI, 0);
        assert_eq!(first(&[important.clone(), best_effort.clone()]).unwrap().uid, "best-effort");
        // Same priority: the one furthest over its requests.
        let big = pod("big", 0, 500 * MI, 100 * MI);
        assert_eq!(first(&[best_effort.clone(), big.clone()]).unwrap().uid, "big");
        // None over: the lowest priority, then the largest use.
        let low = pod("low", -5, 10 * MI, 400 * MI);
        assert_eq!(first(&[guaranteed, low]).unwrap().uid, "low");
        assert_eq!(first(&[]), None);
    }

    #[test]
    fn the_message_is_the_kubelets() {
        let mut p = pod("p", 0, 120 * MI, 0);
        p.containers.push(("quiet".into(), MI, 64 * MI));
        assert_eq!(
            message(Starved::Memory, 100 * MI, 80 * MI, &p),
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi. \
             Container c was using 120Mi, request is 0, has larger consumption of memory. "
        );
        let disk = message(Starved::EphemeralStorage, 1 << 30, 900 * MI, &pod("d", 0, 0, 0));
        assert_eq!(
            disk,
            "The node was low on resource: ephemeral-storage. Threshold quantity: 1Gi, available: 900Mi. "
        );
    }
}
