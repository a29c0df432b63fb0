//! References inside workflow step inputs: `"$input"`, `"$input.hotel"`, `"$find"`,
//! `"$find.room"`, `"$find.rooms.0"`; `"$$..."` is a literal string starting with `$`.
//!
//! A reference is a whole JSON string; it is replaced by the JSON value it names (of any
//! type). Path segments index objects by key and arrays by position.

use std::collections::HashMap;

use serde_json::Value;

/// Deepest nesting of a step input or workflow output, and longest reference path.
pub const INPUT_DEPTH_MAX: usize = 32;

/// What a reference starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The workflow's input.
    Input,
    /// The output of an earlier step.
    Step(String),
}

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Where the path starts.
    pub source: Source,
    /// Object keys or array positions, outermost first.
    pub path: Vec<String>,
}

/// Reads a JSON string: `Ok(None)` when it is a literal, `Err` with a reason when it
/// starts with a single `$` but is not a well-formed reference.
pub fn parse_reference(text: &str) -> Result<Option<Reference>, String> {
    let Some(rest) = text.strip_prefix('$') else {
        return Ok(None);
    };
    if rest.starts_with('$') {
        return Ok(None);
    }
    let mut parts = rest.split('.');
    let head = parts.next().unwrap_or_default();
    if head.is_empty() {
        return Err("a reference names the input or a step right after $".to_owned());
    }
    let path: Vec<String> = parts.map(str::to_owned).collect();
    if path.iter().any(String::is_empty) {
        return Err("a reference path has an empty segment".to_owned());
    }
    if path.len() > INPUT_DEPTH_MAX {
        return Err(format!(
            "a reference path has more than {INPUT_DEPTH_MAX} segments"
        ));
    }
    let source = if head == "input" {
        Source::Input
    } else {
        Source::Step(head.to_owned())
    };
    Ok(Some(Reference { source, path }))
}

/// Calls `f` on every string of a JSON template that is a reference or a malformed one,
/// or reports that the template nests deeper than [`INPUT_DEPTH_MAX`].
pub(crate) fn visit_references(
    template: &Value,
    f: &mut impl FnMut(&str, Result<Reference, String>),
) -> Result<(), usize> {
    fn walk(
        v: &Value,
        depth: usize,
        f: &mut impl FnMut(&str, Result<Reference, String>),
    ) -> Result<(), usize> {
        if depth > INPUT_DEPTH_MAX {
            return Err(depth);
        }
        match v {
            Value::String(s) => match parse_reference(s) {
                Ok(Some(r)) => f(s, Ok(r)),
                Ok(None) => {}
                Err(reason) => f(s, Err(reason)),
            },
            Value::Array(items) => items.iter().try_for_each(|i| walk(i, depth + 1, f))?,
            Value::Object(map) => map.values().try_for_each(|i| walk(i, depth + 1, f))?,
            _ => {}
        }
        Ok(())
    }
    walk(template, 0, f)
}

/// Why a step input could not be built at run time.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveError {
    /// The path does not exist in the value it starts from.
    #[error("reference {reference}: {reason}")]
    MissingPath {
        /// The reference as written.
        reference: String,
        /// Which segment failed and why.
        reason: String,
    },
    /// A referenced step has no output yet: a scheduler bug, as validation orders steps.
    #[error("reference {reference}: step {step} has not run (this is a bug in the scheduler)")]
    StepNotRun {
        /// The reference as written.
        reference: String,
        /// The step.
        step: String,
    },
    /// The reference is malformed (validation rejects these; a bug if seen here).
    #[error("reference {reference} is malformed: {reason}")]
    Malformed {
        /// The reference as written.
        reference: String,
        /// Why.
        reason: String,
    },
}

/// The outputs of steps that have run, by step id.
pub trait StepOutputs {
    /// The output of `step`, if it has run.
    fn output(&self, step: &str) -> Option<&Value>;
}

impl StepOutputs for HashMap<String, Value> {
    fn output(&self, step: &str) -> Option<&Value> {
        self.get(step)
    }
}

impl<T: StepOutputs + ?Sized> StepOutputs for &T {
    fn output(&self, step: &str) -> Option<&Value> {
        (**self).output(step)
    }
}

/// Two sets of outputs, looked up in the first, then in the second: a transaction's own
/// beside those of the steps before it, neither copied into the other.
impl<A: StepOutputs, B: StepOutputs> StepOutputs for (A, B) {
    fn output(&self, step: &str) -> Option<&Value> {
        self.0.output(step).or_else(|| self.1.output(step))
    }
}

/// Steps and their outputs side by side, `outputs[i]` that of `steps[i]` (the steps of a
/// transaction, as far as they ran): looked up without copying them into a map.
#[derive(Debug, Clone, Copy)]
pub struct ZippedOutputs<'a> {
    /// The step ids.
    pub steps: &'a [String],
    /// Their outputs, in the same order; steps past its end have not run.
    pub outputs: &'a [Value],
}

impl StepOutputs for ZippedOutputs<'_> {
    fn output(&self, step: &str) -> Option<&Value> {
        self.steps
            .iter()
            .position(|s| s == step)
            .and_then(|i| self.outputs.get(i))
    }
}

/// Builds a concrete JSON value from a template: references are replaced by the values
/// they name in the workflow input or in earlier steps' outputs; `"$$x"` becomes `"$x"`.
pub fn resolve(
    template: &Value,
    input: &Value,
    outputs: &impl StepOutputs,
) -> Result<Value, ResolveError> {
    Ok(match template {
        Value::String(s) => match parse_reference(s) {
            Ok(None) => Value::String(
                s.strip_prefix('$')
                    .filter(|r| r.starts_with('$'))
                    .unwrap_or(s)
                    .to_owned(),
            ),
            Ok(Some(r)) => {
                let mut value = match &r.source {
                    Source::Input => input,
                    Source::Step(step) => {
                        outputs.output(step).ok_or_else(|| ResolveError::StepNotRun {
                            reference: s.clone(),
                            step: step.clone(),
                        })?
                    }
                };
                for segment in &r.path {
                    let next = match value {
                        Value::Object(map) => map.get(segment),
                        Value::Array(items) => {
                            segment.parse::<usize>().ok().and_then(|i| items.get(i))
                        }
                        _ => None,
                    };
                    value = next.ok_or_else(|| ResolveError::MissingPath {
                        reference: s.clone(),
                        reason: format!("no {segment:?} in {}", kind(value)),
                    })?;
                }
                value.clone()
            }
            Err(reason) => {
                return Err(ResolveError::Malformed {
                    reference: s.clone(),
                    reason,
                });
            }
        },
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| resolve(i, input, outputs))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v, input, outputs)?)))
                .collect::<Result<_, ResolveError>>()?,
        ),
        other => other.clone(),
    })
}

fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Number(_) => "a number".to_owned(),
        Value::String(_) => "a string".to_owned(),
        Value::Array(items) => format!("an array of {} items", items.len()),
        Value::Object(_) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn outputs() -> HashMap<String, Value> {
        HashMap::from([(
            "find".to_owned(),
            json!({"room": 12, "rooms": [3, 4], "meta": null}),
        )])
    }

    #[test]
    fn zipped_outputs_find_the_steps_that_ran() {
        let steps = ["find".to_owned(), "take".to_owned()];
        let outputs = [json!({ "room": 7 })];
        let zipped = ZippedOutputs { steps: &steps, outputs: &outputs };
        assert_eq!(resolve(&json!({ "r": "$find.room" }), &json!({}), &zipped).unwrap(), json!({ "r": 7 }));
        // `take` is named but has not run; `other` is not a step of the transaction.
        for step in ["take", "other"] {
            let err = resolve(&json!(format!("${step}")), &json!({}), &zipped).unwrap_err();
            assert!(matches!(&err, ResolveError::StepNotRun { step: s, .. } if s == step), "{err}");
        }
        // Beside the outputs of the steps before the transaction, looked up in both.
        let before = HashMap::from([("other".to_owned(), json!(2))]);
        let both = (zipped, &before);
        assert_eq!(resolve(&json!(["$find.room", "$other"]), &json!({}), &both).unwrap(), json!([7, 2]));
        assert!(resolve(&json!("$take"), &json!({}), &both).is_err());
    }

    #[test]
    fn resolves_input_steps_paths_and_escapes() {
        let input = json!({"hotel": 7, "user": {"id": 9}});
        let template = json!({
            "all": "$input", "hotel": "$input.hotel", "user": "$input.user.id",
            "found": "$find", "room": "$find.room", "second": "$find.rooms.1",
            "literal": "$$input", "plain": "text", "n": 5, "list": ["$input.hotel", "$$", "$$$x"]
        });
        let out = resolve(&template, &input, &outputs()).expect("resolves");
        assert_eq!(
            out,
            json!({
                "all": {"hotel": 7, "user": {"id": 9}}, "hotel": 7, "user": 9,
                "found": {"room": 12, "rooms": [3, 4], "meta": null}, "room": 12, "second": 4,
                "literal": "$input", "plain": "text", "n": 5, "list": [7, "$", "$$x"]
            })
        );
    }

    #[test]
    fn missing_paths_say_where_they_fail() {
        let input = json!({"hotel": 7});
        let err = resolve(&json!("$input.city"), &input, &outputs()).expect_err("missing key");
        assert_eq!(
            err.to_string(),
            "reference $input.city: no \"city\" in an object"
        );
        let err =
            resolve(&json!("$find.rooms.5"), &input, &outputs()).expect_err("index out of range");
        assert_eq!(
            err.to_string(),
            "reference $find.rooms.5: no \"5\" in an array of 2 items"
        );
        let err = resolve(&json!("$find.room.x"), &input, &outputs()).expect_err("into a number");
        assert_eq!(
            err.to_string(),
            "reference $find.room.x: no \"x\" in a number"
        );
        let err = resolve(&json!(["$later"]), &input, &outputs()).expect_err("not run");
        assert!(matches!(err, ResolveError::StepNotRun { ref step, .. } if step == "later"));
    }

    #[test]
    fn parses_and_rejects_references() {
        assert_eq!(parse_reference("plain"), Ok(None));
        assert_eq!(parse_reference("$$x"), Ok(None));
        assert_eq!(
            parse_reference("$input"),
            Ok(Some(Reference {
                source: Source::Input,
                path: vec![]
            }))
        );
        assert_eq!(
            parse_reference("$a.b.0"),
            Ok(Some(Reference {
                source: Source::Step("a".into()),
                path: vec!["b".into(), "0".into()]
            }))
        );
        assert!(parse_reference("$").is_err());
        assert!(parse_reference("$.x").is_err());
        assert!(parse_reference("$a..b").is_err());
        assert!(parse_reference(&format!("$a{}", ".x".repeat(INPUT_DEPTH_MAX + 1))).is_err());
    }
}
