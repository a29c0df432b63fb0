//! Function registration: a function is its declaration for the planner (name and named
//! statements), the input field that holds its partition key, and its Rust body.

use std::sync::Arc;

use comb_planner::{Catalog, DataType, PartitionKey, PreparedFunction, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::commit::RunRecord;
use crate::error::{Error, Result};
use crate::txn::{Txn, as_param};

/// The error a function's body returns. A backend [`Error`] passes through as itself.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A function's body over JSON.
pub type Body = dyn Fn(&mut Txn<'_>, serde_json::Value) -> Result<serde_json::Value, BoxError> + Send + Sync;

/// A function's body that writes a workflow run's end (see [`Function::writes_run_ends`]):
/// given the run's record and the partition its transaction ran on.
pub type RunEndBody = dyn Fn(&mut Txn<'_>, &RunRecord, u16) -> Result<(), BoxError> + Send + Sync;

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
    /// For a SQL-only function: how many input fields each statement names, checked
    /// against its parameters at registration.
    pub(crate) sql_params: Option<Vec<usize>>,
    /// Whether its invocations are traced (see [`Function::untraced`]).
    pub(crate) traced: bool,
    /// Its body that writes runs' ends, if it has one.
    pub(crate) run_end: Option<Arc<RunEndBody>>,
}

/// A function made of SQL alone, registered at run time: its statements run in order in
/// one transaction, each parameter taken from a named field of the input, and it returns
/// the rows of its last statement as an array of objects (column name to value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SqlFunction {
    /// The function's name.
    pub name: String,
    /// The statements, run in order.
    pub statements: Vec<SqlStatement>,
    /// The input field holding the partition key; `None`: a multi-partition function.
    #[serde(default)]
    pub partition_by: Option<String>,
}

/// One statement of a [`SqlFunction`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SqlStatement {
    /// The statement's name, unique in the function.
    pub name: String,
    /// The SQL, with parameters `$1`, `$2`, ...
    pub sql: String,
    /// The input field of each parameter: `params[0]` gives `$1`.
    #[serde(default)]
    pub params: Vec<String>,
}

/// A JSON input value as a statement parameter; the statement converts it to the
/// parameter's type or names the mismatch.
fn json_param(value: &serde_json::Value) -> Value {
    match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => n.as_i64().map_or_else(|| Value::Double(n.as_f64().unwrap_or(f64::NAN)), Value::Int),
        serde_json::Value::String(s) => Value::Text(s.clone()),
        other => Value::Text(other.to_string()),
    }
}

/// A SQL value as JSON: numbers, strings, booleans and null as themselves, bytes as an
/// array of numbers, timestamps in their text form.
pub fn value_to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Int(i) => serde_json::Value::from(*i),
        Value::Double(f) => serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::Text(s) => serde_json::Value::String(s.clone()),
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Bytes(b) => serde_json::Value::from(b.clone()),
        Value::Timestamp(t) => serde_json::Value::String(comb_planner::format_timestamp(*t)),
    }
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
        Function { decl: comb_planner::Function::new(name), partition_by: None, body: Arc::new(|_: &mut Txn<'_>, _: serde_json::Value| Ok(serde_json::Value::Null)), sql_params: None, traced: true, run_end: None }
    }

    /// A SQL-only function from its definition.
    pub fn sql(definition: &SqlFunction) -> Function {
        let mut function = Function::new(definition.name.clone());
        for statement in &definition.statements {
            function = function.statement(statement.name.clone(), statement.sql.clone());
        }
        if let Some(field) = &definition.partition_by {
            function = function.partition_by(field.clone());
        }
        function.sql_params = Some(definition.statements.iter().map(|s| s.params.len()).collect());
        let name = definition.name.clone();
        let statements: Vec<(String, Vec<String>)> = definition.statements.iter().map(|s| (s.name.clone(), s.params.clone())).collect();
        function.body = Arc::new(move |tx: &mut Txn<'_>, input: serde_json::Value| {
            let mut last = crate::txn::Rows::default();
            for (statement, fields) in &statements {
                let mut params = Vec::with_capacity(fields.len());
                for field in fields {
                    let value = input.get(field).ok_or_else(|| Error::BadInput { function: name.clone(), message: format!("statement {statement} needs input field {field:?}, which is missing") })?;
                    params.push(json_param(value));
                }
                last = tx.query(statement, params)?;
            }
            let rows = last
                .rows
                .iter()
                .map(|row| serde_json::Value::Object(last.columns.iter().cloned().zip(row.iter().map(value_to_json)).collect()))
                .collect();
            Ok(serde_json::Value::Array(rows))
        });
        function
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

    /// Leaves this function's invocations out of the traces: for a server's own bookkeeping,
    /// which would drown the application's invocations. Neither its commits (which carry its
    /// writes, and the invocations of the traced functions in the same transaction) nor the
    /// trace records of what commits nothing (reads, replays, failures) carry them.
    pub fn untraced(mut self) -> Function {
        self.traced = false;
        self
    }

    /// Gives the function a second body, over a workflow run's record instead of JSON: a
    /// transaction that is a whole run ([`crate::Transaction::end`]) names it to write the
    /// run's end after its members, from the record its end function built, with no JSON
    /// between them. The body runs only this function's statements, as any body does.
    pub fn writes_run_ends<F>(mut self, body: F) -> Function
    where
        F: Fn(&mut Txn<'_>, &RunRecord, u16) -> Result<(), BoxError> + Send + Sync + 'static,
    {
        self.run_end = Some(Arc::new(body));
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
    /// The type its statements give the partition key (the first that takes it as a
    /// parameter): the key is routed as that type, as the statements hash it.
    pub(crate) partition_type: Option<DataType>,
    /// Whether its invocations are traced (see [`Function::untraced`]).
    pub(crate) traced: bool,
    /// Its body that writes runs' ends, if it has one.
    pub(crate) run_end: Option<Arc<RunEndBody>>,
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
        if let Some(counts) = &function.sql_params {
            let mismatched: Vec<String> = prepared
                .statements
                .iter()
                .zip(counts)
                .filter(|((_, p), fields)| p.params.len() != **fields)
                .map(|((name, p), fields)| format!("statement {name} has {} parameters but names {fields} input fields", p.params.len()))
                .collect();
            if !mismatched.is_empty() {
                return Err(Error::InvalidFunction { function: function.decl.name.clone(), message: mismatched.join("; ") });
            }
        }
        if let Some(field) = &function.partition_by
            && field.is_empty()
        {
            return Err(Error::InvalidFunction { function: function.decl.name.clone(), message: "the partition key field is empty".to_owned() });
        }
        let pinned = prepared.statements.iter().all(|(_, p)| !matches!(p.partition, PartitionKey::MultiPartition));
        let key_types: Vec<(&str, DataType)> = prepared
            .statements
            .iter()
            .filter_map(|(name, p)| match p.partition {
                PartitionKey::Param(i) => p.params.get(i).map(|ty| (name.as_str(), *ty)),
                PartitionKey::Constant(_) | PartitionKey::MultiPartition => None,
            })
            .collect();
        let partition_type = key_types.first().map(|(_, ty)| *ty);
        // The key hashes by its type: statements that take it as different types would
        // each find their rows on another partition.
        if function.partition_by.is_some()
            && let Some((name, ty)) = key_types.iter().find(|(_, ty)| Some(*ty) != partition_type)
        {
            let (first, first_ty) = key_types[0];
            return Err(Error::InvalidFunction {
                function: function.decl.name.clone(),
                message: format!("its statements take the partition key as different types ({first_ty} in {first}, {ty} in {name}), which hash to different partitions"),
            });
        }
        Ok(Registered {
            name: function.decl.name.clone(),
            partition_by: function.partition_by.clone(),
            body: Arc::clone(&function.body),
            single_partition: function.partition_by.is_some() && pinned,
            partition_type,
            traced: function.traced,
            run_end: function.run_end.clone(),
            prepared,
            catalog: Arc::clone(catalog),
        })
    }

    /// The partition key in an invocation's input, as the type its statements take it: a
    /// JSON integer for a TIMESTAMP or DOUBLE key is converted as a statement's parameter
    /// is, so that the call goes to the partition its statements' rows hash to.
    pub(crate) fn partition_key(&self, input: &serde_json::Value) -> Result<Value> {
        let key = self.input_partition_key(input)?;
        Ok(match self.partition_type {
            Some(ty) => as_param(key, ty),
            None => key,
        })
    }

    fn input_partition_key(&self, input: &serde_json::Value) -> Result<Value> {
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
