//! The same ingest path against a real S3-compatible server (SeaweedFS, started by
//! `scripts/s3-server.sh` on 127.0.0.1): files land under the prefix, partitioned, readable.

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use schemas::read::read_span_file;
use trace2eval_tests::client::Grpc;
use trace2eval_tests::corpus::{CorpusConfig, generate};
use trace2eval_tests::harness::{Ingest, IngestOpts, S3Server, TestResult, id_counts};

#[tokio::test(flavor = "multi_thread")]
async fn spans_land_in_s3_partitioned_and_complete() -> TestResult {
    let s3 = S3Server::start()?;
    let dir = tempfile::tempdir()?;
    let prefix = format!("runs/{}", rand::random::<u32>());
    let mut opts = IngestOpts::local(dir.path()).arg("--flush-max-age", "200ms");
    opts.store = format!("s3://{}/{prefix}", s3.bucket);
    opts.env = s3.env.clone();
    let corpus = generate(&CorpusConfig {
        traces: 300,
        days: 1,
        seed: 7,
        end_unix_ns: 1_773_100_800_000_000_000,
        context_bytes: trace2eval_tests::corpus::CONTEXT_BYTES,
    });
    let mut ingest = Ingest::start(&opts)?;
    let mut client = Grpc::connect(ingest.grpc_url()).await?;
    for req in &corpus.requests {
        client.export(req.clone()).await?;
    }
    let status = ingest.terminate()?;
    assert!(status.success(), "{}", ingest.log_text());

    let store = s3.client()?;
    let root = ObjectPath::from(format!("{prefix}/spans"));
    let objects: Vec<_> = store.list(Some(&root)).try_collect().await?;
    assert!(!objects.is_empty(), "nothing written to S3");
    let mut rows = Vec::new();
    for o in &objects {
        let key = o.location.as_ref();
        let rest = key
            .strip_prefix(&format!("{prefix}/"))
            .ok_or("outside the prefix")?;
        let parts: Vec<_> = rest.split('/').collect();
        assert_eq!(parts.len(), 5, "{key}");
        assert!(
            parts[1] == "tenant=default"
                && parts[2].starts_with("date=")
                && parts[3].starts_with("hour="),
            "{key}"
        );
        assert!(
            parts[4].ends_with(".parquet") && parts[4].len() == 26 + 8,
            "{key}"
        );
        let bytes = store.get(&o.location).await?.bytes().await?;
        for r in read_span_file(bytes)? {
            let expected = schemas::layout::Partition::of_span("default", r.start_time_ns);
            assert_eq!(
                format!("{}/{}/{}", parts[1], parts[2], parts[3]),
                expected.dir().trim_start_matches("spans/")
            );
            rows.push(r);
        }
    }
    let counts = id_counts(&rows);
    assert!(counts.values().all(|&n| n == 1), "duplicates in S3");
    assert_eq!(counts.into_keys().collect::<Vec<_>>(), corpus.span_ids());
    Ok(())
}
