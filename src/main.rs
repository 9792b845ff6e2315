//! The `krustlet-wasi` binary: parse flags, set up logging and TLS, run the agent until
//! SIGTERM or SIGINT.

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use krustlet_wasi::base::host;
use krustlet_wasi::cli::{Command, PushArgs};
use krustlet_wasi::config::{Config, Flags};
use krustlet_wasi::{agent, cli};

fn main() -> ExitCode {
    // Before any thread exists.
    krustlet_wasi::logging::default_lib_backtrace();
    let flags = match Flags::try_parse() {
        Ok(flags) => flags,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line naming the flag and the problem (clap's hints follow after a blank
            // line), or, when that line ends in ':', the list it introduces on one line.
            let text = e.to_string();
            let said: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            eprintln!("{}", if said.is_empty() { "error: invalid arguments".into() } else { said.join(" ") });
            return ExitCode::from(2);
        }
    };
    match &flags.command {
        Some(Command::Pods) => {
            return local(&flags, |dir, mut out| async move { cli::pods(&dir, &mut out).map(|()| 0) });
        }
        Some(Command::Logs(args)) => {
            return local(
                &flags,
                |dir, mut out| async move { cli::logs(&dir, args, &mut out).await.map(|()| 0) },
            );
        }
        Some(Command::Exec(args)) => {
            return local(
                &flags,
                |dir, _| async move { cli::exec(&dir, args, &mut std::io::stderr()).await },
            );
        }
        _ => {}
    }
    match krustlet_wasi::config::log_format_json(&flags) {
        Ok(json) => krustlet_wasi::logging::init(json),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    // rustls needs one process-wide crypto provider; we build with ring only.
    if rustls::crypto::ring::default_provider().install_default().is_err() {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    if let Some(Command::Push(args)) = &flags.command {
        return push(args);
    }
    let cfg = match Config::resolve(&flags, &host::facts()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.event_interval(krustlet_wasi::config::RUNTIME_EVENT_INTERVAL);
    builder.max_blocking_threads(krustlet_wasi::config::RUNTIME_BLOCKING_THREADS);
    let runtime = match async_runtime(builder) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(agent::run(cfg, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `krustlet-wasi pods` / `logs` / `exec`: use the state under the data dir and print to
/// stdout; the command's result is the exit code. A closed stdout (`| head`) ends the
/// command quietly.
fn local<F, Fut>(flags: &Flags, command: F) -> ExitCode
where
    F: FnOnce(std::path::PathBuf, std::io::StdoutLock<'static>) -> Fut,
    Fut: std::future::Future<Output = cli::Result<u8>>,
{
    let dir = match krustlet_wasi::config::resolve_data_dir(flags, &host::facts()) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match async_runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(command(dir, std::io::stdout().lock())) {
        Ok(code) => ExitCode::from(code),
        Err(cli::CliError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `krustlet-wasi push FILE REFERENCE`: prints the manifest digest.
fn push(args: &PushArgs) -> ExitCode {
    use krustlet_wasi::oci::{PushFormat, RegistryAuth};
    let insecure = match args.insecure_registries.as_deref().map(krustlet_wasi::config::parse_registries) {
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Some(Ok(r)) => r,
        None => Vec::new(),
    };
    let format = if args.format == "wasm-to-oci" { PushFormat::WasmToOci } else { PushFormat::Cncf };
    let runtime = match async_runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let auth = RegistryAuth::anonymous();
    let pushed = krustlet_wasi::oci::push(&args.file, &args.reference, format, &insecure, &auth);
    match runtime.block_on(pushed) {
        Ok(digest) => {
            println!("pushed {} ({digest})", args.reference);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Builds a tokio runtime with I/O and timers; a failure is printed and becomes the exit code.
fn async_runtime(mut builder: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: starting the async runtime failed: {e}");
        ExitCode::FAILURE
    })
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("signal received");
}
