use std::io::IsTerminal as _;

use clap::Parser;
use curate::cli::{Args, Command, LogFormat};

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
    // Jobs and retention log what they do (with the run id) at info; queries only warnings.
    let level = match args.command {
        Some(Command::Job { .. } | Command::Retention { .. } | Command::Compact { .. }) => "info",
        _ => "warn",
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a log file or a container's log keeps plain text.
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match curate::run(args).await {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("curate: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
