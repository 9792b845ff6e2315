//! How the agent's own process is tuned: the async runtime's event
//! interval and blocking pool, and when freed memory goes back to the system. None of
//! these is a flag.

use std::time::Duration;

// glibc's malloc arenas are left at glibc's cap (8 per core; `MALLOC_ARENA_MAX` sets
// another). A cap of 2 was tried: 10,000 pods held the same memory once trimmed (572 vs
// 575 MB), and a new image's parallel compile took 1.44x (Python component) and 2.0x (the
// guide's server) the compile alone against 1.07x and 1.14x uncapped (`bench/newimage.sh`,
// quiet machine): its threads queued on the arenas' locks.

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
