use clap::Parser;
use ingest::config::{Args, Config, LogFormat};

/// mimalloc rather than glibc's malloc: request buffers are allocated on the receive threads
/// and freed on the WAL thread, which spreads glibc's per-thread arenas (peak RSS 217-342 MiB
/// at full load against 218-230 with mimalloc; BENCHMARKS.md, 2026-12-05 and 2026-12-06).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::resolve(Args::parse())?;
    init_logging(config.log_format);
    ingest::run(config, shutdown_signal()).await?;
    Ok(())
}
