//! The trace tables: their Arrow schemas, the rows the feed produces (appended straight to
//! each column's Arrow builder), and their Parquet files.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder, new_null_array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::arrow_writer::{ArrowRowGroupWriterFactory, compute_leaves};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::writer::SerializedFileWriter;
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};

/// The text and binary columns, in any table, without min/max statistics: the long ones (keys,
/// images, inputs, outputs, errors), which no query prunes by range, and the names that repeat
/// (functions, steps, statuses, tables, workflows), whose range over a file is
/// nearly all of them. Each would cost a comparison of every value and two copies in every
/// page: a tenth of the Parquet step for the names alone. The ids keep theirs: those
/// the server makes are time-ordered, so a file's range of them prunes a lookup by id.
const UNPRUNED_COLUMNS: [&str; 13] =
    ["key", "before", "after", "before_row", "after_row", "input", "output", "error", "function", "step", "status", "table_name", "name"];

/// Bytes of a Parquet data page, at most (checked after each batch of 1,024 values). The
/// page is encoded in a buffer that grows to this size and is freed after the page is
/// compressed: at the default of 1 MiB, each page of the long text columns took fresh memory
/// from the kernel (page faults, and a TLB flush on every core for each), more CPU than its
/// encoding.
const DATA_PAGE_BYTES: usize = 64 << 10;

/// The tables, in a fixed order (the order of [`Rows`]' fields and of the store's folders).
pub const TABLES: [&str; 4] = ["function_invocations", "change_data", "workflows", "read_events"];

/// The places of the tables in [`TABLES`].
pub(crate) const FUNCTION_INVOCATIONS: usize = 0;
pub(crate) const CHANGE_DATA: usize = 1;
pub(crate) const WORKFLOWS: usize = 2;
pub(crate) const READ_EVENTS: usize = 3;

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn schema(fields: Vec<Field>) -> SchemaRef {
    Arc::new(Schema::new(fields))
}

static SCHEMAS: LazyLock<[SchemaRef; 4]> = LazyLock::new(|| {
    [
        schema(vec![
            Field::new("lsn", DataType::Int64, true),
            Field::new("workflow_id", DataType::Utf8, true),
            Field::new("step", DataType::Utf8, true),
            Field::new("function", DataType::Utf8, false),
            Field::new("partition", DataType::Int64, true),
            Field::new("start_time", timestamp(), false),
            Field::new("end_time", timestamp(), false),
            Field::new("error", DataType::Utf8, true),
            Field::new("recorded", DataType::Boolean, false),
            Field::new("replayed", DataType::Boolean, false),
            Field::new("read_only", DataType::Boolean, false),
        ]),
        // As stored: queries see the images as JSON (`key`, `before`, `after`), made from the
        // images as the log holds them (`before_row`, `after_row`) with the columns of table
        // `table_id`, and the `operation`, told by which images there are. Files written
        // before the images were kept so hold the JSON instead, and NULL in the last three;
        // the JSON columns of later rows are NULL.
        schema(vec![
            Field::new("lsn", DataType::Int64, false),
            Field::new("commit_time", timestamp(), false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("partition", DataType::Int64, false),
            Field::new("key", DataType::Utf8, true),
            Field::new("before", DataType::Utf8, true),
            Field::new("after", DataType::Utf8, true),
            Field::new("workflow_id", DataType::Utf8, true),
            Field::new("step", DataType::Utf8, true),
            Field::new("function", DataType::Utf8, true),
            Field::new("table_id", DataType::Int64, true),
            Field::new("before_row", DataType::Binary, true),
            Field::new("after_row", DataType::Binary, true),
        ]),
        schema(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("version", DataType::Int64, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("input", DataType::Utf8, false),
            Field::new("output", DataType::Utf8, true),
            Field::new("error", DataType::Utf8, true),
            Field::new("start_time", timestamp(), false),
            Field::new("end_time", timestamp(), true),
            Field::new("lsn", DataType::Int64, false),
        ]),
        schema(vec![
            Field::new("lsn", DataType::Int64, true),
            Field::new("workflow_id", DataType::Utf8, true),
            Field::new("step", DataType::Utf8, true),
            Field::new("function", DataType::Utf8, false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("key", DataType::Utf8, false),
        ]),
    ]
});

/// The schema of table number `table` (an index into [`TABLES`]) as its files and tail hold
/// it (queries see `change_data`'s images as JSON: see [`crate::images`]).
pub fn schema_of(table: usize) -> SchemaRef {
    Arc::clone(&SCHEMAS[table])
}

/// One row of `function_invocations`, borrowed from the record it comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InvocationRow<'a> {
    /// The LSN of its commit; `None` when it committed nothing.
    pub lsn: Option<i64>,
    pub workflow_id: Option<&'a str>,
    pub step: Option<&'a str>,
    pub function: &'a str,
    pub partition: Option<i64>,
    pub start_us: i64,
    pub end_us: i64,
    pub error: Option<&'a str>,
    pub recorded: bool,
    pub replayed: bool,
    pub read_only: bool,
}

/// One row of `change_data`, borrowed from the record it comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangeRow<'a> {
    pub lsn: i64,
    pub commit_us: i64,
    pub table_id: u32,
    pub table: &'a str,
    pub partition: i64,
    /// The row's images in the backend's row encoding, as the log holds them.
    pub before: Option<&'a [u8]>,
    pub after: Option<&'a [u8]>,
    pub workflow_id: Option<&'a str>,
    pub step: Option<&'a str>,
    pub function: Option<&'a str>,
}

/// One row of `workflows` (a run that ended), borrowed from the record it comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkflowRow<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub version: i64,
    pub status: &'a str,
    pub input: &'a str,
    pub output: Option<&'a str>,
    pub error: Option<&'a str>,
    pub start_us: i64,
    pub end_us: Option<i64>,
    pub lsn: i64,
}

/// One row of `read_events`, borrowed from the record it comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReadRow<'a> {
    pub lsn: Option<i64>,
    pub workflow_id: Option<&'a str>,
    pub step: Option<&'a str>,
    pub function: &'a str,
    pub table: &'a str,
    pub key: &'a str,
}

/// Rows of every table, as produced from a run of log records: appended straight to the
/// Arrow builders of each table's columns, so that each value is copied once, from the
/// decoded record into the column it ends in.
#[derive(Debug, Default)]
pub struct Rows {
    invocations: Invocations,
    changes: Changes,
    workflows: Workflows,
    reads: Reads,
}

impl Rows {
    /// No rows, with room for as many rows, and as many bytes of text in each column, as
    /// `other` holds (the feed's steps are alike: this spares each one growing its columns
    /// from nothing, with a copy of all they hold at each doubling). The room counts in the
    /// tail's size (`get_array_memory_size`), so a small step after a large one can bring a
    /// flush a little early: one step's worth, no more.
    pub fn with_room_of(other: &Rows) -> Rows {
        Rows { invocations: other.invocations.like(), changes: other.changes.like(), workflows: other.workflows.like(), reads: other.reads.like() }
    }

    /// Rows in each table, in [`TABLES`]' order.
    pub fn counts(&self) -> [usize; 4] {
        [self.invocations.lsn.len(), self.changes.lsn.len(), self.workflows.lsn.len(), self.reads.lsn.len()]
    }

    /// Rows in all tables.
    pub fn count(&self) -> usize {
        self.counts().iter().sum()
    }

    pub fn push_invocation(&mut self, row: InvocationRow<'_>) {
        self.invocations.push(row);
    }

    pub fn push_change(&mut self, row: ChangeRow<'_>) {
        self.changes.push(row);
    }

    pub fn push_workflow(&mut self, row: WorkflowRow<'_>) {
        self.workflows.push(row);
    }

    pub fn push_read(&mut self, row: ReadRow<'_>) {
        self.reads.push(row);
    }

    /// The rows as one batch per table (`None` for a table without rows), in [`TABLES`]'
    /// order.
    pub fn into_batches(mut self) -> Result<[Option<RecordBatch>; 4], ArrowError> {
        Ok([self.invocations.finish()?, self.changes.finish()?, self.workflows.finish()?, self.reads.finish()?])
    }
}

/// Writes `batches` of table number `table` as one Parquet file to `out`: text in snappy
/// pages, integers and times delta-encoded.
pub fn write_parquet(out: impl std::io::Write + Send, table: usize, batches: &[RecordBatch]) -> Result<()> {
    let mut writer = ArrowWriter::try_new(out, schema_of(table), Some(writer_properties(table))).map_err(parquet_error(table))?;
    for batch in batches {
        writer.write(batch).map_err(parquet_error(table))?;
    }
    writer.close().map_err(parquet_error(table))?;
    Ok(())
}

fn parquet_error(table: usize) -> impl Fn(parquet::errors::ParquetError) -> Error {
    move |e| Error::Internal(format!("writing a Parquet file of {}: {e}", TABLES[table]))
}

/// How the files of table number `table` are written.
fn writer_properties(table: usize) -> WriterProperties {
    // No dictionaries: building one costs a hash and a comparison per value, more than snappy
    // costs to squeeze a run of repeated names (measured with `--bench feed`).
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_data_page_size_limit(DATA_PAGE_BYTES)
        .set_dictionary_enabled(false);
    // LSNs, times and small counts take a byte or two a value as deltas, not the four snappy
    // left of their eight, and the delta encoder costs less than snappy did.
    for field in schema_of(table).fields().iter().filter(|f| matches!(f.data_type(), DataType::Int64 | DataType::Timestamp(..))) {
        let column = ColumnPath::from(field.name().as_str());
        properties = properties.set_column_encoding(column.clone(), Encoding::DELTA_BINARY_PACKED).set_column_compression(column, Compression::UNCOMPRESSED);
    }
    for column in UNPRUNED_COLUMNS {
        properties = properties.set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    properties.build()
}

/// Row groups of at least this many rows go into a merged file as they are, their bytes
/// copied without decoding them; smaller ones are decoded and encoded again together, into
/// row groups of about this many rows. Files flushed under load hold one large row group
/// each, so merging them costs the copy of their bytes, not their encoding again; files
/// flushed by age under a light load hold a few rows each, which cost little to encode.
pub(crate) const MERGE_COPY_ROWS_MIN: usize = 8_192;

/// Row groups of at least this many bytes (compressed) are copied too, whatever their rows:
/// a few rows of large images are not worth decoding, and would take much memory.
const MERGE_COPY_BYTES_MIN: i64 = 1 << 20;

/// The decoded rows a merge holds before it encodes them as one row group, at most (beside
/// [`MERGE_COPY_ROWS_MIN`] rows): bounds its memory.
const MERGE_PENDING_BYTES_MAX: usize = 16 << 20;

/// What [`merge_parquet`] made of its inputs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Merged {
    /// One file, of this many rows, holds every row of the inputs.
    Written { rows: u64 },
    /// These inputs (by their places) have other columns than this build writes (files of
    /// an older build): nothing was merged, and the output is to be thrown away.
    Unlike { inputs: Vec<usize> },
    /// `cancelled` said to stop: the output is to be thrown away.
    Cancelled,
}

/// Writes the rows of the Parquet files `inputs` of table number `table`, in their order, as
/// one Parquet file to `out` (see [`MERGE_COPY_ROWS_MIN`]), unless `cancelled` says to stop
/// (asked before each row group). An input whose footer or rows cannot be read is named in an
/// [`Error::Corrupt`].
pub(crate) fn merge_parquet(out: impl std::io::Write + Send, table: usize, inputs: &[std::path::PathBuf], cancelled: &dyn Fn() -> bool) -> Result<Merged> {
    fn read_error(path: &std::path::Path) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
        move |e| Error::Corrupt { path: path.display().to_string(), detail: e.to_string() }
    }
    let open_error = |path: &std::path::Path, e: std::io::Error| Error::Io { operation: "open", path: path.display().to_string(), message: e.to_string() };
    let write_error = parquet_error(table);
    let schema = schema_of(table);
    let (mut writer, factory) = ArrowWriter::try_new(out, Arc::clone(&schema), Some(writer_properties(table))).and_then(ArrowWriter::into_serialized_writer).map_err(&write_error)?;
    // Every input's footer first: nothing is written unless all of them can be merged.
    let (mut opened, mut unlike) = (Vec::with_capacity(inputs.len()), Vec::new());
    for (input, path) in inputs.iter().enumerate() {
        let file = std::fs::File::open(path).map_err(|e| open_error(path, e))?;
        let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional)).map_err(read_error(path))?;
        if metadata.metadata().file_metadata().schema_descr() != writer.schema_descr() {
            unlike.push(input);
        }
        opened.push((path, file, metadata));
    }
    if !unlike.is_empty() {
        return Ok(Merged::Unlike { inputs: unlike });
    }
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut rows = 0;
    for (path, file, metadata) in opened {
        let parquet = Arc::clone(metadata.metadata());
        for (index, group) in parquet.row_groups().iter().enumerate() {
            if cancelled() {
                return Ok(Merged::Cancelled);
            }
            rows += group.num_rows() as u64;
            if group.num_rows() as usize >= MERGE_COPY_ROWS_MIN || group.compressed_size() >= MERGE_COPY_BYTES_MIN {
                encode_row_group(&mut writer, &factory, &schema, &mut pending).map_err(&write_error)?;
                let mut copy = writer.next_row_group().map_err(&write_error)?;
                for (column, chunk) in group.columns().iter().enumerate() {
                    let close = ColumnCloseResult {
                        bytes_written: chunk.compressed_size() as u64,
                        rows_written: group.num_rows() as u64,
                        metadata: chunk.clone(),
                        bloom_filter: None,
                        column_index: parquet.column_index().and_then(|c| c.get(index)).and_then(|c| c.get(column)).cloned(),
                        offset_index: parquet.offset_index().and_then(|o| o.get(index)).and_then(|o| o.get(column)).cloned(),
                    };
                    // Reads the input and writes the output: a failure is either's.
                    copy.append_column(&file, close).map_err(|e| Error::Io { operation: "copy a row group into a merged file from", path: path.display().to_string(), message: e.to_string() })?;
                }
                copy.close().map_err(&write_error)?;
            } else {
                let from = file.try_clone().map_err(|e| open_error(path, e))?;
                let batches = ParquetRecordBatchReaderBuilder::new_with_metadata(from, metadata.clone()).with_row_groups(vec![index]).build().map_err(read_error(path))?;
                for batch in batches {
                    pending.push(batch.map_err(|e| Error::Corrupt { path: path.display().to_string(), detail: e.to_string() })?);
                }
                if pending.iter().map(RecordBatch::num_rows).sum::<usize>() >= MERGE_COPY_ROWS_MIN || pending.iter().map(RecordBatch::get_array_memory_size).sum::<usize>() >= MERGE_PENDING_BYTES_MAX {
                    encode_row_group(&mut writer, &factory, &schema, &mut pending).map_err(&write_error)?;
                }
            }
        }
    }
    encode_row_group(&mut writer, &factory, &schema, &mut pending).map_err(&write_error)?;
    writer.close().map_err(&write_error)?;
    Ok(Merged::Written { rows })
}

/// Encodes `pending` (emptied), if any, as one row group of `writer`'s file.
fn encode_row_group<W: std::io::Write + Send>(writer: &mut SerializedFileWriter<W>, factory: &ArrowRowGroupWriterFactory, schema: &Schema, pending: &mut Vec<RecordBatch>) -> parquet::errors::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut columns = factory.create_column_writers(writer.flushed_row_groups().len())?;
    for batch in pending.drain(..) {
        let mut next = columns.iter_mut();
        for (field, array) in schema.fields().iter().zip(batch.columns()) {
            for leaf in compute_leaves(field, array)? {
                next.next().ok_or_else(|| parquet::errors::ParquetError::General(format!("no column writer left for {}", field.name())))?.write(&leaf)?;
            }
        }
    }
    let mut group = writer.next_row_group()?;
    for column in columns {
        column.close()?.append_to_row_group(&mut group)?;
    }
    group.close()?;
    Ok(())
}

/// An Arrow builder that can make an empty one like itself.
trait Like {
    /// An empty builder with room for as many values, and bytes of values, as this one
    /// holds.
    fn like(&self) -> Self;
}

impl Like for StringBuilder {
    fn like(&self) -> Self {
        StringBuilder::with_capacity(self.len(), self.values_slice().len())
    }
}

impl Like for BinaryBuilder {
    fn like(&self) -> Self {
        BinaryBuilder::with_capacity(self.len(), self.values_slice().len())
    }
}

impl Like for Int64Builder {
    fn like(&self) -> Self {
        Int64Builder::with_capacity(self.len())
    }
}

impl Like for TimestampMicrosecondBuilder {
    fn like(&self) -> Self {
        TimestampMicrosecondBuilder::with_capacity(self.len())
    }
}

impl Like for BooleanBuilder {
    fn like(&self) -> Self {
        BooleanBuilder::with_capacity(self.len())
    }
}

fn array(builder: &mut impl ArrayBuilder) -> ArrayRef {
    builder.finish()
}

/// A timestamp column in the tables' time zone, UTC (given here, not to each builder, so that
/// the builders are plain defaults).
fn timestamps(builder: &mut TimestampMicrosecondBuilder) -> ArrayRef {
    Arc::new(builder.finish().with_timezone("UTC"))
}

fn batch(table: usize, columns: Vec<ArrayRef>) -> Result<Option<RecordBatch>, ArrowError> {
    if columns.first().is_none_or(|c| c.is_empty()) {
        return Ok(None);
    }
    RecordBatch::try_new(schema_of(table), columns).map(Some)
}

/// The columns of `function_invocations` being built.
#[derive(Debug, Default)]
struct Invocations {
    lsn: Int64Builder,
    workflow_id: StringBuilder,
    step: StringBuilder,
    function: StringBuilder,
    partition: Int64Builder,
    start: TimestampMicrosecondBuilder,
    end: TimestampMicrosecondBuilder,
    error: StringBuilder,
    recorded: BooleanBuilder,
    replayed: BooleanBuilder,
    read_only: BooleanBuilder,
}

impl Invocations {
    /// No rows, with room for as many as these columns hold.
    fn like(&self) -> Self {
        Invocations {
            lsn: self.lsn.like(),
            workflow_id: self.workflow_id.like(),
            step: self.step.like(),
            function: self.function.like(),
            partition: self.partition.like(),
            start: self.start.like(),
            end: self.end.like(),
            error: self.error.like(),
            recorded: self.recorded.like(),
            replayed: self.replayed.like(),
            read_only: self.read_only.like(),
        }
    }

    fn push(&mut self, row: InvocationRow<'_>) {
        self.lsn.append_option(row.lsn);
        self.workflow_id.append_option(row.workflow_id);
        self.step.append_option(row.step);
        self.function.append_value(row.function);
        self.partition.append_option(row.partition);
        self.start.append_value(row.start_us);
        self.end.append_value(row.end_us);
        self.error.append_option(row.error);
        self.recorded.append_value(row.recorded);
        self.replayed.append_value(row.replayed);
        self.read_only.append_value(row.read_only);
    }

    fn finish(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        let columns = vec![
            array(&mut self.lsn),
            array(&mut self.workflow_id),
            array(&mut self.step),
            array(&mut self.function),
            array(&mut self.partition),
            timestamps(&mut self.start),
            timestamps(&mut self.end),
            array(&mut self.error),
            array(&mut self.recorded),
            array(&mut self.replayed),
            array(&mut self.read_only),
        ];
        batch(FUNCTION_INVOCATIONS, columns)
    }
}

/// The columns of `change_data` being built.
#[derive(Debug, Default)]
struct Changes {
    lsn: Int64Builder,
    commit: TimestampMicrosecondBuilder,
    table: StringBuilder,
    partition: Int64Builder,
    workflow_id: StringBuilder,
    step: StringBuilder,
    function: StringBuilder,
    table_id: Int64Builder,
    before: BinaryBuilder,
    after: BinaryBuilder,
}

impl Changes {
    /// No rows, with room for as many as these columns hold.
    fn like(&self) -> Self {
        Changes {
            lsn: self.lsn.like(),
            commit: self.commit.like(),
            table: self.table.like(),
            partition: self.partition.like(),
            workflow_id: self.workflow_id.like(),
            step: self.step.like(),
            function: self.function.like(),
            table_id: self.table_id.like(),
            before: self.before.like(),
            after: self.after.like(),
        }
    }

    fn push(&mut self, row: ChangeRow<'_>) {
        self.lsn.append_value(row.lsn);
        self.commit.append_value(row.commit_us);
        self.table.append_value(row.table);
        self.partition.append_value(row.partition);
        self.workflow_id.append_option(row.workflow_id);
        self.step.append_option(row.step);
        self.function.append_option(row.function);
        self.table_id.append_value(i64::from(row.table_id));
        self.before.append_option(row.before);
        self.after.append_option(row.after);
    }

    fn finish(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        // The JSON columns of files written before the images were kept, NULL in every row.
        let json = new_null_array(&DataType::Utf8, self.lsn.len());
        let columns = vec![
            array(&mut self.lsn),
            timestamps(&mut self.commit),
            array(&mut self.table),
            array(&mut self.partition),
            Arc::clone(&json),
            Arc::clone(&json),
            json,
            array(&mut self.workflow_id),
            array(&mut self.step),
            array(&mut self.function),
            array(&mut self.table_id),
            array(&mut self.before),
            array(&mut self.after),
        ];
        batch(CHANGE_DATA, columns)
    }
}

/// The columns of `workflows` being built.
#[derive(Debug, Default)]
struct Workflows {
    id: StringBuilder,
    name: StringBuilder,
    version: Int64Builder,
    status: StringBuilder,
    input: StringBuilder,
    output: StringBuilder,
    error: StringBuilder,
    start: TimestampMicrosecondBuilder,
    end: TimestampMicrosecondBuilder,
    lsn: Int64Builder,
}

impl Workflows {
    /// No rows, with room for as many as these columns hold.
    fn like(&self) -> Self {
        Workflows {
            id: self.id.like(),
            name: self.name.like(),
            version: self.version.like(),
            status: self.status.like(),
            input: self.input.like(),
            output: self.output.like(),
            error: self.error.like(),
            start: self.start.like(),
            end: self.end.like(),
            lsn: self.lsn.like(),
        }
    }

    fn push(&mut self, row: WorkflowRow<'_>) {
        self.id.append_value(row.id);
        self.name.append_value(row.name);
        self.version.append_value(row.version);
        self.status.append_value(row.status);
        self.input.append_value(row.input);
        self.output.append_option(row.output);
        self.error.append_option(row.error);
        self.start.append_value(row.start_us);
        self.end.append_option(row.end_us);
        self.lsn.append_value(row.lsn);
    }

    fn finish(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        let columns = vec![
            array(&mut self.id),
            array(&mut self.name),
            array(&mut self.version),
            array(&mut self.status),
            array(&mut self.input),
            array(&mut self.output),
            array(&mut self.error),
            timestamps(&mut self.start),
            timestamps(&mut self.end),
            array(&mut self.lsn),
        ];
        batch(WORKFLOWS, columns)
    }
}

/// The columns of `read_events` being built.
#[derive(Debug, Default)]
struct Reads {
    lsn: Int64Builder,
    workflow_id: StringBuilder,
    step: StringBuilder,
    function: StringBuilder,
    table: StringBuilder,
    key: StringBuilder,
}

impl Reads {
    /// No rows, with room for as many as these columns hold.
    fn like(&self) -> Self {
        Reads {
            lsn: self.lsn.like(),
            workflow_id: self.workflow_id.like(),
            step: self.step.like(),
            function: self.function.like(),
            table: self.table.like(),
            key: self.key.like(),
        }
    }

    fn push(&mut self, row: ReadRow<'_>) {
        self.lsn.append_option(row.lsn);
        self.workflow_id.append_option(row.workflow_id);
        self.step.append_option(row.step);
        self.function.append_value(row.function);
        self.table.append_value(row.table);
        self.key.append_value(row.key);
    }

    fn finish(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        let columns =
            vec![array(&mut self.lsn), array(&mut self.workflow_id), array(&mut self.step), array(&mut self.function), array(&mut self.table), array(&mut self.key)];
        batch(READ_EVENTS, columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_one_of_each(rows: &mut Rows, lsn: i64) {
        let text = "x".repeat(lsn as usize);
        rows.push_invocation(InvocationRow { lsn: Some(lsn), workflow_id: Some(&text), step: None, function: "f", partition: Some(1), start_us: 1, end_us: 2, error: None, recorded: true, replayed: false, read_only: false });
        rows.push_change(ChangeRow { lsn, commit_us: 2, table_id: 1, table: "t", partition: 1, before: None, after: Some(text.as_bytes()), workflow_id: None, step: None, function: Some("f") });
        rows.push_workflow(WorkflowRow { id: &text, name: "w", version: 1, status: "succeeded", input: "{}", output: Some(&text), error: None, start_us: 1, end_us: Some(3), lsn });
        rows.push_read(ReadRow { lsn: Some(lsn), workflow_id: None, step: None, function: "f", table: "t", key: &text });
    }

    #[test]
    fn rows_with_room_of_others_start_empty_and_fit_the_schemas() {
        let mut rows = Rows::default();
        for lsn in 1..=100 {
            push_one_of_each(&mut rows, lsn);
        }
        let mut next = Rows::with_room_of(&rows);
        assert_eq!(next.counts(), [0; 4], "room, not rows");
        push_one_of_each(&mut next, 7);
        // Each batch is checked against its table's schema (the timestamps' time zone too).
        let batches = next.into_batches().unwrap();
        assert_eq!(batches.iter().map(|b| b.as_ref().map_or(0, RecordBatch::num_rows)).collect::<Vec<_>>(), [1; 4]);
        let all = rows.into_batches().unwrap();
        assert_eq!(all.iter().map(|b| b.as_ref().map_or(0, RecordBatch::num_rows)).collect::<Vec<_>>(), [100; 4]);
    }

    /// The LSNs of the `change_data` rows of the Parquet file `path`, in order, and the rows
    /// of each of its row groups.
    fn lsns_and_row_groups(path: &std::path::Path) -> (Vec<i64>, Vec<i64>) {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::Int64Type;
        let builder = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap();
        let groups = builder.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
        let mut lsns = Vec::new();
        for batch in builder.build().unwrap() {
            lsns.extend(batch.unwrap().column_by_name("lsn").unwrap().as_primitive::<Int64Type>().values().iter().copied());
        }
        (lsns, groups)
    }

    #[test]
    fn a_merge_copies_large_row_groups_and_encodes_small_ones_together() {
        let dir = tempfile::tempdir().unwrap();
        let large = MERGE_COPY_ROWS_MIN as i64 + 10;
        // Two small files, a large one, a small one, over LSNs 1 to 5 + large.
        let ranges = [(1, 2), (2, 3), (3, 3 + large), (3 + large, 6 + large)];
        let mut inputs = Vec::new();
        for (n, (from, to)) in ranges.into_iter().enumerate() {
            let mut rows = Rows::default();
            (from..to).for_each(|lsn| push_one_of_each(&mut rows, lsn % 50));
            let batch = rows.into_batches().unwrap()[CHANGE_DATA].clone().unwrap();
            // The LSNs in order, whatever the text's length.
            let lsns: ArrayRef = Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(from..to));
            let batch = RecordBatch::try_new(batch.schema(), [vec![lsns], batch.columns()[1..].to_vec()].concat()).unwrap();
            let path = dir.path().join(format!("{n}.parquet"));
            write_parquet(std::fs::File::create(&path).unwrap(), CHANGE_DATA, &[batch]).unwrap();
            inputs.push(path);
        }
        let copied = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&inputs[2]).unwrap()).unwrap().metadata().row_group(0).compressed_size();

        let merged = dir.path().join("merged.parquet");
        let go_on = || false;
        assert_eq!(merge_parquet(std::fs::File::create(&merged).unwrap(), CHANGE_DATA, &inputs, &go_on).unwrap(), Merged::Written { rows: 5 + large as u64 });
        let (lsns, groups) = lsns_and_row_groups(&merged);
        assert_eq!(lsns, (1..6 + large).collect::<Vec<_>>(), "every row once, in order");
        assert_eq!(groups, [2, large, 3], "the small files before the large one together, the large one as it was, the last one");
        let output = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&merged).unwrap()).unwrap();
        assert_eq!(output.metadata().row_group(1).compressed_size(), copied, "copied, not encoded again");
        assert_eq!(output.schema(), &schema_of(CHANGE_DATA), "read back with the table's own types");

        // A row group of a few large rows is copied too.
        // Bytes snappy cannot squeeze (xorshift).
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        let noise: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut rows = Rows::default();
        for lsn in [10, 11] {
            rows.push_change(ChangeRow { lsn, commit_us: 2, table_id: 1, table: "t", partition: 1, before: None, after: Some(&noise), workflow_id: None, step: None, function: Some("f") });
        }
        let images = dir.path().join("images.parquet");
        write_parquet(std::fs::File::create(&images).unwrap(), CHANGE_DATA, &[rows.into_batches().unwrap()[CHANGE_DATA].clone().unwrap()]).unwrap();
        let copied = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&images).unwrap()).unwrap().metadata().row_group(0).compressed_size();
        assert!(copied >= MERGE_COPY_BYTES_MIN, "{copied} bytes");
        assert_eq!(merge_parquet(std::fs::File::create(&merged).unwrap(), CHANGE_DATA, &[inputs[0].clone(), images], &go_on).unwrap(), Merged::Written { rows: 3 });
        let output = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&merged).unwrap()).unwrap();
        assert_eq!(output.metadata().row_groups().iter().map(|g| (g.num_rows(), g.compressed_size() == copied)).collect::<Vec<_>>(), [(1, false), (2, true)]);

        // A file of another table has other columns: nothing is merged.
        let mut rows = Rows::default();
        push_one_of_each(&mut rows, 1);
        let other = dir.path().join("other.parquet");
        write_parquet(std::fs::File::create(&other).unwrap(), WORKFLOWS, &[rows.into_batches().unwrap()[WORKFLOWS].clone().unwrap()]).unwrap();
        let unlike = [other.clone(), inputs[0].clone(), other];
        assert_eq!(merge_parquet(std::fs::File::create(&merged).unwrap(), CHANGE_DATA, &unlike, &go_on).unwrap(), Merged::Unlike { inputs: vec![0, 2] });

        // Asked to stop, it stops.
        let stop = || true;
        assert_eq!(merge_parquet(std::fs::File::create(&merged).unwrap(), CHANGE_DATA, &inputs, &stop).unwrap(), Merged::Cancelled);

        // A damaged input is named.
        std::fs::write(&inputs[1], b"not parquet").unwrap();
        match merge_parquet(std::fs::File::create(&merged).unwrap(), CHANGE_DATA, &inputs, &go_on) {
            Err(Error::Corrupt { path, .. }) => assert_eq!(path, inputs[1].display().to_string()),
            other => panic!("merged a damaged file: {other:?}"),
        }
    }
}
