//! How the agent's own process is tuned: malloc's arenas, the async runtime's event
//! interval and blocking pool, and when freed memory goes back to the system. None of
//! these is a flag (`MALLOC_ARENA_MAX` in the environment overrides the arenas).

use std::time::Duration;

/// At most this many glibc malloc arenas (`mallopt(M_ARENA_MAX)`, set first thing in
/// `main`), unless `MALLOC_ARENA_MAX` (or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`) is
/// set: then the user's. glibc's own cap is 8 per core, and a thread that allocates while
/// the other arenas are in use gets one of its own; the state of pods started in a burst
/// is then spread over many arenas, each keeping its own free space, which the others
/// cannot use. The agent's threads are few (a worker per core, a capped blocking pool, the
/// guests' threads), and most of them wait; two arenas keep them from queueing behind one
/// lock. `bench/density.sh 10000` (2 cores, the same binary in turn): 670 MB right after
/// 10,000 pods started with 2 arenas, 720 MB with glibc's cap (16 here).
pub const MALLOC_ARENAS: usize = 2;

/// How many tasks a worker thread of the agent's async runtime runs before it looks at
/// timers and sockets again (tokio's `event_interval`, 61 by default). Busy guests yield
/// only at epoch ticks (10 ms), so with tokio's default two busy guests could hold a
/// sleeping guest's timer for 61 × 10 ms / 2 threads, about 300 ms; at 4 a timer is seen
/// within about 40 ms / threads, for a few more `epoll_wait` calls while busy
/// (`bench/fairness.sh`).
pub const RUNTIME_EVENT_INTERVAL: u32 = 4;

/// At most this many threads in the agent's blocking pool (tokio's
/// `max_blocking_threads`, 512 by default), which runs its file work that may block: a
/// `file://` module read and hashed, an image's cached entry read, log reads for
/// followers, the wait for a new image's compile (one thread per image, not per pod).
/// Each is short or waits on the disk, so more threads than this buy nothing on a node's
/// few cores; with tokio's 512, 10,000 static pods started at once made 512 threads
/// (each with its own stack, and under glibc an arena to share). Beyond the cap, work
/// waits its turn in the pool's queue. Idle threads exit after tokio's 10 s.
pub const RUNTIME_BLOCKING_THREADS: usize = 32;

/// After a pod goes away or its first container starts, how long to wait before giving
/// freed memory back to the system (`malloc_trim`): long enough that a mass delete or
/// start is a trim every few seconds, not thousands. glibc's malloc keeps what deleted
/// pods freed in its arenas; measured with `bench/density.sh`, 3,000 pods deleted left the
/// agent at 179 MB without it, 39 MB with it (19 MB before any pod); 10,000 pods started
/// at once, 670 MB without it, 572 MB once trimmed (the rest is in use).
pub const MEMORY_TRIM_DELAY: Duration = Duration::from_secs(3);
