//! Leaving the machine as the suite found it. What lives as long as the test process (the
//! shared nodes, the guide's and the tenancy tests' network namespaces) is never dropped,
//! so it is swept when the process exits: agents killed, Nodes forgotten, the volume mounts
//! their agents leave detached, their directories removed. What a killed run left (it
//! could sweep nothing) the next run sweeps when it first reaches the cluster.

use std::path::Path;
use std::sync::Mutex;

use super::Cluster;
use super::node::TestNode;

/// Where nodes' directories go: `<tmp>/krustlet-test-<pid>-<name>.<random>`.
const DIR_PREFIX: &str = "krustlet-test-";

type Sweep = Box<dyn FnOnce() + Send>;

/// What runs when the process exits, in the order it was registered.
static AT_EXIT: Mutex<Vec<Sweep>> = Mutex::new(Vec::new());

/// Runs `sweep` when the process exits (after the last test; not if it is killed).
pub fn at_exit(sweep: impl FnOnce() + Send + 'static) {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    unsafe extern "C" {
        fn atexit(callback: extern "C" fn()) -> i32;
    }
    extern "C" fn sweep_all() {
        let all = std::mem::take(&mut *AT_EXIT.lock().unwrap_or_else(|p| p.into_inner()));
        // Each sweep waits on kubectl; a few dozen of them at once take seconds, not minutes.
        let running: Vec<_> = all.into_iter().map(std::thread::spawn).collect();
        for sweep in running {
            let _ = sweep.join();
        }
    }
    // SAFETY: registers a plain function with the C library; it runs once at exit.
    REGISTER.call_once(|| unsafe {
        atexit(sweep_all);
    });
    AT_EXIT.lock().unwrap_or_else(|p| p.into_inner()).push(Box::new(sweep));
}

/// A node that is never dropped is swept at exit, as dropping it would: its agent killed
/// first (it would not see SIGTERM until after this sweep), its Node, Lease and CSRs
/// forgotten, so no Ready-looking Node outlives its agent and attracts later pods, the
/// mounts its agent left detached and its directory removed.
pub fn forget_at_exit(cluster: &'static Cluster, node: &TestNode) {
    let (name, dir, pid) = (node.name.clone(), node.dir.path().to_path_buf(), node.agent.pid());
    at_exit(move || {
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: plain system calls on a child of this process that nothing reaps
            // any more (the thread that owns it is parked for good).
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        remove_dir(&dir);
        cluster.forget_node(&name);
    });
}

/// A fresh directory for the node `name`, named so that [`forget_dead_runs`] finds it if
/// this process is killed before it is removed.
pub fn node_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{DIR_PREFIX}{}-{name}.", std::process::id()))
        .tempdir()
        .expect("a temporary directory")
}

/// A test's temporary directory for an agent's data: named as node directories are (a
/// killed run's is swept by the next), and removed when dropped with the mounts an agent
/// killed before it left inside (a plain `TempDir` could not remove it past them). Drop
/// it after the agent: declare it first.
pub struct TestDir(tempfile::TempDir);

impl TestDir {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        unmount_below(self.0.path());
    }
}

/// A fresh [`TestDir`].
pub fn test_dir() -> TestDir {
    TestDir(node_dir("dir"))
}

/// Removes the node directories of test processes that are gone (killed, so they could
/// not sweep at exit), and the mounts inside them.
pub fn forget_dead_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix(DIR_PREFIX).and_then(|rest| rest.split('-').next()?.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            remove_dir(&entry.path());
        }
    }
}

/// Detaches every mount below `dir`, then removes it.
pub fn remove_dir(dir: &Path) {
    unmount_below(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// Detaches every mount below `dir`. An agent killed with pods still on its node leaves
/// their volumes' tmpfs mounts (its next start would unmount them); a test's temporary
/// directory could not be removed past them.
pub fn unmount_below(dir: &Path) {
    use krustlet_wasi::volumes::mountinfo;
    let (Ok(dir), Ok(table)) = (dir.canonicalize(), mountinfo::read()) else { return };
    for path in mountinfo::below(&table, &dir) {
        let _ = rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH);
    }
}
