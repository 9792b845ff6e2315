//! The pace of certificate renewal: sleeping until a wall-clock moment or for a while
//! (either cut short by shutdown), the back-off of failed attempts, and the doubling
//! reminders of a CSR that waits for a human.

use std::time::{Duration, SystemTime};

use kube::runtime::watcher::DefaultBackoff;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::config::{CERT_APPROVAL_REMINDER, CERT_APPROVAL_REMINDER_MAX};

/// When to say again that a CSR waits (or to ask again after a refusal): after
/// [`CERT_APPROVAL_REMINDER`], doubling up to [`CERT_APPROVAL_REMINDER_MAX`].
pub(super) struct Reminders {
    every: Duration,
    pub next: Instant,
}

impl Reminders {
    pub fn new() -> Self {
        Reminders { every: CERT_APPROVAL_REMINDER, next: Instant::now() + CERT_APPROVAL_REMINDER }
    }

    /// The wait that was due; the next one is twice as long (up to the maximum).
    pub fn advance(&mut self) -> Duration {
        let due = self.every;
        self.every = (self.every * 2).min(CERT_APPROVAL_REMINDER_MAX);
        self.next = Instant::now() + self.every;
        due
    }

    /// Back to the first, shortest wait.
    pub fn reset(&mut self) {
        *self = Reminders::new();
    }
}

/// When to start the next renewal: at `due`, unless the certificate was `just_renewed` and
/// is already due (a signer that caps lifetimes, a CA about to expire); then after the next
/// of `hurried`'s growing waits, so renewals never follow each other in a loop. A
/// certificate not yet due resets them.
pub(super) fn paced(
    due: SystemTime,
    now: SystemTime,
    just_renewed: bool,
    hurried: &mut Reminders,
) -> SystemTime {
    match (just_renewed, due <= now) {
        (true, true) => now + hurried.advance(),
        (false, true) => due,
        (_, false) => {
            hurried.reset();
            due
        }
    }
}

/// Sleeps until the wall clock reaches `due` (in steps of at most an hour, so a clock that
/// jumps, or a machine that slept, is noticed); true if `shutdown` came first.
pub(super) async fn wait_until(due: SystemTime, shutdown: &mut broadcast::Receiver<()>) -> bool {
    loop {
        let Ok(left) = due.duration_since(SystemTime::now()) else { return false };
        if left.is_zero() {
            return false;
        }
        if stopped_after(left.min(Duration::from_secs(3600)), shutdown).await {
            return true;
        }
    }
}

/// Sleeps `wait`; true if `shutdown` came first.
pub(super) async fn stopped_after(wait: Duration, shutdown: &mut broadcast::Receiver<()>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = shutdown.recv() => true,
    }
}

/// The back-off's next wait (kube's never runs out; its cap if it did).
pub(super) fn next_wait(backoff: &mut DefaultBackoff) -> Duration {
    backoff.next().unwrap_or(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reminders_double_up_to_the_maximum_and_reset() {
        let mut r = Reminders::new();
        let waits: Vec<Duration> = (0..9).map(|_| r.advance()).collect();
        assert_eq!(waits[0], CERT_APPROVAL_REMINDER);
        assert_eq!(waits[1], CERT_APPROVAL_REMINDER * 2);
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*waits.last().unwrap(), CERT_APPROVAL_REMINDER_MAX);
        r.reset();
        assert_eq!(r.advance(), CERT_APPROVAL_REMINDER);
    }

    #[test]
    fn a_renewal_that_comes_back_already_due_waits_longer_each_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (past, future) = (now - Duration::from_secs(5), now + Duration::from_secs(5));
        let mut hurried = Reminders::new();
        assert_eq!(paced(past, now, false, &mut hurried), past, "overdue at start: at once");
        assert_eq!(paced(past, now, true, &mut hurried), now + CERT_APPROVAL_REMINDER);
        assert_eq!(paced(past, now, true, &mut hurried), now + CERT_APPROVAL_REMINDER * 2);
        assert_eq!(paced(future, now, true, &mut hurried), future, "a sound renewal resets");
        assert_eq!(paced(past, now, true, &mut hurried), now + CERT_APPROVAL_REMINDER);
    }
}
