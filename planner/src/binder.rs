//! Binding: resolves names in sqlparser expressions against a scope of tables, infers
//! parameter types, type-checks, and produces [`Expr`] trees.
//!
//! Errors are collected, not returned at the first one, so a user sees every unknown
//! column of a statement at once. A binding function returns `None` when it recorded an
//! error for the expression.

use std::ops::ControlFlow;

use sqlparser::ast::{
    self, BinaryOperator, CastKind, DuplicateTreatment, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, UnaryOperator, Value as Lit,
};

use crate::catalog::{Catalog, Table, coerce_constant};
use crate::error::{PlanError, Position};
use crate::expr::{AggregateCall, AggregateFunc, BinaryOp, Expr, ScalarFunc, castable};
use crate::syntax::{at, at_ident, constant, ident, invalid, unsupported, unsupported_hint};
use crate::value::{DataType, Value};

/// Most parameters one statement may use.
pub const PARAMS_MAX: usize = 100;

/// A table visible to expressions, and where its columns start in the row.
#[derive(Debug, Clone)]
pub(crate) struct ScopeTable<'c> {
    /// The name expressions qualify columns with (alias or table name).
    pub(crate) alias: String,
    pub(crate) table: &'c Table,
    /// Index of the table's first column in the combined row.
    pub(crate) offset: usize,
}

/// The tables whose columns an expression may reference.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope<'c> {
    pub(crate) tables: Vec<ScopeTable<'c>>,
}

impl<'c> Scope<'c> {
    pub(crate) fn push(&mut self, alias: String, table: &'c Table) {
        let offset = self.width();
        self.tables.push(ScopeTable {
            alias,
            table,
            offset,
        });
    }

    pub(crate) fn width(&self) -> usize {
        self.tables
            .last()
            .map_or(0, |t| t.offset + t.table.columns.len())
    }

    fn column(&self, t: &ScopeTable<'c>, i: usize) -> Expr {
        let column = &t.table.columns[i];
        let name = if self.tables.len() > 1 {
            format!("{}.{}", t.alias, column.name)
        } else {
            column.name.clone()
        };
        Expr::Column {
            index: t.offset + i,
            name,
            ty: column.data_type,
        }
    }

    /// Returns every column of the scope, in row order.
    pub(crate) fn all_columns(&self) -> Vec<(String, Expr)> {
        let mut out = Vec::new();
        for t in &self.tables {
            for (i, c) in t.table.columns.iter().enumerate() {
                out.push((c.name.clone(), self.column(t, i)));
            }
        }
        out
    }
}

/// An expression and its type; `None` while the type is unknown (a bare parameter or NULL
/// whose type will come from its context).
pub(crate) type Bound = (Expr, Option<DataType>);

/// Aggregation in progress: expressions are bound over the aggregate's output row
/// (group keys, then aggregates).
#[derive(Debug, Default)]
pub(crate) struct Grouping {
    /// GROUP BY expressions over the input row, with their output names.
    pub(crate) groups: Vec<(Expr, String)>,
    /// Aggregates found so far.
    pub(crate) aggregates: Vec<AggregateCall>,
}

/// Binds expressions; owns the parameter table and the findings of one statement.
#[derive(Debug)]
pub(crate) struct Binder<'c> {
    pub(crate) catalog: &'c Catalog,
    /// Inferred type of each parameter and where it was first used.
    params: Vec<Option<(Option<DataType>, Position)>>,
    pub(crate) errors: Vec<PlanError>,
    /// Set while binding over an aggregate's output.
    pub(crate) grouping: Option<Grouping>,
}

fn is_aggregate_name(name: &str) -> bool {
    matches!(name, "count" | "sum" | "min" | "max" | "avg")
}

fn function_name(f: &ast::Function) -> String {
    f.name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(ident)
        .unwrap_or_default()
}

/// Tells whether an expression contains an aggregate call.
pub(crate) fn contains_aggregate(expr: &ast::Expr) -> bool {
    ast::visit_expressions(expr, |e| match e {
        ast::Expr::Function(f) if is_aggregate_name(&function_name(f)) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// Calls `f` on each direct child.
pub(crate) fn children_mut(expr: &mut Expr, f: &mut impl FnMut(&mut Expr)) {
    match expr {
        Expr::Column { .. } | Expr::Param { .. } | Expr::Literal { .. } => {}
        Expr::Not(e)
        | Expr::Negate(e)
        | Expr::IsNull { expr: e, .. }
        | Expr::Cast { expr: e, .. }
        | Expr::Call { arg: e, .. } => f(e),
        Expr::Binary { left, right, .. }
        | Expr::Like {
            expr: left,
            pattern: right,
            ..
        } => {
            f(left);
            f(right);
        }
        Expr::InList { expr, list, .. } => {
            f(expr);
            list.iter_mut().for_each(f);
        }
        Expr::Between {
            expr, low, high, ..
        } => {
            f(expr);
            f(low);
            f(high);
        }
        Expr::Case {
            operand,
            branches,
            otherwise,
            ..
        } => {
            if let Some(e) = operand {
                f(e);
            }
            for (w, t) in branches {
                f(w);
                f(t);
            }
            if let Some(e) = otherwise {
                f(e);
            }
        }
        Expr::Coalesce { args, .. } => args.iter_mut().for_each(f),
    }
}

impl<'c> Binder<'c> {
    pub(crate) fn new(catalog: &'c Catalog) -> Binder<'c> {
        Binder {
            catalog,
            params: Vec::new(),
            errors: Vec::new(),
            grouping: None,
        }
    }

    /// Returns the parameter types, recording an error for each gap or untyped parameter.
    pub(crate) fn finish_params(&mut self) -> Vec<DataType> {
        let mut out = Vec::new();
        for (i, slot) in self.params.iter().enumerate() {
            match slot {
                None => self
                    .errors
                    .push(PlanError::MissingParameter { number: i + 1 }),
                Some((None, pos)) => self.errors.push(PlanError::UntypedParameter {
                    number: i + 1,
                    at: *pos,
                }),
                Some((Some(ty), _)) => out.push(*ty),
            }
        }
        out
    }

    /// Rewrites every parameter's type to its final inferred type.
    pub(crate) fn fix_params(&self, expr: &mut Expr) {
        if let Expr::Param { index, ty } = expr
            && let Some(Some((Some(t), _))) = self.params.get(*index)
        {
            *ty = *t;
        }
        children_mut(expr, &mut |e| self.fix_params(e));
    }

    fn set_param(&mut self, index: usize, ty: DataType, pos: Position) {
        if let Some(Some((slot, _))) = self.params.get_mut(index) {
            match slot {
                None => *slot = Some(ty),
                Some(first) if *first != ty => {
                    let first = *first;
                    self.errors.push(PlanError::ConflictingParameterType {
                        number: index + 1,
                        first,
                        second: ty,
                        at: pos,
                    });
                }
                Some(_) => {}
            }
        }
    }

    /// Gives an expression of unknown type the type `ty` (parameters, NULLs, and
    /// operators over them).
    fn assign(&mut self, expr: &mut Expr, ty: DataType, pos: Position) {
        match expr {
            Expr::Param { index, ty: t } => {
                *t = ty;
                let index = *index;
                self.set_param(index, ty, pos);
            }
            Expr::Literal { ty: t, .. }
            | Expr::Case { ty: t, .. }
            | Expr::Coalesce { ty: t, .. } => {
                *t = ty;
                match expr {
                    Expr::Case {
                        branches,
                        otherwise,
                        ..
                    } => {
                        for (_, then) in branches.iter_mut() {
                            self.assign(then, ty, pos);
                        }
                        if let Some(e) = otherwise {
                            self.assign(e, ty, pos);
                        }
                    }
                    Expr::Coalesce { args, .. } => {
                        args.iter_mut().for_each(|a| self.assign(a, ty, pos))
                    }
                    _ => {}
                }
            }
            Expr::Negate(e) => self.assign(e, ty, pos),
            Expr::Binary { op, left, right }
                if !op.is_comparison() && !matches!(op, BinaryOp::And | BinaryOp::Or) =>
            {
                self.assign(left, ty, pos);
                self.assign(right, ty, pos);
            }
            _ => {}
        }
    }

    /// Brings an expression to type `ty`: infers an unknown type, widens BIGINT to DOUBLE,
    /// or records a mismatch.
    pub(crate) fn coerce(
        &mut self,
        bound: Bound,
        ty: DataType,
        context: &str,
        pos: Position,
    ) -> Option<Expr> {
        let (mut expr, found) = bound;
        match found {
            None => {
                self.assign(&mut expr, ty, pos);
                Some(expr)
            }
            Some(found) if found == ty => Some(expr),
            Some(DataType::BigInt) if ty == DataType::Double => Some(match expr {
                Expr::Literal {
                    value: Value::Int(i),
                    ..
                } => Expr::Literal {
                    value: Value::Double(i as f64),
                    ty,
                },
                expr => Expr::Cast {
                    expr: Box::new(expr),
                    ty,
                },
            }),
            Some(found) if matches!(expr, Expr::Param { .. }) => {
                let Expr::Param { index, .. } = expr else {
                    return None;
                };
                self.errors.push(PlanError::ConflictingParameterType {
                    number: index + 1,
                    first: found,
                    second: ty,
                    at: pos,
                });
                None
            }
            Some(found) => {
                self.errors.push(PlanError::TypeMismatch {
                    context: context.to_owned(),
                    expected: ty.to_string(),
                    found,
                    at: pos,
                });
                None
            }
        }
    }

    /// Brings two expressions to one type (for comparisons, arithmetic, IN, CASE results).
    fn unify(
        &mut self,
        a: Bound,
        b: Bound,
        context: &str,
        pos: Position,
    ) -> Option<(Expr, Expr, Option<DataType>)> {
        match (a.1, b.1) {
            (None, None) => Some((a.0, b.0, None)),
            (Some(t), None) => {
                let b = self.coerce(b, t, context, pos)?;
                Some((a.0, b, Some(t)))
            }
            (None, Some(t)) => {
                let a = self.coerce(a, t, context, pos)?;
                Some((a, b.0, Some(t)))
            }
            (Some(x), Some(y)) if x == y => Some((a.0, b.0, Some(x))),
            (Some(x), Some(y)) if x.is_numeric() && y.is_numeric() => {
                let a = self.coerce(a, DataType::Double, context, pos)?;
                let b = self.coerce(b, DataType::Double, context, pos)?;
                Some((a, b, Some(DataType::Double)))
            }
            (Some(x), Some(_)) => {
                // The right side is reported against the left; a parameter there conflicts.
                self.coerce(b, x, context, pos);
                None
            }
        }
    }

    /// Binds a condition (WHERE, ON, HAVING, CASE WHEN): must be BOOLEAN.
    pub(crate) fn condition(
        &mut self,
        ast: &ast::Expr,
        scope: &Scope<'c>,
        context: &str,
    ) -> Option<Expr> {
        let bound = self.expr(ast, scope)?;
        self.coerce(bound, DataType::Boolean, context, at(ast))
    }

    /// Binds a value expression to a known type, with `hint` for parameters and NULLs.
    pub(crate) fn typed(
        &mut self,
        ast: &ast::Expr,
        scope: &Scope<'c>,
        hint: DataType,
        context: &str,
    ) -> Option<Expr> {
        let bound = self.expr(ast, scope)?;
        self.coerce(bound, hint, context, at(ast))
    }

    /// Binds an expression whose type must come from the expression itself.
    pub(crate) fn value(
        &mut self,
        ast: &ast::Expr,
        scope: &Scope<'c>,
        context: &str,
    ) -> Option<Expr> {
        let (expr, ty) = self.expr(ast, scope)?;
        // An untyped parameter is reported by `finish_params`; an untyped NULL here.
        if ty.is_none() && matches!(expr, Expr::Literal { .. }) {
            self.errors.push(invalid(
                format!("the type of NULL in {context} is unknown; CAST it"),
                at(ast),
            ));
            return None;
        }
        Some(expr)
    }

    fn column_ref(&mut self, parts: &[Ident], scope: &Scope<'c>) -> Option<Bound> {
        let pos = at_ident(&parts[0]);
        match parts {
            [column] => {
                let name = ident(column);
                let found: Vec<(&ScopeTable<'c>, usize)> = scope
                    .tables
                    .iter()
                    .filter_map(|t| t.table.column_index(&name).map(|i| (t, i)))
                    .collect();
                match found.as_slice() {
                    [(t, i)] => {
                        let e = scope.column(t, *i);
                        let ty = e.ty();
                        Some((e, Some(ty)))
                    }
                    [] => {
                        let table = if scope.tables.is_empty() {
                            "this context (no table is in scope)".to_owned()
                        } else {
                            scope
                                .tables
                                .iter()
                                .map(|t| t.alias.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        };
                        self.errors.push(PlanError::UnknownColumn {
                            table,
                            column: name,
                            at: pos,
                        });
                        None
                    }
                    many => {
                        let tables = many
                            .iter()
                            .map(|(t, _)| t.alias.as_str())
                            .collect::<Vec<_>>()
                            .join(" and ");
                        self.errors.push(PlanError::AmbiguousColumn {
                            column: name,
                            tables,
                            at: pos,
                        });
                        None
                    }
                }
            }
            [table, column] => {
                let alias = ident(table);
                let Some(t) = scope.tables.iter().find(|t| t.alias == alias) else {
                    self.errors.push(PlanError::UnknownTable {
                        table: alias,
                        at: pos,
                    });
                    return None;
                };
                let name = ident(column);
                match t.table.column_index(&name) {
                    Some(i) => {
                        let e = scope.column(t, i);
                        let ty = e.ty();
                        Some((e, Some(ty)))
                    }
                    None => {
                        self.errors.push(PlanError::UnknownColumn {
                            table: alias,
                            column: name,
                            at: at_ident(column),
                        });
                        None
                    }
                }
            }
            _ => {
                self.errors
                    .push(unsupported("a name with more than two parts", pos));
                None
            }
        }
    }

    /// Binds any expression. In aggregation, expressions without aggregates are bound
    /// over the input and then mapped onto the group keys.
    pub(crate) fn expr(&mut self, ast: &ast::Expr, scope: &Scope<'c>) -> Option<Bound> {
        if self.grouping.is_some() {
            if let ast::Expr::Function(f) = ast
                && is_aggregate_name(&function_name(f))
            {
                return self.aggregate(f, ast, scope);
            }
            if !contains_aggregate(ast) {
                let grouping = self.grouping.take();
                let bound = self.expr(ast, scope);
                self.grouping = grouping;
                let (mut expr, ty) = bound?;
                return self.onto_groups(&mut expr, at(ast)).then_some((expr, ty));
            }
        }
        self.expr_inner(ast, scope)
    }

    /// Rewrites an input-row expression onto the aggregate's output row.
    fn onto_groups(&mut self, expr: &mut Expr, pos: Position) -> bool {
        let Some(grouping) = &self.grouping else {
            return true;
        };
        if let Some(i) = grouping.groups.iter().position(|(g, _)| g == expr) {
            *expr = Expr::Column {
                index: i,
                name: grouping.groups[i].1.clone(),
                ty: expr.ty(),
            };
            return true;
        }
        if let Expr::Column { name, .. } = expr {
            self.errors.push(invalid(
                format!(
                    "column {name} must appear in GROUP BY or be used in an aggregate function"
                ),
                pos,
            ));
            return false;
        }
        let mut ok = true;
        children_mut(expr, &mut |child| ok &= self.onto_groups(child, pos));
        ok
    }

    fn aggregate(
        &mut self,
        f: &ast::Function,
        ast: &ast::Expr,
        scope: &Scope<'c>,
    ) -> Option<Bound> {
        let name = function_name(f);
        let pos = at(ast);
        if f.filter.is_some()
            || f.over.is_some()
            || !f.within_group.is_empty()
            || f.null_treatment.is_some()
        {
            self.errors.push(unsupported(
                format!("FILTER, OVER or WITHIN GROUP on {name}"),
                pos,
            ));
            return None;
        }
        let FunctionArguments::List(list) = &f.args else {
            self.errors
                .push(invalid(format!("{name} needs an argument"), pos));
            return None;
        };
        let distinct = matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
        if (distinct && name != "count") || !list.clauses.is_empty() {
            self.errors.push(unsupported_hint(
                format!("DISTINCT or ORDER BY inside {name}"),
                "COUNT(DISTINCT x) is supported",
                pos,
            ));
            return None;
        }
        let grouping = self.grouping.take();
        let result = self.aggregate_call(&name, &list.args, scope, pos);
        self.grouping = grouping;
        let mut call = result?;
        if distinct {
            if call.func == AggregateFunc::CountStar {
                self.errors.push(invalid(
                    "COUNT(DISTINCT *) is not SQL; write COUNT(DISTINCT column)",
                    pos,
                ));
                return None;
            }
            call.func = AggregateFunc::CountDistinct;
        }
        let grouping = self.grouping.as_mut()?;
        let ty = call.ty;
        let index = match grouping.aggregates.iter().position(|a| *a == call) {
            Some(i) => i,
            None => {
                grouping.aggregates.push(call);
                grouping.aggregates.len() - 1
            }
        };
        let label = strip_indexes(&grouping.aggregates[index].to_string());
        Some((
            Expr::Column {
                index: grouping.groups.len() + index,
                name: label,
                ty,
            },
            Some(ty),
        ))
    }

    fn aggregate_call(
        &mut self,
        name: &str,
        args: &[FunctionArg],
        scope: &Scope<'c>,
        pos: Position,
    ) -> Option<AggregateCall> {
        let arg = match args {
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if name == "count" => {
                return Some(AggregateCall {
                    func: AggregateFunc::CountStar,
                    arg: None,
                    ty: DataType::BigInt,
                });
            }
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => e,
            _ => {
                self.errors
                    .push(invalid(format!("{name} takes exactly one argument"), pos));
                return None;
            }
        };
        if contains_aggregate(arg) {
            self.errors.push(invalid(
                format!("aggregate calls cannot be nested (in {name})"),
                at(arg),
            ));
            return None;
        }
        let context = format!("the argument of {}", name.to_uppercase());
        let (expr, ty) = match name {
            "sum" | "avg" => {
                let (e, ty) = self.expr(arg, scope)?;
                let e = match ty {
                    None => self.coerce((e, None), DataType::BigInt, &context, at(arg))?,
                    Some(t) if t.is_numeric() => e,
                    Some(t) => {
                        self.errors.push(PlanError::TypeMismatch {
                            context,
                            expected: "a number".into(),
                            found: t,
                            at: at(arg),
                        });
                        return None;
                    }
                };
                let ty = if name == "avg" {
                    DataType::Double
                } else {
                    e.ty()
                };
                (e, ty)
            }
            "count" => {
                let e = self.value(arg, scope, &context)?;
                (e, DataType::BigInt)
            }
            _ => {
                let e = self.value(arg, scope, &context)?;
                let ty = e.ty();
                (e, ty)
            }
        };
        let func = match name {
            "count" => AggregateFunc::Count,
            "sum" => AggregateFunc::Sum,
            "min" => AggregateFunc::Min,
            "max" => AggregateFunc::Max,
            _ => AggregateFunc::Avg,
        };
        Some(AggregateCall {
            func,
            arg: Some(expr),
            ty,
        })
    }

    fn expr_inner(&mut self, ast: &ast::Expr, scope: &Scope<'c>) -> Option<Bound> {
        use ast::Expr as A;
        let pos = at(ast);
        match ast {
            A::Identifier(id) => self.column_ref(std::slice::from_ref(id), scope),
            A::CompoundIdentifier(parts) => self.column_ref(parts, scope),
            A::Nested(inner) => self.expr(inner, scope),
            A::Value(v) => match &v.value {
                Lit::Placeholder(p) => self.param(p, pos),
                Lit::Null => Some((
                    Expr::Literal {
                        value: Value::Null,
                        ty: DataType::Text,
                    },
                    None,
                )),
                _ => match constant(ast) {
                    Some(value) => {
                        let ty = value.data_type();
                        Some((
                            Expr::Literal {
                                value,
                                ty: ty.unwrap_or(DataType::Text),
                            },
                            ty,
                        ))
                    }
                    None => {
                        self.errors
                            .push(unsupported(format!("the literal {v}"), pos));
                        None
                    }
                },
            },
            A::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => {
                if let Some(value) = constant(ast) {
                    let ty = value.data_type();
                    return Some((
                        Expr::Literal {
                            value,
                            ty: ty.unwrap_or(DataType::Text),
                        },
                        ty,
                    ));
                }
                let (e, ty) = self.expr(expr, scope)?;
                if let Some(t) = ty
                    && !t.is_numeric()
                {
                    self.errors.push(PlanError::TypeMismatch {
                        context: "unary -".into(),
                        expected: "a number".into(),
                        found: t,
                        at: pos,
                    });
                    return None;
                }
                Some((Expr::Negate(Box::new(e)), ty))
            }
            A::UnaryOp {
                op: UnaryOperator::Plus,
                expr,
            } => self.expr(expr, scope),
            A::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => {
                let e = self.condition(expr, scope, "NOT")?;
                Some((Expr::Not(Box::new(e)), Some(DataType::Boolean)))
            }
            A::BinaryOp { left, op, right } => self.binary(left, op, right, scope, pos),
            A::IsDistinctFrom(left, right) | A::IsNotDistinctFrom(left, right) => {
                let l = self.expr(left, scope);
                let r = self.expr(right, scope);
                let op = if matches!(ast, A::IsDistinctFrom(..)) {
                    BinaryOp::IsDistinctFrom
                } else {
                    BinaryOp::IsNotDistinctFrom
                };
                let (l, r, _) = self.unify(l?, r?, op.symbol(), pos)?;
                Some((
                    Expr::Binary {
                        op,
                        left: Box::new(l),
                        right: Box::new(r),
                    },
                    Some(DataType::Boolean),
                ))
            }
            A::IsNull(e) | A::IsNotNull(e) => {
                let (e, _) = self.expr(e, scope)?;
                Some((
                    Expr::IsNull {
                        expr: Box::new(e),
                        negated: matches!(ast, A::IsNotNull(_)),
                    },
                    Some(DataType::Boolean),
                ))
            }
            A::InList {
                expr,
                list,
                negated,
            } => {
                let mut items = vec![self.expr(expr, scope)];
                items.extend(list.iter().map(|item| self.expr(item, scope)));
                let items: Option<Vec<Bound>> = items.into_iter().collect();
                let (mut items, _) = self.unify_all(items?, "IN", pos)?;
                let target = items.remove(0);
                Some((
                    Expr::InList {
                        expr: Box::new(target),
                        list: items,
                        negated: *negated,
                    },
                    Some(DataType::Boolean),
                ))
            }
            A::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let items = [
                    self.expr(expr, scope),
                    self.expr(low, scope),
                    self.expr(high, scope),
                ];
                let items: Option<Vec<Bound>> = items.into_iter().collect();
                let (items, _) = self.unify_all(items?, "BETWEEN", pos)?;
                let [e, l, h]: [Expr; 3] = items.try_into().ok()?;
                Some((
                    Expr::Between {
                        expr: Box::new(e),
                        low: Box::new(l),
                        high: Box::new(h),
                        negated: *negated,
                    },
                    Some(DataType::Boolean),
                ))
            }
            A::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            }
            | A::ILike {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                if *any || escape_char.is_some() {
                    self.errors
                        .push(unsupported("LIKE ANY or LIKE ... ESCAPE", pos));
                    return None;
                }
                let e = self.typed(expr, scope, DataType::Text, "LIKE");
                let p = self.typed(pattern, scope, DataType::Text, "the LIKE pattern");
                Some((
                    Expr::Like {
                        expr: Box::new(e?),
                        pattern: Box::new(p?),
                        negated: *negated,
                        case_insensitive: matches!(ast, A::ILike { .. }),
                    },
                    Some(DataType::Boolean),
                ))
            }
            A::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(
                operand.as_deref(),
                conditions,
                else_result.as_deref(),
                scope,
                pos,
            ),
            A::Cast {
                kind,
                expr,
                data_type,
                format,
                array,
            } => {
                if *kind == CastKind::TryCast
                    || *kind == CastKind::SafeCast
                    || format.is_some()
                    || *array
                {
                    self.errors
                        .push(unsupported("TRY_CAST, SAFE_CAST or CAST with FORMAT", pos));
                    return None;
                }
                let Some(to) = cast_type(data_type) else {
                    self.errors
                        .push(unsupported(format!("CAST to {data_type}"), pos));
                    return None;
                };
                let (mut e, from) = self.expr(expr, scope)?;
                match from {
                    None => {
                        self.assign(&mut e, to, pos);
                        Some((e, Some(to)))
                    }
                    Some(from) if from == to => Some((e, Some(to))),
                    Some(from) if castable(from, to) => Some((
                        Expr::Cast {
                            expr: Box::new(e),
                            ty: to,
                        },
                        Some(to),
                    )),
                    Some(from) => {
                        self.errors.push(PlanError::TypeMismatch {
                            context: format!("CAST to {to}"),
                            expected: "a castable type".into(),
                            found: from,
                            at: pos,
                        });
                        None
                    }
                }
            }
            A::Function(f) => {
                let name = function_name(f);
                if is_aggregate_name(&name) {
                    self.errors.push(invalid(
                        format!("aggregate function {name} is not allowed here"),
                        pos,
                    ));
                    return None;
                }
                if name == "coalesce" {
                    if f.filter.is_some()
                        || f.over.is_some()
                        || !f.within_group.is_empty()
                        || f.null_treatment.is_some()
                    {
                        self.errors
                            .push(unsupported("FILTER, OVER or WITHIN GROUP on COALESCE", pos));
                        return None;
                    }
                    return self.coalesce(f, scope, pos);
                }
                if let Some(func) = ScalarFunc::by_name(&name) {
                    return self.scalar_call(func, f, scope, pos);
                }
                self.errors.push(unsupported_hint(
                    format!("the function {}", f.name),
                    "the functions are COUNT, SUM, MIN, MAX, AVG, COALESCE, LOWER, UPPER, LENGTH and ABS",
                    pos,
                ));
                None
            }
            A::TypedString(typed) if cast_type(&typed.data_type) == Some(DataType::Timestamp) => {
                let parsed = typed
                    .value
                    .value
                    .clone()
                    .into_string()
                    .as_deref()
                    .and_then(crate::value::parse_timestamp);
                match parsed {
                    Some(micros) => Some((
                        Expr::Literal {
                            value: Value::Timestamp(micros),
                            ty: DataType::Timestamp,
                        },
                        Some(DataType::Timestamp),
                    )),
                    None => {
                        self.errors.push(invalid(format!("{ast} is not a timestamp; write TIMESTAMP 'YYYY-MM-DD HH:MM:SS[.ffffff]'"), pos));
                        None
                    }
                }
            }
            A::Subquery(_) | A::InSubquery { .. } | A::Exists { .. } => {
                self.errors.push(unsupported("a subquery", pos));
                None
            }
            other => {
                let text = other.to_string();
                let short: String = text.chars().take(40).collect();
                self.errors
                    .push(unsupported(format!("the expression {short}"), pos));
                None
            }
        }
    }

    fn param(&mut self, text: &str, pos: Position) -> Option<Bound> {
        let number = text
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1);
        let Some(number) = number else {
            self.errors.push(unsupported_hint(
                format!("the parameter {text}"),
                "write $1, $2, ...",
                pos,
            ));
            return None;
        };
        if number > PARAMS_MAX {
            self.errors.push(PlanError::LimitExceeded {
                what: format!("parameter ${number}"),
                limit: PARAMS_MAX,
            });
            return None;
        }
        if self.params.len() < number {
            self.params.resize(number, None);
        }
        let slot = &mut self.params[number - 1];
        if slot.is_none() {
            *slot = Some((None, pos));
        }
        let ty = slot.and_then(|(t, _)| t);
        Some((
            Expr::Param {
                index: number - 1,
                ty: ty.unwrap_or(DataType::Text),
            },
            ty,
        ))
    }

    fn binary(
        &mut self,
        left: &ast::Expr,
        op: &BinaryOperator,
        right: &ast::Expr,
        scope: &Scope<'c>,
        pos: Position,
    ) -> Option<Bound> {
        let op = match op {
            BinaryOperator::Plus => BinaryOp::Add,
            BinaryOperator::Minus => BinaryOp::Sub,
            BinaryOperator::Multiply => BinaryOp::Mul,
            BinaryOperator::Divide => BinaryOp::Div,
            BinaryOperator::Modulo => BinaryOp::Mod,
            BinaryOperator::StringConcat => BinaryOp::Concat,
            BinaryOperator::Eq => BinaryOp::Eq,
            BinaryOperator::NotEq => BinaryOp::NotEq,
            BinaryOperator::Lt => BinaryOp::Lt,
            BinaryOperator::LtEq => BinaryOp::LtEq,
            BinaryOperator::Gt => BinaryOp::Gt,
            BinaryOperator::GtEq => BinaryOp::GtEq,
            BinaryOperator::And => BinaryOp::And,
            BinaryOperator::Or => BinaryOp::Or,
            other => {
                self.errors
                    .push(unsupported(format!("the operator {other}"), pos));
                return None;
            }
        };
        if matches!(op, BinaryOp::And | BinaryOp::Or) {
            let l = self.condition(left, scope, op.symbol());
            let r = self.condition(right, scope, op.symbol());
            return Some((
                Expr::Binary {
                    op,
                    left: Box::new(l?),
                    right: Box::new(r?),
                },
                Some(DataType::Boolean),
            ));
        }
        let l = self.expr(left, scope);
        let r = self.expr(right, scope);
        let (l, r) = (l?, r?);
        if op == BinaryOp::Concat {
            // Like PostgreSQL, `'id-' || 42` converts the non-text side to TEXT.
            let bytes = l.1 == Some(DataType::Bytea) || r.1 == Some(DataType::Bytea);
            let target = if bytes {
                DataType::Bytea
            } else {
                DataType::Text
            };
            let l = self.concat_side(l, target, at(left))?;
            let r = self.concat_side(r, target, at(right))?;
            return Some((
                Expr::Binary {
                    op,
                    left: Box::new(l),
                    right: Box::new(r),
                },
                Some(target),
            ));
        }
        let context = format!("operator {}", op.symbol());
        if !op.is_comparison() {
            for (side, ast) in [(&l, left), (&r, right)] {
                if let Some(t) = side.1
                    && !t.is_numeric()
                {
                    self.errors.push(PlanError::TypeMismatch {
                        context,
                        expected: "a number".into(),
                        found: t,
                        at: at(ast),
                    });
                    return None;
                }
            }
        }
        let (l, r, ty) = self.unify(l, r, &context, pos)?;
        if op.is_comparison() {
            return Some((
                Expr::Binary {
                    op,
                    left: Box::new(l),
                    right: Box::new(r),
                },
                Some(DataType::Boolean),
            ));
        }
        Some((
            Expr::Binary {
                op,
                left: Box::new(l),
                right: Box::new(r),
            },
            ty,
        ))
    }

    fn concat_side(&mut self, bound: Bound, target: DataType, pos: Position) -> Option<Expr> {
        match bound.1 {
            Some(t) if t != target && target == DataType::Text && t != DataType::Bytea => {
                Some(Expr::Cast {
                    expr: Box::new(bound.0),
                    ty: DataType::Text,
                })
            }
            _ => self.coerce(bound, target, "operator ||", pos),
        }
    }

    fn case(
        &mut self,
        operand: Option<&ast::Expr>,
        conditions: &[ast::CaseWhen],
        else_result: Option<&ast::Expr>,
        scope: &Scope<'c>,
        pos: Position,
    ) -> Option<Bound> {
        let mut operand_bound = match operand {
            Some(o) => Some(self.expr(o, scope)?),
            None => None,
        };
        let mut branches = Vec::new();
        let mut results: Vec<Bound> = Vec::new();
        for cw in conditions {
            let when = match operand_bound.take() {
                Some(op) => {
                    let w = self.expr(&cw.condition, scope)?;
                    let (o, w, ty) = self.unify(op, w, "CASE WHEN", at(&cw.condition))?;
                    operand_bound = Some((o, ty));
                    w
                }
                None => self.condition(&cw.condition, scope, "CASE WHEN")?,
            };
            branches.push(when);
            results.push(self.expr(&cw.result, scope)?);
        }
        if let Some(e) = else_result {
            results.push(self.expr(e, scope)?);
        }
        let (results, ty) = self.unify_all(results, "CASE results", pos)?;
        let mut results = results.into_iter();
        let branches: Vec<(Expr, Expr)> = branches.into_iter().zip(results.by_ref()).collect();
        let otherwise = results.next().map(Box::new);
        Some((
            Expr::Case {
                operand: operand_bound.map(|(o, _)| Box::new(o)),
                branches,
                otherwise,
                ty: ty.unwrap_or(DataType::Text),
            },
            ty,
        ))
    }

    /// Brings several expressions to one common type.
    fn unify_all(
        &mut self,
        items: Vec<Bound>,
        context: &str,
        pos: Position,
    ) -> Option<(Vec<Expr>, Option<DataType>)> {
        let mut ty = None;
        for (_, t) in &items {
            ty = match (ty, *t) {
                (None, t) => t,
                (Some(a), Some(b)) if a != b && a.is_numeric() && b.is_numeric() => {
                    Some(DataType::Double)
                }
                (a, _) => a,
            };
        }
        let Some(ty) = ty else {
            return Some((items.into_iter().map(|(e, _)| e).collect(), None));
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.coerce(item, ty, context, pos) {
                Some(e) => out.push(e),
                None => ok = false,
            }
        }
        ok.then_some((out, Some(ty)))
    }

    fn scalar_call(
        &mut self,
        func: ScalarFunc,
        f: &ast::Function,
        scope: &Scope<'c>,
        pos: Position,
    ) -> Option<Bound> {
        let name = func.name().to_uppercase();
        let arg = match &f.args {
            FunctionArguments::List(list)
                if list.duplicate_treatment.is_none()
                    && list.clauses.is_empty()
                    && f.filter.is_none()
                    && f.over.is_none()
                    && f.within_group.is_empty()
                    && f.null_treatment.is_none() =>
            {
                match list.args.as_slice() {
                    [FunctionArg::Unnamed(FunctionArgExpr::Expr(e))] => e,
                    _ => {
                        self.errors
                            .push(invalid(format!("{name} takes exactly one argument"), pos));
                        return None;
                    }
                }
            }
            _ => {
                self.errors
                    .push(unsupported(format!("this form of {name}"), pos));
                return None;
            }
        };
        let context = format!("the argument of {name}");
        let arg = match func {
            ScalarFunc::Abs => {
                let (e, ty) = self.expr(arg, scope)?;
                match ty {
                    None => self.coerce((e, None), DataType::BigInt, &context, at(arg))?,
                    Some(t) if t.is_numeric() => e,
                    Some(t) => {
                        self.errors.push(PlanError::TypeMismatch {
                            context,
                            expected: "a number".into(),
                            found: t,
                            at: at(arg),
                        });
                        return None;
                    }
                }
            }
            _ => self.typed(arg, scope, DataType::Text, &context)?,
        };
        let e = Expr::Call {
            func,
            arg: Box::new(arg),
        };
        let ty = e.ty();
        Some((e, Some(ty)))
    }

    fn coalesce(&mut self, f: &ast::Function, scope: &Scope<'c>, pos: Position) -> Option<Bound> {
        let FunctionArguments::List(list) = &f.args else {
            self.errors.push(invalid("COALESCE needs arguments", pos));
            return None;
        };
        let mut items = Vec::new();
        for arg in &list.args {
            match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => items.push(self.expr(e, scope)?),
                _ => {
                    self.errors
                        .push(invalid("COALESCE takes plain expressions", pos));
                    return None;
                }
            }
        }
        if items.is_empty() {
            self.errors.push(invalid("COALESCE needs arguments", pos));
            return None;
        }
        let (args, ty) = self.unify_all(items, "COALESCE", pos)?;
        Some((
            Expr::Coalesce {
                args,
                ty: ty.unwrap_or(DataType::Text),
            },
            ty,
        ))
    }

    /// Reads a LIMIT or OFFSET: a non-negative integer constant or a parameter.
    pub(crate) fn count(&mut self, ast: &ast::Expr, what: &str) -> Option<Expr> {
        let scope = Scope::default();
        if let Some(value) = constant(ast) {
            return match value {
                Value::Int(n) if n >= 0 => Some(Expr::Literal {
                    value: Value::Int(n),
                    ty: DataType::BigInt,
                }),
                _ => {
                    self.errors.push(invalid(
                        format!("{what} must be a non-negative integer or a parameter, not {ast}"),
                        at(ast),
                    ));
                    None
                }
            };
        }
        match ast {
            ast::Expr::Value(v) if matches!(v.value, Lit::Placeholder(_)) => {
                self.typed(ast, &scope, DataType::BigInt, what)
            }
            _ => {
                self.errors.push(unsupported_hint(
                    format!("the expression {ast} as {what}"),
                    "use a constant or a parameter",
                    at(ast),
                ));
                None
            }
        }
    }

    /// Converts a constant default or literal into a typed literal of a column's type.
    pub(crate) fn literal_of(value: Value, ty: DataType) -> Option<Expr> {
        coerce_constant(value, ty).map(|value| Expr::Literal { value, ty })
    }
}

/// Removes `#index` suffixes from a printed expression, for output names.
pub(crate) fn strip_indexes(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '#' {
            while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn cast_type(ty: &ast::DataType) -> Option<DataType> {
    use ast::DataType as T;
    Some(match ty {
        T::BigInt(_)
        | T::Int(_)
        | T::Integer(_)
        | T::SmallInt(_)
        | T::Int2(_)
        | T::Int4(_)
        | T::Int8(_) => DataType::BigInt,
        T::Double(_) | T::DoublePrecision | T::Float8 | T::Float(_) | T::Real | T::Float4 => {
            DataType::Double
        }
        T::Text | T::Varchar(_) | T::CharacterVarying(_) | T::String(_) => DataType::Text,
        T::Boolean | T::Bool => DataType::Boolean,
        T::Bytea => DataType::Bytea,
        T::Timestamp(None, ast::TimezoneInfo::None | ast::TimezoneInfo::WithoutTimeZone) => {
            DataType::Timestamp
        }
        _ => return None,
    })
}
