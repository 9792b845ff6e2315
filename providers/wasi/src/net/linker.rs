//! What the provider puts in place of wasmtime-wasi's own wasi:sockets functions in a
//! component linker: `ip-name-lookup` answered from the run's [`Lookups`] (wasmtime-wasi
//! 48 resolves on tokio's shared blocking pool), and `start-bind` of TCP and UDP sockets
//! telling the guest `address-in-use` when the rules say someone else holds the address
//! (wasmtime-wasi's address check can only say `access-denied`).
//!
//! The definitions shadow wasmtime-wasi's under their exact names (`@WASI_VERSION`);
//! the linker's semver matching hands them to guests importing any 0.2.x version.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use wasmtime::component::{Linker, Resource, ResourceTable, ResourceType};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress, IpSocketAddress};
use wasmtime_wasi::p2::bindings::sockets::{tcp::HostTcpSocket, udp::HostUdpSocket};
use wasmtime_wasi::p2::{Network, Pollable, SocketError, TcpSocket, UdpSocket, subscribe};
use wasmtime_wasi::sockets::WasiSocketsView;

use super::{GuestNet, LookupError, Verdict};

/// The wasi:sockets version wasmtime-wasi 48 defines its interfaces under.
const WASI_VERSION: &str = "0.2.12";

/// A store whose guest's networking the provider judges.
pub(crate) trait NetView: WasiView + 'static {
    /// The store's networking and its resource table.
    fn net(&mut self) -> (&GuestNet, &mut ResourceTable);
}

/// Shadows wasmtime-wasi's `ip-name-lookup` and the two `start-bind`s in `linker`, which
/// already holds wasmtime-wasi's wasi:sockets.
pub(crate) fn shadow_sockets<T: NetView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let shadowed = shadow_name_lookup(linker).and_then(|()| shadow_binds(linker));
    linker.allow_shadowing(false);
    shadowed
}

fn shadow_name_lookup<T: NetView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut lookup = linker.instance(&format!("wasi:sockets/ip-name-lookup@{WASI_VERSION}"))?;
    lookup.resource("resolve-address-stream", ResourceType::host::<NameLookup>(), |mut store, rep| {
        store.data_mut().net().1.delete(Resource::<NameLookup>::new_own(rep))?;
        Ok(())
    })?;
    lookup.func_wrap("resolve-addresses", |mut store, (network, name): (Resource<Network>, String)| {
        let (net, table) = store.data_mut().net();
        table.get(&network)?;
        let mut stream = NameLookup::start(net, &name);
        // Errors known at once (a bad name, the pod's queue full) fail the call itself.
        if let Poll::Ready(Err(err)) = stream.poll(&mut Context::from_waker(Waker::noop())) {
            return Ok((Err(*err),));
        }
        Ok((Ok(table.push(stream)?),))
    })?;
    lookup.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store, (this,): (Resource<NameLookup>,)| {
            let stream = store.data_mut().net().1.get_mut(&this)?;
            let next = match stream.poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Pending => Err(ErrorCode::WouldBlock),
                Poll::Ready(Ok(addrs)) => Ok(addrs.next().map(IpAddress::from)),
                Poll::Ready(Err(err)) => Err(*err),
            };
            Ok((next,))
        },
    )?;
    lookup.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store, (this,): (Resource<NameLookup>,)| Ok((subscribe(store.data_mut().net().1, this)?,)),
    )?;
    Ok(())
}

/// A guest's lookup in progress, then its answer: the resource behind a
/// `resolve-address-stream`.
pub(crate) enum NameLookup {
    Pending(Pin<Box<dyn Future<Output = Result<Vec<IpAddr>, LookupError>> + Send>>),
    Done(Result<std::vec::IntoIter<IpAddr>, ErrorCode>),
}

impl NameLookup {
    fn start(net: &GuestNet, name: &str) -> Self {
        match net.socket_lookups() {
            Some(lookups) => NameLookup::Pending(Box::pin(lookups.resolve(name))),
            None => NameLookup::Done(Err(guest_error(LookupError::NotAllowed))),
        }
    }

    /// Drives the lookup; once done, its remaining addresses or its error.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<&mut Result<std::vec::IntoIter<IpAddr>, ErrorCode>> {
        if let NameLookup::Pending(lookup) = self {
            let Poll::Ready(answer) = lookup.as_mut().poll(cx) else { return Poll::Pending };
            *self = NameLookup::Done(answer.map(Vec::into_iter).map_err(guest_error));
        }
        match self {
            NameLookup::Done(answer) => Poll::Ready(answer),
            NameLookup::Pending(_) => Poll::Pending,
        }
    }
}

impl Pollable for NameLookup {
    fn ready<'a, 'b>(&'a mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(std::future::poll_fn(|cx| self.poll(cx).map(|_| ())))
    }
}

/// What the guest is told when a lookup fails. Lookups that are not allowed fail as
/// wasmtime-wasi's do when its lookups are off.
fn guest_error(err: LookupError) -> ErrorCode {
    match err {
        LookupError::NotAllowed | LookupError::PermanentFailure => ErrorCode::PermanentResolverFailure,
        LookupError::InvalidName => ErrorCode::InvalidArgument,
        LookupError::NameUnresolvable => ErrorCode::NameUnresolvable,
        LookupError::TemporaryFailure | LookupError::Busy | LookupError::TimedOut => {
            ErrorCode::TemporaryResolverFailure
        }
    }
}

type Bound = (Result<(), ErrorCode>,);

fn shadow_binds<T: NetView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.instance(&format!("wasi:sockets/tcp@{WASI_VERSION}"))?.func_wrap_async(
        "[method]tcp-socket.start-bind",
        |mut store, (this, network, local): (Resource<TcpSocket>, Resource<Network>, IpSocketAddress)| {
            Box::new(async move {
                let host = store.data_mut();
                let check = std::sync::Arc::clone(&host.net().0.check);
                check.take_bind_verdict();
                let bound = HostTcpSocket::start_bind(&mut host.sockets(), this, network, local).await;
                bind_result(bound, check.take_bind_verdict())
            })
        },
    )?;
    linker.instance(&format!("wasi:sockets/udp@{WASI_VERSION}"))?.func_wrap_async(
        "[method]udp-socket.start-bind",
        |mut store, (this, network, local): (Resource<UdpSocket>, Resource<Network>, IpSocketAddress)| {
            Box::new(async move {
                let host = store.data_mut();
                let check = std::sync::Arc::clone(&host.net().0.check);
                check.take_bind_verdict();
                let bound = HostUdpSocket::start_bind(&mut host.sockets(), this, network, local).await;
                bind_result(bound, check.take_bind_verdict())
            })
        },
    )?;
    Ok(())
}

/// wasmtime-wasi's answer to a bind, with `access-denied` made `address-in-use` when that
/// is why the rules refused it. A trap stays a trap.
fn bind_result(bound: Result<(), SocketError>, verdict: Option<Verdict>) -> wasmtime::Result<Bound> {
    match bound {
        Ok(()) => Ok((Ok(()),)),
        Err(err) => match err.downcast()? {
            ErrorCode::AccessDenied if verdict == Some(Verdict::InUse) => Ok((Err(ErrorCode::AddressInUse),)),
            code => Ok((Err(code),)),
        },
    }
}

#[cfg(test)]
#[path = "linker_tests.rs"]
mod tests;
