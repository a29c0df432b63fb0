//! Whatever workflow specification or reference comes in, parsing, validating, planning and
//! resolving never panic: a specification either plans or every problem is named, and a
//! reference either resolves or says why not. Random specifications draw step ids and
//! functions from small sets, so that duplicates, unknown functions, cycles, dangling and
//! malformed references and bad transaction groups all occur. `COMB_FUZZ_CASES` raises the
//! number of cases for a long run.

use std::collections::HashMap;

use comb_planner::{WorkflowSpec, parse_reference, resolve};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Cases per property: `COMB_FUZZ_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    std::env::var("COMB_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

/// Functions named `read*` are read-only, `write*` write, anything else is unknown.
fn lookup(function: &str) -> Option<bool> {
    match function {
        f if f.starts_with("read") => Some(true),
        f if f.starts_with("write") => Some(false),
        _ => None,
    }
}

const IDS: &[&str] = &["a", "b", "c", "d", "input", "", "a.b", "$a"];
const FUNCTIONS: &[&str] = &["read", "write", "write2", "nope", ""];

/// A template: literals, well-formed and malformed references, nested objects and arrays.
fn template() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!("$input")),
        "\\$(input|a|b|c|d|zz)(\\.[a-z0-9]{1,3}|\\[[0-9]{1,2}\\]){0,3}".prop_map(Value::String),
        "[$a-z.\\[\\]0-9]{0,8}".prop_map(Value::String),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|x| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z$]{1,3}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn step() -> impl Strategy<Value = Value> {
    (prop::sample::select(IDS), prop::sample::select(FUNCTIONS), prop::option::of(template())).prop_map(|(id, function, input)| match input {
        Some(input) => json!({ "id": id, "function": function, "input": input }),
        None => json!({ "id": id, "function": function }),
    })
}

fn spec() -> impl Strategy<Value = Value> {
    (
        "[a-z_]{0,6}",
        prop::collection::vec(step(), 0..6),
        prop::collection::vec(prop::collection::vec(prop::sample::select(IDS), 0..4), 0..3),
        template(),
    )
        .prop_map(|(name, steps, transactions, output)| json!({ "name": name, "steps": steps, "transactions": transactions, "output": output }))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(1024), ..ProptestConfig::default() })]

    #[test]
    fn specifications_plan_or_name_every_problem(value in spec(), input in template(), outputs in prop::collection::hash_map(prop::sample::select(IDS), template(), 0..4)) {
        let spec = match WorkflowSpec::from_json(&value.to_string()) {
            Ok(spec) => spec,
            // Only shapes serde refuses (an empty step list is a spec; a missing field is not).
            Err(err) => { prop_assert!(!err.to_string().is_empty()); return Ok(()); }
        };
        match spec.validate(&lookup) {
            Ok(plan) => {
                let outputs: HashMap<String, Value> = outputs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                for step in &spec.steps {
                    let _ = plan.step_input(&step.id, &input, &outputs).expect("a planned step is known");
                    let _ = plan.is_recorded(&step.id);
                }
                let _ = plan.output(&input, &outputs);
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty(), "refused without a reason");
                prop_assert!(errors.iter().all(|e| !e.to_string().is_empty()));
            }
        }
    }

    #[test]
    fn any_text_is_a_specification_or_a_json_error(text in "\\PC{0,120}") {
        let _ = WorkflowSpec::from_json(&text);
    }

    #[test]
    fn references_parse_or_say_why(text in "\\$\\PC{0,24}") {
        if let Err(reason) = parse_reference(&text) {
            prop_assert!(!reason.is_empty());
        }
    }

    #[test]
    fn resolution_answers_or_says_why(template in template(), input in template(), outputs in prop::collection::hash_map("[a-d]", template(), 0..4)) {
        if let Err(err) = resolve(&template, &input, &outputs) {
            prop_assert!(!err.to_string().is_empty());
        }
    }
}

#[test]
fn deeply_nested_templates_are_refused_not_overflowed() {
    let depth = 10_000;
    let deep = format!("{}\"$input\"{}", "[".repeat(depth), "]".repeat(depth));
    let text = format!(r#"{{"name": "deep", "steps": [{{"id": "a", "function": "read", "input": {deep}}}]}}"#);
    // serde_json's own recursion limit refuses the text before anything walks it.
    let err = WorkflowSpec::from_json(&text).expect_err("10,000 levels parsed");
    assert!(err.to_string().contains("recursion limit"), "{err}");
}
