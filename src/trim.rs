//! Giving freed memory back to the system. glibc's malloc keeps what is freed in its
//! arenas for reuse: after thousands of pods are deleted that is hundreds of megabytes the
//! agent no longer needs but still holds, and after thousands start at once, what their
//! preparation and first status reports used (about 10 KB a pod with 10,000 static pods).
//! A while after the last pod went or first started (see
//! [`crate::config::MEMORY_TRIM_DELAY`]) the agent asks malloc to return it. Nothing runs
//! while no pod comes or goes.

use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

/// Trims after each burst of pod removals and first starts that `wake` is told of,
/// until `shutdown`.
pub async fn run(wake: Arc<Notify>, mut shutdown: broadcast::Receiver<()>) {
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = shutdown.recv() => return,
        }
        // Removals during the delay are this trim's too (at most one more trim follows).
        tokio::select! {
            _ = tokio::time::sleep(crate::config::MEMORY_TRIM_DELAY) => {}
            _ = shutdown.recv() => return,
        }
        let started = std::time::Instant::now();
        if tokio::task::spawn_blocking(crate::base::malloc::release_free_memory).await.is_ok() {
            tracing::debug!(
                ms = started.elapsed().as_secs_f64() * 1e3,
                "returned freed memory to the system"
            );
        }
    }
}
