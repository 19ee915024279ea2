//! Inner loops of ingest, one benchmark each, on the load generator's corpus (realistic LLM-app
//! spans, ~1.6 KB of OTLP protobuf each): `cargo bench -p trace2eval-tests --bench hot_paths`.
//! Setup (generating and encoding the corpus) is outside the timed part; throughput is in spans.
//!
//! - `prost_decode`: the old receive path, prost structs from the request bytes (reference);
//! - `validate`: what ingest does to a request before the WAL (`schemas::wire::scan_request`);
//! - `json_transcode`: an OTLP/JSON request into the protobuf bytes the rest of ingest takes
//!   (`schemas::json_wire::transcode`, which also checks it);
//! - `to_arrow`: WAL record bytes -> span table columns (`PartitionedBatches::append_encoded`);
//! - `parquet_encode`: those columns -> Parquet files (one per hourly partition, as the
//!   flusher writes them) with the span table's writer settings.

use std::sync::OnceLock;

use arrow::array::RecordBatch;
use divan::Bencher;
use divan::counter::ItemsCount;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use schemas::convert::PartitionedBatches;
use schemas::parquet_file::write_span_file;
use trace2eval_tests::corpus::{CONTEXT_BYTES, Corpus, load_corpus, to_json};

fn main() {
    divan::main();
}

/// A corpus of live traffic: every trace starts within one hour, as loadgen sends it by
/// default.
fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| load_corpus(4000, 7, CONTEXT_BYTES, 1))
}

/// The corpus's requests encoded as OTLP protobuf, and their span count.
fn requests() -> &'static (Vec<Vec<u8>>, usize) {
    static REQUESTS: OnceLock<(Vec<Vec<u8>>, usize)> = OnceLock::new();
    REQUESTS.get_or_init(|| {
        let c = corpus();
        (
            c.requests.iter().map(Message::encode_to_vec).collect(),
            c.spans,
        )
    })
}

/// The same requests as OTLP/JSON bodies, as loadgen --json-body sends them.
fn json_requests() -> &'static Vec<Vec<u8>> {
    static REQUESTS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    REQUESTS.get_or_init(|| {
        corpus()
            .requests
            .iter()
            .map(|r| to_json(r).into_bytes())
            .collect()
    })
}

fn batches() -> &'static Vec<RecordBatch> {
    static BATCHES: OnceLock<Vec<RecordBatch>> = OnceLock::new();
    BATCHES.get_or_init(|| {
        let mut b = PartitionedBatches::new();
        for r in &requests().0 {
            b.append_encoded("default", r)
                .expect("corpus requests are valid");
        }
        // One batch per partition, each written as its own file, as the flusher does.
        b.finish()
            .expect("batches")
            .into_iter()
            .map(|(_, batch)| batch)
            .collect()
    })
}

#[divan::bench(sample_count = 10)]
fn prost_decode(bencher: Bencher) {
    let (reqs, spans) = requests();
    bencher.counter(ItemsCount::new(*spans)).bench(|| {
        reqs.iter()
            .map(|r| {
                ExportTraceServiceRequest::decode(r.as_slice())
                    .map_or(0, |q| q.resource_spans.len())
            })
            .sum::<usize>()
    });
}

#[divan::bench(sample_count = 10)]
fn validate(bencher: Bencher) {
    let (reqs, spans) = requests();
    bencher.counter(ItemsCount::new(*spans)).bench(|| {
        reqs.iter()
            .map(|r| schemas::wire::scan_request(r).map_or(0, |s| s.accepted))
            .sum::<u64>()
    });
}

#[divan::bench(sample_count = 10)]
fn json_transcode(bencher: Bencher) {
    let reqs = json_requests();
    bencher.counter(ItemsCount::new(requests().1)).bench(|| {
        reqs.iter()
            .map(|r| schemas::json_wire::transcode(r).map_or(0, |b| b.len()))
            .sum::<usize>()
    });
}

#[divan::bench(sample_count = 10)]
fn to_arrow(bencher: Bencher) {
    let (reqs, spans) = requests();
    bencher.counter(ItemsCount::new(*spans)).bench(|| {
        let mut b = PartitionedBatches::new();
        for r in reqs {
            let _ = b.append_encoded("default", r);
        }
        b.finish().map_or(0, |v| v.len())
    });
}

#[divan::bench(sample_count = 10)]
fn parquet_encode(bencher: Bencher) {
    let batches = batches();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    bencher.counter(ItemsCount::new(rows)).bench(|| {
        batches
            .iter()
            .map(|b| write_span_file(std::slice::from_ref(b)).map_or(0, |f| f.len()))
            .sum::<usize>()
    });
}
