//! Errors of the backend: each says what happened and, where there is something to do,
//! what to do.

use comb_planner::{DataType, EvalError, FunctionErrors, PlanErrors};

/// What went wrong in the backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Evaluating an expression failed: integer overflow, division by zero, a bad cast.
    #[error("statement {statement}: {source}")]
    Eval {
        /// The statement's name.
        statement: String,
        /// What failed.
        source: EvalError,
    },

    /// A row would duplicate a primary key or a unique index entry.
    #[error("duplicate key value violates unique constraint {constraint} of table {table}: key {key} already exists")]
    UniqueViolation {
        /// The table.
        table: String,
        /// `primary key` or the index's name.
        constraint: String,
        /// The key's values, printed as SQL literals.
        key: String,
    },

    /// `INSERT ... ON CONFLICT DO UPDATE` reached a row it had inserted or updated already.
    #[error("ON CONFLICT DO UPDATE on table {table} would change the row of key {key} a second time in one statement; make the rows of one INSERT differ in their primary key")]
    RowAffectedTwice {
        /// The table.
        table: String,
        /// The key's values, printed as SQL literals.
        key: String,
    },

    /// A NULL for a column declared NOT NULL.
    #[error("null value in column {column} of table {table} violates the NOT NULL constraint")]
    NotNull {
        /// The table.
        table: String,
        /// The column.
        column: String,
    },

    /// A value of the wrong type for a column.
    #[error("column {column} of table {table} is {expected}, but the value {value} is not")]
    ColumnType {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The column's type.
        expected: DataType,
        /// The value, printed.
        value: String,
    },

    /// A statement's parameters did not match its declaration.
    #[error("statement {statement}: {message}")]
    BadParameters {
        /// The statement's name.
        statement: String,
        /// What is wrong.
        message: String,
    },

    /// A function's input was not what it needs.
    #[error("function {function}: invalid input: {message}")]
    BadInput {
        /// The function.
        function: String,
        /// What is wrong.
        message: String,
    },

    /// A result row could not be converted to the requested Rust type.
    #[error("statement {statement}, column {column}: cannot read {found} as {expected}")]
    RowType {
        /// The statement's name.
        statement: String,
        /// The 0-based column.
        column: usize,
        /// The Rust type asked for.
        expected: &'static str,
        /// The value found, printed.
        found: String,
    },

    /// `query_one` found no row.
    #[error("statement {statement} returned no row, but one was expected")]
    NoRow {
        /// The statement's name.
        statement: String,
    },

    /// A single-partition function ran a statement whose rows live in another partition.
    #[error("function {function}, statement {statement}: it touches partition {found}, but the function runs on partition {expected} (its partition key); register it without a partition key to run it as a multi-partition transaction")]
    WrongPartition {
        /// The function.
        function: String,
        /// The statement.
        statement: String,
        /// The function's partition.
        expected: u16,
        /// The partition the statement needed.
        found: u16,
    },

    /// No function of this name is registered.
    #[error("no function named {name} is registered")]
    UnknownFunction {
        /// The name.
        name: String,
    },

    /// A function ran a statement it did not declare.
    #[error("function {function} has no statement named {statement}; declare it at registration")]
    UnknownStatement {
        /// The function.
        function: String,
        /// The statement's name.
        statement: String,
    },

    /// A function of this name exists already.
    #[error("a function named {name} is already registered")]
    DuplicateFunction {
        /// The name.
        name: String,
    },

    /// DDL that the planner refused.
    /// A function's definition is inconsistent (beyond what the planner checks).
    #[error("function {function} is invalid: {message}")]
    InvalidFunction {
        /// The function.
        function: String,
        /// What is wrong.
        message: String,
    },

    #[error("DDL refused: {0}")]
    Ddl(PlanErrors),

    /// `CREATE INDEX` on a table that existed before the script.
    #[error("CREATE INDEX {index} ON {table}: the table exists already, and an index is built only with its table (it would miss the rows written before it); create the table and its indexes in one script, or copy the rows into a new table created with the index")]
    IndexOnExistingTable {
        /// The table.
        table: String,
        /// The index.
        index: String,
    },

    /// A unique index without its table's partition column.
    #[error("unique index {index} on table {table} must include the partition column {column}: uniqueness is checked within a partition, so rows of different partitions could share its values")]
    UniqueWithoutPartitionColumn {
        /// The table.
        table: String,
        /// The index.
        index: String,
        /// The partition column.
        column: String,
    },

    /// A function whose statements the planner refused.
    #[error("{0}")]
    Function(FunctionErrors),

    /// The function's body returned an error: the transaction rolled back.
    #[error("function {function} failed and was rolled back: {message}")]
    Aborted {
        /// The function.
        function: String,
        /// The body's error.
        message: String,
    },

    /// The function's body panicked: the transaction rolled back.
    #[error("function {function} panicked and was rolled back: {message}")]
    Panicked {
        /// The function.
        function: String,
        /// The panic's message.
        message: String,
    },

    /// The transaction ran past `transaction-time-max-ms`: rolled back.
    #[error("function {function}: its transaction had run {elapsed_ms} ms, past the limit of {limit_ms} ms (transaction-time-max-ms), {at}, and was rolled back; split the work into shorter transactions")]
    TimeLimit {
        /// The function running when the limit was found passed.
        function: String,
        /// How long the transaction had run, in milliseconds.
        elapsed_ms: u64,
        /// The bound.
        limit_ms: u64,
        /// Where it was found passed: at a statement's start, or when the body returned.
        at: String,
    },

    /// Backpressure: too many invocations wait for a partition. Retry later.
    #[error("partition {partition} has {limit} invocations waiting (queue-invocations-max); retry later")]
    Overloaded {
        /// The partition.
        partition: u16,
        /// The bound.
        limit: usize,
    },

    /// A named bound was exceeded.
    #[error("{what} of {size} exceeds the limit of {limit} ({option})")]
    LimitExceeded {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The bound.
        limit: usize,
        /// The option that sets the bound.
        option: &'static str,
    },

    /// The shared log failed.
    #[error("the shared log failed: {0}")]
    Log(#[from] comb_log::Error),

    /// A partition stopped after a failed append: writes it had made visible may not be
    /// durable, so it serves nothing more until the engine is reopened.
    #[error("partition {partition} stopped after a failed commit ({cause}); reopen the engine to recover")]
    PartitionFailed {
        /// The partition.
        partition: u16,
        /// The first failure.
        cause: String,
    },

    /// The state store was created with another number of partitions.
    #[error("the state store has {stored} partitions, but {requested} were asked for; open it with {stored}")]
    PartitionCount {
        /// The stored count.
        stored: u16,
        /// The count asked for.
        requested: u16,
    },

    /// An option is out of range.
    #[error("invalid backend option {option}: {reason}")]
    InvalidOptions {
        /// The option.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// The storage engine failed.
    #[error("state storage failed during {operation}: {message}")]
    Storage {
        /// What was being done.
        operation: &'static str,
        /// The storage engine's message.
        message: String,
    },

    /// Stored bytes failed to decode.
    #[error("the state store is corrupted at {location}: {detail}; stop the server and restore its data directory from a backup")]
    Corrupt {
        /// Where.
        location: String,
        /// What.
        detail: String,
    },

    /// The engine is closed.
    #[error("the backend is closed")]
    Closed,

    /// A broken invariant: a bug.
    #[error("internal error in the backend (a bug): {0}")]
    Internal(String),
}

impl Error {
    /// Whether the same call may succeed if retried later without any other change.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Overloaded { .. } => true,
            Error::Log(err) => err.is_retryable(),
            _ => false,
        }
    }

    pub(crate) fn eval(statement: &str, source: EvalError) -> Error {
        Error::Eval { statement: statement.to_owned(), source }
    }
}

/// The result type of the backend.
pub type Result<T, E = Error> = std::result::Result<T, E>;
