//! The dependency graph of services: cycles refused, a start order derived.

use std::collections::BTreeMap;

use super::service::Lines;
use super::yaml::Reader;
use super::{Compose, Condition};
use crate::template::TemplateError;

/// Refuses dependency cycles, naming them (`web -> db -> web`), and waiting
/// for a service to be healthy when its healthcheck is disabled.
pub(super) fn check_dependencies(
    r: &Reader,
    compose: &Compose,
    lines: &BTreeMap<String, Lines>,
) -> Result<(), TemplateError> {
    for (name, svc) in &compose.services {
        for (dep, condition) in &svc.depends_on {
            let disabled = compose.services[dep]
                .healthcheck
                .as_ref()
                .is_some_and(|h| h.is_disabled());
            if *condition == Condition::ServiceHealthy && disabled {
                return Err(r.err(
                    lines[name].depends_on[dep],
                    &format!("services.{name}.depends_on"),
                    format!(
                        "service '{name}' waits for '{dep}' to be healthy, but the healthcheck \
                         of '{dep}' is disabled: give it a healthcheck or wait for service_started"
                    ),
                ));
            }
        }
    }
    let mut state: BTreeMap<&str, Visit> = BTreeMap::new();
    let mut path = Vec::new();
    for name in &compose.service_order {
        if let Some(cycle) = find_cycle(compose, name, &mut state, &mut path) {
            let last = cycle[cycle.len() - 2];
            let first = cycle[cycle.len() - 1];
            return Err(r.err(
                lines[last].depends_on[first],
                &format!("services.{last}.depends_on"),
                format!(
                    "depends_on forms a cycle: {}: remove one of these dependencies",
                    cycle.join(" -> ")
                ),
            ));
        }
    }
    Ok(())
}

/// Services after their dependencies; otherwise in declaration order.
pub(super) fn startup_order(compose: &Compose) -> Vec<&str> {
    let mut started: Vec<&str> = Vec::new();
    while started.len() < compose.service_order.len() {
        let next = compose.service_order.iter().find(|n| {
            !started.contains(&n.as_str())
                && compose.services[*n]
                    .depends_on
                    .keys()
                    .all(|d| started.contains(&d.as_str()))
        });
        match next {
            Some(n) => started.push(n),
            // Only a cycle gets here, and parsing refuses cycles.
            None => break,
        }
    }
    started
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Visit {
    Open,
    Done,
}

/// Depth-first search; returns the cycle as names, first repeated at the end.
fn find_cycle<'c>(
    compose: &'c Compose,
    name: &'c str,
    state: &mut BTreeMap<&'c str, Visit>,
    path: &mut Vec<&'c str>,
) -> Option<Vec<&'c str>> {
    match state.get(name) {
        Some(Visit::Done) => return None,
        Some(Visit::Open) => {
            let from = path.iter().position(|n| *n == name).unwrap_or(0);
            let mut cycle = path[from..].to_vec();
            cycle.push(name);
            return Some(cycle);
        }
        None => {}
    }
    state.insert(name, Visit::Open);
    path.push(name);
    for dep in compose.services[name].depends_on.keys() {
        if let Some(cycle) = find_cycle(compose, dep, state, path) {
            return Some(cycle);
        }
    }
    path.pop();
    state.insert(name, Visit::Done);
    None
}
