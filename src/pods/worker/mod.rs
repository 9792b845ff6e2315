//! One worker per pod: a task that owns the pod's [`Machine`] (pure state and transitions)
//! and an [`Executor`] (the effects), and feeds the machine every input: the pod's
//! messages from the controller, the outcomes of effects, and its timers.

mod effects;
mod executor;
mod journal;
mod machine;
mod prepare;
mod start;
mod trace;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, debug, info_span};

use super::Handles;
use crate::runtime::ContainerRuntime;
use effects::Input;
use executor::Executor;
pub use machine::{Machine, PodState, Settings};
pub use trace::{Phase, StartTrace};

/// What the controller tells a worker.
#[derive(Debug)]
pub enum Msg {
    /// The pod changed (or was seen again after a re-list).
    Update(Arc<Pod>),
    /// This static pod's mirror pod was deleted in the API.
    MirrorGone,
    /// The pod is gone from the API, or its manifest was removed.
    Gone,
    /// The node is short of memory or disk and evicts this pod (the kubelet's message).
    Evict(String),
}

/// Runs the worker of `pod` until the pod is gone (deleted by us or by someone else) or
/// the controller goes away (the agent is shutting down: the pod's files stay). `trace`
/// times the pod's start, from its watch event on.
pub async fn run<R: ContainerRuntime>(
    handles: Arc<Handles<R>>,
    pod: Arc<Pod>,
    mut rx: futures::channel::mpsc::UnboundedReceiver<Msg>,
    trace: StartTrace,
) {
    let span = info_span!("pod", ns = pod.namespace().unwrap_or_default(), pod = pod.name_any());
    async move {
        let settings = Settings {
            runtime_name: handles.runtime.name(),
            node_ip: handles.host.node_ip.to_string(),
            sync_frequency: handles.host.sync_frequency,
            agent_oom_killed: handles.host.resources.agent_oom_killed.is_some(),
        };
        let start_time = (pod.status.as_ref().and_then(|s| s.start_time.as_ref()))
            .map(|t| crate::base::time::rfc3339(&t.0))
            .unwrap_or_else(crate::base::time::now_rfc3339);
        let mut machine = Machine::new(pod.clone(), settings, start_time);
        let mut executor = Executor::new(handles, pod.clone(), trace);
        executor.pod_changed(pod);
        let crashed = executor.unfinished_step();
        executor.run(machine.begin(Instant::now(), crashed));
        let mut listening = true;
        while !machine.is_finished() {
            let deadline =
                machine.next_deadline().unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let input = tokio::select! {
                msg = rx.next(), if listening => match msg {
                    Some(Msg::Update(pod)) => {
                        executor.pod_changed(pod.clone());
                        Input::Pod(pod)
                    }
                    Some(Msg::MirrorGone) => Input::MirrorGone,
                    Some(Msg::Gone) => Input::Gone,
                    Some(Msg::Evict(message)) => Input::Evict(message),
                    // The controller forgets a pod it said is gone: let the delete finish.
                    None if *machine.state() == PodState::Deleting => {
                        listening = false;
                        continue;
                    }
                    None => Input::Shutdown,
                },
                input = executor.next() => input,
                _ = sleep_until(deadline) => Input::Timer,
            };
            let effects = machine.step(input, Instant::now());
            executor.run(effects);
        }
        debug!("worker finished");
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests;
