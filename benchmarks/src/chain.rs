//! The crash campaign's own application: a chain of two writing steps invoked without an
//! id, so that kills land on runs whose start goes with their first unit (see
//! docs/frontend.md, step 4).
//!
//! `chaos_chain` adds one to the row of its key in `chaos_chain_first`, then, in a second
//! unit, to the row of the key's mirror (`-key`, which may lie on another partition) in
//! `chaos_chain_second`. Every key is used by one run only, so after the server has ended
//! every run it started:
//!
//! - each table holds each key at most once, at 1 (no unit ran twice);
//! - both tables hold as many rows (no run stopped between its units for good);
//! - the rows are at least the runs answered and at most those plus the runs the kill cut
//!   (a cut run may or may not have started: its client never learned its id).

use comb_backend::Function;
use comb_examples::App;
use serde::Deserialize;
use serde_json::json;

/// The chain's workflow.
pub(crate) const WORKFLOW: &str = "chaos_chain";

/// The workflow that reads both tables' tallies.
pub(crate) const TALLY: &str = "chaos_chain_tally";

/// Bounds of a key's parts: a round, a client of the round, and the client's run.
pub(crate) const ROUNDS_MAX: u32 = 1 << 20;
pub(crate) const CLIENTS_MAX: usize = 1 << 20;
pub(crate) const SEQ_MAX: u64 = 1 << 20;

/// The application.
pub(crate) const APP: App = App {
    name: "chaos_chain",
    schema: "
CREATE TABLE IF NOT EXISTS chaos_chain_first (id BIGINT PRIMARY KEY, n BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS chaos_chain_second (id BIGINT PRIMARY KEY, n BIGINT NOT NULL);",
    functions,
    workflows: &[
        r#"{"name": "chaos_chain",
            "steps": [
              {"id": "first", "function": "chaos_chain_first", "input": {"key": "$input.key"}},
              {"id": "second", "function": "chaos_chain_second", "input": {"mirror": "$first.mirror"}}
            ],
            "output": {"first": "$first.n", "second": "$second.n"}}"#,
        r#"{"name": "chaos_chain_tally", "steps": [{"id": "tally", "function": "chaos_chain_tally", "input": "$input"}], "output": "$tally"}"#,
    ],
};

/// The key of run `seq` of client `client` in round `round`: unique over a campaign, and
/// positive, so that its mirror is not a key.
pub(crate) fn key(round: u32, client: usize, seq: u64) -> i64 {
    assert!(round < ROUNDS_MAX && client < CLIENTS_MAX && seq < SEQ_MAX, "a chain key's parts are bounded: round {round}, client {client}, run {seq}");
    ((i64::from(round) << 40) | ((client as i64) << 20) | seq as i64) + 1
}

/// What `chaos_chain_tally` answers of one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Table {
    /// Its rows.
    pub(crate) rows: i64,
    /// The largest count a row holds (0 without rows).
    pub(crate) most: i64,
}

/// What `chaos_chain_tally` answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct Tally {
    pub(crate) first: Table,
    pub(crate) second: Table,
}

impl Tally {
    /// What is wrong with the tables once no run is running, when `answered` runs were
    /// answered and `cut` were cut by kills; `None` if nothing is.
    pub(crate) fn violation(&self, answered: u64, cut: u64) -> Option<String> {
        let (first, second) = (self.first, self.second);
        if first.most > 1 || second.most > 1 {
            return Some(format!("a unit of a run without an id ran twice: {self:?}"));
        }
        if first.rows != second.rows {
            return Some(format!("{} runs without an id wrote their first unit, {} their second: {self:?}", first.rows, second.rows));
        }
        let rows = u64::try_from(first.rows).unwrap_or(0);
        if rows < answered || rows > answered + cut {
            return Some(format!("{rows} runs without an id took effect, but {answered} were answered and {cut} cut by kills"));
        }
        None
    }
}

fn functions() -> Vec<Function> {
    let add = |name: &str, table: &str, field: &'static str| {
        Function::new(name)
            .statement("add", format!("INSERT INTO {table} (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = {table}.n + 1 RETURNING n"))
            .partition_by(field)
            .run(move |tx, input| {
                let id = input.get(field).and_then(serde_json::Value::as_i64).ok_or_else(|| format!("input field {field:?} must be an integer"))?;
                let n: i64 = tx.query_one("add", (id,))?;
                Ok(json!({ "n": n, "mirror": -id }))
            })
    };
    vec![
        add("chaos_chain_first", "chaos_chain_first", "key"),
        add("chaos_chain_second", "chaos_chain_second", "mirror"),
        // No partition key: a read of every partition.
        Function::new("chaos_chain_tally")
            .statement("first", "SELECT count(*), COALESCE(max(n), 0) FROM chaos_chain_first")
            .statement("second", "SELECT count(*), COALESCE(max(n), 0) FROM chaos_chain_second")
            .run(|tx, _input| {
                let (rows, most): (i64, i64) = tx.query_one("first", ())?;
                let first = json!({ "rows": rows, "most": most });
                let (rows, most): (i64, i64) = tx.query_one("second", ())?;
                Ok(json!({ "first": first, "second": { "rows": rows, "most": most } }))
            }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_positive() {
        let mut seen = std::collections::HashSet::new();
        for round in [0, 1, ROUNDS_MAX - 1] {
            for client in [0, 1, CLIENTS_MAX - 1] {
                for seq in [0, 1, SEQ_MAX - 1] {
                    let k = key(round, client, seq);
                    assert!(k > 0, "{k}");
                    assert!(seen.insert(k), "key {k} twice");
                }
            }
        }
    }

    #[test]
    fn the_tally_catches_a_doubled_unit_a_lost_unit_and_a_lost_run() {
        let table = |rows, most| Table { rows, most };
        let tally = |first, second| Tally { first, second };
        assert_eq!(tally(table(5, 1), table(5, 1)).violation(4, 2), None);
        assert_eq!(tally(table(0, 0), table(0, 0)).violation(0, 3), None);
        assert!(tally(table(5, 2), table(5, 1)).violation(5, 0).unwrap().contains("twice"));
        assert!(tally(table(5, 1), table(5, 2)).violation(5, 0).unwrap().contains("twice"));
        assert!(tally(table(5, 1), table(4, 1)).violation(4, 1).unwrap().contains("second"));
        assert!(tally(table(3, 1), table(3, 1)).violation(4, 0).unwrap().contains("4 were answered"));
        assert!(tally(table(7, 1), table(7, 1)).violation(4, 2).unwrap().contains("cut"));
    }
}
