//! The `ingest` command line: `--help` documents every option with its environment variable,
//! environment beats the TOML file, and a bad file stops the start with a clear message.

use std::process::Command;

use trace2eval_tests::client::Grpc;
use trace2eval_tests::harness::{Ingest, IngestOpts, TestResult, bin_path, local_store_rows};

const OPTIONS: [&str; 13] = [
    "config",
    "store",
    "grpc-addr",
    "http-addr",
    "wal-dir",
    "tenant",
    "max-request-bytes",
    "flush-max-bytes",
    "flush-max-age",
    "wal-max-backlog",
    "retry-after",
    "shutdown-timeout",
    "log-format",
];

#[test]
fn help_documents_every_option_and_its_environment_variable() -> TestResult {
    let out = Command::new(bin_path("ingest")?).arg("--help").output()?;
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout)?;
    for opt in OPTIONS {
        assert!(
            help.contains(&format!("--{opt}")),
            "--{opt} missing from --help"
        );
        let env = format!("INGEST_{}", opt.to_uppercase().replace('-', "_"));
        assert!(help.contains(&env), "{env} missing from --help");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_beats_config_file_and_metrics_count_the_spans() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("ingest.toml");
    std::fs::write(&file, "tenant = \"from-file\"\nflush_max_age = \"1s\"\n")?;
    let mut opts = IngestOpts::local(dir.path()).arg("--config", &file.display().to_string());
    opts.env = vec![("INGEST_TENANT".into(), "from-env".into())];
    let mut ingest = Ingest::start(&opts)?;
    let req = trace2eval_tests::corpus::generate(&trace2eval_tests::corpus::CorpusConfig {
        traces: 5,
        days: 1,
        seed: 3,
        end_unix_ns: 1_773_100_800_000_000_000,
        context_bytes: trace2eval_tests::corpus::CONTEXT_BYTES,
    });
    let mut client = Grpc::connect(ingest.grpc_url()).await?;
    for r in &req.requests {
        client.export(r.clone()).await?;
    }
    let metrics = reqwest::get(ingest.http_url("/metrics"))
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains(&format!("ingest_spans_accepted_total {}", req.spans)),
        "{metrics}"
    );
    assert!(metrics.contains("ingest_requests_total{protocol=\"grpc\",outcome=\"ok\"}"));
    assert_eq!(
        reqwest::get(ingest.http_url("/healthz"))
            .await?
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        reqwest::get(ingest.http_url("/readyz"))
            .await?
            .status()
            .as_u16(),
        200
    );
    assert!(ingest.terminate()?.success());
    let rows = local_store_rows(&dir.path().join("store"))?;
    assert_eq!(rows.len(), req.spans);
    assert!(
        rows.iter()
            .all(|(p, _)| p.starts_with("spans/tenant=from-env/"))
    );
    Ok(())
}

#[test]
fn unknown_config_key_stops_the_start_with_its_name() -> TestResult {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("ingest.toml");
    std::fs::write(&file, "stroe = \"./data\"\n")?;
    let out = Command::new(bin_path("ingest")?)
        .arg("--config")
        .arg(&file)
        .arg("--wal-dir")
        .arg(dir.path().join("wal"))
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `stroe`"), "{err}");
    Ok(())
}

/// A log written to a file, as under a container runtime or systemd, is plain text: colour
/// codes are for a terminal only.
#[test]
fn a_log_written_to_a_file_has_no_colour_codes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut ingest = Ingest::start(&IngestOpts::local(dir.path()))?;
    assert!(ingest.terminate()?.success(), "{}", ingest.log_text());
    let log = ingest.log_text();
    assert!(log.contains("listening"), "{log}");
    assert!(!log.contains('\x1b'), "{log:?}");
    Ok(())
}
