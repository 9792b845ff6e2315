//! The worker's actions: start a container run, handle its exit under the restartPolicy
//! (with crash-loop back-off), publish status on change, and remove a deleted pod.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::stream::FuturesUnordered;
use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use tracing::info;

use super::Shared;
use super::directory::{ContainerEntry, ExecFn};
use super::runtime::{ContainerRun, ContainerRuntime, Exit, MountSpec};
use super::status::{ContainerView, PodView, State};
use super::worker::{BACKOFF_RESET_AFTER, Phase, Run, Slot, Track, Worker, backoff};
use super::{env, quantity};
use crate::events::Kind;
use crate::logs::{self, LogFile, Stream};
use crate::metrics::Counted;

/// RFC 3339 (seconds) of now, the format of `metav1.Time`.
pub fn now_rfc3339() -> String {
    crate::node::rfc3339(&k8s_openapi::jiff::Timestamp::now())
}

impl<R: ContainerRuntime> Worker<R> {
    pub(super) fn new(shared: Arc<Shared<R>>, pod: Arc<Pod>) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let views = |cs: &[Container]| -> Vec<ContainerView> {
            cs.iter().map(|c| ContainerView::new(&c.name, c.image.as_deref().unwrap_or(""))).collect()
        };
        let init = views(spec.init_containers.as_deref().unwrap_or_default());
        let main = views(&spec.containers);
        let start_time = (pod.status.as_ref().and_then(|s| s.start_time.as_ref()))
            .map(|t| crate::node::rfc3339(&t.0))
            .unwrap_or_else(now_rfc3339);
        Worker {
            init: init.iter().map(|_| Track::default()).collect(),
            main: main.iter().map(|_| Track::default()).collect(),
            view: PodView {
                init_done: init.is_empty(),
                init,
                main,
                restart_policy: spec.restart_policy.unwrap_or_else(|| "Always".into()),
                failure: None,
                start_time,
                node_ip: shared.node_ip.to_string(),
            },
            shared,
            pod,
            phase: Phase::Preparing,
            prepared: None,
            pull_attempts: 0,
            tasks: FuturesUnordered::new(),
            preparing: None,
            published: None,
            publish_retry_at: None,
            mirror_again_at: None,
            refresh_at: None,
            seen: Instant::now(),
            frozen: false,
            exit: false,
        }
    }

    /// After preparing: the first init container, or all main containers.
    pub(super) async fn begin_containers(&mut self) {
        match (0..self.init.len()).find(|i| !self.init[*i].finished) {
            Some(i) if !self.view.init_done => {
                self.phase = Phase::Init { index: i };
                for c in &mut self.view.main {
                    c.state = State::waiting("PodInitializing", None);
                }
                self.start(Slot::Init(i)).await;
            }
            _ => self.begin_main().await,
        }
    }

    async fn begin_main(&mut self) {
        self.view.init_done = true;
        self.phase = Phase::Running;
        for i in 0..self.main.len() {
            if !self.main[i].finished {
                self.start(Slot::Main(i)).await;
            }
        }
        self.check_done();
    }

    fn container_spec(&self, slot: Slot) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        match slot {
            Slot::Init(i) => spec.init_containers.as_ref()?.get(i).cloned(),
            Slot::Main(i) => spec.containers.get(i).cloned(),
        }
    }

    fn slot_mut(&mut self, slot: Slot) -> (&mut ContainerView, &mut Track) {
        match slot {
            Slot::Init(i) => (&mut self.view.init[i], &mut self.init[i]),
            Slot::Main(i) => (&mut self.view.main[i], &mut self.main[i]),
        }
    }

    /// A missing ConfigMap or Secret, said so; standalone, also why it cannot be there.
    pub(super) fn config_message(&self, message: String) -> String {
        match self.shared.client {
            Some(_) => message,
            None => format!(
                "{message} (this node runs standalone: without an API server, static pods cannot use ConfigMaps, Secrets or service account tokens)"
            ),
        }
    }

    /// A container cannot be created now: show why and try again after a back-off.
    fn cannot_start(&mut self, slot: Slot, reason: &str, message: String) {
        self.event(Some(slot), Kind::Warning, "Failed", format!("Error: {message}"));
        let (view, track) = self.slot_mut(slot);
        view.state = State::waiting(reason, Some(message));
        track.start_at = Some(Instant::now() + backoff(track.backoff_step));
        track.backoff_step += 1;
    }

    /// Starts one run of the container in `slot`.
    pub(super) async fn start(&mut self, slot: Slot) {
        self.slot_mut(slot).1.start_at = None;
        let Some(container) = self.container_spec(slot) else { return };
        let Some(prepared_pod) = self.prepared.as_ref() else { return };
        let Some(prepared) = prepared_pod.images.get(container.image.as_deref().unwrap_or("")).cloned()
        else {
            return;
        };
        let ctx = self.shared.context(&self.pod);
        let env = match env::resolve_env(&self.shared.source(), &ctx, &container).await {
            Ok(env) => env,
            Err(e) => {
                let message = self.config_message(e.to_string());
                return self.cannot_start(slot, "CreateContainerConfigError", message);
            }
        };
        let mounts = match prepared_pod.volumes.mounts(&container) {
            Ok(m) => {
                m.into_iter().map(|m| MountSpec { host: m.host, guest: m.guest, read_only: m.read_only })
            }
            Err(e) => return self.cannot_start(slot, "CreateContainerError", e.to_string()),
        };
        let argv = env::argv(&container, &prepared.entrypoint, &prepared.cmd, &prepared.module_path, &env);
        let pending = self.slot_mut(slot).1.restart_pending;
        let number = self.container_view(slot).restart_count + u32::from(pending);
        let log_path = logs::container_log(&self.log_dir(), &container.name, number);
        let log = match LogFile::create(&self.shared.logs, &log_path, self.shared.log_limits) {
            Ok(l) => l,
            Err(e) => return self.cannot_start(slot, "CreateContainerError", e.to_string()),
        };
        let memory_limit = (container.resources.as_ref().and_then(|r| r.limits.as_ref()))
            .and_then(|l| l.get("memory"))
            .and_then(|q| quantity::bytes(&q.0));
        let mounts: Vec<MountSpec> = mounts.collect();
        let entry = ContainerEntry {
            run: number,
            running: true,
            exec: None,
            env: env.clone(),
            mounts: mounts.clone(),
            memory_limit,
        };
        let run = ContainerRun {
            argv,
            env,
            mounts,
            stdin: None,
            stdout: Box::new(Counted {
                inner: log.writer(Stream::Stdout),
                metrics: self.shared.metrics.clone(),
            }),
            stderr: Box::new(Counted {
                inner: log.writer(Stream::Stderr),
                metrics: self.shared.metrics.clone(),
            }),
            memory_limit,
        };
        let mut running = match self.shared.runtime.start(&prepared, run) {
            Ok(r) => r,
            Err(message) => return self.cannot_start(slot, "CreateContainerError", message),
        };
        let (runtime, image) = (self.shared.runtime.clone(), prepared.clone());
        let exec: ExecFn = Arc::new(move |run| runtime.start(&image, run));
        self.shared.directory.set_container(
            &self.pod,
            &container.name,
            ContainerEntry { exec: Some(exec), ..entry },
        );
        let uid = self.uid();
        let (view, track) = self.slot_mut(slot);
        view.state = State::Running { started_at: now_rfc3339() };
        view.restart_count = number;
        track.restart_pending = false;
        view.container_id = format!("wasmtime://{uid}/{}/{number}", container.name);
        view.image_id = prepared.image_id.clone();
        track.run = Some(Run { stop: running.stopper(), started: Instant::now(), number });
        let metrics = &self.shared.metrics;
        metrics.container_starts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if number == 0 && matches!(slot, Slot::Main(_)) {
            metrics.start_latency.observe(self.seen.elapsed());
        }
        self.tasks.push(Box::pin(async move {
            let exit = running.wait().await;
            super::worker::Event::Exited { slot, run: number, exit }
        }));
        self.event(Some(slot), Kind::Normal, "Created", format!("Created container {}", container.name));
        self.event(Some(slot), Kind::Normal, "Started", format!("Started container {}", container.name));
    }

    /// A run ended: record it, then restart, move on, or finish, as the policy says.
    pub(super) async fn exited(&mut self, slot: Slot, run: u32, exit: Exit) {
        let (view, track) = self.slot_mut(slot);
        if track.run.as_ref().map(|r| r.number) != Some(run) {
            return; // a stale exit of a run we already replaced
        }
        let ran = track.run.take().map(|r| r.started.elapsed()).unwrap_or_default();
        let name = view.name.clone();
        self.shared.directory.container_stopped(&self.pod, &name);
        let (view, _) = self.slot_mut(slot);
        let started_at = match &view.state {
            State::Running { started_at } => started_at.clone(),
            _ => now_rfc3339(),
        };
        let term = State::Terminated {
            exit_code: exit.code,
            reason: exit.reason.to_string(),
            message: exit.message.clone(),
            started_at,
            finished_at: now_rfc3339(),
        };
        info!(container = %view.name, code = exit.code, reason = exit.reason, "container exited");
        self.shared.metrics.exited(exit.reason);
        if self.phase == Phase::Terminating {
            self.slot_mut(slot).0.state = term;
            return;
        }
        let policy = self.view.restart_policy.as_str();
        let restart = match policy {
            "Never" => false,
            "OnFailure" => exit.code != 0,
            _ => !matches!(slot, Slot::Init(_)) || exit.code != 0,
        };
        match (slot, restart) {
            (Slot::Init(i), false) if exit.code == 0 => {
                self.view.init[i].state = term;
                self.init[i].finished = true;
                match (i + 1..self.init.len()).find(|j| !self.init[*j].finished) {
                    Some(next) => {
                        self.phase = Phase::Init { index: next };
                        self.start(Slot::Init(next)).await;
                    }
                    None => self.begin_main().await,
                }
            }
            (Slot::Init(i), false) => {
                self.view.init[i].state = term;
                self.phase = Phase::Done;
            }
            (Slot::Main(i), false) => {
                self.view.main[i].state = term;
                self.main[i].finished = true;
                self.check_done();
            }
            (_, true) => self.schedule_restart(slot, term, ran).await,
        }
    }

    /// Crash-loop back-off: the first restart is immediate, then 10 s doubling to 5 min;
    /// a run of 10 min resets it.
    async fn schedule_restart(&mut self, slot: Slot, term: State, ran: Duration) {
        let (pod, ns, uid) = (self.name(), self.namespace(), self.uid());
        let (view, track) = self.slot_mut(slot);
        if ran >= BACKOFF_RESET_AFTER {
            track.backoff_step = 0;
        }
        view.last = Some(term);
        track.restart_pending = true;
        let step = track.backoff_step;
        track.backoff_step += 1;
        if step == 0 {
            return self.start(slot).await;
        }
        let delay = backoff(step - 1);
        let message = format!(
            "back-off {}s restarting failed container={} pod={pod}_{ns}({uid})",
            delay.as_secs(),
            view.name
        );
        view.state = State::waiting("CrashLoopBackOff", Some(message));
        track.start_at = Some(Instant::now() + delay);
        self.event(Some(slot), Kind::Warning, "BackOff", "Back-off restarting failed container".into());
    }

    /// When to rewrite the volumes next: after `--sync-frequency`, spread by the pod's UID
    /// (up to a tenth more) so a thousand pods do not refresh in the same second; sooner if
    /// a service account token falls due.
    pub(super) fn schedule_refresh(&mut self) {
        let Some(prepared) = &self.prepared else { return };
        let period = self.shared.sync_frequency;
        let spread =
            self.uid().bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 1000;
        let mut at = Instant::now() + period + period / 10 * spread / 1000;
        if let Some(due) = prepared.volumes.token_refresh_at() {
            let wait = due.duration_since(std::time::SystemTime::now()).unwrap_or_default();
            at = at.min(Instant::now() + wait);
        }
        self.refresh_at = Some(at);
    }

    /// Rewrites the configMap, secret, downwardAPI and projected volumes from the API and
    /// the latest pod, so running guests see changes, as on the kubelet. A failure keeps
    /// the old files.
    pub(super) async fn refresh_volumes(&mut self) {
        let (shared, pod) = (self.shared.clone(), self.pod.clone());
        if let Some(prepared) = self.prepared.as_mut()
            && let Err(e) = prepared.volumes.refresh(&shared.refresh_source(), &shared.context(&pod)).await
        {
            tracing::warn!(error = %e, "refreshing the pod's volumes failed; keeping the old files");
        }
        self.schedule_refresh();
    }

    /// All main containers finished for good: nothing will run again.
    fn check_done(&mut self) {
        if self.phase == Phase::Running && self.main.iter().all(|t| t.finished && t.run.is_none()) {
            self.phase = Phase::Done;
        }
    }

    /// Publishes an event about the pod (or one of its containers) without waiting.
    pub(super) fn event(&self, slot: Option<Slot>, kind: Kind, reason: &'static str, message: String) {
        let (recorder, object) = (self.shared.recorder.clone(), self.object_ref(slot));
        tokio::spawn(async move { recorder.publish(&object, kind, reason, &message).await });
    }

    pub(super) fn object_ref(&self, slot: Option<Slot>) -> ObjectReference {
        let field_path = slot.map(|s| match s {
            Slot::Init(_) => format!("spec.initContainers{{{}}}", self.container_view(s).name),
            Slot::Main(_) => format!("spec.containers{{{}}}", self.container_view(s).name),
        });
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(self.name()),
            namespace: Some(self.namespace()),
            uid: Some(self.uid()),
            field_path,
            ..ObjectReference::default()
        }
    }

    pub(super) fn name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }

    pub(super) fn namespace(&self) -> String {
        self.pod.metadata.namespace.clone().unwrap_or_else(|| "default".into())
    }

    pub(super) fn uid(&self) -> String {
        self.pod.metadata.uid.clone().unwrap_or_default()
    }

    /// `<data-dir>/pods/<uid>`: the pod's volumes and scratch files.
    pub(super) fn pod_dir(&self) -> PathBuf {
        self.shared.data_dir.join("pods").join(self.uid())
    }

    pub(super) fn log_dir(&self) -> PathBuf {
        logs::pod_dir(&self.shared.data_dir, &self.namespace(), &self.name(), &self.uid())
    }
}
