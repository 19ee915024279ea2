//! Writing span files: record batches of one partition into one Parquet file held in memory,
//! ready to be put into a store in one atomic write.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::convert::PartitionedBatches;
use crate::error::SchemaError;
use crate::layout::Partition;
use crate::span_table::{ingest_writer_properties, span_schema, writer_properties};

/// Streams record batches into Parquet bytes with the span table's writer settings.
pub struct SpanFileWriter {
    writer: ArrowWriter<Vec<u8>>,
    rows: usize,
}

impl SpanFileWriter {
    /// A file with compaction's settings ([`writer_properties`]).
    pub fn new() -> Result<Self, SchemaError> {
        Self::with_properties(writer_properties())
    }

    fn with_properties(properties: WriterProperties) -> Result<Self, SchemaError> {
        let writer = ArrowWriter::try_new(Vec::new(), span_schema(), Some(properties))?;
        Ok(Self { writer, rows: 0 })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SchemaError> {
        self.rows += batch.num_rows();
        Ok(self.writer.write(batch)?)
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes buffered so far (encoded, approximately the file size).
    pub fn bytes(&self) -> usize {
        self.writer.bytes_written() + self.writer.in_progress_size()
    }

    /// Closes the file and returns its bytes.
    pub fn finish(self) -> Result<Bytes, SchemaError> {
        Ok(Bytes::from(self.writer.into_inner()?))
    }
}

/// Writes `batches` as one span file.
pub fn write_span_file(batches: &[RecordBatch]) -> Result<Bytes, SchemaError> {
    let mut w = SpanFileWriter::new()?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()
}

/// One span file per partition, fed from [`PartitionedBatches`] as rows accumulate: what a
/// flush of ingest's WAL segment writes, with ingest's settings
/// ([`ingest_writer_properties`]).
#[derive(Default)]
pub struct PartitionedFiles {
    writers: BTreeMap<Partition, SpanFileWriter>,
}

impl PartitionedFiles {
    /// Rows to buffer in [`PartitionedBatches`] before each [`PartitionedFiles::drain`].
    pub const BATCH_ROWS: usize = 8192;

    /// Encodes every row buffered in `batches` into its partition's file (every partition,
    /// not only full ones: rows spread over many hours would otherwise wait in the builders).
    pub fn drain(&mut self, batches: &mut PartitionedBatches) -> Result<(), SchemaError> {
        for (partition, batch) in batches.finish()? {
            let writer = match self.writers.entry(partition) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(SpanFileWriter::with_properties(ingest_writer_properties())?)
                }
            };
            writer.write(&batch)?;
        }
        Ok(())
    }

    /// Closes the files: (partition, Parquet bytes, rows), sorted by partition.
    pub fn finish(self) -> Result<Vec<(Partition, Bytes, usize)>, SchemaError> {
        self.writers
            .into_iter()
            .map(|(partition, writer)| {
                let rows = writer.rows();
                Ok((partition, writer.finish()?, rows))
            })
            .collect()
    }
}
