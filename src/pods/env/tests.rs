//! Tests of env resolution and argv, against an in-memory object source.

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::*;
use crate::volumes::fake::FakeSource;

const NODE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));

fn pod(containers: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web", "namespace": "ns", "uid": "uid-1",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"note": "say \"hi\"\n"},
        },
        "spec": {"nodeName": "wasm-node", "serviceAccountName": "robot", "containers": containers},
    }))
    .expect("pod fixture parses")
}

fn ctx(pod: &Pod) -> PodContext<'_> {
    PodContext { pod, node_ip: NODE_IP, allocatable: (2000, 4 << 30) }
}

async fn resolve(src: &FakeSource, container: Value) -> Result<Vec<(String, String)>, EnvError> {
    let p = pod(json!([container]));
    let c = &p.spec.as_ref().expect("spec").containers[0];
    resolve_env(src, &ctx(&p), c).await
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn source() -> FakeSource {
    FakeSource::default()
        .with_config_map("ns", "cfg", &[("A", "from-cfg"), ("B", "b"), ("1bad", "x"), ("ok.key-1", "y")])
        .with_secret("ns", "sec", &[("PASSWORD", b"s3cret"), ("RAW", b"\xff\xfeok")])
}

#[tokio::test]
async fn env_from_comes_first_with_prefix_and_skips_invalid_names() -> anyhow::Result<()> {
    let env = resolve(
        &source(),
        json!({"name": "c", "envFrom": [
            {"configMapRef": {"name": "cfg"}},
            {"prefix": "S_", "secretRef": {"name": "sec"}},
            {"prefix": "1", "configMapRef": {"name": "cfg"}},
        ], "env": [{"name": "Z", "value": "z"}, {"name": "A", "value": "override"}]}),
    )
    .await?;
    assert_eq!(
        env,
        pairs(&[
            ("A", "override"),
            ("B", "b"),
            ("ok.key-1", "y"),
            ("S_PASSWORD", "s3cret"),
            ("S_RAW", "\u{fffd}\u{fffd}ok"),
            ("Z", "z"),
        ])
    );
    Ok(())
}

#[tokio::test]
async fn later_definitions_replace_in_place() -> anyhow::Result<()> {
    let env = resolve(
        &source(),
        json!({"name": "c", "env": [
            {"name": "X", "value": "1"}, {"name": "Y", "value": "2"}, {"name": "X", "value": "3"},
        ]}),
    )
    .await?;
    assert_eq!(env, pairs(&[("X", "3"), ("Y", "2")]));
    Ok(())
}

#[tokio::test]
async fn values_expand_against_earlier_vars_only() -> anyhow::Result<()> {
    let env = resolve(
        &source(),
        json!({"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}], "env": [
            {"name": "FIRST", "value": "$(LATER)-$(A)"},
            {"name": "LATER", "value": "later"},
            {"name": "ESC", "value": "$$(A) $$ $x $(UNKNOWN) $(A"},
            {"name": "BOTH", "value": "$(FIRST)+$(LATER)"},
            {"name": "EMPTY"},
            {"name": "FROM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "B"}}},
            {"name": "NOT_EXPANDED", "value": "", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ]}),
    )
    .await?;
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("FIRST"), Some("$(LATER)-from-cfg"));
    assert_eq!(get("ESC"), Some("$(A) $ $x $(UNKNOWN) $(A"));
    assert_eq!(get("BOTH"), Some("$(LATER)-from-cfg+later"));
    assert_eq!(get("EMPTY"), Some(""));
    assert_eq!(get("FROM"), Some("b"));
    assert_eq!(get("NOT_EXPANDED"), Some("web"));
    Ok(())
}

#[test]
fn expansion_follows_the_kubelet_rules() {
    let vars = [("A", "1"), ("B", "$(A)")];
    let lookup = |n: &str| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
    for (input, want) in [
        ("$(A)", "1"),
        ("x$(A)y$(A)", "x1y1"),
        ("$(B)", "$(A)"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$1"),
        ("$", "$"),
        ("a$", "a$"),
        ("$(", "$("),
        ("$(A", "$(A"),
        ("$()", "$()"),
        ("$(NOPE)", "$(NOPE)"),
        ("$é$(A)", "$é1"),
        ("plain", "plain"),
    ] {
        assert_eq!(expand(input, lookup, 64), Ok(want.to_string()), "expanding {input:?}");
    }
}

#[tokio::test]
async fn config_and_secret_key_refs() -> anyhow::Result<()> {
    let env = resolve(
        &source(),
        json!({"name": "c", "env": [
            {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "A"}}},
            {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "PASSWORD"}}},
            {"name": "RAW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "RAW"}}},
            {"name": "OPT_KEY", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope", "optional": true}}},
            {"name": "OPT_CM", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
            {"name": "OPT_SKEY", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "nope", "optional": true}}},
            {"name": "OPT_SEC", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": true}}},
        ], "envFrom": [{"configMapRef": {"name": "gone", "optional": true}},
                       {"secretRef": {"name": "gone", "optional": true}}]}),
    )
    .await?;
    assert_eq!(env, pairs(&[("CM", "from-cfg"), ("PW", "s3cret"), ("RAW", "\u{fffd}\u{fffd}ok")]));
    Ok(())
}

#[tokio::test]
async fn missing_required_config_reads_like_the_kubelet() {
    let cases = [
        (json!({"envFrom": [{"configMapRef": {"name": "gone"}}]}), "configmap \"gone\" not found"),
        (json!({"envFrom": [{"secretRef": {"name": "gone"}}]}), "secret \"gone\" not found"),
        (
            json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]}),
            "configmap \"gone\" not found",
        ),
        (
            json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]}),
            "couldn't find key k in ConfigMap ns/cfg",
        ),
        (
            json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]}),
            "secret \"gone\" not found",
        ),
        (
            json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "k"}}}]}),
            "couldn't find key k in Secret ns/sec",
        ),
    ];
    for (mut container, want) in cases {
        container["name"] = json!("c");
        let err = resolve(&source(), container.clone()).await.expect_err("must fail");
        assert!(matches!(err, EnvError::Lookup(LookupError::MissingConfig { .. })), "{container}: {err:?}");
        assert_eq!(err.to_string(), want);
    }
}

#[tokio::test]
async fn other_api_errors_are_api_errors() {
    let src = FakeSource { forbidden: vec!["ns/cfg".into()], ..source() };
    let err =
        resolve(&src, json!({"name": "c", "envFrom": [{"configMapRef": {"name": "cfg", "optional": true}}]}))
            .await
            .expect_err("403 must not be skipped as optional");
    assert!(
        matches!(&err, EnvError::Lookup(LookupError::Api { kind: ConfigKind::ConfigMap, name, .. }) if name == "cfg"),
        "{err:?}"
    );
    assert!(err.to_string().contains("forbidden"), "{err}");
}

#[tokio::test]
async fn each_object_is_read_once_per_resolution() -> anyhow::Result<()> {
    let src = source();
    resolve(
        &src,
        json!({"name": "c", "envFrom": [{"configMapRef": {"name": "cfg"}}], "env": [
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "A"}}},
            {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "B"}}},
            {"name": "Z", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "B", "optional": true}}},
            {"name": "W", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "B", "optional": true}}},
        ]}),
    )
    .await?;
    assert_eq!(src.calls(), vec!["configmap ns/cfg", "configmap ns/gone"]);
    Ok(())
}

#[tokio::test]
async fn field_refs() -> anyhow::Result<()> {
    let paths = [
        ("metadata.name", "web"),
        ("metadata.namespace", "ns"),
        ("metadata.uid", "uid-1"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['absent']", ""),
        ("metadata.annotations['note']", "say \"hi\"\n"),
        ("spec.nodeName", "wasm-node"),
        ("spec.serviceAccountName", "robot"),
        ("status.hostIP", "10.0.0.5"),
        ("status.podIP", "10.0.0.5"),
        ("status.podIPs", "10.0.0.5"),
    ];
    let env: Vec<Value> = paths
        .iter()
        .enumerate()
        .map(
            |(i, (path, _))| json!({"name": format!("V{i}"), "valueFrom": {"fieldRef": {"fieldPath": path}}}),
        )
        .collect();
    let got = resolve(&source(), json!({"name": "c", "env": env})).await?;
    for (i, (path, want)) in paths.iter().enumerate() {
        assert_eq!(got[i], (format!("V{i}"), want.to_string()), "{path}");
    }
    let err = resolve(
        &source(),
        json!({"name": "c", "env": [{"name": "BAD", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}]}),
    )
    .await
    .expect_err("unknown field path");
    assert_eq!(err.to_string(), "env var BAD: unsupported fieldPath: spec.hostname");
    Ok(())
}

#[tokio::test]
async fn resource_field_refs() -> anyhow::Result<()> {
    let refs = [
        (json!({"resource": "limits.cpu"}), "1"),
        (json!({"resource": "limits.cpu", "divisor": "1m"}), "500"),
        (json!({"resource": "requests.cpu", "divisor": "1m"}), "250"),
        (json!({"resource": "limits.memory", "divisor": "1Mi"}), "128"),
        (json!({"resource": "limits.memory"}), "134217728"),
        (json!({"resource": "requests.memory"}), "0"),
        (json!({"resource": "limits.cpu", "containerName": "bare", "divisor": "1m"}), "2000"),
        (json!({"resource": "limits.memory", "containerName": "bare", "divisor": "1Gi"}), "4"),
        (json!({"resource": "requests.cpu", "containerName": "bare"}), "0"),
    ];
    let env: Vec<Value> = refs
        .iter()
        .enumerate()
        .map(|(i, (r, _))| json!({"name": format!("R{i}"), "valueFrom": {"resourceFieldRef": r}}))
        .collect();
    let p = pod(json!([
        {"name": "c", "env": env, "resources": {
            "limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "250m"}}},
        {"name": "bare"},
    ]));
    let spec = p.spec.as_ref().expect("spec");
    let got = resolve_env(&source(), &ctx(&p), &spec.containers[0]).await?;
    for (i, (r, want)) in refs.iter().enumerate() {
        assert_eq!(got[i].1, *want, "{r}");
    }
    Ok(())
}

#[test]
fn env_var_names() {
    for ok in ["A", "_a", "a.b-c_9", "-x", ".x"] {
        assert!(is_env_var_name(ok), "{ok}");
    }
    for bad in ["", "1A", "A=B", "A B", "é"] {
        assert!(!is_env_var_name(bad), "{bad}");
    }
}

fn container(command: Option<&[&str]>, args: Option<&[&str]>) -> Container {
    let list = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| s.to_string()).collect());
    Container { name: "c".into(), command: list(command), args: list(args), ..Container::default() }
}

#[test]
fn argv_follows_command_args_and_image_rules() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let env = pairs(&[("PORT", "8080")]);
    let (ep, cmd) = (s(&["/app.wasm", "6"]), s(&["1"]));
    let (none, cmd_only) = (Vec::<String>::new(), s(&["/app.wasm", "--serve"]));
    type Case<'a> = (Option<&'a [&'a str]>, Option<&'a [&'a str]>, &'a [String], &'a [String], &'a [&'a str]);
    let cases: [Case; 10] = [
        (
            Some(&["tool", "-p", "$(PORT)"]),
            Some(&["x", "$(NONE)"]),
            &ep,
            &cmd,
            &["tool", "-p", "8080", "x", "$(NONE)"],
        ),
        (Some(&["tool"]), None, &ep, &cmd, &["tool"]),
        // args replace Cmd only: every Entrypoint element stays.
        (None, Some(&["--port=$(PORT)"]), &ep, &cmd, &["/app.wasm", "6", "--port=8080"]),
        (None, None, &ep, &cmd, &["/app.wasm", "6", "1"]),
        (None, None, &none, &cmd_only, &["/app.wasm", "--serve"]),
        (None, Some(&["a"]), &none, &cmd_only, &["mod.wasm", "a"]),
        (None, Some(&["a"]), &none, &none, &["mod.wasm", "a"]),
        (None, None, &none, &none, &["mod.wasm"]),
        (Some(&[]), Some(&[]), &ep, &cmd, &["/app.wasm", "6", "1"]),
        (Some(&[]), Some(&["z"]), &ep, &none, &["/app.wasm", "6", "z"]),
    ];
    for (command, args, entrypoint, image_cmd, want) in cases {
        let got = argv(&container(command, args), entrypoint, image_cmd, "mod.wasm", &env).unwrap();
        assert_eq!(got, s(want), "{command:?} {args:?} {entrypoint:?} {image_cmd:?}");
    }
}

#[test]
fn image_entrypoint_is_not_expanded() {
    let got =
        argv(&container(None, None), &["$(PORT)".to_string()], &[], "m", &pairs(&[("PORT", "1")])).unwrap();
    assert_eq!(got, vec!["$(PORT)".to_string()]);
}

#[tokio::test]
async fn an_expansion_bomb_is_refused_naming_the_variable_before_it_is_built() -> anyhow::Result<()> {
    // A=x*1000, B=$(A)$(A), C=$(B)$(B), ...: the 9th step would be 256 KB.
    let mut env = vec![json!({"name": "V0", "value": "x".repeat(1000)})];
    for i in 1..40 {
        env.push(json!({"name": format!("V{i}"), "value": format!("$(V{})$(V{})", i - 1, i - 1)}));
    }
    let err = resolve(&source(), json!({"name": "c", "env": env})).await.expect_err("too long");
    assert_eq!(err.to_string(), "env var V8 is longer than 131072 bytes after $(VAR) expansion");
    // Many values each under the cap, too much together.
    let wide: Vec<Value> =
        (0..20).map(|i| json!({"name": format!("W{i}"), "value": "y".repeat(120 * 1024)})).collect();
    let err = resolve(&source(), json!({"name": "c", "env": wide})).await.expect_err("too large");
    assert_eq!(err.to_string(), "the container's environment is larger than 2097152 bytes in all (at W17)");
    // In args too.
    let env = pairs(&[("A", &"z".repeat(100 * 1024))]);
    let c = container(None, Some(&["ok", "$(A)$(A)"]));
    let err = argv(&c, &[], &[], "m", &env).expect_err("arg too long");
    assert_eq!(err.to_string(), "args[1] is longer than 131072 bytes after $(VAR) expansion");
    Ok(())
}
