//! `krustlet-wasi pods`: the node's pods as `kubectl get pods -A` shows them — the same
//! columns, the STATUS reason, READY and RESTARTS by kubectl's rules, and AGE in its
//! human-readable durations.

use std::io::Write;
use std::path::Path;

use k8s_openapi::jiff::Timestamp;

use super::state::{self, ContainerStatus, PodRecord, Status};
use super::{CliError, Result};

const HEADER: [&str; 6] = ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"];

/// Prints a table of the pods under `data_dir` — `NAMESPACE NAME READY STATUS RESTARTS
/// AGE`, by namespace then name — or `No pods found.` when there are none.
pub fn pods(data_dir: &Path, out: &mut impl Write) -> Result<()> {
    let pods = state::read_pods(data_dir)?;
    out.write_all(render(&pods, Timestamp::now()).as_bytes()).map_err(CliError::Write)?;
    out.flush().map_err(CliError::Write)
}

/// The table for `pods` as of `now`.
pub(super) fn render(pods: &[PodRecord], now: Timestamp) -> String {
    if pods.is_empty() {
        return "No pods found.\n".into();
    }
    let mut rows = vec![HEADER.map(String::from)];
    for pod in pods {
        let row = Row::of(&pod.status);
        let restarts = match row.last_restart.and_then(|t| parse_time(&t)) {
            Some(t) if row.restarts > 0 => format!("{} ({} ago)", row.restarts, age(t, now)),
            _ => row.restarts.to_string(),
        };
        let started = pod.status.start_time.as_deref().and_then(parse_time);
        rows.push([
            pod.namespace.clone(),
            pod.name.clone(),
            format!("{}/{}", row.ready, row.total),
            row.reason,
            restarts,
            started.map_or_else(|| "<unknown>".into(), |t| age(t, now)),
        ]);
    }
    columns(&rows)
}

/// Lays rows out as kubectl's tab writer does: each column as wide as its widest cell
/// plus 3 spaces (at least 6), the last column unpadded.
fn columns(rows: &[[String; 6]]) -> String {
    let mut widths = [0usize; 6];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count() + 3).max(6);
        }
    }
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}", width = widths[i]));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// One pod's READY, STATUS and RESTARTS columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    pub ready: usize,
    pub total: usize,
    /// What STATUS shows: a container's reason, `Init:…`, or the phase.
    pub reason: String,
    pub restarts: i64,
    /// When the most recent restart's run ended (RFC 3339), for `N (AGE ago)`.
    pub last_restart: Option<String>,
}

impl Row {
    /// kubectl's rules: the pod's reason, else its phase; overridden by the first init
    /// container that has not succeeded; else by the containers (the first in order with a
    /// waiting or terminated reason); `Completed` with a container still running shows
    /// `Running` (or `NotReady` without the Ready condition).
    pub(super) fn of(status: &Status) -> Row {
        let phase = status.phase.clone().unwrap_or_else(|| "Unknown".into());
        let mut reason = status.reason.clone().filter(|r| !r.is_empty()).unwrap_or(phase);
        let mut row = Row {
            ready: 0,
            total: status.container_statuses.len(),
            reason: String::new(),
            restarts: 0,
            last_restart: None,
        };
        let inits = &status.init_container_statuses;
        let mut initializing = false;
        for (i, c) in inits.iter().enumerate() {
            row.count_restarts(c);
            let state = &c.state;
            let waiting = state.waiting.as_ref().and_then(|w| w.reason.clone()).filter(|r| !r.is_empty());
            reason = match (&state.terminated, waiting) {
                (Some(t), _) if t.exit_code == 0 => continue,
                (Some(t), _) => match (t.reason.as_deref().filter(|r| !r.is_empty()), t.signal) {
                    (Some(r), _) => format!("Init:{r}"),
                    (None, Some(sig)) if sig != 0 => format!("Init:Signal:{sig}"),
                    (None, _) => format!("Init:ExitCode:{}", t.exit_code),
                },
                (None, Some(w)) if w != "PodInitializing" => format!("Init:{w}"),
                _ => format!("Init:{i}/{}", inits.len()),
            };
            initializing = true;
            break;
        }
        if !initializing {
            (row.restarts, row.last_restart) = (0, None);
            let mut running = false;
            for c in status.container_statuses.iter().rev() {
                row.count_restarts(c);
                let waiting =
                    c.state.waiting.as_ref().and_then(|w| w.reason.clone()).filter(|r| !r.is_empty());
                if let Some(w) = waiting {
                    reason = w;
                } else if let Some(t) = &c.state.terminated {
                    reason = match (t.reason.as_deref().filter(|r| !r.is_empty()), t.signal) {
                        (Some(r), _) => r.to_string(),
                        (None, Some(sig)) if sig != 0 => format!("Signal:{sig}"),
                        (None, _) => format!("ExitCode:{}", t.exit_code),
                    };
                } else if c.ready && c.state.running.is_some() {
                    running = true;
                    row.ready += 1;
                }
            }
            if reason == "Completed" && running {
                let ready = status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True");
                reason = if ready { "Running" } else { "NotReady" }.into();
            }
        }
        row.reason = reason;
        row
    }

    fn count_restarts(&mut self, c: &ContainerStatus) {
        self.restarts += c.restart_count;
        if c.restart_count == 0 {
            return;
        }
        let finished = c.last_state.terminated.as_ref().and_then(|t| t.finished_at.clone());
        let newer = |t: &String| self.last_restart.as_ref().is_none_or(|l| parse_time(t) > parse_time(l));
        if let Some(t) = finished.filter(newer) {
            self.last_restart = Some(t);
        }
    }
}

fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// The time since `then`, as kubectl's AGE column shows it.
pub(super) fn age(then: Timestamp, now: Timestamp) -> String {
    let seconds =
        now.as_second() - then.as_second() - i64::from(now.subsec_nanosecond() < then.subsec_nanosecond());
    human_duration(seconds)
}

/// Go's `duration.HumanDuration`: `45s`, `3m20s`, `15m`, `5h30m`, `20h`, `3d4h`, `30d`, `2y30d`, `9y`.
pub(super) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return with_rest(minutes, "m", seconds % 60, "s");
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return with_rest(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return with_rest(hours / 24, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return with_rest(hours / 24 / 365, "y", (hours / 24) % 365, "d");
    }
    format!("{}y", hours / 24 / 365)
}

/// `3m20s`, or `3m` when the rest is 0.
fn with_rest(major: i64, major_unit: &str, minor: i64, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit}{minor}{minor_unit}")
    }
}
