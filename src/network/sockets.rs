//! One pod's [`SocketRules`]: ports, egress ranges and NetworkPolicy together, asked by the
//! provider on every bind, listen, connection, datagram and accepted peer of every run of
//! the pod. Verdicts read in-memory tables only (the port table, the current policy view)
//! and never wait; what they refuse is counted, logged and told in a rate-limited Event.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use krustlet_wasi_provider::{SocketRules, Transport, Verdict, canonical};
use tracing::{debug, warn};

use super::egress::Refusal;
use super::notices::{Admit, Notice};
use super::policy::{Decision, Peer, Subject, View};
use super::ports::{Binding, Holder, Protocol, Refused, Taken};
use super::{Core, PodEntry};
use crate::config::MIN_UNDECLARED_PORT;
use crate::events::Kind;
use crate::metrics::{Direction, RefusedBy};

/// The rules of one pod's sockets.
pub struct PodSockets {
    core: Arc<Core>,
    pod: Arc<PodEntry>,
}

impl std::fmt::Debug for PodSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodSockets").field("pod", &self.pod.id).finish_non_exhaustive()
    }
}

/// A refusal (or a claim) to count and tell.
struct Told {
    /// What the limiter knows it by: one Event per key per interval.
    key: String,
    kind: Kind,
    reason: &'static str,
    message: String,
}

impl PodEntry {
    fn subject(&self) -> Subject<'_> {
        Subject { uid: &self.id.uid, namespace: &self.id.namespace, labels: &self.labels, ports: &self.ports }
    }
}

/// `(ns/a, ns/b)`: the policies that selected a pod and allowed nothing.
fn policies(names: &[String]) -> String {
    format!("({})", names.join(", "))
}

impl PodSockets {
    pub(super) fn new(core: Arc<Core>, pod: Arc<PodEntry>) -> Self {
        PodSockets { core, pod }
    }

    /// The pod's name lookups (one budget for all its runs), made by `make` the first time.
    pub fn lookups(
        &self,
        make: impl FnOnce() -> krustlet_wasi_provider::Lookups,
    ) -> krustlet_wasi_provider::Lookups {
        self.pod.lookups.get_or_init(make).clone()
    }

    /// Logs `told` and sends it as an Event unless the pod was told of it recently.
    fn tell(&self, told: Told) {
        let admit =
            self.pod.limiter.lock().unwrap_or_else(|p| p.into_inner()).admit(&told.key, Instant::now());
        let (reason, message) = match admit {
            Admit::Quiet => {
                debug!(pod = %self.pod.id, reason = told.reason, "{}", told.message);
                return;
            }
            Admit::Report => (told.reason, told.message),
            Admit::Overflow => (
                "NetworkEventsLimited",
                format!(
                    "{} (and more refusals or claims than Events are sent for: further ones are counted in \
                     krustlet_network_refused_total only, for a minute)",
                    told.message
                ),
            ),
        };
        match told.kind {
            Kind::Normal => tracing::info!(pod = %self.pod.id, reason, "{message}"),
            Kind::Warning => warn!(pod = %self.pod.id, reason, "{message}"),
        }
        self.core.notices.send(Notice { pod: self.pod.id.clone(), kind: told.kind, reason, message });
    }

    /// Counts and tells a refusal; returns `verdict`.
    fn refuse(&self, direction: Direction, by: RefusedBy, verdict: Verdict, told: Told) -> Verdict {
        self.core.metrics.network_refused(direction, by);
        self.tell(told);
        verdict
    }

    fn refuse_port(&self, by: RefusedBy, verdict: Verdict, key: String, message: String) -> Verdict {
        let told = Told { key, kind: Kind::Warning, reason: "PortRefused", message };
        self.refuse(Direction::Ingress, by, verdict, told)
    }

    /// This pod's labels as the policy view has them (else as it started).
    fn labels<'a>(&'a self, view: &'a View) -> &'a super::policy::selector::Labels {
        view.labels_of(&self.pod.id.uid).unwrap_or(&self.pod.labels)
    }

    /// Egress to a port of this node that another pod of the node holds: that pod's ingress
    /// policies are asked with this pod as the peer (both share the node's IP, so the peer
    /// address alone could not tell them apart).
    fn same_node(
        &self,
        view: &View,
        remote: SocketAddr,
        protocol: Protocol,
    ) -> Option<(String, Vec<String>)> {
        let b = Binding { protocol, port: remote.port(), addr: remote.ip() };
        let Some(Holder::Pod(target)) = self.core.ports.holder(b) else { return None };
        if target.uid == self.pod.id.uid {
            return None;
        }
        let entry = self.core.pods.lock().unwrap_or_else(|p| p.into_inner()).get(&target.uid).cloned()?;
        let peer =
            Peer::Pod { ip: remote.ip(), namespace: &self.pod.id.namespace, labels: self.labels(view) };
        match view.ingress(&entry.subject(), peer, Some((protocol, remote.port()))) {
            Decision::Denied(by) => Some((target.to_string(), by)),
            Decision::Open | Decision::Allowed => None,
        }
    }
}

impl SocketRules for PodSockets {
    fn bind(&self, transport: Transport, local: SocketAddr) -> Verdict {
        let local = canonical(local);
        let protocol = Protocol::from(transport);
        if local.port() == 0 {
            // An ephemeral port, as every client socket gets.
            return Verdict::Allow;
        }
        let b = Binding { protocol, port: local.port(), addr: local.ip() };
        if local.ip() != self.core.listen {
            let listen = self.core.listen;
            // A wildcard bind on a node listening on one address: say which to bind.
            let hint = match local.ip().is_unspecified() && listen.is_ipv4() == local.is_ipv4() {
                true => format!("; bind {} instead", SocketAddr::new(listen, local.port())),
                false => String::new(),
            };
            let message = format!(
                "bind to {} ({}) refused: pods listen on {listen} (--pod-listen-address){hint}",
                local,
                protocol.name(),
            );
            return self.refuse_port(RefusedBy::Port, Verdict::Deny, format!("bind {b}"), message);
        }
        match self.core.ports.take(&self.pod.id, b, MIN_UNDECLARED_PORT) {
            Ok(Taken::Held) => Verdict::Allow,
            Ok(Taken::Claimed) => {
                let message = format!(
                    "port {b} claimed for this pod until it stops: a guest bound it without declaring it; declare \
                     it as a containerPort (with hostPort) so that the scheduler and other pods know it is taken"
                );
                self.tell(Told {
                    key: format!("claim {b}"),
                    kind: Kind::Normal,
                    reason: "PortClaimed",
                    message,
                });
                Verdict::Allow
            }
            Err(Refused::Held(holder)) => {
                let by =
                    if matches!(holder, Holder::Agent(_)) { RefusedBy::AgentPort } else { RefusedBy::Port };
                let message = format!("bind refused: port {b} is held by {holder}");
                self.refuse_port(by, Verdict::InUse, format!("bind {b}"), message)
            }
            Err(Refused::Privileged { min }) => {
                let message = format!(
                    "bind refused: port {b} is below {min} and not declared; declare it as a containerPort to use it"
                );
                self.refuse_port(RefusedBy::Port, Verdict::Deny, format!("bind {b}"), message)
            }
        }
    }

    fn listen(&self, local: SocketAddr) -> Verdict {
        if local.port() == 0 {
            let message = format!(
                "listen on {local} refused: a pod listens on ports it declares or claims, not on an ephemeral one"
            );
            return self.refuse_port(RefusedBy::Port, Verdict::Deny, "listen 0".into(), message);
        }
        self.bind(Transport::Tcp, local)
    }

    fn connect(&self, transport: Transport, remote: SocketAddr) -> Verdict {
        let remote = canonical(remote);
        let protocol = Protocol::from(transport);
        let dest = || format!("{remote} ({})", protocol.name());
        let egress = |by, message: String| {
            let told = Told {
                key: format!("egress {}", dest()),
                kind: Kind::Warning,
                reason: "EgressDenied",
                message,
            };
            self.refuse(Direction::Egress, by, Verdict::Deny, told)
        };
        match self.core.egress.check(remote) {
            Some(Refusal::Range(range)) => {
                let message = format!(
                    "connection to {} refused: {range} is denied to pods on this node (--pod-egress-deny)",
                    dest()
                );
                return egress(RefusedBy::DeniedRange, message);
            }
            Some(Refusal::AgentPort(what)) => {
                let message = format!(
                    "connection to {} refused: it is the node agent's {what}, which pods may not reach",
                    dest()
                );
                return egress(RefusedBy::AgentPort, message);
            }
            None => {}
        }
        let view = self.core.policies.snapshot();
        let subject = Subject { labels: self.labels(&view), ..self.pod.subject() };
        if let Decision::Denied(by) = view.egress(&subject, remote.ip(), (protocol, remote.port())) {
            let message = format!(
                "connection to {} refused by NetworkPolicy: no egress rule of the policies selecting this pod {} \
                 allows it",
                dest(),
                policies(&by)
            );
            return egress(RefusedBy::Policy, message);
        }
        if self.core.egress.is_node_address(remote.ip())
            && let Some((target, by)) = self.same_node(&view, remote, protocol)
        {
            let message = format!(
                "connection to {} refused by NetworkPolicy: it is pod {target}'s port, and no ingress rule of the \
                 policies selecting that pod {} allows this pod",
                dest(),
                policies(&by)
            );
            let told = Told {
                key: format!("egress {}", dest()),
                kind: Kind::Warning,
                reason: "EgressDenied",
                message,
            };
            return self.refuse(Direction::Ingress, RefusedBy::Policy, Verdict::Deny, told);
        }
        if transport == Transport::Udp {
            self.pod.replies.lock().unwrap_or_else(|p| p.into_inner()).sent(remote, Instant::now());
        }
        Verdict::Allow
    }

    fn accept(&self, transport: Transport, local_port: Option<u16>, from: SocketAddr) -> Verdict {
        let from = canonical(from);
        let peer: IpAddr = from.ip();
        // Traffic from the node itself (probes, port-forward, and the node's other pods,
        // whose own connects asked this pod's policies) is always allowed, as Kubernetes
        // lets a node reach its pods whatever their policies say.
        if self.core.egress.is_node_address(peer) {
            return Verdict::Allow;
        }
        let protocol = Protocol::from(transport);
        let view = self.core.policies.snapshot();
        let subject = Subject { labels: self.labels(&view), ..self.pod.subject() };
        let Decision::Denied(by) =
            view.ingress(&subject, Peer::Address(peer), local_port.map(|p| (protocol, p)))
        else {
            return Verdict::Allow;
        };
        let replies =
            || self.pod.replies.lock().unwrap_or_else(|p| p.into_inner()).is_reply(from, Instant::now());
        if transport == Transport::Udp && replies() {
            return Verdict::Allow;
        }
        let port = local_port.map_or("a port".to_string(), |p| format!("port {p}/{}", protocol.name()));
        let message = format!(
            "connection from {peer} to {port} refused by NetworkPolicy: no ingress rule of the policies selecting \
             this pod {} allows it",
            policies(&by)
        );
        let told = Told {
            key: format!("ingress {peer} {port}"),
            kind: Kind::Warning,
            reason: "IngressDenied",
            message,
        };
        self.refuse(Direction::Ingress, RefusedBy::Policy, Verdict::Deny, told)
    }
}
