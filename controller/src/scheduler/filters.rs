//! Feasibility filters. Each asks one question about one host and returns why
//! the host cannot take the request, or `None`. They are chained, in order, in
//! one place: `Scheduler::reject` in `mod.rs`.

use std::collections::BTreeMap;

use metrom_protocol::ids::HostId;
use metrom_protocol::messages::env::RuntimeKind;

use super::{HostSnapshot, Reason};

/// A pinned request considers its host only.
pub(super) fn requested_host(host: &HostSnapshot, pinned: Option<&HostId>) -> Option<Reason> {
    match pinned {
        Some(id) if *id != host.id => Some(Reason::NotTheRequestedHost),
        _ => None,
    }
}

/// `rebuild --elsewhere` names the hosts to avoid.
pub(super) fn excluded(host: &HostSnapshot, exclude: &[HostId]) -> Option<Reason> {
    exclude.contains(&host.id).then_some(Reason::Excluded)
}

pub(super) fn ready(host: &HostSnapshot) -> Option<Reason> {
    (!host.ready).then_some(Reason::NotReady)
}

pub(super) fn not_cordoned(host: &HostSnapshot) -> Option<Reason> {
    host.cordoned.then_some(Reason::Cordoned)
}

/// The host offers at least one of the runtimes in `wanted`.
pub(super) fn runtime(host: &HostSnapshot, wanted: &[RuntimeKind]) -> Option<Reason> {
    if wanted.iter().any(|w| host.runtimes.contains(w)) {
        return None;
    }
    Some(Reason::RuntimeUnsupported {
        wanted: wanted.to_vec(),
        offered: host.runtimes.clone(),
    })
}

/// Every wanted label is on the host with exactly that value; the first
/// mismatch in key order is the reason.
pub(super) fn labels(
    host: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> Option<Reason> {
    wanted
        .iter()
        .find(|(key, value)| host.get(*key) != Some(*value))
        .map(|(key, value)| Reason::LabelMismatch {
            key: key.clone(),
            wanted: value.clone(),
            found: host.get(key).cloned(),
        })
}

/// `limit` is floor(capacity × `ratio`), in vCPUs.
pub(super) fn cpu(host: &HostSnapshot, limit: u64, ratio: f64, need: u32) -> Option<Reason> {
    let free = limit.saturating_sub(u64::from(host.allocated.vcpus));
    (u64::from(need) > free).then_some(Reason::Cpu {
        need,
        free,
        capacity: host.capacity.cpus,
        overcommit: ratio,
        allocated: host.allocated.vcpus,
    })
}

/// `limit` is floor(capacity × `ratio`), in MiB.
pub(super) fn memory(host: &HostSnapshot, limit: u64, ratio: f64, need_mb: u64) -> Option<Reason> {
    let free_mb = free(limit, host.allocated.memory_mb);
    (need_mb > free_mb).then_some(Reason::Memory {
        need_mb,
        free_mb,
        capacity_mb: host.capacity.memory_mb,
        overcommit: ratio,
        allocated_mb: host.allocated.memory_mb,
    })
}

/// `limit` is floor(capacity × `ratio`), in GiB.
pub(super) fn disk(host: &HostSnapshot, limit: u64, ratio: f64, need_gb: u64) -> Option<Reason> {
    let free_gb = free(limit, host.allocated.disk_gb);
    (need_gb > free_gb).then_some(Reason::Disk {
        need_gb,
        free_gb,
        capacity_gb: host.capacity.disk_gb,
        overcommit: ratio,
        allocated_gb: host.allocated.disk_gb,
    })
}

/// What is left of a limit; never negative (a host can be over its limit when
/// the ratios were lowered after placement).
pub(super) fn free(limit: u64, allocated: u64) -> u64 {
    limit.saturating_sub(allocated)
}
