//! Prepared statements: SQL text in, a checked and planned [`Prepared`] out.
//!
//! Access paths are chosen from the conjuncts of WHERE (and of join conditions): a point
//! get when every primary-key column is bound by equality, otherwise the longest
//! primary-key or index prefix bound by equality (plus a range on the next column), and a
//! full scan, marked as such, when nothing binds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use sqlparser::ast::{
    self, AssignmentTarget, ConflictTarget, FromTable, GroupByExpr, JoinConstraint, JoinOperator,
    LimitClause, OnConflictAction, OnInsert, OrderByKind, SelectFlavor, SelectItem, SetExpr,
    Statement, TableFactor, TableObject, TableWithJoins,
};

use crate::binder::{Binder, Grouping, Scope, contains_aggregate, strip_indexes};
use crate::catalog::{Catalog, Table, TableId, statement_kind};
use crate::error::{PlanError, PlanErrors, Position};
use crate::expr::{AggregateCall, AggregateFunc, BinaryOp, Expr};
use crate::plan::{Access, OnConflict, Plan, RangeBound, SortKey};
use crate::syntax::{
    self, at, at_ident, at_span, ident, invalid, single_name, unsupported, unsupported_hint,
};
use crate::value::{DataType, Value};

/// Most tables one SELECT may join.
pub const JOIN_TABLES_MAX: usize = 8;
/// Most rows one INSERT may list.
pub const INSERT_ROWS_MAX: usize = 1000;

/// What a statement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// SELECT.
    Select,
    /// INSERT (with or without ON CONFLICT).
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
}

/// Which partition a statement runs on.
#[derive(Debug, Clone, PartialEq)]
pub enum PartitionKey {
    /// The partition of the value of a parameter; the 0-based index (`$1` is 0).
    Param(usize),
    /// The partition of a constant.
    Constant(Value),
    /// Unknown before execution, or several partitions: a multi-partition transaction.
    MultiPartition,
}

impl fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionKey::Param(i) => write!(f, "${}", i + 1),
            PartitionKey::Constant(v) => write!(f, "{v}"),
            PartitionKey::MultiPartition => f.write_str("multi-partition"),
        }
    }
}

/// A column of a statement's result.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputColumn {
    /// Name (alias, column name, function name, or `?column?`).
    pub name: String,
    /// Type.
    pub ty: DataType,
}

/// A statement parsed, bound, type-checked and planned once, at registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The SQL text.
    pub sql: String,
    /// What the statement does.
    pub kind: StatementKind,
    /// Types of `$1`, `$2`, ...
    pub params: Vec<DataType>,
    /// Result columns (SELECT, or RETURNING); empty otherwise.
    pub columns: Vec<OutputColumn>,
    /// The physical plan.
    pub plan: Plan,
    /// Tables read.
    pub reads: BTreeSet<TableId>,
    /// Tables written.
    pub writes: BTreeSet<TableId>,
    /// The partition the statement runs on.
    pub partition: PartitionKey,
    table_names: BTreeMap<TableId, String>,
}

impl Prepared {
    /// Tells whether the statement writes nothing.
    pub fn is_read_only(&self) -> bool {
        self.writes.is_empty()
    }

    /// Returns the name a table had when the statement was prepared.
    pub fn table_name(&self, id: TableId) -> Option<&str> {
        self.table_names.get(&id).map(String::as_str)
    }

    fn names(&self, set: &BTreeSet<TableId>) -> String {
        if set.is_empty() {
            return "none".to_owned();
        }
        set.iter()
            .map(|id| self.table_name(*id).unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Prepared {
    /// Prints parameters, result columns, read and write sets, partition and plan.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("params:")?;
        if self.params.is_empty() {
            f.write_str(" none")?;
        }
        for (i, ty) in self.params.iter().enumerate() {
            write!(f, "{} ${} {ty}", if i > 0 { "," } else { "" }, i + 1)?;
        }
        f.write_str("\ncolumns:")?;
        if self.columns.is_empty() {
            f.write_str(" none")?;
        }
        for (i, c) in self.columns.iter().enumerate() {
            write!(f, "{} {} {}", if i > 0 { "," } else { "" }, c.name, c.ty)?;
        }
        writeln!(
            f,
            "\nreads: {}; writes: {}",
            self.names(&self.reads),
            self.names(&self.writes)
        )?;
        writeln!(f, "partition: {}", self.partition)?;
        write!(f, "{}", self.plan)
    }
}

impl Catalog {
    /// Parses, binds, type-checks and plans one statement (SELECT, INSERT, UPDATE or
    /// DELETE). Every finding is reported at once.
    pub fn prepare(&self, sql: &str) -> Result<Prepared, PlanErrors> {
        let statements = syntax::parse(sql)?;
        let statement = match statements.as_slice() {
            [one] => one,
            [] => return Err(invalid("empty statement", Position { line: 1, column: 1 }).into()),
            [_, second, ..] => {
                return Err(invalid(
                    "a prepared statement holds exactly one SQL statement",
                    at(second),
                )
                .into());
            }
        };
        let mut planner = Planner {
            binder: Binder::new(self),
            names: BTreeMap::new(),
        };
        let planned = planner.statement(statement);
        let params = planner.binder.finish_params();
        let errors = std::mem::take(&mut planner.binder.errors);
        match planned {
            Some(mut planned) if errors.is_empty() => {
                fix_plan_params(&planner.binder, &mut planned.plan);
                Ok(Prepared {
                    sql: sql.to_owned(),
                    kind: planned.kind,
                    params,
                    columns: planned
                        .names
                        .into_iter()
                        .zip(output_exprs(&planned.plan))
                        .map(|(name, e)| OutputColumn { name, ty: e.ty() })
                        .collect(),
                    plan: planned.plan,
                    reads: planned.reads,
                    writes: planned.writes,
                    partition: planned.partition,
                    table_names: planner.names,
                })
            }
            _ if errors.is_empty() => Err(PlanError::Internal(format!(
                "planning {sql:?} failed without a finding"
            ))
            .into()),
            _ => Err(PlanErrors::new(errors)),
        }
    }
}

struct Planned {
    kind: StatementKind,
    /// Output column names; their types are read from the plan once parameter types are final.
    names: Vec<String>,
    plan: Plan,
    reads: BTreeSet<TableId>,
    writes: BTreeSet<TableId>,
    partition: PartitionKey,
}

struct Planner<'c> {
    binder: Binder<'c>,
    names: BTreeMap<TableId, String>,
}

/// Splits a condition into its AND-ed parts.
fn conjuncts(expr: Expr, out: &mut Vec<Expr>) {
    match expr {
        Expr::Binary {
            op: BinaryOp::And,
            left,
            right,
        } => {
            conjuncts(*left, out);
            conjuncts(*right, out);
        }
        other => out.push(other),
    }
}

fn and_all(mut parts: Vec<Expr>) -> Option<Expr> {
    let first = if parts.is_empty() {
        return None;
    } else {
        parts.remove(0)
    };
    Some(parts.into_iter().fold(first, |acc, e| Expr::Binary {
        op: BinaryOp::And,
        left: Box::new(acc),
        right: Box::new(e),
    }))
}

fn max_column(expr: &Expr) -> Option<usize> {
    let mut max = None;
    expr.visit(&mut |e| {
        if let Expr::Column { index, .. } = e {
            max = max.max(Some(*index));
        }
    });
    max
}

fn flip(op: BinaryOp) -> BinaryOp {
    match op {
        BinaryOp::Lt => BinaryOp::Gt,
        BinaryOp::LtEq => BinaryOp::GtEq,
        BinaryOp::Gt => BinaryOp::Lt,
        BinaryOp::GtEq => BinaryOp::LtEq,
        other => other,
    }
}

/// A conjunct that constrains one column of the scanned table by values computable
/// before the scan.
struct Sarg {
    conjunct: usize,
    column: usize,
    op: BinaryOp,
    value: Expr,
}

/// Chooses the access path of `table` (whose columns start at `offset` in the row) from
/// `conds`; returns it and the conjuncts it makes redundant.
fn choose_access(table: &Table, offset: usize, conds: &[Expr]) -> (Access, BTreeSet<usize>) {
    let width = table.columns.len();
    let local = |e: &Expr| match e {
        Expr::Column { index, .. } if (offset..offset + width).contains(index) => {
            Some(index - offset)
        }
        _ => None,
    };
    let outer_only = |e: &Expr| max_column(e).is_none_or(|m| m < offset);
    let mut sargs = Vec::new();
    let mut betweens = BTreeSet::new();
    for (i, cond) in conds.iter().enumerate() {
        match cond {
            Expr::Binary { op, left, right } if op.is_comparison() && *op != BinaryOp::NotEq => {
                if let Some(c) = local(left)
                    && outer_only(right)
                {
                    sargs.push(Sarg {
                        conjunct: i,
                        column: c,
                        op: *op,
                        value: (**right).clone(),
                    });
                } else if let Some(c) = local(right)
                    && outer_only(left)
                {
                    sargs.push(Sarg {
                        conjunct: i,
                        column: c,
                        op: flip(*op),
                        value: (**left).clone(),
                    });
                }
            }
            Expr::Between {
                expr,
                low,
                high,
                negated: false,
            } => {
                if let Some(c) = local(expr)
                    && outer_only(low)
                    && outer_only(high)
                {
                    betweens.insert(i);
                    sargs.push(Sarg {
                        conjunct: i,
                        column: c,
                        op: BinaryOp::GtEq,
                        value: (**low).clone(),
                    });
                    sargs.push(Sarg {
                        conjunct: i,
                        column: c,
                        op: BinaryOp::LtEq,
                        value: (**high).clone(),
                    });
                }
            }
            _ => {}
        }
    }
    let eq = |c: usize| sargs.iter().find(|s| s.column == c && s.op == BinaryOp::Eq);
    let lower = |c: usize| {
        sargs
            .iter()
            .find(|s| s.column == c && matches!(s.op, BinaryOp::Gt | BinaryOp::GtEq))
    };
    let upper = |c: usize| {
        sargs
            .iter()
            .find(|s| s.column == c && matches!(s.op, BinaryOp::Lt | BinaryOp::LtEq))
    };
    // Score: two per column bound by equality, one for a range on the next column.
    let score = |cols: &[usize]| {
        let p = cols.iter().take_while(|c| eq(**c).is_some()).count();
        let range = cols
            .get(p)
            .is_some_and(|c| lower(*c).is_some() || upper(*c).is_some());
        (2 * p + usize::from(range), p)
    };
    let (pk_score, _) = score(&table.primary_key);
    let mut best: Option<usize> = None; // None: primary key; Some(i): index i
    let mut best_score = pk_score;
    for (i, index) in table.indexes.iter().enumerate() {
        let (s, p) = score(&index.columns);
        let unique_hit = index.unique && p == index.columns.len();
        // A unique index fully bound beats any primary-key range.
        let s = if unique_hit { s + 1000 } else { s };
        if s > best_score && pk_score != 2 * table.primary_key.len() {
            best = Some(i);
            best_score = s;
        }
    }
    if best_score == 0 {
        return (Access::FullScan, BTreeSet::new());
    }
    let cols = match best {
        None => &table.primary_key,
        Some(i) => &table.indexes[i].columns,
    };
    let mut used: BTreeMap<usize, usize> = BTreeMap::new(); // conjunct -> bounds used
    let mut prefix = Vec::new();
    for &c in cols {
        match eq(c) {
            Some(s) => {
                *used.entry(s.conjunct).or_default() += 2;
                prefix.push(s.value.clone());
            }
            None => break,
        }
    }
    let mut bound = |s: Option<&Sarg>| {
        s.map(|s| {
            *used.entry(s.conjunct).or_default() += 1;
            RangeBound {
                value: s.value.clone(),
                inclusive: matches!(s.op, BinaryOp::LtEq | BinaryOp::GtEq),
            }
        })
    };
    let (lo, hi) = match cols.get(prefix.len()) {
        Some(&c) => (bound(lower(c)), bound(upper(c))),
        None => (None, None),
    };
    // A BETWEEN is redundant only when both of its bounds went into the range.
    let consumed = used
        .into_iter()
        .filter(|(conj, n)| !betweens.contains(conj) || *n >= 2)
        .map(|(c, _)| c)
        .collect();
    let columns = cols
        .iter()
        .map(|&c| table.columns[c].name.clone())
        .collect();
    let access = match best {
        None if prefix.len() == table.primary_key.len() => Access::PointGet {
            key: prefix,
            columns,
        },
        None => Access::KeyRange {
            prefix,
            lower: lo,
            upper: hi,
            columns,
            descending: false,
        },
        Some(i) => {
            let index = &table.indexes[i];
            Access::IndexRange {
                index: index.id,
                index_name: index.name.clone(),
                unique_hit: index.unique && prefix.len() == index.columns.len(),
                prefix,
                lower: lo,
                upper: hi,
                columns,
            }
        }
    };
    (access, consumed)
}

/// Works out the partition from equalities on the partition columns of every table.
fn partition_of(scope: &Scope<'_>, conds: &[Expr]) -> PartitionKey {
    let mut known: BTreeMap<usize, PartitionKey> = BTreeMap::new();
    let mut links = Vec::new();
    for cond in conds {
        if let Expr::Binary {
            op: BinaryOp::Eq,
            left,
            right,
        } = cond
        {
            match (&**left, &**right) {
                (Expr::Column { index: a, .. }, Expr::Column { index: b, .. }) => {
                    links.push((*a, *b))
                }
                (Expr::Column { index, .. }, other) | (other, Expr::Column { index, .. }) => {
                    let key = match other {
                        Expr::Param { index, .. } => PartitionKey::Param(*index),
                        Expr::Literal { value, .. } if !value.is_null() => {
                            PartitionKey::Constant(value.clone())
                        }
                        _ => continue,
                    };
                    known.entry(*index).or_insert(key);
                }
                _ => {}
            }
        }
    }
    let mut changed = true;
    while changed {
        changed = false;
        for (a, b) in &links {
            for (from, to) in [(a, b), (b, a)] {
                if let Some(key) = known.get(from).cloned()
                    && !known.contains_key(to)
                {
                    known.insert(*to, key);
                    changed = true;
                }
            }
        }
    }
    let mut keys = scope
        .tables
        .iter()
        .map(|t| known.get(&(t.offset + t.table.partition_column)));
    let Some(Some(first)) = keys.next() else {
        return PartitionKey::MultiPartition;
    };
    if keys.all(|k| k == Some(first)) {
        first.clone()
    } else {
        PartitionKey::MultiPartition
    }
}

/// The expressions that compute a plan's result rows: the final projection or RETURNING.
fn output_exprs(plan: &Plan) -> &[Expr] {
    match plan {
        Plan::Project { exprs, .. } => exprs,
        Plan::Limit { input, .. } | Plan::Distinct { input } => output_exprs(input),
        Plan::Insert {
            returning: Some(exprs),
            ..
        }
        | Plan::Update {
            returning: Some(exprs),
            ..
        }
        | Plan::Delete {
            returning: Some(exprs),
            ..
        } => exprs,
        _ => &[],
    }
}

fn fix_plan_params(binder: &Binder<'_>, plan: &mut Plan) {
    let fix = |e: &mut Expr| binder.fix_params(e);
    let fix_access = |a: &mut Access| match a {
        Access::PointGet { key, .. } => key.iter_mut().for_each(fix),
        Access::KeyRange {
            prefix,
            lower,
            upper,
            ..
        }
        | Access::IndexRange {
            prefix,
            lower,
            upper,
            ..
        } => {
            prefix.iter_mut().for_each(fix);
            for b in [lower, upper].into_iter().flatten() {
                fix(&mut b.value);
            }
        }
        Access::FullScan => {}
    };
    match plan {
        Plan::Scan { access, .. } => fix_access(access),
        Plan::Join { outer, access, .. } => {
            fix_access(access);
            fix_plan_params(binder, outer);
        }
        Plan::Filter { input, predicate } => {
            fix(predicate);
            fix_plan_params(binder, input);
        }
        Plan::Aggregate {
            input,
            group_by,
            aggregates,
        } => {
            group_by.iter_mut().for_each(fix);
            aggregates
                .iter_mut()
                .filter_map(|a| a.arg.as_mut())
                .for_each(fix);
            fix_plan_params(binder, input);
        }
        Plan::Sort { input, keys } => {
            keys.iter_mut().for_each(|k| fix(&mut k.expr));
            fix_plan_params(binder, input);
        }
        Plan::Limit {
            input,
            limit,
            offset,
        } => {
            limit.iter_mut().chain(offset.iter_mut()).for_each(fix);
            fix_plan_params(binder, input);
        }
        Plan::Project { input, exprs } => {
            exprs.iter_mut().for_each(fix);
            fix_plan_params(binder, input);
        }
        Plan::Distinct { input } => fix_plan_params(binder, input),
        Plan::Insert {
            rows,
            on_conflict,
            returning,
            ..
        } => {
            rows.iter_mut().flatten().for_each(fix);
            if let OnConflict::DoUpdate {
                assignments,
                filter,
            } = on_conflict
            {
                assignments.iter_mut().for_each(|(_, e)| fix(e));
                filter.iter_mut().for_each(fix);
            }
            returning.iter_mut().flatten().for_each(fix);
        }
        Plan::Update {
            input,
            assignments,
            returning,
            ..
        } => {
            assignments.iter_mut().for_each(|(_, e)| fix(e));
            returning.iter_mut().flatten().for_each(fix);
            fix_plan_params(binder, input);
        }
        Plan::Delete {
            input, returning, ..
        } => {
            returning.iter_mut().flatten().for_each(fix);
            fix_plan_params(binder, input);
        }
    }
}

/// The access path of a plan that is a table's scan, filtered or not.
fn scan_access(plan: &mut Plan) -> Option<&mut Access> {
    match plan {
        Plan::Scan { access, .. } => Some(access),
        Plan::Filter { input, .. } => match &mut **input {
            Plan::Scan { access, .. } => Some(access),
            _ => None,
        },
        _ => None,
    }
}

/// Tells whether a single-table scan (a key range or a full scan on any partitions, another
/// access on one) yields rows in the order of `keys` without a Sort: at most one row comes
/// out, or the keys are the primary-key columns right after the prefix bound by equality, in
/// key order (key columns are never NULL), either each in its column's declared direction,
/// or each against it, in which case the key range is turned to be read backwards. A full
/// scan so ordered becomes the key range of the whole table (no prefix, no bounds), which
/// reads the same rows in key order, so that a LIMIT above reads only the rows it returns.
fn sorted_by_access(plan: &mut Plan, table: &Table, keys: &[SortKey]) -> bool {
    let Some(access) = scan_access(plan) else {
        return false;
    };
    if *access == Access::FullScan {
        let mut whole = Access::KeyRange {
            prefix: Vec::new(),
            lower: None,
            upper: None,
            columns: table.primary_key.iter().map(|&c| table.columns[c].name.clone()).collect(),
            descending: false,
        };
        let sorted = !keys.is_empty() && sorted_by_key_range(&mut whole, table, keys);
        if sorted {
            *access = whole;
        }
        return sorted;
    }
    sorted_by_key_range(access, table, keys)
}

/// [`sorted_by_access`] for an access other than a full scan.
fn sorted_by_key_range(access: &mut Access, table: &Table, keys: &[SortKey]) -> bool {
    match access {
        Access::PointGet { .. }
        | Access::IndexRange {
            unique_hit: true, ..
        } => true,
        Access::KeyRange {
            prefix, descending, ..
        } => {
            let rest = &table.primary_key[prefix.len()..];
            let declared = &table.key_descending[prefix.len()..];
            let on_key = keys.len() <= rest.len()
                && keys.iter().zip(rest).all(
                    |(k, &c)| matches!(k.expr, Expr::Column { index, .. } if index == c),
                );
            // Whether every key runs against its column's declared direction (`backwards`)
            // or every one with it.
            let direction =
                |backwards: bool| keys.iter().zip(declared).all(|(k, &d)| (k.descending != d) == backwards);
            if on_key && direction(false) {
                true
            } else if on_key && direction(true) && !keys.is_empty() {
                *descending = true;
                true
            } else {
                false
            }
        }
        _ => false,
    }
}

/// Reads only the row a lone `MIN` or `MAX` needs: when every aggregate is the same one of
/// them over the key column right after the prefix of a single-partition key range, the
/// first row read from that end of the range (forwards or backwards by the column's declared
/// direction) holds the answer, key columns being never NULL; a filter left over the range
/// passes the first row that qualifies. Turns the range to be read from that end and tells
/// whether it did: the caller puts a `LIMIT 1` below the aggregate (which still answers NULL
/// over no row).
fn min_max_by_access(plan: &mut Plan, table: &Table, aggregates: &[AggregateCall]) -> bool {
    let Some(Access::KeyRange {
        prefix, descending, ..
    }) = scan_access(plan)
    else {
        return false;
    };
    let Some(&column) = table.primary_key.get(prefix.len()) else {
        return false;
    };
    let over_column = |a: &AggregateCall| {
        matches!(a.arg, Some(Expr::Column { index, .. }) if index == column)
    };
    let func = match aggregates.first() {
        Some(first) if matches!(first.func, AggregateFunc::Min | AggregateFunc::Max) => first.func,
        _ => return false,
    };
    if !aggregates.iter().all(|a| a.func == func && over_column(a)) {
        return false;
    }
    *descending = (func == AggregateFunc::Max) != table.key_column_descending(prefix.len());
    true
}

/// Names an output column the way PostgreSQL does.
fn output_name(expr: &ast::Expr) -> String {
    match expr {
        ast::Expr::Identifier(id) => ident(id),
        ast::Expr::CompoundIdentifier(parts) => parts.last().map(ident).unwrap_or_default(),
        ast::Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(ident)
            .unwrap_or_default(),
        ast::Expr::Nested(inner) | ast::Expr::Cast { expr: inner, .. } => output_name(inner),
        ast::Expr::Case { .. } => "case".to_owned(),
        _ => "?column?".to_owned(),
    }
}

impl<'c> Planner<'c> {
    fn err(&mut self, error: PlanError) {
        self.binder.errors.push(error);
    }

    fn statement(&mut self, statement: &Statement) -> Option<Planned> {
        match statement {
            Statement::Query(query) => self.query(query),
            Statement::Insert(insert) => self.insert(insert),
            Statement::Update(update) => self.update(update),
            Statement::Delete(delete) => self.delete(delete),
            other => {
                let kind = statement_kind(other);
                let (kind, hint) = if matches!(
                    other,
                    Statement::CreateTable(_) | Statement::CreateIndex(_) | Statement::Drop { .. }
                ) {
                    (
                        format!("{kind} in a prepared statement"),
                        "DDL is applied to the catalog",
                    )
                } else {
                    (
                        kind,
                        "prepared statements are SELECT, INSERT, UPDATE or DELETE",
                    )
                };
                self.err(unsupported_hint(kind, hint, at(other)));
                None
            }
        }
    }

    fn table(&mut self, name: &ast::ObjectName) -> Option<&'c Table> {
        let mut errors = Vec::new();
        let found = single_name(name, &mut errors);
        self.binder.errors.extend(errors);
        let (name, pos) = found?;
        match self.binder.catalog.table(&name) {
            Some(t) => {
                self.names.insert(t.id, t.name.clone());
                Some(t)
            }
            None => {
                self.err(PlanError::UnknownTable {
                    table: name,
                    at: pos,
                });
                None
            }
        }
    }

    /// Resolves a FROM item to a table and the alias it is known by.
    fn table_factor(&mut self, factor: &TableFactor) -> Option<(&'c Table, String)> {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args: None,
                with_hints,
                version: None,
                with_ordinality: false,
                partitions,
                json_path: None,
                sample: None,
                index_hints,
            } if with_hints.is_empty() && partitions.is_empty() && index_hints.is_empty() => {
                let table = self.table(name)?;
                let alias = match alias {
                    Some(a) if a.columns.is_empty() => ident(&a.name),
                    Some(a) => {
                        self.err(unsupported("column aliases on a table", at_ident(&a.name)));
                        return None;
                    }
                    None => table.name.clone(),
                };
                Some((table, alias))
            }
            TableFactor::Derived { .. } => {
                self.err(unsupported("a subquery in FROM", at(factor)));
                None
            }
            other => {
                self.err(unsupported(format!("the FROM item {other}"), at(other)));
                None
            }
        }
    }

    fn query(&mut self, query: &ast::Query) -> Option<Planned> {
        if let Some(with) = &query.with {
            self.err(unsupported("WITH (a common table expression)", at(with)));
            return None;
        }
        if query.fetch.is_some()
            || !query.locks.is_empty()
            || query.for_clause.is_some()
            || query.settings.is_some()
            || query.format_clause.is_some()
            || !query.pipe_operators.is_empty()
        {
            self.err(unsupported(
                "FETCH, FOR UPDATE/SHARE, FOR, SETTINGS, FORMAT or pipe operators",
                at(query),
            ));
            return None;
        }
        let select = match &*query.body {
            SetExpr::Select(select) => select,
            SetExpr::SetOperation { op, .. } => {
                self.err(unsupported(format!("{op}"), at(&*query.body)));
                return None;
            }
            SetExpr::Values(_) => {
                self.err(unsupported("VALUES as a query", at(&*query.body)));
                return None;
            }
            other => {
                self.err(unsupported("this kind of query", at(other)));
                return None;
            }
        };
        let pos = at_span(select.select_token.0.span);
        let distinct = match &select.distinct {
            None | Some(ast::Distinct::All) => false,
            Some(ast::Distinct::Distinct) => true,
            Some(ast::Distinct::On(_)) => {
                self.err(unsupported("DISTINCT ON", pos));
                return None;
            }
        };
        if select.top.is_some()
            || select.into.is_some()
            || !select.lateral_views.is_empty()
            || select.prewhere.is_some()
            || !select.connect_by.is_empty()
            || !select.cluster_by.is_empty()
            || !select.distribute_by.is_empty()
            || !select.sort_by.is_empty()
            || !select.named_window.is_empty()
            || select.qualify.is_some()
            || select.value_table_mode.is_some()
            || select.exclude.is_some()
            || select.select_modifiers.is_some()
            || !select.optimizer_hints.is_empty()
            || select.flavor != SelectFlavor::Standard
        {
            self.err(unsupported(
                "a dialect-specific SELECT clause (TOP, INTO, WINDOW, QUALIFY, ...)",
                pos,
            ));
            return None;
        }
        if select.projection.is_empty() {
            self.err(invalid("SELECT lists no columns", pos));
            return None;
        }
        // FROM: a left-deep chain of inner joins.
        if select.from.is_empty() {
            self.err(unsupported("SELECT without FROM", pos));
            return None;
        }
        let mut scope = Scope::default();
        let mut ons: Vec<(usize, &ast::Expr)> = Vec::new();
        let mut ok = true;
        let add = |this: &mut Self, factor: &TableFactor, scope: &mut Scope<'c>| -> bool {
            let Some((table, alias)) = this.table_factor(factor) else {
                return false;
            };
            if scope.tables.iter().any(|t| t.alias == alias) {
                this.err(invalid(
                    format!("table name {alias} is specified more than once; give each an alias"),
                    at(factor),
                ));
                return false;
            }
            scope.push(alias, table);
            true
        };
        for TableWithJoins { relation, joins } in &select.from {
            ok &= add(self, relation, &mut scope);
            for join in joins {
                let on = match &join.join_operator {
                    JoinOperator::Join(c) | JoinOperator::Inner(c) => match c {
                        JoinConstraint::On(e) => Some(e),
                        JoinConstraint::None => None,
                        _ => {
                            self.err(unsupported_hint(
                                "JOIN ... USING or NATURAL JOIN",
                                "write ON a.x = b.y",
                                at(&join.relation),
                            ));
                            ok = false;
                            None
                        }
                    },
                    JoinOperator::CrossJoin(JoinConstraint::None) => None,
                    other => {
                        let name = match other {
                            JoinOperator::Left(_) | JoinOperator::LeftOuter(_) => "LEFT JOIN",
                            JoinOperator::Right(_) | JoinOperator::RightOuter(_) => "RIGHT JOIN",
                            JoinOperator::FullOuter(_) => "FULL JOIN",
                            JoinOperator::CrossJoin(_) => "CROSS JOIN with a condition",
                            JoinOperator::Semi(_)
                            | JoinOperator::LeftSemi(_)
                            | JoinOperator::RightSemi(_) => "SEMI JOIN",
                            JoinOperator::Anti(_)
                            | JoinOperator::LeftAnti(_)
                            | JoinOperator::RightAnti(_) => "ANTI JOIN",
                            JoinOperator::CrossApply | JoinOperator::OuterApply => "APPLY",
                            _ => "this kind of join",
                        };
                        self.err(unsupported_hint(
                            name,
                            "only inner joins are supported",
                            at(&join.relation),
                        ));
                        ok = false;
                        None
                    }
                };
                ok &= add(self, &join.relation, &mut scope);
                if let Some(on) = on {
                    ons.push((scope.tables.len(), on));
                }
            }
        }
        if !ok {
            return None;
        }
        if scope.tables.len() > JOIN_TABLES_MAX {
            self.err(PlanError::LimitExceeded {
                what: format!("a join of {} tables", scope.tables.len()),
                limit: JOIN_TABLES_MAX,
            });
            return None;
        }
        let mut conds = Vec::new();
        for (visible, on) in ons {
            let partial = Scope {
                tables: scope.tables[..visible].to_vec(),
            };
            if contains_aggregate(on) {
                self.err(invalid(
                    "aggregate functions are not allowed in JOIN conditions",
                    at(on),
                ));
            } else if let Some(e) = self.binder.condition(on, &partial, "ON") {
                conjuncts(e, &mut conds);
            }
        }
        if let Some(selection) = &select.selection {
            if contains_aggregate(selection) {
                self.err(invalid(
                    "aggregate functions are not allowed in WHERE (use HAVING)",
                    at(selection),
                ));
            } else if let Some(e) = self.binder.condition(selection, &scope, "WHERE") {
                conjuncts(e, &mut conds);
            }
        }
        let partition = partition_of(&scope, &conds);
        let reads: BTreeSet<TableId> = scope.tables.iter().map(|t| t.table.id).collect();
        let mut plan = self.scan_chain(&scope, conds)?;

        // Aggregation.
        let group_asts: Vec<&ast::Expr> = match &select.group_by {
            GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => {
                exprs.iter().collect()
            }
            _ => {
                self.err(unsupported(
                    "GROUP BY ALL, ROLLUP, CUBE or GROUPING SETS",
                    pos,
                ));
                return None;
            }
        };
        let order_asts: Vec<&ast::OrderByExpr> = match query.order_by.as_ref().map(|o| &o.kind) {
            None => Vec::new(),
            Some(OrderByKind::Expressions(list)) => list.iter().collect(),
            Some(OrderByKind::All(_)) => {
                self.err(unsupported("ORDER BY ALL", at(query.order_by.as_ref()?)));
                return None;
            }
        };
        let aggregating = !group_asts.is_empty()
            || select.having.is_some()
            || select.projection.iter().any(|item| match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    contains_aggregate(e)
                }
                _ => false,
            })
            || order_asts.iter().any(|o| contains_aggregate(&o.expr));
        if aggregating {
            let mut grouping = Grouping::default();
            for g in &group_asts {
                let g_ast = self
                    .positional(g, &select.projection, &scope, "GROUP BY")
                    .unwrap_or(g);
                if contains_aggregate(g_ast) {
                    self.err(invalid(
                        "aggregate functions are not allowed in GROUP BY",
                        at(g_ast),
                    ));
                    continue;
                }
                if let Some(e) = self.binder.value(g_ast, &scope, "GROUP BY") {
                    let label = match &e {
                        Expr::Column { name, .. } => name.clone(),
                        other => strip_indexes(&other.to_string()),
                    };
                    grouping.groups.push((e, label));
                }
            }
            self.binder.grouping = Some(grouping);
        }
        // Projection.
        let mut outputs: Vec<(String, Expr)> = Vec::new();
        for item in &select.projection {
            match item {
                SelectItem::UnnamedExpr(e) => {
                    if let Some(b) = self.binder.value(e, &scope, "the select list") {
                        outputs.push((output_name(e), b));
                    }
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    if let Some(b) = self.binder.value(expr, &scope, "the select list") {
                        outputs.push((ident(alias), b));
                    }
                }
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) if aggregating => {
                    self.err(unsupported(
                        "* together with GROUP BY or aggregates",
                        at(item),
                    ));
                }
                SelectItem::Wildcard(_) => outputs.extend(scope.all_columns()),
                SelectItem::QualifiedWildcard(kind, _) => {
                    let alias = match kind {
                        ast::SelectItemQualifiedWildcardKind::ObjectName(name) => {
                            name.to_string().to_lowercase()
                        }
                        ast::SelectItemQualifiedWildcardKind::Expr(e) => e.to_string(),
                    };
                    match scope.tables.iter().position(|t| t.alias == alias) {
                        Some(i) => {
                            let all = scope.all_columns();
                            let t = &scope.tables[i];
                            outputs.extend(
                                all[t.offset..t.offset + t.table.columns.len()]
                                    .iter()
                                    .cloned(),
                            );
                        }
                        None => self.err(PlanError::UnknownTable {
                            table: alias,
                            at: at(item),
                        }),
                    }
                }
                other => self.err(unsupported("this select item", at(other))),
            }
        }
        let having = match &select.having {
            Some(h) => self.binder.condition(h, &scope, "HAVING"),
            None => None,
        };
        // ORDER BY: output names and positions first, then expressions.
        let mut keys = Vec::new();
        for o in order_asts {
            if o.with_fill.is_some() {
                self.err(unsupported("WITH FILL", at(&o.expr)));
                continue;
            }
            let expr = if let Some(value) = syntax::constant(&o.expr) {
                match value {
                    Value::Int(n) if n >= 1 && (n as usize) <= outputs.len() => {
                        Some(outputs[n as usize - 1].1.clone())
                    }
                    _ => {
                        self.err(invalid(
                            format!(
                                "ORDER BY position {} is not in the select list (1..{})",
                                o.expr,
                                outputs.len()
                            ),
                            at(&o.expr),
                        ));
                        None
                    }
                }
            } else if let ast::Expr::Identifier(id) = &o.expr
                && let [(_, e)] = outputs
                    .iter()
                    .filter(|(n, _)| *n == ident(id))
                    .collect::<Vec<_>>()
                    .as_slice()
            {
                Some(e.clone())
            } else {
                self.binder.value(&o.expr, &scope, "ORDER BY")
            };
            if let Some(expr) = expr {
                if distinct && !outputs.iter().any(|(_, e)| *e == expr) {
                    self.err(invalid(
                        "for SELECT DISTINCT, ORDER BY expressions must appear in the select list",
                        at(&o.expr),
                    ));
                    continue;
                }
                let descending = o.options.asc == Some(false);
                keys.push(SortKey {
                    expr,
                    descending,
                    nulls_first: o.options.nulls_first.unwrap_or(descending),
                });
            }
        }
        if let Some(grouping) = self.binder.grouping.take() {
            if grouping.groups.is_empty()
                && scope.tables.len() == 1
                && partition != PartitionKey::MultiPartition
                && min_max_by_access(&mut plan, scope.tables[0].table, &grouping.aggregates)
            {
                plan = Plan::Limit {
                    input: Box::new(plan),
                    limit: Some(Expr::Literal {
                        value: Value::Int(1),
                        ty: DataType::BigInt,
                    }),
                    offset: None,
                };
            }
            plan = Plan::Aggregate {
                input: Box::new(plan),
                group_by: grouping.groups.into_iter().map(|(e, _)| e).collect(),
                aggregates: grouping.aggregates,
            };
            if let Some(h) = having {
                plan = Plan::Filter {
                    input: Box::new(plan),
                    predicate: h,
                };
            }
        }
        // A key range (or a full scan, which becomes one) on several partitions comes in key
        // order too: the executor merges the partitions' ranges by key (and a LIMIT above
        // reads at most its rows from each).
        let sorted = scope.tables.len() == 1
            && (partition != PartitionKey::MultiPartition
                || matches!(
                    scan_access(&mut plan),
                    Some(Access::KeyRange { .. } | Access::FullScan)
                ))
            && sorted_by_access(&mut plan, scope.tables[0].table, &keys);
        if !keys.is_empty() && !sorted {
            plan = Plan::Sort {
                input: Box::new(plan),
                keys,
            };
        }
        // DISTINCT works on output rows, so it projects first; LIMIT counts distinct rows.
        let names: Vec<String> = outputs.iter().map(|(n, _)| n.clone()).collect();
        let mut outputs = Some(outputs);
        if distinct {
            let exprs = outputs
                .take()
                .into_iter()
                .flatten()
                .map(|(_, e)| e)
                .collect();
            plan = Plan::Distinct {
                input: Box::new(Plan::Project {
                    input: Box::new(plan),
                    exprs,
                }),
            };
        }
        match &query.limit_clause {
            None => {}
            Some(LimitClause::LimitOffset {
                limit,
                offset,
                limit_by,
            }) if limit_by.is_empty() => {
                let limit = limit.as_ref().and_then(|l| {
                    if syntax::constant(l) == Some(Value::Null) {
                        None
                    } else {
                        Some(l)
                    }
                });
                let limit = limit.map(|l| self.binder.count(l, "LIMIT"));
                let offset = offset
                    .as_ref()
                    .map(|o| self.binder.count(&o.value, "OFFSET"));
                if limit.as_ref().is_some_and(Option::is_none)
                    || offset.as_ref().is_some_and(Option::is_none)
                {
                    return None;
                }
                plan = Plan::Limit {
                    input: Box::new(plan),
                    limit: limit.flatten(),
                    offset: offset.flatten(),
                };
            }
            Some(other) => {
                self.err(unsupported_hint(
                    "LIMIT BY or LIMIT offset, count",
                    "write LIMIT n OFFSET m",
                    at(other),
                ));
                return None;
            }
        }
        if let Some(outputs) = outputs {
            plan = Plan::Project {
                input: Box::new(plan),
                exprs: outputs.into_iter().map(|(_, e)| e).collect(),
            };
        }
        Some(Planned {
            kind: StatementKind::Select,
            names,
            plan,
            reads,
            writes: BTreeSet::new(),
            partition,
        })
    }

    /// Resolves `GROUP BY 2` or `GROUP BY alias` to the select-list expression. As in
    /// PostgreSQL, a name that is an input column means the column, not an alias.
    fn positional<'a>(
        &mut self,
        g: &'a ast::Expr,
        projection: &'a [SelectItem],
        scope: &Scope<'c>,
        what: &str,
    ) -> Option<&'a ast::Expr> {
        let expr_of = |item: &'a SelectItem| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
            _ => None,
        };
        if let Some(value) = syntax::constant(g) {
            return match value {
                Value::Int(n) if n >= 1 && (n as usize) <= projection.len() => {
                    expr_of(&projection[n as usize - 1])
                }
                _ => {
                    self.err(invalid(
                        format!("{what} position {g} is not in the select list"),
                        at(g),
                    ));
                    None
                }
            };
        }
        if let ast::Expr::Identifier(id) = g
            && !scope
                .tables
                .iter()
                .any(|t| t.table.column_index(&ident(id)).is_some())
        {
            return projection.iter().find_map(|item| match item {
                SelectItem::ExprWithAlias { expr, alias } if ident(alias) == ident(id) => {
                    Some(expr)
                }
                _ => None,
            });
        }
        None
    }

    /// Builds scans and joins for the tables of `scope`, placing each condition at the
    /// first table where all its columns are available.
    fn scan_chain(&mut self, scope: &Scope<'c>, conds: Vec<Expr>) -> Option<Plan> {
        let level_of = |e: &Expr| match max_column(e) {
            None => 0,
            Some(m) => scope
                .tables
                .iter()
                .rposition(|t| t.offset <= m)
                .unwrap_or(0),
        };
        let mut by_level: Vec<Vec<Expr>> = vec![Vec::new(); scope.tables.len()];
        for c in conds {
            let l = level_of(&c);
            by_level[l].push(c);
        }
        let mut plan: Option<Plan> = None;
        for (level, t) in scope.tables.iter().enumerate() {
            let conds = std::mem::take(&mut by_level[level]);
            let (access, consumed) = choose_access(t.table, t.offset, &conds);
            let residual: Vec<Expr> = conds
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !consumed.contains(i))
                .map(|(_, c)| c)
                .collect();
            let node = match plan.take() {
                None => Plan::Scan {
                    table: t.table.id,
                    table_name: t.alias.clone(),
                    access,
                },
                Some(outer) => Plan::Join {
                    outer: Box::new(outer),
                    table: t.table.id,
                    table_name: t.alias.clone(),
                    access,
                },
            };
            plan = Some(match and_all(residual) {
                Some(predicate) => Plan::Filter {
                    input: Box::new(node),
                    predicate,
                },
                None => node,
            });
        }
        if plan.is_none() {
            self.err(PlanError::Internal("a scan chain over no table".to_owned()));
        }
        plan
    }

    fn returning(
        &mut self,
        items: &Option<Vec<SelectItem>>,
        scope: &Scope<'c>,
    ) -> (Option<Vec<Expr>>, Vec<String>) {
        let Some(items) = items else {
            return (None, Vec::new());
        };
        let mut exprs = Vec::new();
        let mut columns = Vec::new();
        for item in items {
            let (name, expr) = match item {
                SelectItem::UnnamedExpr(e) => {
                    (output_name(e), self.binder.value(e, scope, "RETURNING"))
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    (ident(alias), self.binder.value(expr, scope, "RETURNING"))
                }
                SelectItem::Wildcard(_) => {
                    for (n, e) in scope.all_columns() {
                        columns.push(n);
                        exprs.push(e);
                    }
                    continue;
                }
                other => {
                    self.err(unsupported("this RETURNING item", at(other)));
                    continue;
                }
            };
            if let Some(expr) = expr {
                if contains_aggregate_expr(item) {
                    self.err(invalid(
                        "aggregate functions are not allowed in RETURNING",
                        at(item),
                    ));
                    continue;
                }
                columns.push(name);
                exprs.push(expr);
            }
        }
        (Some(exprs), columns)
    }

    /// Binds `SET col = expr, ...` over `scope`; primary-key columns may not change.
    fn assignments(
        &mut self,
        table: &'c Table,
        list: &[ast::Assignment],
        scope: &Scope<'c>,
    ) -> Vec<(usize, Expr)> {
        let mut out: Vec<(usize, Expr)> = Vec::new();
        for a in list {
            let name = match &a.target {
                AssignmentTarget::ColumnName(name) => {
                    let mut errors = Vec::new();
                    let target = scope
                        .tables
                        .first()
                        .map(|t| t.alias.as_str())
                        .unwrap_or_default();
                    let n = match name.0.as_slice() {
                        [ast::ObjectNamePart::Identifier(id)] => Some((ident(id), at_ident(id))),
                        [
                            ast::ObjectNamePart::Identifier(q),
                            ast::ObjectNamePart::Identifier(id),
                        ] if ident(q) == target => Some((ident(id), at_ident(id))),
                        [
                            ast::ObjectNamePart::Identifier(q),
                            ast::ObjectNamePart::Identifier(_),
                        ] => {
                            errors.push(invalid(
                                format!(
                                    "SET may only name columns of {target}, not of {}",
                                    ident(q)
                                ),
                                at_ident(q),
                            ));
                            None
                        }
                        _ => single_name(name, &mut errors),
                    };
                    self.binder.errors.extend(errors);
                    n
                }
                AssignmentTarget::Tuple(_) => {
                    self.err(unsupported("assigning a tuple of columns", at(&a.target)));
                    None
                }
            };
            let Some((name, pos)) = name else { continue };
            let Some(i) = table.column_index(&name) else {
                self.err(PlanError::UnknownColumn {
                    table: table.name.clone(),
                    column: name,
                    at: pos,
                });
                continue;
            };
            if table.primary_key.contains(&i) {
                self.err(invalid(format!("cannot update primary-key column {name} of {}; DELETE the row and INSERT a new one", table.name), pos));
                continue;
            }
            if out.iter().any(|(c, _)| *c == i) {
                self.err(PlanError::DuplicateColumn {
                    table: table.name.clone(),
                    column: name,
                    place: "SET",
                    at: pos,
                });
                continue;
            }
            let column = &table.columns[i];
            if !column.nullable && syntax::constant(&a.value) == Some(Value::Null) {
                self.err(invalid(
                    format!("column {name} of {} is NOT NULL", table.name),
                    at(&a.value),
                ));
                continue;
            }
            if let Some(e) =
                self.binder
                    .typed(&a.value, scope, column.data_type, &format!("column {name}"))
            {
                out.push((i, e));
            }
        }
        out
    }

    fn insert(&mut self, insert: &ast::Insert) -> Option<Planned> {
        let TableObject::TableName(name) = &insert.table else {
            self.err(unsupported("INSERT into a table function", at(insert)));
            return None;
        };
        if insert.or.is_some()
            || insert.ignore
            || insert.overwrite
            || insert.partitioned.is_some()
            || !insert.after_columns.is_empty()
            || insert.replace_into
            || insert.priority.is_some()
            || insert.insert_alias.is_some()
            || insert.settings.is_some()
            || insert.format_clause.is_some()
            || insert.table_alias.is_some()
            || insert.output.is_some()
            || !insert.assignments.is_empty()
            || insert.multi_table_insert_type.is_some()
            || !insert.optimizer_hints.is_empty()
        {
            self.err(unsupported(
                "a dialect-specific INSERT clause (OR, IGNORE, OVERWRITE, alias, SET, ...)",
                at(name),
            ));
            return None;
        }
        let table = self.table(name)?;
        // Columns named by the INSERT.
        let mut targets: Vec<usize> = Vec::new();
        let errors_before = self.binder.errors.len();
        if insert.columns.is_empty() {
            targets = (0..table.columns.len()).collect();
        }
        for c in &insert.columns {
            let mut errors = Vec::new();
            let found = single_name(c, &mut errors);
            self.binder.errors.extend(errors);
            let Some((column, pos)) = found else { continue };
            match table.column_index(&column) {
                None => self.err(PlanError::UnknownColumn {
                    table: table.name.clone(),
                    column,
                    at: pos,
                }),
                Some(i) if targets.contains(&i) => self.err(PlanError::DuplicateColumn {
                    table: table.name.clone(),
                    column,
                    place: "the INSERT column list",
                    at: pos,
                }),
                Some(i) => targets.push(i),
            }
        }
        for (i, column) in table.columns.iter().enumerate() {
            if !targets.contains(&i) && !column.nullable && column.default.is_none() {
                self.err(invalid(format!("column {} of {} is NOT NULL and has no DEFAULT, so the INSERT must give it", column.name, table.name), at(name)));
            }
        }
        let Some(source) = &insert.source else {
            self.err(unsupported("INSERT without VALUES", at(name)));
            return None;
        };
        let SetExpr::Values(values) = &*source.body else {
            self.err(unsupported_hint(
                "INSERT ... SELECT",
                "list the rows with VALUES",
                at(&*source.body),
            ));
            return None;
        };
        if values.rows.len() > INSERT_ROWS_MAX {
            self.err(PlanError::LimitExceeded {
                what: format!("an INSERT of {} rows", values.rows.len()),
                limit: INSERT_ROWS_MAX,
            });
            return None;
        }
        if self.binder.errors.len() > errors_before {
            // The column list is wrong; checking rows against it would only mislead.
            return None;
        }
        let empty = Scope::default();
        let mut rows = Vec::new();
        for row in &values.rows {
            let row_at = at_span(row.opening_token.0.span);
            if row.content.len() != targets.len() {
                self.err(invalid(
                    format!(
                        "INSERT has {} target columns but a row of {} values",
                        targets.len(),
                        row.content.len()
                    ),
                    row_at,
                ));
                continue;
            }
            let mut full: Vec<Option<Expr>> = table
                .columns
                .iter()
                .map(|c| {
                    Some(
                        c.default
                            .clone()
                            .and_then(|d| Binder::literal_of(d, c.data_type))
                            .unwrap_or(Expr::Literal {
                                value: Value::Null,
                                ty: c.data_type,
                            }),
                    )
                })
                .collect();
            for (&i, value) in targets.iter().zip(&row.content) {
                let column = &table.columns[i];
                if !column.nullable && syntax::constant(value) == Some(Value::Null) {
                    self.err(invalid(
                        format!("column {} of {} is NOT NULL", column.name, table.name),
                        at(value),
                    ));
                    full[i] = None;
                    continue;
                }
                full[i] = self.binder.typed(
                    value,
                    &empty,
                    column.data_type,
                    &format!("column {}", column.name),
                );
            }
            rows.push(full.into_iter().collect::<Option<Vec<Expr>>>());
        }
        let rows: Vec<Vec<Expr>> = rows.into_iter().collect::<Option<_>>()?;
        // The partition: every row must name the same one.
        let keys: Vec<PartitionKey> = rows
            .iter()
            .map(|row| match &row[table.partition_column] {
                Expr::Param { index, .. } => PartitionKey::Param(*index),
                Expr::Literal { value, .. } if !value.is_null() => {
                    PartitionKey::Constant(value.clone())
                }
                _ => PartitionKey::MultiPartition,
            })
            .collect();
        let partition = match keys.split_first() {
            Some((first, rest)) if rest.iter().all(|k| k == first) => first.clone(),
            _ => PartitionKey::MultiPartition,
        };
        let mut scope = Scope::default();
        scope.push(table.name.clone(), table);
        let mut reads = BTreeSet::new();
        let on_conflict = match &insert.on {
            None => OnConflict::Error,
            Some(OnInsert::OnConflict(c)) => {
                match &c.conflict_target {
                    None => {}
                    Some(ConflictTarget::Columns(cols)) => {
                        let named: BTreeSet<Option<usize>> =
                            cols.iter().map(|c| table.column_index(&ident(c))).collect();
                        let key: BTreeSet<Option<usize>> =
                            table.primary_key.iter().map(|c| Some(*c)).collect();
                        if named != key {
                            self.err(unsupported(
                                format!(
                                    "ON CONFLICT on columns other than the primary key of {}",
                                    table.name
                                ),
                                at(c),
                            ));
                        }
                    }
                    Some(ConflictTarget::OnConstraint(_)) => {
                        self.err(unsupported("ON CONFLICT ON CONSTRAINT", at(c)))
                    }
                }
                reads.insert(table.id);
                match &c.action {
                    OnConflictAction::DoNothing => OnConflict::DoNothing {
                        any_constraint: c.conflict_target.is_none(),
                    },
                    OnConflictAction::DoUpdate(update) => {
                        if c.conflict_target.is_none() {
                            self.err(invalid("ON CONFLICT DO UPDATE needs a conflict target: ON CONFLICT (primary key columns)", at(c)));
                        }
                        let mut both = scope.clone();
                        both.push("excluded".to_owned(), table);
                        let assignments = self.assignments(table, &update.assignments, &both);
                        let filter = update
                            .selection
                            .as_ref()
                            .and_then(|s| self.binder.condition(s, &both, "ON CONFLICT ... WHERE"));
                        OnConflict::DoUpdate {
                            assignments,
                            filter,
                        }
                    }
                }
            }
            Some(other) => {
                self.err(unsupported_hint(
                    "ON DUPLICATE KEY UPDATE",
                    "write ON CONFLICT (...) DO UPDATE",
                    at(other),
                ));
                return None;
            }
        };
        let (returning, columns) = self.returning(&insert.returning, &scope);
        let plan = Plan::Insert {
            table: table.id,
            table_name: table.name.clone(),
            rows,
            on_conflict,
            returning,
        };
        Some(Planned {
            kind: StatementKind::Insert,
            names: columns,
            plan,
            reads,
            writes: BTreeSet::from([table.id]),
            partition,
        })
    }

    /// Plans the rows an UPDATE or DELETE touches.
    fn target_rows(
        &mut self,
        from: &TableWithJoins,
        selection: &Option<ast::Expr>,
    ) -> Option<(&'c Table, Scope<'c>, Plan, PartitionKey)> {
        if !from.joins.is_empty() {
            self.err(unsupported(
                "a join in UPDATE or DELETE",
                at(&from.joins[0].relation),
            ));
            return None;
        }
        let (table, alias) = self.table_factor(&from.relation)?;
        let mut scope = Scope::default();
        scope.push(alias, table);
        let mut conds = Vec::new();
        if let Some(s) = selection {
            if contains_aggregate(s) {
                self.err(invalid(
                    "aggregate functions are not allowed in WHERE",
                    at(s),
                ));
            } else if let Some(e) = self.binder.condition(s, &scope, "WHERE") {
                conjuncts(e, &mut conds);
            }
        }
        let partition = partition_of(&scope, &conds);
        let plan = self.scan_chain(&scope, conds)?;
        Some((table, scope, plan, partition))
    }

    fn update(&mut self, update: &ast::Update) -> Option<Planned> {
        if update.from.is_some()
            || update.or.is_some()
            || !update.order_by.is_empty()
            || update.limit.is_some()
            || update.output.is_some()
            || !update.optimizer_hints.is_empty()
        {
            self.err(unsupported(
                "UPDATE with FROM, OR, ORDER BY, LIMIT or OUTPUT",
                at_span(update.update_token.0.span),
            ));
            return None;
        }
        let (table, scope, input, partition) =
            self.target_rows(&update.table, &update.selection)?;
        let assignments = self.assignments(table, &update.assignments, &scope);
        let (returning, columns) = self.returning(&update.returning, &scope);
        let plan = Plan::Update {
            input: Box::new(input),
            table: table.id,
            table_name: table.name.clone(),
            assignments,
            returning,
        };
        Some(Planned {
            kind: StatementKind::Update,
            names: columns,
            plan,
            reads: BTreeSet::from([table.id]),
            writes: BTreeSet::from([table.id]),
            partition,
        })
    }

    fn delete(&mut self, delete: &ast::Delete) -> Option<Planned> {
        let pos = at_span(delete.delete_token.0.span);
        let from = match &delete.from {
            FromTable::WithFromKeyword(from) | FromTable::WithoutKeyword(from) => from,
        };
        if !delete.tables.is_empty()
            || delete.using.is_some()
            || !delete.order_by.is_empty()
            || delete.limit.is_some()
            || delete.output.is_some()
            || from.len() != 1
        {
            self.err(unsupported(
                "DELETE of several tables, or with USING, ORDER BY, LIMIT or OUTPUT",
                pos,
            ));
            return None;
        }
        let (table, scope, input, partition) = self.target_rows(&from[0], &delete.selection)?;
        let (returning, columns) = self.returning(&delete.returning, &scope);
        let plan = Plan::Delete {
            input: Box::new(input),
            table: table.id,
            table_name: table.name.clone(),
            returning,
        };
        Some(Planned {
            kind: StatementKind::Delete,
            names: columns,
            plan,
            reads: BTreeSet::from([table.id]),
            writes: BTreeSet::from([table.id]),
            partition,
        })
    }
}

fn contains_aggregate_expr(item: &SelectItem) -> bool {
    match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
            contains_aggregate(e)
        }
        _ => false,
    }
}
