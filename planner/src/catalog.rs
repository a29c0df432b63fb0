//! The catalog: tables, columns, keys, partitioning and indexes, built from DDL text.
//!
//! A [`Catalog`] is an immutable value. [`Catalog::apply`] returns a new catalog (the
//! server swaps it whole), so DDL text can be logged and replayed to rebuild it exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use sqlparser::ast::helpers::stmt_create_table::CreateTableBuilder;
use sqlparser::ast::{
    self, ColumnOption, CreateIndex, CreateTable, CreateTableOptions, ObjectType, SqlOption,
    Statement, TableConstraint, TimezoneInfo,
};

use crate::error::{PlanError, PlanErrors, Position};
use crate::syntax::{
    self, at, at_ident, constant, ident, invalid, single_name, unsupported, unsupported_hint,
};
use crate::value::{DataType, Value};

/// Most columns in one table.
pub const TABLE_COLUMNS_MAX: usize = 256;
/// Most columns in a primary key or an index.
pub const KEY_COLUMNS_MAX: usize = 16;

/// Stable id of a table; the store keys a table's rows by it. Never reused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct TableId(pub u32);

/// Stable id of an index; the store keys the index's entries by it. Never reused.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct IndexId(pub u32);

/// A column of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Name, normalized (unquoted names are lower case).
    pub name: String,
    /// Type.
    pub data_type: DataType,
    /// Whether NULL may be stored. Primary-key columns never are nullable.
    pub nullable: bool,
    /// The value an INSERT stores when it does not name the column (NULL if `None`).
    pub default: Option<Value>,
}

/// A secondary index.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    /// Stable id.
    pub id: IndexId,
    /// Name, unique in the catalog.
    pub name: String,
    /// Indexed columns, as indexes into [`Table::columns`], in key order.
    pub columns: Vec<usize>,
    /// Whether two rows may not share the indexed values (rows with a NULL among them
    /// never conflict, as in SQL).
    pub unique: bool,
}

/// A table.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Stable id.
    pub id: TableId,
    /// Name, normalized.
    pub name: String,
    /// Columns in declaration order; rows are laid out in this order.
    pub columns: Vec<Column>,
    /// Primary-key columns, as indexes into `columns`, in key order.
    pub primary_key: Vec<usize>,
    /// For each primary-key column (as `primary_key` lists them), whether it is declared
    /// `DESC`: rows lie in descending order of its values, so that reading them in that
    /// order is a forward scan.
    pub key_descending: Vec<bool>,
    /// The column whose value chooses a row's partition; always a primary-key column.
    pub partition_column: usize,
    /// Secondary indexes.
    pub indexes: Vec<Index>,
}

impl Table {
    /// Finds a column by normalized name.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Whether primary-key column `i` (in key order) is declared `DESC`.
    pub fn key_column_descending(&self, i: usize) -> bool {
        self.key_descending.get(i).copied().unwrap_or(false)
    }
}

impl fmt::Display for Table {
    /// Prints the table as canonical DDL (one line).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TABLE {} #{} (", self.name, self.id.0)?;
        for (i, c) in self.columns.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {}", c.name, c.data_type)?;
            if !c.nullable {
                f.write_str(" NOT NULL")?;
            }
            if let Some(d) = &c.default {
                write!(f, " DEFAULT {d}")?;
            }
        }
        let names = |cols: &[usize]| {
            cols.iter()
                .map(|&i| self.columns[i].name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let key = self
            .primary_key
            .iter()
            .zip(&self.key_descending)
            .map(|(&i, &desc)| {
                let name = &self.columns[i].name;
                if desc { format!("{name} DESC") } else { name.clone() }
            })
            .collect::<Vec<_>>()
            .join(", ");
        write!(
            f,
            ") PRIMARY KEY ({key}) PARTITION BY {}",
            self.columns[self.partition_column].name
        )?;
        for index in &self.indexes {
            let unique = if index.unique { "UNIQUE " } else { "" };
            write!(
                f,
                "; {unique}INDEX {} #{} ({})",
                index.name,
                index.id.0,
                names(&index.columns)
            )?;
        }
        Ok(())
    }
}

/// The schema: every table and index. Cheap to clone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    tables: BTreeMap<String, Arc<Table>>,
    /// Each table's name by its id: every statement executed finds its tables by id.
    names: BTreeMap<TableId, String>,
    /// The tables dropped, by id, as they were when dropped: readers of the log's history
    /// (the trace feed) meet writes to them in records older than the drop. One entry per
    /// table ever dropped, kept for good, as the DDL that dropped it is.
    dropped: BTreeMap<TableId, Arc<Table>>,
    /// The next id handed to a table or index; ids are never reused, so a dropped table's
    /// leftover data can never be read as a new table's.
    next_id: u32,
}

impl Catalog {
    /// Returns an empty catalog.
    pub fn new() -> Catalog {
        Catalog::default()
    }

    /// Finds a table by normalized name.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.get(name).map(|t| &**t)
    }

    /// Finds a table by id.
    pub fn table_by_id(&self, id: TableId) -> Option<&Table> {
        self.names.get(&id).and_then(|name| self.table(name))
    }

    /// Finds a table by id, a dropped one too: for reading records written before the drop
    /// (ids are never reused, so an id names one definition for all time).
    pub fn table_by_id_or_dropped(&self, id: TableId) -> Option<&Table> {
        self.table_by_id(id).or_else(|| self.dropped.get(&id).map(|t| &**t))
    }

    /// Iterates over the tables in name order.
    pub fn tables(&self) -> impl Iterator<Item = &Table> {
        self.tables.values().map(|t| &**t)
    }

    /// Applies a DDL script (`CREATE TABLE`, `CREATE INDEX`, `DROP TABLE`, `DROP INDEX`,
    /// separated by `;`) and returns the new catalog. The script applies whole or not at
    /// all; every finding in it is reported.
    pub fn apply(&self, sql: &str) -> Result<Catalog, PlanErrors> {
        let statements = syntax::parse(sql)?;
        let mut next = self.clone();
        let mut errors = Vec::new();
        if statements.is_empty() {
            errors.push(invalid("empty DDL script", Position { line: 1, column: 1 }));
        }
        for statement in &statements {
            next.apply_statement(statement, &mut errors);
        }
        if errors.is_empty() {
            Ok(next)
        } else {
            Err(PlanErrors::new(errors))
        }
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn apply_statement(&mut self, statement: &Statement, errors: &mut Vec<PlanError>) {
        match statement {
            Statement::CreateTable(create) => self.create_table(create, errors),
            Statement::CreateIndex(create) => self.create_index(create, errors),
            Statement::Drop {
                object_type,
                if_exists,
                names,
                cascade,
                purge,
                temporary,
                table,
                ..
            } => {
                if *cascade || *purge || *temporary || table.is_some() {
                    errors.push(unsupported(
                        "DROP with CASCADE, PURGE, TEMPORARY or ON",
                        at(statement),
                    ));
                    return;
                }
                for name in names {
                    let Some((name, pos)) = single_name(name, errors) else {
                        continue;
                    };
                    match object_type {
                        ObjectType::Table => {
                            match self.tables.remove(&name) {
                                Some(table) => {
                                    self.names.remove(&table.id);
                                    self.dropped.insert(table.id, table);
                                }
                                None if !if_exists => errors.push(PlanError::UnknownTable {
                                    table: name,
                                    at: pos,
                                }),
                                None => {}
                            }
                        }
                        ObjectType::Index => self.drop_index(&name, *if_exists, pos, errors),
                        other => errors.push(unsupported(format!("DROP {other}"), at(statement))),
                    }
                }
            }
            other => errors.push(unsupported_hint(
                format!("{} in DDL", statement_kind(other)),
                "DDL is CREATE TABLE, CREATE INDEX, DROP TABLE or DROP INDEX",
                at(other),
            )),
        }
    }

    fn drop_index(
        &mut self,
        name: &str,
        if_exists: bool,
        pos: Position,
        errors: &mut Vec<PlanError>,
    ) {
        for table in self.tables.values_mut() {
            if let Some(i) = table.indexes.iter().position(|index| index.name == name) {
                Arc::make_mut(table).indexes.remove(i);
                return;
            }
        }
        if !if_exists {
            errors.push(PlanError::UnknownIndex {
                index: name.to_owned(),
                at: pos,
            });
        }
    }

    fn index_exists(&self, name: &str) -> bool {
        self.tables
            .values()
            .any(|t| t.indexes.iter().any(|i| i.name == name))
    }

    fn create_table(&mut self, create: &CreateTable, errors: &mut Vec<PlanError>) {
        let before = errors.len();
        let Some((name, name_at)) = single_name(&create.name, errors) else {
            return;
        };
        // Everything this planner reads is blanked; what remains must equal a bare
        // CREATE TABLE, so any clause not understood here is rejected, never ignored.
        let mut rest = create.clone();
        rest.columns.clear();
        rest.constraints.clear();
        rest.table_options = CreateTableOptions::None;
        rest.if_not_exists = false;
        if rest != CreateTableBuilder::new(create.name.clone()).build() {
            errors.push(unsupported_hint(
                format!("a clause of CREATE TABLE {name}"),
                "CREATE TABLE takes columns, PRIMARY KEY, UNIQUE and WITH (partition_by = '...')",
                at(&create.name),
            ));
            return;
        }
        if self.tables.contains_key(&name) {
            if !create.if_not_exists {
                errors.push(PlanError::AlreadyExists {
                    kind: "table",
                    name,
                    at: name_at,
                });
            }
            return;
        }
        if create.columns.len() > TABLE_COLUMNS_MAX {
            errors.push(PlanError::LimitExceeded {
                what: format!("table {name} with {} columns", create.columns.len()),
                limit: TABLE_COLUMNS_MAX,
            });
            return;
        }
        let mut columns: Vec<Column> = Vec::new();
        let mut primary_key: Option<Vec<(usize, bool)>> = None;
        let mut uniques: Vec<(Vec<usize>, Position)> = Vec::new();
        for def in &create.columns {
            let column = ident(&def.name);
            let pos = at_ident(&def.name);
            if columns.iter().any(|c| c.name == column) {
                errors.push(PlanError::DuplicateColumn {
                    table: name.clone(),
                    column,
                    place: "the column list",
                    at: pos,
                });
                continue;
            }
            let Some(data_type) = column_type(&def.data_type) else {
                errors.push(PlanError::UnknownType {
                    table: name.clone(),
                    column,
                    type_name: def.data_type.to_string(),
                    at: pos,
                });
                continue;
            };
            let index = columns.len();
            let mut col = Column {
                name: column,
                data_type,
                nullable: true,
                default: None,
            };
            for option in &def.options {
                match &option.option {
                    ColumnOption::Null => {}
                    ColumnOption::NotNull => col.nullable = false,
                    ColumnOption::Default(expr) => match constant(expr) {
                        Some(Value::Null) => {}
                        Some(value) => match coerce_constant(value, data_type) {
                            Some(value) => col.default = Some(value),
                            None => errors.push(invalid(
                                format!(
                                    "table {name}, column {}: DEFAULT {expr} is not a {data_type}",
                                    col.name
                                ),
                                at(expr),
                            )),
                        },
                        None => errors.push(unsupported_hint(
                            format!("table {name}, column {}: DEFAULT {expr}", col.name),
                            "a default must be a constant, so that replay is deterministic",
                            at(expr),
                        )),
                    },
                    ColumnOption::PrimaryKey(_) => {
                        if primary_key.is_some() {
                            errors.push(PlanError::MultiplePrimaryKeys {
                                table: name.clone(),
                                at: pos,
                            });
                        }
                        primary_key = Some(vec![(index, false)]);
                    }
                    ColumnOption::Unique(_) => uniques.push((vec![index], pos)),
                    other => errors.push(unsupported(
                        format!("table {name}, column {}: column option {other}", col.name),
                        at(option),
                    )),
                }
            }
            columns.push(col);
        }
        let table_of = |columns: &[Column],
                        list: &[ast::IndexColumn],
                        place: &'static str,
                        descending_allowed: bool,
                        errors: &mut Vec<PlanError>| {
            index_columns(&name, columns, list, place, descending_allowed, errors)
        };
        for constraint in &create.constraints {
            match constraint {
                TableConstraint::PrimaryKey(pk) => {
                    if primary_key.is_some() {
                        errors.push(PlanError::MultiplePrimaryKeys {
                            table: name.clone(),
                            at: at(constraint),
                        });
                    }
                    primary_key = table_of(&columns, &pk.columns, "the PRIMARY KEY", true, errors);
                }
                TableConstraint::Unique(unique) => {
                    if let Some(cols) =
                        table_of(&columns, &unique.columns, "a UNIQUE constraint", false, errors)
                    {
                        uniques.push((ascending(cols), at(constraint)));
                    }
                }
                other => errors.push(unsupported(
                    format!("table {name}: constraint {other}"),
                    at(other),
                )),
            }
        }
        let mut partition_by: Option<(String, Position)> = None;
        let options = match &create.table_options {
            CreateTableOptions::None => &[][..],
            CreateTableOptions::With(options) => options.as_slice(),
            other => {
                errors.push(unsupported(
                    format!("table {name}: options {other}"),
                    at(other),
                ));
                &[][..]
            }
        };
        for option in options {
            match option {
                SqlOption::KeyValue { key, value } if ident(key) == "partition_by" => {
                    let column = match value {
                        ast::Expr::Value(v) => v.value.clone().into_string(),
                        ast::Expr::Identifier(id) => Some(ident(id)),
                        _ => None,
                    };
                    match column {
                        Some(column) => partition_by = Some((column, at(value))),
                        None => errors.push(invalid(format!("table {name}: partition_by must name a column, as in partition_by = 'col'"), at(value))),
                    }
                }
                other => errors.push(unsupported_hint(
                    format!("table {name}: table option {other}"),
                    "the only table option is partition_by",
                    at(other),
                )),
            }
        }
        if errors.len() > before {
            return;
        }
        let Some(primary_key) = primary_key.filter(|key| !key.is_empty()) else {
            errors.push(PlanError::MissingPrimaryKey {
                table: name,
                at: at(&create.name),
            });
            return;
        };
        let (primary_key, key_descending): (Vec<usize>, Vec<bool>) = primary_key.into_iter().unzip();
        for &i in &primary_key {
            columns[i].nullable = false;
        }
        let partition_column = match partition_by {
            None => primary_key[0],
            Some((column, pos)) => match columns.iter().position(|c| c.name == column) {
                None => {
                    errors.push(PlanError::UnknownColumn {
                        table: name,
                        column,
                        at: pos,
                    });
                    return;
                }
                Some(i) if !primary_key.contains(&i) => {
                    errors.push(PlanError::PartitionColumnNotInKey {
                        table: name,
                        column,
                        at: pos,
                    });
                    return;
                }
                Some(i) => i,
            },
        };
        let mut table = Table {
            id: TableId(self.take_id()),
            name: name.clone(),
            columns,
            primary_key,
            key_descending,
            partition_column,
            indexes: Vec::new(),
        };
        for (cols, pos) in uniques {
            let index_name = format!(
                "{name}_{}_key",
                cols.iter()
                    .map(|&i| table.columns[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join("_")
            );
            if self.index_exists(&index_name) || table.indexes.iter().any(|i| i.name == index_name)
            {
                errors.push(PlanError::AlreadyExists {
                    kind: "index",
                    name: index_name,
                    at: pos,
                });
                continue;
            }
            table.indexes.push(Index {
                id: IndexId(self.take_id()),
                name: index_name,
                columns: cols,
                unique: true,
            });
        }
        self.names.insert(table.id, name.clone());
        self.tables.insert(name, Arc::new(table));
    }

    fn create_index(&mut self, create: &CreateIndex, errors: &mut Vec<PlanError>) {
        let Some((table_name, table_at)) = single_name(&create.table_name, errors) else {
            return;
        };
        if create.using.is_some()
            || create.concurrently
            || !create.include.is_empty()
            || create.nulls_distinct.is_some()
            || !create.with.is_empty()
            || create.predicate.is_some()
            || !create.index_options.is_empty()
            || !create.alter_options.is_empty()
        {
            errors.push(unsupported(
                format!("a clause of CREATE INDEX on {table_name} (USING, CONCURRENTLY, INCLUDE, NULLS, WITH or WHERE)"),
                at(&create.table_name),
            ));
            return;
        }
        let Some(table) = self.tables.get(&table_name) else {
            errors.push(PlanError::UnknownTable {
                table: table_name,
                at: table_at,
            });
            return;
        };
        let Some(columns) = index_columns(
            &table_name,
            &table.columns,
            &create.columns,
            "the index",
            false,
            errors,
        ) else {
            return;
        };
        let columns = ascending(columns);
        let name = match &create.name {
            Some(name) => match single_name(name, errors) {
                Some((name, _)) => name,
                None => return,
            },
            None => format!(
                "{table_name}_{}_idx",
                columns
                    .iter()
                    .map(|&i| table.columns[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join("_")
            ),
        };
        if self.index_exists(&name) {
            if !create.if_not_exists {
                let pos = create.name.as_ref().map_or(table_at, at);
                errors.push(PlanError::AlreadyExists {
                    kind: "index",
                    name,
                    at: pos,
                });
            }
            return;
        }
        let id = IndexId(self.take_id());
        if let Some(table) = self.tables.get_mut(&table_name) {
            Arc::make_mut(table).indexes.push(Index {
                id,
                name,
                columns,
                unique: create.unique,
            });
        }
    }
}

/// Resolves the column list of a key or index: plain column names, each with whether it is
/// declared `DESC` (only where `descending_allowed`: a primary key).
fn index_columns(
    table: &str,
    columns: &[Column],
    list: &[ast::IndexColumn],
    place: &'static str,
    descending_allowed: bool,
    errors: &mut Vec<PlanError>,
) -> Option<Vec<(usize, bool)>> {
    let before = errors.len();
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    if list.len() > KEY_COLUMNS_MAX {
        errors.push(PlanError::LimitExceeded {
            what: format!("{place} of table {table} with {} columns", list.len()),
            limit: KEY_COLUMNS_MAX,
        });
        return None;
    }
    for item in list {
        let expr = &item.column.expr;
        let ast::Expr::Identifier(id) = expr else {
            errors.push(unsupported_hint(
                format!("the expression {expr} in {place} of table {table}"),
                "an index lists plain columns",
                at(expr),
            ));
            continue;
        };
        let descending = item.column.options.asc == Some(false);
        if descending && !descending_allowed {
            errors.push(unsupported_hint(
                format!("DESC in {place} of table {table}"),
                "only the columns of a PRIMARY KEY may be declared DESC",
                at(expr),
            ));
            continue;
        }
        if item.column.options.nulls_first.is_some() || item.operator_class.is_some() {
            errors.push(unsupported(
                format!("NULLS or an operator class in {place} of table {table}"),
                at(expr),
            ));
            continue;
        }
        let column = ident(id);
        match columns.iter().position(|c| c.name == column) {
            None => errors.push(PlanError::UnknownColumn {
                table: table.to_owned(),
                column,
                at: at_ident(id),
            }),
            Some(i) if !seen.insert(i) => errors.push(PlanError::DuplicateColumn {
                table: table.to_owned(),
                column,
                place,
                at: at_ident(id),
            }),
            Some(i) => out.push((i, descending)),
        }
    }
    (errors.len() == before).then_some(out)
}

/// The columns of a key or index that `index_columns` resolved without `DESC`.
fn ascending(columns: Vec<(usize, bool)>) -> Vec<usize> {
    columns.into_iter().map(|(i, _)| i).collect()
}

/// Maps a SQL type name to a Comb type.
fn column_type(ty: &ast::DataType) -> Option<DataType> {
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
        T::Text | T::Varchar(None) | T::CharacterVarying(None) | T::String(None) => DataType::Text,
        T::Boolean | T::Bool => DataType::Boolean,
        T::Bytea => DataType::Bytea,
        T::Timestamp(None, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
            DataType::Timestamp
        }
        _ => return None,
    })
}

/// Converts a constant to a column type where SQL would do so implicitly (an integer to a
/// double); `None` if it does not fit.
pub(crate) fn coerce_constant(value: Value, ty: DataType) -> Option<Value> {
    match (value, ty) {
        (Value::Int(i), DataType::Double) => Some(Value::Double(i as f64)),
        (value, ty) if value.fits(ty) => Some(value),
        _ => None,
    }
}

/// Names a statement kind for messages.
pub(crate) fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second] if matches!(*first, "CREATE" | "DROP" | "ALTER") => {
            format!("{first} {second}")
        }
        [first, ..] => (*first).to_owned(),
        [] => "an empty statement".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_found_by_id_until_dropped_and_ids_are_not_reused() {
        let catalog = Catalog::new()
            .apply("CREATE TABLE a (k BIGINT PRIMARY KEY); CREATE TABLE b (k BIGINT PRIMARY KEY)")
            .unwrap();
        let (a, b) = (catalog.table("a").unwrap().id, catalog.table("b").unwrap().id);
        assert_eq!(catalog.table_by_id(a).map(|t| t.name.as_str()), Some("a"));
        assert_eq!(catalog.table_by_id(b).map(|t| t.name.as_str()), Some("b"));
        assert!(catalog.table_by_id(TableId(9_999)).is_none());
        let catalog = catalog.apply("DROP TABLE a; CREATE TABLE a (k BIGINT PRIMARY KEY, v TEXT)").unwrap();
        assert!(catalog.table_by_id(a).is_none(), "a dropped table's id finds nothing");
        let dropped = catalog.table_by_id_or_dropped(a).expect("the dropped table, for reading history");
        assert_eq!((dropped.name.as_str(), dropped.columns.len()), ("a", 1), "as it was when dropped");
        assert!(catalog.table_by_id_or_dropped(TableId(9_999)).is_none());
        let again = catalog.table("a").unwrap();
        assert_ne!(again.id, a);
        assert_eq!(catalog.table_by_id(again.id).map(|t| t.columns.len()), Some(2), "the new table under its new id");
        // An index added later leaves the lookup by id intact.
        let catalog = catalog.apply("CREATE INDEX b_k ON b (k)").unwrap();
        assert_eq!(catalog.table_by_id(b).map(|t| t.indexes.len()), Some(1));
    }
}
