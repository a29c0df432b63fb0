//! Row images as JSON: the feed keeps `change_data`'s images as the log holds them (the
//! backend's row encoding) and queries turn them into JSON objects, with the column names of
//! the catalog, only for the rows and columns a query reads.
//!
//! Writing the JSON at ingest was about a sixth of the feed's work per record (240 of
//! 1,440 us per 1,024 counter records in `--bench feed`), most of it for images that no query
//! would ever read; a query pays it for the rows it reads. The
//! catalog a query uses is at least as new as any record it reads, and names a table's id
//! the same way for all time (a dropped table's too), so the JSON is the same either way.

use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::Arc;

use comb_backend::{ValueRef, decode_row_ref, value_to_json};
use comb_planner::{Catalog, Table, TableId};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{ScalarValue, exec_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};

/// JSON objects written one after another into one buffer (one to three of these for every
/// row changed), each known by its place in it.
#[derive(Debug, Default)]
pub(crate) struct Json(Vec<u8>);

impl Json {
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Writes the columns and their values as a JSON object, in the order given.
    pub(crate) fn object<'a>(&mut self, pairs: impl Iterator<Item = (&'a str, ValueRef<'a>)>) -> Range<usize> {
        let start = self.0.len();
        let out = &mut self.0;
        out.push(b'{');
        for (i, (name, value)) in pairs.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json(out, name);
            out.push(b':');
            match value {
                ValueRef::Null => out.extend_from_slice(b"null"),
                ValueRef::Int(v) => write_json(out, &v),
                ValueRef::Bool(v) => out.extend_from_slice(if v { b"true" } else { b"false" }),
                ValueRef::Text(v) => write_json(out, v),
                other => write_json(out, &value_to_json(&other.to_value())),
            }
        }
        out.push(b'}');
        start..self.0.len()
    }

    /// The primary key of `table` in `values` (a row of it), as a JSON object.
    pub(crate) fn key<'a>(&mut self, table: &'a Table, values: &[ValueRef<'a>]) -> Range<usize> {
        self.object(table.primary_key.iter().filter_map(|&c| Some((table.columns.get(c)?.name.as_str(), *values.get(c)?))))
    }

    /// A row of `table`, every column, as a JSON object.
    pub(crate) fn row<'a>(&mut self, table: &'a Table, values: &[ValueRef<'a>]) -> Range<usize> {
        self.object(table.columns.iter().map(|c| c.name.as_str()).zip(values.iter().copied()))
    }

    /// An object written by [`Json::object`].
    pub(crate) fn text(&self, object: Range<usize>) -> &str {
        std::str::from_utf8(&self.0[object]).expect("serde_json writes UTF-8")
    }
}

fn write_json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("a number, a string or a JSON value always serializes");
}

/// What of a row image [`ImageJson`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Part {
    /// Every column.
    Row,
    /// The primary key's columns.
    Key,
}

/// The SQL function `(table_id BIGINT, image BYTEA) -> TEXT` that turns a row image of the
/// table with that id into a JSON object: the whole row, or its primary key. NULL for a NULL
/// image, and for one it cannot read (its table unknown, or its bytes not a row), which it
/// reports in the server's log: one bad row must not make the table unqueryable, as the feed
/// never let one stop it.
#[derive(Debug)]
pub(crate) struct ImageJson {
    catalog: Arc<Catalog>,
    part: Part,
    signature: Signature,
}

impl ImageJson {
    pub(crate) fn new(catalog: Arc<Catalog>, part: Part) -> ImageJson {
        ImageJson { catalog, part, signature: Signature::exact(vec![DataType::Int64, DataType::Binary], Volatility::Immutable) }
    }

    fn json(&self, tables: &ArrayRef, images: &ArrayRef) -> datafusion::error::Result<ArrayRef> {
        let (Some(tables), Some(images)) = (tables.as_primitive_opt::<Int64Type>(), images.as_binary_opt::<i32>()) else {
            return exec_err!("{} takes a table id (BIGINT) and a row image (BYTEA), not {} and {}", self.name(), tables.data_type(), images.data_type());
        };
        let mut out = StringBuilder::with_capacity(images.len(), images.value_data().len() * 2);
        let mut json = Json::default();
        for (table, image) in tables.iter().zip(images.iter()) {
            let (Some(table), Some(image)) = (table, image) else {
                out.append_null();
                continue;
            };
            let Some(table) = u32::try_from(table).ok().and_then(|id| self.catalog.table_by_id_or_dropped(TableId(id))) else {
                tracing::warn!(table, "a row image of a table the catalog does not know; read as NULL");
                out.append_null();
                continue;
            };
            let values = match decode_row_ref(image) {
                Ok(values) => values,
                Err(err) => {
                    tracing::warn!(table = %table.name, error = %err, "a row image that does not decode; read as NULL");
                    out.append_null();
                    continue;
                }
            };
            json.clear();
            let object = match self.part {
                Part::Row => json.row(table, &values),
                Part::Key => json.key(table, &values),
            };
            out.append_value(json.text(object));
        }
        Ok(Arc::new(out.finish()))
    }
}

impl PartialEq for ImageJson {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.catalog, &other.catalog) && self.part == other.part
    }
}

impl Eq for ImageJson {}

impl Hash for ImageJson {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.catalog).hash(state);
        self.part.hash(state);
    }
}

impl ScalarUDFImpl for ImageJson {
    fn name(&self) -> &str {
        match self.part {
            Part::Row => "comb_row_json",
            Part::Key => "comb_key_json",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let rows = args.number_rows;
        let [tables, images] = args.args.as_slice() else {
            return exec_err!("{} takes a table id and a row image", self.name());
        };
        if let (ColumnarValue::Scalar(table), ColumnarValue::Scalar(image)) = (tables, images) {
            let json = self.json(&table.to_array()?, &image.to_array()?)?;
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&json, 0)?));
        }
        Ok(ColumnarValue::Array(self.json(&tables.to_array(rows)?, &images.to_array(rows)?)?))
    }
}
