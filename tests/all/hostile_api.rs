//! End to end, on the real control plane: hostile clients of the kubelet API (`--port`),
//! each provoking one defect of the hardening issue from outside: a slowloris, idle
//! connections beyond the cap, a flood without client certificates, a malformed exec
//! WebSocket, a huge `sinceSeconds`, and an agent out of file descriptors; and, the other
//! way round, long quiet `logs -f` and `exec` streams that the timeouts must not cut. Each
//! test runs its own node with a bystander pod, and shows `kubectl logs` and `kubectl exec`
//! through the API server still work during or after the attack, and that the agent did
//! not die.

use crate::common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::kubelet_api::{Tls, ask, connect, read_until_closed, tls_config};
use common::node::{TestNode, main_status, phase, pod};
use common::{Cluster, guests};
use serde_json::json;
use tokio_tungstenite::tungstenite::{
    self, Message, client::IntoClientRequest, protocol::frame::coding::CloseCode,
};

/// A pod printing a line every 200 ms: the node must keep serving it and its logs.
struct Bystander {
    name: String,
}

impl Bystander {
    fn start(cluster: &Cluster, node: &TestNode) -> Bystander {
        let image = guests::publish(&cluster.registry, "tool", "v1", "cncf");
        let name = format!("bystander-{}", node.name);
        let mut p = pod(&name, &node.name, &image);
        p["spec"]["containers"][0]["args"] = json!(["serve"]);
        cluster.apply(&p);
        cluster.wait_pod(&name, "Running", Duration::from_secs(90), |p| phase(p) == "Running");
        Bystander { name }
    }

    /// Running, never restarted, still writing; `kubectl logs` and `kubectl exec` through
    /// the API server work.
    fn assert_served(&self, cluster: &Cluster) {
        let p = cluster.get_json(&["pod", &self.name, "-n", "default"]).expect("the bystander exists");
        assert_eq!(phase(&p), "Running", "bystander: {:#}", p["status"]);
        assert_eq!(main_status(&p)["restartCount"], 0, "bystander: {:#}", p["status"]);
        let last = || cluster.kubectl_ok(&["logs", "-n", "default", &self.name, "--tail", "1"]);
        let before = last();
        common::wait_for("the bystander's next line", Duration::from_secs(30), || {
            (last() != before).then_some(())
        });
        let out =
            cluster.kubectl_ok(&["exec", "-n", "default", &self.name, "--", "tool", "echo", "still-here"]);
        assert_eq!(out, "still-here\n");
    }
}

/// Starts a node with `flags` and a bystander on it.
fn node(cluster: &'static Cluster, tag: &str, port: u16, flags: &[&str]) -> (TestNode, Bystander) {
    let node = TestNode::join_with(cluster, tag, port, &cluster.registry, flags);
    let bystander = Bystander::start(cluster, &node);
    (node, bystander)
}

/// The agent is still running and nothing in it panicked.
fn assert_alive(node: &mut TestNode) {
    assert!(node.agent.try_exit().is_none(), "the agent died:\n{}", node.agent.logs());
    let logs = node.agent.logs();
    assert!(!logs.contains("panicked"), "the agent panicked:\n{logs}");
}

/// Slowloris: connections that send half a request header and hold, and connections that
/// never start TLS. Each is closed at `--api-read-header-timeout` without an answer.
#[test]
fn a_slowloris_is_disconnected_at_the_header_deadline() {
    let cluster = require_cluster!();
    let port = 10351;
    let (mut node, bystander) = node(cluster, "api-slow", port, &["--api-read-header-timeout", "2s"]);
    let config = tls_config(cluster, false);
    let mut slow: Vec<Tls> = (0..20)
        .map(|_| {
            let mut tls = connect(port, &config);
            tls.write_all(b"GET /pods HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ").unwrap();
            tls.flush().unwrap();
            tls
        })
        .collect();
    let mut mute: Vec<TcpStream> = (0..20)
        .map(|_| {
            let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
            tcp
        })
        .collect();
    bystander.assert_served(cluster);
    for tls in &mut slow {
        assert_eq!(read_until_closed(tls), "", "closed without an answer");
    }
    for tcp in &mut mute {
        assert_eq!(read_until_closed(tcp), "", "closed before any TLS");
    }
    bystander.assert_served(cluster);
    assert_alive(&mut node);
}

/// More connections than `--api-max-connections`, each asking once with a valid
/// certificate and then sitting idle: those past the cap wait to be accepted, every one is
/// answered in turn, and each is closed after `--api-idle-timeout`; the API server gets in.
#[test]
fn idle_connections_beyond_the_cap_wait_and_are_closed_when_idle() {
    let cluster = require_cluster!();
    let port = 10352;
    let flags =
        ["--api-max-connections", "20", "--api-max-anonymous-connections", "5", "--api-idle-timeout", "3s"];
    let (mut node, bystander) = node(cluster, "api-idle", port, &flags);
    let config = tls_config(cluster, true);
    let clients: Vec<_> = (0..30)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || {
                let mut tls = connect(port, &config);
                let answer = ask(&mut tls, "/healthz");
                (answer, read_until_closed(&mut tls))
            })
        })
        .collect();
    bystander.assert_served(cluster);
    for client in clients {
        let (answer, after) = client.join().expect("a client of the flood failed");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert_eq!(after, "", "nothing after the answer but the close");
    }
    let logs = node.agent.logs();
    assert!(logs.contains("connection limit reached (--api-max-connections)"), "{logs}");
    bystander.assert_served(cluster);
    assert_alive(&mut node);
}

/// A flood of clients without a certificate, each holding its connection after the 401:
/// only `--api-max-anonymous-connections` are kept, the others get a 503 saying why, and
/// the API server (which has a certificate) is served while they hold.
#[test]
fn an_anonymous_flood_cannot_take_the_api_servers_slots() {
    let cluster = require_cluster!();
    let port = 10353;
    let flags = ["--api-max-connections", "40", "--api-max-anonymous-connections", "10"];
    let (mut node, bystander) = node(cluster, "api-anon", port, &flags);
    let config = tls_config(cluster, false);
    let flood: Vec<_> = (0..100)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || {
                let mut tls = connect(port, &config);
                (ask(&mut tls, "/pods"), tls)
            })
        })
        .collect();
    let flood: Vec<(String, Tls)> = flood.into_iter().map(|t| t.join().expect("a flood client")).collect();
    let held = flood.iter().filter(|(a, _)| a.starts_with("HTTP/1.1 401")).count();
    let refused: Vec<&String> =
        flood.iter().map(|(a, _)| a).filter(|a| a.starts_with("HTTP/1.1 503")).collect();
    assert!((1..=10).contains(&held), "{held} anonymous connections were kept");
    assert_eq!(held + refused.len(), 100, "every other one is refused");
    for answer in &refused {
        assert!(answer.contains("too many connections without a client certificate"), "{answer}");
    }
    // The kept ones still hold their slots. Without their cap, 40 of them filled the node
    // and the other 60 (and the API server) waited for the idle timeout.
    bystander.assert_served(cluster);
    drop(flood);
    let logs = node.agent.logs();
    assert!(logs.contains("too many connections without a verified client certificate"), "{logs}");
    assert_alive(&mut node);
}

/// Exec over WebSocket with broken messages: a base64 message whose first character is
/// multibyte (it panicked the agent's reader), one whose data is not base64, and a 2 MiB
/// binary message. Each ends its session with an error, never a panic.
#[test]
fn malformed_exec_websocket_messages_end_the_session_not_the_agent() {
    let cluster = require_cluster!();
    let port = 10354;
    let (mut node, bystander) = node(cluster, "api-ws", port, &[]);
    let config = tls_config(cluster, true);
    let exec = |protocol: &str| {
        // About 5 s of output and exit 0: a session that is not cut ends with 1000.
        let url = format!(
            "wss://127.0.0.1:{port}/exec/default/{}/main?command=tool&command=count&command=25&input=1&output=1",
            bystander.name
        );
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        let (ws, _) = tungstenite::client(request, connect(port, &config)).expect("the exec upgrade");
        ws
    };
    for bad in ["é", "\u{1F600}QUJD", "0not base64!"] {
        let mut ws = exec("base64.channel.k8s.io");
        ws.send(Message::text(bad)).unwrap();
        let close = loop {
            match ws.read() {
                Ok(Message::Close(frame)) => break frame,
                Ok(_) => continue,
                Err(e) => panic!("{bad:?}: the connection ended without a close: {e}"),
            }
        };
        let close = close.expect("a close frame with a code");
        assert_eq!(close.code, CloseCode::Invalid, "{bad:?}: {close:?}");
        assert!(!close.reason.is_empty(), "the close names what was wrong");
    }
    let mut ws = exec("v5.channel.k8s.io");
    let mut big = vec![0u8; 2 << 20];
    big[0] = 0; // stdin
    let _ = ws.send(Message::binary(big));
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => {
                assert_ne!(frame.map(|f| f.code), Some(CloseCode::Normal), "a 2 MiB message was taken");
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    bystander.assert_served(cluster);
    assert_alive(&mut node);
}

/// `sinceSeconds=9223372036854775807` (and u64::MAX, directly): further back than the clock
/// goes is the whole log, not an overflow.
#[test]
fn a_huge_since_seconds_is_the_whole_log() {
    let cluster = require_cluster!();
    let port = 10355;
    let (mut node, bystander) = node(cluster, "api-since", port, &[]);
    let path =
        format!("/api/v1/namespaces/default/pods/{}/log?sinceSeconds=9223372036854775807", bystander.name);
    let out = cluster.kubectl(&["get", "--raw", &path]);
    assert!(out.status.success(), "kubectl: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("serving\n"),
        "the whole log from its first line"
    );
    let mut tls = connect(port, &tls_config(cluster, true));
    let path = format!("/containerLogs/default/{}/main?sinceSeconds=18446744073709551615", bystander.name);
    let answer = ask(&mut tls, &path);
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("serving\n"), "{answer}");
    bystander.assert_served(cluster);
    assert_alive(&mut node);
}

/// The agent runs out of file descriptors (its soft limit lowered from outside) while
/// clients connect: the accept loop pauses and logs once instead of spinning, and serves
/// again once descriptors are back.
#[test]
fn out_of_file_descriptors_the_accept_loop_backs_off() {
    let cluster = require_cluster!();
    let port = 10356;
    let (mut node, bystander) = node(cluster, "api-emfile", port, &[]);
    let pid =
        krustlet_wasi::server::endpoint::Endpoint::read(&node.data_dir()).expect("kubelet-api.json").pid;
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let limit = |soft: &str| {
        let out = std::process::Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:")])
            .output()
            .unwrap();
        assert!(out.status.success(), "prlimit: {}", String::from_utf8_lossy(&out.stderr));
    };
    let before = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft = before
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("a soft limit")
        .to_string();
    let failed = || node.agent.logs().matches("accepting a connection failed").count();
    limit(&(open + 4).to_string());
    let held: Vec<TcpStream> = (0..30).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    common::wait_for("the agent to hit EMFILE", Duration::from_secs(30), || (failed() > 0).then_some(()));
    // utime + stime in clock ticks: fields 14 and 15 of /proc/PID/stat, counted after the
    // command name's closing parenthesis from field 3.
    let cpu = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<u64> = after.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
        fields[11] + fields[12]
    };
    let start = cpu(pid);
    std::thread::sleep(Duration::from_secs(3));
    eprintln!("agent CPU while out of descriptors: {} ticks in 3 s", cpu(pid) - start);
    let failures = failed();
    limit(&soft);
    drop(held);
    assert!(failures <= 3, "the accept error was logged {failures} times");
    node.agent.wait_output("accepting connections again", Duration::from_secs(30));
    bystander.assert_served(cluster);
    assert_alive(&mut node);
}

/// With timeouts far shorter than the streams, `kubectl logs -f` keeps following and a
/// `kubectl exec -i` silent both ways (SPDY from kubectl 1.20, WebSocket from 1.32) still
/// carries what is typed after a pause longer than both: a request in progress and an
/// upgraded stream are never idle.
#[test]
fn long_quiet_streams_outlive_the_timeouts() {
    let cluster = require_cluster!();
    let port = 10357;
    let flags = ["--api-read-header-timeout", "1s", "--api-idle-timeout", "2s"];
    let (mut node, bystander) = node(cluster, "api-long", port, &flags);
    let pause = Duration::from_secs(6);
    let kubectl = |binary: &str, args: &[&str]| {
        let mut cmd = std::process::Command::new(binary);
        cmd.arg("--kubeconfig").arg(&cluster.kubeconfig).args(args);
        cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        cmd.stderr(std::process::Stdio::piped()).spawn().expect("kubectl runs")
    };
    // Lines read from a child's stdout, as they come.
    let lines = |child: &mut std::process::Child| {
        let (tx, rx) = std::sync::mpsc::channel();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(out).map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };

    let mut follow = kubectl("kubectl", &["logs", "-f", "-n", "default", &bystander.name, "--tail", "1"]);
    let followed = lines(&mut follow);
    followed.recv_timeout(Duration::from_secs(30)).expect("a first line");
    std::thread::sleep(pause);
    assert!(follow.try_wait().unwrap().is_none(), "kubectl logs -f ended");
    let last = followed.try_iter().last();
    let next = followed.recv_timeout(Duration::from_secs(30)).expect("lines keep coming");
    assert_ne!(Some(next), last);
    let _ = follow.kill();
    let _ = follow.wait();

    for binary in ["kubectl", "/var/cache/krustlet-wasi/k8s-1.20.2/bin/kubectl-1.20"] {
        // `tool cat` echoes stdin in 4 KiB blocks: nothing comes back before the end, so
        // the session is silent both ways during the pause.
        let mut exec =
            kubectl(binary, &["exec", "-i", "-n", "default", &bystander.name, "--", "tool", "cat"]);
        let mut stdin = exec.stdin.take().unwrap();
        writeln!(stdin, "before the pause").unwrap();
        std::thread::sleep(pause);
        writeln!(stdin, "after the pause").unwrap();
        drop(stdin);
        let out = exec.wait_with_output().unwrap();
        assert!(out.status.success(), "{binary}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "before the pause\nafter the pause\n", "{binary}");
    }
    assert_alive(&mut node);
}

/// An exec session keeps its connection's place under `--api-max-connections` for as long
/// as it runs (upgraded streams are not free): with the cap taken by sessions, the next
/// client waits until one ends.
#[test]
fn exec_sessions_count_against_the_connection_cap() {
    let cluster = require_cluster!();
    let port = 10358;
    let flags = ["--api-max-connections", "3", "--api-max-anonymous-connections", "1"];
    let (mut node, bystander) = node(cluster, "api-cap", port, &flags);
    let config = tls_config(cluster, true);
    let url = format!(
        "wss://127.0.0.1:{port}/exec/default/{}/main?command=tool&command=cat&input=1&output=1",
        bystander.name
    );
    let mut sessions: Vec<_> = (0..3)
        .map(|_| {
            let mut request = url.clone().into_client_request().unwrap();
            request.headers_mut().insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse().unwrap());
            let (mut ws, _) = tungstenite::client(request, connect(port, &config)).expect("the exec upgrade");
            assert!(matches!(ws.read(), Ok(Message::Binary(_))), "the session announces its streams");
            ws
        })
        .collect();
    let waiting = std::thread::spawn({
        let config = config.clone();
        move || {
            let answer = ask(&mut connect(port, &config), "/healthz");
            (answer, std::time::Instant::now())
        }
    });
    // Time for a wrongly admitted client to be answered; then one session ends.
    std::thread::sleep(Duration::from_secs(3));
    let ended = std::time::Instant::now();
    let mut first = sessions.remove(0);
    first.send(Message::binary(vec![255u8, 0])).unwrap(); // v5 CLOSE of stdin: cat exits
    while first.read().is_ok() {}
    let (answer, answered) = waiting.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answered > ended, "the client was served while three sessions held the cap");
    drop(sessions);
    bystander.assert_served(cluster);
    assert_alive(&mut node);
}
