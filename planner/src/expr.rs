//! Bound expressions: a small typed tree that references columns of the input row and
//! statement parameters by index, and its evaluator with SQL semantics.
//!
//! Evaluation follows SQL: NULL propagates through operators, AND/OR/NOT use
//! three-valued logic, integer overflow and division by zero are errors, LIKE matches `%`
//! and `_` with `\` as the escape character.

use std::cmp::Ordering;
use std::fmt;

use crate::error::EvalError;
use crate::value::{DataType, Value};

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/` (integer division truncates toward zero, as in SQL)
    Div,
    /// `%`
    Mod,
    /// `||`
    Concat,
    /// `=`
    Eq,
    /// `<>`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `IS DISTINCT FROM`: `<>` where NULL equals NULL; never NULL itself.
    IsDistinctFrom,
    /// `IS NOT DISTINCT FROM`: `=` where NULL equals NULL; never NULL itself.
    IsNotDistinctFrom,
    /// `AND`
    And,
    /// `OR`
    Or,
}

impl BinaryOp {
    /// Tells whether the operator compares and yields a BOOLEAN.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq
                | BinaryOp::NotEq
                | BinaryOp::Lt
                | BinaryOp::LtEq
                | BinaryOp::Gt
                | BinaryOp::GtEq
                | BinaryOp::IsDistinctFrom
                | BinaryOp::IsNotDistinctFrom
        )
    }

    /// Returns the SQL spelling.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Mod => "%",
            BinaryOp::Concat => "||",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::IsDistinctFrom => "IS DISTINCT FROM",
            BinaryOp::IsNotDistinctFrom => "IS NOT DISTINCT FROM",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
        }
    }
}

/// A deterministic scalar function of one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarFunc {
    /// `LOWER(text)`.
    Lower,
    /// `UPPER(text)`.
    Upper,
    /// `LENGTH(text)` (also `CHAR_LENGTH`): characters, a BIGINT.
    Length,
    /// `ABS(number)`; `ABS` of the smallest BIGINT overflows.
    Abs,
}

impl ScalarFunc {
    /// Looks a function up by its lower-case SQL name.
    pub fn by_name(name: &str) -> Option<ScalarFunc> {
        Some(match name {
            "lower" => ScalarFunc::Lower,
            "upper" => ScalarFunc::Upper,
            "length" | "char_length" | "character_length" => ScalarFunc::Length,
            "abs" => ScalarFunc::Abs,
            _ => return None,
        })
    }

    /// Returns the SQL name.
    pub fn name(self) -> &'static str {
        match self {
            ScalarFunc::Lower => "lower",
            ScalarFunc::Upper => "upper",
            ScalarFunc::Length => "length",
            ScalarFunc::Abs => "abs",
        }
    }

    fn apply(self, value: Value) -> Result<Value, EvalError> {
        Ok(match (self, value) {
            (_, Value::Null) => Value::Null,
            (ScalarFunc::Lower, Value::Text(s)) => Value::Text(s.to_lowercase()),
            (ScalarFunc::Upper, Value::Text(s)) => Value::Text(s.to_uppercase()),
            (ScalarFunc::Length, Value::Text(s)) => Value::Int(s.chars().count() as i64),
            (ScalarFunc::Abs, Value::Int(i)) => {
                Value::Int(i.checked_abs().ok_or(EvalError::Overflow { op: "abs" })?)
            }
            (ScalarFunc::Abs, Value::Double(d)) => Value::Double(d.abs()),
            (func, other) => return Err(type_bug(func.name(), &other)),
        })
    }
}

/// A bound, type-checked expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A column of the input row.
    Column {
        /// Index into the input row.
        index: usize,
        /// A readable name, for printing only.
        name: String,
        /// Type.
        ty: DataType,
    },
    /// A statement parameter.
    Param {
        /// 0-based index: `$1` is 0.
        index: usize,
        /// Inferred type.
        ty: DataType,
    },
    /// A constant.
    Literal {
        /// The value (possibly NULL).
        value: Value,
        /// Type.
        ty: DataType,
    },
    /// `NOT expr`.
    Not(Box<Expr>),
    /// `-expr`.
    Negate(Box<Expr>),
    /// `left op right`; both sides have the same type (the binder inserts casts).
    Binary {
        /// Operator.
        op: BinaryOp,
        /// Left operand.
        left: Box<Expr>,
        /// Right operand.
        right: Box<Expr>,
    },
    /// `expr IS [NOT] NULL`.
    IsNull {
        /// Operand.
        expr: Box<Expr>,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// `expr [NOT] IN (list)`.
    InList {
        /// Operand.
        expr: Box<Expr>,
        /// Candidates, same type as `expr`.
        list: Vec<Expr>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `expr [NOT] BETWEEN low AND high`.
    Between {
        /// Operand.
        expr: Box<Expr>,
        /// Lower bound, inclusive.
        low: Box<Expr>,
        /// Upper bound, inclusive.
        high: Box<Expr>,
        /// `NOT BETWEEN`.
        negated: bool,
    },
    /// `expr [NOT] LIKE pattern`.
    Like {
        /// Operand (TEXT).
        expr: Box<Expr>,
        /// Pattern (TEXT).
        pattern: Box<Expr>,
        /// `NOT LIKE`.
        negated: bool,
        /// `ILIKE`: case-insensitive.
        case_insensitive: bool,
    },
    /// `CASE [operand] WHEN .. THEN .. [ELSE ..] END`.
    Case {
        /// Compared with each `WHEN` value when present; otherwise each `WHEN` is a condition.
        operand: Option<Box<Expr>>,
        /// `(WHEN, THEN)` pairs.
        branches: Vec<(Expr, Expr)>,
        /// `ELSE`; NULL when absent.
        otherwise: Option<Box<Expr>>,
        /// Result type.
        ty: DataType,
    },
    /// `COALESCE(args)`.
    Coalesce {
        /// Arguments, all of type `ty`.
        args: Vec<Expr>,
        /// Result type.
        ty: DataType,
    },
    /// A deterministic scalar function; NULL in, NULL out.
    Call {
        /// The function.
        func: ScalarFunc,
        /// Its argument.
        arg: Box<Expr>,
    },
    /// `CAST(expr AS ty)`, also inserted implicitly (BIGINT to DOUBLE, anything to TEXT for `||`).
    Cast {
        /// Operand.
        expr: Box<Expr>,
        /// Target type.
        ty: DataType,
    },
}

impl Expr {
    /// Returns the result type.
    pub fn ty(&self) -> DataType {
        match self {
            Expr::Column { ty, .. }
            | Expr::Param { ty, .. }
            | Expr::Literal { ty, .. }
            | Expr::Case { ty, .. }
            | Expr::Coalesce { ty, .. }
            | Expr::Cast { ty, .. } => *ty,
            Expr::Negate(e) => e.ty(),
            Expr::Call {
                func: ScalarFunc::Length,
                ..
            } => DataType::BigInt,
            Expr::Call { arg, .. } => arg.ty(),
            Expr::Binary { op, left, .. }
                if !op.is_comparison() && !matches!(op, BinaryOp::And | BinaryOp::Or) =>
            {
                left.ty()
            }
            Expr::Not(_)
            | Expr::Binary { .. }
            | Expr::IsNull { .. }
            | Expr::InList { .. }
            | Expr::Between { .. }
            | Expr::Like { .. } => DataType::Boolean,
        }
    }

    /// Tells whether the expression reads no column (only parameters and constants), so it
    /// can be computed once before a scan.
    pub fn is_row_independent(&self) -> bool {
        let mut independent = true;
        self.visit(&mut |e| {
            if matches!(e, Expr::Column { .. }) {
                independent = false;
            }
        });
        independent
    }

    /// Calls `f` on this expression and every subexpression, parents first.
    pub fn visit(&self, f: &mut impl FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Column { .. } | Expr::Param { .. } | Expr::Literal { .. } => {}
            Expr::Not(e)
            | Expr::Negate(e)
            | Expr::IsNull { expr: e, .. }
            | Expr::Cast { expr: e, .. }
            | Expr::Call { arg: e, .. } => e.visit(f),
            Expr::Binary { left, right, .. }
            | Expr::Like {
                expr: left,
                pattern: right,
                ..
            } => {
                left.visit(f);
                right.visit(f);
            }
            Expr::InList { expr, list, .. } => {
                expr.visit(f);
                list.iter().for_each(|e| e.visit(f));
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                expr.visit(f);
                low.visit(f);
                high.visit(f);
            }
            Expr::Case {
                operand,
                branches,
                otherwise,
                ..
            } => {
                if let Some(e) = operand {
                    e.visit(f);
                }
                for (w, t) in branches {
                    w.visit(f);
                    t.visit(f);
                }
                if let Some(e) = otherwise {
                    e.visit(f);
                }
            }
            Expr::Coalesce { args, .. } => args.iter().for_each(|e| e.visit(f)),
        }
    }

    /// Evaluates the expression over `row` (the input row) and `params` (`$1` first).
    pub fn eval(&self, row: &[Value], params: &[Value]) -> Result<Value, EvalError> {
        match self {
            Expr::Column { index, name, .. } => row.get(*index).cloned().ok_or_else(|| {
                EvalError::Internal(format!(
                    "column {name} (#{index}) is outside a row of {}",
                    row.len()
                ))
            }),
            Expr::Param { index, ty } => {
                let value = params.get(*index).ok_or_else(|| EvalError::BadParameter {
                    number: index + 1,
                    message: format!("missing; {} parameters were given", params.len()),
                })?;
                match (value, ty) {
                    (Value::Int(i), DataType::Double) => Ok(Value::Double(*i as f64)),
                    (v, ty) if v.fits(*ty) => Ok(v.clone()),
                    (v, ty) => Err(EvalError::BadParameter {
                        number: index + 1,
                        message: format!("expected {ty}, got {v}"),
                    }),
                }
            }
            Expr::Literal { value, .. } => Ok(value.clone()),
            Expr::Not(e) => Ok(match e.eval(row, params)? {
                Value::Bool(b) => Value::Bool(!b),
                Value::Null => Value::Null,
                other => return Err(type_bug("NOT", &other)),
            }),
            Expr::Negate(e) => Ok(match e.eval(row, params)? {
                Value::Int(i) => {
                    Value::Int(i.checked_neg().ok_or(EvalError::Overflow { op: "-" })?)
                }
                Value::Double(d) => Value::Double(-d),
                Value::Null => Value::Null,
                other => return Err(type_bug("-", &other)),
            }),
            Expr::Binary {
                op: BinaryOp::And,
                left,
                right,
            } => {
                let l = truth(left.eval(row, params)?)?;
                if l == Some(false) {
                    return Ok(Value::Bool(false));
                }
                let r = truth(right.eval(row, params)?)?;
                Ok(match (l, r) {
                    (_, Some(false)) => Value::Bool(false),
                    (Some(true), Some(true)) => Value::Bool(true),
                    _ => Value::Null,
                })
            }
            Expr::Binary {
                op: BinaryOp::Or,
                left,
                right,
            } => {
                let l = truth(left.eval(row, params)?)?;
                if l == Some(true) {
                    return Ok(Value::Bool(true));
                }
                let r = truth(right.eval(row, params)?)?;
                Ok(match (l, r) {
                    (_, Some(true)) => Value::Bool(true),
                    (Some(false), Some(false)) => Value::Bool(false),
                    _ => Value::Null,
                })
            }
            Expr::Binary { op, left, right } => {
                binary(*op, left.eval(row, params)?, right.eval(row, params)?)
            }
            Expr::IsNull { expr, negated } => {
                Ok(Value::Bool(expr.eval(row, params)?.is_null() != *negated))
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let value = expr.eval(row, params)?;
                if value.is_null() {
                    return Ok(Value::Null);
                }
                let mut saw_null = false;
                for candidate in list {
                    match value.sql_cmp(&candidate.eval(row, params)?) {
                        Some(Ordering::Equal) => return Ok(Value::Bool(!negated)),
                        None => saw_null = true,
                        Some(_) => {}
                    }
                }
                Ok(if saw_null {
                    Value::Null
                } else {
                    Value::Bool(*negated)
                })
            }
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let value = expr.eval(row, params)?;
                let above = binary(BinaryOp::GtEq, value.clone(), low.eval(row, params)?)?;
                let below = binary(BinaryOp::LtEq, value, high.eval(row, params)?)?;
                let both = match (truth(above)?, truth(below)?) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                };
                Ok(both.map_or(Value::Null, |b| Value::Bool(b != *negated)))
            }
            Expr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => match (expr.eval(row, params)?, pattern.eval(row, params)?) {
                (Value::Text(text), Value::Text(pattern)) => {
                    let matched = if *case_insensitive {
                        like(&text.to_lowercase(), &pattern.to_lowercase())
                    } else {
                        like(&text, &pattern)
                    };
                    Ok(Value::Bool(matched != *negated))
                }
                (Value::Null, _) | (_, Value::Null) => Ok(Value::Null),
                (other, _) => Err(type_bug("LIKE", &other)),
            },
            Expr::Case {
                operand,
                branches,
                otherwise,
                ..
            } => {
                let operand = operand.as_ref().map(|e| e.eval(row, params)).transpose()?;
                for (when, then) in branches {
                    let when = when.eval(row, params)?;
                    let hit = match &operand {
                        Some(value) => value.sql_cmp(&when) == Some(Ordering::Equal),
                        None => truth(when)? == Some(true),
                    };
                    if hit {
                        return then.eval(row, params);
                    }
                }
                otherwise
                    .as_ref()
                    .map_or(Ok(Value::Null), |e| e.eval(row, params))
            }
            Expr::Coalesce { args, .. } => {
                for arg in args {
                    let value = arg.eval(row, params)?;
                    if !value.is_null() {
                        return Ok(value);
                    }
                }
                Ok(Value::Null)
            }
            Expr::Cast { expr, ty } => cast(expr.eval(row, params)?, *ty),
            Expr::Call { func, arg } => func.apply(arg.eval(row, params)?),
        }
    }
}

fn type_bug(op: &str, value: &Value) -> EvalError {
    EvalError::Internal(format!(
        "{op} applied to {value}, which the type checker should have rejected"
    ))
}

/// Reads a BOOLEAN in three-valued logic: `None` is NULL (unknown).
fn truth(value: Value) -> Result<Option<bool>, EvalError> {
    match value {
        Value::Bool(b) => Ok(Some(b)),
        Value::Null => Ok(None),
        other => Err(type_bug("a condition", &other)),
    }
}

fn binary(op: BinaryOp, left: Value, right: Value) -> Result<Value, EvalError> {
    if matches!(op, BinaryOp::IsDistinctFrom | BinaryOp::IsNotDistinctFrom) {
        let same = match (&left, &right) {
            (Value::Null, Value::Null) => true,
            (Value::Null, _) | (_, Value::Null) => false,
            (l, r) => l.sql_cmp(r).ok_or_else(|| type_bug(op.symbol(), r))? == Ordering::Equal,
        };
        return Ok(Value::Bool(same == (op == BinaryOp::IsNotDistinctFrom)));
    }
    if left.is_null() || right.is_null() {
        return Ok(Value::Null);
    }
    if op.is_comparison() {
        let ordering = left
            .sql_cmp(&right)
            .ok_or_else(|| type_bug(op.symbol(), &right))?;
        return Ok(Value::Bool(match op {
            BinaryOp::Eq => ordering == Ordering::Equal,
            BinaryOp::NotEq => ordering != Ordering::Equal,
            BinaryOp::Lt => ordering == Ordering::Less,
            BinaryOp::LtEq => ordering != Ordering::Greater,
            BinaryOp::Gt => ordering == Ordering::Greater,
            _ => ordering != Ordering::Less,
        }));
    }
    let overflow = EvalError::Overflow { op: op.symbol() };
    Ok(match (op, left, right) {
        (BinaryOp::Add, Value::Int(a), Value::Int(b)) => {
            Value::Int(a.checked_add(b).ok_or(overflow)?)
        }
        (BinaryOp::Sub, Value::Int(a), Value::Int(b)) => {
            Value::Int(a.checked_sub(b).ok_or(overflow)?)
        }
        (BinaryOp::Mul, Value::Int(a), Value::Int(b)) => {
            Value::Int(a.checked_mul(b).ok_or(overflow)?)
        }
        (BinaryOp::Div | BinaryOp::Mod, Value::Int(_), Value::Int(0)) => {
            return Err(EvalError::DivisionByZero);
        }
        (BinaryOp::Div, Value::Int(a), Value::Int(b)) => {
            Value::Int(a.checked_div(b).ok_or(overflow)?)
        }
        (BinaryOp::Mod, Value::Int(a), Value::Int(b)) => Value::Int(a.checked_rem(b).unwrap_or(0)),
        (op, Value::Double(a), Value::Double(b)) => {
            if matches!(op, BinaryOp::Div | BinaryOp::Mod) && b == 0.0 {
                return Err(EvalError::DivisionByZero);
            }
            let result = match op {
                BinaryOp::Add => a + b,
                BinaryOp::Sub => a - b,
                BinaryOp::Mul => a * b,
                BinaryOp::Div => a / b,
                BinaryOp::Mod => a % b,
                _ => return Err(type_bug(op.symbol(), &Value::Double(a))),
            };
            if result.is_infinite() && a.is_finite() && b.is_finite() {
                return Err(overflow);
            }
            Value::Double(result)
        }
        (BinaryOp::Concat, Value::Text(a), Value::Text(b)) => Value::Text(a + &b),
        (BinaryOp::Concat, Value::Bytes(mut a), Value::Bytes(b)) => {
            a.extend_from_slice(&b);
            Value::Bytes(a)
        }
        (op, left, _) => return Err(type_bug(op.symbol(), &left)),
    })
}

/// Matches SQL LIKE: `%` is any run of characters, `_` one character, `\` escapes.
pub fn like(text: &str, pattern: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Token {
        Any,
        One,
        Char(char),
    }
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '%' => Token::Any,
            '_' => Token::One,
            '\\' => Token::Char(chars.next().unwrap_or('\\')),
            c => Token::Char(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    // Greedy matching with backtracking to the last `%`: O(text * pattern) at worst.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(Token::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Token::One) => {
                t += 1;
                p += 1;
            }
            Some(Token::Char(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    tokens[p..].iter().all(|t| *t == Token::Any)
}

/// Converts a value as `CAST` does.
pub fn cast(value: Value, to: DataType) -> Result<Value, EvalError> {
    let invalid = |value: &Value| EvalError::InvalidCast {
        value: value.to_string(),
        to,
    };
    Ok(match (value, to) {
        (Value::Null, _) => Value::Null,
        (v, to) if v.data_type() == Some(to) => v,
        (Value::Int(i), DataType::Double) => Value::Double(i as f64),
        (Value::Int(i), DataType::Timestamp) => Value::Timestamp(i),
        (Value::Timestamp(i), DataType::BigInt) => Value::Int(i),
        (Value::Double(d), DataType::BigInt) => {
            let rounded = d.round_ties_even();
            // i64::MAX as f64 rounds up to 2^63, which is out of range.
            if !(rounded >= i64::MIN as f64 && rounded < i64::MAX as f64) {
                return Err(invalid(&Value::Double(d)));
            }
            Value::Int(rounded as i64)
        }
        (Value::Int(i), DataType::Text) => Value::Text(i.to_string()),
        (Value::Double(d), DataType::Text) => Value::Text(double_text(d)),
        (Value::Bool(b), DataType::Text) => Value::Text(b.to_string()),
        (Value::Timestamp(t), DataType::Text) => Value::Text(crate::value::format_timestamp(t)),
        (Value::Text(s), DataType::Timestamp) => Value::Timestamp(
            crate::value::parse_timestamp(&s).ok_or_else(|| invalid(&Value::Text(s.clone())))?,
        ),
        (Value::Text(s), DataType::BigInt) => Value::Int(
            s.trim()
                .parse()
                .map_err(|_| invalid(&Value::Text(s.clone())))?,
        ),
        (Value::Text(s), DataType::Double) => Value::Double(
            s.trim()
                .parse()
                .map_err(|_| invalid(&Value::Text(s.clone())))?,
        ),
        (Value::Text(s), DataType::Boolean) => match s.trim().to_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "on" | "1" => Value::Bool(true),
            "false" | "f" | "no" | "n" | "off" | "0" => Value::Bool(false),
            _ => return Err(invalid(&Value::Text(s))),
        },
        (Value::Text(s), DataType::Bytea) => match bytea_input(&s) {
            Some(bytes) => Value::Bytes(bytes),
            None => return Err(invalid(&Value::Text(s))),
        },
        (Value::Bool(b), DataType::BigInt) => Value::Int(i64::from(b)),
        (v, _) => return Err(invalid(&v)),
    })
}

/// A DOUBLE as PostgreSQL's `float8` output writes it: the shortest digits that read back
/// as the same value, in exponent form (`1e+20`, `1.5e-05`) when the exponent is below -4
/// or at least 15, else in positional form (`0.0001`, `123456789012345`); `Infinity`,
/// `-Infinity`, `NaN`.
pub(crate) fn double_text(d: f64) -> String {
    if d.is_nan() {
        return "NaN".to_owned();
    }
    if d.is_infinite() {
        return if d > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    // Rust writes the shortest digits too: `1.2345e17`, `1e-5`, `0e0`.
    let scientific = format!("{d:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if d != 0.0 && !(-4..15).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.unsigned_abs())
    } else {
        d.to_string()
    }
}

/// Text read as PostgreSQL reads a `bytea` literal: `\x` and hex digit pairs (whitespace
/// between pairs allowed), or the escape form (`\\` a backslash, `\ooo` an octal byte,
/// anything else as its own bytes). `None` for text that is neither.
pub(crate) fn bytea_input(s: &str) -> Option<Vec<u8>> {
    if let Some(hex) = s.strip_prefix("\\x") {
        let digits: Vec<u8> = hex.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        // Whitespace only between pairs: each pair's two digits are adjacent.
        let pairs = hex.split_ascii_whitespace().all(|chunk| chunk.len() % 2 == 0);
        if !pairs {
            return None;
        }
        return digits
            .chunks(2)
            .map(|pair| pair.iter().all(u8::is_ascii_hexdigit).then(|| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()).flatten())
            .collect();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = bytes.get(i + 1..i + 4)?;
            if !matches!(octal[0], b'0'..=b'3') || !octal[1..].iter().all(|b| matches!(b, b'0'..=b'7')) {
                return None;
            }
            out.push(octal.iter().fold(0u8, |n, b| n * 8 + (b - b'0')));
            i += 4;
        }
    }
    Some(out)
}

/// Tells whether `CAST(from AS to)` is accepted by the type checker.
pub(crate) fn castable(from: DataType, to: DataType) -> bool {
    use DataType::*;
    from == to
        || matches!(
            (from, to),
            (BigInt, Double | Timestamp | Text)
                | (Timestamp, BigInt | Text)
                | (Double, BigInt | Text)
                | (Boolean, Text | BigInt)
                | (Text, BigInt | Double | Boolean | Bytea | Timestamp)
        )
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column { name, index, .. } => write!(f, "{name}#{index}"),
            Expr::Param { index, .. } => write!(f, "${}", index + 1),
            Expr::Literal { value, .. } => write!(f, "{value}"),
            Expr::Not(e) => write!(f, "NOT {e}"),
            Expr::Negate(e) => write!(f, "-{e}"),
            Expr::Binary { op, left, right } => write!(f, "({left} {} {right})", op.symbol()),
            Expr::IsNull { expr, negated } => {
                write!(f, "{expr} IS {}NULL", if *negated { "NOT " } else { "" })
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                write!(f, "{expr} {}IN (", if *negated { "NOT " } else { "" })?;
                comma_list(f, list)?;
                f.write_str(")")
            }
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                write!(
                    f,
                    "{expr} {}BETWEEN {low} AND {high}",
                    if *negated { "NOT " } else { "" }
                )
            }
            Expr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => write!(
                f,
                "{expr} {}{} {pattern}",
                if *negated { "NOT " } else { "" },
                if *case_insensitive { "ILIKE" } else { "LIKE" }
            ),
            Expr::Case {
                operand,
                branches,
                otherwise,
                ..
            } => {
                f.write_str("CASE")?;
                if let Some(e) = operand {
                    write!(f, " {e}")?;
                }
                for (w, t) in branches {
                    write!(f, " WHEN {w} THEN {t}")?;
                }
                if let Some(e) = otherwise {
                    write!(f, " ELSE {e}")?;
                }
                f.write_str(" END")
            }
            Expr::Coalesce { args, .. } => {
                f.write_str("COALESCE(")?;
                comma_list(f, args)?;
                f.write_str(")")
            }
            Expr::Cast { expr, ty } => write!(f, "CAST({expr} AS {ty})"),
            Expr::Call { func, arg } => write!(f, "{}({arg})", func.name()),
        }
    }
}

pub(crate) fn comma_list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggregateFunc {
    /// `COUNT(*)`: rows.
    CountStar,
    /// `COUNT(x)`: non-NULL values.
    Count,
    /// `COUNT(DISTINCT x)`: distinct non-NULL values.
    CountDistinct,
    /// `SUM(x)`: NULL over no non-NULL values; BIGINT sums overflow as errors.
    Sum,
    /// `MIN(x)`.
    Min,
    /// `MAX(x)`.
    Max,
    /// `AVG(x)`: a DOUBLE.
    Avg,
}

/// One aggregate computed by an `Aggregate` plan node.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateCall {
    /// The function.
    pub func: AggregateFunc,
    /// The argument, over the aggregate's input row; `None` for `COUNT(*)`.
    pub arg: Option<Expr>,
    /// Result type.
    pub ty: DataType,
}

impl fmt::Display for AggregateCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.func {
            AggregateFunc::CountStar => return f.write_str("count(*)"),
            AggregateFunc::Count => "count",
            AggregateFunc::CountDistinct => {
                return match &self.arg {
                    Some(arg) => write!(f, "count(DISTINCT {arg})"),
                    None => f.write_str("count(DISTINCT)"),
                };
            }
            AggregateFunc::Sum => "sum",
            AggregateFunc::Min => "min",
            AggregateFunc::Max => "max",
            AggregateFunc::Avg => "avg",
        };
        match &self.arg {
            Some(arg) => write!(f, "{name}({arg})"),
            None => write!(f, "{name}()"),
        }
    }
}

/// The running state of one aggregate over one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Accumulator {
    func: AggregateFunc,
    count: i64,
    value: Value,
    /// Every non-NULL input, for `COUNT(DISTINCT)`; deduplicated by `finish`.
    seen: Vec<Value>,
}

impl Accumulator {
    /// Starts an empty group.
    pub fn new(func: AggregateFunc) -> Accumulator {
        Accumulator {
            func,
            count: 0,
            value: Value::Null,
            seen: Vec::new(),
        }
    }

    /// Adds one input: the argument's value (ignored by `COUNT(*)`).
    pub fn update(&mut self, input: &Value) -> Result<(), EvalError> {
        if self.func == AggregateFunc::CountStar {
            self.count += 1;
            return Ok(());
        }
        if input.is_null() {
            return Ok(());
        }
        self.count += 1;
        if self.func == AggregateFunc::CountDistinct {
            self.seen.push(input.clone());
            return Ok(());
        }
        self.value = match (self.func, &self.value, input) {
            (AggregateFunc::Count, _, _) => Value::Null,
            (_, Value::Null, Value::Int(i)) if self.func == AggregateFunc::Avg => {
                Value::Double(*i as f64)
            }
            (_, Value::Null, v) => v.clone(),
            (AggregateFunc::Sum, Value::Int(a), Value::Int(b)) => {
                Value::Int(a.checked_add(*b).ok_or(EvalError::Overflow { op: "SUM" })?)
            }
            (AggregateFunc::Sum | AggregateFunc::Avg, Value::Double(a), Value::Double(b)) => {
                Value::Double(a + b)
            }
            (AggregateFunc::Avg, Value::Double(a), Value::Int(b)) => Value::Double(a + *b as f64),
            (AggregateFunc::Min, current, v) => {
                if v.sort_cmp(current) == Ordering::Less {
                    v.clone()
                } else {
                    current.clone()
                }
            }
            (AggregateFunc::Max, current, v) => {
                if v.sort_cmp(current) == Ordering::Greater {
                    v.clone()
                } else {
                    current.clone()
                }
            }
            (_, _, v) => return Err(type_bug("an aggregate", v)),
        };
        Ok(())
    }

    /// Returns the aggregate's value for the group.
    pub fn finish(&self) -> Value {
        match (self.func, &self.value) {
            (AggregateFunc::CountStar | AggregateFunc::Count, _) => Value::Int(self.count),
            (AggregateFunc::CountDistinct, _) => {
                let mut values = self.seen.clone();
                values.sort_by(Value::sort_cmp);
                values.dedup_by(|a, b| a.sort_cmp(b) == Ordering::Equal);
                Value::Int(values.len() as i64)
            }
            (AggregateFunc::Avg, Value::Double(sum)) => Value::Double(sum / self.count as f64),
            (_, value) => value.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn lit(value: Value) -> Expr {
        let ty = value.data_type().unwrap_or(DataType::BigInt);
        Expr::Literal { value, ty }
    }

    fn int(i: i64) -> Expr {
        lit(Value::Int(i))
    }

    /// Written as PostgreSQL's float8 output writes them.
    #[test]
    fn doubles_as_text_as_postgres_writes_them() {
        for (d, want) in [
            (1e20, "1e+20"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1.5, "1.5"),
            (1.0, "1"),
            (-2.25, "-2.25"),
            (0.0, "0"),
            (-0.0, "-0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(cast(Value::Double(d), DataType::Text), Ok(Value::Text(want.to_owned())), "{d:?}");
        }
    }

    /// Read as PostgreSQL reads a bytea literal; anything else is an invalid cast.
    #[test]
    fn text_as_bytea_as_postgres_reads_it() {
        for (text, want) in [
            ("\\x41", &b"A"[..]),
            ("\\xDEADbeef", &[0xde, 0xad, 0xbe, 0xef][..]),
            ("\\x de ad", &[0xde, 0xad][..]),
            ("\\x", &[][..]),
            ("abc", &b"abc"[..]),
            ("a\\\\b", &b"a\\b"[..]),
            ("\\101\\000z", &[b'A', 0, b'z'][..]),
        ] {
            assert_eq!(cast(Value::Text(text.to_owned()), DataType::Bytea), Ok(Value::Bytes(want.to_vec())), "{text:?}");
        }
        for bad in ["\\x4", "\\x4g", "\\x+1", "\\x4 1", "a\\b", "\\400", "\\12", "tail\\"] {
            assert!(matches!(cast(Value::Text(bad.to_owned()), DataType::Bytea), Err(EvalError::InvalidCast { .. })), "{bad:?}");
        }
    }

    fn null_bool() -> Expr {
        Expr::Literal {
            value: Value::Null,
            ty: DataType::Boolean,
        }
    }

    fn bin(op: BinaryOp, l: Expr, r: Expr) -> Expr {
        Expr::Binary {
            op,
            left: Box::new(l),
            right: Box::new(r),
        }
    }

    fn eval(e: &Expr) -> Result<Value, EvalError> {
        e.eval(&[], &[])
    }

    #[test]
    fn three_valued_logic() {
        let t = lit(Value::Bool(true));
        let f = lit(Value::Bool(false));
        let n = null_bool();
        let cases = [
            (BinaryOp::And, &t, &n, Value::Null),
            (BinaryOp::And, &f, &n, Value::Bool(false)),
            (BinaryOp::And, &n, &f, Value::Bool(false)),
            (BinaryOp::And, &t, &t, Value::Bool(true)),
            (BinaryOp::Or, &t, &n, Value::Bool(true)),
            (BinaryOp::Or, &n, &t, Value::Bool(true)),
            (BinaryOp::Or, &f, &n, Value::Null),
            (BinaryOp::Or, &f, &f, Value::Bool(false)),
        ];
        for (op, l, r, want) in cases {
            assert_eq!(
                eval(&bin(op, l.clone(), r.clone())),
                Ok(want),
                "{l} {op:?} {r}"
            );
        }
        assert_eq!(eval(&Expr::Not(Box::new(n.clone()))), Ok(Value::Null));
        assert_eq!(
            eval(&bin(
                BinaryOp::Eq,
                int(1),
                Expr::Literal {
                    value: Value::Null,
                    ty: DataType::BigInt
                }
            )),
            Ok(Value::Null)
        );
        assert_eq!(
            eval(&Expr::IsNull {
                expr: Box::new(n),
                negated: false
            }),
            Ok(Value::Bool(true))
        );
        let null_int = Expr::Literal {
            value: Value::Null,
            ty: DataType::BigInt,
        };
        assert_eq!(
            eval(&bin(BinaryOp::IsDistinctFrom, int(1), null_int.clone())),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval(&bin(
                BinaryOp::IsDistinctFrom,
                null_int.clone(),
                null_int.clone()
            )),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            eval(&bin(
                BinaryOp::IsNotDistinctFrom,
                null_int.clone(),
                null_int
            )),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval(&bin(BinaryOp::IsNotDistinctFrom, int(1), int(2))),
            Ok(Value::Bool(false))
        );
    }

    #[test]
    fn integer_overflow_and_division_by_zero_are_errors() {
        assert_eq!(
            eval(&bin(BinaryOp::Add, int(i64::MAX), int(1))),
            Err(EvalError::Overflow { op: "+" })
        );
        assert_eq!(
            eval(&bin(BinaryOp::Mul, int(i64::MIN), int(-1))),
            Err(EvalError::Overflow { op: "*" })
        );
        assert_eq!(
            eval(&bin(BinaryOp::Div, int(i64::MIN), int(-1))),
            Err(EvalError::Overflow { op: "/" })
        );
        assert_eq!(
            eval(&Expr::Negate(Box::new(int(i64::MIN)))),
            Err(EvalError::Overflow { op: "-" })
        );
        assert_eq!(
            eval(&bin(BinaryOp::Div, int(1), int(0))),
            Err(EvalError::DivisionByZero)
        );
        assert_eq!(
            eval(&bin(BinaryOp::Mod, int(1), int(0))),
            Err(EvalError::DivisionByZero)
        );
        assert_eq!(
            eval(&bin(
                BinaryOp::Div,
                lit(Value::Double(1.0)),
                lit(Value::Double(0.0))
            )),
            Err(EvalError::DivisionByZero)
        );
        assert_eq!(
            eval(&bin(BinaryOp::Div, int(-7), int(2))),
            Ok(Value::Int(-3))
        );
        assert_eq!(
            eval(&bin(BinaryOp::Mod, int(-7), int(2))),
            Ok(Value::Int(-1))
        );
        assert_eq!(
            eval(&bin(BinaryOp::Mod, int(i64::MIN), int(-1))),
            Ok(Value::Int(0))
        );
    }

    #[test]
    fn like_matches_percent_underscore_and_escapes() {
        for (text, pattern, want) in [
            ("hello", "h%", true),
            ("hello", "%llo", true),
            ("hello", "h_llo", true),
            ("hello", "h_lo", false),
            ("hello", "%", true),
            ("", "%", true),
            ("", "_", false),
            ("a%b", "a\\%b", true),
            ("axb", "a\\%b", false),
            ("a_b", "a\\_b", true),
            ("mississippi", "%iss%ppi", true),
            ("mississippi", "%iss%ppx", false),
            ("héllo", "h_llo", true),
        ] {
            assert_eq!(like(text, pattern), want, "{text:?} LIKE {pattern:?}");
        }
        let e = Expr::Like {
            expr: Box::new(lit(Value::Text("Hello".into()))),
            pattern: Box::new(lit(Value::Text("hel%".into()))),
            negated: false,
            case_insensitive: true,
        };
        assert_eq!(eval(&e), Ok(Value::Bool(true)));
    }

    #[test]
    fn in_list_between_case_coalesce() {
        let null_int = Expr::Literal {
            value: Value::Null,
            ty: DataType::BigInt,
        };
        let in_list = |x: Expr, list: Vec<Expr>, negated| Expr::InList {
            expr: Box::new(x),
            list,
            negated,
        };
        assert_eq!(
            eval(&in_list(int(2), vec![int(1), int(2)], false)),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval(&in_list(int(3), vec![int(1), null_int.clone()], false)),
            Ok(Value::Null)
        );
        assert_eq!(
            eval(&in_list(int(3), vec![int(1), int(2)], true)),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval(&in_list(null_int.clone(), vec![int(1)], false)),
            Ok(Value::Null)
        );
        let between = |x, negated| Expr::Between {
            expr: Box::new(x),
            low: Box::new(int(1)),
            high: Box::new(int(3)),
            negated,
        };
        assert_eq!(eval(&between(int(3), false)), Ok(Value::Bool(true)));
        assert_eq!(eval(&between(int(4), false)), Ok(Value::Bool(false)));
        assert_eq!(eval(&between(int(4), true)), Ok(Value::Bool(true)));
        assert_eq!(eval(&between(null_int.clone(), false)), Ok(Value::Null));
        let case = Expr::Case {
            operand: Some(Box::new(Expr::Column {
                index: 0,
                name: "x".into(),
                ty: DataType::BigInt,
            })),
            branches: vec![
                (int(1), lit(Value::Text("one".into()))),
                (int(2), lit(Value::Text("two".into()))),
            ],
            otherwise: None,
            ty: DataType::Text,
        };
        assert_eq!(
            case.eval(&[Value::Int(2)], &[]),
            Ok(Value::Text("two".into()))
        );
        assert_eq!(case.eval(&[Value::Int(5)], &[]), Ok(Value::Null));
        assert_eq!(case.eval(&[Value::Null], &[]), Ok(Value::Null));
        let coalesce = Expr::Coalesce {
            args: vec![
                null_int,
                Expr::Param {
                    index: 0,
                    ty: DataType::BigInt,
                },
                int(9),
            ],
            ty: DataType::BigInt,
        };
        assert_eq!(coalesce.eval(&[], &[Value::Int(4)]), Ok(Value::Int(4)));
        assert_eq!(coalesce.eval(&[], &[Value::Null]), Ok(Value::Int(9)));
    }

    #[test]
    fn params_are_checked_and_widened() {
        let p = Expr::Param {
            index: 0,
            ty: DataType::Double,
        };
        assert_eq!(p.eval(&[], &[Value::Int(2)]), Ok(Value::Double(2.0)));
        assert_eq!(p.eval(&[], &[Value::Null]), Ok(Value::Null));
        assert!(matches!(
            p.eval(&[], &[Value::Text("x".into())]),
            Err(EvalError::BadParameter { number: 1, .. })
        ));
        assert!(matches!(
            p.eval(&[], &[]),
            Err(EvalError::BadParameter { number: 1, .. })
        ));
        let c = Expr::Column {
            index: 3,
            name: "c".into(),
            ty: DataType::BigInt,
        };
        assert!(matches!(
            c.eval(&[Value::Null], &[]),
            Err(EvalError::Internal(_))
        ));
    }

    #[test]
    fn scalar_functions() {
        let call = |func, v| Expr::Call {
            func,
            arg: Box::new(lit(v)),
        };
        assert_eq!(
            eval(&call(ScalarFunc::Lower, Value::Text("ÀBc".into()))),
            Ok(Value::Text("àbc".into()))
        );
        assert_eq!(
            eval(&call(ScalarFunc::Upper, Value::Text("abc".into()))),
            Ok(Value::Text("ABC".into()))
        );
        assert_eq!(
            eval(&call(ScalarFunc::Length, Value::Text("héllo".into()))),
            Ok(Value::Int(5))
        );
        assert_eq!(
            eval(&call(ScalarFunc::Abs, Value::Int(-3))),
            Ok(Value::Int(3))
        );
        assert_eq!(
            eval(&call(ScalarFunc::Abs, Value::Double(-2.5))),
            Ok(Value::Double(2.5))
        );
        assert_eq!(
            eval(&call(ScalarFunc::Abs, Value::Int(i64::MIN))),
            Err(EvalError::Overflow { op: "abs" })
        );
        assert_eq!(
            eval(&Expr::Call {
                func: ScalarFunc::Lower,
                arg: Box::new(Expr::Literal {
                    value: Value::Null,
                    ty: DataType::Text
                })
            }),
            Ok(Value::Null)
        );
    }

    #[test]
    fn casts_and_concatenation() {
        assert_eq!(
            cast(Value::Text(" 42 ".into()), DataType::BigInt),
            Ok(Value::Int(42))
        );
        assert_eq!(
            cast(Value::Double(2.5), DataType::BigInt),
            Ok(Value::Int(2))
        );
        assert_eq!(
            cast(Value::Double(3.5), DataType::BigInt),
            Ok(Value::Int(4))
        );
        assert!(cast(Value::Double(1e30), DataType::BigInt).is_err());
        assert!(cast(Value::Text("x".into()), DataType::Double).is_err());
        assert_eq!(
            cast(Value::Text("yes".into()), DataType::Boolean),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            cast(Value::Int(7), DataType::Text),
            Ok(Value::Text("7".into()))
        );
        assert_eq!(cast(Value::Null, DataType::Text), Ok(Value::Null));
        let concat = bin(
            BinaryOp::Concat,
            lit(Value::Text("a".into())),
            lit(Value::Text("b".into())),
        );
        assert_eq!(eval(&concat), Ok(Value::Text("ab".into())));
    }

    #[test]
    fn accumulators_follow_sql() {
        let run = |func, inputs: &[Value]| {
            let mut acc = Accumulator::new(func);
            for v in inputs {
                acc.update(v)?;
            }
            Ok::<Value, EvalError>(acc.finish())
        };
        let values = [Value::Int(3), Value::Null, Value::Int(1)];
        assert_eq!(run(AggregateFunc::CountStar, &values), Ok(Value::Int(3)));
        assert_eq!(run(AggregateFunc::Count, &values), Ok(Value::Int(2)));
        assert_eq!(run(AggregateFunc::Sum, &values), Ok(Value::Int(4)));
        assert_eq!(run(AggregateFunc::Min, &values), Ok(Value::Int(1)));
        assert_eq!(run(AggregateFunc::Max, &values), Ok(Value::Int(3)));
        assert_eq!(run(AggregateFunc::Avg, &values), Ok(Value::Double(2.0)));
        assert_eq!(run(AggregateFunc::Sum, &[]), Ok(Value::Null));
        assert_eq!(run(AggregateFunc::Count, &[]), Ok(Value::Int(0)));
        let repeated = [
            Value::Text("b".into()),
            Value::Null,
            Value::Text("a".into()),
            Value::Text("b".into()),
        ];
        assert_eq!(
            run(AggregateFunc::CountDistinct, &repeated),
            Ok(Value::Int(2))
        );
        assert_eq!(
            run(AggregateFunc::CountDistinct, &[Value::Null]),
            Ok(Value::Int(0))
        );
        assert_eq!(
            run(AggregateFunc::Sum, &[Value::Int(i64::MAX), Value::Int(1)]),
            Err(EvalError::Overflow { op: "SUM" })
        );
        assert_eq!(
            run(
                AggregateFunc::Min,
                &[Value::Text("b".into()), Value::Text("a".into())]
            ),
            Ok(Value::Text("a".into()))
        );
    }

    proptest! {
        /// Integer arithmetic agrees with checked i64 arithmetic: a value or an error, never a wrap.
        #[test]
        fn integer_arithmetic_never_wraps(a in any::<i64>(), b in any::<i64>()) {
            for (op, want) in [
                (BinaryOp::Add, a.checked_add(b)),
                (BinaryOp::Sub, a.checked_sub(b)),
                (BinaryOp::Mul, a.checked_mul(b)),
            ] {
                let got = eval(&bin(op, int(a), int(b)));
                match want {
                    Some(v) => prop_assert_eq!(got, Ok(Value::Int(v))),
                    None => prop_assert!(matches!(got, Err(EvalError::Overflow { .. })), "expected overflow, got {:?}", got),
                }
            }
        }

        /// A DOUBLE written as text reads back as the same value.
        #[test]
        fn double_text_reads_back(d in any::<f64>().prop_filter("a number", |d| d.is_finite())) {
            let text = double_text(d);
            prop_assert_eq!(text.parse::<f64>().map(f64::to_bits), Ok(d.to_bits()), "{}", text);
        }

        /// Bytes written in PostgreSQL's hex form read back.
        #[test]
        fn bytea_hex_reads_back(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(bytea_input(&format!("\\x{hex}")), Some(bytes));
        }

        /// LIKE with a pattern without wildcards is equality; `%` around it is containment.
        #[test]
        fn like_agrees_with_equality_and_contains(text in "[a-c]{0,8}", needle in "[a-c]{0,3}") {
            prop_assert_eq!(like(&text, &needle), text == needle);
            prop_assert_eq!(like(&text, &format!("%{needle}%")), text.contains(&needle));
            prop_assert_eq!(like(&text, &format!("{needle}%")), text.starts_with(&needle));
        }
    }
}
