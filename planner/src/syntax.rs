//! Parsing with sqlparser and the small conventions shared by DDL and statements:
//! identifier case, object names, positions.

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart, Spanned, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::error::{PlanError, Position};

/// Longest SQL text accepted, in bytes.
pub const SQL_BYTES_MAX: usize = 64 * 1024;

/// Parses SQL text in the PostgreSQL dialect (the one whose `$n` parameters and
/// `ON CONFLICT` Comb speaks).
pub(crate) fn parse(sql: &str) -> Result<Vec<Statement>, PlanError> {
    if sql.len() > SQL_BYTES_MAX {
        return Err(PlanError::LimitExceeded {
            what: format!("SQL text of {} bytes", sql.len()),
            limit: SQL_BYTES_MAX,
        });
    }
    Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|error| PlanError::Syntax {
        message: error
            .to_string()
            .trim_start_matches("sql parser error: ")
            .to_owned(),
    })
}

/// Normalizes an identifier: unquoted names fold to lower case, quoted ones keep theirs.
pub(crate) fn ident(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

/// Returns the position of anything with a span, or the statement start when the parser
/// kept none.
pub(crate) fn at(node: &impl Spanned) -> Position {
    Position::of(node.span()).unwrap_or(Position { line: 1, column: 1 })
}

/// Reads a one-part name (`rooms`); schemas and other qualified names are rejected.
pub(crate) fn single_name(
    name: &ObjectName,
    errors: &mut Vec<PlanError>,
) -> Option<(String, Position)> {
    match name.0.as_slice() {
        [ObjectNamePart::Identifier(id)] => Some((ident(id), at_ident(id))),
        _ => {
            errors.push(unsupported(format!("the qualified name {name}"), at(name)));
            None
        }
    }
}

/// Builds an `Unsupported` finding.
pub(crate) fn unsupported(construct: impl Into<String>, at: Position) -> PlanError {
    PlanError::Unsupported {
        construct: construct.into(),
        at,
        hint: String::new(),
    }
}

/// Builds an `Unsupported` finding with advice on what to write instead.
pub(crate) fn unsupported_hint(
    construct: impl Into<String>,
    hint: &str,
    at: Position,
) -> PlanError {
    PlanError::Unsupported {
        construct: construct.into(),
        at,
        hint: format!("; {hint}"),
    }
}

/// Builds an `Invalid` finding.
pub(crate) fn invalid(message: impl Into<String>, at: Position) -> PlanError {
    PlanError::Invalid {
        message: message.into(),
        at,
    }
}

/// Reads a constant literal (`42`, `-1.5`, `'text'`, `TRUE`, `NULL`); `None` for
/// anything else. Integers that do not fit 64 bits are read as doubles, like PostgreSQL's
/// numeric literals are coerced.
pub(crate) fn constant(expr: &sqlparser::ast::Expr) -> Option<crate::value::Value> {
    use sqlparser::ast::{Expr, UnaryOperator, Value as Lit};

    use crate::value::Value;
    match expr {
        Expr::Value(v) => match &v.value {
            Lit::Number(text, _) => Some(match text.parse::<i64>() {
                Ok(int) => Value::Int(int),
                Err(_) => Value::Double(text.parse::<f64>().ok()?),
            }),
            Lit::SingleQuotedString(text) | Lit::EscapedStringLiteral(text) => {
                Some(Value::Text(text.clone()))
            }
            Lit::Boolean(b) => Some(Value::Bool(*b)),
            Lit::Null => Some(Value::Null),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match constant(expr)? {
            Value::Int(int) => int.checked_neg().map(Value::Int),
            Value::Double(double) => Some(Value::Double(-double)),
            _ => None,
        },
        Expr::Nested(inner) => constant(inner),
        Expr::TypedString(typed)
            if matches!(
                typed.data_type,
                sqlparser::ast::DataType::Timestamp(None, sqlparser::ast::TimezoneInfo::None)
            ) =>
        {
            typed
                .value
                .value
                .clone()
                .into_string()
                .as_deref()
                .and_then(crate::value::parse_timestamp)
                .map(Value::Timestamp)
        }
        _ => None,
    }
}

/// Returns the position of an identifier.
pub(crate) fn at_ident(id: &Ident) -> Position {
    Position::of(id.span).unwrap_or(Position { line: 1, column: 1 })
}

/// Returns the start of a token span.
pub(crate) fn at_span(span: sqlparser::tokenizer::Span) -> Position {
    Position::of(span).unwrap_or(Position { line: 1, column: 1 })
}
