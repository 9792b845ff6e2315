//! Unit tests of flag defaults and validation in `config/mod.rs`.

use super::*;

fn host() -> HostFacts {
    HostFacts {
        hostname: "Wasm-Box".into(),
        addresses: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap(), "192.0.2.7".parse().unwrap()],
        home: Some("/home/ada".into()),
        kubeconfig_env: None,
    }
}

fn resolve(flags: Flags) -> Result<Config, ConfigError> {
    Config::resolve(&flags, &host())
}

#[test]
fn defaults_come_from_the_host() {
    let c = resolve(Flags::default()).unwrap();
    assert_eq!(c.node_ip.to_string(), "192.0.2.7");
    assert_eq!(c.node_name, "wasm-box");
    assert_eq!(c.data_dir, PathBuf::from("/home/ada/.krustlet"));
    assert_eq!(c.kubeconfig, PathBuf::from("/home/ada/.krustlet/config/kubeconfig"));
    assert_eq!(c.cert_file, PathBuf::from("/home/ada/.krustlet/config/krustlet.crt"));
    assert_eq!(c.private_key_file, PathBuf::from("/home/ada/.krustlet/config/krustlet.key"));
    assert_eq!(c.bootstrap_file, PathBuf::from(DEFAULT_BOOTSTRAP_FILE));
    assert_eq!(c.addr.to_string(), "0.0.0.0");
    assert_eq!(c.port, 10250);
    assert_eq!(c.max_pods, 110);
    assert!(c.node_labels.is_empty());
    assert!(c.rotate_certificates, "certificates are renewed unless --rotate-certificates=false");
    assert_eq!((c.healthz_port, c.container_log_max_size, c.container_log_max_files), (10248, 10 << 20, 5));
}

#[test]
fn hostname_and_node_name_default_to_the_lowercased_hostname() {
    let c = resolve(Flags::default()).unwrap();
    assert_eq!(c.hostname, "wasm-box");
    let c = resolve(Flags { node_name: Some("edge-1".into()), ..Flags::default() }).unwrap();
    assert_eq!((c.node_name.as_str(), c.hostname.as_str()), ("edge-1", "wasm-box"));
    let err = resolve(Flags { hostname: Some("no spaces".into()), ..Flags::default() }).unwrap_err();
    assert_eq!(err.flag, "hostname");
}

#[test]
fn kubeconfig_env_is_used_when_flag_is_absent() {
    let mut h = host();
    h.hostname = "box".into();
    h.kubeconfig_env = Some("/tmp/kc".into());
    let c = Config::resolve(&Flags::default(), &h).unwrap();
    assert_eq!(c.kubeconfig, PathBuf::from("/tmp/kc"));
    let flags = Flags { kubeconfig: Some("/x".into()), ..Flags::default() };
    assert_eq!(Config::resolve(&flags, &h).unwrap().kubeconfig, PathBuf::from("/x"));
}

#[test]
fn bad_values_name_their_flag_on_one_line() {
    let ok = |f: Flags| Flags { hostname: Some("box".into()), ..f };
    let cases = [
        (Flags { node_ip: Some("10.0.0.300".into()), ..Flags::default() }, "node-ip"),
        (Flags { addr: Some("localhost".into()), ..Flags::default() }, "addr"),
        (Flags { port: Some("0".into()), ..Flags::default() }, "port"),
        (Flags { port: Some("70000".into()), ..Flags::default() }, "port"),
        (Flags { max_pods: Some("-1".into()), ..Flags::default() }, "max-pods"),
        (Flags { node_name: Some("Bad_Name".into()), ..Flags::default() }, "node-name"),
        (Flags { node_labels: Some("novalue".into()), ..Flags::default() }, "node-labels"),
        (Flags { eviction_hard: Some("disk.free<1Gi".into()), ..Flags::default() }, "eviction-hard"),
        (Flags { node_labels: Some("a=b c".into()), ..Flags::default() }, "node-labels"),
        (Flags { node_labels: Some("-x=1".into()), ..Flags::default() }, "node-labels"),
        (
            Flags { insecure_registries: Some("http://r:5000".into()), ..Flags::default() },
            "insecure-registries",
        ),
    ];
    for (flags, flag) in cases {
        let err = resolve(ok(flags)).unwrap_err();
        assert_eq!(err.flag, flag);
        let line = err.to_string();
        assert!(line.starts_with(&format!("--{flag}: ")), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}

#[test]
fn labels_and_registries_parse() {
    let labels = parse_labels("team=wasm, example.com/tier=gold ,empty=").unwrap();
    assert_eq!(labels.get("team").map(String::as_str), Some("wasm"));
    assert_eq!(labels.get("example.com/tier").map(String::as_str), Some("gold"));
    assert_eq!(labels.get("empty").map(String::as_str), Some(""));
    let f = Flags {
        hostname: Some("box".into()),
        insecure_registries: Some("127.0.0.1:5000,reg.local".into()),
        ..Flags::default()
    };
    assert_eq!(resolve(f).unwrap().insecure_registries, vec!["127.0.0.1:5000", "reg.local"]);
}

#[test]
fn no_usable_address_or_home_is_a_clear_error() {
    let h = HostFacts {
        hostname: "box".into(),
        addresses: vec!["127.0.0.1".parse().unwrap()],
        home: None,
        kubeconfig_env: None,
    };
    assert_eq!(Config::resolve(&Flags::default(), &h).unwrap_err().flag, "node-ip");
    let f = Flags { node_ip: Some("127.0.0.1".into()), ..Flags::default() };
    assert_eq!(Config::resolve(&f, &h).unwrap_err().flag, "data-dir");
}

#[test]
fn sync_frequency_takes_go_durations_of_at_least_a_second() {
    let parse = |raw: &str| super::parse::parse_duration("sync-frequency", raw, Duration::from_secs(1));
    assert_eq!(parse("90s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
    assert_eq!(parse("1500ms").unwrap(), Duration::from_millis(1500));
    for bad in ["", "10", "s", "500ms", "1d", "1.5s", "-1s"] {
        let e = parse(bad).unwrap_err().to_string();
        assert!(e.contains("sync-frequency") && e.contains("duration"), "{bad:?}: {e}");
    }
}

#[test]
fn durations_past_gos_longest_are_errors_not_panics() {
    let parse =
        |raw: &str| super::parse::parse_duration("http-request-timeout", raw, Duration::from_millis(1));
    assert_eq!(parse("2562047h").unwrap(), Duration::from_secs(2_562_047 * 3600));
    for long in ["5124095576030431h", "2562048h", "99999999999999999999999s", "2562047h48m"] {
        let e = parse(long).unwrap_err().to_string();
        assert!(e.contains("http-request-timeout") && e.contains("longer than"), "{long:?}: {e}");
    }
    // Whatever is accepted can be added to the clock.
    let longest = parse("2562047h47m16s").unwrap();
    assert!(std::time::Instant::now().checked_add(longest).is_some());
}

#[test]
fn image_max_size_is_a_quantity_of_at_least_a_mebibyte() {
    let with = |raw: &str| resolve(Flags { image_max_size: Some(raw.into()), ..Flags::default() });
    assert_eq!(resolve(Flags::default()).unwrap().image_max_size, 256 << 20);
    assert_eq!(with("1Gi").unwrap().image_max_size, 1 << 30);
    assert_eq!(with("500M").unwrap().image_max_size, 500_000_000);
    for bad in ["", "lots", "512Ki", "-1Gi"] {
        let e = with(bad).unwrap_err();
        assert_eq!(e.flag, "image-max-size", "{bad:?}");
        assert!(e.to_string().contains("at least 1Mi"), "{e}");
    }
}

#[test]
fn rotate_certificates_is_on_unless_turned_off() {
    use clap::Parser as _;
    let parse = |args: &[&str]| {
        let flags = Flags::try_parse_from(["krustlet-wasi"].iter().chain(args)).unwrap();
        resolve(flags).unwrap().rotate_certificates
    };
    assert!(parse(&[]));
    assert!(parse(&["--rotate-certificates=true"]));
    assert!(!parse(&["--rotate-certificates=false"]));
    assert!(Flags::try_parse_from(["krustlet-wasi", "--rotate-certificates=maybe"]).is_err());
}
