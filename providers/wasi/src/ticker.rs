//! The one epoch ticker per engine: a thread that bumps the engine's epoch at a fixed
//! interval so running guests yield to tokio (and can be stopped) between ticks.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::Engine;

use crate::error::{Error, Result};

/// Owns the ticker thread; dropping the last `Arc<Ticker>` stops and joins it.
/// Running guests hold an `Arc` too, so the epoch keeps moving while any guest runs.
pub(crate) struct Ticker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    pub(crate) fn start(engine: Engine, every: Duration) -> Result<Self> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wasi-epoch-ticker".into())
            .spawn(move || {
                // Ticks until the sender is dropped (or sends, which nothing does).
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    engine.increment_epoch();
                }
            })
            .map_err(Error::TickerSpawn)?;
        Ok(Ticker { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread wakes at once on disconnect; it cannot panic.
            let _ = thread.join();
        }
    }
}
