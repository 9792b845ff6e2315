//! glibc malloc: giving freed memory back to the system. Elsewhere (musl, other
//! systems) it does nothing.

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
