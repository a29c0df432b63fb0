//! Selective function recording (after Apiary): which workflow steps must record their
//! output so that recovery re-runs the rest without changing what the workflow returns.
//!
//! The graph is the workflow DAG with each multi-function transaction contracted into one
//! unit, plus a sink: the workflow output. A unit that writes is recorded. A read-only
//! unit is recorded when it reaches two or more distinct targets through units that are
//! not recorded, where a recorded unit counts as one target (and stops the walk) and
//! reaching the output counts as the target "sink": re-running it on recovery could feed
//! different values to two consumers that both outlive the crash. Everything else re-runs.
//!
//! One pass in reverse topological order, keeping at most two targets per unit, is
//! O(V + E).

/// A target a read-only unit reaches: a recorded unit, or the workflow output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Unit(usize),
    Sink,
}

/// At most two distinct targets: two already decide that a unit is recorded.
#[derive(Debug, Clone, Copy, Default)]
struct Targets([Option<Target>; 2]);

impl Targets {
    fn add(&mut self, t: Target) {
        match self.0 {
            [None, _] => self.0[0] = Some(t),
            [Some(a), None] if a != t => self.0[1] = Some(t),
            _ => {}
        }
    }

    fn count(&self) -> usize {
        self.0.iter().flatten().count()
    }
}

/// Decides which units are recorded.
///
/// `successors[u]` are the units that consume `u`'s output; `feeds_output[u]` tells
/// whether the workflow output references `u`; `writes[u]` whether `u` writes;
/// `topological` lists every unit, producers before consumers.
pub(crate) fn recorded_units(
    successors: &[Vec<usize>],
    feeds_output: &[bool],
    writes: &[bool],
    topological: &[usize],
) -> Vec<bool> {
    let n = successors.len();
    debug_assert_eq!(topological.len(), n);
    let mut recorded = vec![false; n];
    let mut targets = vec![Targets::default(); n];
    for &u in topological.iter().rev() {
        if writes[u] {
            recorded[u] = true;
            continue;
        }
        let mut mine = Targets::default();
        if feeds_output[u] {
            mine.add(Target::Sink);
        }
        for &s in &successors[u] {
            if recorded[s] {
                mine.add(Target::Unit(s));
            } else {
                for t in targets[s].0.into_iter().flatten() {
                    mine.add(t);
                }
            }
        }
        if mine.count() >= 2 {
            recorded[u] = true;
        } else {
            targets[u] = mine;
        }
    }
    recorded
}
