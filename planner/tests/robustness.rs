//! Whatever SQL comes in, preparing it never panics and never reports an internal error:
//! it either plans or names what is wrong.

use comb_planner::{Catalog, PlanError};
use proptest::prelude::*;

const SCHEMA: &str =
    "CREATE TABLE t (a BIGINT, b TEXT, c DOUBLE, d BOOLEAN, e TIMESTAMP, PRIMARY KEY (a));
                      CREATE TABLE u (x BIGINT, y BIGINT, z TEXT, PRIMARY KEY (x, y));
                      CREATE INDEX u_z ON u (z)";

fn expr() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(vec![
        "a",
        "b",
        "c",
        "d",
        "e",
        "t.a",
        "u.x",
        "u.z",
        "x",
        "y",
        "z",
        "nope",
        "$1",
        "$2",
        "$3",
        "$0",
        "1",
        "2.5",
        "-3",
        "'s'",
        "NULL",
        "TRUE",
        "TIMESTAMP '2024-01-01'",
        "*",
    ])
    .prop_map(str::to_owned);
    leaf.prop_recursive(3, 24, 3, |inner| {
        let op = prop::sample::select(vec![
            "+", "-", "*", "/", "%", "||", "=", "<>", "<", ">=", "AND", "OR", "LIKE",
        ]);
        let func = prop::sample::select(vec![
            "COUNT", "SUM", "MIN", "MAX", "AVG", "COALESCE", "LOWER", "ABS", "LENGTH", "NOW",
        ]);
        prop_oneof![
            (inner.clone(), op, inner.clone()).prop_map(|(l, o, r)| format!("({l} {o} {r})")),
            (func, prop::collection::vec(inner.clone(), 0..3))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            inner.clone().prop_map(|e| format!("NOT {e}")),
            inner.clone().prop_map(|e| format!("{e} IS NULL")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("{a} BETWEEN {b} AND {c}")),
            (inner.clone(), prop::collection::vec(inner.clone(), 1..3))
                .prop_map(|(a, l)| format!("{a} IN ({})", l.join(", "))),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("CASE WHEN {a} THEN {b} ELSE {c} END")),
            inner.prop_map(|e| format!("CAST({e} AS BIGINT)")),
        ]
    })
}

fn statement() -> impl Strategy<Value = String> {
    let list = || prop::collection::vec(expr(), 1..3).prop_map(|l| l.join(", "));
    let from = prop::sample::select(vec![
        "t",
        "u",
        "t JOIN u ON u.x = t.a",
        "t, u",
        "t AS v",
        "nope",
    ]);
    let tail = prop::sample::select(vec![
        "",
        " GROUP BY a",
        " GROUP BY 1",
        " ORDER BY 1",
        " ORDER BY 3 DESC",
        " LIMIT $1",
        " LIMIT 2 OFFSET $2",
        " HAVING COUNT(*) > 1",
    ]);
    prop_oneof![
        (list(), from, expr(), tail).prop_map(|(l, f, w, t)| format!("SELECT {l} FROM {f} WHERE {w}{t}")),
        (expr(), expr()).prop_map(|(v, w)| format!("UPDATE t SET c = {v} WHERE {w}")),
        (expr(), expr()).prop_map(|(a, b)| format!("INSERT INTO u (x, y, z) VALUES ({a}, {b}, $3) ON CONFLICT (x, y) DO UPDATE SET z = excluded.z")),
        (expr(), list()).prop_map(|(w, r)| format!("DELETE FROM u WHERE {w} RETURNING {r}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn prepare_never_panics_nor_fails_internally(sql in statement()) {
        let catalog = Catalog::new().apply(SCHEMA).expect("schema");
        match catalog.prepare(&sql) {
            Ok(prepared) => {
                // A plan prints, and its parameter list has no gaps.
                prop_assert!(!prepared.to_string().is_empty());
            }
            Err(errors) => {
                prop_assert!(!errors.errors.is_empty());
                for e in &errors.errors {
                    prop_assert!(!matches!(e, PlanError::Internal(_)), "{}: {}", sql, e);
                }
            }
        }
    }
}

fn ddl() -> impl Strategy<Value = String> {
    let column = (
        prop::sample::select(vec!["a", "b", "c", "\"A\""]),
        prop::sample::select(vec![
            "BIGINT",
            "INT",
            "TEXT",
            "DOUBLE",
            "BOOLEAN",
            "BYTEA",
            "TIMESTAMP",
            "JSONB",
            "VARCHAR(3)",
        ]),
        prop::sample::select(vec![
            "",
            " NOT NULL",
            " PRIMARY KEY",
            " UNIQUE",
            " DEFAULT 1",
            " DEFAULT 'x'",
            " DEFAULT NULL",
            " NULL",
        ]),
    )
        .prop_map(|(n, t, o)| format!("{n} {t}{o}"));
    let create = (
        prop::sample::select(vec!["t", "u"]),
        prop::collection::vec(column, 0..4),
        prop::sample::select(vec![
            "",
            ", PRIMARY KEY (a)",
            ", PRIMARY KEY (a, b)",
            ", PRIMARY KEY (b, a)",
            ", PRIMARY KEY (a DESC, b)",
            ", PRIMARY KEY (b, a DESC)",
            ", PRIMARY KEY (z)",
            ", UNIQUE (b, c)",
        ]),
        prop::sample::select(vec![
            "",
            " WITH (partition_by = 'b')",
            " WITH (partition_by = 'a')",
            " WITH (partition_by = 'q')",
            " WITH (x = 1)",
        ]),
    )
        .prop_map(|(name, cols, key, with)| {
            format!("CREATE TABLE {name} ({}{key}){with}", cols.join(", "))
        });
    let other = prop::sample::select(vec![
        "CREATE INDEX i ON t (b)",
        "CREATE UNIQUE INDEX ON u (c, a)",
        "CREATE INDEX IF NOT EXISTS i ON t (a)",
        "DROP TABLE t",
        "DROP TABLE IF EXISTS u",
        "DROP INDEX i",
        "CREATE INDEX j ON nope (a)",
    ])
    .prop_map(str::to_owned);
    prop::collection::vec(prop_oneof![2 => create, 1 => other], 1..5).prop_map(|s| s.join(";\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn ddl_never_panics_and_keeps_the_table_invariants(script in ddl()) {
        let base = Catalog::new();
        match base.apply(&script) {
            Ok(catalog) => {
                for table in catalog.tables() {
                    prop_assert!(!table.primary_key.is_empty());
                    prop_assert!(table.primary_key.contains(&table.partition_column));
                    prop_assert!(table.primary_key.iter().all(|&c| !table.columns[c].nullable));
                    prop_assert_eq!(table.key_descending.len(), table.primary_key.len(), "a direction for every key column");
                }
                // Replaying the same text yields the same catalog, ids included.
                prop_assert_eq!(Catalog::new().apply(&script).ok(), Some(catalog));
            }
            Err(errors) => {
                prop_assert!(!errors.errors.is_empty());
                prop_assert!(errors.errors.iter().all(|e| !matches!(e, PlanError::Internal(_))));
            }
        }
    }
}
