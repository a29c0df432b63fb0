//! SQL types and values: what the store encodes into keys and rows.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A column or expression type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DataType {
    /// 64-bit signed integer (SQL BIGINT, INT, INTEGER, SMALLINT).
    BigInt,
    /// 64-bit IEEE float (SQL DOUBLE, DOUBLE PRECISION, FLOAT, REAL).
    Double,
    /// UTF-8 text (SQL TEXT, VARCHAR).
    Text,
    /// SQL BOOLEAN.
    Boolean,
    /// Bytes (SQL BYTEA).
    Bytea,
    /// Microseconds since the Unix epoch, UTC (SQL TIMESTAMP).
    Timestamp,
}

impl DataType {
    /// Tells whether arithmetic applies to the type.
    pub fn is_numeric(self) -> bool {
        matches!(self, DataType::BigInt | DataType::Double)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataType::BigInt => "BIGINT",
            DataType::Double => "DOUBLE",
            DataType::Text => "TEXT",
            DataType::Boolean => "BOOLEAN",
            DataType::Bytea => "BYTEA",
            DataType::Timestamp => "TIMESTAMP",
        })
    }
}

/// A SQL value. `Null` belongs to every type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A BIGINT.
    Int(i64),
    /// A DOUBLE.
    Double(f64),
    /// A TEXT.
    Text(String),
    /// A BOOLEAN.
    Bool(bool),
    /// A BYTEA.
    Bytes(Vec<u8>),
    /// A TIMESTAMP, microseconds since the epoch.
    Timestamp(i64),
}

impl Value {
    /// Returns the value's type, or `None` for NULL.
    pub fn data_type(&self) -> Option<DataType> {
        Some(match self {
            Value::Null => return None,
            Value::Int(_) => DataType::BigInt,
            Value::Double(_) => DataType::Double,
            Value::Text(_) => DataType::Text,
            Value::Bool(_) => DataType::Boolean,
            Value::Bytes(_) => DataType::Bytea,
            Value::Timestamp(_) => DataType::Timestamp,
        })
    }

    /// Tells whether the value is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Tells whether the value may be stored in a column of type `ty` (NULL always may).
    pub fn fits(&self, ty: DataType) -> bool {
        self.data_type().is_none_or(|own| own == ty)
    }

    /// Compares two non-NULL values of the same type, as SQL does; `None` when either is
    /// NULL or the types differ. Doubles order NaN above every other value, like PostgreSQL.
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) | (Value::Timestamp(a), Value::Timestamp(b)) => Some(a.cmp(b)),
            (Value::Double(a), Value::Double(b)) => Some(a.total_cmp(b)),
            (Value::Int(a), Value::Double(b)) => Some((*a as f64).total_cmp(b)),
            (Value::Double(a), Value::Int(b)) => Some(a.total_cmp(&(*b as f64))),
            (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Bytes(a), Value::Bytes(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// Orders values for ORDER BY: NULLs sort after every other value (as in PostgreSQL's
    /// default for ASC). Values of different types order by type, which a type-checked
    /// plan never compares.
    pub fn sort_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Greater,
            (_, Value::Null) => Ordering::Less,
            _ => self.sql_cmp(other).unwrap_or_else(|| self.data_type().cmp(&other.data_type())),
        }
    }
}

impl fmt::Display for Value {
    /// Prints the value as a SQL literal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v:?}"),
            Value::Text(v) => write!(f, "'{}'", v.replace('\'', "''")),
            Value::Bool(v) => f.write_str(if *v { "TRUE" } else { "FALSE" }),
            Value::Bytes(v) => {
                f.write_str("'\\x")?;
                for byte in v {
                    write!(f, "{byte:02x}")?;
                }
                f.write_str("'")
            }
            Value::Timestamp(v) => write!(f, "TIMESTAMP {v}"),
        }
    }
}
