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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match args.resolve() {
        Ok(cfg) => {
            let json = cfg.json;
            eval_runner::run(cfg).await.map(|o| (o, json))
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
