//! Queries over the traces: a DataFusion session per query, over each table's Parquet files
//! and in-memory tail as one snapshot, read-only, with its memory bounded.

use std::sync::Arc;

use comb_planner::Catalog;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::functions::expr_fn::coalesce;
use datafusion::logical_expr::{Expr, ScalarUDF, cast as cast_expr, lit, when};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext, col};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::images::{ImageJson, Part};
use crate::options::TracingOptions;
use crate::store::TableSnapshot;
use crate::tables::{CHANGE_DATA, FUNCTION_INVOCATIONS, TABLES, WORKFLOWS, schema_of};

/// A query's answer: its columns and rows, values as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// The columns' names, in order.
    pub columns: Vec<String>,
    /// The rows, each a value per column.
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Whether rows beyond `query-rows-max`, or beyond [`ANSWER_BYTES_MAX`], were cut.
    pub truncated: bool,
}

/// Largest answer, in bytes of the rows as JSON arrays; rows beyond it are cut, and the
/// answer says so. Checked as the rows are made, a slice at a time, each slice no larger
/// than the room left at the rows' average size so far: an answer holds about one row more
/// than it returns, at most.
pub const ANSWER_BYTES_MAX: usize = 16 << 20;

/// Most rows made into JSON at a time, between checks of [`ANSWER_BYTES_MAX`].
const ANSWER_SLICE_ROWS: usize = 64;

/// One table as the query sees it: its files and its tail, unioned, with the columns the
/// files do not store made from the ones they do.
fn provider(ctx: &SessionContext, table: usize, snapshot: TableSnapshot, catalog: &Arc<Catalog>) -> Result<Arc<dyn TableProvider>> {
    let stored = stored(ctx, table, snapshot)?;
    let columns = match table {
        FUNCTION_INVOCATIONS => function_invocations()?,
        CHANGE_DATA => change_data(catalog)?,
        WORKFLOWS => workflows()?,
        _ => return Ok(stored),
    };
    Ok(ctx.read_table(stored)?.select(columns)?.into_view())
}

/// Microseconds from `start` to `end`, two timestamps (NULL when either is).
fn micros_between(start: &str, end: &str) -> Expr {
    cast_expr(col(end), DataType::Int64) - cast_expr(col(start), DataType::Int64)
}

/// Every stored column of table number `table`, in order, with `made` placed before the
/// stored column `before`.
fn stored_with(table: usize, before: &str, made: Vec<Expr>) -> Result<Vec<Expr>> {
    let fields = schema_of(table).fields().clone();
    let at = fields.iter().position(|f| f.name() == before).ok_or_else(|| Error::Internal(format!("{} stores no column {before}", TABLES[table])))?;
    let stored = |range: std::ops::Range<usize>| fields[range].iter().map(|f| col(f.name())).collect::<Vec<_>>();
    Ok([stored(0..at), made, stored(at..fields.len())].concat())
}

/// `function_invocations` as users see it: its duration and status made from its times and
/// its error (older files store both too, with the same values; the view reads neither).
fn function_invocations() -> Result<Vec<Expr>> {
    let status = when(col("error").is_null(), lit("succeeded")).otherwise(lit("failed"))?;
    stored_with(FUNCTION_INVOCATIONS, "error", vec![micros_between("start_time", "end_time").alias("duration_us"), status.alias("status")])
}

/// `workflows` as users see it: a run's duration made from its times.
fn workflows() -> Result<Vec<Expr>> {
    stored_with(WORKFLOWS, "lsn", vec![micros_between("start_time", "end_time").alias("duration_us")])
}

/// `change_data` as users see it: the images, kept in the row encoding, as JSON objects made
/// with `catalog`'s columns (rows of files written before the images were kept hold their
/// JSON already), and the operation told by which images there are. A query that reads no
/// image makes no JSON.
fn change_data(catalog: &Arc<Catalog>) -> Result<Vec<Expr>> {
    let row = ScalarUDF::from(ImageJson::new(Arc::clone(catalog), Part::Row));
    let key = ScalarUDF::from(ImageJson::new(Arc::clone(catalog), Part::Key));
    let json = |kept: &str, udf: &ScalarUDF, image| coalesce(vec![col(kept), udf.call(vec![col("table_id"), image])]).alias(kept);
    // An image is there in one of two forms: the row (these files) or its JSON (older ones).
    let no_image = |row: &str, json: &str| col(row).is_null().and(col(json).is_null());
    let operation = when(no_image("before_row", "before"), lit("insert"))
        .when(no_image("after_row", "after"), lit("delete"))
        .otherwise(lit("update"))?;
    Ok(vec![
        col("lsn"),
        col("commit_time"),
        col("table_name"),
        operation.alias("operation"),
        col("partition"),
        json("key", &key, coalesce(vec![col("after_row"), col("before_row")])),
        json("before", &row, col("before_row")),
        json("after", &row, col("after_row")),
        col("workflow_id"),
        col("step"),
        col("function"),
    ])
}

/// A file's path as the URL of that one file: never a glob, whatever characters the data
/// directory's path holds (`[`, `*`, `?`), and not UTF-8 only.
fn file_url(path: &std::path::Path) -> Result<ListingTableUrl> {
    let absolute = std::path::absolute(path).map_err(|e| Error::Internal(format!("the trace file {}: {e}", path.display())))?;
    let url = url::Url::from_file_path(&absolute).map_err(|()| Error::Internal(format!("the trace file {} has no file URL", absolute.display())))?;
    Ok(ListingTableUrl::try_new(url, None)?)
}

/// One table as stored: its files and its tail, unioned.
fn stored(ctx: &SessionContext, table: usize, snapshot: TableSnapshot) -> Result<Arc<dyn TableProvider>> {
    let schema = schema_of(table);
    let tail: Arc<dyn TableProvider> = Arc::new(MemTable::try_new(Arc::clone(&schema), vec![snapshot.tail])?);
    if snapshot.files.is_empty() {
        return Ok(tail);
    }
    let urls = snapshot
        .files
        .iter()
        .map(|path| file_url(path))
        .collect::<Result<Vec<_>>>()?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema);
    let files: Arc<dyn TableProvider> = Arc::new(ListingTable::try_new(config)?);
    Ok(ctx.read_table(files)?.union(ctx.read_table(tail)?)?.into_view())
}

/// Runs one read-only query over a snapshot of the store, whose records `catalog` covers.
pub(crate) async fn run(snapshot: [TableSnapshot; 4], catalog: Arc<Catalog>, sql: &str, options: &TracingOptions) -> Result<QueryResult> {
    let runtime = RuntimeEnvBuilder::new().with_memory_limit(options.query_memory_bytes, 1.0).build_arc()?;
    let mut config = SessionConfig::new().with_target_partitions(options.query_threads).with_information_schema(true);
    // Strings come back as the tables declare them (Utf8), from files and tail alike.
    config.options_mut().execution.parquet.schema_force_view_types = false;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    for (table, snapshot) in snapshot.into_iter().enumerate() {
        ctx.register_table(TABLES[table], provider(&ctx, table, snapshot, &catalog)?)?;
    }
    let read_only = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let frame = ctx.sql_with_options(sql, read_only).await?;
    let columns = frame.schema().fields().iter().map(|f| f.name().clone()).collect();
    let mut stream = frame.execute_stream().await?;
    let mut rows = Vec::new();
    let mut bytes = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let mut offset = 0;
        while offset < batch.num_rows() {
            if rows.len() >= options.query_rows_max {
                // A row is left over: this one.
                return Ok(QueryResult { columns, rows, truncated: true });
            }
            // As many rows as fit in the room left, were they as large as those so far.
            let fit = if rows.is_empty() { 1 } else { ((ANSWER_BYTES_MAX - bytes) / bytes.div_ceil(rows.len())).max(1) };
            let take = (batch.num_rows() - offset).min(ANSWER_SLICE_ROWS).min(fit).min(options.query_rows_max - rows.len());
            let first = rows.len();
            json_rows(&batch.slice(offset, take), &mut rows)?;
            for (i, row) in rows[first..].iter().enumerate() {
                let size = 2 + row.iter().map(|v| json_bytes(v) + 1).sum::<usize>();
                if bytes + size > ANSWER_BYTES_MAX {
                    rows.truncate(first + i);
                    return Ok(QueryResult { columns, rows, truncated: true });
                }
                bytes += size;
            }
            offset += take;
        }
    }
    Ok(QueryResult { columns, rows, truncated: false })
}

/// The bytes of a value as JSON (a control character counted as its longest escape).
fn json_bytes(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null => 4,
        Value::Bool(b) => if *b { 4 } else { 5 },
        Value::Number(n) => n.to_string().len(),
        Value::String(s) => 2 + s.len() + s.bytes().map(|b| match b { b'"' | b'\\' => 1, 0..=0x1f => 5, _ => 0 }).sum::<usize>(),
        Value::Array(values) => 2 + values.iter().map(|v| json_bytes(v) + 1).sum::<usize>(),
        Value::Object(fields) => 2 + fields.iter().map(|(k, v)| k.len() + 4 + json_bytes(v)).sum::<usize>(),
    }
}

/// One column's values as JSON: numbers, booleans and strings as themselves, anything else
/// (timestamps, lists, decimals) in Arrow's display form.
fn json_column(array: &ArrayRef) -> Result<Vec<serde_json::Value>> {
    use serde_json::Value;
    let n = array.len();
    let values: Vec<Value> = match array.data_type() {
        DataType::Null => vec![Value::Null; n],
        DataType::Boolean => array.as_boolean().iter().map(|v| v.map_or(Value::Null, Value::Bool)).collect(),
        t if t.is_integer() => {
            let ints = cast(array, &DataType::Int64)?;
            ints.as_primitive::<Int64Type>().iter().map(|v| v.map_or(Value::Null, Value::from)).collect()
        }
        t if t.is_floating() => {
            let floats = cast(array, &DataType::Float64)?;
            floats.as_primitive::<Float64Type>().iter().map(|v| v.and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)).collect()
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let strings = cast(array, &DataType::Utf8)?;
            strings.as_string::<i32>().iter().map(|v| v.map_or(Value::Null, Value::from)).collect()
        }
        _ => {
            let options = FormatOptions::default();
            let formatter = ArrayFormatter::try_new(array.as_ref(), &options)?;
            (0..n).map(|i| if array.is_null(i) { Value::Null } else { Value::String(formatter.value(i).to_string()) }).collect()
        }
    };
    Ok(values)
}

fn json_rows(batch: &RecordBatch, rows: &mut Vec<Vec<serde_json::Value>>) -> Result<()> {
    let columns = batch.columns().iter().map(json_column).collect::<Result<Vec<_>>>()?;
    let start = rows.len();
    rows.extend((0..batch.num_rows()).map(|_| Vec::with_capacity(columns.len())));
    for column in columns {
        for (row, value) in rows[start..].iter_mut().zip(column) {
            row.push(value);
        }
    }
    Ok(())
}

impl From<datafusion::arrow::error::ArrowError> for Error {
    fn from(err: datafusion::arrow::error::ArrowError) -> Error {
        Error::Query(err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use comb_backend::{Value, encode_row};
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use parquet::arrow::ArrowWriter;

    use super::*;
    use crate::tables::{ChangeRow, InvocationRow, Rows};

    fn catalog() -> Arc<Catalog> {
        Arc::new(Catalog::new().apply("CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT NOT NULL)").unwrap())
    }

    fn change<'a>(lsn: i64, table_id: u32, before: Option<&'a [u8]>, after: Option<&'a [u8]>) -> ChangeRow<'a> {
        ChangeRow { lsn, commit_us: 5, table_id, table: "accounts", partition: 0, before, after, workflow_id: None, step: None, function: Some("f") }
    }

    fn utc() -> DataType {
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    }

    fn text(name: &str, nullable: bool) -> Field {
        Field::new(name, DataType::Utf8, nullable)
    }

    fn strings(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    /// A file of one row, written by Parquet's defaults (as no build of Comb writes them).
    fn file_of(path: std::path::PathBuf, fields: Vec<Field>, columns: Vec<ArrayRef>) -> std::path::PathBuf {
        let schema = Arc::new(Schema::new(fields));
        let mut writer = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), Arc::clone(&schema), None).unwrap();
        writer.write(&RecordBatch::try_new(schema, columns).unwrap()).unwrap();
        writer.close().unwrap();
        path
    }

    /// A `change_data` file as written before the images were kept: JSON columns only, and
    /// an operation stored (here one that no view makes, to tell which one a query reads): an
    /// insert and a delete.
    fn old_file(dir: &std::path::Path) -> std::path::PathBuf {
        let utc = utc();
        let fields = vec![
            Field::new("lsn", DataType::Int64, false),
            Field::new("commit_time", utc, false),
            text("table_name", false),
            text("operation", false),
            Field::new("partition", DataType::Int64, false),
            text("key", false),
            text("before", true),
            text("after", true),
            text("workflow_id", true),
            text("step", true),
            text("function", true),
        ];
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, 3])),
            Arc::new(TimestampMicrosecondArray::from(vec![5, 6]).with_timezone("UTC")),
            strings(&[Some("accounts"); 2]),
            strings(&[Some("stored"); 2]),
            Arc::new(Int64Array::from(vec![0, 0])),
            strings(&[Some(r#"{"id":1}"#), Some(r#"{"id":3}"#)]),
            strings(&[None, Some(r#"{"id":3,"owner":"gone"}"#)]),
            strings(&[Some(r#"{"id":1,"owner":"old"}"#), None]),
            strings(&[None; 2]),
            strings(&[None; 2]),
            strings(&[Some("f"); 2]),
        ];
        file_of(dir.join("old.parquet"), fields, columns)
    }

    /// A `function_invocations` file as written before its duration and status were made by
    /// the queries: both stored (here with values no view makes, to tell which a query reads).
    fn old_invocations_file(dir: &std::path::Path) -> std::path::PathBuf {
        let (int, boolean) = (|name: &str| Field::new(name, DataType::Int64, true), |name: &str| Field::new(name, DataType::Boolean, false));
        let fields = vec![
            int("lsn"),
            text("workflow_id", true),
            text("step", true),
            text("function", false),
            int("partition"),
            Field::new("start_time", utc(), false),
            Field::new("end_time", utc(), false),
            int("duration_us"),
            text("status", false),
            text("error", true),
            boolean("recorded"),
            boolean("replayed"),
            boolean("read_only"),
        ];
        let time = |us: i64| -> ArrayRef { Arc::new(TimestampMicrosecondArray::from(vec![us]).with_timezone("UTC")) };
        let flag = || -> ArrayRef { Arc::new(datafusion::arrow::array::BooleanArray::from(vec![false])) };
        let columns = vec![
            Arc::new(Int64Array::from(vec![None])) as ArrayRef,
            strings(&[Some("w1")]),
            strings(&[Some("pay")]),
            strings(&[Some("charge")]),
            Arc::new(Int64Array::from(vec![1])),
            time(10),
            time(35),
            Arc::new(Int64Array::from(vec![999])),
            strings(&[Some("stored")]),
            strings(&[Some("card declined")]),
            flag(),
            flag(),
            flag(),
        ];
        file_of(dir.join("old-invocations.parquet"), fields, columns)
    }

    /// A snapshot in which table number `table` is `snapshot` and the others are empty.
    fn snapshot_of(table: usize, snapshot: TableSnapshot) -> [TableSnapshot; 4] {
        let mut snapshot = Some(snapshot);
        std::array::from_fn(|t| if t == table { snapshot.take().unwrap_or_default() } else { TableSnapshot::default() })
    }

    #[tokio::test]
    async fn the_tables_show_their_columns_in_the_documented_order() {
        let documented: [&[&str]; 4] = [
            &["lsn", "workflow_id", "step", "function", "partition", "start_time", "end_time", "duration_us", "status", "error", "recorded", "replayed", "read_only"],
            &["lsn", "commit_time", "table_name", "operation", "partition", "key", "before", "after", "workflow_id", "step", "function"],
            &["id", "name", "version", "status", "input", "output", "error", "start_time", "end_time", "duration_us", "lsn"],
            &["lsn", "workflow_id", "step", "function", "table_name", "key"],
        ];
        for (table, columns) in TABLES.iter().zip(documented) {
            let result = run(Default::default(), catalog(), &format!("SELECT * FROM {table}"), &options()).await.unwrap();
            assert_eq!(result.columns, columns, "{table}");
        }
    }

    #[tokio::test]
    async fn invocations_in_files_that_stored_duration_and_status_read_as_those_made_now() {
        let dir = tempfile::tempdir().unwrap();
        let mut rows = Rows::default();
        let now = InvocationRow { lsn: Some(7), workflow_id: Some("w2"), step: Some("pay"), function: "charge", partition: Some(0), start_us: 40, end_us: 41, error: None, recorded: false, replayed: false, read_only: false };
        rows.push_invocation(now);
        let [tail, ..] = rows.into_batches().unwrap();
        let snapshot = snapshot_of(FUNCTION_INVOCATIONS, TableSnapshot { files: vec![old_invocations_file(dir.path())], tail: tail.into_iter().collect() });
        let sql = "SELECT workflow_id, duration_us, status, error FROM function_invocations ORDER BY workflow_id";
        let result = run(snapshot, catalog(), sql, &options()).await.unwrap();
        let text = |s: &str| serde_json::Value::from(s);
        assert_eq!(result.rows, [vec![text("w1"), 25.into(), text("failed"), text("card declined")], vec![text("w2"), 1.into(), text("succeeded"), serde_json::Value::Null]]);
    }

    #[tokio::test]
    async fn an_answer_is_cut_at_its_bytes_as_it_is_made() {
        // A hundred rows of 1 MiB each: 100 MiB were they all made.
        let sql = "SELECT repeat('x', 1048576) AS big FROM generate_series(1, 100)";
        let result = run(Default::default(), catalog(), sql, &options()).await.unwrap();
        assert!(result.truncated);
        let bytes: usize = result.rows.iter().map(|row| serde_json::Value::Array(row.clone()).to_string().len()).sum();
        assert_eq!(result.rows.len(), 15, "as many rows as fit in {ANSWER_BYTES_MAX} bytes ({bytes})");
        // Quotes take twice their bytes as JSON: counted so.
        let sql = r#"SELECT repeat('"', 1048576) AS quotes FROM generate_series(1, 100)"#;
        let result = run(Default::default(), catalog(), sql, &options()).await.unwrap();
        let bytes: usize = result.rows.iter().map(|row| serde_json::Value::Array(row.clone()).to_string().len()).sum();
        assert!(result.truncated && bytes <= ANSWER_BYTES_MAX, "{bytes} bytes");
        assert_eq!(result.rows.len(), 7, "as many rows as fit ({bytes} bytes)");
        // A small answer is whole.
        let small = run(Default::default(), catalog(), "SELECT * FROM generate_series(1, 3)", &options()).await.unwrap();
        assert_eq!((small.rows.len(), small.truncated), (3, false));
    }

    fn options() -> TracingOptions {
        TracingOptions { query_threads: 1, ..TracingOptions::default() }
    }

    #[tokio::test]
    async fn images_in_files_read_as_json_beside_the_json_of_older_files() {
        let root = tempfile::tempdir().unwrap();
        // A folder whose path a glob would misread.
        let dir = root.path().join("data [1] *?");
        std::fs::create_dir(&dir).unwrap();
        let catalog = catalog();
        let id = catalog.table("accounts").unwrap().id.0;
        let (before, after) = (encode_row(&[Value::Int(2), Value::Text("ann".into())]), encode_row(&[Value::Int(2), Value::Text("bo".into())]));
        let mut rows = Rows::default();
        rows.push_change(change(2, id, Some(before.as_slice()), Some(after.as_slice())));
        let [_, new, ..] = rows.into_batches().unwrap();
        let new_file = dir.join("new.parquet");
        crate::tables::write_parquet(std::fs::File::create(&new_file).unwrap(), CHANGE_DATA, &[new.unwrap()]).unwrap();
        let snapshot = snapshot_of(CHANGE_DATA, TableSnapshot { files: vec![old_file(&dir), new_file], tail: Vec::new() });
        let result = run(snapshot, catalog, "SELECT lsn, operation, key, before, after FROM change_data ORDER BY lsn", &options()).await.unwrap();
        let text = |s: &str| serde_json::Value::from(s);
        assert_eq!(result.rows, [
            vec![1.into(), text("insert"), text(r#"{"id":1}"#), serde_json::Value::Null, text(r#"{"id":1,"owner":"old"}"#)],
            vec![2.into(), text("update"), text(r#"{"id":2}"#), text(r#"{"id":2,"owner":"ann"}"#), text(r#"{"id":2,"owner":"bo"}"#)],
            vec![3.into(), text("delete"), text(r#"{"id":3}"#), text(r#"{"id":3,"owner":"gone"}"#), serde_json::Value::Null],
        ]);
    }

    #[tokio::test]
    async fn only_a_query_that_reads_an_image_decodes_it_and_a_bad_one_reads_as_null() {
        let catalog = catalog();
        let id = catalog.table("accounts").unwrap().id.0;
        let mut rows = Rows::default();
        rows.push_change(change(3, id, None, Some(b"not a row")));
        rows.push_change(change(4, 999, None, Some(b"not a row")));
        let [_, tail, ..] = rows.into_batches().unwrap();
        let snapshot = snapshot_of(CHANGE_DATA, TableSnapshot { files: Vec::new(), tail: tail.into_iter().collect() });
        let options = options();
        let query = |sql: &'static str| run(snapshot.clone(), Arc::clone(&catalog), sql, &options);
        let lsns = query("SELECT lsn, operation FROM change_data ORDER BY lsn").await.unwrap();
        let row = |lsn: i64| vec![serde_json::Value::from(lsn), serde_json::Value::from("insert")];
        assert_eq!(lsns.rows, [row(3), row(4)]);
        // Bytes that are not a row, and a table the catalog does not know: NULL, and reported.
        let images = query("SELECT lsn, key, after FROM change_data ORDER BY lsn").await.unwrap();
        let null = serde_json::Value::Null;
        assert_eq!(images.rows, [vec![3.into(), null.clone(), null.clone()], vec![4.into(), null.clone(), null]]);
    }
}
