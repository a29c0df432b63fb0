//! The crash test's workload, shared by the child process and the checking parent
//! (feature `test-util`).
//!
//! Every transaction `t` writes a marker row `(account, t, delta)` beside each balance it
//! changes, in the same transaction: a single-partition `bump` adds 1 to one account; a
//! multi-partition `transfer` moves 1 between two accounts and writes two markers. After a
//! crash, every account's balance must equal the sum of its markers' deltas (every marker
//! present has its effects, and no effect lacks its marker), both markers of a transfer
//! are present or neither (no part of a transaction), and every acknowledged transaction's
//! markers are present.

use serde_json::{Value as Json, json};

use crate::Function;

/// Accounts of the workload.
pub const CRASH_ACCOUNTS: i64 = 16;

/// The workload's schema.
pub const CRASH_DDL: &str = "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL); \
    CREATE TABLE markers (account BIGINT, txn BIGINT, delta BIGINT NOT NULL, PRIMARY KEY (account, txn)) WITH (partition_by = 'account')";

fn int(input: &Json, field: &str) -> i64 {
    input[field].as_i64().unwrap_or_default()
}

/// The workload's functions: `open` (create an account), `bump`, `transfer`, `dump`.
pub fn crash_functions() -> Vec<Function> {
    vec![
        Function::new("open")
            .statement("o", "INSERT INTO accounts (id, balance) VALUES ($1, 0) ON CONFLICT DO NOTHING")
            .partition_by("id")
            .run(|tx, input| {
                tx.execute("o", (int(&input, "id"),))?;
                Ok(Json::Null)
            }),
        Function::new("bump")
            .statement("add", "UPDATE accounts SET balance = balance + 1 WHERE id = $1")
            .statement("mark", "INSERT INTO markers (account, txn, delta) VALUES ($1, $2, 1)")
            .partition_by("id")
            .run(|tx, input| {
                tx.execute("add", (int(&input, "id"),))?;
                tx.execute("mark", (int(&input, "id"), int(&input, "txn")))?;
                Ok(Json::Null)
            }),
        Function::new("transfer")
            .statement("move", "UPDATE accounts SET balance = balance + $2 WHERE id = $1")
            .statement("mark", "INSERT INTO markers (account, txn, delta) VALUES ($1, $2, $3)")
            .run(|tx, input| {
                let (from, to, txn) = (int(&input, "from"), int(&input, "to"), int(&input, "txn"));
                tx.execute("move", (from, -1))?;
                tx.execute("mark", (from, txn, -1))?;
                tx.execute("move", (to, 1))?;
                tx.execute("mark", (to, txn, 1))?;
                Ok(Json::Null)
            }),
        Function::new("dump")
            .statement("accounts", "SELECT id, balance FROM accounts ORDER BY id")
            .statement("markers", "SELECT account, txn, delta FROM markers")
            .run(|tx, _| {
                let accounts = tx.query_as::<(i64, i64)>("accounts", ())?;
                let markers = tx.query_as::<(i64, i64, i64)>("markers", ())?;
                Ok(json!({ "accounts": accounts, "markers": markers }))
            }),
    ]
}
