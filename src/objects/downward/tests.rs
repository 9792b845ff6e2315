//! Tests of downward API values and quantity arithmetic.

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::*;

fn pod() -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "labels": {"b": "2", "a": "x\"y\\z\n\t\u{1}é"}},
        "spec": {"containers": [
            {"name": "c", "resources": {"limits": {"ephemeral-storage": "1G"}, "requests": {"memory": "1.5Ki"}}},
        ]},
    }))
    .expect("pod fixture parses")
}

fn ctx(pod: &Pod) -> PodContext<'_> {
    PodContext { pod, node_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), allocatable: (1000, 1 << 30) }
}

#[test]
fn whole_label_map_is_sorted_go_quoted_lines() {
    let p = pod();
    assert_eq!(field_value(&ctx(&p), "metadata.labels"), Ok("a=\"x\\\"y\\\\z\\n\\t\\x01é\"\nb=\"2\"".into()));
    assert_eq!(field_value(&ctx(&p), "metadata.annotations"), Ok(String::new()));
}

#[test]
fn defaults_and_unsupported_fields() {
    let p = pod();
    let c = ctx(&p);
    assert_eq!(field_value(&c, "metadata.namespace"), Ok("default".into()));
    assert_eq!(field_value(&c, "metadata.uid"), Ok(String::new()));
    assert_eq!(field_value(&c, "status.hostIPs"), Ok("127.0.0.1".into()));
    for bad in ["metadata.generateName", "metadata.name['x']", "['x']", "spec.nodeName['x']"] {
        assert_eq!(field_value(&c, bad), Err(DownwardError::UnsupportedField(bad.into())), "{bad}");
    }
}

fn sel(resource: &str, container: Option<&str>, divisor: Option<&str>) -> ResourceFieldSelector {
    ResourceFieldSelector {
        resource: resource.into(),
        container_name: container.map(Into::into),
        divisor: divisor.map(|d| Quantity(d.into())),
    }
}

#[test]
fn resources_by_container_name_and_errors() {
    let p = pod();
    let c = ctx(&p);
    let get = |s| resource_value(&c, None, &s);
    assert_eq!(get(sel("limits.ephemeral-storage", Some("c"), Some("1M"))), Ok("1000".into()));
    assert_eq!(get(sel("requests.memory", Some("c"), None)), Ok("1536".into()));
    assert_eq!(get(sel("requests.memory", Some("c"), Some("1Ki"))), Ok("2".into()));
    assert_eq!(get(sel("requests.ephemeral-storage", Some("c"), None)), Ok("0".into()));
    assert_eq!(get(sel("limits.cpu", Some("c"), None)), Ok("1".into()));
    assert_eq!(get(sel("limits.cpu", None, None)), Err(DownwardError::NoContainer));
    assert_eq!(get(sel("limits.cpu", Some("x"), None)), Err(DownwardError::NoSuchContainer("x".into())));
    assert_eq!(
        get(sel("limits.gpu", Some("c"), None)),
        Err(DownwardError::UnsupportedResource("limits.gpu".into()))
    );
    assert_eq!(get(sel("cpu", Some("c"), None)), Err(DownwardError::UnsupportedResource("cpu".into())));
    assert_eq!(get(sel("limits.cpu", Some("c"), Some("0"))), Err(DownwardError::InvalidQuantity("0".into())));
    assert_eq!(
        get(sel("limits.cpu", Some("c"), Some("lots"))),
        Err(DownwardError::InvalidQuantity("lots".into()))
    );
    let bare: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "c"}]}})).expect("pod");
    assert_eq!(
        resource_value(&ctx(&bare), None, &sel("limits.ephemeral-storage", Some("c"), None)),
        Err(DownwardError::NoLimit("limits.ephemeral-storage".into()))
    );
}

#[test]
fn quantities_parse_exactly_and_round_up() {
    let milli = |s: &str| Exact::parse(s).and_then(|q| q.ceil_scaled(1000));
    let units = |s: &str| Exact::parse(s).and_then(|q| q.ceil_scaled(1));
    assert_eq!(milli("100m"), Some(100));
    assert_eq!(milli("0.1"), Some(100));
    assert_eq!(milli("1.5"), Some(1500));
    assert_eq!(milli(".5"), Some(500));
    assert_eq!(milli("0.0001"), Some(1), "rounds up like MilliValue");
    assert_eq!(milli("2"), Some(2000));
    assert_eq!(milli("+2"), Some(2000));
    assert_eq!(milli("1500u"), Some(2));
    assert_eq!(milli("100n"), Some(1));
    assert_eq!(units("1Ki"), Some(1024));
    assert_eq!(units("1.5Gi"), Some(1_610_612_736));
    assert_eq!(units("128Mi"), Some(134_217_728));
    assert_eq!(units("1k"), Some(1000));
    assert_eq!(units("1M"), Some(1_000_000));
    assert_eq!(units("2T"), Some(2_000_000_000_000));
    assert_eq!(units("1E"), Some(1_000_000_000_000_000_000));
    assert_eq!(units("1Ei"), Some(1 << 60));
    assert_eq!(units("1e3"), Some(1000));
    assert_eq!(units("12E-1"), Some(2));
    assert_eq!(units("1.1"), Some(2));
    assert_eq!(units("-1.5"), Some(-1));
    for bad in ["", "m", ".", "1..2", "1.2.3", "1x", "1e", "1Ki2", "1e99999999999", "1e60"] {
        assert_eq!(Exact::parse(bad), None, "{bad:?}");
    }
}
