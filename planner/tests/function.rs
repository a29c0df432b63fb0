//! Functions analysed together, and the catalog as an immutable value, through the
//! public API.

use comb_planner::{Catalog, Function, PartitionKey, PlanError, Value};

fn catalog() -> Catalog {
    Catalog::new()
        .apply(
            "CREATE TABLE rooms (hotel_id BIGINT, room_id BIGINT, date INT, reserved_by BIGINT, \
               PRIMARY KEY (hotel_id, room_id, date)) WITH (partition_by = 'hotel_id');
             CREATE TABLE guests (guest_id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
        )
        .expect("schema")
}

#[test]
fn a_function_agreeing_on_one_parameter_is_partition_local() {
    let reserve = Function::new("reserve_room")
        .statement("find", "SELECT room_id FROM rooms WHERE hotel_id = $1 AND date = $2 AND reserved_by IS NULL LIMIT 1")
        .statement("take", "UPDATE rooms SET reserved_by = $4 WHERE hotel_id = $1 AND room_id = $2 AND date = $3");
    let f = catalog().prepare_function(&reserve).expect("prepares");
    assert!(!f.read_only);
    assert_eq!(f.partition, PartitionKey::Param(0));
    assert_eq!(f.statement("find").map(|p| p.params.len()), Some(2));
    assert_eq!(f.reads.len(), 1);
    assert_eq!(f.writes.len(), 1);
}

#[test]
fn a_read_only_function_that_disagrees_is_multi_partition() {
    let f = Function::new("lookup")
        .statement(
            "room",
            "SELECT reserved_by FROM rooms WHERE hotel_id = $1 AND room_id = $2 AND date = $3",
        )
        .statement("guest", "SELECT name FROM guests WHERE guest_id = $1");
    let f = catalog().prepare_function(&f).expect("prepares");
    assert!(f.read_only);
    // Each statement's partition is the value of its own $1: the caller passes the same
    // input field there, so the function runs on that one partition.
    assert_eq!(f.partition, PartitionKey::Param(0));

    let f = Function::new("lookup2")
        .statement("room", "SELECT reserved_by FROM rooms WHERE hotel_id = $1")
        .statement(
            "guest",
            "SELECT name FROM guests WHERE guest_id = $2 AND name = $1",
        );
    // Parameters are per statement: $1 may be BIGINT in one and TEXT in another.
    let f = catalog().prepare_function(&f).expect("prepares");
    assert_eq!(
        f.statement("guest").map(|p| p.params.clone()),
        Some(vec![
            comb_planner::DataType::Text,
            comb_planner::DataType::BigInt
        ])
    );
    assert_eq!(
        f.partition,
        PartitionKey::MultiPartition,
        "room is on $1, guest on $2"
    );

    let f = Function::new("lookup3")
        .statement("room", "SELECT reserved_by FROM rooms WHERE hotel_id = $1")
        .statement(
            "guest",
            "SELECT name FROM guests WHERE guest_id = $2 AND $1 > 0",
        );
    let f = catalog().prepare_function(&f).expect("prepares");
    assert_eq!(f.partition, PartitionKey::MultiPartition);

    let f = Function::new("constant")
        .statement("a", "SELECT room_id FROM rooms WHERE hotel_id = 5")
        .statement("b", "DELETE FROM rooms WHERE hotel_id = 5 AND room_id = $1");
    let f = catalog().prepare_function(&f).expect("prepares");
    assert_eq!(f.partition, PartitionKey::Constant(Value::Int(5)));
}

#[test]
fn every_broken_statement_is_reported_by_name() {
    let f = Function::new("broken")
        .statement("ok", "SELECT name FROM guests WHERE guest_id = $1")
        .statement("bad_table", "SELECT * FROM nope")
        .statement("bad_columns", "SELECT x, y FROM guests")
        .statement("ok", "SELECT 1 FROM guests");
    let err = catalog().prepare_function(&f).expect_err("fails");
    assert_eq!(err.function, "broken");
    let names: Vec<_> = err
        .errors
        .iter()
        .map(|e| e.statement.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, vec!["bad_table", "bad_columns", "ok"]);
    assert_eq!(err.errors[1].errors.len(), 2);
    assert!(matches!(
        err.errors[0].errors[0],
        PlanError::UnknownTable { .. }
    ));
    assert_eq!(
        err.to_string(),
        "function broken: statement bad_table: unknown table nope (at 1:15). \
         statement bad_columns: unknown column x in guests (at 1:8); unknown column y in guests (at 1:11). \
         statement ok: statement name ok is used twice (at 1:1)."
    );
}

#[test]
fn ddl_returns_a_new_catalog_and_leaves_the_old_one_alone() {
    let before = catalog();
    let after = before
        .apply("DROP TABLE guests; CREATE INDEX by_guest ON rooms (reserved_by)")
        .expect("applies");
    assert!(before.table("guests").is_some());
    assert!(after.table("guests").is_none());
    assert!(before.table("rooms").is_some_and(|t| t.indexes.is_empty()));
    assert_eq!(after.table("rooms").map(|t| t.indexes.len()), Some(1));
    // A failing script changes nothing, and the old catalog still plans.
    let failed = after
        .apply("CREATE TABLE x (id BIGINT PRIMARY KEY); CREATE TABLE x (id BIGINT PRIMARY KEY)");
    assert!(failed.is_err());
    assert!(after.table("x").is_none());
    assert!(
        before
            .prepare("SELECT name FROM guests WHERE guest_id = $1")
            .is_ok()
    );
    assert!(
        after
            .prepare("SELECT name FROM guests WHERE guest_id = $1")
            .is_err()
    );
    // Replaying the same DDL text yields the same catalog, ids included.
    let script = "CREATE TABLE a (id BIGINT PRIMARY KEY); CREATE TABLE b (id BIGINT PRIMARY KEY); DROP TABLE a";
    assert_eq!(Catalog::new().apply(script), Catalog::new().apply(script));
}
