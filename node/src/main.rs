use std::process::ExitCode;

use clap::Parser;
use tally_node::config::{Config, LogFormat};

/// glibc's malloc and free were a sixth of a node's CPU under votes (perf, BENCHMARKS.md):
/// many small, short-lived allocations across worker threads, which mimalloc serves from
/// thread-local pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Half the cores, at least one, unless set. A node has threads of its own beside tokio's
/// (the log's fsync thread, sled's flusher, blocking reads for snapshots and backups), and
/// every idle worker that a new task wakes costs a context switch: with three nodes on two
/// cores, one worker each cut the CPU per single vote by about a fifth against two, and
/// bulk votes lost nothing (BENCHMARKS.md, session 17).
fn worker_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, |cores| (cores.get() / 2).max(1))
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if tally_node::offline::is_backup_command(&args) {
        return tally_node::offline::run(args);
    }
    let config = Config::parse_from(args);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    match config.log_format {
        LogFormat::Json => logs.json().init(),
        // Colours only for a person at a terminal: a log file or a log shipper gets plain text.
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())).init(),
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(worker_threads(config.worker_threads));
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tally-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json_logs = config.log_format == LogFormat::Json;
    match runtime.block_on(tally_node::run_process(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if json_logs => {
            let line = serde_json::json!({"level": "ERROR", "fields": {"message": format!("tally-node: {e:#}")}});
            eprintln!("{line}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tally-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
