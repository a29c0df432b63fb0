//! Queries over the traces: a DataFusion session per query, over each table's Parquet files
//! and in-memory tail as one snapshot, read-only, with its memory bounded.

use std::sync::Arc;

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
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::options::TracingOptions;
use crate::store::TableSnapshot;
use crate::tables::{TABLES, schema_of};

/// A query's answer: its columns and rows, values as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    /// The columns' names, in order.
    pub columns: Vec<String>,
    /// The rows, each a value per column.
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Whether rows beyond `query-rows-max` were cut.
    pub truncated: bool,
}

/// One table as the query sees it: its files and its tail, unioned.
fn provider(ctx: &SessionContext, table: usize, snapshot: TableSnapshot) -> Result<Arc<dyn TableProvider>> {
    let schema = schema_of(table);
    let tail: Arc<dyn TableProvider> = Arc::new(MemTable::try_new(Arc::clone(&schema), vec![snapshot.tail])?);
    if snapshot.files.is_empty() {
        return Ok(tail);
    }
    let urls = snapshot
        .files
        .iter()
        .map(|path| ListingTableUrl::parse(path.to_string_lossy()))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema);
    let files: Arc<dyn TableProvider> = Arc::new(ListingTable::try_new(config)?);
    Ok(ctx.read_table(files)?.union(ctx.read_table(tail)?)?.into_view())
}

/// Runs one read-only query over a snapshot of the store.
pub(crate) async fn run(snapshot: [TableSnapshot; 4], sql: &str, options: &TracingOptions) -> Result<QueryResult> {
    let runtime = RuntimeEnvBuilder::new().with_memory_limit(options.query_memory_bytes, 1.0).build_arc()?;
    let mut config = SessionConfig::new().with_target_partitions(options.query_threads).with_information_schema(true);
    // Strings come back as the tables declare them (Utf8), from files and tail alike.
    config.options_mut().execution.parquet.schema_force_view_types = false;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    for (table, snapshot) in snapshot.into_iter().enumerate() {
        ctx.register_table(TABLES[table], provider(&ctx, table, snapshot)?)?;
    }
    let read_only = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let frame = ctx.sql_with_options(sql, read_only).await?;
    let columns = frame.schema().fields().iter().map(|f| f.name().clone()).collect();
    let mut stream = frame.execute_stream().await?;
    let mut rows = Vec::new();
    let mut truncated = false;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let room = options.query_rows_max - rows.len();
        if batch.num_rows() > room {
            truncated = true;
        }
        json_rows(&batch.slice(0, batch.num_rows().min(room)), &mut rows)?;
        if rows.len() >= options.query_rows_max {
            // One more row anywhere means the answer was cut.
            truncated = truncated || stream.next().await.is_some();
            break;
        }
    }
    Ok(QueryResult { columns, rows, truncated })
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
