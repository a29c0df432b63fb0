//! The function SDK's transaction: a function runs its own prepared statements, by name,
//! with typed parameters, and reads typed rows. It sees its own earlier writes.

use std::time::{Duration, Instant};

use comb_planner::{DataType, PartitionKey, Value};

use crate::error::{Error, Result};
use crate::executor::{Exec, Limits, Scope, Snapshot, WriteSet};
use crate::function::Registered;
use crate::keycodec::partition_of;

/// A transaction in progress, handed to a function's body. Everything it writes commits
/// atomically when the body returns `Ok`, and is discarded when it returns an error or
/// panics.
pub struct Txn<'a> {
    pub(crate) function: &'a Registered,
    pub(crate) snapshot: &'a dyn Snapshot,
    pub(crate) writes: &'a mut WriteSet,
    pub(crate) scope: Scope,
    pub(crate) partitions: u16,
    pub(crate) limits: Limits,
    pub(crate) deadline: Deadline,
    /// The first statement refused for the time limit: the transaction's error, even if the
    /// body catches it and returns.
    pub(crate) timed_out: Option<Error>,
}

/// A transaction's time on its executor: when it started, and how long it may run
/// (`transaction-time-max-ms`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    started: Instant,
    limit: Duration,
}

impl Deadline {
    /// A transaction starting now.
    pub(crate) fn start(limit: Duration) -> Deadline {
        Deadline { started: Instant::now(), limit }
    }

    /// Fails once the transaction has run past its limit; `at` says where (for the error).
    pub(crate) fn check(&self, function: &str, at: impl FnOnce() -> String) -> Result<()> {
        let elapsed = self.started.elapsed();
        if elapsed <= self.limit {
            return Ok(());
        }
        Err(Error::TimeLimit { function: function.to_owned(), elapsed_ms: elapsed.as_millis() as u64, limit_ms: self.limit.as_millis() as u64, at: at() })
    }
}

impl std::fmt::Debug for Txn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Txn").field("function", &self.function.name).field("scope", &self.scope).finish_non_exhaustive()
    }
}

/// Rows returned by a statement.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rows {
    /// Column names.
    pub columns: Vec<String>,
    /// The rows, each with one value per column.
    pub rows: Vec<Vec<Value>>,
    /// Rows returned by a SELECT, or written by INSERT, UPDATE or DELETE.
    pub affected: u64,
}

impl Txn<'_> {
    /// The partition this transaction runs on; `None` for a multi-partition transaction.
    pub fn partition(&self) -> Option<u16> {
        match self.scope {
            Scope::Single(p) => Some(p),
            Scope::All => None,
        }
    }

    /// Runs a statement and returns its rows (SELECT, or RETURNING).
    pub fn query(&mut self, statement: &str, params: impl Params) -> Result<Rows> {
        let function = self.function;
        self.check_deadline(|| format!("at the start of its statement {statement}"))?;
        let prepared = function
            .prepared
            .statement(statement)
            .ok_or_else(|| Error::UnknownStatement { function: function.name.clone(), statement: statement.to_owned() })?;
        let mut values = params.into_values();
        if values.len() != prepared.params.len() {
            return Err(Error::BadParameters {
                statement: statement.to_owned(),
                message: format!("expects {} parameters, got {}", prepared.params.len(), values.len()),
            });
        }
        for (i, (value, ty)) in values.iter_mut().zip(&prepared.params).enumerate() {
            *value = match (as_param(std::mem::replace(value, Value::Null), *ty), *ty) {
                (v, ty) if v.fits(ty) => v,
                (v, ty) => {
                    return Err(Error::BadParameters { statement: statement.to_owned(), message: format!("parameter ${} is {ty}, not {v}", i + 1) });
                }
            };
        }
        if let Scope::Single(own) = self.scope {
            let key = match &prepared.partition {
                PartitionKey::Param(i) => Some(&values[*i]),
                PartitionKey::Constant(v) => Some(v),
                PartitionKey::MultiPartition => None,
            };
            if let Some(key) = key
                && !key.is_null()
            {
                let found = partition_of(key, self.partitions);
                if found != own {
                    return Err(Error::WrongPartition { function: function.name.clone(), statement: statement.to_owned(), expected: own, found });
                }
            }
        }
        let outcome = self.exec(statement).run(&prepared.plan, &values)?;
        Ok(Rows { columns: prepared.columns.iter().map(|c| c.name.clone()).collect(), rows: outcome.rows, affected: outcome.affected })
    }

    /// Deletes the recorded outputs of workflow run `workflow` (its steps' and its end's) on
    /// the partitions this transaction may touch: a step of that run invoked later runs
    /// again instead of returning its first output. Returns how many it deleted. For the
    /// server's expiry of ended runs (`run-retention`): a run still going that loses its
    /// recorded outputs may run a step twice.
    pub fn forget_recorded(&mut self, workflow: &str) -> Result<u64> {
        self.check_deadline(|| "at the start of forgetting recorded outputs".to_owned())?;
        let partitions: Vec<u16> = match self.scope {
            Scope::Single(p) => vec![p],
            Scope::All => (0..self.partitions).collect(),
        };
        let mut exec = self.exec("forget_recorded");
        let mut forgotten = 0;
        for partition in partitions {
            forgotten += exec.forget_recorded(partition, workflow)?;
        }
        Ok(forgotten)
    }

    /// Fails once the transaction has run past `transaction-time-max-ms`, and keeps that
    /// error as the transaction's, even if the body catches it.
    fn check_deadline(&mut self, at: impl FnOnce() -> String) -> Result<()> {
        let checked = self.deadline.check(&self.function.name, at);
        if let Err(err) = &checked {
            self.timed_out.get_or_insert_with(|| err.clone());
        }
        checked
    }

    /// An execution context over this transaction, for `statement` (its name in errors).
    fn exec<'s>(&'s mut self, statement: &'s str) -> Exec<'s> {
        let function = self.function;
        Exec {
            catalog: &function.catalog,
            snapshot: self.snapshot,
            writes: self.writes,
            scope: self.scope,
            partitions: self.partitions,
            limits: self.limits,
            function: &function.name,
            statement,
        }
    }

    /// Runs a statement and returns how many rows it wrote (or returned).
    pub fn execute(&mut self, statement: &str, params: impl Params) -> Result<u64> {
        Ok(self.query(statement, params)?.affected)
    }

    /// Runs a statement and converts every row.
    pub fn query_as<T: FromRow>(&mut self, statement: &str, params: impl Params) -> Result<Vec<T>> {
        let rows = self.query(statement, params)?;
        rows.rows.iter().map(|r| T::from_row(r, statement)).collect()
    }

    /// Runs a statement and converts its first row, if any.
    pub fn query_opt<T: FromRow>(&mut self, statement: &str, params: impl Params) -> Result<Option<T>> {
        let rows = self.query(statement, params)?;
        rows.rows.first().map(|r| T::from_row(r, statement)).transpose()
    }

    /// Runs a statement and converts its first row; no row is an error.
    pub fn query_one<T: FromRow>(&mut self, statement: &str, params: impl Params) -> Result<T> {
        self.query_opt(statement, params)?.ok_or_else(|| Error::NoRow { statement: statement.to_owned() })
    }
}

/// A Rust value that becomes a statement parameter.
pub trait ToValue {
    /// The SQL value.
    fn to_value(self) -> Value;
}

macro_rules! to_value {
    ($($t:ty => $f:expr),* $(,)?) => {
        $(impl ToValue for $t {
            fn to_value(self) -> Value {
                #[allow(clippy::redundant_closure_call)]
                ($f)(self)
            }
        })*
    };
}

to_value! {
    i64 => Value::Int,
    i32 => |v: i32| Value::Int(i64::from(v)),
    u32 => |v: u32| Value::Int(i64::from(v)),
    f64 => Value::Double,
    bool => Value::Bool,
    String => Value::Text,
    &str => |v: &str| Value::Text(v.to_owned()),
    &String => |v: &String| Value::Text(v.clone()),
    Vec<u8> => Value::Bytes,
    &[u8] => |v: &[u8]| Value::Bytes(v.to_vec()),
    Value => |v| v,
    &Value => |v: &Value| v.clone(),
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(self) -> Value {
        self.map_or(Value::Null, ToValue::to_value)
    }
}

/// A statement's parameters: `()`, a tuple of [`ToValue`]s, or a `Vec<Value>`.
pub trait Params {
    /// The values, `$1` first.
    fn into_values(self) -> Vec<Value>;
}

impl Params for Vec<Value> {
    fn into_values(self) -> Vec<Value> {
        self
    }
}

impl Params for &[Value] {
    fn into_values(self) -> Vec<Value> {
        self.to_vec()
    }
}

macro_rules! params_tuple {
    ($($name:ident),*) => {
        impl<$($name: ToValue),*> Params for ($($name,)*) {
            #[allow(non_snake_case)]
            fn into_values(self) -> Vec<Value> {
                let ($($name,)*) = self;
                vec![$($name.to_value()),*]
            }
        }
    };
}

params_tuple!();
params_tuple!(A);
params_tuple!(A, B);
params_tuple!(A, B, C);
params_tuple!(A, B, C, D);
params_tuple!(A, B, C, D, E);
params_tuple!(A, B, C, D, E, F);
params_tuple!(A, B, C, D, E, F, G);
params_tuple!(A, B, C, D, E, F, G, H);
params_tuple!(A, B, C, D, E, F, G, H, I);
params_tuple!(A, B, C, D, E, F, G, H, I, J);
params_tuple!(A, B, C, D, E, F, G, H, I, J, K);
params_tuple!(A, B, C, D, E, F, G, H, I, J, K, L);

/// A Rust type that one column's value converts to.
pub trait FromValue: Sized {
    /// The type's name, for errors.
    const NAME: &'static str;
    /// The converted value; `None` if it has another type.
    fn from_value(value: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    const NAME: &'static str = "i64";
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Int(v) | Value::Timestamp(v) => Some(*v),
            _ => None,
        }
    }
}

impl FromValue for f64 {
    const NAME: &'static str = "f64";
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Double(v) => Some(*v),
            Value::Int(v) => Some(*v as f64),
            _ => None,
        }
    }
}

impl FromValue for bool {
    const NAME: &'static str = "bool";
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(v) => Some(*v),
            _ => None,
        }
    }
}

impl FromValue for String {
    const NAME: &'static str = "String";
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Text(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    const NAME: &'static str = "Vec<u8>";
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Bytes(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl FromValue for Value {
    const NAME: &'static str = "Value";
    fn from_value(value: &Value) -> Option<Self> {
        Some(value.clone())
    }
}

impl<T: FromValue> FromValue for Option<T> {
    const NAME: &'static str = "Option";
    fn from_value(value: &Value) -> Option<Self> {
        if value.is_null() { Some(None) } else { T::from_value(value).map(Some) }
    }
}

fn column<T: FromValue>(row: &[Value], i: usize, statement: &str) -> Result<T> {
    let value = row.get(i).unwrap_or(&Value::Null);
    T::from_value(value).ok_or_else(|| Error::RowType { statement: statement.to_owned(), column: i, expected: T::NAME, found: value.to_string() })
}

/// A Rust type that one result row converts to: a [`FromValue`] (the first column), a
/// tuple of them (the first columns), or `Vec<Value>` (the whole row).
pub trait FromRow: Sized {
    /// The converted row.
    fn from_row(row: &[Value], statement: &str) -> Result<Self>;
}

macro_rules! from_row_scalar {
    ($($t:ty),*) => {
        $(impl FromRow for $t {
            fn from_row(row: &[Value], statement: &str) -> Result<Self> {
                column(row, 0, statement)
            }
        })*
    };
}

from_row_scalar!(i64, f64, bool, String, Vec<u8>, Value);

impl<T: FromValue> FromRow for Option<T> {
    fn from_row(row: &[Value], statement: &str) -> Result<Self> {
        column(row, 0, statement)
    }
}

impl FromRow for Vec<Value> {
    fn from_row(row: &[Value], _statement: &str) -> Result<Self> {
        Ok(row.to_vec())
    }
}

macro_rules! from_row_tuple {
    ($($name:ident $i:tt),*) => {
        impl<$($name: FromValue),*> FromRow for ($($name,)*) {
            fn from_row(row: &[Value], statement: &str) -> Result<Self> {
                Ok(($(column::<$name>(row, $i, statement)?,)*))
            }
        }
    };
}

from_row_tuple!(A 0, B 1);
from_row_tuple!(A 0, B 1, C 2);
from_row_tuple!(A 0, B 1, C 2, D 3);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
from_row_tuple!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

/// `value` as a parameter of type `ty` takes it: an integer given for a DOUBLE or a
/// TIMESTAMP is converted; anything else is left as it is.
pub(crate) fn as_param(value: Value, ty: DataType) -> Value {
    match (value, ty) {
        (Value::Int(v), DataType::Double) => Value::Double(v as f64),
        (Value::Int(v), DataType::Timestamp) => Value::Timestamp(v),
        (v, _) => v,
    }
}
