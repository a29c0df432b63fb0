//! The trace tables: their Arrow schemas, the rows the feed produces, and the conversion of
//! rows into record batches.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, BooleanBuilder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};

/// The columns, in any table, whose values repeat enough for a Parquet dictionary.
const DICTIONARY_COLUMNS: [&str; 6] = ["function", "step", "status", "table_name", "operation", "name"];

/// The columns, in any table, of long text that a query never prunes by range: no min/max
/// statistics (each would cost a comparison of every value and two copies in every page).
const UNPRUNED_COLUMNS: [&str; 6] = ["key", "before", "after", "input", "output", "error"];

/// The tables, in a fixed order (the order of [`Rows`]' fields and of the store's folders).
pub const TABLES: [&str; 4] = ["function_invocations", "change_data", "workflows", "read_events"];

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
            Field::new("duration_us", DataType::Int64, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("error", DataType::Utf8, true),
            Field::new("recorded", DataType::Boolean, false),
            Field::new("replayed", DataType::Boolean, false),
            Field::new("read_only", DataType::Boolean, false),
        ]),
        schema(vec![
            Field::new("lsn", DataType::Int64, false),
            Field::new("commit_time", timestamp(), false),
            Field::new("table_name", DataType::Utf8, false),
            Field::new("operation", DataType::Utf8, false),
            Field::new("partition", DataType::Int64, false),
            Field::new("key", DataType::Utf8, false),
            Field::new("before", DataType::Utf8, true),
            Field::new("after", DataType::Utf8, true),
            Field::new("workflow_id", DataType::Utf8, true),
            Field::new("step", DataType::Utf8, true),
            Field::new("function", DataType::Utf8, true),
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
            Field::new("duration_us", DataType::Int64, true),
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

/// The schema of table number `table` (an index into [`TABLES`]).
pub fn schema_of(table: usize) -> SchemaRef {
    Arc::clone(&SCHEMAS[table])
}

/// One row of `function_invocations`.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationRow {
    /// The LSN of its commit; `None` when it committed nothing.
    pub lsn: Option<i64>,
    pub workflow_id: Option<String>,
    pub step: Option<String>,
    pub function: String,
    pub partition: Option<i64>,
    pub start_us: i64,
    pub end_us: i64,
    pub error: Option<String>,
    pub recorded: bool,
    pub replayed: bool,
    pub read_only: bool,
}

/// One row of `change_data`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    pub lsn: i64,
    pub commit_us: i64,
    pub table: String,
    /// `insert`, `update` or `delete`.
    pub operation: &'static str,
    pub partition: i64,
    /// The primary key as a JSON object.
    pub key: String,
    pub before: Option<String>,
    pub after: Option<String>,
    pub workflow_id: Option<String>,
    pub step: Option<String>,
    pub function: Option<String>,
}

/// One row of `workflows`: a run that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRow {
    pub id: String,
    pub name: String,
    pub version: i64,
    pub status: String,
    pub input: String,
    pub output: Option<String>,
    pub error: Option<String>,
    pub start_us: i64,
    pub end_us: Option<i64>,
    pub lsn: i64,
}

/// One row of `read_events`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRow {
    pub lsn: Option<i64>,
    pub workflow_id: Option<String>,
    pub step: Option<String>,
    pub function: String,
    pub table: String,
    pub key: String,
}

/// Rows of every table, as produced from a run of log records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub invocations: Vec<InvocationRow>,
    pub changes: Vec<ChangeRow>,
    pub workflows: Vec<WorkflowRow>,
    pub reads: Vec<ReadRow>,
}

impl Rows {
    /// No rows, with room for as many as `other` holds in each table (the feed's steps are
    /// alike: this spares each one growing its vectors from nothing).
    pub fn with_room_of(other: &Rows) -> Rows {
        Rows {
            invocations: Vec::with_capacity(other.invocations.len()),
            changes: Vec::with_capacity(other.changes.len()),
            workflows: Vec::with_capacity(other.workflows.len()),
            reads: Vec::with_capacity(other.reads.len()),
        }
    }

    /// Rows in all tables.
    pub fn count(&self) -> usize {
        self.invocations.len() + self.changes.len() + self.workflows.len() + self.reads.len()
    }

    /// The rows as one batch per table (`None` for a table without rows), in [`TABLES`]'
    /// order.
    pub fn into_batches(self) -> Result<[Option<RecordBatch>; 4], ArrowError> {
        Ok([invocations_batch(&self.invocations)?, changes_batch(&self.changes)?, workflows_batch(&self.workflows)?, reads_batch(&self.reads)?])
    }
}

/// Writes `batches` of table number `table` as one Parquet file (snappy) to `out`.
pub fn write_parquet(out: impl std::io::Write + Send, table: usize, batches: &[RecordBatch]) -> Result<()> {
    // Dictionaries only for the columns with few distinct values: building one costs a hash
    // per value, which the keys, images and ids would pay for nothing.
    let mut properties = WriterProperties::builder().set_compression(Compression::SNAPPY).set_dictionary_enabled(false);
    for column in DICTIONARY_COLUMNS {
        properties = properties.set_column_dictionary_enabled(ColumnPath::from(column), true);
    }
    for column in UNPRUNED_COLUMNS {
        properties = properties.set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    let properties = properties.build();
    let parquet_error = |e: parquet::errors::ParquetError| Error::Internal(format!("writing a Parquet file of {}: {e}", TABLES[table]));
    let mut writer = ArrowWriter::try_new(out, schema_of(table), Some(properties)).map_err(parquet_error)?;
    for batch in batches {
        writer.write(batch).map_err(parquet_error)?;
    }
    writer.close().map_err(parquet_error)?;
    Ok(())
}

fn strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringBuilder::new();
    values.for_each(|v| b.append_option(v));
    Arc::new(b.finish())
}

fn ints(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    let mut b = Int64Builder::new();
    values.for_each(|v| b.append_option(v));
    Arc::new(b.finish())
}

fn times(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    let mut b = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    values.for_each(|v| b.append_option(v));
    Arc::new(b.finish())
}

fn bools(values: impl Iterator<Item = bool>) -> ArrayRef {
    let mut b = BooleanBuilder::new();
    values.for_each(|v| b.append_value(v));
    Arc::new(b.finish())
}

fn batch(table: usize, columns: Vec<ArrayRef>, rows: usize) -> Result<Option<RecordBatch>, ArrowError> {
    if rows == 0 {
        return Ok(None);
    }
    RecordBatch::try_new(schema_of(table), columns).map(Some)
}

fn invocations_batch(rows: &[InvocationRow]) -> Result<Option<RecordBatch>, ArrowError> {
    let columns = vec![
        ints(rows.iter().map(|r| r.lsn)),
        strings(rows.iter().map(|r| r.workflow_id.as_deref())),
        strings(rows.iter().map(|r| r.step.as_deref())),
        strings(rows.iter().map(|r| Some(r.function.as_str()))),
        ints(rows.iter().map(|r| r.partition)),
        times(rows.iter().map(|r| Some(r.start_us))),
        times(rows.iter().map(|r| Some(r.end_us))),
        ints(rows.iter().map(|r| Some(r.end_us - r.start_us))),
        strings(rows.iter().map(|r| Some(if r.error.is_some() { "failed" } else { "succeeded" }))),
        strings(rows.iter().map(|r| r.error.as_deref())),
        bools(rows.iter().map(|r| r.recorded)),
        bools(rows.iter().map(|r| r.replayed)),
        bools(rows.iter().map(|r| r.read_only)),
    ];
    batch(0, columns, rows.len())
}

fn changes_batch(rows: &[ChangeRow]) -> Result<Option<RecordBatch>, ArrowError> {
    let columns = vec![
        ints(rows.iter().map(|r| Some(r.lsn))),
        times(rows.iter().map(|r| Some(r.commit_us))),
        strings(rows.iter().map(|r| Some(r.table.as_str()))),
        strings(rows.iter().map(|r| Some(r.operation))),
        ints(rows.iter().map(|r| Some(r.partition))),
        strings(rows.iter().map(|r| Some(r.key.as_str()))),
        strings(rows.iter().map(|r| r.before.as_deref())),
        strings(rows.iter().map(|r| r.after.as_deref())),
        strings(rows.iter().map(|r| r.workflow_id.as_deref())),
        strings(rows.iter().map(|r| r.step.as_deref())),
        strings(rows.iter().map(|r| r.function.as_deref())),
    ];
    batch(1, columns, rows.len())
}

fn workflows_batch(rows: &[WorkflowRow]) -> Result<Option<RecordBatch>, ArrowError> {
    let columns = vec![
        strings(rows.iter().map(|r| Some(r.id.as_str()))),
        strings(rows.iter().map(|r| Some(r.name.as_str()))),
        ints(rows.iter().map(|r| Some(r.version))),
        strings(rows.iter().map(|r| Some(r.status.as_str()))),
        strings(rows.iter().map(|r| Some(r.input.as_str()))),
        strings(rows.iter().map(|r| r.output.as_deref())),
        strings(rows.iter().map(|r| r.error.as_deref())),
        times(rows.iter().map(|r| Some(r.start_us))),
        times(rows.iter().map(|r| r.end_us)),
        ints(rows.iter().map(|r| r.end_us.map(|end| end - r.start_us))),
        ints(rows.iter().map(|r| Some(r.lsn))),
    ];
    batch(2, columns, rows.len())
}

fn reads_batch(rows: &[ReadRow]) -> Result<Option<RecordBatch>, ArrowError> {
    let columns = vec![
        ints(rows.iter().map(|r| r.lsn)),
        strings(rows.iter().map(|r| r.workflow_id.as_deref())),
        strings(rows.iter().map(|r| r.step.as_deref())),
        strings(rows.iter().map(|r| Some(r.function.as_str()))),
        strings(rows.iter().map(|r| Some(r.table.as_str()))),
        strings(rows.iter().map(|r| Some(r.key.as_str()))),
    ];
    batch(3, columns, rows.len())
}
