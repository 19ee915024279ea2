//! Measures "P" on this machine and corpus: the spans per CPU-second of the naive ingest path,
//! in process on one thread, without any transport. It is the yardstick of ingest's targets
//! (0.6 P, then P), measured on the same corpus as `loadgen` sends, so that the ratio of
//! ingest's spans per CPU-second to it does not depend on span size or on how busy the
//! machine is when both are measured in the same run.
//!
//!   naive-path [--traces 3000] [--seconds 10] [--context-bytes 1000-3000] [--json]
//!
//! Per pass over the corpus's encoded requests, two paths are timed in turn (CPU time of
//! this process, user + system):
//! - `naive`: prost decode of every request into an ExportTraceServiceRequest, the spans into
//!   Arrow columns, Parquet with the span table's settings, written to a file and fsynced
//!   (the reference path: decode -> Arrow -> Parquet -> fsync). The Arrow conversion is
//!   ingest's own (from the bytes, which prost has just proven well-formed), cheaper than a
//!   conversion from the decoded structs, so P comes out high if anything.
//! - `ingest-work`: what ingest does per span apart from the transport and the WAL: the
//!   validation scan of the request, then the same Arrow and Parquet steps.

use std::io::Write;
use std::time::Instant;

use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use schemas::convert::PartitionedBatches;
use schemas::parquet_file::PartitionedFiles;
use schemas::wire::scan_request;
use trace2eval_tests::corpus::{CONTEXT_BYTES, load_corpus, parse_context_bytes};
use trace2eval_tests::harness::cpu_seconds;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(about = "Measures P: spans per CPU-second of decode -> Arrow -> Parquet -> fsync")]
struct Args {
    /// Traces in the generated corpus (the same corpus as `loadgen --traces N`).
    #[arg(long, default_value_t = 3000)]
    traces: usize,
    /// Seed of the corpus.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bytes of retrieved context per LLM prompt, MIN-MAX (as `loadgen --context-bytes`).
    /// [default: 1000-3000]
    #[arg(long, value_parser = parse_context_bytes)]
    context_bytes: Option<(usize, usize)>,
    /// CPU seconds to spend on each path (at least one pass each).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Print the figures as one JSON object on stdout, the rest on stderr.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy)]
enum Path {
    Naive,
    IngestWork,
}

/// Request bytes per set of files: ingest's default `--flush-max-bytes`, at which it seals a
/// WAL segment and writes that segment's files. Writing a whole large corpus as one file per
/// partition instead holds a row group of every span at once and is far slower per span (P
/// 66k against 95k+ at 130,000 traces), which no ingest does.
const SEGMENT_BYTES: usize = 128 << 20;

/// Writes one segment's files, fsynced, under `out`; returns the next file number.
fn write_files(
    files: PartitionedFiles,
    out: &std::path::Path,
    mut n: usize,
) -> Result<usize, BoxError> {
    for (_, bytes, _) in files.finish()? {
        let name = out.join(format!("{n}.parquet"));
        let mut file = std::fs::File::create(&name)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        n += 1;
    }
    Ok(n)
}

/// One pass over the corpus on `path`: every span into Parquet files, one set per
/// `SEGMENT_BYTES` of requests, fsynced. Returns spans.
fn pass(path: Path, requests: &[Vec<u8>], out: &std::path::Path) -> Result<usize, BoxError> {
    let mut batches = PartitionedBatches::new();
    let mut files = PartitionedFiles::default();
    let (mut spans, mut segment, mut n) = (0usize, 0usize, 0usize);
    for body in requests {
        match path {
            Path::Naive => {
                let decoded = ExportTraceServiceRequest::decode(body.as_slice())?;
                spans += decoded
                    .resource_spans
                    .iter()
                    .flat_map(|rs| &rs.scope_spans)
                    .map(|ss| ss.spans.len())
                    .sum::<usize>();
            }
            Path::IngestWork => {
                let scan = scan_request(body)?;
                if scan.rejected > 0 {
                    return Err("the corpus has spans ingest refuses".into());
                }
                spans += scan.accepted as usize;
            }
        }
        batches.append_encoded("default", body)?;
        segment += body.len();
        if batches.rows() >= PartitionedFiles::BATCH_ROWS || segment >= SEGMENT_BYTES {
            files.drain(&mut batches)?;
        }
        if segment >= SEGMENT_BYTES {
            n = write_files(std::mem::take(&mut files), out, n)?;
            segment = 0;
        }
    }
    files.drain(&mut batches)?;
    write_files(files, out, n)?;
    Ok(spans)
}

#[derive(Default)]
struct Measured {
    spans: usize,
    cpu_s: f64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.spans as f64 / self.cpu_s
    }
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    // Live traffic, as loadgen sends it by default: one or two hourly partitions.
    let corpus = load_corpus(
        args.traces,
        args.seed,
        args.context_bytes.unwrap_or(CONTEXT_BYTES),
        1,
    );
    let requests: Vec<Vec<u8>> = corpus.requests.iter().map(Message::encode_to_vec).collect();
    let bytes: usize = requests.iter().map(Vec::len).sum();
    let bytes_per_span = bytes as f64 / corpus.spans.max(1) as f64;
    let dir = tempfile::tempdir()?;

    let (mut naive, mut work) = (Measured::default(), Measured::default());
    let cpu = || cpu_seconds(std::process::id()).ok_or("cannot read /proc/self/stat");
    let started = Instant::now();
    // Alternate the two paths pass by pass so that both see the same machine.
    while naive.spans == 0 || naive.cpu_s < args.seconds || work.cpu_s < args.seconds {
        for (path, m) in [(Path::Naive, &mut naive), (Path::IngestWork, &mut work)] {
            let before = cpu()?;
            m.spans += pass(path, &requests, dir.path())?;
            m.cpu_s += cpu()? - before;
        }
    }
    let say = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(format!(
        "corpus: {} requests, {} spans, {bytes_per_span:.0} request bytes/span; {:.0} s wall",
        requests.len(),
        corpus.spans,
        started.elapsed().as_secs_f64()
    ));
    say(format!(
        "naive (decode -> Arrow -> Parquet -> fsync): {:.0} spans per CPU-second (P)",
        naive.rate()
    ));
    say(format!(
        "ingest-work (scan -> Arrow -> Parquet -> fsync): {:.0} spans per CPU-second",
        work.rate()
    ));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "request_bytes_per_span": bytes_per_span,
                "spans": corpus.spans,
                "p_spans_per_cpu_s": naive.rate(),
                "ingest_work_spans_per_cpu_s": work.rate(),
            })
        );
    }
    Ok(())
}
