//! Runs the machine's effects: preparation, container starts and stops, status reports,
//! events, deletes. Each runs as a future the executor owns (so dropping the worker drops
//! them, and its guests stop); [`Executor::next`] yields their outcomes as inputs.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::effects::{Effect, Failure, Input, Slot};
use super::prepare::{self, PreparedPod, Preparer};
use super::start::{self, StartError, StartRequest, Started};
use super::trace::{Phase, StartTrace};
use crate::base::vecmap::VecMap;
use crate::events::Kind;
use crate::pods::Handles;
use crate::pods::probes::ProbeHandle;
use crate::runtime::{ContainerRuntime, Exit, Group, PulledImage, Stopper};
use crate::volumes::{PodVolumes, VolumeLayout};

/// An effect's outcome, before it becomes an input.
enum Done<I> {
    Prepared(Result<(PreparedPod<I>, super::effects::Prepared), Failure>),
    Started {
        slot: Slot,
        run: u32,
        result: Result<Started, StartError>,
    },
    Exited {
        slot: Slot,
        run: u32,
        exit: Exit,
    },
    Input(Input),
    /// A status report ended (events held for it go out now).
    Reported(Input),
    Refreshed(PodVolumes),
}

type Task<I> = BoxFuture<'static, Done<I>>;

mod end;
mod reporting;
mod runs;
mod upkeep;

pub struct Executor<R: ContainerRuntime> {
    /// The node's handles its effects use.
    handles: Arc<Handles<R>>,
    pod: Arc<Pod>,
    /// When the worker first saw the pod (start latency is measured from here).
    seen: Instant,
    /// Where the pod's start spends its time (`trace.rs`).
    trace: StartTrace,
    /// A preparation was asked for before.
    prepared_before: bool,
    /// Events held while the pod starts, until its first status report (`reporting.rs`).
    held_events: reporting::HeldEvents,
    /// Once prepared: the images by reference, and where the volumes are.
    images: VecMap<String, PulledImage<R::Image>>,
    layout: Option<Arc<VolumeLayout>>,
    /// The volumes, for refreshes (away while one is in flight).
    volumes: Option<PodVolumes>,
    preparing: Option<Task<R::Image>>,
    tasks: FuturesUnordered<Task<R::Image>>,
    /// The stopper of each slot's current run.
    stoppers: VecMap<Slot, Stopper>,
    /// Slots told to stop while their start was in flight.
    stop_pending: HashSet<Slot>,
    /// The pod is being evicted: stops have no grace period.
    killing: bool,
    /// The pod's resource group and its containers', made at their first start.
    pod_group: Option<Group>,
    groups: VecMap<Slot, Option<Group>>,
    /// The conditions of the status last reported, whose transition times are kept (JSON
    /// text, see `report::transition_times`).
    last_conditions: Box<str>,
    /// Which step that could crash the agent is under way (see `journal.rs`).
    journal: super::journal::Journal,
    /// The probes of each slot's current run (dropping one stops them).
    probes: VecMap<Slot, ProbeHandle>,
    /// Their verdicts, as inputs: made at the first probe (a channel's first block of
    /// messages is several KB, and most pods have no probes).
    probe_tx: Option<tokio::sync::mpsc::UnboundedSender<Input>>,
    probe_rx: Option<tokio::sync::mpsc::UnboundedReceiver<Input>>,
}

impl<R: ContainerRuntime> Executor<R> {
    pub fn new(handles: Arc<Handles<R>>, pod: Arc<Pod>, trace: StartTrace) -> Self {
        let last_conditions = pod.status.as_ref().and_then(|s| serde_json::to_value(s).ok());
        let last_conditions =
            crate::pods::status::report::transition_times(&last_conditions.unwrap_or_default());
        let uid = pod.uid().unwrap_or_default();
        let journal = super::journal::Journal::new(&handles.host.pod_dir(&uid));
        Executor {
            handles,
            pod,
            seen: Instant::now(),
            trace,
            held_events: Default::default(),
            prepared_before: false,
            images: VecMap::new(),
            layout: None,
            volumes: None,
            preparing: None,
            tasks: FuturesUnordered::new(),
            stoppers: VecMap::new(),
            stop_pending: HashSet::new(),
            killing: false,
            pod_group: None,
            groups: VecMap::new(),
            last_conditions,
            journal,
            probes: VecMap::new(),
            probe_tx: None,
            probe_rx: None,
        }
    }

    /// The step an earlier agent began for this pod and never finished, if any.
    pub fn unfinished_step(&self) -> Option<super::journal::Entry> {
        self.journal.unfinished()
    }

    /// The pod as the API shows it now.
    pub fn pod_changed(&mut self, pod: Arc<Pod>) {
        self.handles.directory.upsert_pod(pod.clone(), self.log_dir());
        self.pod = pod;
    }

    /// The next outcome of an effect. Cancel-safe; pending while nothing is in flight.
    pub async fn next(&mut self) -> Input {
        loop {
            let done = tokio::select! {
                done = poll_opt(&mut self.preparing), if self.preparing.is_some() => {
                    self.preparing = None;
                    done
                }
                Some(done) = self.tasks.next(), if !self.tasks.is_empty() => done,
                Some(input) = recv_opt(&mut self.probe_rx) => Done::Input(input),
                else => std::future::pending().await,
            };
            if let Some(input) = self.outcome(done) {
                return input;
            }
        }
    }

    /// Turns an outcome into the machine's input, keeping what the executor needs.
    fn outcome(&mut self, done: Done<R::Image>) -> Option<Input> {
        if matches!(done, Done::Prepared(_) | Done::Started { .. }) {
            self.journal.end();
        }
        if matches!(done, Done::Prepared(Err(_)) | Done::Started { result: Err(_), .. }) {
            // A failure's events say why the pod does not start: not held.
            self.release_events();
        }
        match done {
            Done::Prepared(Ok((prepared, info))) => {
                for (_, secs) in &info.pulls {
                    self.handles.metrics.image_pull.observe(std::time::Duration::from_secs_f64(*secs));
                }
                self.layout = Some(prepared.volumes.layout());
                self.volumes = Some(prepared.volumes);
                self.images = prepared.images;
                Some(Input::Prepared(Ok(info)))
            }
            Done::Prepared(Err(Failure::Config { message })) => {
                let message = start::config_message(self.handles.api.client.is_some(), message);
                Some(Input::Prepared(Err(Failure::Config { message })))
            }
            Done::Prepared(Err(e)) => Some(Input::Prepared(Err(e))),
            Done::Started { slot, run, result: Ok(started) } => Some(self.started(slot, run, started)),
            Done::Started { slot, run, result: Err((reason, message)) } => {
                Some(Input::StartFailed { slot, run, reason, message })
            }
            Done::Exited { slot, run, exit } => {
                self.stoppers.remove(&slot);
                self.probes.remove(&slot);
                if let Some(key) = self.server_key(slot) {
                    self.handles.metrics.stopped_serving(&key);
                }
                self.handles.metrics.exited(exit.reason);
                self.handles.directory.container_stopped(&self.pod, &self.container(slot)?.name);
                Some(Input::Exited { slot, run, exit })
            }
            Done::Refreshed(volumes) => {
                let token_due = prepare::token_due(&volumes);
                self.volumes = Some(volumes);
                Some(Input::Refreshed { token_due })
            }
            Done::Input(input) => Some(input),
            Done::Reported(input) => {
                self.release_events();
                Some(input)
            }
        }
    }

    fn started(&mut self, slot: Slot, run: u32, started: Started) -> Input {
        let Started { mut running, entry, notes, counters } = started;
        if run == 0 {
            for (kind, reason, message) in notes {
                self.event(Some(slot), kind, reason, message);
            }
            // What preparing and starting the pod used is free now (see `crate::trim`).
            self.handles.wakes.memory_trim.notify_one();
        }
        if let (Some(counters), Some(key)) = (counters, self.server_key(slot)) {
            self.handles.metrics.serving(key, counters);
        }
        let stop = running.stopper();
        if self.stop_pending.remove(&slot) {
            stop(self.grace());
        }
        self.stoppers.insert(slot, stop);
        if matches!(slot, Slot::Main(_)) {
            self.probe(slot, run, &entry);
        }
        if let Some(c) = self.container(slot) {
            self.handles.directory.set_container(&self.pod, &c.name, entry);
        }
        let metrics = &self.handles.metrics;
        metrics.container_starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if run == 0 && matches!(slot, Slot::Main(_)) {
            metrics.start_latency.observe(self.seen.elapsed());
            self.trace.started();
        }
        self.tasks.push(Box::pin(async move {
            let exit = running.wait().await;
            Done::Exited { slot, run, exit }
        }));
        Input::Started { slot, run }
    }

    /// Performs the effects of one step, in order.
    pub fn run(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            self.perform(effect);
        }
    }

    fn perform(&mut self, effect: Effect) {
        match effect {
            Effect::Prepare => self.prepare(),
            Effect::CancelPrepare => self.preparing = None,
            Effect::Start { slot, run } => self.start(slot, run),
            Effect::Stop { slot } => match self.stoppers.get(&slot) {
                Some(stop) => stop(self.grace()),
                None => {
                    self.stop_pending.insert(slot);
                }
            },
            Effect::Kill { slot } => {
                // Every stop from now on (a start in flight included) is a kill.
                self.killing = true;
                self.perform(Effect::Stop { slot });
            }
            Effect::Event { slot, kind, reason, message } => self.event(slot, kind, reason, message),
            Effect::Publish { status } => self.publish(status),
            Effect::RefreshVolumes => self.refresh(),
            Effect::Delete => {
                self.release_events();
                self.delete()
            }
            Effect::Forget => {
                self.release_events();
                self.forget()
            }
            Effect::CheckDisk => self.check_disk(),
        }
    }

    fn prepare(&mut self) {
        let h = &self.handles;
        let with = Preparer {
            runtime: h.runtime.clone(),
            objects: h.objects.clone(),
            host: h.host.clone(),
            network: h.network.clone(),
        };
        let (pod, pod_dir) = (self.pod.clone(), self.pod_dir());
        self.hold_events();
        let (recorder, pod_ref, held) =
            (self.handles.api.recorder.clone(), self.object_ref(None), self.held_events.clone());
        let on_pull = move |image: &str| {
            let message = format!("Pulling image {image:?}");
            reporting::send_event(&held, &recorder, pod_ref.clone(), Kind::Normal, "Pulling", message);
        };
        self.journal.begin("prepare");
        // After a failed preparation, images wait for the volumes (see `prepare.rs`).
        let at_once = !std::mem::replace(&mut self.prepared_before, true);
        let span = tracing::debug_span!("prepare");
        let trace = self.trace.clone();
        self.preparing = Some(Box::pin(
            async move {
                trace.mark(Phase::Queue);
                Done::Prepared(prepare::prepare(with, pod, pod_dir, (on_pull, at_once), &trace).await)
            }
            .instrument(span),
        ));
    }

    fn start(&mut self, slot: Slot, run: u32) {
        let failed = |message: &str| Done::Started {
            slot,
            run,
            result: Err(("CreateContainerError", message.into())),
        };
        let group = self.container_group(slot);
        let request = (|| {
            let container = self.container(slot)?.clone();
            let image = self.images.get(container.image.as_deref().unwrap_or(""))?.clone();
            let layout = self.layout.clone()?;
            let (h, pod, log_dir) = (&self.handles, self.pod.clone(), self.log_dir());
            Some(StartRequest {
                runtime: h.runtime.clone(),
                objects: h.objects.clone(),
                host: h.host.clone(),
                logs: h.logs.clone(),
                metrics: h.metrics.clone(),
                network: h.network.clone(),
                pod,
                container,
                image,
                layout,
                log_dir,
                number: run,
                group,
                trace: self.trace.clone(),
            })
        })();
        if let Some(c) = self.container(slot) {
            self.journal.begin(&format!("start {}", c.name));
        }
        let span = tracing::debug_span!("start", ?slot, run);
        self.tasks.push(match request {
            Some(request) => Box::pin(
                async move {
                    let trace = request.trace.clone();
                    let result = trace.time(Phase::Create, start::start(request)).await;
                    Done::Started { slot, run, result }
                }
                .instrument(span),
            ),
            None => Box::pin(std::future::ready(failed("the container's image or volumes are not prepared"))),
        });
    }

    /// Where the probes report their verdicts (the channel made at the first use).
    fn probe_sender(&mut self) -> tokio::sync::mpsc::UnboundedSender<Input> {
        match &self.probe_tx {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (self.probe_tx, self.probe_rx) = (Some(tx.clone()), Some(rx));
                tx
            }
        }
    }

    fn container(&self, slot: Slot) -> Option<&Container> {
        slot.container(&self.pod)
    }

    /// `<data-dir>/pods/<uid>`: the pod's volumes and status file.
    fn pod_dir(&self) -> std::path::PathBuf {
        self.handles.host.pod_dir(&self.pod.uid().unwrap_or_default())
    }

    pub fn log_dir(&self) -> std::path::PathBuf {
        let m = &self.pod.metadata;
        let (ns, name, uid) =
            (m.namespace.as_deref().unwrap_or("default"), m.name.as_deref(), m.uid.as_deref());
        crate::logs::pod_dir(
            &self.handles.host.data_dir,
            ns,
            name.unwrap_or_default(),
            uid.unwrap_or_default(),
        )
    }
}

/// Receives from an optional channel; pending forever when there is none.
async fn recv_opt<T>(rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Polls an optional future; pending forever when there is none.
async fn poll_opt<T>(f: &mut Option<BoxFuture<'static, T>>) -> T {
    match f.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}
