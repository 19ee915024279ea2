//! The fake LLM judge of `trace2eval_tests::judge` as a process, for benchmarks of
//! `eval-runner`: OpenAI (`http://ADDR/v1`) and Anthropic (`http://ADDR`) APIs, every answer
//! after `--latency-ms`, with score `--score`. Markers in prompts (`[[score=X]]`,
//! `[[fault=429x2]]`...) work as documented in that module. Requests are counted, not kept.
//!
//!   judge-server [--addr 127.0.0.1:0] [--latency-ms N] [--api-key K] [--score X]
//!
//! Prints `listening on http://ADDR` once bound, then serves until SIGTERM or SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use trace2eval_tests::judge::{JudgeConfig, JudgeServer, Recording, Verdict};

#[derive(Parser)]
#[command(about = "A fake LLM judge (OpenAI and Anthropic APIs) for tests and benchmarks")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Delay before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Key the clients must send (Bearer / x-api-key); none by default.
    #[arg(long, env = "JUDGE_SERVER_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Score of every verdict without a `[[score=X]]` marker.
    #[arg(long, default_value_t = 4.0)]
    score: f64,
}

async fn shutdown() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted,
        _ = term.recv() => Ok(()),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let defaults = JudgeConfig::default();
    let config = JudgeConfig {
        latency: Duration::from_millis(args.latency_ms),
        api_key: args.api_key,
        default_verdict: Verdict {
            score: args.score,
            ..defaults.default_verdict.clone()
        },
        ..defaults
    };
    let server = JudgeServer::start_on(config, args.addr, Recording::CountOnly)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{}", server.addr())?;
    stdout.flush()?;
    drop(stdout);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(shutdown())?;
    eprintln!("judge-server: {} requests", server.request_count());
    Ok(())
}
