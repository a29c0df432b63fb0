//! Functions: a named set of statements analysed together.

use std::collections::BTreeSet;
use std::fmt;

use crate::catalog::{Catalog, TableId};
use crate::error::{PlanError, PlanErrors, Position};
use crate::prepare::{PartitionKey, Prepared};

/// A function's declaration: its name and its named SQL statements. Plain data; the
/// backend attaches the body that runs them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Function {
    /// The function's name.
    pub name: String,
    /// `(statement name, SQL)` in declaration order.
    pub statements: Vec<(String, String)>,
}

impl Function {
    /// Starts a function with no statements.
    pub fn new(name: impl Into<String>) -> Function {
        Function {
            name: name.into(),
            statements: Vec::new(),
        }
    }

    /// Adds a named statement.
    pub fn statement(mut self, name: impl Into<String>, sql: impl Into<String>) -> Function {
        self.statements.push((name.into(), sql.into()));
        self
    }
}

/// A function whose statements are all prepared, with what they do together.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedFunction {
    /// The function's name.
    pub name: String,
    /// `(statement name, prepared statement)` in declaration order.
    pub statements: Vec<(String, Prepared)>,
    /// Whether no statement writes.
    pub read_only: bool,
    /// `Param(i)` when every statement is partition-local on parameter `i`; `Constant`
    /// when every statement names the same constant partition; otherwise the function runs
    /// as a multi-partition transaction.
    pub partition: PartitionKey,
    /// Tables read by some statement.
    pub reads: BTreeSet<TableId>,
    /// Tables written by some statement.
    pub writes: BTreeSet<TableId>,
}

impl PreparedFunction {
    /// Finds a statement by name.
    pub fn statement(&self, name: &str) -> Option<&Prepared> {
        self.statements
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }
}

/// Every finding about a function's statements.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct FunctionErrors {
    /// The function.
    pub function: String,
    /// Findings per statement; each names its statement.
    pub errors: Vec<PlanErrors>,
}

impl fmt::Display for FunctionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "function {}:", self.function)?;
        for e in &self.errors {
            write!(f, " {e}.")?;
        }
        Ok(())
    }
}

impl Catalog {
    /// Prepares every statement of a function and analyses them together. Reports the
    /// findings of every statement at once.
    pub fn prepare_function(
        &self,
        function: &Function,
    ) -> Result<PreparedFunction, FunctionErrors> {
        let mut errors = Vec::new();
        let mut statements = Vec::new();
        for (i, (name, sql)) in function.statements.iter().enumerate() {
            if function.statements[..i].iter().any(|(n, _)| n == name) {
                let e = PlanError::Invalid {
                    message: format!("statement name {name} is used twice"),
                    at: Position { line: 1, column: 1 },
                };
                errors.push(PlanErrors::from(e).in_statement(name));
                continue;
            }
            match self.prepare(sql) {
                Ok(p) => statements.push((name.clone(), p)),
                Err(e) => errors.push(e.in_statement(name)),
            }
        }
        if !errors.is_empty() {
            return Err(FunctionErrors {
                function: function.name.clone(),
                errors,
            });
        }
        let read_only = statements.iter().all(|(_, p)| p.is_read_only());
        let mut keys = statements.iter().map(|(_, p)| &p.partition);
        let partition = match keys.next() {
            Some(first) if keys.all(|k| k == first) => first.clone(),
            _ => PartitionKey::MultiPartition,
        };
        let reads = statements
            .iter()
            .flat_map(|(_, p)| p.reads.iter().copied())
            .collect();
        let writes = statements
            .iter()
            .flat_map(|(_, p)| p.writes.iter().copied())
            .collect();
        Ok(PreparedFunction {
            name: function.name.clone(),
            statements,
            read_only,
            partition,
            reads,
            writes,
        })
    }
}
