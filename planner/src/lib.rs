//! Comb's planner (placeholder docs, completed below).

mod binder;
mod catalog;
mod error;
mod expr;
mod function;
mod plan;
mod prepare;
mod recording;
pub mod reference;
mod syntax;
mod value;
mod workflow;

pub use catalog::{Catalog, Column, Index, IndexId, Table, TableId, KEY_COLUMNS_MAX, TABLE_COLUMNS_MAX};
pub use error::{EvalError, PlanError, PlanErrors, Position};
pub use syntax::SQL_BYTES_MAX;
pub use value::{DataType, Value};
pub use binder::PARAMS_MAX;
pub use expr::{Accumulator, AggregateCall, AggregateFunc, BinaryOp, Expr, cast, like};
pub use plan::{Access, OnConflict, Plan, RangeBound, SortKey};
pub use prepare::{INSERT_ROWS_MAX, JOIN_TABLES_MAX, OutputColumn, PartitionKey, Prepared, StatementKind};
pub use function::{Function, FunctionErrors, PreparedFunction};
pub use workflow::{FunctionLookup, STEPS_MAX, StepSpec, WorkflowError, WorkflowPlan, WorkflowSpec};
