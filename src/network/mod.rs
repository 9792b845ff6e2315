//! Pods' network, as the agent enforces it: every guest shares the node's network and the
//! agent's process, so the agent is each pod's network namespace. It owns node ports by
//! (protocol, port, address) (`ports.rs`), refuses egress to the node's own ranges and
//! ports (`egress.rs`), enforces NetworkPolicy (`policy/`), and gives each pod the
//! [`SocketRules`](krustlet_wasi_provider::SocketRules) that put all three in front of its
//! guests' sockets (`sockets.rs`), with Events (`notices.rs`) and `/metrics` counters for
//! what they refuse. A container's network at start (its ports and listen address, the
//! default `wasi:http` port, the HTTP limits) is chosen in `container.rs`, which also says
//! where the node dials a pod's port for port-forward. The one home of pods' networking;
//! imports no `pods`, `server` or `runtime`.

mod container;
pub(crate) mod egress;
pub(crate) mod notices;
pub mod policy;
pub(crate) mod ports;
mod replies;
mod sockets;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use tokio::sync::mpsc;

use crate::config::{DEFAULT_HTTP_PORT, NETWORK_EVENT_QUEUE, NetworkSettings};
use crate::metrics::Metrics;
pub use container::{ContainerNetwork, Guest, Note, SetupError, dial_address};
use notices::{Limiter, Notice, Notices};
use policy::selector::Labels;
use policy::{NamedPort, Policies};
use ports::{Binding, NodePort, PodId, PortError, PortTable, Protocol};
pub use sockets::PodSockets;

/// What the node's network rules are made from.
pub struct Setup {
    pub settings: NetworkSettings,
    /// `--pod-listen-address`: the one address guests listen on.
    pub listen_address: IpAddr,
    /// The node's IP and its interfaces' addresses (loopback is always the node's).
    pub node_addresses: Vec<IpAddr>,
    /// The agent's own listening ports (0: off) and what serves them.
    pub agent_ports: Vec<(u16, &'static str)>,
    pub metrics: Arc<Metrics>,
}

impl Default for Setup {
    /// The default settings, listening on `0.0.0.0`, no addresses or agent ports known,
    /// metrics of its own (for tests).
    fn default() -> Self {
        Setup {
            settings: NetworkSettings::default(),
            listen_address: crate::config::Serving::default().listen_address,
            node_addresses: Vec::new(),
            agent_ports: Vec::new(),
            metrics: Arc::default(),
        }
    }
}

/// The node's network rules and who holds what; cheap to clone.
#[derive(Clone)]
pub struct Network {
    core: Arc<Core>,
}

/// What every pod's sockets are judged by.
struct Core {
    ports: PortTable,
    listen: IpAddr,
    egress: egress::Egress,
    policies: Arc<Policies>,
    notices: Notices,
    metrics: Arc<Metrics>,
    /// The pods that have asked for their sockets' rules, by UID, until they stop.
    pods: Mutex<HashMap<String, Arc<PodEntry>>>,
}

/// What the rules know of one pod.
struct PodEntry {
    id: PodId,
    /// Its labels when it started (the policy view's are newer when it has them).
    labels: Labels,
    /// Its named container ports, for policies' named ports.
    ports: Vec<NamedPort>,
    /// What it was told about recently.
    limiter: Mutex<Limiter>,
    /// The UDP peers it sent to recently, whose datagrams back are replies.
    replies: Mutex<replies::Replies>,
    /// Its name lookups' budget on the runtime's resolver pool, shared by all its runs.
    lookups: std::sync::OnceLock<krustlet_wasi_provider::Lookups>,
}

impl Network {
    /// The node's rules, and the queue of Events they raise (for [`notices::publish`]).
    pub fn new(setup: Setup) -> (Network, mpsc::Receiver<Notice>) {
        let (notices, rx) = Notices::channel(NETWORK_EVENT_QUEUE);
        let core = Core {
            ports: PortTable::new(&setup.agent_ports),
            listen: setup.listen_address.to_canonical(),
            egress: egress::Egress::new(
                setup.settings.egress_deny,
                &setup.node_addresses,
                &setup.agent_ports,
            ),
            policies: Arc::default(),
            notices,
            metrics: setup.metrics,
            pods: Mutex::default(),
        };
        (Network { core: Arc::new(core) }, rx)
    }

    /// Where the NetworkPolicy watch publishes its views.
    pub fn policies(&self) -> Arc<Policies> {
        self.core.policies.clone()
    }

    /// Admission: reserves every port the pod declares, at `--pod-listen-address`, all or
    /// none.
    pub fn admit(&self, pod: &Pod) -> Result<(), PortError> {
        let listen = self.core.listen;
        let bindings: Vec<Binding> =
            ports::declared(pod)?.into_iter().map(|p| Binding::new(p, listen)).collect();
        self.core.ports.reserve(&PodId::of(pod), &bindings)
    }

    /// Reserves the port a `wasi:http` component with no TCP `containerPort` is served on
    /// ([`DEFAULT_HTTP_PORT`]), as soon as its image is known to be one.
    pub fn reserve_http_default(&self, pod: &Pod) -> Result<(), PortError> {
        let port = NodePort { port: DEFAULT_HTTP_PORT, protocol: Protocol::Tcp };
        self.core.ports.reserve(&PodId::of(pod), &[Binding::new(port, self.core.listen)])
    }

    /// Before any container starts: reserves the default port if a container that `serves`
    /// (its image is a `wasi:http` component) declares no TCP `containerPort`. A port
    /// another pod holds is only logged here; the container's start reports it (and retries).
    pub fn reserve_http_default_if_served(&self, pod: &Pod, serves: impl Fn(&Container) -> bool) {
        let Some(spec) = pod.spec.as_ref() else { return };
        let on_default = spec.init_containers.iter().flatten().chain(&spec.containers).any(|c| {
            let tcp = ports::container_ports(c).unwrap_or_default();
            serves(c) && !tcp.iter().any(|p| p.protocol == Protocol::Tcp)
        });
        if on_default && let Err(e) = self.reserve_http_default(pod) {
            tracing::debug!(error = %e, "the wasi:http default port is not free yet");
        }
    }

    /// The rules of the pod's sockets, for every run of it (the same rules for all).
    pub fn sockets(&self, pod: &Pod) -> Arc<PodSockets> {
        let id = PodId::of(pod);
        let entry = {
            let mut pods = self.core.pods.lock().unwrap_or_else(|p| p.into_inner());
            pods.entry(id.uid.clone())
                .or_insert_with(|| {
                    Arc::new(PodEntry {
                        labels: pod.labels().clone(),
                        ports: policy::named_ports(pod.spec.as_ref()),
                        limiter: Mutex::default(),
                        replies: Mutex::default(),
                        lookups: std::sync::OnceLock::new(),
                        id,
                    })
                })
                .clone()
        };
        Arc::new(PodSockets::new(self.core.clone(), entry))
    }

    /// The pod stopped (finished or gone): every port it holds is free, and it is forgotten.
    pub fn pod_stopped(&self, uid: &str) {
        self.core.ports.release(uid);
        self.core.pods.lock().unwrap_or_else(|p| p.into_inner()).remove(uid);
    }
}

#[cfg(test)]
mod sockets_tests;
