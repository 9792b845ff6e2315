//! The outcome of preparing a pod's volumes and images: its containers begin, or it is
//! prepared again after a back-off (an image pull's, or a reference not yet readable), or
//! it fails for good.

use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use super::{INITIAL_BACKOFF, MAX_BACKOFF, Machine, PodState, Retry, Upkeep, backoff};
use crate::config::{CONFIG_RETRY_INITIAL, CONFIG_RETRY_MAX, CONFIG_RETRY_VISIBLE_AFTER, DISK_CHECK_PERIOD};
use crate::events::Kind;
use crate::pods::status::State;
use crate::pods::worker::effects::{Effect, Failure, Prepared};

/// How long `ErrImagePull` shows before it becomes `ImagePullBackOff`.
const SHOW_PULL_ERROR: Duration = Duration::from_secs(2);

impl Machine {
    pub(super) fn prepared(
        &mut self,
        result: Result<Prepared, Failure>,
        retry: Option<Retry>,
        now: Instant,
        fx: &mut Vec<Effect>,
    ) {
        let retry =
            Retry { failures: retry.map_or(0, |r| r.failures) + 1, since: retry.map_or(now, |r| r.since) };
        match result {
            Ok(p) => {
                for (image, secs) in &p.pulls {
                    let message = format!("Successfully pulled image {image:?} in {secs:.3}s");
                    fx.push(Effect::Event { slot: None, kind: Kind::Normal, reason: "Pulled", message });
                }
                self.image_ids = p.image_ids;
                let mut upkeep = Upkeep::new(p.refreshes, p.watch_disk.then_some(now + DISK_CHECK_PERIOD));
                upkeep.schedule_refresh(now, p.token_due, self.settings.sync_frequency, &self.uid());
                self.begin_containers(upkeep, fx);
            }
            Err(Failure::Pull { image, reason, message }) => {
                let delay = backoff(retry.failures - 1, INITIAL_BACKOFF, MAX_BACKOFF);
                let text = match reason {
                    // Pulled, but the runtime cannot make a container of it (a link error).
                    "CreateContainerError" => format!("Error: {message}"),
                    _ => format!("Failed to pull image {image:?}: {message}"),
                };
                let event =
                    |message| Effect::Event { slot: None, kind: Kind::Warning, reason: "Failed", message };
                fx.push(event(text.clone()));
                fx.push(event(format!("Error: {reason}")));
                for c in self.view.init.iter_mut().chain(self.view.main.iter_mut()) {
                    if c.image == image {
                        c.state = State::waiting(reason, Some(text.clone()));
                    }
                }
                let flip_at = (reason == "ErrImagePull").then_some(now + SHOW_PULL_ERROR);
                self.state = PodState::Retrying { until: now + delay, flip_at, retry };
            }
            Err(Failure::Config { message }) => {
                let delay = backoff(retry.failures - 1, CONFIG_RETRY_INITIAL, CONFIG_RETRY_MAX);
                debug!(failures = retry.failures, retry_in = ?delay, %message, "preparing the pod failed; retrying");
                // A failure that clears within moments (an authorization race) stays quiet;
                // one that persists shows in the status and as an Event.
                if now.duration_since(retry.since) >= CONFIG_RETRY_VISIBLE_AFTER {
                    let (kind, reason) = (Kind::Warning, "Failed");
                    fx.push(Effect::Event { slot: None, kind, reason, message: format!("Error: {message}") });
                    for c in self.view.init.iter_mut().chain(self.view.main.iter_mut()) {
                        c.state = State::waiting("CreateContainerConfigError", Some(message.clone()));
                    }
                }
                self.state = PodState::Retrying { until: now + delay, flip_at: None, retry };
            }
            Err(Failure::Fatal { reason, message }) => {
                let event = Effect::Event {
                    slot: None,
                    kind: Kind::Warning,
                    reason: "Failed",
                    message: message.clone(),
                };
                fx.push(event);
                self.view.failure = Some((reason.to_string(), message));
                self.state = PodState::Done { adopted: false };
            }
        }
    }
}
