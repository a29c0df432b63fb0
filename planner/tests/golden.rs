//! Golden tests: SQL in, printed plan or error out.
//!
//! Each file under `tests/golden/` holds cases:
//!
//! ```text
//! === name of the case          (prepared against tests/golden/schema.sql)
//! === ddl: name of the case     (applied as DDL to an empty catalog)
//! SQL ...
//! ---
//! expected output
//! ```
//!
//! Run with `UPDATE_GOLDEN=1` to rewrite the expectations from the actual output; then
//! read the diff: a golden that records a wrong plan is a defect.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use comb_planner::Catalog;

struct Case {
    header: String,
    sql: String,
    expected: String,
}

fn parse(text: &str, file: &Path) -> (String, Vec<Case>) {
    let mut preamble = String::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut in_expected = false;
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("=== ") {
            cases.push(Case {
                header: header.trim().to_owned(),
                sql: String::new(),
                expected: String::new(),
            });
            in_expected = false;
        } else if let Some(case) = cases.last_mut() {
            if line == "---" && !in_expected {
                in_expected = true;
            } else if in_expected {
                case.expected.push_str(line);
                case.expected.push('\n');
            } else {
                case.sql.push_str(line);
                case.sql.push('\n');
            }
        } else {
            preamble.push_str(line);
            preamble.push('\n');
        }
    }
    for case in &cases {
        assert!(
            !case.sql.trim().is_empty(),
            "{}: case {} has no SQL",
            file.display(),
            case.header
        );
    }
    (preamble, cases)
}

fn run(schema: &Catalog, case: &Case) -> String {
    let sql = case.sql.trim_end();
    if case.header.starts_with("ddl:") {
        match Catalog::new().apply(sql) {
            Ok(catalog) => catalog.tables().map(|t| format!("{t}\n")).collect(),
            Err(errors) => errors
                .errors
                .iter()
                .map(|e| format!("error: {e}\n"))
                .collect(),
        }
    } else {
        match schema.prepare(sql) {
            Ok(prepared) => prepared.to_string(),
            Err(errors) => errors
                .errors
                .iter()
                .map(|e| format!("error: {e}\n"))
                .collect(),
        }
    }
}

#[test]
fn golden() {
    // Cargo's run-time value: a binary built in another checkout of the same sources (a
    // shared target directory) would carry that checkout's path in `env!`.
    let root = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let dir = root.join("tests/golden");
    let schema_sql = fs::read_to_string(dir.join("schema.sql")).expect("schema.sql");
    let schema = Catalog::new()
        .apply(&schema_sql)
        .unwrap_or_else(|e| panic!("schema.sql: {e}"));
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    let mut failures = String::new();
    let mut total = 0;
    let mut names = std::collections::BTreeSet::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("read golden file");
        let (preamble, cases) = parse(&text, file);
        let mut rewritten = preamble;
        for case in &cases {
            total += 1;
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
            assert!(
                names.insert(format!("{stem}/{}", case.header)),
                "duplicate case name {stem}/{}",
                case.header
            );
            let actual = run(&schema, case);
            if actual.trim_end() != case.expected.trim_end() {
                let _ = write!(
                    failures,
                    "\n--- {stem}: {}\n{}\nexpected:\n{}actual:\n{}",
                    case.header,
                    case.sql.trim_end(),
                    case.expected,
                    actual
                );
            }
            let _ = write!(
                rewritten,
                "=== {}\n{}---\n{}\n\n",
                case.header,
                case.sql.trim_end().to_owned() + "\n",
                actual.trim_end()
            );
        }
        if update {
            fs::write(file, rewritten.trim_end().to_owned() + "\n").expect("rewrite golden file");
        }
    }
    assert!(total >= 100 || update, "only {total} golden cases");
    if !failures.is_empty() && !update {
        panic!(
            "golden mismatches (rerun with UPDATE_GOLDEN=1 to accept, then review the diff):{failures}"
        );
    }
}
