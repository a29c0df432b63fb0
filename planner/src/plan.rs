//! Physical plans: a tree of operators over bound expressions, printed readably.
//!
//! Every node's output row is well defined: a scan yields the table's columns in
//! declaration order; a join yields the outer row followed by the inner table's columns;
//! an aggregate yields its group keys followed by its aggregates; a projection yields its
//! expressions; filter, sort, distinct and limit pass their input row through. Expressions reference columns of their input row by index.

use std::fmt;

use crate::catalog::{IndexId, TableId};
use crate::expr::{AggregateCall, Expr, comma_list};

/// One end of a key range.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeBound {
    /// The bound's value; computed before the scan.
    pub value: Expr,
    /// Whether the bound itself is in the range.
    pub inclusive: bool,
}

/// How a table's rows are reached.
///
/// Key expressions never reference the scanned table; they use parameters, constants and,
/// in a join, columns of the outer row. A key value that evaluates to NULL matches no row,
/// as SQL equality with NULL is never true. Key order and equality must agree with
/// [`Value::sql_cmp`](crate::Value::sql_cmp): an encoding must map `-0.0` and `0.0` (and
/// all NaNs) to one key.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    /// The whole primary key is bound by equality: at most one row.
    PointGet {
        /// One value per primary-key column, in key order.
        key: Vec<Expr>,
        /// Names of the key columns, for printing.
        columns: Vec<String>,
    },
    /// A prefix of the primary key bound by equality, optionally a range on the next
    /// key column. Rows must come in primary-key order, across every partition the range
    /// reads (an executor merges the partitions' ranges): the planner omits a Sort that
    /// this order already satisfies.
    KeyRange {
        /// Values of the leading key columns.
        prefix: Vec<Expr>,
        /// Lower bound on the key column after the prefix.
        lower: Option<RangeBound>,
        /// Upper bound on the key column after the prefix.
        upper: Option<RangeBound>,
        /// Names of the key columns, for printing.
        columns: Vec<String>,
        /// Rows come in reverse key order (the range is read backwards): the planner sets
        /// it to satisfy, without a Sort, an ORDER BY of the key columns after the prefix,
        /// each against its declared direction (`DESC` on an ascending column); a LIMIT
        /// above then reads only the rows it returns.
        descending: bool,
    },
    /// A prefix of an index bound by equality, optionally a range on the next column.
    IndexRange {
        /// The index.
        index: IndexId,
        /// Its name, for printing.
        index_name: String,
        /// Whether the whole index is bound and it is unique: at most one row.
        unique_hit: bool,
        /// Values of the leading index columns.
        prefix: Vec<Expr>,
        /// Lower bound on the index column after the prefix.
        lower: Option<RangeBound>,
        /// Upper bound on the index column after the prefix.
        upper: Option<RangeBound>,
        /// Names of the index columns, for printing.
        columns: Vec<String>,
    },
    /// Nothing narrows the scan: every row of the table (of every partition) is read. Under
    /// an ORDER BY of the key columns it becomes a [`Access::KeyRange`] with no prefix and no
    /// bounds (printed `[FULL SCAN, key order]`), which a LIMIT above may stop early.
    FullScan,
}

impl Access {
    /// Whether nothing narrows the access: a full scan, or a key range with no prefix and
    /// no bounds (without a LIMIT above, it reads every row).
    pub fn reads_every_row(&self) -> bool {
        match self {
            Access::FullScan => true,
            Access::KeyRange { prefix, lower: None, upper: None, .. } => prefix.is_empty(),
            _ => false,
        }
    }
}

/// A sort key.
#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    /// Over the sort's input row.
    pub expr: Expr,
    /// DESC.
    pub descending: bool,
    /// NULLs before other values (default: last for ASC, first for DESC, as in PostgreSQL).
    pub nulls_first: bool,
}

/// What an INSERT does when a row's primary key exists.
#[derive(Debug, Clone, PartialEq)]
pub enum OnConflict {
    /// Fail the statement (and so the transaction) with a unique violation.
    Error,
    /// Skip the row: on a conflict over its primary key, and with `any_constraint` (no
    /// conflict target given) over any unique index too.
    DoNothing {
        /// No conflict target: a conflict on any unique constraint skips the row.
        any_constraint: bool,
    },
    /// Update the existing row.
    DoUpdate {
        /// `(column index, value)`; values are over the existing row followed by the
        /// proposed row (`excluded`).
        assignments: Vec<(usize, Expr)>,
        /// Only update when this holds (over the same row as the assignments).
        filter: Option<Expr>,
    },
}

/// A physical plan node.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Reads rows of a table.
    Scan {
        /// Table id.
        table: TableId,
        /// Table name (or alias), for printing.
        table_name: String,
        /// The access path.
        access: Access,
    },
    /// For each outer row, reads the matching rows of a table (nested loop; index lookup
    /// when `access` is not a full scan). Output: outer row then table row.
    Join {
        /// The outer input.
        outer: Box<Plan>,
        /// Inner table id.
        table: TableId,
        /// Inner table name (or alias).
        table_name: String,
        /// Inner access path; key expressions may use outer columns.
        access: Access,
    },
    /// Keeps rows for which the predicate is TRUE.
    Filter {
        /// Input.
        input: Box<Plan>,
        /// Condition over the input row.
        predicate: Expr,
    },
    /// Groups rows; output: group keys then aggregates. Without group keys, exactly one
    /// row comes out, also from no input.
    Aggregate {
        /// Input.
        input: Box<Plan>,
        /// Group keys over the input row.
        group_by: Vec<Expr>,
        /// Aggregates over the input row.
        aggregates: Vec<AggregateCall>,
    },
    /// Sorts rows (stable).
    Sort {
        /// Input.
        input: Box<Plan>,
        /// Keys, most significant first.
        keys: Vec<SortKey>,
    },
    /// Skips `offset` rows, then passes at most `limit`.
    Limit {
        /// Input.
        input: Box<Plan>,
        /// Most rows; all when `None`.
        limit: Option<Expr>,
        /// Rows skipped first; none when `None`.
        offset: Option<Expr>,
    },
    /// Removes duplicate rows, keeping the first of each, so an order from below is kept.
    /// Rows are duplicates when every column is equal, two NULLs counting as equal (SQL
    /// DISTINCT).
    Distinct {
        /// Input.
        input: Box<Plan>,
    },
    /// Computes output rows.
    Project {
        /// Input.
        input: Box<Plan>,
        /// Output expressions over the input row.
        exprs: Vec<Expr>,
    },
    /// Inserts rows.
    Insert {
        /// Table id.
        table: TableId,
        /// Table name.
        table_name: String,
        /// Full rows, one expression per table column, using only parameters and constants.
        rows: Vec<Vec<Expr>>,
        /// Conflict handling on the primary key.
        on_conflict: OnConflict,
        /// RETURNING expressions over the stored row.
        returning: Option<Vec<Expr>>,
    },
    /// Updates the rows its input yields (rows of the table).
    Update {
        /// Rows to update.
        input: Box<Plan>,
        /// Table id.
        table: TableId,
        /// Table name.
        table_name: String,
        /// `(column index, value over the old row)`; never a primary-key column.
        assignments: Vec<(usize, Expr)>,
        /// RETURNING expressions over the new row.
        returning: Option<Vec<Expr>>,
    },
    /// Deletes the rows its input yields (rows of the table).
    Delete {
        /// Rows to delete.
        input: Box<Plan>,
        /// Table id.
        table: TableId,
        /// Table name.
        table_name: String,
        /// RETURNING expressions over the deleted row.
        returning: Option<Vec<Expr>>,
    },
}

impl Plan {
    /// Tells whether some node reads a whole table.
    pub fn has_full_scan(&self) -> bool {
        match self {
            Plan::Scan { access, .. } => access.reads_every_row(),
            Plan::Join { outer, access, .. } => access.reads_every_row() || outer.has_full_scan(),
            Plan::Filter { input, .. }
            | Plan::Aggregate { input, .. }
            | Plan::Sort { input, .. }
            | Plan::Limit { input, .. }
            | Plan::Distinct { input }
            | Plan::Project { input, .. }
            | Plan::Update { input, .. }
            | Plan::Delete { input, .. } => input.has_full_scan(),
            Plan::Insert { .. } => false,
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
        let pad = "  ".repeat(depth);
        let child = |f: &mut fmt::Formatter<'_>, input: &Plan| input.write(f, depth + 1);
        match self {
            Plan::Scan {
                table_name, access, ..
            } => writeln!(f, "{pad}Scan {table_name} {access}"),
            Plan::Join {
                outer,
                table_name,
                access,
                ..
            } => {
                writeln!(f, "{pad}Join {table_name} {access}")?;
                child(f, outer)
            }
            Plan::Filter { input, predicate } => {
                writeln!(f, "{pad}Filter {predicate}")?;
                child(f, input)
            }
            Plan::Aggregate {
                input,
                group_by,
                aggregates,
            } => {
                write!(f, "{pad}Aggregate group_by=[")?;
                comma_list(f, group_by)?;
                f.write_str("] aggregates=[")?;
                comma_list(f, aggregates)?;
                writeln!(f, "]")?;
                child(f, input)
            }
            Plan::Sort { input, keys } => {
                write!(f, "{pad}Sort ")?;
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(
                        f,
                        "{} {}",
                        k.expr,
                        if k.descending { "DESC" } else { "ASC" }
                    )?;
                    if k.nulls_first != k.descending {
                        f.write_str(if k.nulls_first {
                            " NULLS FIRST"
                        } else {
                            " NULLS LAST"
                        })?;
                    }
                }
                writeln!(f)?;
                child(f, input)
            }
            Plan::Limit {
                input,
                limit,
                offset,
            } => {
                write!(f, "{pad}Limit")?;
                if let Some(l) = limit {
                    write!(f, " limit={l}")?;
                }
                if let Some(o) = offset {
                    write!(f, " offset={o}")?;
                }
                writeln!(f)?;
                child(f, input)
            }
            Plan::Distinct { input } => {
                writeln!(f, "{pad}Distinct")?;
                child(f, input)
            }
            Plan::Project { input, exprs } => {
                write!(f, "{pad}Project ")?;
                comma_list(f, exprs)?;
                writeln!(f)?;
                child(f, input)
            }
            Plan::Insert {
                table_name,
                rows,
                on_conflict,
                returning,
                ..
            } => {
                write!(f, "{pad}Insert {table_name}")?;
                match on_conflict {
                    OnConflict::Error => {}
                    OnConflict::DoNothing { any_constraint: false } => f.write_str(" on_conflict=nothing")?,
                    OnConflict::DoNothing { any_constraint: true } => f.write_str(" on_conflict=nothing (any unique)")?,
                    OnConflict::DoUpdate {
                        assignments,
                        filter,
                    } => {
                        f.write_str(" on_conflict=update[")?;
                        assignments_list(f, assignments)?;
                        f.write_str("]")?;
                        if let Some(filter) = filter {
                            write!(f, " where {filter}")?;
                        }
                    }
                }
                returning_list(f, returning)?;
                writeln!(f)?;
                for row in rows {
                    write!(f, "{pad}  Row ")?;
                    comma_list(f, row)?;
                    writeln!(f)?;
                }
                Ok(())
            }
            Plan::Update {
                input,
                table_name,
                assignments,
                returning,
                ..
            } => {
                write!(f, "{pad}Update {table_name} set [")?;
                assignments_list(f, assignments)?;
                f.write_str("]")?;
                returning_list(f, returning)?;
                writeln!(f)?;
                child(f, input)
            }
            Plan::Delete {
                input,
                table_name,
                returning,
                ..
            } => {
                write!(f, "{pad}Delete {table_name}")?;
                returning_list(f, returning)?;
                writeln!(f)?;
                child(f, input)
            }
        }
    }
}

fn assignments_list(f: &mut fmt::Formatter<'_>, assignments: &[(usize, Expr)]) -> fmt::Result {
    for (i, (column, value)) in assignments.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "#{column} = {value}")?;
    }
    Ok(())
}

fn returning_list(f: &mut fmt::Formatter<'_>, returning: &Option<Vec<Expr>>) -> fmt::Result {
    if let Some(exprs) = returning {
        f.write_str(" returning=[")?;
        comma_list(f, exprs)?;
        f.write_str("]")?;
    }
    Ok(())
}

impl fmt::Display for Plan {
    /// Prints the plan as an indented tree, one node per line, root first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, 0)
    }
}

impl fmt::Display for Access {
    /// Prints the access path and its bounds: `[key range] hotel_id = $1, room_id >= $2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bounds = |f: &mut fmt::Formatter<'_>,
                      columns: &[String],
                      prefix: &[Expr],
                      lower: &Option<RangeBound>,
                      upper: &Option<RangeBound>| {
            let mut parts: Vec<String> = columns
                .iter()
                .zip(prefix)
                .map(|(c, e)| format!("{c} = {e}"))
                .collect();
            if let Some(next) = columns.get(prefix.len()) {
                if let Some(l) = lower {
                    parts.push(format!(
                        "{next} {} {}",
                        if l.inclusive { ">=" } else { ">" },
                        l.value
                    ));
                }
                if let Some(u) = upper {
                    parts.push(format!(
                        "{next} {} {}",
                        if u.inclusive { "<=" } else { "<" },
                        u.value
                    ));
                }
            }
            f.write_str(&parts.join(", "))
        };
        match self {
            Access::PointGet { key, columns } => {
                f.write_str("[point get] ")?;
                bounds(f, columns, key, &None, &None)
            }
            Access::KeyRange {
                prefix,
                lower,
                upper,
                columns,
                descending,
            } => {
                if self.reads_every_row() {
                    return f.write_str(if *descending {
                        "[FULL SCAN, key order descending]"
                    } else {
                        "[FULL SCAN, key order]"
                    });
                }
                f.write_str(if *descending { "[key range, descending] " } else { "[key range] " })?;
                bounds(f, columns, prefix, lower, upper)
            }
            Access::IndexRange {
                index_name,
                unique_hit,
                prefix,
                lower,
                upper,
                columns,
                ..
            } => {
                write!(
                    f,
                    "[{}index {index_name}] ",
                    if *unique_hit { "unique " } else { "" }
                )?;
                bounds(f, columns, prefix, lower, upper)
            }
            Access::FullScan => f.write_str("[FULL SCAN]"),
        }
    }
}
