//! A spawned task tied to its owner: aborted when the handle is dropped, so a session that
//! is dropped (or whose handler panics) takes its connection's tasks with it.

use tokio::task::JoinHandle;

/// A task aborted when this handle is dropped.
pub struct Abort(pub JoinHandle<()>);

impl Abort {
    /// Spawns `task` on the runtime, tied to the returned handle.
    pub fn spawn(task: impl Future<Output = ()> + Send + 'static) -> Abort {
        Abort(tokio::spawn(task))
    }
}

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}
