//! Unit tests of the port table: declared ports, overlaps by address, protocols, claims by
//! binds and their release.

use serde_json::json;

use super::*;

fn pod(uid: &str, ports: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("p-{uid}"), "namespace": "ns", "uid": uid},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": ports}]},
    }))
    .unwrap()
}

fn id(uid: &str) -> PodId {
    PodId::of(&pod(uid, json!([])))
}

const TCP: Protocol = Protocol::Tcp;
const UDP: Protocol = Protocol::Udp;

fn at(protocol: Protocol, port: u16, addr: &str) -> Binding {
    Binding { protocol, port, addr: addr.parse().unwrap() }
}

fn any(protocol: Protocol, port: u16) -> Binding {
    Binding::everywhere(protocol, port)
}

#[test]
fn declared_ports_are_checked_for_host_networking() {
    let p = pod(
        "a",
        json!([{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}, {"containerPort": 53}]),
    );
    let want = [(8080, TCP), (53, UDP), (53, TCP)].map(|(port, protocol)| NodePort { port, protocol });
    assert_eq!(declared(&p).unwrap(), want);
    let same_host_port = pod("a", json!([{"containerPort": 80, "hostPort": 80}]));
    assert_eq!(declared(&same_host_port).unwrap().len(), 1);
    let cases = [
        json!([{"containerPort": 80, "hostPort": 8080}]),
        json!([{"containerPort": 80}, {"containerPort": 80}]),
        json!([{"containerPort": 70000}]),
        json!([{"containerPort": 80, "protocol": "SCTP"}]),
    ];
    let errors: Vec<String> =
        cases.iter().map(|c| declared(&pod("a", c.clone())).unwrap_err().to_string()).collect();
    assert!(errors[0].contains("hostPort 8080 differs from containerPort 80"), "{}", errors[0]);
    assert!(errors[1].contains("port 80/TCP is declared twice"), "{}", errors[1]);
    assert!(errors[2].contains("containerPort 70000 is not a port number"), "{}", errors[2]);
    assert!(errors[3].contains("protocol SCTP"), "{}", errors[3]);
}

#[test]
fn a_port_is_held_by_one_pod_until_it_is_released() {
    let table = PortTable::new(&[(10250, "kubelet API (--port)"), (0, "unused")]);
    let (a, b) = (id("a"), id("b"));
    table.reserve(&a, &[any(TCP, 8080), any(TCP, 9090)]).unwrap();
    table.reserve(&a, &[any(TCP, 8080)]).unwrap();
    let err = table.reserve(&b, &[any(TCP, 7070), any(TCP, 8080)]).unwrap_err();
    assert_eq!(err.to_string(), "port 8080/TCP is already in use on this node by pod ns/p-a");
    assert_eq!(table.holder(any(TCP, 7070)), None, "all or nothing");
    let err = table.reserve(&b, &[any(TCP, 10250)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "port 10250/TCP is already in use on this node by the node agent's kubelet API (--port)"
    );
    table.reserve(&b, &[any(UDP, 8080)]).unwrap();
    table.release("a");
    table.reserve(&b, &[any(TCP, 8080)]).unwrap();
    assert_eq!(table.holder(any(TCP, 8080)), Some(Holder::Pod(b.clone())));
    assert_eq!(table.holder(any(UDP, 8080)), Some(Holder::Pod(b)));
}

#[test]
fn a_wildcard_overlaps_every_address_and_distinct_addresses_do_not() {
    let table = PortTable::new(&[]);
    let (a, b, c) = (id("a"), id("b"), id("c"));
    table.reserve(&a, &[at(TCP, 8080, "10.0.0.5")]).unwrap();
    table.reserve(&b, &[at(TCP, 8080, "127.0.0.1")]).unwrap();
    let err = table.reserve(&c, &[any(TCP, 8080)]).unwrap_err();
    assert!(err.to_string().contains("8080/TCP is already in use"), "{err}");
    table.reserve(&c, &[at(TCP, 8080, "::ffff:10.0.0.6")]).unwrap();
    assert_eq!(
        table.holder(at(TCP, 8080, "10.0.0.6")),
        Some(Holder::Pod(c.clone())),
        "mapped addresses are their IPv4"
    );
    let err = table
        .reserve(&c, &[Binding::new(NodePort { port: 8080, protocol: TCP }, "10.0.0.5".parse().unwrap())])
        .unwrap_err();
    assert_eq!(err.to_string(), "port 8080/TCP on 10.0.0.5 is already in use on this node by pod ns/p-a");
    assert_eq!(table.holder(any(TCP, 8080)), Some(Holder::Pod(a.clone())));
    assert_eq!(table.holder(at(TCP, 8080, "127.0.0.1")), Some(Holder::Pod(b)));
    assert_eq!(table.holder(at(UDP, 8080, "127.0.0.1")), None);
}

#[test]
fn a_bind_takes_its_pods_ports_and_claims_free_unprivileged_ones() {
    let table = PortTable::new(&[(10250, "kubelet API (--port)")]);
    let (a, b) = (id("a"), id("b"));
    let listen = "0.0.0.0";
    table.reserve(&a, &[at(UDP, 8080, listen), at(TCP, 9000, listen)]).unwrap();
    table.reserve(&b, &[at(TCP, 8080, listen)]).unwrap();
    assert_eq!(table.take(&a, at(UDP, 8080, listen), 1024), Ok(Taken::Held));
    assert_eq!(table.take(&a, at(TCP, 9000, listen), 1024), Ok(Taken::Held));
    // Declared for UDP only: TCP 8080 is another pod's.
    assert_eq!(table.take(&a, at(TCP, 8080, listen), 1024), Err(Refused::Held(Holder::Pod(b.clone()))));
    assert_eq!(
        table.take(&a, at(TCP, 10250, listen), 1024),
        Err(Refused::Held(Holder::Agent("kubelet API (--port)")))
    );
    assert_eq!(table.take(&a, at(TCP, 80, listen), 1024), Err(Refused::Privileged { min: 1024 }));
    assert_eq!(table.take(&a, at(TCP, 18000, listen), 1024), Ok(Taken::Claimed));
    assert_eq!(table.take(&a, at(TCP, 18000, listen), 1024), Ok(Taken::Held), "claimed once");
    assert_eq!(table.take(&b, at(TCP, 18000, listen), 1024), Err(Refused::Held(Holder::Pod(a.clone()))));
    assert_eq!(table.take(&b, at(UDP, 18000, listen), 1024), Ok(Taken::Claimed), "another protocol");
    // A claimed port keeps a later pod from declaring it.
    let c = id("c");
    let err = table.reserve(&c, &[at(TCP, 18000, listen)]).unwrap_err();
    assert_eq!(err.to_string(), "port 18000/TCP is already in use on this node by pod ns/p-a");
    table.release("a");
    assert_eq!(table.take(&b, at(TCP, 18000, listen), 1024), Ok(Taken::Claimed), "freed when the pod stops");
    assert_eq!(table.take(&b, at(TCP, 8080, listen), 1024), Ok(Taken::Held));
    table.release("b");
    assert_eq!(table.holder(at(TCP, 8080, listen)), None);
    assert_eq!(table.holder(at(TCP, 18000, listen)), None);
    assert_eq!(table.holder(any(TCP, 10250)), Some(Holder::Agent("kubelet API (--port)")), "never released");
}
