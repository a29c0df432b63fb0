//! Comb's planner: the SQL catalog, prepared statements and their physical plans, and
//! the analysis of functions and workflows.
//!
//! Functions may run only SQL they declared up front. The planner parses, binds,
//! type-checks and plans each statement once, at registration, so that execution is a
//! walk over a small plan and every error in the SQL surfaces before anything runs. It
//! also analyses workflows: their DAG, their multi-function transactions, and which steps
//! must record their output for exactly-once execution.
//!
//! ```text
//!  DDL text ──Catalog::apply──▶ Catalog (immutable; swapped whole)
//!                                  │
//!  SQL text ──Catalog::prepare─────┴─▶ Prepared { params, columns, plan, reads, writes, partition }
//!  Function { name, statements } ──Catalog::prepare_function──▶ PreparedFunction { read_only, partition }
//!  WorkflowSpec (JSON) ──validate(functions)──▶ WorkflowPlan { order, levels, units, recorded }
//! ```
//!
//! The crate is pure: no I/O, no threads, no async.
//!
//! ```
//! use comb_planner::{Access, Catalog, PartitionKey, Plan, Value};
//!
//! let catalog = Catalog::new()
//!     .apply("CREATE TABLE rooms (hotel_id BIGINT, room_id BIGINT, reserved_by BIGINT, \
//!             PRIMARY KEY (hotel_id, room_id))")
//!     .expect("valid DDL");
//! let find = catalog
//!     .prepare("SELECT room_id FROM rooms WHERE hotel_id = $1 AND reserved_by IS NULL LIMIT 1")
//!     .expect("valid statement");
//! assert_eq!(find.partition, PartitionKey::Param(0));
//! assert!(find.is_read_only() && !find.plan.has_full_scan());
//! println!("{}", find.plan); // Project room_id#1 / Limit limit=1 / Filter ... / Scan rooms [key range] hotel_id = $1
//!
//! // The backend evaluates bound expressions over rows and parameters.
//! let Plan::Project { input, .. } = &find.plan else { unreachable!() };
//! let Plan::Limit { input, .. } = &**input else { unreachable!() };
//! let Plan::Filter { predicate, input } = &**input else { unreachable!() };
//! assert!(matches!(&**input, Plan::Scan { access: Access::KeyRange { .. }, .. }));
//! let row = [Value::Int(7), Value::Int(12), Value::Null];
//! assert_eq!(predicate.eval(&row, &[Value::Int(7)]), Ok(Value::Bool(true)));
//! ```
//!
//! # Invariants
//!
//! - A [`Catalog`] never changes; [`Catalog::apply`] returns a new one, applying a whole
//!   DDL script or nothing. Table and index ids are assigned by the catalog, increase, and
//!   are never reused, so replaying the same DDL text yields the same ids.
//! - Every table has a primary key; primary-key columns are NOT NULL; the partition
//!   column is a primary-key column, so all versions of a row live in one partition. A
//!   row's partition is a function of its partition-column value alone (the same for
//!   every table), so equal keys of different tables are co-located.
//! - A [`Prepared`] statement is fully checked: every name resolved, every expression
//!   typed, every parameter typed (parameters are numbered `$1..$n` without gaps).
//!   Nothing is rejected at run time for being unsupported; what remains for run time is
//!   data-dependent: overflow, division by zero, invalid casts, NOT NULL and unique
//!   violations by computed values.
//! - Plans reference columns by index into a well-defined input row (see [`Plan`]) and
//!   parameters by 0-based index. Binary operators see operands of one type: the binder
//!   inserts casts (BIGINT to DOUBLE, anything to TEXT for `||`).
//! - A key or index lookup whose key evaluates to NULL matches no row.
//! - Plans whose access reads every row say so: [`Access::FullScan`], printed as
//!   `[FULL SCAN]`.
//! - [`PartitionKey::Param`] / [`PartitionKey::Constant`] are reported only when every
//!   table a statement touches is pinned by equality to that one value; anything else is
//!   [`PartitionKey::MultiPartition`].
//! - Findings are collected, not returned at the first: a user sees every unknown column
//!   of a statement, every broken statement of a function, every problem of a workflow.
//! - Workflow recording is computed in O(V + E) after contracting each multi-function
//!   transaction into one unit; a recorded unit records every one of its steps.

#![warn(missing_docs)]
mod binder;
mod catalog;
mod error;
mod expr;
mod function;
mod plan;
mod prepare;
mod recording;
mod reference;
mod syntax;
mod value;
mod workflow;

pub use binder::PARAMS_MAX;
pub use catalog::{
    Catalog, Column, Index, IndexId, KEY_COLUMNS_MAX, TABLE_COLUMNS_MAX, Table, TableId,
};
pub use error::{EvalError, PlanError, PlanErrors, Position};
pub use expr::{Accumulator, AggregateCall, AggregateFunc, BinaryOp, Expr, ScalarFunc, cast, like};
pub use function::{Function, FunctionErrors, PreparedFunction};
pub use plan::{Access, OnConflict, Plan, RangeBound, SortKey};
pub use prepare::{
    INSERT_ROWS_MAX, JOIN_TABLES_MAX, OutputColumn, PartitionKey, Prepared, StatementKind,
};
pub use reference::{INPUT_DEPTH_MAX, Reference, ResolveError, Source, StepOutputs, ZippedOutputs, parse_reference, resolve};
pub use syntax::SQL_BYTES_MAX;
pub use value::{DataType, Value, format_timestamp, parse_timestamp};
pub use workflow::{
    FunctionLookup, STEPS_MAX, StepSpec, WorkflowError, WorkflowPlan, WorkflowSpec,
};
