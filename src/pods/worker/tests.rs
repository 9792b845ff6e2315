//! The pod worker against a fake runtime, on tokio's paused clock: restart policies,
//! crash-loop and image-pull back-off to the second, init ordering, and deletion. What a
//! user sees is read back from the pod's `status.json`, as `krustlet-wasi pods` reads it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::Msg;
use crate::pods::{Api, Handles, Logs, Objects, Wakes, directory};
use crate::runtime::{
    ContainerRun, Exit, ImageRequest, ImageService, PulledImage, Running, RuntimeError, RuntimeService,
};

/// A runtime whose containers do what their arguments say, one argument per run (the last
/// repeats): `CODE@SECS` exits with CODE after SECS, `forever` runs until stopped. Images
/// named `missing` fail to pull.
struct Fake {
    events: mpsc::UnboundedSender<Seen>,
    runs: Mutex<HashMap<String, usize>>,
}

/// What the fake saw, and when (on the paused clock).
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Pull(Instant),
    Start(String, Instant),
    Stopped(String),
}

struct FakeRun {
    name: String,
    plan: String,
    stop: Arc<Notify>,
    events: mpsc::UnboundedSender<Seen>,
}

impl Running for FakeRun {
    fn wait(&mut self) -> BoxFuture<'_, Exit> {
        Box::pin(async move {
            let (code, secs) = match self.plan.split_once('@') {
                Some((code, secs)) => (code.parse().unwrap(), secs.parse().unwrap()),
                None => (0, u64::MAX / 4),
            };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(secs)) => Exit::from_code(code, None),
                _ = self.stop.notified() => {
                    let _ = self.events.send(Seen::Stopped(self.name.clone()));
                    Exit { code: 137, reason: "Error", message: None }
                }
            }
        })
    }

    fn stopper(&self) -> crate::runtime::Stopper {
        let stop = self.stop.clone();
        Arc::new(move |_grace| stop.notify_one())
    }
}

impl ImageService for Fake {
    type Image = ();

    fn prepare(&self, request: ImageRequest) -> BoxFuture<'_, Result<PulledImage<()>, RuntimeError>> {
        Box::pin(async move {
            let _ = self.events.send(Seen::Pull(Instant::now()));
            if request.image == "missing" {
                return Err(RuntimeError::new("ErrImagePull", "not found"));
            }
            Ok(PulledImage {
                image_id: format!("fake://{}", request.image),
                entrypoint: vec![],
                cmd: vec![],
                module_path: "/app.wasm".into(),
                kind: crate::runtime::ImageKind::Command,
                image: (),
            })
        })
    }
}

impl RuntimeService for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn version(&self) -> &'static str {
        "0"
    }

    fn start(&self, _: &(), run: ContainerRun) -> Result<Box<dyn Running>, RuntimeError> {
        // argv: [name, plan for run 0, plan for run 1, ...]
        let name = run.argv[0].clone();
        let mut runs = self.runs.lock().unwrap();
        let n = runs.entry(name.clone()).or_default();
        let plan = run.argv[1..].get(*n).or(run.argv.last()).cloned().unwrap_or_default();
        *n += 1;
        let _ = self.events.send(Seen::Start(name.clone(), Instant::now()));
        Ok(Box::new(FakeRun { name, plan, stop: Arc::new(Notify::new()), events: self.events.clone() }))
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    seen: mpsc::UnboundedReceiver<Seen>,
    pod: Pod,
    slot: futures::channel::mpsc::UnboundedSender<Msg>,
    worker: tokio::task::JoinHandle<()>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// A pod whose containers are `(name, [plan per run])`, with the image `image`.
fn pod(policy: &str, init: &[(&str, &[&str])], main: &[(&str, &[&str])], image: &str) -> Pod {
    let containers = |list: &[(&str, &[&str])]| -> Vec<Value> {
        list.iter()
            .map(|(name, plans)| json!({"name": name, "image": image, "command": [name], "args": plans}))
            .collect()
    };
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "u-1"},
        "spec": {"restartPolicy": policy, "initContainers": containers(init), "containers": containers(main)},
    }))
    .unwrap()
}

impl Harness {
    fn start(pod: Pod) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        let (events, seen) = mpsc::unbounded_channel();
        let host = crate::pods::Host {
            node_ip: "127.0.0.1".parse().unwrap(),
            data_dir: data.clone(),
            memory_medium: crate::volumes::MemoryMedium::Disk,
            limits: crate::config::PodLimits::default(),
            serving: crate::config::Serving::default(),
            sync_frequency: Duration::from_secs(60),
            resources: crate::pods::resources::NodeResources {
                allocatable: crate::pods::resources::Amounts {
                    cpu_millis: 1000,
                    memory_bytes: 1 << 30,
                    ..Default::default()
                },
                ..Default::default()
            },
        };
        let handles = Arc::new(Handles {
            runtime: Arc::new(Fake { events, runs: Mutex::default() }),
            api: Api {
                client: None,
                recorder: crate::events::Recorder::local("n1"),
                node_name: "n1".into(),
                node_uid: None,
            },
            host: Arc::new(host),
            logs: Logs {
                registry: crate::logs::LogRegistry::new(),
                limits: crate::logs::LogLimits::default(),
            },
            objects: Objects {
                client: None,
                cache: Arc::new(crate::pods::cache::ObjectCache::new(Duration::from_secs(60))),
            },
            directory: directory::Directory::default(),
            metrics: Arc::default(),
            network: crate::network::Network::new(crate::network::Setup::default()).0,
            prober: crate::pods::probes::Prober::start(),
            wakes: Wakes::default(),
        });
        let (slot, rx) = futures::channel::mpsc::unbounded();
        let trace = super::StartTrace::new(std::time::Instant::now());
        let metrics = handles.metrics.clone();
        let worker = tokio::spawn(super::run(handles, Arc::new(pod.clone()), rx, trace));
        Harness { _dir: dir, data, seen, pod, slot, worker, metrics }
    }

    /// The next thing the fake saw (time moves on until it happens).
    async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(24 * 3600), self.seen.recv()).await.unwrap().unwrap()
    }

    /// When the next `n` container starts happened, as seconds after `t0`.
    async fn starts(&mut self, n: usize, t0: Instant) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        while out.len() < n {
            if let Seen::Start(name, at) = self.next().await {
                out.push((name, (at - t0).as_secs()));
            }
        }
        out
    }

    fn status(&self) -> Value {
        status_file(&self.data, "u-1").map(|s| s["status"].clone()).unwrap_or(Value::Null)
    }

    /// Lets the worker run for `secs` seconds of the paused clock.
    async fn wait(&self, secs: u64) {
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
}

fn status_file(data: &Path, uid: &str) -> Option<Value> {
    let text = std::fs::read(data.join("pods").join(uid).join("status.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

fn main_state(status: &Value) -> &Value {
    &status["containerStatuses"][0]["state"]
}

#[tokio::test(start_paused = true)]
async fn crash_loop_back_off_restarts_at_once_then_after_10s_doubling_to_5_minutes() {
    let mut h = Harness::start(pod("OnFailure", &[], &[("main", &["1@0"])], "img"));
    let t0 = Instant::now();
    let gaps: Vec<u64> = h.starts(9, t0).await.windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert_eq!(gaps, [0, 10, 20, 40, 80, 160, 300, 300]);
    h.wait(1).await;
    let status = h.status();
    assert_eq!(status["containerStatuses"][0]["restartCount"], 8);
    let waiting = &main_state(&status)["waiting"];
    assert_eq!(waiting["reason"], "CrashLoopBackOff");
    assert_eq!(waiting["message"], "back-off 300s restarting failed container=main pod=p_default(u-1)");
    assert_eq!(status["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1);
}

#[tokio::test(start_paused = true)]
async fn restart_count_grows_when_a_restart_starts_not_when_a_run_dies() {
    let mut h = Harness::start(pod("Always", &[], &[("main", &["1@0"])], "img"));
    h.starts(2, Instant::now()).await;
    h.wait(1).await;
    let status = h.status();
    assert_eq!(main_state(&status)["waiting"]["reason"], "CrashLoopBackOff");
    assert_eq!(status["containerStatuses"][0]["restartCount"], 1);
    h.wait(10).await;
    assert_eq!(h.status()["containerStatuses"][0]["restartCount"], 2);
}

#[tokio::test(start_paused = true)]
async fn a_run_of_ten_minutes_resets_the_back_off() {
    let plans: &[&str] = &["1@0", "1@0", "1@0", "1@700", "1@0"];
    let mut h = Harness::start(pod("Always", &[], &[("main", plans)], "img"));
    let t0 = Instant::now();
    let gaps: Vec<u64> = h.starts(6, t0).await.windows(2).map(|w| w[1].1 - w[0].1).collect();
    // 0, 10, 20 back-off; the 700 s run resets it (restart at once), then 10 s again.
    assert_eq!(gaps, [0, 10, 20, 700, 10]);
}

#[tokio::test(start_paused = true)]
async fn never_runs_once_and_reports_the_real_exit_code() {
    let mut h = Harness::start(pod("Never", &[], &[("main", &["3@5"])], "img"));
    let t0 = Instant::now();
    assert_eq!(h.starts(1, t0).await, [("main".to_string(), 0)]);
    h.wait(3600).await;
    let status = h.status();
    assert_eq!(status["phase"], "Failed");
    let terminated = &main_state(&status)["terminated"];
    assert_eq!((terminated["exitCode"].clone(), terminated["reason"].clone()), (json!(3), json!("Error")));
    assert_eq!(status["containerStatuses"][0]["restartCount"], 0);
    assert!(matches!(h.seen.try_recv(), Err(mpsc::error::TryRecvError::Empty)), "started again");
}

#[tokio::test(start_paused = true)]
async fn always_restarts_after_success_and_on_failure_does_not() {
    let mut h = Harness::start(pod("Always", &[], &[("main", &["0@1"])], "img"));
    let t0 = Instant::now();
    let at: Vec<u64> = h.starts(3, t0).await.into_iter().map(|(_, s)| s).collect();
    assert_eq!(at, [0, 1, 12]); // ran 1 s, restarted at once; ran 1 s, 10 s back-off

    let mut h = Harness::start(pod("OnFailure", &[], &[("main", &["0@1"])], "img"));
    h.starts(1, Instant::now()).await;
    h.wait(600).await;
    assert_eq!(h.status()["phase"], "Succeeded");
    assert_eq!(main_state(&h.status())["terminated"]["reason"], "Completed");
}

#[tokio::test(start_paused = true)]
async fn init_containers_run_one_after_another_before_the_main_containers() {
    let main: &[(&str, &[&str])] = &[("web", &["forever"]), ("side", &["forever"])];
    let mut h = Harness::start(pod("Always", &[("first", &["0@1"]), ("second", &["0@2"])], main, "img"));
    let t0 = Instant::now();
    let mut starts = h.starts(4, t0).await;
    starts[2..].sort();
    let expected = [("first", 0), ("second", 1), ("side", 3), ("web", 3)];
    assert_eq!(starts, expected.map(|(n, s)| (n.to_string(), s)));
    h.wait(1).await;
    let status = h.status();
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["initContainerStatuses"][1]["state"]["terminated"]["reason"], "Completed");
}

#[tokio::test(start_paused = true)]
async fn a_failed_init_container_under_never_fails_the_pod_and_runs_nothing_else() {
    let mut h = Harness::start(pod("Never", &[("setup", &["5@0"])], &[("main", &["forever"])], "img"));
    assert_eq!(h.starts(1, Instant::now()).await[0].0, "setup");
    h.wait(600).await;
    let status = h.status();
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 5);
    assert_eq!(main_state(&status)["waiting"]["reason"], "PodInitializing");
    assert!(matches!(h.seen.try_recv(), Err(mpsc::error::TryRecvError::Empty)), "main started");
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_shows_err_image_pull_then_image_pull_back_off_and_retries_with_back_off() {
    let mut h = Harness::start(pod("Always", &[], &[("main", &["forever"])], "missing"));
    let t0 = Instant::now();
    let mut pulls = Vec::new();
    while pulls.len() < 4 {
        if let Seen::Pull(at) = h.next().await {
            pulls.push((at - t0).as_secs());
        }
    }
    assert_eq!(pulls, [0, 10, 30, 70]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(main_state(&h.status())["waiting"]["reason"], "ErrImagePull");
    h.wait(2).await;
    let status = h.status();
    assert_eq!(main_state(&status)["waiting"]["reason"], "ImagePullBackOff");
    assert!(main_state(&status)["waiting"]["message"].as_str().unwrap().contains("not found"));
}

#[tokio::test(start_paused = true)]
async fn deletion_stops_the_runs_and_removes_the_pods_files() {
    let mut h = Harness::start(pod("Always", &[], &[("main", &["forever"])], "img"));
    h.starts(1, Instant::now()).await;
    h.wait(1).await;
    assert!(status_file(&h.data, "u-1").is_some());
    let mut deleted = h.pod.clone();
    deleted.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()));
    h.slot.unbounded_send(Msg::Update(Arc::new(deleted))).unwrap();
    assert_eq!(h.next().await, Seen::Stopped("main".into()));
    tokio::time::timeout(Duration::from_secs(30), &mut h.worker).await.unwrap().unwrap();
    assert!(!h.data.join("pods/u-1").exists(), "the pod's directory is left");
}

#[tokio::test(start_paused = true)]
async fn a_static_pod_reports_anew_a_second_after_its_mirror_went() {
    use std::os::unix::fs::MetadataExt;
    let mut static_pod = pod("Always", &[], &[("main", &["forever"])], "img");
    static_pod.metadata.annotations =
        Some([(crate::pods::status::report::SOURCE_ANNOTATION.to_string(), "file".to_string())].into());
    let mut h = Harness::start(static_pod);
    h.starts(1, Instant::now()).await;
    h.wait(1).await;
    // Each report replaces status.json (a new inode); an unchanged status is not reported.
    let inode = || std::fs::metadata(h.data.join("pods/u-1/status.json")).unwrap().ino();
    let before = inode();
    // The controller says so when its mirror was deleted.
    h.slot.unbounded_send(Msg::MirrorGone).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(inode(), before, "reported again before the delay");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_ne!(inode(), before, "not reported again after the delay");
}

#[tokio::test(start_paused = true)]
async fn a_start_shows_in_each_phase_of_the_start_histogram_once_restarts_not_at_all() {
    let mut h = Harness::start(pod("Always", &[], &[("main", &["0@1"])], "img"));
    let text = h.metrics.render(0, 0);
    assert!(!text.contains("krustlet_pod_start_phase_seconds_count"), "traced before the start: {text}");
    // The first run, then a restart a second later.
    h.starts(2, Instant::now()).await;
    h.wait(1).await;
    let text = h.metrics.render(0, 0);
    for phase in super::Phase::ALL {
        let count = format!("krustlet_pod_start_phase_seconds_count{{phase=\"{}\"}} 1\n", phase.label());
        assert!(text.contains(&count), "{count} missing from:\n{text}");
    }
    assert!(text.contains("krustlet_pod_start_phase_seconds_bucket{phase=\"total\",le=\"+Inf\"} 1\n"));
}
