//! How the tests of the one binary share this machine while they run in parallel.
//!
//! - Names and ports: every node is `kw-<tag>-<pid>` on its own kubelet port (healthz on
//!   +1000); [`claim`] fails a test loudly when two live nodes want the same one, instead
//!   of letting them fight over it.
//! - Port 8080 of this host: the default port of a wasi:http pod and of the examples'
//!   servers; the tests that need it take [`host_8080`] in turn.
//! - The cluster: every test shares it ([`share_cluster`], taken by `cluster()`), except
//!   one that needs to be the only schedulable wasm node (`examples/demo.sh` applies
//!   pods that select any wasm node): [`cluster_alone`] waits until no other test runs,
//!   cordons the other nodes, and lets everyone in again when it ends.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::Cluster;

/// Readers: tests using the cluster; the writer: a test that must be alone on it.
static CLUSTER: RwLock<()> = RwLock::new(());

enum Turn {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Alone,
}

thread_local! {
    /// This test thread's turn; dropped with the thread when its test ends.
    static TURN: RefCell<Option<Turn>> = const { RefCell::new(None) };
}

/// Whether this thread runs a test: libtest names it after the test, and every test here
/// is in a module (`pods::a_pod_runs`). Helper threads (unnamed) and tokio's workers
/// take no turn: their test's thread holds it.
fn is_test_thread() -> bool {
    std::thread::current().name().is_some_and(|name| name.contains("::"))
}

/// The calling test shares the cluster until its thread ends (once per test).
pub fn share_cluster() {
    if !is_test_thread() {
        return;
    }
    TURN.with(|turn| {
        let mut turn = turn.borrow_mut();
        if turn.is_none() {
            *turn = Some(Turn::Shared(CLUSTER.read().unwrap_or_else(|p| p.into_inner())));
        }
    });
}

/// The cluster with this test the only one running and every other node cordoned, until
/// the returned value is dropped. `None`: no control plane, outside CI (skipped).
pub fn cluster_alone() -> Option<Alone> {
    TURN.with(|turn| {
        let mut turn = turn.borrow_mut();
        assert!(turn.is_none(), "cluster_alone() must come before any other use of the cluster in a test");
        *turn = Some(Turn::Alone);
    });
    let cluster = super::cluster()?;
    let guard = CLUSTER.write().unwrap_or_else(|p| p.into_inner());
    let nodes = cluster.kubectl_ok(&[
        "get",
        "nodes",
        "-l",
        "kubernetes.io/arch=wasm32-wasi",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let cordoned: Vec<String> = nodes.split_whitespace().map(String::from).collect();
    for node in &cordoned {
        cluster.kubectl_ok(&["cordon", node]);
    }
    Some(Alone { cluster, cordoned, _guard: guard })
}

/// A test's hold on the whole cluster (see [`cluster_alone`]).
pub struct Alone {
    pub cluster: &'static Cluster,
    cordoned: Vec<String>,
    _guard: RwLockWriteGuard<'static, ()>,
}

impl Drop for Alone {
    fn drop(&mut self) {
        for node in &self.cordoned {
            self.cluster.kubectl(&["uncordon", node]);
        }
        TURN.with(|turn| turn.borrow_mut().take());
    }
}

/// This host's port 8080, until the guard is dropped.
pub fn host_8080() -> MutexGuard<'static, ()> {
    static PORT_8080: Mutex<()> = Mutex::new(());
    PORT_8080.lock().unwrap_or_else(|p| p.into_inner())
}

/// Node names and ports held by live nodes of this process: name or port -> holder.
static CLAIMED: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

/// Claims the node name `name` and its `ports` for as long as the node lives; panics
/// naming the holder when another live node has one of them (two modules given the
/// same tag or port: give one another).
pub fn claim(name: &str, ports: &[u16]) {
    let mut claimed = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
    let claimed = claimed.get_or_insert_with(HashMap::new);
    let keys: Vec<String> =
        std::iter::once(name.to_string()).chain(ports.iter().map(|p| format!("port {p}"))).collect();
    for key in &keys {
        if let Some(holder) = claimed.get(key) {
            panic!("node {name} wants {key}, which node {holder} of another test holds");
        }
    }
    for key in keys {
        claimed.insert(key, name.to_string());
    }
}

/// Gives back what [`claim`] took for `name`.
pub fn release(name: &str) {
    let mut claimed = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(claimed) = claimed.as_mut() {
        claimed.retain(|_, holder| holder != name);
    }
}
