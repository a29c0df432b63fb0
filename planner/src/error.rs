//! Errors of the planner: SQL that cannot be accepted, and broken invariants.

use std::fmt;

use sqlparser::tokenizer::Span;

use crate::value::DataType;

/// A place in SQL text: line and column, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

impl Position {
    /// Returns the start of `span`, or `None` when the parser recorded no position.
    pub fn of(span: Span) -> Option<Position> {
        (span.start.line > 0).then_some(Position {
            line: span.start.line,
            column: span.start.column,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One finding about SQL text (or an internal bug). Several are reported together in
/// [`PlanErrors`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The SQL text does not parse.
    #[error("syntax error: {message}")]
    Syntax {
        /// The parser's message, which carries the line and column.
        message: String,
    },
    /// The SQL parses but uses a construct that Comb does not support.
    #[error("{construct} is not supported (at {at}){hint}")]
    Unsupported {
        /// The construct, in words a user recognises ("a subquery", "LEFT JOIN").
        construct: String,
        /// Where it starts.
        at: Position,
        /// What to write instead, starting with "; ", or empty.
        hint: String,
    },
    /// A name that must be a table is not one.
    #[error("unknown table {table} (at {at})")]
    UnknownTable {
        /// The name as written.
        table: String,
        /// Where it is written.
        at: Position,
    },
    /// A name that must be a column is not one.
    #[error("unknown column {column} in {table} (at {at})")]
    UnknownColumn {
        /// The table (or tables) searched.
        table: String,
        /// The name as written.
        column: String,
        /// Where it is written.
        at: Position,
    },
    /// An unqualified column name that more than one table of the query has.
    #[error("column {column} is ambiguous: it is in {tables} (at {at})")]
    AmbiguousColumn {
        /// The name as written.
        column: String,
        /// The tables that have it.
        tables: String,
        /// Where it is written.
        at: Position,
    },
    /// An index name that does not exist.
    #[error("unknown index {index} (at {at})")]
    UnknownIndex {
        /// The name as written.
        index: String,
        /// Where it is written.
        at: Position,
    },
    /// A column type that Comb does not have.
    #[error(
        "table {table}, column {column}: unknown type {type_name} (at {at}); use BIGINT, INT, DOUBLE, TEXT, BOOLEAN, BYTEA or TIMESTAMP"
    )]
    UnknownType {
        /// The table being created.
        table: String,
        /// The column.
        column: String,
        /// The type as written.
        type_name: String,
        /// Where the column is defined.
        at: Position,
    },
    /// A table or index name that is taken.
    #[error("{kind} {name} already exists (at {at})")]
    AlreadyExists {
        /// "table" or "index".
        kind: &'static str,
        /// The name.
        name: String,
        /// Where it is written.
        at: Position,
    },
    /// A column defined twice in one table, or listed twice in a key, index or INSERT.
    #[error("table {table}: column {column} appears twice in {place} (at {at})")]
    DuplicateColumn {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The column list it appears twice in.
        place: &'static str,
        /// Where the second one is written.
        at: Position,
    },
    /// CREATE TABLE without a primary key.
    #[error(
        "table {table} has no PRIMARY KEY (at {at}); every table needs one, it is how rows are stored"
    )]
    MissingPrimaryKey {
        /// The table.
        table: String,
        /// Where the statement starts.
        at: Position,
    },
    /// More than one primary key.
    #[error("table {table} declares more than one PRIMARY KEY (at {at})")]
    MultiplePrimaryKeys {
        /// The table.
        table: String,
        /// Where the second key is declared.
        at: Position,
    },
    /// The partition column is not a primary-key column.
    #[error(
        "table {table}: partition column {column} is not part of the primary key (at {at}); rows of one key must live in one partition"
    )]
    PartitionColumnNotInKey {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Where it is named.
        at: Position,
    },
    /// A value of the wrong type.
    #[error("type mismatch in {context}: expected {expected}, found {found} (at {at})")]
    TypeMismatch {
        /// What was being checked ("WHERE", "argument of SUM", "column stock").
        context: String,
        /// The expected type or class of types.
        expected: String,
        /// The type found.
        found: DataType,
        /// Where the offending expression starts.
        at: Position,
    },
    /// A parameter whose type cannot be inferred from its use.
    #[error(
        "cannot infer the type of parameter ${number} (at {at}); compare it with a column or CAST it"
    )]
    UntypedParameter {
        /// 1-based number.
        number: usize,
        /// Where it is first used.
        at: Position,
    },
    /// A parameter used with two different types.
    #[error("parameter ${number} is used as {first} and as {second} (at {at})")]
    ConflictingParameterType {
        /// 1-based number.
        number: usize,
        /// Type from its first use.
        first: DataType,
        /// Type from the conflicting use.
        second: DataType,
        /// Where the conflicting use is.
        at: Position,
    },
    /// Parameters must be numbered from $1 without gaps.
    #[error(
        "parameter ${number} is never used, but a higher-numbered one is; number parameters $1, $2, ... without gaps"
    )]
    MissingParameter {
        /// 1-based number.
        number: usize,
    },
    /// Anything else the user wrote that cannot be accepted.
    #[error("{message} (at {at})")]
    Invalid {
        /// What is wrong and what to do.
        message: String,
        /// Where.
        at: Position,
    },
    /// A named limit was exceeded.
    #[error("{what} exceeds the limit of {limit}")]
    LimitExceeded {
        /// What was too large.
        what: String,
        /// The limit.
        limit: usize,
    },
    /// A broken invariant of the planner.
    #[error("internal planner error (this is a bug): {0}")]
    Internal(String),
}

/// Every finding about one statement (or one DDL script, or one function).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct PlanErrors {
    /// The statement's name, where it has one (a function's statements do).
    pub statement: Option<String>,
    /// The findings, in the order they were found; never empty.
    pub errors: Vec<PlanError>,
}

impl PlanErrors {
    /// Wraps findings about an unnamed statement.
    pub fn new(errors: Vec<PlanError>) -> PlanErrors {
        debug_assert!(!errors.is_empty());
        PlanErrors {
            statement: None,
            errors,
        }
    }

    /// Names the statement the findings are about.
    pub fn in_statement(mut self, name: &str) -> PlanErrors {
        self.statement = Some(name.to_owned());
        self
    }
}

impl From<PlanError> for PlanErrors {
    fn from(error: PlanError) -> PlanErrors {
        PlanErrors::new(vec![error])
    }
}

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(name) = &self.statement {
            write!(f, "statement {name}: ")?;
        }
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// A failure while evaluating a bound expression.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// Integer arithmetic left the 64-bit range.
    #[error("integer out of range in {op}")]
    Overflow {
        /// The operator.
        op: &'static str,
    },
    /// Division or modulo by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// A value that cannot be converted by CAST.
    #[error("cannot cast {value} to {to}")]
    InvalidCast {
        /// The value, printed.
        value: String,
        /// The target type.
        to: DataType,
    },
    /// A parameter was missing or had the wrong type at execution.
    #[error("parameter ${number}: {message}")]
    BadParameter {
        /// 1-based number.
        number: usize,
        /// What is wrong.
        message: String,
    },
    /// A value did not have the type the plan promised: a bug in the planner or the caller.
    #[error("internal evaluation error (this is a bug): {0}")]
    Internal(String),
}
