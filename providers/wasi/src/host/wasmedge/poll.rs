//! `poll_oneoff` for modules with sockets: socket subscriptions and clocks are answered
//! here; every other subscription (stdin, files, an absolute monotonic clock) goes to
//! wasmtime-wasi's own `poll_oneoff`, run at the same time on a host-side copy of just
//! those subscriptions. Every event ready when the call returns is reported.
//!
//! Readiness semantics (the guide's `mio_wasi` selector registers every socket for read
//! *and* write and re-polls its whole list each turn; tokio only needs a new write event
//! after a write returned `EAGAIN`, because mio is edge-triggered on Linux):
//! - **read** is level-triggered: reported while the host socket has data, a pending
//!   connection, or a hang-up. A listener is not reported while accepts fail with
//!   `EMFILE`, until a descriptor is closed.
//! - **write** is reported once, then again only after the guest sent on the socket (any
//!   outcome) or subscribed to it afresh (it was not in the previous call). Level-
//!   triggered writability would be true at every call for every idle connection, so an
//!   idle keep-alive connection would keep the guest spinning at 100% of a core; with
//!   this rule it costs nothing. A guest that polls for writability twice without
//!   writing in between waits in the second call, as with `EPOLLET`. A listener is never
//!   writable.
//! - An event never carries an error for a socket that is open (the guide's tokio panics
//!   on one); a hang-up is a ready event with the `HANGUP` flag.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self as p1, WasiSnapshotPreview1 as _};

use super::abi::{Errno, Wasi};
use super::memory::Mem;
use super::table::Sockets;
use crate::host::Host;

const SUBSCRIPTION: u32 = 48;
const EVENT: u32 = 32;
/// Most subscriptions one call may carry (`ENOMEM` past it, as preview1's fuel gives).
const MAX_SUBSCRIPTIONS: u32 = 1 << 16;

const CLOCK: u8 = 0;
const FD_READ: u8 = 1;
const FD_WRITE: u8 = 2;
const REALTIME: u32 = 0;
const MONOTONIC: u32 = 1;
const ABSTIME: u16 = 1;
const HANGUP: u16 = 1;

/// One subscription, as this host answers it.
#[derive(Debug, Clone, Copy)]
enum Sub {
    /// A clock ready at `deadline`.
    Clock {
        userdata: u64,
        deadline: Instant,
    },
    Socket {
        userdata: u64,
        fd: i32,
        write: bool,
    },
    /// Answered by wasmtime-wasi: its 48 bytes are copied there.
    Delegated {
        at: i32,
    },
}

/// One event to write.
#[derive(Debug, Clone, Copy)]
struct Event {
    /// The subscription it answers (its index in the call).
    sub: usize,
    userdata: u64,
    error: Errno,
    kind: u8,
    nbytes: u64,
    flags: u16,
}

/// `poll_oneoff(in, out, n, *nevents)`. `Err` is a trap from wasmtime-wasi's half.
pub(crate) async fn poll_oneoff(
    mem: &mut Mem<'_>,
    host: &mut Host,
    input: i32,
    out: i32,
    n: i32,
    nevents: i32,
    fuel: usize,
) -> wasmtime::Result<Wasi> {
    let n = n as u32;
    if n == 0 {
        return Ok(Err(Errno::INVAL));
    }
    if n > MAX_SUBSCRIPTIONS {
        return Ok(Err(Errno::NOMEM));
    }
    let checked =
        mem.check(input, n * SUBSCRIPTION).and(mem.check(out, n * EVENT)).and(mem.check(nevents, 4));
    let subs = match checked.and_then(|()| parse(mem, input, n)) {
        Ok(subs) => subs,
        Err(errno) => return Ok(Err(errno)),
    };
    let Host { sockets, wasi, .. } = host;
    arm_fresh_subscriptions(sockets, &subs);
    let delegated: Vec<i32> =
        subs.iter().filter_map(|s| if let Sub::Delegated { at } = s { Some(*at) } else { None }).collect();
    let (mut events, theirs) = if delegated.is_empty() {
        (wait(&subs, sockets, None::<Pin<&mut std::future::Pending<()>>>).await.0, Vec::new())
    } else {
        let mut host_mem = Delegation::new(mem, &delegated, false)?;
        let (ours, done) = {
            let mut guest = wiggle::GuestMemory::Unshared(&mut host_mem.data);
            wasi.set_hostcall_fuel(fuel);
            let theirs =
                p1::poll_oneoff(&mut *wasi, &mut guest, 0, host_mem.events, host_mem.count, host_mem.nevents);
            let mut theirs = pin!(theirs);
            let (ours, done) = wait(&subs, sockets, Some(theirs.as_mut())).await;
            match done {
                // A regular file is always ready once wasmtime-wasi has read ahead from
                // it: let that read finish rather than start another.
                None if reads_files(mem, &delegated) => {
                    (ours, tokio::time::timeout(FILE_READ_AHEAD, theirs).await.ok())
                }
                done => (ours, done),
            }
        };
        let result = match done {
            Some(result) => result,
            // Sockets or clocks were ready first: ask again what is ready now, with a
            // clock that is ready at once so the call cannot wait.
            None => {
                host_mem = Delegation::new(mem, &delegated, true)?;
                let mut guest = wiggle::GuestMemory::Unshared(&mut host_mem.data);
                wasi.set_hostcall_fuel(fuel);
                p1::poll_oneoff(&mut *wasi, &mut guest, 0, host_mem.events, host_mem.count, host_mem.nevents)
                    .await
            }
        };
        match result? {
            0 => {}
            errno => return Ok(Err(Errno(errno as u16))),
        }
        (ours, host_mem.events_out())
    };
    disarm_reported(sockets, &subs, &events);
    let total = events.len() + theirs.len();
    for (i, event) in events.drain(..).enumerate() {
        if let Err(errno) = write_event(mem, out + (i as u32 * EVENT) as i32, &event) {
            return Ok(Err(errno));
        }
    }
    let ours = total - theirs.len();
    for (i, raw) in theirs.iter().enumerate() {
        if let Err(errno) = mem.write(out + ((ours + i) as u32 * EVENT) as i32, raw) {
            return Ok(Err(errno));
        }
    }
    Ok(mem.put_u32(nevents, total as u32))
}

/// Reads the subscriptions: `EINVAL` for an unknown tag or clock.
fn parse(mem: &Mem<'_>, input: i32, n: u32) -> Wasi<Vec<Sub>> {
    let now = Instant::now();
    let mut subs = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = input + (i * SUBSCRIPTION) as i32;
        let userdata = mem.u64(at)?;
        let sub = match mem.u8(at + 8)? {
            CLOCK => {
                let (id, timeout, flags) = (mem.u32(at + 16)?, mem.u64(at + 24)?, mem.u16(at + 40)?);
                let absolute = flags & ABSTIME != 0;
                let relative = match (id, absolute) {
                    (REALTIME | MONOTONIC, false) => timeout,
                    (REALTIME, true) => timeout.saturating_sub(wall_clock_nanos()),
                    // The guest's monotonic clock counts from wasmtime-wasi's origin.
                    (MONOTONIC, true) => {
                        subs.push(Sub::Delegated { at });
                        continue;
                    }
                    _ => return Err(Errno::INVAL),
                };
                let deadline = now.checked_add(Duration::from_nanos(relative)).unwrap_or(now + FAR_FUTURE);
                Sub::Clock { userdata, deadline }
            }
            tag @ (FD_READ | FD_WRITE) => {
                let fd = mem.u32(at + 16)? as i32;
                if Sockets::is_socket_fd(fd) {
                    Sub::Socket { userdata, fd, write: tag == FD_WRITE }
                } else {
                    Sub::Delegated { at }
                }
            }
            _ => return Err(Errno::INVAL),
        };
        subs.push(sub);
    }
    Ok(subs)
}

/// A deadline far enough to be never (30 years).
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

fn wall_clock_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

/// A socket whose write readiness was not subscribed to in the previous call is armed.
fn arm_fresh_subscriptions(sockets: &mut Sockets, subs: &[Sub]) {
    sockets.poll_calls += 1;
    let call = sockets.poll_calls;
    for sub in subs {
        if let Sub::Socket { fd, write: true, .. } = *sub
            && let Ok(socket) = sockets.get_mut(fd)
        {
            if socket.write_seen + 1 != call && socket.write_seen != call {
                socket.write_armed = true;
            }
            socket.write_seen = call;
        }
    }
}

/// A reported write readiness is not reported again until the socket is re-armed.
fn disarm_reported(sockets: &mut Sockets, subs: &[Sub], events: &[Event]) {
    for event in events.iter().filter(|e| e.kind == FD_WRITE && e.error == Errno::SUCCESS) {
        if let Some(&Sub::Socket { fd, write: true, .. }) = subs.get(event.sub)
            && let Ok(socket) = sockets.get_mut(fd)
        {
            socket.write_armed = false;
        }
    }
}

/// How long a call whose sockets are ready lets wasmtime-wasi finish reading ahead from
/// the regular files it also waits on (microseconds, normally).
const FILE_READ_AHEAD: Duration = Duration::from_millis(10);

/// Whether a delegated subscription is on a descriptor past stdio: a preopen's file.
fn reads_files(mem: &Mem<'_>, delegated: &[i32]) -> bool {
    delegated
        .iter()
        .any(|&at| mem.u8(at + 8).is_ok_and(|tag| tag != CLOCK) && mem.u32(at + 16).is_ok_and(|fd| fd > 2))
}

/// Waits until a socket or clock subscription is ready or `theirs` (wasmtime-wasi's
/// half) finishes, and returns the socket and clock events ready then, with `theirs`'s
/// result if it finished.
async fn wait<F: Future>(
    subs: &[Sub],
    sockets: &Sockets,
    mut theirs: Option<Pin<&mut F>>,
) -> (Vec<Event>, Option<F::Output>) {
    let earliest = subs
        .iter()
        .filter_map(|s| if let Sub::Clock { deadline, .. } = s { Some(*deadline) } else { None })
        .min();
    let mut timer = pin!(earliest.map(tokio::time::sleep_until));
    poll_fn(|cx| {
        if let Some(timer) = timer.as_mut().as_pin_mut() {
            let _ = timer.poll(cx);
        }
        let ours = ready_now(subs, sockets, cx);
        let done = match theirs.as_mut() {
            Some(theirs) => match theirs.as_mut().poll(cx) {
                Poll::Ready(result) => Some(result),
                Poll::Pending => None,
            },
            None => None,
        };
        if ours.is_empty() && done.is_none() { Poll::Pending } else { Poll::Ready((ours, done)) }
    })
    .await
}

/// The socket and clock events ready now; registers `cx` for the rest.
fn ready_now(subs: &[Sub], sockets: &Sockets, cx: &mut Context<'_>) -> Vec<Event> {
    let now = Instant::now();
    let mut events = Vec::new();
    for (index, sub) in subs.iter().enumerate() {
        let event = |kind, error, nbytes, hung_up: bool| Event {
            sub: index,
            userdata: match sub {
                Sub::Clock { userdata, .. } | Sub::Socket { userdata, .. } => *userdata,
                Sub::Delegated { .. } => 0,
            },
            error,
            kind,
            nbytes,
            flags: if hung_up { HANGUP } else { 0 },
        };
        match *sub {
            Sub::Clock { deadline, .. } if deadline <= now => {
                events.push(event(CLOCK, Errno::SUCCESS, 0, false))
            }
            Sub::Socket { fd, write, .. } => {
                let kind = if write { FD_WRITE } else { FD_READ };
                let Ok(socket) = sockets.get(fd) else {
                    events.push(event(kind, Errno::BADF, 0, false));
                    continue;
                };
                if write {
                    if socket.write_armed
                        && let Some(hung_up) = socket.poll_writable(cx)
                    {
                        events.push(event(kind, Errno::SUCCESS, 0, hung_up));
                    }
                } else if !(sockets.accept_starved && socket.role == super::socket::Role::Listener)
                    && let Some((hung_up, waiting)) = socket.poll_readable(cx)
                {
                    events.push(event(kind, Errno::SUCCESS, waiting, hung_up));
                }
            }
            Sub::Clock { .. } | Sub::Delegated { .. } => {}
        }
    }
    events
}

fn write_event(mem: &mut Mem<'_>, at: i32, event: &Event) -> Wasi {
    let mut raw = [0u8; EVENT as usize];
    raw[0..8].copy_from_slice(&event.userdata.to_le_bytes());
    raw[8..10].copy_from_slice(&event.error.0.to_le_bytes());
    raw[10] = event.kind;
    raw[16..24].copy_from_slice(&event.nbytes.to_le_bytes());
    raw[24..26].copy_from_slice(&event.flags.to_le_bytes());
    mem.write(at, &raw)
}

/// The host-side memory wasmtime-wasi's `poll_oneoff` runs on: the delegated
/// subscriptions (plus, when asked, a clock ready at once), room for their events, and
/// the event count.
struct Delegation {
    data: Vec<u8>,
    count: i32,
    events: i32,
    nevents: i32,
    /// The last subscription is the clock added to make the call return at once.
    with_now: bool,
}

impl Delegation {
    fn new(mem: &Mem<'_>, delegated: &[i32], with_now: bool) -> wasmtime::Result<Delegation> {
        let count = delegated.len() as u32 + u32::from(with_now);
        let events = count * SUBSCRIPTION;
        let nevents = events + count * EVENT;
        let mut data = vec![0u8; (nevents + 4) as usize];
        for (i, at) in delegated.iter().enumerate() {
            let sub = mem
                .bytes(*at, SUBSCRIPTION)
                .map_err(|_| wasmtime::Error::msg("subscription out of bounds"))?;
            data[i * SUBSCRIPTION as usize..][..SUBSCRIPTION as usize].copy_from_slice(sub);
        }
        if with_now {
            // A relative monotonic clock of 0 ns (all other fields zero).
            let at = delegated.len() * SUBSCRIPTION as usize;
            data[at + 16..at + 20].copy_from_slice(&MONOTONIC.to_le_bytes());
        }
        Ok(Delegation { data, count: count as i32, events: events as i32, nevents: nevents as i32, with_now })
    }

    /// The events wasmtime-wasi wrote, in subscription order, without the added clock.
    fn events_out(&self) -> Vec<[u8; EVENT as usize]> {
        let at = self.nevents as usize;
        let written =
            u32::from_le_bytes([self.data[at], self.data[at + 1], self.data[at + 2], self.data[at + 3]]);
        let mut events: Vec<[u8; EVENT as usize]> = (0..written.min(self.count as u32) as usize)
            .map(|i| {
                let mut raw = [0u8; EVENT as usize];
                raw.copy_from_slice(
                    &self.data[self.events as usize + i * EVENT as usize..][..EVENT as usize],
                );
                raw
            })
            .collect();
        if self.with_now && events.last().is_some_and(|last| last[10] == CLOCK) {
            events.pop();
        }
        events
    }
}
