//! bench/newimage.sh's baseline: compiles one wasm file alone, as `wasmtime compile` does
//! (`Engine::precompile_module`/`precompile_component`, then the `.cwasm` written out),
//! with the settings of the provider's engine that change code (epoch interruption, the
//! component model), once with Wasmtime's parallel compilation on (its default: rayon, one
//! thread per core) and once with it off. Prints `wall_ms cpu_ms` per mode; asserts nothing.
//!
//!   bench-compile FILE.wasm [OUT.cwasm]

use std::time::Instant;

use anyhow::{Context, Result};
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

fn compile(bytes: &[u8], parallel: bool, out: &str) -> Result<(u128, u64)> {
    let mut config = Config::new();
    config.epoch_interruption(true).wasm_component_model(true).parallel_compilation(parallel);
    let engine = Engine::new(&config)?;
    let (started, cpu) = (Instant::now(), cpu_ms()?);
    // A component's preamble has version 0x0d after `\0asm`; a core module's has 1.
    let code = match bytes.get(4) == Some(&0x0d) {
        true => engine.precompile_component(bytes)?,
        false => engine.precompile_module(bytes)?,
    };
    std::fs::write(out, code)?;
    Ok((started.elapsed().as_millis(), cpu_ms()? - cpu))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let file = args.next().context("usage: bench-compile FILE.wasm [OUT.cwasm]")?;
    let out = args.next().unwrap_or_else(|| format!("{file}.cwasm"));
    let bytes = std::fs::read(&file).with_context(|| format!("reading {file}"))?;
    for (mode, parallel) in [("parallel", true), ("serial", false)] {
        let (wall, cpu) = compile(&bytes, parallel, &out)?;
        println!("{mode} wall_ms {wall} cpu_ms {cpu}");
    }
    Ok(())
}
