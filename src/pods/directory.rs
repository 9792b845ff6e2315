//! What the kubelet API may know about running pods: workers publish each pod, its log
//! directory, each container's current run, and how to start an exec instance of it.
//! Workers write; the server only reads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::base::vecmap::VecMap;
use crate::runtime::{ContainerRun, Group, Running, RuntimeError};
use crate::volumes::VolumeError;

/// Starts a new instance of a container's module (same image, env and mounts) with the
/// given argv and streams: what `kubectl exec` runs.
pub type ExecFn = Arc<dyn Fn(ContainerRun) -> Result<Box<dyn Running>, RuntimeError> + Send + Sync>;

/// One container as the API sees it.
#[derive(Clone)]
pub struct ContainerEntry {
    /// The current (or last) run's number: its restart count.
    pub run: u32,
    pub running: bool,
    /// Present once the container has started at least once.
    pub exec: Option<ExecFn>,
    /// The env and mounts of the container, for exec instances.
    pub env: Vec<(String, String)>,
    /// The container's mounts, opened anew (beneath their volumes) for each exec.
    pub mounts: Vec<crate::volumes::Mount>,
    pub memory_limit: Option<u64>,
    /// Handles an exec instance may hold (`--max-open-files`).
    pub max_handles: usize,
    /// When the current run started.
    pub started: std::time::SystemTime,
    /// Reads the container's (CPU nanoseconds, memory bytes), if the runtime measures it:
    /// its group's (all its runs and instances) when it has one, else the current run's.
    pub usage: Option<crate::metrics::UsageFn>,
    /// The container's resource group, shared by its exec instances.
    pub group: Option<Group>,
    /// The writing end of the run's stdin, for `kubectl attach -i` (`stdin: true`);
    /// `None` inside once it was closed (`stdinOnce`).
    pub stdin: Option<StdinWriter>,
}

/// The writing end of a container's stdin, shared by its attach sessions (one writes at
/// a time).
pub type StdinWriter = Arc<tokio::sync::Mutex<Option<tokio::io::DuplexStream>>>;

/// Why an instance beside a container could not start.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("container is not running")]
    NotRunning,
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Start(#[from] RuntimeError),
}

impl ContainerEntry {
    /// Starts a new instance beside the running container (`kubectl exec`, an exec
    /// probe): its module, env and handle cap, in the container's resource group (its
    /// memory counts against the container's limit, beside the main run's), its volumes
    /// opened anew beneath each (the guest may have changed its subPaths), and no ports of
    /// its own (the container's `exec` gives it the pod's socket rules).
    pub fn start_instance(
        &self,
        argv: Vec<String>,
        stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
        stdout: Box<dyn AsyncWrite + Send + Unpin>,
        stderr: Box<dyn AsyncWrite + Send + Unpin>,
    ) -> Result<Box<dyn Running>, InstanceError> {
        let start = self.exec.as_ref().ok_or(InstanceError::NotRunning)?;
        let run = ContainerRun {
            argv,
            env: self.env.clone(),
            mounts: crate::volumes::open_all(&self.mounts)?,
            stdin,
            stdout,
            stderr,
            memory_limit: self.memory_limit,
            max_handles: self.max_handles,
            network: None,
            group: self.group.clone(),
        };
        Ok(start(run)?)
    }
}

/// One pod as the API sees it.
#[derive(Clone)]
pub struct PodEntry {
    pub pod: Arc<Pod>,
    /// `<data-dir>/logs/<ns>_<pod>_<uid>`.
    pub log_dir: PathBuf,
    /// By name (a `VecMap`: a pod has a few, and every pod holds this map).
    pub containers: VecMap<String, ContainerEntry>,
    /// The pod's resource group, once one of its containers started.
    pub group: Option<Group>,
}

/// Pods known to this node, by (namespace, name).
#[derive(Clone, Default)]
pub struct Directory(Arc<Mutex<HashMap<(String, String), PodEntry>>>);

impl Directory {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<(String, String), PodEntry>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds or refreshes a pod (keeping what is known of its containers).
    pub fn upsert_pod(&self, pod: Arc<Pod>, log_dir: PathBuf) {
        let key = key_of(&pod);
        self.with(|m| {
            let (containers, group) = m
                .remove(&key)
                .filter(|e| same_pod(&e.pod, &pod))
                .map(|e| (e.containers, e.group))
                .unwrap_or_default();
            m.insert(key, PodEntry { pod, log_dir, containers, group });
        });
    }

    /// Records the pod's resource group.
    pub fn set_group(&self, pod: &Pod, group: Group) {
        let key = key_of(pod);
        self.with(|m| {
            if let Some(p) = m.get_mut(&key).filter(|p| same_pod(&p.pod, pod)) {
                p.group = Some(group);
            }
        });
    }

    /// Removes the pod, unless the entry is already another pod of the same name (a
    /// replaced static pod, or a pod recreated under its old name).
    pub fn remove_pod(&self, pod: &Pod) {
        let key = key_of(pod);
        self.with(|m| {
            if m.get(&key).is_some_and(|e| same_pod(&e.pod, pod)) {
                m.remove(&key);
            }
        });
    }

    /// Records a container's state; `exec` is kept from before when `None`.
    pub fn set_container(&self, pod: &Pod, name: &str, entry: ContainerEntry) {
        let key = key_of(pod);
        self.with(|m| {
            if let Some(p) = m.get_mut(&key).filter(|p| same_pod(&p.pod, pod)) {
                let exec = entry.exec.clone().or_else(|| p.containers.get(name).and_then(|c| c.exec.clone()));
                p.containers.insert(name.to_string(), ContainerEntry { exec, ..entry });
            }
        });
    }

    /// Marks a container's current run as ended.
    pub fn container_stopped(&self, pod: &Pod, name: &str) {
        let key = key_of(pod);
        self.with(|m| {
            if let Some(c) =
                m.get_mut(&key).filter(|p| same_pod(&p.pod, pod)).and_then(|p| p.containers.get_mut(name))
            {
                c.running = false;
            }
        });
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<PodEntry> {
        self.with(|m| m.get(&(namespace.to_string(), name.to_string())).cloned())
    }

    /// (pods with a running container, running containers).
    pub fn running_counts(&self) -> (usize, usize) {
        self.with(|m| {
            let per_pod: Vec<usize> =
                m.values().map(|p| p.containers.values().filter(|c| c.running).count()).collect();
            (per_pod.iter().filter(|n| **n > 0).count(), per_pod.iter().sum())
        })
    }

    /// The images every known pod names (init and main containers).
    pub fn images(&self) -> std::collections::HashSet<String> {
        self.with(|m| {
            m.values()
                .filter_map(|e| e.pod.spec.as_ref())
                .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
                .filter_map(|c| c.image.clone())
                .collect()
        })
    }

    /// The sum of `f` over every known pod, read in place (nothing copied): for scans
    /// that run every second. `f` runs under the directory's lock.
    pub fn sum(&self, f: impl Fn(&PodEntry) -> u64) -> u64 {
        self.with(|m| m.values().map(f).sum())
    }

    /// Every known pod with its containers.
    pub fn entries(&self) -> Vec<PodEntry> {
        self.with(|m| m.values().cloned().collect())
    }

    /// Every known pod.
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.with(|m| m.values().map(|e| e.pod.clone()).collect())
    }
}

fn same_pod(a: &Pod, b: &Pod) -> bool {
    a.metadata.uid == b.metadata.uid
}

fn key_of(pod: &Pod) -> (String, String) {
    (pod.namespace().unwrap_or_else(|| "default".into()), pod.name_any())
}
