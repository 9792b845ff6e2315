//! Pod status: the worker's view of its containers -> the pod status the kubelet would
//! write (phase by the kubelet's rules, conditions, per-container states; pure, here), and
//! where that status goes in the API (`report.rs`: a status patch, or a mirror pod for a
//! static pod).

pub mod report;

use serde_json::{Value, json};

/// A container's current (or last) state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: String,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        message: Option<String>,
        started_at: String,
        finished_at: String,
    },
}

impl State {
    pub fn waiting(reason: &str, message: Option<String>) -> State {
        State::Waiting { reason: reason.to_string(), message }
    }
}

/// Everything the status shows about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    /// Digest reference once pulled (`repo@sha256:...`), empty before.
    pub image_id: String,
    /// `wasmtime://<pod-uid>/<container>/<run>` once started, empty before.
    pub container_id: String,
    pub state: State,
    /// The previous run's termination, if any.
    pub last: Option<State>,
    pub restart_count: u32,
    /// The startup probe passed (or there is none), for the current run.
    pub probe_started: bool,
    /// The readiness probe passes (or there is none) and startup is done.
    pub probe_ready: bool,
}

impl ContainerView {
    pub fn new(name: &str, image: &str) -> Self {
        ContainerView {
            name: name.into(),
            image: image.into(),
            image_id: String::new(),
            container_id: String::new(),
            state: State::waiting("ContainerCreating", None),
            last: None,
            restart_count: 0,
            probe_started: true,
            probe_ready: true,
        }
    }

    fn running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }

    /// Running, and its probes say it may take traffic.
    fn ready(&self) -> bool {
        self.running() && self.probe_ready
    }
}

/// The pod as the worker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub init: Vec<ContainerView>,
    pub main: Vec<ContainerView>,
    /// `Always`, `OnFailure` or `Never`.
    pub restart_policy: String,
    pub init_done: bool,
    /// A pod-level failure (reason, message), e.g. an unsupported volume type.
    pub failure: Option<(String, String)>,
    pub start_time: String,
    pub node_ip: String,
}

/// The phase by the kubelet's rules (`getPhase`).
pub fn phase(view: &PodView) -> &'static str {
    if view.failure.is_some() {
        return "Failed";
    }
    if !view.init_done {
        let init_failed = view
            .init
            .iter()
            .any(|c| matches!(&c.state, State::Terminated { exit_code, .. } if *exit_code != 0));
        return if init_failed && view.restart_policy == "Never" { "Failed" } else { "Pending" };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &view.main {
        match (&c.state, &c.last) {
            (State::Running { .. }, _) => running += 1,
            (State::Terminated { exit_code, .. }, _) => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            (State::Waiting { .. }, Some(State::Terminated { exit_code, .. })) => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            (State::Waiting { .. }, _) => waiting += 1,
        }
    }
    match () {
        _ if waiting > 0 => "Pending",
        _ if running > 0 => "Running",
        _ if stopped > 0 && view.restart_policy == "Always" => "Running",
        _ if stopped > 0 && succeeded == stopped => "Succeeded",
        _ if stopped > 0 && view.restart_policy == "Never" => "Failed",
        _ if stopped > 0 => "Running",
        _ => "Pending",
    }
}

fn state_json(state: &State, container_id: &str) -> Value {
    match state {
        State::Waiting { reason, message } => json!({"waiting": {"reason": reason, "message": message}}),
        State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        State::Terminated { exit_code, reason, message, started_at, finished_at } => json!({"terminated": {
            "exitCode": exit_code, "reason": reason, "message": message,
            "startedAt": started_at, "finishedAt": finished_at, "containerID": container_id,
        }}),
    }
}

fn container_json(c: &ContainerView) -> Value {
    let mut v = json!({
        "name": c.name,
        "image": c.image,
        "imageID": c.image_id,
        "state": state_json(&c.state, &c.container_id),
        "lastState": c.last.as_ref().map(|s| state_json(s, "")).unwrap_or_else(|| json!({})),
        "ready": c.ready(),
        "started": c.running() && c.probe_started,
        "restartCount": c.restart_count,
    });
    if !c.container_id.is_empty() {
        v["containerID"] = json!(c.container_id);
    }
    v
}

fn condition(type_: &str, ok: bool, reason: &str, message: String, now: &str) -> Value {
    let mut c = json!({"type": type_, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
    if !ok {
        c["reason"] = json!(reason);
        c["message"] = json!(message);
    }
    c
}

/// The `status` object to merge-patch onto the pod. `now` (RFC 3339) stamps conditions.
pub fn status_json(view: &PodView, now: &str) -> Value {
    let phase = phase(view);
    let names = |cs: &[&ContainerView]| cs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(" ");
    let incomplete: Vec<&ContainerView> = if view.init_done { vec![] } else { view.init.iter().collect() };
    let unready: Vec<&ContainerView> = view.main.iter().filter(|c| !c.ready()).collect();
    let finished = phase == "Succeeded" || phase == "Failed";
    let ready_reason = if finished { "PodCompleted" } else { "ContainersNotReady" };
    let unready_msg = format!("containers with unready status: [{}]", names(&unready));
    let mut status = json!({
        "phase": phase,
        "hostIP": view.node_ip,
        "podIP": view.node_ip,
        "podIPs": [{"ip": view.node_ip}],
        "startTime": view.start_time,
        "conditions": [
            condition("Initialized", incomplete.is_empty(), "ContainersNotInitialized",
                format!("containers with incomplete status: [{}]", names(&incomplete)), now),
            condition("Ready", unready.is_empty() && !finished, ready_reason, unready_msg.clone(), now),
            condition("ContainersReady", unready.is_empty() && !finished, ready_reason, unready_msg, now),
            condition("PodScheduled", true, "", String::new(), now),
        ],
        "containerStatuses": view.main.iter().map(container_json).collect::<Vec<_>>(),
        "initContainerStatuses": view.init.iter().map(container_json).collect::<Vec<_>>(),
    });
    if let Some((reason, message)) = &view.failure {
        status["reason"] = json!(reason);
        status["message"] = json!(message);
    }
    status
}

#[cfg(test)]
mod tests;
