//! SQL types and values: what the store encodes into keys and rows.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A column or expression type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DataType {
    /// 64-bit signed integer (SQL BIGINT, INT, INTEGER, SMALLINT).
    BigInt,
    /// 64-bit IEEE float (SQL DOUBLE, DOUBLE PRECISION, FLOAT, REAL).
    Double,
    /// UTF-8 text (SQL TEXT, VARCHAR).
    Text,
    /// SQL BOOLEAN.
    Boolean,
    /// Bytes (SQL BYTEA).
    Bytea,
    /// Microseconds since the Unix epoch, UTC (SQL TIMESTAMP).
    Timestamp,
}

impl DataType {
    /// Tells whether arithmetic applies to the type.
    pub fn is_numeric(self) -> bool {
        matches!(self, DataType::BigInt | DataType::Double)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataType::BigInt => "BIGINT",
            DataType::Double => "DOUBLE",
            DataType::Text => "TEXT",
            DataType::Boolean => "BOOLEAN",
            DataType::Bytea => "BYTEA",
            DataType::Timestamp => "TIMESTAMP",
        })
    }
}

/// A SQL value. `Null` belongs to every type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A BIGINT.
    Int(i64),
    /// A DOUBLE.
    Double(f64),
    /// A TEXT.
    Text(String),
    /// A BOOLEAN.
    Bool(bool),
    /// A BYTEA.
    Bytes(Vec<u8>),
    /// A TIMESTAMP, microseconds since the epoch.
    Timestamp(i64),
}

impl Value {
    /// Returns the value's type, or `None` for NULL.
    pub fn data_type(&self) -> Option<DataType> {
        Some(match self {
            Value::Null => return None,
            Value::Int(_) => DataType::BigInt,
            Value::Double(_) => DataType::Double,
            Value::Text(_) => DataType::Text,
            Value::Bool(_) => DataType::Boolean,
            Value::Bytes(_) => DataType::Bytea,
            Value::Timestamp(_) => DataType::Timestamp,
        })
    }

    /// Tells whether the value is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Tells whether the value may be stored in a column of type `ty` (NULL always may).
    pub fn fits(&self, ty: DataType) -> bool {
        self.data_type().is_none_or(|own| own == ty)
    }

    /// Compares two non-NULL values of the same type, as SQL does; `None` when either is
    /// NULL or the types differ. Doubles compare as in PostgreSQL: `-0.0 = 0.0`, NaN equals
    /// NaN and sorts above every number.
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) | (Value::Timestamp(a), Value::Timestamp(b)) => {
                Some(a.cmp(b))
            }
            (Value::Double(a), Value::Double(b)) => Some(cmp_f64(*a, *b)),
            (Value::Int(a), Value::Double(b)) => Some(cmp_f64(*a as f64, *b)),
            (Value::Double(a), Value::Int(b)) => Some(cmp_f64(*a, *b as f64)),
            (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Bytes(a), Value::Bytes(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// Orders values for ORDER BY: NULLs sort after every other value (as in PostgreSQL's
    /// default for ASC). Values of different types order by type, which a type-checked
    /// plan never compares.
    pub fn sort_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Greater,
            (_, Value::Null) => Ordering::Less,
            _ => self
                .sql_cmp(other)
                .unwrap_or_else(|| self.data_type().cmp(&other.data_type())),
        }
    }
}

impl fmt::Display for Value {
    /// Prints the value as a SQL literal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v:?}"),
            Value::Text(v) => write!(f, "'{}'", v.replace('\'', "''")),
            Value::Bool(v) => f.write_str(if *v { "TRUE" } else { "FALSE" }),
            Value::Bytes(v) => {
                f.write_str("'\\x")?;
                for byte in v {
                    write!(f, "{byte:02x}")?;
                }
                f.write_str("'")
            }
            Value::Timestamp(v) => write!(f, "TIMESTAMP '{}'", format_timestamp(*v)),
        }
    }
}

/// Orders doubles as PostgreSQL does: `-0.0` equals `0.0`, every NaN equals every other
/// NaN and sorts above all numbers.
fn cmp_f64(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Parses `YYYY-MM-DD[( |T)HH:MM[:SS[.ffffff]]]` (UTC, no time zone) into microseconds
/// since the epoch; `None` if malformed or out of range. Years 1 to 9999.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let text = text.trim();
    let (date, time) = match text.find([' ', 'T']) {
        Some(i) => (&text[..i], Some(text[i + 1..].trim_start())),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let number = |s: Option<&str>, digits: std::ops::RangeInclusive<usize>| {
        s.filter(|s| digits.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<i64>().ok())
    };
    let year = number(parts.next(), 4..=4)?;
    let month = number(parts.next(), 2..=2)?;
    let day = number(parts.next(), 2..=2)?;
    if parts.next().is_some() || year < 1 || !(1..=12).contains(&month) || day < 1 {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if day > month_days[(month - 1) as usize] {
        return None;
    }
    let mut micros_of_day = 0;
    if let Some(time) = time {
        let (hms, fraction) = match time.split_once('.') {
            Some((hms, f)) => (hms, Some(f)),
            None => (time, None),
        };
        let mut t = hms.split(':');
        let hour = number(t.next(), 2..=2)?;
        let minute = number(t.next(), 2..=2)?;
        let second = match t.next() {
            Some(s) => number(Some(s), 2..=2)?,
            None if fraction.is_none() => 0,
            None => return None,
        };
        if t.next().is_some() || hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let micros = match fraction {
            None => 0,
            Some(f) => {
                let digits = number(Some(f), 1..=6)?;
                digits * 10_i64.pow(6 - f.len() as u32)
            }
        };
        micros_of_day = ((hour * 60 + minute) * 60 + second) * MICROS_PER_SECOND + micros;
    }
    Some(days_from_civil(year, month, day) * SECONDS_PER_DAY * MICROS_PER_SECOND + micros_of_day)
}

/// Formats microseconds since the epoch as `YYYY-MM-DD HH:MM:SS[.ffffff]` (UTC).
pub fn format_timestamp(micros: i64) -> String {
    let per_day = SECONDS_PER_DAY * MICROS_PER_SECOND;
    let (days, rest) = (micros.div_euclid(per_day), micros.rem_euclid(per_day));
    let (year, month, day) = civil_from_days(days);
    let (seconds, fraction) = (rest / MICROS_PER_SECOND, rest % MICROS_PER_SECOND);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    if fraction != 0 {
        out.push_str(format!(".{fraction:06}").trim_end_matches('0'));
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn doubles_compare_like_postgresql() {
        let d = Value::Double;
        assert_eq!(d(-0.0).sql_cmp(&d(0.0)), Some(Ordering::Equal));
        assert_eq!(d(f64::NAN).sql_cmp(&d(-f64::NAN)), Some(Ordering::Equal));
        assert_eq!(
            d(f64::NAN).sql_cmp(&d(f64::INFINITY)),
            Some(Ordering::Greater)
        );
        assert_eq!(d(1.0).sql_cmp(&Value::Int(1)), Some(Ordering::Equal));
        assert_eq!(Value::Null.sort_cmp(&d(f64::NAN)), Ordering::Greater);
        assert_eq!(Value::Int(1).sql_cmp(&Value::Text("1".into())), None);
    }

    #[test]
    fn timestamps_parse_and_format() {
        assert_eq!(parse_timestamp("1970-01-01"), Some(0));
        assert_eq!(parse_timestamp("1970-01-02 00:00:01"), Some(86_401_000_000));
        assert_eq!(
            parse_timestamp("2024-02-29T12:30:00.5"),
            Some(1_709_209_800_500_000)
        );
        assert_eq!(parse_timestamp("1969-12-31 23:59:59.999999"), Some(-1));
        assert_eq!(parse_timestamp("2023-02-29"), None);
        assert_eq!(parse_timestamp("2024-13-01"), None);
        assert_eq!(parse_timestamp("2024-01-01 24:00:00"), None);
        assert_eq!(parse_timestamp("2024-01-01 10:00:00.1234567"), None);
        assert_eq!(parse_timestamp("24-01-01"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(
            format_timestamp(1_709_209_800_500_000),
            "2024-02-29 12:30:00.5"
        );
        assert_eq!(format_timestamp(-1), "1969-12-31 23:59:59.999999");
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00");
    }

    proptest! {
        #[test]
        fn timestamps_round_trip(micros in -62_135_596_800_000_000i64..253_402_300_799_999_999) {
            prop_assert_eq!(parse_timestamp(&format_timestamp(micros)), Some(micros));
        }
    }
}
