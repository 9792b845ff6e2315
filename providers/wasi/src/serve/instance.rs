//! One request's instance: the [`Template`] every request's store is built from, running
//! the guest's handler under its deadline, and what ended it ([`Outcome`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p2::bindings::Proxy;
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};

use super::lanes::Lane;
use super::stats::{HttpStats, InFlight};
use super::{Server, spare};
use crate::cgroup::cpu;
use crate::error::Result;
use crate::host::{MemoryLimiter, OutOfMemory as MemoryRefusal, ProxyHost};
use crate::net::NetworkPolicy;
use crate::outgoing::Outgoing;
use crate::output::SharedOutput;
use crate::spec::{Preopen, add_preopens};
use crate::ticker::{Activity, InWasm};
use crate::usage::Meter;

/// What every request's store is made from: the spec, minus what only one run can own.
pub(crate) struct Template {
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) preopens: Vec<Preopen>,
    pub(crate) network: NetworkPolicy,
    pub(crate) memory_limit: Option<u64>,
    /// The spec's handle cap, else [`MAX_HANDLES`].
    pub(crate) max_handles: Option<usize>,
    pub(crate) stdout: SharedOutput,
    pub(crate) stderr: SharedOutput,
    /// The engine's ticker, told when a request's guest is in wasm.
    pub(crate) activity: Activity,
    /// The run's usage and cgroup: every request's memory and CPU are counted there.
    pub(crate) meter: Meter,
}

/// Handles (streams, sockets, outgoing requests, fields, ...) one request's instance
/// may hold at once when the spec sets no cap; one more fails in the guest. A request
/// needs a few dozen.
const MAX_HANDLES: usize = 1024;

/// The error an instance traps with when its request's time is up.
#[derive(Debug, thiserror::Error)]
#[error("the request's time limit ran out")]
pub(crate) struct DeadlineExceeded;

impl Template {
    /// A store for one request: its own WASI context, memory limiter (its own cap, and
    /// the run's cgroup chain) and deadline. The instance yields to tokio every few epoch
    /// ticks (the cgroup's CPU weight), sleeps there while the cgroup is over its CPU
    /// quota, and traps once `deadline` passed.
    pub(crate) fn store(&self, engine: &Engine, deadline: Instant) -> Result<Store<ProxyHost>> {
        let mut builder = WasiCtxBuilder::new();
        builder.args(&self.argv).envs(&self.env);
        add_preopens(&mut builder, &self.preopens)?;
        let net = self.network.apply(&mut builder);
        builder.stdout(self.stdout.clone()).stderr(self.stderr.clone());
        let mut table = ResourceTable::new();
        table.set_max_capacity(self.max_handles.unwrap_or(MAX_HANDLES));
        let host = ProxyHost {
            table,
            wasi: builder.build(),
            http: WasiHttpCtx::new(),
            hooks: Outgoing::new(net),
            limiter: MemoryLimiter::new(self.memory_limit)
                .metered(Arc::clone(&self.meter.usage))
                .charging(self.meter.cgroup.clone()),
            in_wasm: InWasm::new(self.activity.clone()),
            deadline,
        };
        let mut store = Store::new(engine, host);
        store.limiter(|host| &mut host.limiter);
        crate::ticker::track_wasm(&mut store);
        let cgroup = self.meter.cgroup.clone();
        store.set_epoch_deadline(cgroup.ticks());
        store.epoch_deadline_callback(move |ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(wasmtime::Error::new(DeadlineExceeded))
            } else {
                Ok(cpu::epoch_yield(&cgroup, &ctx.data().in_wasm))
            }
        });
        Ok(store)
    }
}

/// How a request's instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The handler returned.
    Finished,
    /// It trapped, failed in a host call, or could not be instantiated.
    Trapped(String),
    /// It grew past its own memory limit (the spec's, per instance).
    OutOfMemory,
    /// Its run's cgroup (the pod's limit) or the node's budget refused it memory, when
    /// it was instantiated or as it grew.
    OverMemory(MemoryRefusal),
    /// It ran past the request timeout.
    TimedOut,
    /// The node-wide pool of request instances was full: it never started.
    PoolFull,
    /// The server cut it at the end of a shutdown's grace (or was stopped).
    Cut,
}

impl Outcome {
    /// What the client reads in the 500 when no response was sent yet.
    pub(crate) fn explain(&self) -> &'static str {
        match self {
            Outcome::Finished => "the guest returned without sending a response\n",
            Outcome::Trapped(_) => "the guest trapped\n",
            Outcome::OutOfMemory => "the guest ran out of memory\n",
            Outcome::OverMemory(MemoryRefusal::Node { .. }) => {
                "the node's memory budget for guests is reached\n"
            }
            Outcome::OverMemory(_) => "the pod's memory limit is reached\n",
            Outcome::TimedOut => "the guest ran past the request timeout\n",
            Outcome::PoolFull => "too many requests in flight on this node\n",
            Outcome::Cut => "the server is shutting down\n",
        }
    }
}

/// Instantiates the artifact in `store` (built at `started`), unless `ready` holds the
/// instance already made in it (and how long that took), and runs its handler until
/// it returns, fails, runs out of time, or the server cuts it, in its `lane` (given up
/// when it waits, see `lanes`; or after its store is gone) and under the concurrency cap's
/// slot, until the deadline its store holds. Counts and logs every failure.
pub(crate) async fn run(
    server: Arc<Server>,
    mut store: Store<ProxyHost>,
    ready: Option<(Proxy, Duration)>,
    request: Resource<HostIncomingRequest>,
    response: Resource<HostResponseOutparam>,
    started: Instant,
    (_slot, mut lane): (tokio::sync::OwnedSemaphorePermit, Lane),
) -> Outcome {
    let _in_flight = InFlight::enter(&server.stats);
    let probe = store.data().in_wasm.probe();
    // The same deadline the guest traps at, at its next epoch check past it.
    let deadline = store.data().deadline;
    let result = {
        let handle = async {
            let proxy = match ready {
                Some((proxy, took)) => {
                    server.stats.instantiated(took);
                    proxy
                }
                None => {
                    let proxy = server.pre.instantiate_async(&mut store).await?;
                    server.stats.instantiated(started.elapsed());
                    proxy
                }
            };
            // This request has its instance: the next one's is made while it runs.
            spare::refill(&server);
            proxy.wasi_http_incoming_handler().call_handle(&mut store, request, response).await
        };
        tokio::select! {
            biased;
            () = server.cut.cancelled() => return Outcome::Cut,
            result = tokio::time::timeout_at(deadline.into(), lane.hold(&probe, handle)) => result,
        }
    };
    let outcome = match (result, store.data().limiter.refused.clone()) {
        (Err(_elapsed), _) => Outcome::TimedOut,
        (Ok(Ok(())), _) => Outcome::Finished,
        (Ok(Err(_)), Some(MemoryRefusal::Store { .. })) => Outcome::OutOfMemory,
        (Ok(Err(_)), Some(refused)) => Outcome::OverMemory(refused),
        (Ok(Err(err)), None) if err.downcast_ref::<DeadlineExceeded>().is_some() => Outcome::TimedOut,
        (Ok(Err(err)), None) if err.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() => {
            Outcome::PoolFull
        }
        (Ok(Err(err)), None) => Outcome::Trapped(format!("{err:?}")),
    };
    // Its pool slot is free first: the next request in line takes that warm one.
    drop(store);
    drop(lane);
    let stats = &server.stats;
    let digest = &server.digest;
    match &outcome {
        Outcome::Finished | Outcome::Cut => {}
        Outcome::PoolFull => {
            HttpStats::count(&stats.over_capacity);
            tracing::warn!(digest, "HTTP request refused: the node's pool of request instances is full");
        }
        Outcome::Trapped(message) => {
            HttpStats::count(&stats.trapped);
            tracing::warn!(digest, error = %message, "HTTP request failed: the guest trapped");
        }
        Outcome::OutOfMemory => {
            HttpStats::count(&stats.out_of_memory);
            tracing::warn!(digest, limit = ?server.template.memory_limit,
                "HTTP request failed: the guest ran out of memory");
        }
        Outcome::OverMemory(refused) => {
            HttpStats::count(&stats.over_memory);
            tracing::debug!(digest, %refused, "HTTP request refused: its instance was refused memory");
        }
        Outcome::TimedOut => {
            HttpStats::count(&stats.timed_out);
            tracing::warn!(digest, timeout = ?server.limits.request_timeout,
                "HTTP request failed: the guest ran past the request timeout");
        }
    }
    outcome
}
