//! What goes into a pod's state machine ([`Input`]) and what comes out of it ([`Effect`]).
//! The machine never performs I/O: every API call, file write and runtime call is an
//! effect, run by the executor outside the step, whose outcome comes back as an input.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::base::vecmap::VecMap;
use crate::events::Kind;
use crate::pods::probes::ProbeEvent;
use crate::runtime::Exit;
use crate::volumes::OverLimit;

/// A container slot: init containers and main containers are numbered separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    Init(usize),
    Main(usize),
}

impl Slot {
    /// This slot's container in `pod`'s spec.
    pub fn container(self, pod: &Pod) -> Option<&k8s_openapi::api::core::v1::Container> {
        let spec = pod.spec.as_ref()?;
        match self {
            Slot::Init(i) => spec.init_containers.as_ref()?.get(i),
            Slot::Main(i) => spec.containers.get(i),
        }
    }
}

/// Why preparing a pod (volumes, images) failed, and how the machine reacts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// An image could not be pulled: back off and retry (`ErrImagePull`, `ImagePullBackOff`).
    Pull { image: String, reason: &'static str, message: String },
    /// Something the pod references cannot be read yet (a ConfigMap, a Secret, a token the
    /// API server does not grant yet): retry soon, on a back-off that starts small.
    Config { message: String },
    /// The pod can never run here (e.g. an unsupported volume type): fail the pod.
    Fatal { reason: &'static str, message: String },
}

/// What preparing produced, as far as the machine needs to know.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prepared {
    /// `imageID` (digest reference) of each image, by the reference the pod names.
    pub image_ids: VecMap<String, String>,
    /// (image, seconds) of each pull, for the Pulled events.
    pub pulls: Vec<(String, f64)>,
    /// How soon the earliest service account token is due to be requested again.
    pub token_due: Option<Duration>,
    /// An emptyDir has a `sizeLimit`: its usage is checked periodically.
    pub watch_disk: bool,
    /// A volume's files come from the API or the pod: they are rewritten periodically.
    pub refreshes: bool,
}

/// One thing that happened to the pod.
#[derive(Debug)]
pub enum Input {
    /// The pod changed in the API (or was seen again after a re-list).
    Pod(Arc<Pod>),
    /// The pod is gone from the API, or its manifest was removed.
    Gone,
    /// The mirror pod of this static pod was deleted in the API.
    MirrorGone,
    /// The agent is shutting down: stop the runs, keep the files.
    Shutdown,
    /// A timer the machine asked for (see `Machine::next_deadline`) is due.
    Timer,
    /// The preparation in flight finished.
    Prepared(Result<Prepared, Failure>),
    /// A run asked for by [`Effect::Start`] is running.
    Started { slot: Slot, run: u32 },
    /// A run asked for by [`Effect::Start`] could not start (`reason` as the kubelet's).
    StartFailed { slot: Slot, run: u32, reason: &'static str, message: String },
    /// A run ended.
    Exited { slot: Slot, run: u32, exit: Exit },
    /// The status handed to [`Effect::Publish`] was reported (`false`: it failed).
    Published { ok: bool },
    /// The volumes were rewritten ([`Effect::RefreshVolumes`]).
    Refreshed { token_due: Option<Duration> },
    /// The pod was removed from the API ([`Effect::Delete`]).
    Deleted,
    /// The emptyDir usage was measured ([`Effect::CheckDisk`]): the one over its limit.
    DiskChecked { over: Option<OverLimit> },
    /// A probe of run `run` of `slot` changed its verdict.
    Probe { slot: Slot, run: u32, event: ProbeEvent },
    /// The node evicts the pod for lack of memory or disk; the message says why.
    Evict(String),
}

/// One thing the executor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Materialize the volumes and pull the images; answers [`Input::Prepared`].
    Prepare,
    /// Drop the preparation in flight (the pod is being deleted).
    CancelPrepare,
    /// Start run `run` of the container in `slot`; answers [`Input::Started`] or
    /// [`Input::StartFailed`], and later [`Input::Exited`].
    Start { slot: Slot, run: u32 },
    /// Stop the current run of `slot` (its exit still arrives as [`Input::Exited`]).
    Stop { slot: Slot },
    /// Stop it with no grace period, as the kubelet's hard eviction kills.
    Kill { slot: Slot },
    /// Publish an Event about the pod (`slot`: about one of its containers).
    Event { slot: Option<Slot>, kind: Kind, reason: &'static str, message: String },
    /// Report this status: the status file, and the API (or the mirror pod); answers
    /// [`Input::Published`].
    Publish { status: Value },
    /// Rewrite the configMap, secret, downwardAPI and projected volumes; answers
    /// [`Input::Refreshed`].
    RefreshVolumes,
    /// Remove the pod from the API (grace 0; a static pod's mirror); answers [`Input::Deleted`].
    Delete,
    /// Remove the pod's files and its entry in the node's directory; the worker ends.
    Forget,
    /// Measure the emptyDir volumes against their `sizeLimit`; answers [`Input::DiskChecked`].
    CheckDisk,
}
