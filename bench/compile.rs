//! bench/newimage.sh's baseline: compiles one wasm file alone, as `wasmtime compile` does
//! (`Engine::precompile_module`/`precompile_component`, then the `.cwasm` written out),
//! with the settings of the provider's engine that change code (epoch interruption, the
//! component model), once with Wasmtime's parallel compilation on (its default: rayon, one
//! thread per core) and once with it off; and, to tell the provider's work from the
//! agent's, the provider's own load (`Runtime::load_file` with a cache directory: its
//! compile threads, the compile, the cache write, the link). Prints
//! `MODE wall_ms N cpu_ms N` per mode; asserts nothing.
//!
//!   bench-compile FILE.wasm [OUT.cwasm] [MODE...]
//!
//! MODE: `parallel`, `serial` (the default pair), `parallel-nice` (parallel on threads at
//! the compile threads' priority, nice +10), `runtime` (the provider's load).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use krustlet_wasi_provider::{GUEST_NICE, Runtime};
use wasmtime::{Config, Engine};

/// User plus system CPU time of this process so far, in ms (`/proc/self/stat`, USER_HZ 100).
fn cpu_ms() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat.rsplit(')').next().context("malformed /proc/self/stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> { Ok(fields.get(i).context("short /proc/self/stat")?.parse()?) };
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    Ok((ticks(11)? + ticks(12)?) * 10)
}

/// `work`'s wall and CPU time in ms.
fn timed(work: impl FnOnce() -> Result<()>) -> Result<(u128, u64)> {
    let (started, cpu) = (Instant::now(), cpu_ms()?);
    work()?;
    Ok((started.elapsed().as_millis(), cpu_ms()? - cpu))
}

fn precompile(bytes: &[u8], parallel: bool, out: &str) -> Result<()> {
    let mut config = Config::new();
    config.epoch_interruption(true).wasm_component_model(true).parallel_compilation(parallel);
    let engine = Engine::new(&config)?;
    // A component's preamble has version 0x0d after `\0asm`; a core module's has 1.
    let code = match bytes.get(4) == Some(&0x0d) {
        true => engine.precompile_component(bytes)?,
        false => engine.precompile_module(bytes)?,
    };
    std::fs::write(out, code)?;
    Ok(())
}

/// A rayon pool of one thread per CPU at nice +[`GUEST_NICE`], as the provider's.
fn nice_pool() -> Result<rayon::ThreadPool> {
    let nice = rustix::process::getpriority_process(None)?.saturating_add(GUEST_NICE).min(19);
    Ok(rayon::ThreadPoolBuilder::new()
        .start_handler(move |_| {
            let _ = rustix::process::setpriority_process(None, nice);
        })
        .build()?)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench-compile FILE.wasm [OUT.cwasm] [parallel|serial|parallel-nice|runtime...]";
    let file = args.next().context(usage)?;
    let out = args.next().unwrap_or_else(|| format!("{file}.cwasm"));
    let mut modes: Vec<String> = args.collect();
    if modes.is_empty() {
        modes = vec!["parallel".into(), "serial".into()];
    }
    let bytes = std::fs::read(&file).with_context(|| format!("reading {file}"))?;
    let cache = tempfile::tempdir()?;
    let runtime = Runtime::builder().cache_dir(cache.path()).http_pool(0).build()?;
    for (round, mode) in modes.iter().enumerate() {
        let (wall, cpu) = match mode.as_str() {
            "parallel" => timed(|| precompile(&bytes, true, &out))?,
            "serial" => timed(|| precompile(&bytes, false, &out))?,
            "parallel-nice" => {
                let pool = nice_pool()?;
                timed(|| pool.install(|| precompile(&bytes, true, &out)))?
            }
            // A new digest each time: nothing in memory or on disk.
            "runtime" => timed(|| {
                runtime.load_file(file.as_ref(), &format!("sha256:bench{round}"))?;
                Ok(())
            })?,
            other => bail!("unknown mode {other:?}; {usage}"),
        };
        println!("{mode} wall_ms {wall} cpu_ms {cpu}");
    }
    Ok(())
}
