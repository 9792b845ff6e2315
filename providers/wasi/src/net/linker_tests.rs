//! A guest built against wasi:sockets 0.2.0 (not the 0.2.12 wasmtime-wasi 48 defines)
//! links against the shadowed `ip-name-lookup` and gets the provider's lookups: they answer
//! only when the run has [`Lookups`](crate::Lookups), where wasmtime-wasi's own (switched
//! off) would refuse every name.

use crate::{ExitStatus, NetworkPolicy, RunSpec, Runtime};

/// The part of WASI 0.2.0 the guest imports, written out here, and its world.
const WIT: &str = r#"
package test:lookup;

world resolve {
  import wasi:sockets/instance-network@0.2.0;
  import wasi:sockets/ip-name-lookup@0.2.0;
  export wasi:cli/run@0.2.12;
}

package wasi:io@0.2.0 {
  interface poll {
    resource pollable;
  }
}

package wasi:sockets@0.2.0 {
  interface network {
    resource network;
    enum error-code {
      unknown, access-denied, not-supported, invalid-argument, out-of-memory, timeout,
      concurrency-conflict, not-in-progress, would-block, invalid-state, new-socket-limit,
      address-not-bindable, address-in-use, remote-unreachable, connection-refused,
      connection-reset, connection-aborted, datagram-too-large, name-unresolvable,
      temporary-resolver-failure, permanent-resolver-failure,
    }
    type ipv4-address = tuple<u8, u8, u8, u8>;
    type ipv6-address = tuple<u16, u16, u16, u16, u16, u16, u16, u16>;
    variant ip-address { ipv4(ipv4-address), ipv6(ipv6-address) }
  }
  interface instance-network {
    use network.{network};
    instance-network: func() -> network;
  }
  interface ip-name-lookup {
    use wasi:io/poll@0.2.0.{pollable};
    use network.{network, error-code, ip-address};
    resource resolve-address-stream {
      resolve-next-address: func() -> result<option<ip-address>, error-code>;
      subscribe: func() -> pollable;
    }
    resolve-addresses: func(network: borrow<network>, name: string) -> result<resolve-address-stream, error-code>;
  }
}

package wasi:cli@0.2.12 {
  interface run {
    run: func() -> result;
  }
}
"#;

/// The guest: `run` calls `resolve-addresses("localhost")` and succeeds when it returned a
/// stream (the result's discriminant is `run`'s).
const CORE: &str = r#"
(module
  (import "wasi:sockets/instance-network@0.2.0" "instance-network" (func $network (result i32)))
  (import "wasi:sockets/ip-name-lookup@0.2.0" "resolve-addresses"
    (func $resolve (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "localhost")
  (func (export "wasi:cli/run@0.2.12#run") (result i32)
    (call $resolve (call $network) (i32.const 16) (i32.const 9) (i32.const 64))
    (i32.load8_u (i32.const 64))))
"#;

fn component() -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve.push_str("resolve.wit", WIT).expect("WIT parses");
    let world = resolve.select_world(&[package], Some("resolve")).expect("world");
    let mut core = wat::parse_str(CORE).expect("WAT parses");
    wit_component::embed_component_metadata(&mut core, &resolve, world, wit_component::StringEncoding::UTF8)
        .expect("metadata embeds");
    wit_component::ComponentEncoder::default()
        .module(&core)
        .and_then(|encoder| encoder.validate(true).encode())
        .expect("component encodes")
}

async fn run(runtime: &Runtime, network: NetworkPolicy) -> ExitStatus {
    let bytes = component();
    let artifact = runtime.load(&bytes, "test:resolve-0-2-0").expect("a 0.2.0 guest links");
    let mut handle = runtime.run(&artifact, RunSpec::new().network(network)).expect("starts");
    tokio::time::timeout(std::time::Duration::from_secs(30), handle.wait()).await.expect("ends")
}

#[tokio::test]
async fn a_guest_of_wasi_0_2_0_gets_the_providers_lookups() {
    let runtime = Runtime::builder().build().unwrap();
    let with = NetworkPolicy::open([]).lookups(runtime.lookups(1));
    assert_eq!(run(&runtime, with).await, ExitStatus::Exited(0));
    assert_eq!(run(&runtime, NetworkPolicy::open([])).await, ExitStatus::Exited(1));
}
