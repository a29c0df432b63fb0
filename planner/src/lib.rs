//! Comb's planner (placeholder docs, completed below).

mod catalog;
mod error;
mod syntax;
mod value;

pub use catalog::{Catalog, Column, Index, IndexId, Table, TableId, KEY_COLUMNS_MAX, TABLE_COLUMNS_MAX};
pub use error::{EvalError, PlanError, PlanErrors, Position};
pub use syntax::SQL_BYTES_MAX;
pub use value::{DataType, Value};
