//! glibc malloc, tuned for the agent: how many arenas it may make, and giving freed
//! memory back to the system. Elsewhere (musl, other systems) both do nothing.

/// Caps glibc's malloc arenas at `arenas` (`mallopt(M_ARENA_MAX)`) unless the user chose
/// a cap (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`): theirs
/// wins. Call it first thing in `main`, before any thread exists. Returns whether the cap
/// was set here.
pub fn limit_arenas(arenas: usize) -> bool {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if user_capped(std::env::var_os("MALLOC_ARENA_MAX").is_some(), &tunables) {
        return false;
    }
    set_arena_max(arenas)
}

/// Whether the environment caps the arenas: `MALLOC_ARENA_MAX` is set, or `GLIBC_TUNABLES`
/// (`name=value` pairs separated by `:`) names `glibc.malloc.arena_max`.
fn user_capped(malloc_arena_max_set: bool, tunables: &str) -> bool {
    malloc_arena_max_set || tunables.split(':').any(|t| t.trim().starts_with("glibc.malloc.arena_max="))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_arena_max(arenas: usize) -> bool {
    let arenas = libc::c_int::try_from(arenas.max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt takes malloc's own lock; it changes only the cap that new arenas are
    // checked against (arenas made before stay).
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: usize) -> bool {
    false
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
    fn a_cap_the_user_set_wins() {
        assert!(!user_capped(false, ""));
        assert!(user_capped(true, ""));
        assert!(user_capped(false, "glibc.malloc.tcache_count=0:glibc.malloc.arena_max=4"));
        assert!(!user_capped(false, "glibc.malloc.arena_test=2"));
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
