//! `krustlet-wasi exec POD [-n NS] [-c CONTAINER] [-i] -- COMMAND [ARG...]`: runs a command
//! in a pod of the agent on this machine, as `kubectl exec` does, without kubectl or an
//! API server. It finds the pod in the data dir, the agent's kubelet API in
//! `<data-dir>/kubelet-api.json`, connects to it on loopback (TLS pinned to the agent's
//! `--cert-file`), and speaks the WebSocket exec protocol (v5, else v4) to `/exec`. The
//! command's exit code becomes this process's. Needs an agent started with
//! `--allow-anonymous-localhost` (standalone only): otherwise the kubelet API wants a
//! client certificate from the cluster CA, and `kubectl exec` is the way in.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};

use super::state::{self, PodRecord};
use super::{CliError, ExecArgs, Result, pinned};
use crate::server::endpoint::{self, Endpoint};

/// The protocols offered, best first (v5 can say "no more stdin").
const PROTOCOLS: &str = "v5.channel.k8s.io, v4.channel.k8s.io";
/// v5's signal that the client is done writing on a channel: `[CLOSE, channel]`.
const CLOSE: u8 = 255;
const STDIN: u8 = 0;

/// Runs `args.command` in the pod and returns its exit code. Fails before running anything,
/// with one line saying why, when the pod, container or agent cannot be used.
pub async fn exec(data_dir: &Path, args: &ExecArgs, notes: &mut impl Write) -> Result<u8> {
    let pod = state::find_pod(data_dir, &args.pod, args.namespace.as_deref())?;
    let container = choose_container(&pod, args.container.as_deref(), notes)?;
    let record = data_dir.join(endpoint::FILE_NAME);
    let api =
        Endpoint::read(data_dir).map_err(|source| CliError::NoEndpoint { path: record.clone(), source })?;
    if !api.anonymous_localhost {
        return Err(CliError::NotAnonymous { pid: api.pid });
    }
    let socket = api.local_socket();
    let unreachable = |source| CliError::Connect { socket, pid: api.pid, source };
    let tcp = tokio::net::TcpStream::connect(socket).await.map_err(unreachable)?;
    // Small frames both ways: no Nagle delay.
    let _ = tcp.set_nodelay(true);
    let config = pinned::client_config(&api.cert_file)
        .map_err(|source| CliError::ReadCert { path: api.cert_file.clone(), source })?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(socket.ip().into()), tcp)
        .await
        .map_err(unreachable)?;

    let mut query = form_urlencoded::Serializer::new(String::new());
    for part in &args.command {
        query.append_pair("command", part);
    }
    query.append_pair("stdout", "1").append_pair("stderr", "1");
    if args.stdin {
        query.append_pair("stdin", "1");
    }
    let url = format!("wss://{socket}/exec/{}/{}/{container}?{}", pod.namespace, pod.name, query.finish());
    let mut request = url.into_client_request().map_err(|e| CliError::Exec(e.to_string()))?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", http::HeaderValue::from_static(PROTOCOLS));
    let (socket, response) = tokio_tungstenite::client_async(request, tls).await.map_err(refused)?;
    let v5 = response.headers().get("sec-websocket-protocol").is_some_and(|p| p == "v5.channel.k8s.io");
    pump(socket, args.stdin, v5).await
}

/// The container asked for, else the pod's first, saying so (as kubectl does) when there
/// are others.
fn choose_container(pod: &PodRecord, asked: Option<&str>, notes: &mut impl Write) -> Result<String> {
    let names: Vec<String> = pod.status.container_statuses.iter().map(|c| c.name.clone()).collect();
    match asked {
        Some(name) if pod.container(name).is_some() => Ok(name.to_string()),
        Some(name) => Err(CliError::ContainerNotFound { pod: pod.name.clone(), container: name.into() }),
        None => {
            let first =
                names.first().cloned().ok_or_else(|| CliError::NoContainers { pod: pod.name.clone() })?;
            if names.len() > 1 {
                let _ = writeln!(notes, "Defaulted container \"{first}\" out of: {}", names.join(", "));
            }
            Ok(first)
        }
    }
}

/// The agent's answer when it does not upgrade the connection, as one line.
fn refused(e: tungstenite::Error) -> CliError {
    match e {
        tungstenite::Error::Http(response) => {
            let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            CliError::Refused { status: response.status().as_u16(), message: body.trim().to_string() }
        }
        e => CliError::Exec(e.to_string()),
    }
}

/// Copies our stdin to channel 0 (if asked) and channels 1 and 2 to stdout and stderr until
/// the agent closes; the status on channel 3 gives the exit code.
async fn pump<S>(socket: tokio_tungstenite::WebSocketStream<S>, stdin: bool, v5: bool) -> Result<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    if stdin {
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n @ 1..) = input.read(&mut buf).await {
                let mut frame = Vec::with_capacity(n + 1);
                frame.push(STDIN);
                frame.extend_from_slice(&buf[..n]);
                if tx.send(frame).await.is_err() {
                    return;
                }
            }
        });
    } else {
        drop(tx);
    }
    let (mut stdout, mut stderr) = (tokio::io::stdout(), tokio::io::stderr());
    let mut code = 0u8;
    let mut input_open = stdin;
    loop {
        tokio::select! {
            frame = rx.recv(), if input_open => match frame {
                Some(frame) => sink.send(Message::binary(frame)).await.map_err(stream_error)?,
                None => {
                    input_open = false;
                    // v4 has no way to say "end of input": the command reads until it exits.
                    if v5 {
                        sink.send(Message::binary(vec![CLOSE, STDIN])).await.map_err(stream_error)?;
                    }
                }
            },
            message = stream.next() => match message {
                Some(Ok(Message::Binary(data))) if !data.is_empty() => {
                    let payload = &data[1..];
                    match data[0] {
                        1 => write_out(&mut stdout, payload).await?,
                        2 => write_out(&mut stderr, payload).await?,
                        3 => code = exit_code(payload)?,
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(stream_error(e)),
            },
        }
    }
    Ok(code)
}

async fn write_out(to: &mut (impl tokio::io::AsyncWrite + Unpin), data: &[u8]) -> Result<()> {
    to.write_all(data).await.map_err(CliError::Write)?;
    to.flush().await.map_err(CliError::Write)
}

fn stream_error(e: tungstenite::Error) -> CliError {
    CliError::Exec(format!("the exec stream failed: {e}"))
}

/// The exit code in a remotecommand status: 0 for Success, the code of a NonZeroExitCode;
/// any other failure is an error carrying the agent's message.
pub(super) fn exit_code(status: &[u8]) -> Result<u8> {
    let status: Value = serde_json::from_slice(status).unwrap_or(Value::Null);
    if status["status"] == "Success" {
        return Ok(0);
    }
    let causes = status["details"]["causes"].as_array().cloned().unwrap_or_default();
    if status["reason"] == "NonZeroExitCode"
        && let Some(code) = causes
            .iter()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse::<i64>().ok())
    {
        // A shell's view of codes beyond a byte.
        return Ok((code & 0xff) as u8);
    }
    let message = status["message"].as_str().map(String::from).unwrap_or_else(|| status.to_string());
    Err(CliError::Remote(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_gives_the_exit_code_or_the_agents_message() {
        assert_eq!(exit_code(br#"{"metadata":{},"status":"Success"}"#).unwrap(), 0);
        let failed = br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#;
        assert_eq!(exit_code(failed).unwrap(), 7);
        let big = br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"257"}]}}"#;
        assert_eq!(exit_code(big).unwrap(), 1);
        let internal = br#"{"status":"Failure","reason":"InternalError","message":"Internal error occurred: no such command"}"#;
        let err = exit_code(internal).unwrap_err().to_string();
        assert_eq!(err, "Internal error occurred: no such command");
    }
}
