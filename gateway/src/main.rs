//! The `voxgate` binary: parse the configuration, set up logging and TLS, run the server until SIGTERM or
//! ctrl-c, drain, exit 0. Everything else lives in the library so tests can run it in-process.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use voxgate::config::{Config, LogFormat};

/// mimalloc rather than glibc malloc: many small short-lived allocations (JSON values, frames) from several
/// threads at once, where glibc's arenas spent a sixth of the request path in malloc, free and consolidation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Before anything can open a database (it only applies before SQLite initializes).
    voxgate::chat::store::sqlite::configure_process();
    let config = match Config::load() {
        Ok(config) => config,
        Err(err) => match err.downcast::<clap::Error>() {
            // --help, --version and usage errors print themselves and pick their exit code.
            Ok(clap_error) => clap_error.exit(),
            Err(err) => {
                eprintln!("voxgate: {err:#}");
                return ExitCode::from(2);
            }
        },
    };
    init_tracing(config.log_format);
    // One process-wide rustls provider (ring) for every TLS client (upstream WebSockets, reqwest).
    // It fails only if a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let runtime = match runtime_builder().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("voxgate: failed to start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(voxgate::server::serve(config));
    // The server has drained; do not let a straggling blocking task hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "voxgate failed");
            ExitCode::FAILURE
        }
    }
}

/// A current-thread runtime where the process may use one core (`taskset`, a cgroup quota of one CPU): a
/// multi-thread runtime would run the accept loop on this thread and every task on one worker beside it, paying
/// for hand-offs between threads that cannot run at once. Measured with the gateway pinned to one core at 700
/// voice sessions: 2–5% less CPU per relayed session-second.
fn runtime_builder() -> tokio::runtime::Builder {
    if std::thread::available_parallelism().is_ok_and(|cores| cores.get() == 1) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
}

/// `RUST_LOG` filters (default `info`); `--log-format json` writes one JSON object per line.
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}
