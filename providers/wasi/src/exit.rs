//! How a guest ended ([`ExitStatus`]) and the one helper that maps wasmtime results to it.

use std::fmt;

use wasmtime::WasmBacktrace;
use wasmtime_wasi::I32Exit;

use crate::host::OutOfMemory;

/// Exit code reported for a trap: 128 + SIGABRT, as the wasmtime CLI and a native
/// process that aborts both report.
pub const TRAP_EXIT_CODE: i32 = 134;

/// Exit code reported for out-of-memory and for stops: 128 + SIGKILL, which is what a
/// kubelet reports for an OOM-killed container or one killed at the end of its grace
/// period.
pub const KILLED_EXIT_CODE: i32 = 137;

/// How a guest ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// The guest exited on its own: `proc_exit(n)` / `wasi:cli/exit` gives `n`, a normal
    /// return from `_start` gives 0, a component whose `run` returns `Err` gives 1.
    Exited(i32),
    /// The guest trapped (`unreachable`, out-of-bounds access, stack overflow, an
    /// invalid `proc_exit` code, ...) or a host call failed fatally. `message` is the
    /// wasmtime error with its causes, including the wasm backtrace when available.
    Trapped {
        /// Human readable description of the trap.
        message: String,
    },
    /// The guest tried to grow its memory past a limit and was killed. `message` says
    /// which limit refused it: the run's own or its group's (`... would pass the memory
    /// limit of N bytes`), or the node's (`... would pass the node's memory budget for
    /// guests, N bytes`).
    OutOfMemory {
        /// Which limit refused how much.
        message: String,
    },
    /// The guest was stopped by [`RunHandle::stop`](crate::RunHandle::stop) or a
    /// [`Stopper`](crate::Stopper) before it finished.
    Stopped,
}

impl ExitStatus {
    /// The process-style exit code: the guest's own code for [`Exited`](Self::Exited),
    /// [`TRAP_EXIT_CODE`] (134) for a trap and [`KILLED_EXIT_CODE`] (137) for
    /// out-of-memory and for stops (a stop is always a kill: wasm has no signals to
    /// ask a guest to leave gracefully).
    pub fn code(&self) -> i32 {
        match self {
            ExitStatus::Exited(code) => *code,
            ExitStatus::Trapped { .. } => TRAP_EXIT_CODE,
            ExitStatus::OutOfMemory { .. } | ExitStatus::Stopped => KILLED_EXIT_CODE,
        }
    }

    /// True only for `Exited(0)`.
    pub fn success(&self) -> bool {
        *self == ExitStatus::Exited(0)
    }

    /// Maps the end of a guest run to a status.
    ///
    /// `result` is `Ok(code)` when the entrypoint returned normally (0 for `_start`,
    /// 0 or 1 for `wasi:cli/run`), or the wasmtime error that ended the run.
    /// `out_of_memory` is set when the memory limiter refused a growth; it wins over
    /// whatever trap that refusal caused.
    pub(crate) fn from_run(result: wasmtime::Result<i32>, out_of_memory: Option<&OutOfMemory>) -> ExitStatus {
        if let Some(refused) = out_of_memory {
            return ExitStatus::OutOfMemory { message: refused.to_string() };
        }
        match result {
            Ok(code) => ExitStatus::Exited(code),
            Err(err) => match err.downcast_ref::<I32Exit>() {
                Some(I32Exit(code)) => ExitStatus::Exited(*code),
                None => ExitStatus::Trapped { message: trap_message(&err) },
            },
        }
    }
}

/// The error chain on one line (outermost first), then the wasm backtrace if any:
/// `wasm trap: wasm `unreachable` instruction executed` + `\n` + frames.
fn trap_message(err: &wasmtime::Error) -> String {
    // The backtrace is attached as a context layer of the chain: print it last.
    let backtrace = err.downcast_ref::<WasmBacktrace>().map(ToString::to_string);
    let mut message = err
        .chain()
        .map(ToString::to_string)
        .filter(|cause| Some(cause) != backtrace.as_ref())
        .collect::<Vec<_>>()
        .join(": ");
    if let Some(backtrace) = backtrace {
        message.push('\n');
        message.push_str(&backtrace);
    }
    message
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with code {code}"),
            ExitStatus::Trapped { message } => write!(f, "trapped: {message}"),
            ExitStatus::OutOfMemory { message } => write!(f, "killed: out of memory: {message}"),
            ExitStatus::Stopped => f.write_str("stopped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(ExitStatus::Exited(42).code(), 42);
        assert_eq!(ExitStatus::Trapped { message: "x".into() }.code(), 134);
        assert_eq!(ExitStatus::OutOfMemory { message: "x".into() }.code(), 137);
        assert_eq!(ExitStatus::Stopped.code(), 137);
        assert!(ExitStatus::Exited(0).success());
        assert!(!ExitStatus::Exited(1).success());
    }

    #[test]
    fn from_run_maps_exit_trap_and_oom() {
        let exit = wasmtime::Error::new(I32Exit(42));
        assert_eq!(ExitStatus::from_run(Err(exit), None), ExitStatus::Exited(42));
        assert_eq!(ExitStatus::from_run(Ok(0), None), ExitStatus::Exited(0));
        let trap = wasmtime::Error::msg("boom");
        let status = ExitStatus::from_run(Err(trap), None);
        assert!(matches!(status, ExitStatus::Trapped { ref message } if message.contains("boom")));
        let trap = wasmtime::Error::msg("grow failed");
        let refused = OutOfMemory::Node { budget: 100, growth: 10 };
        let status = ExitStatus::from_run(Err(trap), Some(&refused));
        let message =
            "growing its memory by 10 bytes would pass the node's memory budget for guests, 100 bytes";
        assert_eq!(status, ExitStatus::OutOfMemory { message: message.into() });
        assert_eq!(status.to_string(), format!("killed: out of memory: {message}"));
    }
}
