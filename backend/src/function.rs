//! Function registration: a function is its declaration for the planner (name and named
//! statements), the input field that holds its partition key, and its Rust body.

use std::sync::Arc;

use comb_planner::{Catalog, PartitionKey, PreparedFunction, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::txn::Txn;

/// The error a function's body returns. A backend [`Error`] passes through as itself.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A function's body over JSON.
pub type Body = dyn Fn(&mut Txn<'_>, serde_json::Value) -> Result<serde_json::Value, BoxError> + Send + Sync;

/// A function to register: its statements, its partition key, and its body.
///
/// ```text
/// Function::new("deposit")
///     .statement("add", "UPDATE accounts SET balance = balance + $2 WHERE id = $1")
///     .partition_by("account")
///     .run_typed(|tx, req: Deposit| tx.execute("add", (req.account, req.amount)));
/// ```
#[derive(Clone)]
pub struct Function {
    pub(crate) decl: comb_planner::Function,
    pub(crate) partition_by: Option<String>,
    pub(crate) body: Arc<Body>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function").field("decl", &self.decl).field("partition_by", &self.partition_by).finish_non_exhaustive()
    }
}

impl Function {
    /// Starts a function with no statements, no partition key, and a body that returns
    /// `null`.
    pub fn new(name: impl Into<String>) -> Function {
        Function { decl: comb_planner::Function::new(name), partition_by: None, body: Arc::new(|_: &mut Txn<'_>, _: serde_json::Value| Ok(serde_json::Value::Null)) }
    }

    /// Declares a named statement; the body may run only declared statements.
    pub fn statement(mut self, name: impl Into<String>, sql: impl Into<String>) -> Function {
        self.decl = self.decl.statement(name, sql);
        self
    }

    /// Names the input field that holds the partition key. Without one (or when a
    /// statement is not pinned to one partition) the function runs as a multi-partition
    /// transaction.
    pub fn partition_by(mut self, field: impl Into<String>) -> Function {
        self.partition_by = Some(field.into());
        self
    }

    /// Sets the body over JSON input and output.
    pub fn run<F>(mut self, body: F) -> Function
    where
        F: Fn(&mut Txn<'_>, serde_json::Value) -> Result<serde_json::Value, BoxError> + Send + Sync + 'static,
    {
        self.body = Arc::new(body);
        self
    }

    /// Sets the body over typed input and output (converted from and to JSON).
    pub fn run_typed<I, O, E, F>(mut self, body: F) -> Function
    where
        I: DeserializeOwned,
        O: Serialize,
        E: Into<BoxError>,
        F: Fn(&mut Txn<'_>, I) -> Result<O, E> + Send + Sync + 'static,
    {
        let name = self.decl.name.clone();
        self.body = Arc::new(move |tx: &mut Txn<'_>, input: serde_json::Value| {
            let input: I = serde_json::from_value(input).map_err(|err| Error::BadInput { function: name.clone(), message: err.to_string() })?;
            let output = body(tx, input).map_err(Into::into)?;
            Ok(serde_json::to_value(output)?)
        });
        self
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.decl.name
    }
}

/// A function prepared against a catalog, ready to run.
pub(crate) struct Registered {
    pub(crate) name: String,
    pub(crate) partition_by: Option<String>,
    pub(crate) body: Arc<Body>,
    pub(crate) prepared: PreparedFunction,
    pub(crate) catalog: Arc<Catalog>,
    /// Whether it runs on one partition (chosen from its input), without a barrier.
    pub(crate) single_partition: bool,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered").field("name", &self.name).field("single_partition", &self.single_partition).finish_non_exhaustive()
    }
}

impl Registered {
    /// Prepares a function's statements; every finding at once.
    pub(crate) fn prepare(function: &Function, catalog: &Arc<Catalog>) -> Result<Registered> {
        let prepared = catalog.prepare_function(&function.decl).map_err(Error::Function)?;
        let pinned = prepared.statements.iter().all(|(_, p)| !matches!(p.partition, PartitionKey::MultiPartition));
        Ok(Registered {
            name: function.decl.name.clone(),
            partition_by: function.partition_by.clone(),
            body: Arc::clone(&function.body),
            single_partition: function.partition_by.is_some() && pinned,
            prepared,
            catalog: Arc::clone(catalog),
        })
    }

    /// The partition key in an invocation's input.
    pub(crate) fn partition_key(&self, input: &serde_json::Value) -> Result<Value> {
        let field = self.partition_by.as_deref().unwrap_or_default();
        let bad = |message: String| Error::BadInput { function: self.name.clone(), message };
        match input.get(field) {
            None | Some(serde_json::Value::Null) => Err(bad(format!("the partition key field {field:?} is missing"))),
            Some(serde_json::Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Ok(Value::Int(i)),
                (None, Some(f)) => Ok(Value::Double(f)),
                _ => Err(bad(format!("the partition key {n} is out of range"))),
            },
            Some(serde_json::Value::String(s)) => Ok(Value::Text(s.clone())),
            Some(serde_json::Value::Bool(b)) => Ok(Value::Bool(*b)),
            Some(other) => Err(bad(format!("the partition key field {field:?} must be a number, a string or a boolean, not {other}"))),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Error {
        Error::Internal(format!("JSON conversion failed: {err}"))
    }
}
