//! Test harness: a scheduler that records every request it is given and what
//! it decided, fixtures for hosts and requests, a deterministic cluster
//! source, and a naive reference that checks every host by hand.

use std::collections::BTreeMap;

use metrom_protocol::ids::HostId;
use metrom_protocol::messages::env::{Resources, RuntimeKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    Capacity, HostSnapshot, NoCapacity, Placement, Request, Scheduler, SchedulerConfig, Strategy,
};

/// Applies requests with `place_and_commit` and records the outcomes.
pub(super) struct Harness {
    pub scheduler: Scheduler,
    pub config: SchedulerConfig,
    pub records: Vec<Record>,
}

/// One request and what the scheduler decided.
pub(super) struct Record {
    pub request: Request,
    pub outcome: Result<Placement, NoCapacity>,
}

impl Harness {
    pub fn new(hosts: Vec<HostSnapshot>, config: SchedulerConfig) -> Harness {
        Harness {
            scheduler: Scheduler::new(hosts, &config),
            config,
            records: Vec::new(),
        }
    }

    /// Places and commits one request; returns what was decided.
    pub fn apply(&mut self, request: Request) -> &Result<Placement, NoCapacity> {
        let outcome = self.scheduler.place_and_commit(&request);
        self.records.push(Record { request, outcome });
        &self.records.last().expect("just pushed").outcome
    }

    pub fn apply_all(&mut self, requests: impl IntoIterator<Item = Request>) {
        for request in requests {
            self.apply(request);
        }
    }

    /// Where each request went, in order: a host id, or "-" for no capacity.
    pub fn placed_on(&self) -> Vec<String> {
        self.records
            .iter()
            .map(|r| match &r.outcome {
                Ok(p) => p.host.to_string(),
                Err(_) => "-".to_string(),
            })
            .collect()
    }

    /// Every outcome as comparable text (placement, or the error message).
    pub fn transcript(&self) -> Vec<String> {
        self.records
            .iter()
            .map(|r| match &r.outcome {
                Ok(p) => format!("{} {}", p.host, p.runtime),
                Err(e) => e.to_string(),
            })
            .collect()
    }

    /// What each successful placement reserved, in order.
    pub fn committed(&self) -> Vec<(HostId, Resources)> {
        self.records
            .iter()
            .filter_map(|r| match &r.outcome {
                Ok(p) => Some((p.host.clone(), r.request.resources)),
                Err(_) => None,
            })
            .collect()
    }

    pub fn host(&self, id: &str) -> &HostSnapshot {
        self.scheduler
            .hosts()
            .iter()
            .find(|h| h.id.as_str() == id)
            .unwrap_or_else(|| panic!("no host {id}"))
    }
}

// ─────────────────────────────── Fixtures ───────────────────────────────

pub(super) fn id(s: &str) -> HostId {
    HostId::parse(s).expect("a valid host id")
}

/// A Ready, uncordoned kvm+docker host with nothing allocated.
pub(super) fn host(name: &str, cpus: u32, memory_mb: u64, disk_gb: u64) -> HostSnapshot {
    HostSnapshot {
        id: id(name),
        ready: true,
        cordoned: false,
        labels: BTreeMap::new(),
        runtimes: vec![RuntimeKind::Kvm, RuntimeKind::Docker],
        capacity: Capacity {
            cpus,
            memory_mb,
            disk_gb,
        },
        allocated: Resources::default(),
    }
}

pub(super) fn resources(vcpus: u32, memory_mb: u64, disk_gb: u64) -> Resources {
    Resources {
        vcpus,
        memory_mb,
        disk_gb,
    }
}

/// A request for any runtime, no labels, not pinned.
pub(super) fn request(vcpus: u32, memory_mb: u64, disk_gb: u64) -> Request {
    Request {
        resources: resources(vcpus, memory_mb, disk_gb),
        ..Request::default()
    }
}

pub(super) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn config(strategy: Strategy) -> SchedulerConfig {
    SchedulerConfig {
        strategy,
        ..SchedulerConfig::default()
    }
}

// ──────────────────────── Deterministic source ────────────────────────

/// A mixed cluster from a seed: sizes, labels, runtimes, some hosts
/// Unreachable or cordoned, some already partly allocated.
pub(super) fn seeded_cluster(seed: u64, n: usize) -> Vec<HostSnapshot> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let size =
                [(8, 16_384, 200), (16, 65_536, 500), (64, 262_144, 2_000)][rng.random_range(0..3)];
            let mut h = host(&format!("h-s{i:05}"), size.0, size.1, size.2);
            h.ready = rng.random_bool(0.95);
            h.cordoned = rng.random_bool(0.05);
            h.runtimes = [
                vec![RuntimeKind::Kvm, RuntimeKind::Docker],
                vec![RuntimeKind::Kvm],
                vec![RuntimeKind::Docker],
            ][rng.random_range(0..3)]
            .clone();
            h.labels = labels(&[("zone", ["a", "b", "c"][rng.random_range(0..3)])]);
            if rng.random_bool(0.1) {
                h.labels.insert("gpu".into(), "true".into());
            }
            h.allocated = resources(
                rng.random_range(0..=size.0),
                rng.random_range(0..=size.1 / 2),
                rng.random_range(0..=size.2 / 2),
            );
            h
        })
        .collect()
}

/// Varied requests from a seed.
pub(super) fn seeded_requests(seed: u64, n: usize, hosts: &[HostSnapshot]) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let shape = [
                (1, 2_048, 10),
                (2, 4_096, 20),
                (4, 16_384, 80),
                (16, 65_536, 300),
            ][rng.random_range(0..4)];
            let mut r = request(shape.0, shape.1, shape.2);
            r.runtimes = [
                vec![],
                vec![RuntimeKind::Kvm],
                vec![RuntimeKind::Docker],
                vec![RuntimeKind::Kvm, RuntimeKind::Docker],
            ][rng.random_range(0..4)]
            .clone();
            if rng.random_bool(0.3) {
                r.labels = labels(&[("zone", ["a", "b", "c"][rng.random_range(0..3)])]);
            }
            if rng.random_bool(0.05) && !hosts.is_empty() {
                r.host = Some(hosts[rng.random_range(0..hosts.len())].id.clone());
            }
            if rng.random_bool(0.05) && !hosts.is_empty() {
                r.exclude = vec![hosts[rng.random_range(0..hosts.len())].id.clone()];
            }
            r
        })
        .collect()
}

// ─────────────────────────── Naive reference ───────────────────────────

/// Whether `host` can take `req` with `runtime`, checked by hand from the
/// rules (not with the scheduler's filters).
pub(super) fn fits(
    host: &HostSnapshot,
    req: &Request,
    runtime: RuntimeKind,
    config: &SchedulerConfig,
) -> bool {
    let limit = |capacity: u64, ratio: f64| (capacity as f64 * ratio).floor() as u64;
    let free = |capacity: u64, ratio: f64, allocated: u64| {
        limit(capacity, ratio).saturating_sub(allocated)
    };
    let need = &req.resources;
    host.ready
        && !host.cordoned
        && req.host.as_ref().is_none_or(|p| *p == host.id)
        && !req.exclude.contains(&host.id)
        && host.runtimes.contains(&runtime)
        && req
            .labels
            .iter()
            .all(|(k, v)| host.labels.get(k) == Some(v))
        && u64::from(need.vcpus)
            <= free(
                host.capacity.cpus.into(),
                config.cpu_overcommit,
                host.allocated.vcpus.into(),
            )
        && need.memory_mb
            <= free(
                host.capacity.memory_mb,
                config.memory_overcommit,
                host.allocated.memory_mb,
            )
        && need.disk_gb
            <= free(
                host.capacity.disk_gb,
                config.disk_overcommit,
                host.allocated.disk_gb,
            )
}

/// The runtime the reference would use: the first in preference order that
/// some host fits, and the hosts that fit it.
pub(super) fn reference(
    hosts: &[HostSnapshot],
    req: &Request,
    config: &SchedulerConfig,
) -> Option<(RuntimeKind, Vec<HostId>)> {
    let any = [RuntimeKind::Kvm, RuntimeKind::Docker, RuntimeKind::Fake];
    let runtimes: &[RuntimeKind] = if req.runtimes.is_empty() {
        &any
    } else {
        &req.runtimes
    };
    runtimes.iter().find_map(|&runtime| {
        let fitting: Vec<HostId> = hosts
            .iter()
            .filter(|h| fits(h, req, runtime, config))
            .map(|h| h.id.clone())
            .collect();
        (!fitting.is_empty()).then_some((runtime, fitting))
    })
}
