use std::time::Duration;

use tokio::sync::mpsc;

use super::*;

fn probe(kind: ProbeKind, port: u16, failure_threshold: u32) -> ProbeSpec {
    ProbeSpec {
        kind,
        handler: Handler::Tcp { host: Some("127.0.0.1".into()), port },
        initial_delay: Duration::ZERO,
        period: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        success_threshold: 1,
        failure_threshold,
    }
}

/// Registers `probes`; returns the transitions and the Unhealthy messages as they come.
fn register(
    prober: &Prober,
    probes: Vec<ProbeSpec>,
) -> (ProbeHandle, mpsc::UnboundedReceiver<ProbeEvent>, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (utx, urx) = mpsc::unbounded_channel();
    let handle = prober.register(Registration {
        probes,
        target: Target { pod_ip: "127.0.0.1".parse().unwrap(), container: None },
        report: Arc::new(move |e| {
            let _ = tx.send(e);
        }),
        unhealthy: Arc::new(move |m| {
            let _ = utx.send(m);
        }),
    });
    (handle, rx, urx)
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("in time").expect("open")
}

#[tokio::test]
async fn readiness_follows_the_port_and_liveness_fails_past_its_threshold() {
    let prober = Prober::start();
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_port = open.local_addr().unwrap().port();
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_h, mut events, mut unhealthy) = register(
        &prober,
        vec![probe(ProbeKind::Readiness, open_port, 3), probe(ProbeKind::Liveness, closed_port, 2)],
    );
    assert_eq!(next(&mut events).await, ProbeEvent::Ready(true));
    let first = next(&mut unhealthy).await;
    assert!(first.starts_with("Liveness probe failed: dial tcp 127.0.0.1:"), "{first}");
    // The second failure in a row reaches the threshold.
    match next(&mut events).await {
        ProbeEvent::Failed { kind: ProbeKind::Liveness, message } => {
            assert!(message.contains("connect"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(next(&mut unhealthy).await, first);
}

#[tokio::test]
async fn the_startup_probe_gates_the_others_and_can_fail_the_run() {
    let prober = Prober::start();
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_h, mut events, _u) = register(
        &prober,
        vec![probe(ProbeKind::Startup, closed_port, 2), probe(ProbeKind::Readiness, closed_port, 1)],
    );
    // Readiness never ran (it would have said Ready(false) after one failure).
    match next(&mut events).await {
        ProbeEvent::Failed { kind: ProbeKind::Startup, .. } => {}
        other => panic!("{other:?}"),
    }
    assert!(tokio::time::timeout(Duration::from_millis(1500), events.recv()).await.is_err());

    // A startup probe that cannot run here does not hold the container back.
    let mut unsupported = probe(ProbeKind::Startup, 1, 1);
    unsupported.handler = Handler::Unsupported("grpc".into());
    let (_h, mut events, _u) = register(&prober, vec![unsupported]);
    assert_eq!(next(&mut events).await, ProbeEvent::Started);
}

#[tokio::test]
async fn dropping_the_handle_stops_the_probes() {
    let prober = Prober::start();
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut slow = probe(ProbeKind::Liveness, closed_port, 1);
    slow.initial_delay = Duration::from_millis(500);
    let (handle, mut events, _u) = register(&prober, vec![slow]);
    drop(handle);
    let got = tokio::time::timeout(Duration::from_millis(1500), events.recv()).await;
    assert!(!matches!(got, Ok(Some(_))), "{got:?}");
}
