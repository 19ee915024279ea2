//! Writing span files: record batches of one partition into one Parquet file held in memory,
//! ready to be put into a store in one atomic write.

use arrow::array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;

use crate::error::SchemaError;
use crate::span_table::{span_schema, writer_properties};

/// Streams record batches into Parquet bytes with the span table's writer settings.
pub struct SpanFileWriter {
    writer: ArrowWriter<Vec<u8>>,
    rows: usize,
}

impl SpanFileWriter {
    pub fn new() -> Result<Self, SchemaError> {
        let writer = ArrowWriter::try_new(Vec::new(), span_schema(), Some(writer_properties()))?;
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
