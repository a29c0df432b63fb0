//! Workflow validation, planning and selective function recording, through the public API.

use std::collections::BTreeSet;

use comb_planner::{WorkflowError, WorkflowPlan, WorkflowSpec};
use serde_json::{Value, json};

/// Functions named `read*` are read-only, `write*` write, anything else is unknown.
fn lookup(function: &str) -> Option<bool> {
    if function.starts_with("read") {
        Some(true)
    } else if function.starts_with("write") {
        Some(false)
    } else {
        None
    }
}

fn spec(value: Value) -> WorkflowSpec {
    serde_json::from_value(value).expect("spec parses")
}

fn plan(value: Value) -> WorkflowPlan {
    spec(value)
        .validate(&lookup)
        .unwrap_or_else(|e| panic!("validation failed: {e:?}"))
}

fn errors(value: Value) -> Vec<WorkflowError> {
    spec(value)
        .validate(&lookup)
        .expect_err("validation should fail")
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn sfr_fully_read_only_records_nothing() {
    let p = plan(json!({"name": "w", "steps": [
        {"id": "a", "function": "read", "input": "$input"},
        {"id": "b", "function": "read", "input": {"x": "$a.x"}},
        {"id": "c", "function": "read", "input": "$a"}
    ], "output": {"b": "$b", "c": "$c", "a": "$a"}}));
    assert_eq!(p.recorded, set(&[]));
}

#[test]
fn sfr_read_then_write_records_only_the_write() {
    let p = plan(json!({"name": "w", "steps": [
        {"id": "r", "function": "read", "input": "$input"},
        {"id": "w", "function": "write", "input": "$r"}
    ], "output": "$w"}));
    assert_eq!(p.recorded, set(&["w"]));
}

#[test]
fn sfr_read_feeding_two_writes_is_recorded() {
    let p = plan(json!({"name": "w", "steps": [
        {"id": "r", "function": "read"},
        {"id": "w1", "function": "write", "input": "$r"},
        {"id": "w2", "function": "write", "input": "$r.x"}
    ]}));
    assert_eq!(p.recorded, set(&["r", "w1", "w2"]));
}

#[test]
fn sfr_read_feeding_a_write_and_the_output_is_recorded() {
    let p = plan(json!({"name": "w", "steps": [
        {"id": "r", "function": "read"},
        {"id": "w", "function": "write", "input": "$r"}
    ], "output": {"seen": "$r"}}));
    assert_eq!(p.recorded, set(&["r", "w"]));
}

#[test]
fn sfr_chain_of_reads_records_only_the_branching_one() {
    let p = plan(json!({"name": "w", "steps": [
        {"id": "read1", "function": "read"},
        {"id": "read2", "function": "read", "input": "$read1"},
        {"id": "w1", "function": "write", "input": "$read2"},
        {"id": "w2", "function": "write", "input": "$read2"}
    ]}));
    assert_eq!(p.recorded, set(&["read2", "w1", "w2"]));
}

#[test]
fn sfr_diamond_of_reads_into_one_write_records_no_read() {
    let p = plan(json!({"name": "w", "steps": [
        {"id": "top", "function": "read"},
        {"id": "left", "function": "read", "input": "$top"},
        {"id": "right", "function": "read", "input": "$top"},
        {"id": "w", "function": "write", "input": ["$left", "$right"]}
    ], "output": "$w"}));
    assert_eq!(p.recorded, set(&["w"]));
}

#[test]
fn sfr_transaction_with_a_write_is_recorded_whole_and_counts_once() {
    // `r` feeds two steps of one transaction: after contraction that is one target.
    let p = plan(json!({"name": "w", "steps": [
        {"id": "r", "function": "read"},
        {"id": "check", "function": "read", "input": "$r"},
        {"id": "take", "function": "write", "input": {"room": "$check.room", "r": "$r"}}
    ], "transactions": [["check", "take"]], "output": "$take"}));
    assert_eq!(p.recorded, set(&["check", "take"]));
    assert_eq!(
        p.units,
        vec![
            vec!["r".to_owned()],
            vec!["check".to_owned(), "take".to_owned()]
        ]
    );

    // The same read also feeding the output now has two targets.
    let p = plan(json!({"name": "w", "steps": [
        {"id": "r", "function": "read"},
        {"id": "check", "function": "read", "input": "$r"},
        {"id": "take", "function": "write", "input": "$check"}
    ], "transactions": [["take", "check"]], "output": ["$take", "$r"]}));
    assert_eq!(p.recorded, set(&["r", "check", "take"]));
}

#[test]
fn sfr_read_only_transaction_is_treated_as_one_read() {
    let p = plan(json!({"name": "w", "steps": [
        {"id": "a", "function": "read"},
        {"id": "b", "function": "read", "input": "$a"},
        {"id": "w1", "function": "write", "input": "$b"},
        {"id": "w2", "function": "write", "input": "$a"}
    ], "transactions": [["a", "b"]]}));
    assert_eq!(p.recorded, set(&["a", "b", "w1", "w2"]));
}

#[test]
fn plan_orders_levels_and_dependencies() {
    let p = plan(json!({"name": "trip", "steps": [
        {"id": "book", "function": "write", "input": {"h": "$hotel.id", "f": "$flight.id"}},
        {"id": "hotel", "function": "read", "input": "$input.hotel"},
        {"id": "flight", "function": "read", "input": "$input.flight"},
        {"id": "mail", "function": "write", "input": "$book"}
    ], "output": "$book"}));
    assert_eq!(p.order, vec!["hotel", "flight", "book", "mail"]);
    assert_eq!(
        p.levels,
        vec![
            vec!["hotel".to_owned(), "flight".to_owned()],
            vec!["book".to_owned()],
            vec!["mail".to_owned()]
        ]
    );
    assert_eq!(p.dependencies["book"], set(&["hotel", "flight"]));
    assert_eq!(p.dependencies["hotel"], set(&[]));
    assert_eq!(p.recorded, set(&["book", "mail"]));
    assert_eq!(
        p.to_string(),
        "order: hotel, flight, book, mail\nlevels: [hotel, flight] [book] [mail]\nunits: [hotel] [flight] [book] [mail]\nrecorded: book, mail"
    );

    let input = json!({"hotel": 3, "flight": 9});
    let mut outputs = std::collections::HashMap::new();
    assert_eq!(p.step_input("hotel", &input, &outputs), Some(Ok(json!(3))));
    outputs.insert("hotel".to_owned(), json!({"id": 30}));
    outputs.insert("flight".to_owned(), json!({"id": 90}));
    assert_eq!(
        p.step_input("book", &input, &outputs),
        Some(Ok(json!({"h": 30, "f": 90})))
    );
    assert_eq!(p.step_input("nope", &input, &outputs), None);
    assert!(p.output(&input, &outputs).is_err(), "book has not run");
    outputs.insert("book".to_owned(), json!("ok"));
    assert_eq!(p.output(&input, &outputs), Ok(json!("ok")));
}

#[test]
fn spec_parses_from_json_and_rejects_unknown_fields() {
    let text = r#"{"name": "w", "steps": [{"id": "a", "function": "read", "input": {"x": "$input.x"}}], "transactions": [], "output": "$a"}"#;
    let s = WorkflowSpec::from_json(text).expect("parses");
    assert_eq!(s.steps[0].input, json!({"x": "$input.x"}));
    let err = WorkflowSpec::from_json(r#"{"name": "w", "steps": [], "outputs": 1}"#)
        .expect_err("unknown field");
    assert!(err.to_string().contains("unknown field `outputs`"), "{err}");
    let err = WorkflowSpec::from_json(
        r#"{"name": "w", "steps": [{"id": "a", "function": "f", "inputs": 1}]}"#,
    )
    .expect_err("unknown step field");
    assert!(err.to_string().contains("unknown field `inputs`"), "{err}");
}

#[test]
fn reports_duplicate_and_invalid_ids_unknown_functions_and_references_at_once() {
    let errs = errors(json!({"name": "w", "steps": [
        {"id": "a", "function": "read"},
        {"id": "a", "function": "read"},
        {"id": "input", "function": "read"},
        {"id": "b c", "function": "nope", "input": {"x": "$ghost.x", "y": "$", "z": "$$fine"}}
    ], "output": "$phantom"}));
    assert_eq!(
        errs,
        vec![
            WorkflowError::DuplicateStep { id: "a".into() },
            WorkflowError::InvalidStepId {
                id: "input".into(),
                reason: "\"input\" is reserved for the workflow input"
            },
            WorkflowError::InvalidStepId {
                id: "b c".into(),
                reason: "use letters, digits, _ and -"
            },
            WorkflowError::UnknownFunction {
                step: "b c".into(),
                function: "nope".into()
            },
            WorkflowError::UnknownStepReference {
                location: "step b c".into(),
                target: "ghost".into(),
                reference: "$ghost.x".into()
            },
            WorkflowError::MalformedReference {
                location: "step b c".into(),
                reference: "$".into(),
                reason: "a reference names the input or a step right after $".into()
            },
            WorkflowError::UnknownStepReference {
                location: "the output".into(),
                target: "phantom".into(),
                reference: "$phantom".into()
            },
        ]
    );
}

#[test]
fn reports_every_cycle_with_its_steps() {
    let errs = errors(json!({"name": "w", "steps": [
        {"id": "a", "function": "read", "input": "$c"},
        {"id": "b", "function": "read", "input": "$a"},
        {"id": "c", "function": "read", "input": "$b"},
        {"id": "d", "function": "read", "input": "$d"},
        {"id": "e", "function": "read", "input": "$a"}
    ]}));
    assert_eq!(
        errs,
        vec![
            WorkflowError::Cycle {
                steps: vec!["a".into(), "b".into(), "c".into()]
            },
            WorkflowError::Cycle {
                steps: vec!["d".into()]
            }
        ]
    );
    assert_eq!(
        errs[0].to_string(),
        "steps a, b, c form a cycle of references"
    );
}

#[test]
fn reports_transaction_problems() {
    let errs = errors(json!({"name": "w", "steps": [
        {"id": "a", "function": "read"},
        {"id": "b", "function": "write", "input": "$a"},
        {"id": "c", "function": "write"},
        {"id": "d", "function": "write", "input": "$c"}
    ], "transactions": [["a", "b"], ["b", "zz"], [], ["c", "a"]]}));
    assert_eq!(
        errs,
        vec![
            WorkflowError::TransactionOverlap {
                step: "b".into(),
                first: 0,
                second: 1
            },
            WorkflowError::TransactionUnknownStep {
                group: 1,
                step: "zz".into()
            },
            WorkflowError::TransactionEmpty { group: 2 },
            WorkflowError::TransactionOverlap {
                step: "a".into(),
                first: 0,
                second: 3
            },
        ]
    );
    let errs = errors(json!({"name": "w", "steps": [
        {"id": "a", "function": "read"},
        {"id": "b", "function": "write"}
    ], "transactions": [["a", "b"]]}));
    assert_eq!(
        errs,
        vec![WorkflowError::TransactionNotConnected {
            group: 0,
            steps: vec!["a".into(), "b".into()]
        }]
    );
}

#[test]
fn reports_a_transaction_that_a_path_leaves_and_reenters() {
    // a -> x -> b with a and b in one transaction: x would have to run inside it.
    let errs = errors(json!({"name": "w", "steps": [
        {"id": "a", "function": "read"},
        {"id": "x", "function": "read", "input": "$a"},
        {"id": "b", "function": "write", "input": ["$x", "$a"]}
    ], "transactions": [["a", "b"]]}));
    assert_eq!(
        errs,
        vec![WorkflowError::TransactionCycle {
            units: vec!["transaction 0".into(), "x".into()]
        }]
    );
}

#[test]
fn enforces_named_bounds() {
    let steps: Vec<Value> = (0..=comb_planner::STEPS_MAX)
        .map(|i| json!({"id": format!("s{i}"), "function": "read"}))
        .collect();
    let errs = errors(json!({"name": "big", "steps": steps}));
    assert_eq!(
        errs,
        vec![WorkflowError::TooManySteps {
            workflow: "big".into(),
            count: 257,
            limit: 256
        }]
    );
    assert_eq!(
        errs[0].to_string(),
        "workflow big has 257 steps, more than the limit of 256"
    );

    let mut deep = json!("$input");
    for _ in 0..=comb_planner::INPUT_DEPTH_MAX {
        deep = json!([deep]);
    }
    let errs =
        errors(json!({"name": "w", "steps": [{"id": "a", "function": "read", "input": deep}]}));
    assert_eq!(
        errs,
        vec![WorkflowError::InputTooDeep {
            location: "step a".into(),
            limit: 32
        }]
    );

    let errs = errors(json!({"name": "empty", "steps": []}));
    assert_eq!(
        errs,
        vec![WorkflowError::NoSteps {
            workflow: "empty".into()
        }]
    );
}

#[test]
fn the_documented_example_validates() {
    // Cargo's run-time value: a binary built in another checkout of the same sources (a
    // shared target directory) would carry that checkout's path in `env!`.
    let root = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from);
    let path = root.join("../docs/workflows.md");
    let doc = std::fs::read_to_string(path).expect("docs/workflows.md");
    let start = doc.find("```json\n").expect("a json block") + "```json\n".len();
    let end = start + doc[start..].find("```").expect("end of the json block");
    let functions = |f: &str| match f {
        "find_room" | "find_seat" => Some(true),
        "take_room" | "book_seat" => Some(false),
        _ => None,
    };
    let plan = WorkflowSpec::from_json(&doc[start..end])
        .expect("parses")
        .validate(&functions)
        .expect("validates");
    assert_eq!(
        plan.units,
        vec![
            vec!["hotel".to_owned(), "take".to_owned()],
            vec!["flight".to_owned()],
            vec!["book".to_owned()]
        ]
    );
    // `flight` feeds `book` and the output: recorded. The hotel transaction writes.
    assert_eq!(plan.recorded, set(&["book", "flight", "hotel", "take"]));
}
