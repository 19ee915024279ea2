use std::io::IsTerminal as _;

use clap::Parser;
use eval_runner::cli::Args;

#[tokio::main]
async fn main() {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            // clap: 0 for --help/--version, 2 for usage errors.
            std::process::exit(e.exit_code());
        }
    };
    let result = match args.resolve() {
        Ok(cfg) => {
            init_logging(cfg.log_json);
            let json = cfg.json;
            eval_runner::run(cfg, shutdown_signal())
                .await
                .map(|o| (o, json))
        }
        Err(e) => Err(e),
    };
    match result {
        Ok((outcome, json)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&outcome.summary).unwrap_or_default()
                );
            } else {
                println!("{}", outcome.summary);
            }
            std::process::exit(outcome.code);
        }
        Err(e) => {
            eprintln!("eval-runner: {e}");
            std::process::exit(e.exit_code());
        }
    }
}

fn init_logging(json: bool) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a log file or a container's log keeps plain text.
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Resolves on SIGINT or SIGTERM (a scheduler stopping the job).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
