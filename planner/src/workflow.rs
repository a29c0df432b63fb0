//! Workflow specifications, their validation, and the plan the scheduler runs.
//!
//! A workflow is a DAG of steps; a step's input may reference the workflow input and
//! earlier steps' outputs (see [`resolve`](crate::resolve)), and each reference is an edge.
//! Validation reports every problem at once and yields the topological order, the
//! parallel levels, the transaction units and the steps to record.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::recording::recorded_units;
use crate::reference::{INPUT_DEPTH_MAX, ResolveError, Source, StepOutputs, resolve, visit_references};

/// Most steps in one workflow.
pub const STEPS_MAX: usize = 256;

/// A workflow as registered, in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    /// The workflow's name.
    pub name: String,
    /// The steps, in any order that the references allow.
    pub steps: Vec<StepSpec>,
    /// Groups of steps that run together as one ACID transaction.
    #[serde(default)]
    pub transactions: Vec<Vec<String>>,
    /// What the workflow returns: a template over the input and step outputs.
    #[serde(default)]
    pub output: Value,
}

/// One step of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// The step's id, unique in the workflow; referenced as `$id`.
    pub id: String,
    /// The registered function the step invokes.
    pub function: String,
    /// The function's input: a template over the workflow input and earlier outputs.
    #[serde(default)]
    pub input: Value,
}

/// Tells validation which functions exist and whether they write.
pub trait FunctionLookup {
    /// `Some(read_only)` for a registered function, `None` for an unknown one.
    fn read_only(&self, function: &str) -> Option<bool>;
}

impl<F: Fn(&str) -> Option<bool>> FunctionLookup for F {
    fn read_only(&self, function: &str) -> Option<bool> {
        self(function)
    }
}

impl FunctionLookup for HashMap<String, bool> {
    fn read_only(&self, function: &str) -> Option<bool> {
        self.get(function).copied()
    }
}

impl FunctionLookup for BTreeMap<String, bool> {
    fn read_only(&self, function: &str) -> Option<bool> {
        self.get(function).copied()
    }
}

/// One problem with a workflow specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkflowError {
    /// The workflow has no steps.
    #[error("workflow {workflow} has no steps")]
    NoSteps {
        /// The workflow.
        workflow: String,
    },
    /// Too many steps.
    #[error("workflow {workflow} has {count} steps, more than the limit of {limit}")]
    TooManySteps {
        /// The workflow.
        workflow: String,
        /// Steps given.
        count: usize,
        /// [`STEPS_MAX`].
        limit: usize,
    },
    /// An id that is empty, reserved, or not made of letters, digits, `_` and `-`.
    #[error("step id {id:?} is invalid: {reason}")]
    InvalidStepId {
        /// The id.
        id: String,
        /// Why.
        reason: &'static str,
    },
    /// Two steps share an id.
    #[error("step id {id} is used by more than one step")]
    DuplicateStep {
        /// The id.
        id: String,
    },
    /// A step invokes a function that is not registered.
    #[error("step {step} invokes unknown function {function}")]
    UnknownFunction {
        /// The step.
        step: String,
        /// The function.
        function: String,
    },
    /// A reference names a step that does not exist.
    #[error("{location} references unknown step {target} in {reference:?}")]
    UnknownStepReference {
        /// `step x` or `the output`.
        location: String,
        /// The missing step.
        target: String,
        /// The reference as written.
        reference: String,
    },
    /// A string starting with `$` that is not a reference.
    #[error(
        "{location}: {reference:?} is not a valid reference: {reason}; write $$ for a literal $"
    )]
    MalformedReference {
        /// `step x` or `the output`.
        location: String,
        /// The string.
        reference: String,
        /// Why.
        reason: String,
    },
    /// A template nests too deep.
    #[error("{location}: the JSON nests deeper than the limit of {limit}")]
    InputTooDeep {
        /// `step x` or `the output`.
        location: String,
        /// [`INPUT_DEPTH_MAX`].
        limit: usize,
    },
    /// Steps whose references form a cycle.
    #[error("steps {} form a cycle of references", .steps.join(", "))]
    Cycle {
        /// The steps on the cycle, in declaration order.
        steps: Vec<String>,
    },
    /// A transaction group names an unknown step.
    #[error("transaction {group} names unknown step {step}")]
    TransactionUnknownStep {
        /// Index of the group.
        group: usize,
        /// The step.
        step: String,
    },
    /// A transaction group is empty.
    #[error("transaction {group} is empty")]
    TransactionEmpty {
        /// Index of the group.
        group: usize,
    },
    /// A step is in more than one transaction group (or twice in one).
    #[error(
        "step {step} is in transaction {first} and transaction {second}; groups may not overlap"
    )]
    TransactionOverlap {
        /// The step.
        step: String,
        /// The first group naming it.
        first: usize,
        /// The next group naming it.
        second: usize,
    },
    /// The steps of a transaction group are not connected by references.
    #[error("transaction {group} ({}) is not connected: its steps must be linked by references", .steps.join(", "))]
    TransactionNotConnected {
        /// Index of the group.
        group: usize,
        /// Its steps.
        steps: Vec<String>,
    },
    /// A path leaves a transaction group and comes back into it, so the group cannot run
    /// as one unit.
    #[error("transactions and steps {} depend on each other in a cycle once each transaction runs as one unit", .units.join(", "))]
    TransactionCycle {
        /// The units on the cycle (`transaction N` or step ids).
        units: Vec<String>,
    },
}

/// What the scheduler runs: the validated workflow, ordered and analysed.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowPlan {
    /// The specification it was built from.
    pub spec: WorkflowSpec,
    /// Every step, producers before consumers (ties broken by declaration order).
    pub order: Vec<String>,
    /// Steps by level: every step of a level depends only on earlier levels, so a level's
    /// steps may run in parallel.
    pub levels: Vec<Vec<String>>,
    /// For each step, the steps whose output it references.
    pub dependencies: BTreeMap<String, BTreeSet<String>>,
    /// The transaction units in topological order; a unit of one step is a step that runs
    /// alone, a larger unit is one multi-function transaction (steps in topological order).
    pub units: Vec<Vec<String>>,
    /// Steps whose output is recorded (selective function recording); every step of a
    /// recorded multi-step transaction is recorded.
    pub recorded: BTreeSet<String>,
}

impl WorkflowPlan {
    /// Tells whether a step's output must be recorded.
    pub fn is_recorded(&self, step: &str) -> bool {
        self.recorded.contains(step)
    }

    /// Builds a step's concrete input from the workflow input and the outputs of the
    /// steps it depends on; `None` for an unknown step.
    pub fn step_input(
        &self,
        step: &str,
        input: &Value,
        outputs: &impl StepOutputs,
    ) -> Option<Result<Value, ResolveError>> {
        let spec = self.spec.steps.iter().find(|s| s.id == step)?;
        Some(resolve(&spec.input, input, outputs))
    }

    /// Builds the workflow's output once every step it references has run.
    pub fn output(
        &self,
        input: &Value,
        outputs: &impl StepOutputs,
    ) -> Result<Value, ResolveError> {
        resolve(&self.spec.output, input, outputs)
    }
}

impl fmt::Display for WorkflowPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "order: {}", self.order.join(", "))?;
        let levels: Vec<String> = self
            .levels
            .iter()
            .map(|l| format!("[{}]", l.join(", ")))
            .collect();
        writeln!(f, "levels: {}", levels.join(" "))?;
        let units: Vec<String> = self
            .units
            .iter()
            .map(|u| format!("[{}]", u.join(", ")))
            .collect();
        writeln!(f, "units: {}", units.join(" "))?;
        write!(
            f,
            "recorded: {}",
            self.recorded.iter().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

fn valid_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("it is empty");
    }
    if id == "input" {
        return Err("\"input\" is reserved for the workflow input");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("use letters, digits, _ and -");
    }
    Ok(())
}

impl WorkflowSpec {
    /// Parses a specification from JSON.
    pub fn from_json(text: &str) -> Result<WorkflowSpec, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// Validates the workflow against the registered functions and plans it. Every
    /// problem is reported.
    pub fn validate(
        &self,
        functions: &impl FunctionLookup,
    ) -> Result<WorkflowPlan, Vec<WorkflowError>> {
        let mut errors = Vec::new();
        if self.steps.is_empty() {
            errors.push(WorkflowError::NoSteps {
                workflow: self.name.clone(),
            });
        }
        if self.steps.len() > STEPS_MAX {
            errors.push(WorkflowError::TooManySteps {
                workflow: self.name.clone(),
                count: self.steps.len(),
                limit: STEPS_MAX,
            });
            return Err(errors);
        }
        // Steps and their ids.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut reported_duplicates = BTreeSet::new();
        for (i, step) in self.steps.iter().enumerate() {
            if let Err(reason) = valid_id(&step.id) {
                errors.push(WorkflowError::InvalidStepId {
                    id: step.id.clone(),
                    reason,
                });
            }
            if index.insert(&step.id, i).is_some() && reported_duplicates.insert(step.id.clone()) {
                errors.push(WorkflowError::DuplicateStep {
                    id: step.id.clone(),
                });
            }
        }
        // Keep the first step of a duplicated id, so references still resolve.
        for (i, step) in self.steps.iter().enumerate().rev() {
            index.insert(&step.id, i);
        }
        let mut writes = vec![false; self.steps.len()];
        for (i, step) in self.steps.iter().enumerate() {
            match functions.read_only(&step.function) {
                Some(read_only) => writes[i] = !read_only,
                None => errors.push(WorkflowError::UnknownFunction {
                    step: step.id.clone(),
                    function: step.function.clone(),
                }),
            }
        }
        // References: edges producer -> consumer.
        let mut graph: DiGraph<usize, ()> = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..self.steps.len()).map(|i| graph.add_node(i)).collect();
        let mut dependencies: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); self.steps.len()];
        let mut feeds_output = vec![false; self.steps.len()];
        let collect = |location: String,
                       template: &Value,
                       errors: &mut Vec<WorkflowError>,
                       deps: &mut BTreeSet<usize>| {
            let walked = visit_references(template, &mut |text, parsed| match parsed {
                Ok(r) => {
                    if let Source::Step(target) = &r.source {
                        match index.get(target.as_str()) {
                            Some(&p) => {
                                deps.insert(p);
                            }
                            None => errors.push(WorkflowError::UnknownStepReference {
                                location: location.clone(),
                                target: target.clone(),
                                reference: text.to_owned(),
                            }),
                        }
                    }
                }
                Err(reason) => errors.push(WorkflowError::MalformedReference {
                    location: location.clone(),
                    reference: text.to_owned(),
                    reason,
                }),
            });
            if walked.is_err() {
                errors.push(WorkflowError::InputTooDeep {
                    location,
                    limit: INPUT_DEPTH_MAX,
                });
            }
        };
        for (i, step) in self.steps.iter().enumerate() {
            collect(
                format!("step {}", step.id),
                &step.input,
                &mut errors,
                &mut dependencies[i],
            );
        }
        let mut output_deps = BTreeSet::new();
        collect(
            "the output".to_owned(),
            &self.output,
            &mut errors,
            &mut output_deps,
        );
        for p in output_deps {
            feeds_output[p] = true;
        }
        for (consumer, deps) in dependencies.iter().enumerate() {
            for &producer in deps {
                graph.add_edge(nodes[producer], nodes[consumer], ());
            }
        }
        // Cycles, each named by its steps.
        let mut cyclic = false;
        let mut cycles: Vec<Vec<usize>> = tarjan_scc(&graph)
            .into_iter()
            .filter(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
            .map(|scc| {
                let mut steps: Vec<usize> = scc.into_iter().map(|n| graph[n]).collect();
                steps.sort_unstable();
                steps
            })
            .collect();
        cycles.sort();
        for steps in cycles {
            cyclic = true;
            errors.push(WorkflowError::Cycle {
                steps: steps
                    .into_iter()
                    .map(|i| self.steps[i].id.clone())
                    .collect(),
            });
        }
        // Transaction groups.
        let mut unit_of: Vec<Option<usize>> = vec![None; self.steps.len()];
        let mut group_of_step: HashMap<usize, usize> = HashMap::new();
        let mut groups_ok = true;
        for (g, group) in self.transactions.iter().enumerate() {
            if group.is_empty() {
                errors.push(WorkflowError::TransactionEmpty { group: g });
                groups_ok = false;
            }
            let mut members = Vec::new();
            for id in group {
                let Some(&s) = index.get(id.as_str()) else {
                    errors.push(WorkflowError::TransactionUnknownStep {
                        group: g,
                        step: id.clone(),
                    });
                    groups_ok = false;
                    continue;
                };
                if let Some(first) = group_of_step.insert(s, g) {
                    errors.push(WorkflowError::TransactionOverlap {
                        step: id.clone(),
                        first,
                        second: g,
                    });
                    groups_ok = false;
                    continue;
                }
                members.push(s);
            }
            // Connected through references between members, ignoring direction.
            if let Some(&start) = members.first() {
                let mut seen = BTreeSet::from([start]);
                let mut stack = vec![start];
                while let Some(s) = stack.pop() {
                    for &m in &members {
                        let linked = dependencies[m].contains(&s) || dependencies[s].contains(&m);
                        if linked && seen.insert(m) {
                            stack.push(m);
                        }
                    }
                }
                if seen.len() != members.len() {
                    errors.push(WorkflowError::TransactionNotConnected {
                        group: g,
                        steps: group.clone(),
                    });
                    groups_ok = false;
                }
            }
            for s in members {
                unit_of[s] = Some(g);
            }
        }
        if cyclic || !groups_ok {
            // Contraction needs well-formed groups and an acyclic graph.
            return Err(errors);
        }
        // Contract: units are the groups, then each remaining step alone.
        let groups = self.transactions.len();
        let mut units_members: Vec<Vec<usize>> = vec![Vec::new(); groups];
        let unit: Vec<usize> = (0..self.steps.len())
            .map(|s| match unit_of[s] {
                Some(g) => g,
                None => {
                    units_members.push(Vec::new());
                    units_members.len() - 1
                }
            })
            .collect();
        for (s, &u) in unit.iter().enumerate() {
            units_members[u].push(s);
        }
        let n_units = units_members.len();
        let mut unit_graph: DiGraph<usize, ()> = DiGraph::new();
        let unit_nodes: Vec<NodeIndex> = (0..n_units).map(|u| unit_graph.add_node(u)).collect();
        let mut successors: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n_units];
        for (consumer, deps) in dependencies.iter().enumerate() {
            for &producer in deps {
                let (a, b) = (unit[producer], unit[consumer]);
                if a != b && successors[a].insert(b) {
                    unit_graph.add_edge(unit_nodes[a], unit_nodes[b], ());
                }
            }
        }
        let unit_name = |u: usize| {
            if u < groups {
                format!("transaction {u}")
            } else {
                self.steps[units_members[u][0]].id.clone()
            }
        };
        let mut contracted_cycle = false;
        for scc in tarjan_scc(&unit_graph) {
            if scc.len() > 1 {
                contracted_cycle = true;
                let mut units: Vec<usize> = scc.into_iter().map(|n| unit_graph[n]).collect();
                units.sort_unstable();
                errors.push(WorkflowError::TransactionCycle {
                    units: units.into_iter().map(unit_name).collect(),
                });
            }
        }
        if contracted_cycle || !errors.is_empty() {
            return Err(errors);
        }
        // Topological order of steps (Kahn; ties by declaration order) and levels.
        let mut indegree: Vec<usize> = dependencies.iter().map(BTreeSet::len).collect();
        let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); self.steps.len()];
        for (c, deps) in dependencies.iter().enumerate() {
            for &p in deps {
                consumers[p].push(c);
            }
        }
        let mut ready: BinaryHeap<Reverse<usize>> = (0..self.steps.len())
            .filter(|&s| indegree[s] == 0)
            .map(Reverse)
            .collect();
        let mut order = Vec::new();
        let mut level = vec![0usize; self.steps.len()];
        while let Some(Reverse(s)) = ready.pop() {
            order.push(s);
            for &c in &consumers[s] {
                level[c] = level[c].max(level[s] + 1);
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    ready.push(Reverse(c));
                }
            }
        }
        if order.len() != self.steps.len() {
            return Err(vec![WorkflowError::Cycle {
                steps: vec![
                    "(internal: topological sort did not finish; this is a bug)".to_owned(),
                ],
            }]);
        }
        let depth = level.iter().copied().max().unwrap_or(0);
        let mut levels = vec![Vec::new(); depth + 1];
        for &s in &order {
            levels[level[s]].push(self.steps[s].id.clone());
        }
        // Units in topological order: a unit's position is that of its first step.
        let position: Vec<usize> = {
            let mut p = vec![0; self.steps.len()];
            for (i, &s) in order.iter().enumerate() {
                p[s] = i;
            }
            p
        };
        let mut unit_order: Vec<usize> = (0..n_units).collect();
        unit_order.sort_by_key(|&u| {
            units_members[u]
                .iter()
                .map(|&s| position[s])
                .min()
                .unwrap_or(usize::MAX)
        });
        // Unit topological order for SFR: a contracted DAG is acyclic, but a unit's first
        // step may precede a producer of its later steps, so order the units themselves.
        let unit_topo = {
            let mut indeg = vec![0usize; n_units];
            for succ in &successors {
                for &b in succ {
                    indeg[b] += 1;
                }
            }
            let rank: Vec<usize> = {
                let mut r = vec![0; n_units];
                for (i, &u) in unit_order.iter().enumerate() {
                    r[u] = i;
                }
                r
            };
            let mut ready: BinaryHeap<Reverse<(usize, usize)>> = (0..n_units)
                .filter(|&u| indeg[u] == 0)
                .map(|u| Reverse((rank[u], u)))
                .collect();
            let mut topo = Vec::new();
            while let Some(Reverse((_, u))) = ready.pop() {
                topo.push(u);
                for &b in &successors[u] {
                    indeg[b] -= 1;
                    if indeg[b] == 0 {
                        ready.push(Reverse((rank[b], b)));
                    }
                }
            }
            topo
        };
        let unit_writes: Vec<bool> = units_members
            .iter()
            .map(|m| m.iter().any(|&s| writes[s]))
            .collect();
        let unit_feeds_output: Vec<bool> = units_members
            .iter()
            .map(|m| m.iter().any(|&s| feeds_output[s]))
            .collect();
        let unit_successors: Vec<Vec<usize>> = successors
            .iter()
            .map(|s| s.iter().copied().collect())
            .collect();
        let recorded_unit = recorded_units(
            &unit_successors,
            &unit_feeds_output,
            &unit_writes,
            &unit_topo,
        );
        let mut recorded = BTreeSet::new();
        for (u, members) in units_members.iter().enumerate() {
            if recorded_unit[u] {
                recorded.extend(members.iter().map(|&s| self.steps[s].id.clone()));
            }
        }
        let units = unit_topo
            .iter()
            .map(|&u| {
                let mut m = units_members[u].clone();
                m.sort_by_key(|&s| position[s]);
                m.into_iter().map(|s| self.steps[s].id.clone()).collect()
            })
            .collect();
        Ok(WorkflowPlan {
            spec: self.clone(),
            order: order.iter().map(|&s| self.steps[s].id.clone()).collect(),
            levels,
            dependencies: dependencies
                .iter()
                .enumerate()
                .map(|(s, d)| {
                    (
                        self.steps[s].id.clone(),
                        d.iter().map(|&p| self.steps[p].id.clone()).collect(),
                    )
                })
                .collect(),
            units,
            recorded,
        })
    }
}
