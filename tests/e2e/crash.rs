//! Crash safety: `ingest` under concurrent load is killed with SIGKILL at random moments and
//! restarted on the same WAL; every acknowledged span ends up in the store exactly once.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use rand::{Rng, SeedableRng};
use trace2eval_tests::client::Grpc;
use trace2eval_tests::harness::{Ingest, IngestOpts, TestResult, id_counts, local_store_rows};

const ROUNDS: usize = 5;
const CLIENTS: usize = 8;
const SPANS_PER_REQUEST: usize = 20;

fn batch(rng: &mut impl Rng) -> ExportTraceServiceRequest {
    let trace_id: [u8; 16] = rng.random();
    let spans = (0..SPANS_PER_REQUEST)
        .map(|i| Span {
            trace_id: trace_id.to_vec(),
            span_id: rng.random::<[u8; 8]>().to_vec(),
            name: format!("span {i}"),
            kind: 3,
            // Spread over a few hours so flushes write several partitions.
            start_time_unix_nano: 1_772_000_000_000_000_000
                + rng.random_range(0..4 * 3_600_000_000_000u64),
            end_time_unix_nano: 1_772_100_000_000_000_000,
            ..Default::default()
        })
        .collect();
    trace2eval_tests::client::request(spans)
}

fn ids(req: &ExportTraceServiceRequest) -> Vec<(String, String)> {
    req.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| (hex::encode(&s.trace_id), hex::encode(&s.span_id)))
        .collect()
}

/// Sends batches until the server goes away; records the ids of acknowledged batches.
async fn load(url: String, seed: u64, acked: Arc<Mutex<BTreeSet<(String, String)>>>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Ok(mut client) = Grpc::connect(url).await else {
        return;
    };
    loop {
        let req = batch(&mut rng);
        let sent = ids(&req);
        match client.export(req).await {
            Ok(r) if r.partial_success.is_none() => {
                if let Ok(mut a) = acked.lock() {
                    a.extend(sent);
                }
            }
            _ => return,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_under_load_loses_no_acknowledged_span_and_duplicates_none() -> TestResult {
    let dir = tempfile::tempdir()?;
    // Small, frequent flushes so kills land in every phase: appending, converting, writing
    // files, and between "file written" and "segment deleted".
    let opts = IngestOpts::local(dir.path())
        .arg("--flush-max-bytes", "64KiB")
        .arg("--flush-max-age", "100ms");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for round in 0..ROUNDS {
        let mut ingest = Ingest::start(&opts)?;
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                tokio::spawn(load(
                    ingest.grpc_url(),
                    (round * CLIENTS + c) as u64,
                    acked.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        ingest.kill9()?;
        for c in clients {
            c.await?;
        }
    }
    let mut ingest = Ingest::start(&opts)?;
    let status = ingest.terminate()?;
    assert!(status.success(), "{}", ingest.log_text());

    let acked = acked.lock().map_err(|_| "poisoned")?.clone();
    assert!(
        acked.len() > 1000,
        "the load was too light to test anything: {}",
        acked.len()
    );
    let rows = local_store_rows(&dir.path().join("store"))?;
    let counts = id_counts(rows.iter().map(|(_, r)| r));
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "{} spans stored more than once, e.g. {:?}",
        duplicated.len(),
        duplicated.first()
    );
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged spans lost of {}, e.g. {:?}",
        missing.len(),
        acked.len(),
        missing.first()
    );
    assert!(
        std::fs::read_dir(dir.path().join("wal"))?
            .all(|e| e.is_ok_and(|e| !e.file_name().to_string_lossy().ends_with(".wal"))),
        "wal segments left after a clean shutdown"
    );
    Ok(())
}
