//! Giving the memory of deleted pods back to the system. glibc's malloc keeps what is
//! freed in its arenas for reuse; after thousands of pods are deleted that is hundreds of
//! megabytes the agent no longer needs but still holds. A while after the last pod went
//! (see [`crate::config::MEMORY_TRIM_DELAY`]) the agent asks malloc to return it. Nothing
//! runs while no pod goes away.

use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

/// Trims after each burst of pod removals that `wake` is told of, until `shutdown`.
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
        if tokio::task::spawn_blocking(release_free_memory).await.is_ok() {
            tracing::debug!(
                ms = started.elapsed().as_secs_f64() * 1e3,
                "returned freed memory to the system"
            );
        }
    }
}

/// Returns the free memory at the top of every malloc arena, and the free pages inside
/// them, to the system (glibc's `malloc_trim`; nothing elsewhere).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' locks itself and may be called from any thread
    // at any time; it only releases memory that is free.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident anonymous memory of this process, in bytes.
    fn anon_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }

    #[test]
    fn freed_memory_goes_back_to_the_system() {
        // Many small blocks, as pods' state is, freed all but the last: glibc keeps the
        // pages (the last block pins the heap's top) until trimmed.
        let blocks: Vec<Vec<u8>> = (0..200_000).map(|i| vec![i as u8; 512]).collect();
        let keep = blocks.last().cloned();
        let before = anon_bytes();
        drop(blocks);
        let freed_kept = anon_bytes();
        release_free_memory();
        let after = anon_bytes();
        assert!(keep.is_some());
        assert!(
            after + 50 * 1024 * 1024 < freed_kept,
            "trim returned too little: {before} before, {freed_kept} freed, {after} trimmed"
        );
    }
}
